"""``covft train CONFIG.yaml [key=value ...]``: stage 1 then stage 2 through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from covft.cli import main
from covft.train.logging import read_log
from tests.train.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def covft_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "covft.cli", "train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_stage1_then_stage2_from_the_command_line(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage1 = tmp_path / "stage1"  # in this process (same code path, one interpreter start saved)
    assert (
        main(["train", "stage1", *tiny_overrides(tiny_data, stage1, stage=1, steps=3), "train.lr=1e-2"]) == 0
    )
    assert "covft train: done, 3 steps" in capsys.readouterr().out
    stage2 = tmp_path / "stage2"
    yaml_file = REPO / "src" / "covft" / "configs" / "stage2_covft.yaml"
    done = covft_train(
        str(yaml_file), *tiny_overrides(tiny_data, stage2, steps=3), f"init_from={stage1}", "train.lr=1e-3"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "covft train: done, 3 steps" in done.stdout
    resolved = yaml.safe_load((stage2 / "train_config.yaml").read_text())
    assert resolved["init_from"] == str(stage1) and resolved["method"] == "covft" and resolved["stage"] == 2
    assert json.loads((stage2 / "covft_config.json").read_text())["strategy"] == "covft"
    losses = [r["loss"] for r in read_log(stage2)]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_unknown_key_exits_with_the_closest_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "stage2_covft", "train.learning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.learning_rate'" in err and "Did you mean" in err


def test_print_config_and_list_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "stage1", "train.lr=5e-4", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["lr"] == pytest.approx(5e-4) and printed["stage"] == 1
    assert main(["train", "--list-keys"]) == 0
    assert "data.on_bad_sample" in capsys.readouterr().out.split()
    assert main(["train"]) == 2


def test_bad_data_exits_with_a_message_not_a_traceback(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "conversations": [\n')
    overrides = tiny_overrides(tiny_data, tmp_path / "run", steps=1) + [f"data.train={broken}"]
    assert main(["train", "stage2_covft", *overrides]) == 1
