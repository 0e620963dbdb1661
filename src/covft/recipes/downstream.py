"""`covft downstream`: tune on one downstream set per strategy; report specialization and forgetting.

The protocol of "Keeping Yourself is Important in Downstream Tuning MLLMs" (arXiv 2503.04543),
as method.md section 5 fixes it: start from an instruction-tuned checkpoint, tune it on one
downstream dataset D with each strategy, and measure on D and on upstream benchmarks U before and
after tuning:

- E = A_D(tuned) - A_D(base)                      (specialization),
- F = mean over u in U of A_u(tuned) - A_u(base)  (negative = forgetting),
- O = (E + F) / 2.

Accuracies are percentages; MME is divided by 20 as in the paper's averages. A_D is exact match
after normalisation (lower case, punctuation and articles dropped) of the generated answer against
the first ``gpt`` turn of each held-out LLaVA-format sample, unless the downstream set is a suite
benchmark, which its own scorer scores.

A run directory holds ``base/`` and ``<strategy>/`` (the tuned model under ``model/``, predictions
and upstream reports), ``downstream.json``, ``downstream.md``, ``downstream.png`` and the resolved
``downstream_config.yaml``. A rerun
reuses finished training runs and cached predictions.

Example config (YAML; any key can be overridden on the command line as ``key=value``)::

    base: runs/stage2_full            # instruction-tuned checkpoint (or preset / HF LLaVA dir)
    output_dir: runs/downstream_iconqa
    downstream:
      name: iconqa
      train: data/iconqa/train.json   # LLaVA format
      eval: data/iconqa/test.json     # held-out split, LLaVA format (or a suite with `benchmark`)
      image_folder: data/iconqa
    upstream:
      suite: data/world/suite         # or data_root: data/eval (official files)
      benchmarks: all
      limit: 200
    strategies: [lora, dora, full, top2, last, covft]
    train: {max_steps: 300, lr: 2.0e-5, batch_size: 8}
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from covft.utils import config as loader
from covft.utils.config import ConfigError

RESULTS_FILE = "downstream.json"
TABLE_FILE = "downstream.md"
CHART_FILE = "downstream.png"
CONFIG_FILE = "downstream_config.yaml"
"""The resolved configuration of the study (``covft downstream`` reads it back as a config)."""
_TOP_K = re.compile(r"top(\d+)")


# --------------------------------------------------------------------------- E, F, O


def specialization_forgetting(
    downstream_base: float,
    downstream_tuned: float,
    upstream_base: Mapping[str, float],
    upstream_tuned: Mapping[str, float],
) -> dict[str, float]:
    """E, F and O (method.md section 5) from accuracies in percent (MME already divided by 20).

    ``upstream_*`` map each upstream benchmark to its accuracy before / after tuning; both must
    name the same benchmarks, at least one.
    """
    if set(upstream_base) != set(upstream_tuned):
        raise ValueError(
            f"upstream benchmarks differ before and after tuning: {sorted(upstream_base)} vs {sorted(upstream_tuned)}"
        )
    if not upstream_base:
        raise ValueError("F needs at least one upstream benchmark")
    specialization = float(downstream_tuned) - float(downstream_base)
    forgetting = sum(float(upstream_tuned[u]) - float(upstream_base[u]) for u in upstream_base) / len(
        upstream_base
    )
    return {"E": specialization, "F": forgetting, "O": (specialization + forgetting) / 2.0}


# --------------------------------------------------------------------------- configuration


DownstreamConfigError = ConfigError
"""A downstream configuration that cannot be used (the one configuration error of every recipe)."""


@dataclass
class DownstreamData:
    """The downstream dataset D: a LLaVA-format training file and a held-out evaluation split."""

    name: str = "downstream"
    train: str | None = None
    """LLaVA-format JSON/JSONL training samples."""
    eval: str | None = None
    """Held-out split: a LLaVA-format file, or (with ``benchmark``) a suite directory or file."""
    image_folder: str | None = None
    """Folder the LLaVA samples' relative image paths are resolved against."""
    benchmark: str | None = None
    """Score D with this benchmark's scorer; ``eval`` is then a suite (``<benchmark>.jsonl``)."""
    limit: int | None = None
    """Evaluate on the first N held-out items only."""


