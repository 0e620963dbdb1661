"""The downstream study (`covft downstream`): tune the base on D per strategy, measure D and U, report.

The configuration (:class:`~covft.recipes.downstream.DownstreamConfig`, its loader and the LLaVA
items) is :mod:`covft.recipes.downstream`; E, F and O are :mod:`covft.analysis.transfer`; the
table and figure :mod:`covft.recipes.downstream_report`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from covft.analysis.transfer import specialization_forgetting
from covft.eval.answers import normalize_short
from covft.eval.benchmarks import read_suite_file
from covft.eval.generate import collect_items, evaluate, predict
from covft.eval.report import MME_SUBTASKS, mme_subtasks_in, scaled
from covft.eval.scoring import score
from covft.models import available_presets
from covft.recipes.downstream import DownstreamConfig, DownstreamConfigError, StrategySpec, llava_items
from covft.recipes.downstream_report import CONFIG_FILE as DOWNSTREAM_CONFIG_FILE
from covft.recipes.downstream_report import write_report
from covft.strategies import build_model, load_pretrained
from covft.train import train
from covft.train.checkpoint import list_checkpoints
from covft.train.config import TrainConfig, TrainLoopConfig
from covft.train.config import config_from_dict as train_config_from_dict
from covft.train.trainer import CONFIG_FILE, SUMMARY_FILE
from covft.utils.config import save as save_config


def exact_match(records: Sequence[Mapping[str, Any]]) -> float:
    """Percent of records whose normalised prediction equals the normalised answer."""
    if not records:
        raise ValueError("no downstream records to score")
    hits = sum(normalize_short(r["prediction"]) == normalize_short(str(r["answer"])) for r in records)
    return 100.0 * hits / len(records)


def downstream_items(config: DownstreamConfig) -> list[dict]:
    """The held-out downstream items, read as the config says."""
    d = config.downstream
    if d.benchmark is None:
        return llava_items(d.eval, d.image_folder, d.limit)  # type: ignore[arg-type]
    path = Path(d.eval)  # type: ignore[arg-type]
    items = read_suite_file(path / f"{d.benchmark}.jsonl" if path.is_dir() else path)
    return items[: d.limit] if d.limit is not None else items


def downstream_accuracy(config: DownstreamConfig, records: list[dict]) -> float:
    """A_D in percent: exact match, or the suite benchmark's own score (MME / (2 x its subtasks))."""
    benchmark = config.downstream.benchmark
    if benchmark is None:
        return exact_match(records)
    subtasks = mme_subtasks_in(records) if benchmark == "mme" else MME_SUBTASKS
    return scaled(benchmark, score(benchmark, records)["score"], subtasks)


def measure(
    model: Any,
    config: DownstreamConfig,
    downstream: list[dict],
    upstream: Mapping[str, list[dict]],
    out_dir: Path,
    name: str,
    checkpoint: str,
) -> dict[str, Any]:
    """A_D and every A_u of one model (predictions cached under ``out_dir``).

    The upstream evaluation records ``checkpoint`` and the downstream split, so a rerun into the
    same directory with another base or split is refused instead of reusing stale predictions.
    """
    settings = {
        "checkpoint": checkpoint,
        "downstream_eval": config.downstream.eval,
        "upstream": asdict(config.upstream),
    }
    results = evaluate(
        model,
        upstream,
        out_dir / "upstream",
        run_name=name,
        batch_size=config.eval_batch_size,
        max_new_tokens=config.max_new_tokens,
        progress=config.progress,
        settings=settings,
    )
    records = predict(
        model,
        downstream,
        batch_size=config.eval_batch_size,
        max_new_tokens=config.max_new_tokens,
        cache=out_dir / "downstream_predictions.jsonl",
        progress=config.progress,
        desc=f"{name}: {config.downstream.name}",
    )
    subtasks = results["summary"]["mme_subtasks"]
    accuracies = {u: scaled(u, entry["score"], subtasks) for u, entry in results["scores"].items()}
    return {"A_D": downstream_accuracy(config, records), "A_u": accuracies}


def strategy_train_config(config: DownstreamConfig, spec: StrategySpec, model_dir: Path) -> TrainConfig:
    """The checked ``covft.train`` config that tunes the base on D with one strategy into ``model_dir``."""
    loop = {"report_to": "none", "progress_bar": config.progress, **config.train}
    raw = {
        "model": config.base,
        "model_options": dict(config.base_options),
        "method": spec.method,
        "method_options": dict(spec.options),
        "stage": 2,
        "output_dir": str(model_dir),
        "data": {"train": config.downstream.train, "image_folder": config.downstream.image_folder},
        "train": loop,
    }
    return train_config_from_dict(raw, f"downstream strategy {spec.name!r}")


