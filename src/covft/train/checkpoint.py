"""Resumable checkpoints that are complete or absent, never half-written.

A checkpoint is a directory ``checkpoint-<step>`` holding what ``accelerate`` saves for the
prepared model, optimizer and scheduler (weights as safetensors, optimizer/scheduler state and
every process's RNG state via ``torch.save``; sharded DeepSpeed/FSDP state when those are used),
plus ``trainer_state.json`` (step, epoch, loss history, skip counts) and a ``COMPLETE`` marker.

Atomicity: everything is written into ``.tmp-checkpoint-<step>``, every file and the directory are
fsync'ed, the marker is written last, and only then is the directory renamed to its final name
(an atomic ``rename`` on POSIX file systems). A crash at any point leaves either the previous
checkpoints untouched plus a ``.tmp-*`` directory that is ignored and cleaned up, or a complete
new checkpoint. Deleting old checkpoints (``save_total_limit``) renames them away first, so a
half-deleted checkpoint never looks complete either; and the newest checkpoint counts as good,
allowing older ones to be rotated away, only once the step after it was finite
(:class:`CheckpointKeeper`).

Why not ``accelerate``'s ``ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)``:
it writes straight into the final directory (no temporary name, no marker), names checkpoints by
save count instead of step, and deletes the oldest ones with ``rmtree`` *before* writing the new
one, so a crash or a non-finite step right after a save could leave no good checkpoint at all
(docs/decisions.md). The temporary directory here is not :func:`covft.utils.atomic_directory`
either: every process writes its shard of the state into it, so its name must be known to all
processes, and it is fsync'ed and marked complete before the rename.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".deleting-"


class StateSaver(Protocol):
    """The part of ``accelerate.Accelerator`` that checkpointing needs."""

    is_main_process: bool

    def save_state(self, output_dir: str, **kwargs: Any) -> Any: ...

    def load_state(self, input_dir: str, **kwargs: Any) -> Any: ...

    def wait_for_everyone(self) -> None: ...


def checkpoint_path(output_dir: str | os.PathLike[str], step: int) -> Path:
    """Final location of the checkpoint written after optimizer step ``step``."""
    return Path(output_dir) / f"checkpoint-{step}"


def is_complete(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a fully written checkpoint."""
    path = Path(path)
    return bool(_CHECKPOINT.match(path.name)) and (path / COMPLETE_MARKER).is_file()


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``output_dir`` as (step, path), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def fsync_tree(path: Path) -> None:
    """Flush every file below ``path`` and the directories themselves to stable storage."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (so a rename inside it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale(output_dir: str | os.PathLike[str]) -> None:
    """Delete leftovers of interrupted saves and deletions (``.tmp-*``, ``.deleting-*``)."""
    root = Path(output_dir)
    if not root.is_dir():
        return
    for child in root.iterdir():
        if child.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def save_checkpoint(
    accelerator: StateSaver, output_dir: str | os.PathLike[str], step: int, trainer_state: dict[str, Any]
) -> Path:
    """Atomically write a resumable checkpoint for ``step``; collective (call on every process)."""
    root = Path(output_dir)
    final = checkpoint_path(root, step)
    temp = root / f"{_TEMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if temp.exists():
            shutil.rmtree(temp)
        temp.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(temp / TRAINER_STATE, "w", encoding="utf-8") as handle:
            json.dump(trainer_state, handle, indent=2)
        fsync_tree(temp)
        marker = temp / COMPLETE_MARKER
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(f"step {step}\n")
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(temp)
        if final.exists():  # a previous run reached this step and was resumed from earlier
            _delete(final)
        os.rename(temp, final)
        fsync_dir(root)
    accelerator.wait_for_everyone()
    return final


def _delete(path: Path) -> None:
    """Remove a checkpoint so that no intermediate state looks complete."""
    trash = path.with_name(f"{_TRASH_PREFIX}{path.name}")
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash)


def rotate_checkpoints(output_dir: str | os.PathLike[str], limit: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``limit``; returns what was deleted."""
    if limit is None:
        return []
    checkpoints = list_checkpoints(output_dir)
    doomed = [path for _step, path in checkpoints[: max(len(checkpoints) - limit, 0)]]
    for path in doomed:
        _delete(path)
    return doomed


def load_checkpoint(accelerator: StateSaver, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG state; returns the saved trainer state."""
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(
            f"{path} is not a complete checkpoint (no {COMPLETE_MARKER} marker). "
            "Fix: resume from another checkpoint-<step> directory or start without resume"
        )
    accelerator.load_state(str(path))
    return json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))


class CheckpointKeeper:
    """This run's checkpoints; a new one counts as good only once the step after it was finite.

    A checkpoint written at step k can already hold damaged weights: the update of step k can
    turn them into NaN or into numbers so large that the loss of step k+1 is NaN. So a checkpoint
    is *pending* until step k+1's loss and gradient norm are finite, and old checkpoints are
    rotated away only then: ``save_total_limit`` never deletes the last good one. When step k+1
    is not finite, :meth:`set_aside` moves the pending one to ``nonfinite-checkpoint-k`` (kept
    for inspection, never resumed from), and the error names the last good one.
    """

    def __init__(
        self, accelerator: StateSaver, output_dir: Path, limit: int | None, resumed: Path | None
    ) -> None:
        self.accelerator = accelerator
        self.output_dir = output_dir
        self.limit = limit
        earlier = [path for _step, path in list_checkpoints(output_dir) if path != resumed]
        # the checkpoint resumed from has not yet been followed by a finite step in this process
        self.pending = resumed
        self.good = earlier[-1] if resumed is not None and earlier else None

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the checkpoint of ``step`` (collective); it is pending until the next step."""
        self.pending = save_checkpoint(self.accelerator, self.output_dir, step, state)

    def next_step_was_finite(self) -> None:
        """The pending checkpoint is good: keep it and rotate older ones away."""
        if self.pending is None:
            return
        self.good, self.pending = self.pending, None
        if self.accelerator.is_main_process:
            rotate_checkpoints(self.output_dir, self.limit)

    def set_aside(self) -> Path | None:
        """Move the pending checkpoint out of resume's way; returns where it went."""
        if self.pending is None:
            return None
        target = self.pending.with_name(f"nonfinite-{self.pending.name}")
        if self.accelerator.is_main_process:
            if target.exists():
                shutil.rmtree(target)
            os.rename(self.pending, target)
        self.pending = None
        return target
