"""`atomic_directory`: the target is always either the old directory or the complete new one."""

from __future__ import annotations

import pytest

from covft.utils import atomic_directory


def test_success_replaces_the_old_directory_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_keeps_the_old_directory_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "kept.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_missing_target_and_its_parents_are_created(tmp_path):
    target = tmp_path / "a" / "b"
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("x")
    assert (target / "x").read_text() == "x"
