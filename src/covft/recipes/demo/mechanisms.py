"""The paper's four mechanisms measured on the demo's world and models (:mod:`covft.analysis`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from covft.analysis.conflict import split_by_task
from covft.analysis.context import collect_context, select_samples
from covft.analysis.gradients import read_gradient_file
from covft.analysis.mechanisms import conflict_summary, context_summary, gradient_summary, not_measured
from covft.analysis.mechanisms_figure import plot_mechanisms
from covft.analysis.runs import family_labels, load_records
from covft.recipes.analyses.conflict import run_conflict
from covft.recipes.demo.layout import (
    GRADIENT_METHODS,
    GRADIENTS_FILE,
    MECHANISMS_DIR,
    DemoRun,
    StageLog,
    clock,
)
from covft.recipes.demo.starting_point import StartingPoint
from covft.strategies import build_model
from covft.utils import write_json_atomic


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
    plot_mechanisms(found, raw, out / "mechanisms.png")
    write_json_atomic(path, found)  # last: a complete mechanisms.json marks the stage done
    log.record("mechanisms", "ran", started)
    return found


def _conflict_mechanism(run: DemoRun, start: StartingPoint, out: Path) -> tuple[dict[str, Any], Any]:
    """(i): grounding vs captions on the same images, full fine-tuning, from the starting point."""
    s = run.settings
    if s.family_weights.get("grounding", 0) <= 0:  # e.g. --set family_weights={...} without it
        reason = "the world has no grounding samples (family_weights gives grounding no weight)"
        return {"conflict": not_measured("conflict", reason)}, None
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
    write_json_atomic(out / "conflict.json", result)
    return {"conflict": conflict_summary(result)}, result


def _gradient_mechanism(run: DemoRun, start: StartingPoint, out: Path) -> tuple[dict[str, Any], Any]:
    """(ii): the gradients the ``full`` and ``covft`` stage-2 runs recorded, per seed."""
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
        model = build_model(str(run.stage2_dir(seed, "covft")))
        contexts, routes = collect_context(model, samples, "last", batch_size=64, progress=False)
        per_seed[seed] = (contexts, routes, labels)
    return context_summary(per_seed), per_seed