def finished_run(train_config: TrainConfig, model_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished identical tuning run in ``model_dir`` (``None`` when there is none).

    A finished run whose saved training config differs from this one (another base, strategy,
    data or schedule) is an error rather than a silent reuse.
    """
    summary = model_dir / SUMMARY_FILE
    if not (summary.is_file() and (model_dir / "covft_config.json").is_file()):
        return None
    saved = yaml.safe_load((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    wanted = train_config.to_dict()
    ignored = {"resume", "progress_bar"}
    changed = sorted(
        key
        for key in set(saved) | set(wanted)
        if key not in ignored and _without(saved.get(key), ignored) != _without(wanted.get(key), ignored)
    )
    if changed:
        raise DownstreamConfigError(
            f"{model_dir} holds a finished tuning run with other settings ({', '.join(changed)} differ). "
            "Fix: choose another output_dir, or delete that folder to tune again"
        )
    return json.loads(summary.read_text(encoding="utf-8"))


def tune(train_config: TrainConfig, model_dir: Path) -> dict[str, Any]:
    """Tune the base on D with one strategy through ``covft.train``; reuse a finished identical run."""
    done = finished_run(train_config, model_dir)
    if done is not None:
        return {"steps": done["steps"], "final_loss": done["metrics"]["loss"], "reused": True}
    train_config.resume = bool(list_checkpoints(model_dir))  # an interrupted tuning run continues
    result = train(train_config)
    return {"steps": result.steps, "final_loss": result.metrics["loss"], "reused": False}


def _without(value: Any, keys: set[str]) -> Any:
    return {k: v for k, v in value.items() if k not in keys} if isinstance(value, dict) else value


def build_base(config: DownstreamConfig) -> Any:
    """The untuned base model, exactly as ``covft.train`` builds it before applying a strategy.

    A preset is seeded with ``train.seed`` (the trainer seeds it so), so the base evaluated here is
    the one every strategy starts from.
    """
    if config.base not in available_presets():
        return build_model(config.base, **config.base_options)
    if "seed" in config.base_options:
        raise DownstreamConfigError(
            "base_options.seed: covft.train seeds a preset with train.seed; set train.seed instead"
        )
    seed = config.train.get("seed", TrainLoopConfig().seed)
    return build_model(config.base, seed=seed, **config.base_options)


def check_inputs(
    config: DownstreamConfig,
) -> tuple[dict[str, TrainConfig], list[dict], dict[str, list[dict]]]:
    """Everything the study reads, checked before anything is written or evaluated: every
    strategy's training config (and a finished run of other settings in its folder), the training
    file, the downstream and the upstream items. Returns the configs by strategy and the items."""
    out = Path(config.output_dir)
    trainings = {}
    for spec in config.strategies:
        trainings[spec.name] = strategy_train_config(config, spec, out / spec.name / "model")
        finished_run(trainings[spec.name], out / spec.name / "model")
    train_file = Path(config.downstream.train)  # type: ignore[arg-type]
    if not train_file.is_file():
        raise DownstreamConfigError(
            f"downstream.train: {train_file} is not a file. Fix: give the LLaVA-format training file"
        )
    downstream = downstream_items(config)
    u = config.upstream
    upstream = collect_items(u.benchmarks, data_root=u.data_root, suite=u.suite, limit=u.limit)
    return trainings, downstream, upstream


def run_downstream(config: DownstreamConfig) -> dict[str, Any]:
    """Run the whole study; returns (and writes) ``downstream.json``, plus the table and the plot.

    Every input is checked (:func:`check_inputs`) and the base built before the output directory
    is created or anything is evaluated.
    """
    trainings, downstream, upstream = check_inputs(config)
    base = build_base(config).to(config.device)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / DOWNSTREAM_CONFIG_FILE)
    base_scores = measure(base, config, downstream, upstream, out / "base", "base", config.base)
    del base
    report: dict[str, Any] = {
        "downstream": config.downstream.name,
        "upstream": list(upstream),
        "base": {"checkpoint": config.base, **base_scores},
        "strategies": {},
    }
    for spec in config.strategies:
        run_dir = out / spec.name
        training = tune(trainings[spec.name], run_dir / "model")
        model = load_pretrained(run_dir / "model", device=config.device)
        scores = measure(model, config, downstream, upstream, run_dir, spec.name, str(run_dir / "model"))
        del model
        efo = specialization_forgetting(base_scores["A_D"], scores["A_D"], base_scores["A_u"], scores["A_u"])
        report["strategies"][spec.name] = {
            "method": spec.method,
            "options": spec.options,
            **scores,
            **efo,
            "train": training,
        }
        write_report(report, out, chart=False)  # results so far survive a later failure
    write_report(report, out)
    return report
