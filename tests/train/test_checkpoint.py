"""Checkpoints are complete or absent: a crash mid-save never leaves one that looks complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from covft.train import checkpoint as ckpt
from covft.train import train
from tests.train.conftest import tiny_config


class FakeAccelerator:
    """Writes a weights file like accelerate would; optionally dies half-way through."""

    is_main_process = True

    def __init__(self, crash: bool = False) -> None:
        self.crash = crash

    def save_state(self, output_dir: str, **kwargs: Any) -> None:
        Path(output_dir, "model.safetensors").write_bytes(b"half a tensor")
        if self.crash:
            raise KeyboardInterrupt("killed mid-save")
        Path(output_dir, "optimizer.bin").write_bytes(b"state")

    def load_state(self, input_dir: str, **kwargs: Any) -> None:
        self.loaded = input_dir

    def wait_for_everyone(self) -> None:
        pass


def test_complete_checkpoints_are_listed_newest_last(tmp_path: Path) -> None:
    for step in (2, 10, 4):
        ckpt.save_checkpoint(FakeAccelerator(), tmp_path, step, {"step": step})
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4, 10]
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    path = tmp_path / "checkpoint-4"
    assert {p.name for p in path.iterdir()} == {
        "model.safetensors",
        "optimizer.bin",
        "trainer_state.json",
        "COMPLETE",
    }
    accelerator = FakeAccelerator()
    assert ckpt.load_checkpoint(accelerator, path) == {"step": 4}
    assert accelerator.loaded == str(path)


def test_crash_during_save_leaves_no_complete_looking_checkpoint(tmp_path: Path) -> None:
    ckpt.save_checkpoint(FakeAccelerator(), tmp_path, 2, {"step": 2})
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(FakeAccelerator(crash=True), tmp_path, 4, {"step": 4})
    assert not (tmp_path / "checkpoint-4").exists()
    assert (tmp_path / ".tmp-checkpoint-4" / "model.safetensors").exists()  # the debris is hidden
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    ckpt.remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_crash_before_the_rename_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt.save_checkpoint(FakeAccelerator(), tmp_path, 2, {"step": 2})

    def power_cut(src: Any, dst: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(ckpt.os, "rename", power_cut)
    with pytest.raises(OSError, match="power cut"):
        ckpt.save_checkpoint(FakeAccelerator(), tmp_path, 4, {"step": 4})
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]


def test_a_directory_without_the_marker_is_not_a_checkpoint(tmp_path: Path) -> None:
    fake = tmp_path / "checkpoint-7"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"x")
    (fake / "trainer_state.json").write_text(json.dumps({"step": 7}))
    assert ckpt.list_checkpoints(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.load_checkpoint(FakeAccelerator(), fake)


def test_rotation_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(FakeAccelerator(), tmp_path, step, {"step": step})
    deleted = ckpt.rotate_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == ["checkpoint-1", "checkpoint-2"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    assert ckpt.rotate_checkpoints(tmp_path, None) == []


def test_training_interrupted_mid_save_resumes_from_the_last_complete_checkpoint(
    tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run whose second checkpoint dies just before it is committed."""
    real_rename = ckpt.os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(dst).name == "checkpoint-2":
            raise KeyboardInterrupt("killed while committing checkpoint-2")
        real_rename(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", rename)
    extra = ["method=freeze", "method_options={}", "train.save_steps=1", "train.save_total_limit=5"]
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_data, tmp_path, *extra, steps=3))
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    assert (tmp_path / ".tmp-checkpoint-2").is_dir()
    monkeypatch.setattr(ckpt.os, "rename", real_rename)
    result = train(tiny_config(tiny_data, tmp_path, *extra, "resume=true", steps=3))
    assert result.steps == 3 and len(result.loss_history) == 3
    assert not (tmp_path / ".tmp-checkpoint-2").exists()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1, 2]
