"""Files and directories that are complete or absent, never half-written.

Every stage of covft that writes an output others read (a checkpoint, a generated world, a cached
stage of the demo, a tokenizer, an exported model) goes through these helpers, so that a crash or
a Ctrl-C at any moment leaves either the previous state or the complete new one:

* :func:`atomic_directory` builds a directory next to its target and renames it into place;
* :func:`write_text_atomic` / :func:`write_json_atomic` do the same for one file;
* :func:`cached_output` is "skip if complete, check the settings, write atomically": it reuses an
  output made with the same settings, refuses one made with different settings (naming the keys
  that differ and what to do), and otherwise builds it atomically with a settings record written
  last, whose presence marks the output complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covft.errors import UserError

SETTINGS_FILE = "settings.json"
"""The record :func:`cached_output` writes last into every output it builds."""


class StaleOutputError(UserError, RuntimeError):
    """An existing output was made with settings other than the ones asked for."""


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")


def _temporary_directory(path: Path) -> Path:
    """A new, empty directory next to ``path``, with the mode any new directory gets (0o777 less the
    umask; :func:`tempfile.mkdtemp` would make it 0o700, unreadable to others once renamed)."""
    for _ in range(100):
        tmp = _temporary_name(path)
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {path}")


def _temporary_file(path: Path) -> tuple[int, Path]:
    """A new, empty file next to ``path``, open for writing, with the mode any new file gets (0o666
    less the umask; :func:`tempfile.mkstemp` would make it 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = _temporary_name(path)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def _swap(tmp: Path, path: Path) -> None:
    """Replace the directory ``path`` by ``tmp``; on any failure (an interrupt too) ``path`` is left
    the old directory, or the new one when the swap had finished."""
    old = path.with_name(f".{path.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        path.rename(old)
        tmp.rename(path)
    except BaseException:
        if old.exists() and not path.exists():
            old.rename(path)  # put the previous state back
        elif old.exists():
            shutil.rmtree(old, ignore_errors=True)  # the new one is in place
        raise
    shutil.rmtree(old, ignore_errors=True)


def _ordinary_modes(tmp: Path) -> None:
    """Give every file under ``tmp`` at least the read/write bits an ordinary new file gets (the
    umask's, read off ``tmp``'s own mode): libraries such as safetensors create theirs 0o600."""
    allowed = tmp.stat().st_mode & 0o666
    for file in tmp.rglob("*"):
        mode = file.lstat().st_mode
        if file.is_file() and not file.is_symlink() and mode & allowed != allowed:
            file.chmod((mode | allowed) & 0o7777)


@contextmanager
def atomic_directory(path: str | os.PathLike[str], *, keep_existing: bool = False) -> Iterator[Path]:
    """A fresh temporary directory next to ``path`` that becomes ``path`` when the block succeeds.

    The swap is renames only, so ``path`` is at every moment either the old directory or the
    complete new one (an interrupt between the two renames puts the old one back); when the block
    fails the temporary directory is removed and ``path`` is untouched. With ``keep_existing=True``
    a ``path`` that appeared meanwhile (a concurrent run finished first) is kept and the new copy
    dropped. The new directory has the mode an ordinary ``mkdir`` gives (0o777 less the umask), and
    its files at least the read/write bits an ordinary new file gets.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_directory(path)
    try:
        yield tmp
        _ordinary_modes(tmp)
        if path.exists():
            if keep_existing:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            _swap(tmp, path)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic replace.

    The file gets the mode an ordinary new file gets (0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = _temporary_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        name.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, fsync: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (see :func:`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n", fsync=fsync)


@dataclass(frozen=True)
class CachedOutput:
    """What :func:`cached_output` found or built."""

    path: Path
    reused: bool
    """True when a complete output with the same settings already existed."""
    info: dict[str, Any] = field(default_factory=dict)
    """What the build returned (stored with the settings, so a reused output returns it too)."""


def _canonical(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=str))


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} asked")
    return found


def cached_output(
    path: str | os.PathLike[str],
    settings: Mapping[str, Any],
    build: Callable[[Path], Mapping[str, Any] | None],
    *,
    what: str = "output",
) -> CachedOutput:
    """Reuse ``path`` if it was built with ``settings``, else build it atomically.

    ``build(tmp)`` writes the output into the temporary directory ``tmp`` and may return a small
    JSON-able mapping (losses, counts, timings) that is stored with the settings. A complete
    output at ``path`` made with other settings raises :class:`StaleOutputError` naming the keys
    that differ; an incomplete one (no settings record: an older layout, a copy in progress) is
    rebuilt.
    """
    path = Path(path)
    wanted = _canonical(settings)
    record = path / SETTINGS_FILE
    if record.is_file():
        stored = json.loads(record.read_text(encoding="utf-8"))
        if stored.get("settings") != wanted:
            differ = "; ".join(_differences(stored.get("settings", {}), wanted)[:5])
            raise StaleOutputError(
                f"{what} {path} was made with other settings ({differ}). Fix: delete {path} to "
                "rebuild it, or choose another output directory"
            )
        return CachedOutput(path, True, dict(stored.get("info") or {}))
    with atomic_directory(path) as tmp:
        info = dict(build(tmp) or {})
        write_json_atomic(tmp / SETTINGS_FILE, {"settings": wanted, "info": info})
    return CachedOutput(path, False, info)
