"""`covft demo` refuses a bad setting or count in one line, before anything runs or is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from covft.cli import main
from covft.cli.demo import apply_overrides
from covft.recipes.demo.settings import FULL, GPU, QUICK


@pytest.fixture
def no_pipeline(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records the demo runs that would start (none should), instead of running them."""
    import covft.recipes.demo.pipeline as pipeline

    started: list[object] = []
    monkeypatch.setattr(pipeline, "run_demo", started.append)
    return started


@pytest.mark.parametrize(
    ("pair", "key"),
    [
        ("precision=fp64", "precision"),
        ("lr_scheduler=cosine_with_restarts", "lr_scheduler"),
        ("pretrain.lr_scheduler=step", "pretrain.lr_scheduler"),
        ("pretrain.stage1b_method=lora", "pretrain.stage1b_method"),
        ("pretrain.preset=big", "pretrain.preset"),
    ],
)
def test_a_setting_outside_its_closed_set_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_pipeline: list[object], pair: str, key: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{key} must be one of \["):
        apply_overrides(QUICK, [pair])
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--set", pair, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{key} must be one of" in err and "Traceback" not in err
    assert no_pipeline == [] and not out.exists()


def test_the_values_train_config_accepts_still_pass() -> None:
    changed = apply_overrides(
        FULL, ["precision=bf16", "lr_scheduler=linear", "pretrain.lr_scheduler=constant"]
    )
    assert (changed.precision, changed.lr_scheduler, changed.pretrain.lr_scheduler) == (
        "bf16",
        "linear",
        "constant",
    )
    assert apply_overrides(FULL, ["precision=fp16"]).train_precision() == "fp16"
    assert apply_overrides(FULL, ["precision=auto"]).precision == GPU.precision == "auto"
    assert (
        apply_overrides(FULL, ["pretrain.stage1b_method=freeze", "pretrain.preset=smol"]).pretrain.preset
        == "smol"
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("--threads", "-1"), ("--threads", "0"), ("--jobs", "0"), ("--seeds", "0")]
)
def test_a_non_positive_count_is_refused_in_one_line_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture, no_pipeline: list[object], flag: str, value: str
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", flag, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be >= 1, got {value}" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert no_pipeline == [] and not out.exists()
