"""A user's mistake ends a `covft` command with one named line, never a traceback (issue 13, case 6).

Each case feeds the command the mistake itself and checks the exit status, the message, that no
traceback was printed, and that nothing was written to ``output_dir`` before the inputs were
checked. ``--debug`` brings the traceback back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from covft.cli import main
from tests.train.conftest import tiny_overrides

Setup = Callable[[Path], list[str]]


def _missing_init_from(tmp: Path) -> list[str]:
    return [f"init_from={tmp / 'runs' / 'stage1'}"]  # the shipped stage-2 configs' default, not trained


def _output_dir_is_a_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("not a directory")
    return [f"output_dir={tmp / 'taken'}"]


def _output_dir_below_a_file(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("not a directory")
    return [f"output_dir={tmp / 'taken' / 'run'}"]


def _wrong_image_folder(tmp: Path) -> list[str]:
    (tmp / "elsewhere").mkdir()
    return [f"data.image_folder={tmp / 'elsewhere'}", "data.on_bad_sample=skip"]


CASES: dict[str, tuple[Setup, int, str]] = {
    "preset typo": (
        lambda tmp: ["model=tiny-tset"],
        1,
        "'tiny-tset' is neither a preset .* Did you mean the preset 'tiny-test'",
    ),
    "missing model path": (lambda tmp: [f"model={tmp / 'no-model'}"], 1, "no-model' is neither a preset"),
    "missing init_from": (
        _missing_init_from,
        1,
        r"init_from='.*runs/stage1' does not exist\. Fix: run the previous stage",
    ),
    "output_dir is a file": (_output_dir_is_a_file, 2, r"output_dir=.*taken is a file"),
    "output_dir below a file": (
        _output_dir_below_a_file,
        2,
        r"output_dir=.*run cannot be created: .*taken is a file",
    ),
    "wrong image_folder under skip": (
        _wrong_image_folder,
        1,
        r"4 of 6 samples \(66\.7%\) are unusable, more than data\.max_skip_fraction=0\.01 allows.*"
        r"wrong data\.image_folder.*\n.*4 x image file '\.\.\.' not found",
    ),
}


def run_train(tiny_data: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["train", "stage2_covft", *tiny_overrides(tiny_data, out, steps=1), *extra])


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistakes_end_with_one_named_line_and_nothing_written(
    case: str, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, status, message = CASES[case]
    out = tmp_path / "out"
    extra = setup(tmp_path)  # an output_dir override, when there is one, comes after the default
    assert run_train(tiny_data, out, *extra) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("covft train: error: ")
    assert re.search(message, err, re.DOTALL), err
    assert "--debug" in err
    assert not out.exists()
    taken = tmp_path / "taken"
    assert not taken.exists() or taken.read_text() == "not a directory"


def test_a_read_only_output_dir_is_named_before_anything_is_built(
    tiny_data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores permission bits: make the check see what a user sees
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert run_train(tiny_data, locked / "run") == 2
    err = capsys.readouterr().err
    assert f"output_dir={locked / 'run'} cannot be written: {locked} is read-only" in err
    assert "Traceback" not in err and not (locked / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_missing_tracker_package_is_named(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_train(tiny_data, tmp_path / "out", "train.report_to=wandb") == 1
    err = capsys.readouterr().err
    assert "train.report_to=wandb needs the 'wandb' package" in err and "pip install 'covft[wandb]'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_bad_sample_in_a_dataloader_worker_is_named_without_the_worker_traceback(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"not an image")
    bad = {
        "id": "corrupt",
        "image": str(tmp_path / "corrupt.png"),
        "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}],
    }
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(bad) + "\n")
    out = tmp_path / "out"
    assert run_train(tiny_data, out, f"data.train={data}", "data.num_workers=1", "train.batch_size=1") == 1
    err = capsys.readouterr().err
    assert f"\ncovft train: error: sample 'corrupt' in {data} (record 1): image file" in err
    assert "DataLoader worker" not in err and "Traceback" not in err


def test_debug_shows_the_traceback(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["--debug", "train"], ["train"]):
        args = [
            *argv,
            "stage2_covft",
            *tiny_overrides(tiny_data, tmp_path / "out", steps=1),
            "model=tiny-tset",
        ]
        if argv == ["train"]:
            args.append("--debug")
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "ModelNotFoundError" in err
        assert "covft train: error: 'tiny-tset' is neither a preset" in err


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.eval.conftest import build_mme

    build_mme(tmp_path / "data")
    argv = ["eval", str(tmp_path / "no-checkpoint"), "--data-root", str(tmp_path / "data")]
    assert main([*argv, "--benchmarks", "mme", "--limit", "1", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("covft eval: error: ") and "no-checkpoint' is neither a preset" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["methods", "eval"])
def test_a_process_group_is_destroyed_when_the_command_ends(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a launcher the command's process group is closed before interpreter shutdown, on
    success and on a user error alike (left to shutdown, gloo can abort a finished run)."""
    import torch.distributed as dist

    from tests.train.conftest import free_port

    argv = (
        ["methods"]
        if command == "methods"
        else ["eval", str(tmp_path / "none"), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        assert (main(argv) == 0) == (command == "methods")  # eval: a user error (no data there)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
