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
half-deleted checkpoint never looks complete either.
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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and an atomic replace."""
    temp = path.with_name(f"{_TEMP_PREFIX}{path.name}")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


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
