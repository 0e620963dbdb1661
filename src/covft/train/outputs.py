"""A run's output directory: checked before anything is written, the final model, the summary.

``output_dir`` holds ``train_config.yaml`` (the resolved config), ``log.jsonl``, the resumable
``checkpoint-<step>`` directories, and once the run finished the model (safetensors +
``covft_config.json``) and ``train_summary.json``, whose presence marks the run finished.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from covft.data.dataset import SkipReport
from covft.train import checkpoint as ckpt
from covft.train.accelerator import is_sharded
from covft.train.config import ConfigError
from covft.utils import write_json_atomic

CONFIG_FILE = "train_config.yaml"
SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    steps: int
    """Optimizer steps completed (the global step)."""
    metrics: dict[str, float]
    """Final metrics: last logged loss, mean loss of the last steps, throughput, skipped count."""
    loss_history: list[float] = field(default_factory=list)
    """Mean training loss of every optimizer step, from step 1 (including resumed-over steps)."""
    skipped: dict[str, Any] = field(default_factory=dict)
    """Counts and examples of bad samples skipped under ``data.on_bad_sample=skip``."""


def check_output_dir(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that cannot be written, before anything is built or written."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={output_dir} is a file. Fix: choose a directory for output_dir")
    existing = next(path for path in (output_dir, *output_dir.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"output_dir={output_dir} cannot be created: {existing} is a file. Fix: choose another output_dir"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output_dir={output_dir} cannot be written: {existing} is read-only for this user. "
            "Fix: choose a writable output_dir"
        )


def finished_run(output_dir: Path) -> TrainResult | None:
    """The result recorded by a run that completed in ``output_dir``, if any."""
    path = output_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    return TrainResult(
        output_dir, int(summary["steps"]), summary["metrics"], summary["loss_history"], summary["skipped"]
    )


def refuse_earlier_run(output_dir: Path, resume: bool) -> TrainResult | None:
    """An earlier run's result when it finished and ``resume``; refuse to overwrite earlier work."""
    finished = finished_run(output_dir)
    if finished is not None:
        if not resume:
            raise ConfigError(
                f"{output_dir} already holds a finished run ({finished.steps} steps). "
                "Fix: choose another output_dir, or resume=true to get that run's result back"
            )
        return finished
    existing = ckpt.list_checkpoints(output_dir)
    if existing and not resume:
        raise ConfigError(
            f"{output_dir} already holds checkpoints ({existing[-1][1].name}) of an earlier run. "
            "Fix: resume=true to continue it, or choose another output_dir"
        )
    return None


class _GatheredModel:
    """The unwrapped model seen through a gathered full state dict (ZeRO-3 / FSDP shard parameters)."""

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        self._model = model
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def save_final_model(accelerator: Any, model: nn.Module, output_dir: Path) -> None:
    """Save the trained model into ``output_dir`` (safetensors + covft_config.json); collective.

    Everything is written into a temporary folder first and then moved in file by file with
    atomic renames, so a crash leaves whole files only (``output_dir`` also holds the logs and
    checkpoints, so it is not swapped as a whole). Under ZeRO-3/FSDP the full state dict is
    gathered first (that is what ``stage3_gather_16bit_weights_on_model_save`` enables).
    """
    from covft.models.checkpoint import save_pretrained

    unwrapped = accelerator.unwrap_model(model)
    target: Any = unwrapped
    if is_sharded(accelerator):
        target = _GatheredModel(unwrapped, accelerator.get_state_dict(model))
    if accelerator.is_main_process:
        temp = output_dir / ".tmp-final-model"
        if temp.exists():
            shutil.rmtree(temp)
        save_pretrained(target, temp)
        ckpt.fsync_tree(temp)
        for item in sorted(temp.iterdir()):
            destination = output_dir / item.name
            if destination.is_dir():
                shutil.rmtree(destination)
            os.replace(item, destination)
        shutil.rmtree(temp)
        ckpt.fsync_dir(output_dir)
    accelerator.wait_for_everyone()


def finish_run(
    accelerator: Any,
    output_dir: Path,
    loss_history: list[float],
    report: SkipReport,
    samples_per_second: float,
    **extra: Any,
) -> TrainResult:
    """Write ``train_summary.json``, which marks the run finished (collective); returns the result.

    ``extra`` (data notes, resume notices) goes into the summary as it is.
    """
    tail = loss_history[-max(1, min(10, len(loss_history))) :]
    final = {
        "loss": loss_history[-1] if loss_history else float("nan"),
        "mean_loss_last_steps": sum(tail) / len(tail) if tail else float("nan"),
        "samples_per_second": samples_per_second,
        "skipped_samples": float(report.total),
    }
    steps = len(loss_history)
    if accelerator.is_main_process:
        summary = report.summary()
        if summary:
            print(summary, flush=True)
        record = {"steps": steps, "metrics": final, "loss_history": loss_history, "skipped": report.to_dict()}
        write_json_atomic(output_dir / SUMMARY_FILE, {**record, **extra}, fsync=True)
    accelerator.wait_for_everyone()
    return TrainResult(output_dir, steps, final, loss_history, report.to_dict())
