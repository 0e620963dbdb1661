"""What a demo run is and where it writes: its folders, its settings record and its stage log.

Every stage writes its result into its own folder under ``<out>`` and is skipped when that result
is already there (:mod:`covft.recipes.demo.pipeline`); each action is appended to
``<out>/stages.jsonl`` (``ran`` or ``reused``, with seconds), which the report and the tests read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from covft.recipes.demo.cache import default_cache_dir
from covft.recipes.demo.settings import DemoSettings
from covft.utils import write_json_atomic

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
    cache_dir: Path = field(default_factory=default_cache_dir)
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


def check_settings(run: DemoRun) -> None:
    """Refuse to mix stages trained under other settings in one demo folder; record them otherwise.

    Not :func:`covft.utils.cached_output`: the demo folder is not built in one go but grows stage
    by stage (and by seed), so only its settings record is written atomically.
    """
    recorded = {"preset": run.preset, "settings": run.settings.to_dict()}
    path = run.out / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != json.loads(json.dumps(recorded)):
            raise DemoError(
                f"{run.out} holds a demo run with other settings or preset ({path}). Fix: pass another "
                "--out (e.g. runs/demo-quick for --quick), or delete that folder to start afresh"
            )
    write_json_atomic(path, recorded)
