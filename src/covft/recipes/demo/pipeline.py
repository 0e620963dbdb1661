"""The demo pipeline: starting point -> world -> stage 2 per strategy and seed -> suite -> report.

The starting point (tower, LM, stage 1: :mod:`covft.recipes.demo.pretrain`) is the shipped one, verified
against the code's recipe, or with ``from_scratch`` trained here by that recipe. Every stage
writes its result into its own folder and is skipped when that result is already there, so a
rerun (or a run that was interrupted) only does what is missing:

- ``<cache>/pretrain/``: the recipe's stages when trained here (cached by what determines each);
- ``<out>/world/``: the conflict world (``make_world`` reuses a matching ``meta.json``);
- ``<out>/seed<k>/stage2/<method>/``: instruction tuning from the starting point;
- ``<out>/seed<k>/eval/<method>/``: suite predictions and scores (``results.json``).

Training runs inside a stage resume from their last checkpoint (``resume=true``). Each action is
appended to ``<out>/stages.jsonl`` (``ran`` or ``reused``, with seconds), which the report and the
tests read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import covft.recipes.demo.presets as demo_presets
from covft.recipes.demo.settings import DemoSettings

STAGE_LOG = "stages.jsonl"
SETTINGS_FILE = "demo_settings.json"
PRESETS = ("tiny", "smol")
GRADIENTS_FILE = "vision_gradients.f32"
"""Per-step count-sketched vision gradients of a stage-2 run (:class:`covft.analysis.gradients.GradientFile`)."""
GRADIENT_METHODS = ("full", "covft")
"""The stage-2 runs whose gradients supp. Fig. A compares."""
MECHANISMS_DIR = "mechanisms"


class DemoError(RuntimeError):
    """A demo run that cannot continue; the message says why and how to fix it."""


@dataclass
class DemoRun:
    """Where a demo writes and what it runs."""

    out: Path
    settings: DemoSettings
    methods: Sequence[str] = ("freeze", "full", "lora", "covft")
    seeds: int = 1
    cache_dir: Path = field(default_factory=demo_presets.default_cache_dir)
    progress: bool = True
    jobs: int = 1
    """Stage-2 runs (with their evaluation) at a time, in worker processes when above 1."""
    from_scratch: bool = False
    """Train the starting point by the code's recipe (cached) instead of using the shipped one."""
    shipped: Path | None = None
    """Where the shipped starting point is (None: :data:`covft.recipes.demo.pretrain.SHIPPED`)."""

    @property
    def preset(self) -> str:
        return self.settings.pretrain.preset

    @property
    def world_dir(self) -> Path:
        return self.out / "world"

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed{seed}"

    def stage2_dir(self, seed: int, method: str) -> Path:
        return self.seed_dir(seed) / "stage2" / method

    def eval_dir(self, seed: int, method: str, shuffled: bool = False) -> Path:
        return self.seed_dir(seed) / ("eval-shuffled" if shuffled else "eval") / method


def clock() -> tuple[float, float]:
    """(wall clock, process CPU time) now, for :meth:`StageLog.record`."""
    return time.perf_counter(), time.process_time()