@dataclass
class UpstreamData:
    """The upstream benchmarks U, from a suite directory or from official files."""

    suite: str | None = None
    data_root: str | None = None
    benchmarks: str | list[str] = "all"
    limit: int | None = None


@dataclass
class StrategySpec:
    """One tuning run: a name for the report, a ``covft.apply_vft`` method and its options."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DownstreamConfig:
    """A whole downstream study."""

    base: str = ""
    """The instruction-tuned starting point: a covft checkpoint, a HF LLaVA directory or a preset."""
    base_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``covft.build_model`` (for presets, e.g. ``vision_layers``)."""
    output_dir: str = "runs/downstream"
    downstream: DownstreamData = field(default_factory=DownstreamData)
    upstream: UpstreamData = field(default_factory=UpstreamData)
    strategies: list[StrategySpec] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    """``covft.train`` loop settings (``TrainLoopConfig`` fields: max_steps, lr, batch_size, ...)."""
    eval_batch_size: int = 8
    max_new_tokens: int = 32
    device: str = "cpu"
    """Where the base and the tuned models are evaluated (training places itself via accelerate)."""
    progress: bool = True


def strategy_spec(entry: str | Mapping[str, Any]) -> StrategySpec:
    """A strategy entry of the config: a name or ``{name, method, options}``.

    Names are method names (``lora``, ``dora``, ``full``, ``covft``, ...) plus the selective
    shorthands of Keeping Yourself: ``last`` (the last feeding block) and ``top<k>`` (the top k).
    The method and its options are checked here, before anything trains.
    """
    from covft.train.recipe import check_method_options

    if isinstance(entry, str):
        match = _TOP_K.fullmatch(entry)
        if entry == "last":
            return StrategySpec(entry, "selective", {"top_k": 1})
        if match:
            return StrategySpec(entry, "selective", {"top_k": int(match.group(1))})
        spec = StrategySpec(entry, entry, {})
    elif isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"name", "method", "options"})
        if unknown or "method" not in entry:
            raise DownstreamConfigError(
                f"strategy entry {dict(entry)!r}: give {{method, options, name}} (unknown keys {unknown})"
            )
        spec = StrategySpec(
            str(entry.get("name", entry["method"])), str(entry["method"]), dict(entry.get("options") or {})
        )
    else:
        raise DownstreamConfigError(f"strategy entry {entry!r} is neither a name nor a mapping")
    try:
        check_method_options(spec.method, spec.options)
    except ConfigError as error:
        raise DownstreamConfigError(
            f"strategy {spec.name!r}: {error} (or a selective shorthand: 'last', 'top<k>')"
        ) from error
    return spec


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> DownstreamConfig:
    """Build and check a :class:`DownstreamConfig` from a (YAML) mapping."""
    raw = dict(raw)
    if "strategies" in raw:
        entries = raw["strategies"]
        if isinstance(entries, str):
            entries = [e.strip() for e in entries.split(",") if e.strip()]
        raw["strategies"] = [strategy_spec(e) for e in entries or []]
    config = loader.from_dict(DownstreamConfig, raw, source)
    if not config.base:
        raise DownstreamConfigError("base is not set. Fix: base=PATH/TO/instruction_tuned_checkpoint")
    if not config.strategies:
        raise DownstreamConfigError(
            "no strategies. Fix: strategies=[lora,full,covft] (or a list in the YAML)"
        )
    names = [s.name for s in config.strategies]
    if len(set(names)) != len(names) or "base" in names:
        raise DownstreamConfigError(f"strategy names must be unique and not 'base': {names}")
    d = config.downstream
    if not d.train or not d.eval:
        raise DownstreamConfigError(
            "downstream.train and downstream.eval must both be set (LLaVA-format files)"
        )
    u = config.upstream
    if (u.suite is None) == (u.data_root is None):
        raise DownstreamConfigError("set exactly one of upstream.suite and upstream.data_root")
    return config


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> DownstreamConfig:
    """Read a YAML config and apply ``key=value`` overrides (dotted keys, YAML values)."""
    raw = loader.load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "overrides"
    return config_from_dict(loader.apply_overrides(DownstreamConfig, raw, overrides), source)


