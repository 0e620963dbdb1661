"""Where training metrics go: ``log.jsonl`` always, plus any tracker accelerate supports.

Metrics go through accelerate's tracker API (``Accelerator(log_with=...)``, ``accelerator.log``):
:class:`JsonlTracker` writes ``log.jsonl``, one JSON object per logged optimizer step (``{"step":
3, "loss": ..., "lr/llm": ..., ...}``), from which the demo report and the analyses read training
curves. On resume, entries after the checkpoint's step (written by the interrupted run, about to
be redone) are dropped, so the file always describes one consistent run.

``train.report_to`` names further trackers, comma-separated: ``tensorboard`` (written to
``<output_dir>/tensorboard``), ``wandb`` (project ``train.wandb_project``) or any other name
accelerate knows (``mlflow``, ``comet_ml``, ...); ``none`` adds none; ``auto`` (the default) adds
the local trackers that are installed (``tensorboard``), so a base install trains without any
optional package and an install with ``covft[tensorboard]`` gets its event files. Trackers that
need an account or a server (``wandb``, ``mlflow``, ...) are used only when named. A named tracker whose package is missing is refused
before anything is written. Only the main process writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

from covft.errors import MissingDependencyError
from covft.train.config import ConfigError, TrainConfig
from covft.utils.hints import did_you_mean

LOG_FILE = "log.jsonl"
TENSORBOARD_DIR = "tensorboard"
_EXTRAS = {"tensorboard": "covft[tensorboard]", "wandb": "covft[wandb]"}


AUTO_TRACKERS = ("tensorboard",)
"""What ``report_to=auto`` uses when installed: trackers that write local files and need no account."""


def tracker_names(report_to: str) -> list[str]:
    """The trackers named by ``train.report_to`` (``none``: no tracker besides ``log.jsonl``;
    ``auto``: the installed ones of :data:`AUTO_TRACKERS`)."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names == ["auto"]:
        from accelerate.tracking import get_available_trackers

        available = {str(kind) for kind in get_available_trackers()}
        return [name for name in AUTO_TRACKERS if name in available]
    return [] if names in ([], ["none"]) else names


def require_trackers(report_to: str) -> None:
    """Refuse an unknown tracker or one whose package is not installed, before any work is done."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = [kind.value for kind in LoggerType if kind.value != "all"]
    available = {str(kind) for kind in get_available_trackers()}
    for name in tracker_names(report_to):
        if name not in known:
            hint = did_you_mean(name, known)
            raise ConfigError(
                f"train.report_to names an unknown tracker {name!r}.{hint} Fix: use auto, none or a comma-separated "
                f"list of {known}"
            )
        if name not in available:
            raise MissingDependencyError(
                f"train.report_to={name} needs the {name!r} package, which is not installed. Fix: pip install "
                f"'{_EXTRAS.get(name, name)}', or set train.report_to=none (log.jsonl is always written)"
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


class JsonlTracker(GeneralTracker):
    """accelerate tracker writing ``log.jsonl``; started (file created or cut back) by ``init_trackers``."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, output_dir: str | Path, resume_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(output_dir) / LOG_FILE
        self.resume_step = resume_step

    @property
    def tracker(self) -> Path:
        return self.path

    def start(self) -> None:
        """Start a new log, or keep the entries up to ``resume_step`` of the run being resumed."""
        kept = [] if self.resume_step is None else read_log(self.path)
        kept = [record for record in kept if record.get("step", 0) <= (self.resume_step or 0)]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        record = {"step": step, **{key: _clean(float(value)) for key, value in values.items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def make_trackers(config: TrainConfig, resume_step: int | None) -> list[Any]:
    """The ``log_with`` list of this run: the JSONL log and the trackers ``train.report_to`` names."""
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    output_dir = Path(config.output_dir)
    trackers: list[Any] = [JsonlTracker(output_dir, resume_step)]
    for name in tracker_names(config.train.report_to):
        if name == "tensorboard":
            # TensorBoard drops the events at steps >= purge_step: those after the checkpoint, which the
            # resumed run logs again (the checkpoint's own step is not logged again, so it stays)
            purge = None if resume_step is None else resume_step + 1
            trackers.append(TensorBoardTracker(TENSORBOARD_DIR, str(output_dir), purge_step=purge))
        elif name == "wandb":
            options = {"config": config.to_dict(), "dir": str(output_dir), "resume": "allow"}
            trackers.append(WandBTracker(config.train.wandb_project, **options))
        else:  # built by accelerate in init_trackers, with train.wandb_project as the project name
            trackers.append(name)
    return trackers


def start_trackers(accelerator: Any, config: TrainConfig) -> None:
    """Start every tracker (main process only; ``output_dir`` exists by now)."""
    accelerator.init_trackers(config.train.wandb_project)


def finish_trackers(accelerator: Any) -> None:
    """Flush and close the trackers (not ``end_training``: the process group stays up)."""
    for tracker in accelerator.trackers:
        tracker.finish()