class StageLog:
    """Appends one JSON line per stage action to ``<out>/stages.jsonl``."""

    def __init__(self, out: Path) -> None:
        self.path = out / STAGE_LOG

    def record(self, stage: str, action: str, started: tuple[float, float], **extra: Any) -> None:
        """Log ``action`` (ran / reused / total) of ``stage``, timed from ``started`` (:func:`clock`).

        ``seconds`` is wall time; ``cpu_seconds`` the process's CPU time (all threads), which on a
        machine shared with other work says what the stage costs by itself.
        """
        wall, cpu = clock()
        entry = {
            "stage": stage,
            "action": action,
            "seconds": round(wall - started[0], 3),
            "cpu_seconds": round(cpu - started[1], 3),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


def read_stage_log(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The stage actions recorded in a demo folder, oldest first."""
    return StageLog(Path(out)).entries()


def _check_settings(run: DemoRun) -> None:
    """Refuse to mix stages trained under other settings in one demo folder."""
    recorded = {"preset": run.preset, "settings": run.settings.to_dict()}
    path = run.out / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != json.loads(json.dumps(recorded)):
            raise DemoError(
                f"{run.out} holds a demo run with other settings or preset ({path}). Fix: pass another "
                "--out (e.g. runs/demo-quick for --quick), or delete that folder to start afresh"
            )
    run.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- stages


def logged_world(out: Path, log: StageLog, stage: str, *, progress: bool, **config: Any) -> dict[str, Any]:
    """:func:`covft.recipes.world.make_world` into ``out``, logged as ``ran`` or ``reused``."""
    from covft.recipes.world import make_world

    started = clock()
    meta_path = out / "meta.json"
    before = meta_path.stat().st_mtime_ns if meta_path.is_file() else None
    meta = make_world(out, progress=progress, **config)
    reused = before is not None and meta_path.stat().st_mtime_ns == before
    log.record(stage, "reused" if reused else "ran", started)
    return meta


def make_demo_world(run: DemoRun, log: StageLog) -> dict[str, Any]:
    """Generate (or reuse) the world under ``<out>/world``."""
    s = run.settings
    return logged_world(run.world_dir, log, "world", progress=run.progress, size=s.world_size,
                        seed=s.world_seed, suite_size=s.suite_size, image_size=s.image_size,
                        family_weights=s.family_weights)  # fmt: skip


@dataclass
class StartingPoint:
    """The checkpoint every method and seed starts stage 2 from, and how it was made."""

    path: Path
    """A covft checkpoint (tower, projector, LM, tokenizer)."""
    key: str
    """The recipe's hash (:meth:`covft.recipes.demo.settings.PretrainSettings.key`)."""
    shipped: bool
    summary: dict[str, Any]
    """Per recipe stage: stage-0 retrieval and losses, final metrics, loss curves."""

    def model_options(self, settings: DemoSettings) -> dict[str, Any]:
        """``model_options`` for the trainer: the preset's keyword arguments (the seed comes from it)."""
        options = settings.pretrain.model_options()
        if settings.pretrain.preset == "tiny":
            options["tokenizer_dir"] = str(self.path.resolve())
        else:
            options["cache_dir"] = str(self.summary["cache_dir"])
        return options


def starting_point(run: DemoRun, log: StageLog) -> StartingPoint:
    """The shipped starting point (verified against the code's recipe), or the recipe trained here.

    The smol preset is always trained here (SmolLM2's weights are not ours to ship).
    """
    from covft.recipes.demo import pretrain as recipe

    settings = run.settings.pretrain
    if run.from_scratch or settings.preset != "tiny":
        path, summary = recipe.pretrain(settings, cache_dir=run.cache_dir, progress=run.progress, log=log)
        summary["cache_dir"] = str(Path(run.cache_dir).resolve())
        return StartingPoint(path, settings.key(), False, summary)
    try:
        path = recipe.verify(run.shipped or recipe.SHIPPED, settings)
    except recipe.PretrainedMismatch as error:
        raise DemoError(str(error)) from error
    summary = json.loads((path / recipe.RECIPE_FILE).read_text(encoding="utf-8"))["summary"]
    log.record("starting point", "reused", clock(), key=settings.key())
    return StartingPoint(path, settings.key(), True, summary)


def _train_config(
    run: DemoRun,
    *,
    method: str,
    seed: int,
    start: StartingPoint,
    options: dict[str, Any],
    method_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 2 of ``method``: from the starting point, the setting's schedule, the world's mix."""
    s = run.settings
    world = run.world_dir.resolve()
    return {
        "model": run.preset,
        "model_options": options,
        "method": method,
        "method_options": dict(method_options or {}),
        "stage": 2,
        "init_from": str(start.path.resolve()),
        "output_dir": str(run.stage2_dir(seed, method)),
        "resume": True,
        "data": {
            "train": str(world / "train.json"),
            "image_folder": str(world),
            "group_by_modality_length": s.group_by_modality_length,
        },
        "train": {
            **_loop(run, steps=s.stage2_steps, batch_size=s.stage2_batch_size, lr=s.stage2_lr, seed=seed),
            "precision": s.train_precision(),
        },
    }


def _loop(run: DemoRun, *, steps: int, batch_size: int, lr: float, seed: int) -> dict[str, Any]:
    """The ``train`` block every demo training run shares: the setting's schedule, resumable saves."""
    s = run.settings
    return {
        "max_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "warmup_ratio": s.warmup_ratio,
        "lr_scheduler": s.lr_scheduler,
        "seed": seed,
        "save_steps": s.save_steps,
        "save_total_limit": 1,
        "report_to": "none",
        "logging_steps": 1,
        "progress_bar": run.progress,
    }


def train_stage(
    name: str, config: dict[str, Any], log: StageLog, callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """Run one training stage with ``covft.train.train`` unless its summary is already there."""
    from covft.train import train
    from covft.train.config import config_from_dict

    output = Path(config["output_dir"])
    summary = output / "train_summary.json"
    started = clock()
    if summary.is_file():
        log.record(name, "reused", started)
        return json.loads(summary.read_text(encoding="utf-8"))
    result = train(config_from_dict(config, source=name), callbacks=list(callbacks))
    log.record(name, "ran", started, steps=result.steps)
    return json.loads(summary.read_text(encoding="utf-8"))


def stage2_model(run: DemoRun, seed: int, method: str) -> Any:
    """The trained stage-2 model, on the GPU when there is one (the suite runs where training ran)."""
    import torch

    import covft

    model = covft.build_model(str(run.stage2_dir(seed, method)))
    return model.to("cuda") if torch.cuda.is_available() else model


def evaluate_stage(
    run: DemoRun,
    seed: int,
    method: str,
    items: dict[str, list[dict]],
    log: StageLog,
    *,
    shuffled: bool = False,
    load_model: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Score one stage-2 model on the suite unless its ``results.json`` is already there.

    ``shuffled``: the blind control (:func:`covft.eval.generate.shuffle_images`, seed 0): every
    scoring unit gets another unit's images, so the drop from the real score measures how much the
    model's answers rest on the image. ``load_model``: returns the stage-2 model, called only when
    there is something to generate (callers evaluating twice pass a cached loader).
    """
    from covft.eval.generate import RESULTS_FILE, evaluate, shuffle_images

    out = run.eval_dir(seed, method, shuffled)
    name = f"eval{'-shuffled' if shuffled else ''}/seed{seed}/{method}"
    started = clock()
    if (out / RESULTS_FILE).is_file():
        log.record(name, "reused", started)
        return json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))
    model = load_model() if load_model is not None else stage2_model(run, seed, method)
    settings: dict[str, Any] = {"checkpoint": str(run.stage2_dir(seed, method)), "seed": seed}
    if shuffled:
        items = shuffle_images(items, seed=0)
        settings["shuffle_images"] = 0
    results = evaluate(
        model,
        items,
        out,
        run_name=method,
        batch_size=run.settings.eval_batch_size,
        max_new_tokens=run.settings.max_new_tokens,
        progress=run.progress,
        settings=settings,
    )
    log.record(name, "ran", started)
    return results


def stage2_and_eval(
    run: DemoRun,
    seed: int,
    method: str,
    start: StartingPoint,
    threads: int | None = None,
    context: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Stage 2 of one method from the starting point, then its suite scores.

    Returns ``{"real": scores, "shuffled": scores}``: the suite as it is and the blind control
    with the images shuffled (:func:`evaluate_stage`). Runs in the demo's process or in a worker
    process (``jobs > 1``); ``threads`` sets the worker's torch threads. ``context``: the
    instruction vectors of :func:`context_vectors`, for the methods that route on them.
    ``full`` and ``covft`` record their vision gradients (:data:`GRADIENTS_FILE`, supp. Fig. A).
    """
    from covft.analysis.gradients import GradientFile
    from covft.eval.generate import collect_items

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    log = StageLog(run.out)
    output = run.stage2_dir(seed, method)
    method_options = (
        {"context_vectors": str(context)} if context is not None and _routes_on_text(method) else {}
    )
    config = _train_config(
        run,
        method=method,
        seed=seed,
        start=start,
        options=start.model_options(run.settings),
        method_options=method_options,
    )
    callbacks = [GradientFile(output / GRADIENTS_FILE)] if method in GRADIENT_METHODS else []
    train_stage(f"stage2/seed{seed}/{method}", config, log, callbacks)
    items = collect_items("all", suite=run.world_dir / "suite")
    load_model = functools.cache(lambda: stage2_model(run, seed, method))
    scores: dict[str, dict[str, float]] = {}
    for kind in ("real", "shuffled"):
        results = evaluate_stage(
            run, seed, method, items, log, shuffled=kind == "shuffled", load_model=load_model
        )
        scores[kind] = {name: float(entry["score"]) for name, entry in results["scores"].items()}
    return scores


def _stage2_all(
    run: DemoRun, seed: int, start: StartingPoint, context: Path | None
) -> dict[str, dict[str, dict[str, float]]]:
    """Every method's stage 2 + evaluation for one seed, ``run.jobs`` at a time.

    Methods are independent once stage 1 is done, so on a 2-core machine two single-threaded
    workers keep both cores busy with less threading overhead than one two-threaded process.
    """
    jobs = min(run.jobs, len(run.methods))
    if jobs <= 1:
        return {m: stage2_and_eval(run, seed, m, start, context=context) for m in run.methods}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    threads = max(1, torch.get_num_threads() // jobs)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
        futures = {
            m: pool.submit(stage2_and_eval, run, seed, m, start, threads, context) for m in run.methods
        }
        return {m: futures[m].result() for m in run.methods}


def _routes_on_text(method: str) -> bool:
    """Whether ``method``'s strategy takes precomputed instruction vectors (``context_vectors``)."""
    from dataclasses import fields

    from covft.strategies import get_strategy

    return "context_vectors" in {f.name for f in fields(get_strategy(method).Options)}


def context_vectors(run: DemoRun, log: StageLog, items: dict[str, list[dict]]) -> Path | None:
    """The frozen text encoder's vector of every instruction of the world, computed once.

    The vectors are a pure function of the instruction text, so every CoVFT run of every seed
    (stage 2 and the suite) reads them from one file instead of encoding each instruction
    again (a MiniLM miss costs about as much CPU as the rest of a CoVFT step at the tiny
    geometry). Cached under ``<cache>/context/<hash>.safetensors``, the hash covering the
    encoder's fingerprint and every instruction. None when no method routes on the instruction,
    or on a CUDA GPU, where the encoder runs on the GPU with its batch for next to nothing.
    """
    import torch

    from covft.data.contract import router_context
    from covft.models.text_encoder import load_text_encoder

    if torch.cuda.is_available() or not any(_routes_on_text(m) for m in run.methods):
        return None
    started = clock()
    records = json.loads((run.world_dir / "train.json").read_text(encoding="utf-8"))
    texts = [router_context(r) for r in records if r.get("image")]
    texts += [router_context(item) for rows in items.values() for item in rows]
    encoder = load_text_encoder(run.settings.pretrain.text_encoder)
    digest = hashlib.sha256(json.dumps([encoder.fingerprint(), sorted(set(texts))]).encode())
    path = (Path(run.cache_dir) / "context" / f"{digest.hexdigest()[:16]}.safetensors").resolve()
    if path.is_file():
        log.record("context_vectors", "reused", started)
        return path
    count = encoder.precompute(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    encoder.save_vectors(partial)
    os.replace(partial, path)
    log.record("context_vectors", "ran", started, instructions=count)
    return path


def mechanisms(run: DemoRun, log: StageLog, start: StartingPoint) -> dict[str, Any]:
    """The paper's four mechanisms measured on this demo's world and models (:mod:`covft.analysis`).

    (i) Fig. 1c: two full fine-tuning runs from the starting point, on grounding and on
    captions of the same images (``mechanism_steps`` x ``mechanism_batch_size``), compared block
    by block; (ii) supp. Fig. A: the vision gradients recorded by the demo's own ``full`` and
    ``covft`` stage-2 runs, every seed; (iii, iv) Fig. 3a/b: context vectors and gates of each
    seed's ``covft`` model on ``mechanism_samples`` training samples. Each gets a verdict
    (:mod:`covft.analysis.mechanisms`). Written to ``<out>/mechanisms/`` (``mechanisms.json``,
    ``mechanisms.png``, ``conflict.json``) and reused while the methods and seeds are the same.
    Each measurement returns ``({mechanism: summary}, raw data for the figure)``.
    """
    from covft.analysis import plots

    out = run.out / MECHANISMS_DIR
    path = out / "mechanisms.json"
    key = {"methods": sorted(run.methods), "seeds": run.seeds}
    started = clock()
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            log.record("mechanisms", "reused", started)
            return saved
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {"key": key}
    raw: dict[str, Any] = {}
    for name, measure in (
        ("conflict", _conflict_mechanism),
        ("gradients", _gradient_mechanism),
        ("context", _context_mechanisms),
    ):
        part_started = clock()
        summaries, raw[name] = measure(run, start, out)
        wall, cpu = clock()
        for summary in summaries.values():
            summary["seconds"] = {
                "wall": round(wall - part_started[0], 2),
                "cpu": round(cpu - part_started[1], 2),
            }
        found.update(summaries)
    plots.plot_mechanisms(found, raw, out / "mechanisms.png")
    path.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    log.record("mechanisms", "ran", started)
    return found


def _conflict_mechanism(run: DemoRun, start: StartingPoint, out: Path) -> tuple[dict[str, Any], Any]:
    """(i): grounding vs captions on the same images, full fine-tuning, from the starting point."""
    from covft.analysis.conflict import run_conflict, split_by_task
    from covft.analysis.mechanisms import conflict_summary
    from covft.analysis.runs import load_records

    s = run.settings
    records = load_records(run.world_dir / "train.json")
    captions = load_records(run.world_dir / "captions.json")
    grounding, caption = split_by_task(records, "grounding", "caption", captions)
    count = s.mechanism_steps * s.mechanism_batch_size
    overrides = [
        f"model={run.preset}",
        f"init_from={json.dumps(str(start.path.resolve()))}",
        f"train.warmup_ratio={s.warmup_ratio}",
        f"train.lr_scheduler={s.lr_scheduler}",
        "train.progress_bar=false",
        *(f"model_options.{k}={json.dumps(v)}" for k, v in start.model_options(run.settings).items()),
    ]
    result = run_conflict(
        grounding[:count],
        caption[:count],
        out / "conflict",
        image_folder=run.world_dir,
        strategies=("full",),
        steps=s.mechanism_steps,
        every=max(1, s.mechanism_steps // 2),
        batch_size=s.mechanism_batch_size,
        lr=s.stage2_lr,
        seed=0,
        overrides=overrides,
        tasks=("grounding", "caption"),
    )
    (out / "conflict.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return {"conflict": conflict_summary(result)}, result


def _gradient_mechanism(run: DemoRun, start: StartingPoint, out: Path) -> tuple[dict[str, Any], Any]:
    """(ii): the gradients the ``full`` and ``covft`` stage-2 runs recorded, per seed."""
    from covft.analysis.gradients import read_gradient_file
    from covft.analysis.mechanisms import gradient_summary, not_measured

    missing = [m for m in GRADIENT_METHODS if m not in run.methods]
    if missing:
        return {
            "gradients": not_measured("gradients", f"{' and '.join(missing)} not among the methods")
        }, None
    per_seed = {}
    for seed in range(run.seeds):
        files = {m: run.stage2_dir(seed, m) / GRADIENTS_FILE for m in GRADIENT_METHODS}
        absent = [str(f) for f in files.values() if not f.is_file()]
        if absent:
            reason = f"no recorded gradients ({', '.join(absent)}): stage 2 ran before recording existed; use a new --out"
            return {"gradients": not_measured("gradients", reason)}, None
        per_seed[seed] = {m: read_gradient_file(f)[1] for m, f in files.items()}
    return {"gradients": gradient_summary(per_seed)}, per_seed


def _context_mechanisms(run: DemoRun, start: StartingPoint, out: Path) -> tuple[dict[str, Any], Any]:
    """(iii, iv): context vectors and gates of every seed's ``covft`` model on training samples."""
    import covft
    from covft.analysis.context import collect_context, select_samples
    from covft.analysis.mechanisms import context_summary, not_measured
    from covft.analysis.runs import family_labels, load_records

    if "covft" not in run.methods:
        reason = "covft not among the methods"
        return {
            "clusters": not_measured("clusters", reason),
            "routing": not_measured("routing", reason),
        }, None
    data = run.world_dir / "train.json"
    records = load_records(data)
    families = family_labels(data, records)
    chosen = [records[i] for i in select_samples(records, run.settings.mechanism_samples, seed=0)]
    samples = [
        {"id": str(r["id"]), "image": run.world_dir / r["image"], "conversations": r["conversations"]}
        for r in chosen
    ]
    labels = [families[str(r["id"])] for r in chosen]
    per_seed = {}
    for seed in range(run.seeds):
        model = covft.build_model(str(run.stage2_dir(seed, "covft")))
        contexts, routes = collect_context(model, samples, "last", batch_size=64, progress=False)
        per_seed[seed] = (contexts, routes, labels)
    return context_summary(per_seed), per_seed


# --------------------------------------------------------------------------- the whole demo


def run_demo(run: DemoRun) -> dict[str, Any]:
    """Run (or resume) every stage and write the report; returns the content of ``results.json``."""
    from covft.eval.generate import collect_items
    from covft.recipes.demo.report import write_report
    from covft.strategies import available_methods

    if run.preset not in PRESETS:
        raise DemoError(f"preset must be one of {PRESETS}, got {run.preset!r}")
    unknown = [m for m in run.methods if m not in available_methods()]
    if unknown:
        raise DemoError(f"unknown method(s) {unknown}; available: {', '.join(available_methods())}")
    if run.seeds < 1:
        raise DemoError(f"--seeds must be >= 1, got {run.seeds}")
    if run.jobs < 1:
        raise DemoError(f"--jobs must be >= 1, got {run.jobs}")
    if len(set(run.methods)) != len(run.methods) or not run.methods:
        raise DemoError(f"give each method once, got {list(run.methods)}")
    _check_settings(run)
    log = StageLog(run.out)
    total = clock()

    start = starting_point(run, log)
    make_demo_world(run, log)
    items = collect_items("all", suite=run.world_dir / "suite")
    context = context_vectors(run, log, items)

    scores: dict[int, dict[str, dict[str, float]]] = {}
    blind: dict[int, dict[str, dict[str, float]]] = {}
    for seed in range(run.seeds):
        both = _stage2_all(run, seed, start, context)
        scores[seed] = {m: both[m]["real"] for m in run.methods}
        blind[seed] = {m: both[m]["shuffled"] for m in run.methods}
    found = mechanisms(run, log, start)
    log.record("demo", "total", total)
    return write_report(run, start, scores, items, shuffled=blind, mechanisms=found)