# --------------------------------------------------------------------------- data


def llava_items(
    path: str | os.PathLike[str], image_folder: str | None, limit: int | None = None
) -> list[dict]:
    """Contract items from a held-out LLaVA-format file: the first human turn and its gpt answer.

    ``prompt`` is the human turn without ``<image>``; the router reads it whole, as in training
    (no ``context`` field); ``answer`` is the first ``gpt`` turn.
    """
    from covft.data.contract import ASSISTANT, HUMAN, prompt_text
    from covft.data.dataset import LlavaDataset
    from covft.eval.benchmarks import ImageRef

    dataset = LlavaDataset(path, image_folder)
    items = []
    for record in dataset.records[:limit] if limit is not None else dataset.records:
        turns = record.conversations
        prompt = prompt_text(next(t["value"] for t in turns if t["from"] == HUMAN))
        answer = next(t["value"] for t in turns if t["from"] == ASSISTANT)
        image = ImageRef(dataset.resolve_image(record.images[0])) if record.images else None
        items.append({"id": record.sample_id, "image": image, "prompt": prompt, "answer": answer})
    return items


def exact_match(records: Sequence[Mapping[str, Any]]) -> float:
    """Percent of records whose normalised prediction equals the normalised answer."""
    from covft.eval.scoring import normalize_short

    if not records:
        raise ValueError("no downstream records to score")
    hits = sum(normalize_short(r["prediction"]) == normalize_short(str(r["answer"])) for r in records)
    return 100.0 * hits / len(records)


def downstream_items(config: DownstreamConfig) -> list[dict]:
    """The held-out downstream items, read as the config says."""
    from covft.eval.benchmarks import read_suite_file

    d = config.downstream
    if d.benchmark is None:
        return llava_items(d.eval, d.image_folder, d.limit)  # type: ignore[arg-type]
    path = Path(d.eval)  # type: ignore[arg-type]
    items = read_suite_file(path / f"{d.benchmark}.jsonl" if path.is_dir() else path)
    return items[: d.limit] if d.limit is not None else items


def downstream_accuracy(config: DownstreamConfig, records: list[dict]) -> float:
    """A_D in percent: exact match, or the suite benchmark's own score (MME / 20)."""
    from covft.eval.report import scaled
    from covft.eval.scoring import score

    benchmark = config.downstream.benchmark
    if benchmark is None:
        return exact_match(records)
    return scaled(benchmark, score(benchmark, records)["score"])


# --------------------------------------------------------------------------- running


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
    from covft.eval.generate import evaluate, predict
    from covft.eval.report import scaled

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
    accuracies = {u: scaled(u, entry["score"]) for u, entry in results["scores"].items()}
    return {"A_D": downstream_accuracy(config, records), "A_u": accuracies}


def tune(config: DownstreamConfig, spec: StrategySpec, model_dir: Path) -> dict[str, Any]:
    """Tune the base on D with one strategy through ``covft.train``; reuse a finished identical run.

    A finished run in ``model_dir`` whose saved training config differs from this one (another
    base, strategy, data or schedule) is an error rather than a silent reuse.
    """
    from covft.train import train
    from covft.train.checkpoint import list_checkpoints
    from covft.train.config import config_from_dict as train_config_from_dict
    from covft.train.trainer import CONFIG_FILE, SUMMARY_FILE

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
    train_config = train_config_from_dict(raw, f"downstream strategy {spec.name!r}")
    summary = model_dir / SUMMARY_FILE
    if summary.is_file() and (model_dir / "covft_config.json").is_file():
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
        done = json.loads(summary.read_text(encoding="utf-8"))
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
    import covft
    from covft.train.config import TrainLoopConfig

    if config.base not in covft.available_presets():
        return covft.build_model(config.base, **config.base_options)
    if "seed" in config.base_options:
        raise DownstreamConfigError(
            "base_options.seed: covft.train seeds a preset with train.seed; set train.seed instead"
        )
    seed = config.train.get("seed", TrainLoopConfig().seed)
    return covft.build_model(config.base, seed=seed, **config.base_options)


