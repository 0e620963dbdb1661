"""Where training metrics go: ``log.jsonl`` always, plus TensorBoard or Weights & Biases.

``log.jsonl`` holds one JSON object per logged optimizer step (``{"step": 3, "loss": ..., "lr":
..., ...}``); other tools plot training curves from it. On resume, entries after the checkpoint's
step (written by the interrupted run, about to be redone) are dropped, so the file always
describes one consistent run.

wandb is imported only when ``report_to="wandb"`` is chosen, and TensorBoard only for
``"tensorboard"``. Only the main process writes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from covft.errors import MissingDependencyError

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"


_TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "covft[tensorboard]"), "wandb": ("wandb", "covft[wandb]")}


def require_tracker(report_to: str) -> None:
    """Fail before any work is done when the chosen tracker's package is not installed."""
    if report_to not in _TRACKER_PACKAGES:
        return
    package, extra = _TRACKER_PACKAGES[report_to]
    if importlib.util.find_spec(package) is None:
        raise MissingDependencyError(
            f"train.report_to={report_to} needs the {package!r} package, which is not installed. "
            f"Fix: pip install '{extra}', or set train.report_to=none (log.jsonl is always written)"
        )


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` file (or of ``<dir>/log.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything before it is valid
    return records


def _clean(value: float) -> float | str:
    """JSON has no NaN/inf; write them as strings so the log stays valid JSON."""
    return value if math.isfinite(value) else str(value)


class MetricsLogger:
    """Writes per-step metrics to ``log.jsonl`` and the chosen tracker (main process only)."""

    def __init__(
        self,
        output_dir: str | Path,
        report_to: str = "tensorboard",
        *,
        enabled: bool = True,
        resume_step: int | None = None,
        run_config: dict[str, Any] | None = None,
        wandb_project: str = "covft",
    ) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / LOG_FILE
        self._writer: Any = None
        self._wandb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        if report_to == "tensorboard":
            tensorboard = importlib.import_module("torch.utils.tensorboard")
            self._writer = tensorboard.SummaryWriter(
                log_dir=str(Path(output_dir) / TENSORBOARD_DIR), purge_step=resume_step
            )
        elif report_to == "wandb":
            self._wandb = importlib.import_module("wandb")
            self._wandb.init(project=wandb_project, config=run_config, dir=str(output_dir), resume="allow")
        elif report_to != "none":
            raise ValueError(f"report_to must be tensorboard, wandb or none, got {report_to!r}")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` for optimizer step ``step``."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _clean(float(v)) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), step)
        if self._wandb is not None:
            self._wandb.log(dict(metrics), step=step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Record a free-text note (e.g. the bad-sample summary) in the tracker."""
        if self.enabled and self._writer is not None:
            self._writer.add_text(tag, text, step)

    def close(self) -> None:
        """Flush and close the trackers."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
