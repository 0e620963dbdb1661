"""The atomic-output helpers: complete or absent, reuse with equal settings, refuse with others."""

import json

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
