"""The atomic-output helpers: complete or absent, reuse with equal settings, refuse with others."""

import json
import os
import stat
from pathlib import Path

import pytest

from covft.errors import UserError
from covft.utils import (
    StaleOutputError,
    atomic_directory,
    cached_output,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_atomic_directory_keep_existing_drops_the_late_copy(tmp_path):
    target = tmp_path / "tok"
    with atomic_directory(target, keep_existing=True) as tmp:
        (tmp / "v").write_text("first")
        target.mkdir()
        (target / "v").write_text("concurrent")
    assert (target / "v").read_text() == "concurrent"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


def test_atomic_files(tmp_path):
    path = write_json_atomic(tmp_path / "d" / "x.json", {"a": 1}, fsync=True)
    assert json.loads(path.read_text()) == {"a": 1}
    write_text_atomic(path, "plain")
    assert path.read_text() == "plain"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_cached_output_builds_once_then_reuses(tmp_path):
    calls = []

    def build(tmp):
        calls.append(tmp)
        (tmp / "w.txt").write_text("weights")
        return {"loss": 0.5}

    first = cached_output(tmp_path / "stage", {"steps": 3, "lr": 1e-3}, build)
    again = cached_output(tmp_path / "stage", {"lr": 1e-3, "steps": 3}, build)
    assert (first.reused, again.reused) == (False, True)
    assert again.info == {"loss": 0.5} and len(calls) == 1
    assert (tmp_path / "stage" / "w.txt").read_text() == "weights"


def test_cached_output_refuses_other_settings_naming_the_key(tmp_path):
    cached_output(tmp_path / "stage", {"steps": 3, "model": {"width": 8}}, lambda tmp: None)
    with pytest.raises(StaleOutputError, match=r"model\.width: 8 there, 16 asked.*Fix: delete") as info:
        cached_output(
            tmp_path / "stage", {"steps": 3, "model": {"width": 16}}, lambda tmp: None, what="stage 0"
        )
    assert isinstance(info.value, UserError)
    assert str(info.value).startswith("stage 0 ")


def test_cached_output_failed_build_leaves_nothing(tmp_path):
    def build(tmp):
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_output(tmp_path / "stage", {"a": 1}, build)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_atomic_directory_puts_the_old_one_back_when_the_second_rename_fails(
    tmp_path, monkeypatch, interrupt
):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "weights").write_text("old")
    rename, calls = Path.rename, []

    def failing_rename(self, dst):
        calls.append((self.name, Path(dst).name))
        if len(calls) == 2:  # the second rename (the new directory moving in) is interrupted
            raise interrupt("between the two renames")
        return rename(self, dst)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(interrupt), atomic_directory(target) as tmp:
        (tmp / "weights").write_text("new")
    monkeypatch.undo()
    assert calls[0][0] == "ckpt" and calls[1][1] == "ckpt"  # the old one went aside, the new one failed
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # neither the new copy nor an aside left


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=["umask 022", "umask 002", "umask 077"])
def test_outputs_get_the_permissions_an_ordinary_write_gives(tmp_path, umask, mask):
    umask(mask)
    file = write_json_atomic(tmp_path / "report.json", {"a": 1})
    write_text_atomic(tmp_path / "again.txt", "x")
    write_text_atomic(tmp_path / "again.txt", "y")  # replacing a file
    with atomic_directory(tmp_path / "export") as tmp:
        (tmp / "model.bin").write_bytes(b"w")
    with atomic_directory(tmp_path / "export") as tmp:  # replacing a directory
        (tmp / "model.bin").write_bytes(b"w2")
    stage = cached_output(tmp_path / "stage", {"a": 1}, lambda tmp: None).path
    assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "again.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((stage / "settings.json").stat().st_mode) == 0o666 & ~mask
    for directory in (tmp_path / "export", stage):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o777 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_a_library_writes_private_become_as_readable_as_an_ordinary_write(tmp_path, umask, mask):
    """safetensors' save_file creates its file 0o600 whatever the umask: inside an atomic directory
    (a checkpoint, an export) it gets the bits an ordinary new file would have."""
    import torch
    from safetensors.torch import save_file

    umask(mask)
    with atomic_directory(tmp_path / "ckpt") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
        (tmp / "sub").mkdir()
        (tmp / "sub" / "run.sh").write_text("#!/bin/sh\n")
        (tmp / "sub" / "run.sh").chmod(0o700)  # an executable keeps its execute bit
    assert stat.S_IMODE((tmp_path / "ckpt" / "model.safetensors").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "ckpt" / "sub" / "run.sh").stat().st_mode) == 0o700 | (0o666 & ~mask)
