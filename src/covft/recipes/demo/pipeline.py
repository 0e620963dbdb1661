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

The pieces: :mod:`~covft.recipes.demo.layout` (folders, settings record, stage log),
:mod:`~covft.recipes.demo.starting_point`, :mod:`~covft.recipes.demo.stages` (worlds, training
runs), :mod:`~covft.recipes.demo.context` (instruction vectors), :mod:`~covft.recipes.demo.stage2`
(stage 2 and the suite per method and seed), :mod:`~covft.recipes.demo.mechanisms` and
:mod:`~covft.recipes.demo.report`.
"""

from __future__ import annotations

from typing import Any

from covft.eval.generate import collect_items
from covft.recipes.demo.context import context_vectors
from covft.recipes.demo.layout import PRESETS, DemoError, DemoRun, StageLog, check_settings, clock
from covft.recipes.demo.mechanisms import mechanisms
from covft.recipes.demo.report import write_report
from covft.recipes.demo.stage2 import stage2_all
from covft.recipes.demo.stages import make_demo_world
from covft.recipes.demo.starting_point import starting_point
from covft.strategies import get_strategy
from covft.strategies.base import UnknownMethodError

__all__ = ["DemoError", "DemoRun", "run_demo"]


def run_demo(run: DemoRun) -> dict[str, Any]:
    """Run (or resume) every stage and write the report; returns the content of ``results.json``."""
    if run.preset not in PRESETS:
        raise DemoError(f"preset must be one of {PRESETS}, got {run.preset!r}")
    for method in run.methods:
        try:
            get_strategy(method)  # the one strategy lookup: names the closest method
        except UnknownMethodError as error:
            raise DemoError(f"--methods: {error}") from error
    if run.seeds < 1:
        raise DemoError(f"--seeds must be >= 1, got {run.seeds}")
    if run.jobs < 1:
        raise DemoError(f"--jobs must be >= 1, got {run.jobs}")
    if len(set(run.methods)) != len(run.methods) or not run.methods:
        raise DemoError(f"give each method once, got {list(run.methods)}")
    check_settings(run)
    log = StageLog(run.out)
    total = clock()

    start = starting_point(run, log)
    make_demo_world(run, log)
    items = collect_items("all", suite=run.world_dir / "suite")
    context = context_vectors(run, log, items)

    scores: dict[int, dict[str, dict[str, float]]] = {}
    blind: dict[int, dict[str, dict[str, float]]] = {}
    for seed, both in stage2_all(run, run.seeds, start, context).items():
        scores[seed] = {m: both[m]["real"] for m in run.methods}
        blind[seed] = {m: both[m]["shuffled"] for m in run.methods}
    found = mechanisms(run, log, start)
    log.record("demo", "total", total)
    return write_report(run, start, scores, items, shuffled=blind, mechanisms=found)
