"""The demo's stage steps shared by the starting point's recipe and stage 2: worlds and training runs.

Each step is skipped when its result is already there and logged as ``ran`` or ``reused``
(:class:`~covft.recipes.demo.layout.StageLog`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covft.recipes.demo.layout import DemoRun, StageLog, clock
from covft.recipes.world import make_world, world_is_current
from covft.train import train
from covft.train.config import config_from_dict


def train_loop(
    settings: Any, *, steps: int, batch_size: int, lr: float, seed: int, progress: bool
) -> dict[str, Any]:
    """The ``train`` block every demo training run shares: the settings' schedule, resumable saves.

    ``settings``: :class:`~covft.recipes.demo.settings.DemoSettings` or
    :class:`~covft.recipes.demo.settings.PretrainSettings` (both give the schedule and save steps).
    """
    return {
        "max_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "warmup_ratio": settings.warmup_ratio,
        "lr_scheduler": settings.lr_scheduler,
        "seed": seed,
        "save_steps": settings.save_steps,
        "save_total_limit": 1,
        "report_to": "none",
        "logging_steps": 1,
        "progress_bar": progress,
    }


def logged_world(out: Path, log: StageLog, stage: str, *, progress: bool, **config: Any) -> dict[str, Any]:
    """:func:`covft.recipes.world.make_world` into ``out``, logged as ``ran`` or ``reused``."""
    started = clock()
    reused = world_is_current(out, **config)
    meta = make_world(out, progress=progress, **config)
    log.record(stage, "reused" if reused else "ran", started)
    return meta


def make_demo_world(run: DemoRun, log: StageLog) -> dict[str, Any]:
    """Generate (or reuse) the world under ``<out>/world``."""
    s = run.settings
    return logged_world(run.world_dir, log, "world", progress=run.progress, size=s.world_size,
                        seed=s.world_seed, suite_size=s.suite_size, image_size=s.image_size,
                        family_weights=s.family_weights)  # fmt: skip


def train_stage(
    name: str, config: dict[str, Any], log: StageLog, callbacks: Sequence[Any] = ()
) -> dict[str, Any]:
    """Run one training stage with ``covft.train.train`` unless its summary is already there."""
    output = Path(config["output_dir"])
    summary = output / "train_summary.json"
    started = clock()
    if summary.is_file():
        log.record(name, "reused", started)
        return json.loads(summary.read_text(encoding="utf-8"))
    result = train(config_from_dict(config, source=name), callbacks=list(callbacks))
    log.record(name, "ran", started, steps=result.steps)
    return json.loads(summary.read_text(encoding="utf-8"))
