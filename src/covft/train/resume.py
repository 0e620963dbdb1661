"""Resuming a run: restore a checkpoint, refuse a changed data layout, report changed settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from covft.data.dataset import LlavaDataset
from covft.train import checkpoint as ckpt
from covft.train import setup
from covft.train.config import ConfigError, TrainConfig

WHOLE_PASS = {"fraction": 1.0, "weights": None, "fraction_seed": None}
"""The mixture keys of a layout that records none (one whole pass over the files, and checkpoints
written before the mixture was recorded): compared in both directions, so that neither a mixture
added nor one dropped on resume goes unnoticed."""


def restore(
    accelerator: Any, path: Path, layout: dict[str, Any], dataset: LlavaDataset, config: TrainConfig
) -> dict[str, Any]:
    """Restore checkpoint ``path``; returns its trainer state with ``notices`` (printed by the main process)."""
    state = ckpt.load_checkpoint(accelerator, path)
    saved_layout, layout = {**WHOLE_PASS, **state.get("layout", {})}, {**WHOLE_PASS, **layout}
    changed = {k: (saved_layout.get(k), v) for k, v in layout.items() if saved_layout.get(k) != v}
    if changed:
        raise ConfigError(
            f"cannot resume exactly from {path}: the data layout changed {changed} (saved, now). "
            "Fix: resume with the same number of processes, batch_size, grad_accum, seed, steps "
            "and data mixture (data.fraction, data.weights, data.fraction_seed)"
        )
    notices = []
    saved_data = state.get("data")
    if saved_data is not None and list(saved_data.values()) != list(dataset.fingerprints.values()):
        notices.append(
            f"warning: the training data changed since {path.name} was written "
            f"(sha256 then {_short(saved_data)}, now {_short(dataset.fingerprints)}); the batch order "
            "is recomputed from the new data, so the resumed run is not the interrupted one (samples "
            "may be seen twice or not at all). Restore the old data file for an exact resume"
        )
    schedule = setup.schedule_settings(config.train)
    saved_schedule = state.get("schedule", schedule)
    differences = [
        f"train.{k} {saved_schedule.get(k)} -> {v}" for k, v in schedule.items() if saved_schedule.get(k) != v
    ]
    if differences:
        notices.append(
            f"changed settings take effect from step {int(state['step']) + 1}: {', '.join(differences)}"
        )
    state["notices"] = notices
    if accelerator.is_main_process:
        print(f"covft train: resumed from {path} at step {state['step']}", flush=True)
        for notice in notices:
            print(f"covft train: {notice}", file=sys.stderr, flush=True)
    return state


def _short(fingerprints: dict[str, str]) -> dict[str, str]:
    return {file: digest[:12] for file, digest in fingerprints.items()}