def run_downstream(config: DownstreamConfig) -> dict[str, Any]:
    """Run the whole study; returns (and writes) ``downstream.json``, plus the table and the plot."""
    import covft
    from covft.eval.generate import collect_items

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loader.save(config, out / CONFIG_FILE)
    downstream = downstream_items(config)
    u = config.upstream
    upstream = collect_items(u.benchmarks, data_root=u.data_root, suite=u.suite, limit=u.limit)

    base = build_base(config).to(config.device)
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
        training = tune(config, spec, run_dir / "model")
        model = covft.load_pretrained(run_dir / "model", device=config.device)
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


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None) -> str:
    from covft.eval.report import format_score

    if value is None:
        return "–"
    text = format_score(value, 2)
    return f"+{text}" if value > 0 and not text.startswith("-") else text


def markdown(report: Mapping[str, Any]) -> str:
    """Per strategy: A_D, each A_u, E, F and O; the base model's accuracies first."""
    from covft.eval.report import format_score

    upstream = list(report["upstream"])
    header = [
        "model",
        "method",
        f"A_D ({report['downstream']})",
        *(f"A_{u}" for u in upstream),
        "E",
        "F",
        "O",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    base = report["base"]
    cells = [format_score(base["A_D"]), *(format_score(base["A_u"][u]) for u in upstream), "–", "–", "–"]
    lines.append("| " + " | ".join(["base", "–", *cells]) + " |")
    for name, row in report["strategies"].items():
        cells = [format_score(row["A_D"]), *(format_score(row["A_u"][u]) for u in upstream)]
        cells += [_fmt(row["E"]), _fmt(row["F"]), _fmt(row["O"])]
        lines.append("| " + " | ".join([name, row["method"], *cells]) + " |")
    notes = (
        "\nE = A_D(tuned) - A_D(base); F = mean over upstream u of A_u(tuned) - A_u(base) "
        "(negative = forgetting); O = (E + F) / 2. Accuracies in percent, MME divided by 20.\n"
    )
    return "\n".join(lines) + "\n" + notes


def scatter(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Specialization (E, y) against stabilization (F, x) per strategy, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["strategies"]
    if not rows:
        raise ValueError("no tuned strategies to plot")
    path = Path(path)
    figure, axis = plt.subplots(figsize=(5.0, 4.0))
    for name, row in rows.items():
        axis.scatter([row["F"]], [row["E"]], s=40)
        axis.annotate(
            f"{name} (O {row['O']:.1f})",
            (row["F"], row["E"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.axvline(0.0, color="grey", linewidth=0.8)
    values = [v for row in rows.values() for v in (row["E"], row["F"]) if math.isfinite(v)]
    span = max([abs(v) for v in values] + [1.0]) * 1.25
    axis.set_xlim(-span, span)
    axis.set_ylim(-span, span)
    axis.set_xlabel("F: upstream change (negative = forgetting)")
    axis.set_ylabel(f"E: specialization on {report['downstream']}")
    axis.set_title("Specialization vs forgetting")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(
    report: Mapping[str, Any], out_dir: str | os.PathLike[str], *, chart: bool = True
) -> dict[str, Path]:
    """Write ``downstream.json``, ``downstream.md`` and (``chart`` and a strategy) ``downstream.png``."""
    out = Path(out_dir)
    paths = {"json": out / RESULTS_FILE, "table": out / TABLE_FILE}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["table"].write_text(
        f"# Downstream tuning on {report['downstream']}\n\n{markdown(report)}", encoding="utf-8"
    )
    if chart and report["strategies"]:
        paths["chart"] = scatter(report, out / CHART_FILE)
    return paths
