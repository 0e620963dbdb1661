"""The demo's mechanisms stage, its shared instruction vectors, and the GPU-scale setting."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from covft.analysis.gradients import read_gradient_file
from covft.cli.demo import add_arguments
from covft.cli.demo import run as demo_command
from covft.recipes.demo.layout import GRADIENTS_FILE, read_stage_log
from covft.recipes.demo.mechanisms import _conflict_mechanism
from covft.recipes.demo.pipeline import DemoRun, run_demo
from covft.recipes.demo.settings import FULL, GPU, SMOL_FULL, SMOL_GPU, SMOL_PRETRAIN, micro, settings_for

VERDICTS = {"reproduced", "not reproduced"}


def test_micro_demo_measures_the_four_mechanisms_on_the_gpu_settings_path(tmp_path: Path) -> None:
    # the GPU setting's precision ("auto") on a machine without CUDA: fp32, every stage runs
    settings = micro(precision=GPU.precision)
    run = DemoRun(
        out=tmp_path / "demo",
        settings=settings,
        methods=["full", "covft"],
        seeds=2,
        cache_dir=tmp_path / "cache",
        progress=False,
        from_scratch=True,
    )
    results = run_demo(run)

    found = results["mechanisms"]
    assert set(found) == {"conflict", "gradients", "clusters", "routing"}
    assert {entry["verdict"] for entry in found.values()} <= VERDICTS
    assert set(found["gradients"]["per_seed"]) == {"0", "1"}
    assert found["routing"]["paper"]["pearson_r"] == 0.76
    assert found["conflict"]["images"] == settings.mechanism_steps * settings.mechanism_batch_size
    saved = json.loads((run.out / "results.json").read_text())
    assert saved["mechanisms"] == found
    for block in saved["routing"]["covft"].values():  # the routing health of every seed
        assert len(block["entropy_per_seed"]) == 2
        assert block["lowest_share_of_max"] == pytest.approx(
            min(block["entropy_per_seed"]) / block["max_entropy"]
        )
    report = (run.out / "report.md").read_text()
    assert "## The paper's mechanisms" in report and "| (iv) Fig. 3b" in report
    assert (run.out / "mechanisms" / "mechanisms.png").stat().st_size > 1000

    for seed in (0, 1):
        steps, rows = read_gradient_file(run.stage2_dir(seed, "full") / GRADIENTS_FILE)
        assert rows.shape[1] == 4096 and 1 <= len(steps) <= settings.stage2_steps
        assert np.abs(rows).sum() > 0
        assert not (run.stage2_dir(seed, "freeze") / GRADIENTS_FILE).exists()
        config = yaml.safe_load((run.stage2_dir(seed, "covft") / "train_config.yaml").read_text())
        assert Path(config["method_options"]["context_vectors"]).is_file()
        assert config["train"]["precision"] == "fp32"
        full_config = yaml.safe_load((run.stage2_dir(seed, "full") / "train_config.yaml").read_text())
        assert full_config["method_options"] == {}
    log = read_stage_log(run.out)
    assert [e["action"] for e in log if e["stage"] == "context_vectors"] == ["ran"]  # once for both seeds
    assert [e["action"] for e in log if e["stage"] == "mechanisms"] == ["ran"]

    again = run_demo(run)
    assert again["mechanisms"] == found
    assert [e["action"] for e in read_stage_log(run.out) if e["stage"] == "mechanisms"] == ["ran", "reused"]


def test_a_world_without_grounding_reports_mechanism_i_as_not_measured(tmp_path: Path) -> None:
    # a mix without grounding (--set family_weights=...) used to crash the demo after its suite
    weights = {f: w for f, w in FULL.family_weights.items() if f != "grounding"}
    run = DemoRun(
        out=tmp_path / "demo",
        settings=micro(family_weights=weights),
        methods=["freeze"],
        seeds=1,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    found, raw = _conflict_mechanism(run, None, tmp_path)  # type: ignore[arg-type]
    assert raw is None
    assert found["conflict"]["verdict"] == "not measured"
    assert "no grounding samples" in found["conflict"]["reason"]


def test_gpu_setting_is_the_full_pipeline_at_20_to_100_times_the_samples() -> None:
    ratio = (GPU.stage2_steps * GPU.stage2_batch_size) / (FULL.stage2_steps * FULL.stage2_batch_size)
    assert 20 <= ratio <= 100
    assert GPU.world_size >= 5 * FULL.world_size and GPU.suite_size > FULL.suite_size
    assert GPU.pretrain == FULL.pretrain  # the same shipped starting point
    assert (GPU.stage2_lr, GPU.lr_scheduler, GPU.warmup_ratio) == (FULL.stage2_lr, "cosine", 0.03)
    assert GPU.precision == "auto" and FULL.precision == "fp32"


def test_smol_gpu_setting_is_the_smol_run_at_20_times_the_samples_with_a_longer_stage_1() -> None:
    ratio = (SMOL_GPU.stage2_steps * SMOL_GPU.stage2_batch_size) / (
        SMOL_FULL.stage2_steps * SMOL_FULL.stage2_batch_size
    )
    assert ratio == 20
    assert (SMOL_GPU.stage2_lr, SMOL_GPU.lr_scheduler, SMOL_GPU.warmup_ratio) == (
        SMOL_FULL.stage2_lr,
        "cosine",
        0.03,
    )
    assert (SMOL_GPU.world_size, SMOL_GPU.suite_size, SMOL_GPU.precision) == (
        GPU.world_size,
        GPU.suite_size,
        "auto",
    )
    recipe = SMOL_GPU.pretrain
    assert recipe.preset == "smol" and recipe.lm_steps == 0 and recipe.stage0 == SMOL_PRETRAIN.stage0
    assert recipe.world_size == FULL.pretrain.world_size  # the shipped recipe's world size
    # a longer alignment than the CPU smol run's, then grounded captions with the LM, as the tiny recipe's 1b
    assert (
        recipe.stage1_steps * recipe.stage1_batch_size
        > 5 * SMOL_PRETRAIN.stage1_steps * SMOL_PRETRAIN.stage1_batch_size
    )
    assert recipe.stage1b_steps > 0 and recipe.stage1b_grounded_turns == FULL.pretrain.stage1b_grounded_turns


def test_settings_for_picks_the_preset_and_scale() -> None:
    assert settings_for("tiny", False) is FULL and settings_for("smol", False) is SMOL_FULL
    assert settings_for("tiny", False, "gpu") is GPU and settings_for("smol", False, "gpu") is SMOL_GPU
    with pytest.raises(ValueError, match="no quick setting"):
        settings_for("smol", True, "gpu")


def test_auto_precision_is_bf16_on_a_cuda_gpu_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert GPU.train_precision() == "bf16" and FULL.train_precision() == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert GPU.train_precision() == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert replace(GPU, precision="bf16").train_precision() == "bf16"  # explicit choices stay


def test_scale_gpu_has_no_quick_run(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--scale", "gpu"]).scale == "gpu"
    assert parser.parse_args([]).scale == "cpu"
    assert demo_command(parser.parse_args(["--scale", "gpu", "--quick"])) == 2
    assert "--scale gpu has no quick setting" in capsys.readouterr().err
    assert (
        demo_command(parser.parse_args(["--scale", "gpu", "--preset", "smol", "--set", "stage2_step=3"])) == 2
    )
    assert "stage2_step" in capsys.readouterr().err  # a bad override is refused before anything runs


def test_routing_text_flags_blocks_below_a_quarter_of_log_e_and_collapse() -> None:
    from covft.recipes.demo.report import routing_text

    def block(entropies: list[float], top: float) -> dict:
        maximum = 1.386
        return {
            "entropy": sum(entropies) / len(entropies),
            "entropy_per_seed": entropies,
            "max_entropy": maximum,
            "lowest_share_of_max": min(entropies) / maximum,
            "top_expert_share": top,
        }

    healthy = routing_text({"covft": {"2": block([1.2, 1.1], 0.4), "3": block([0.9, 0.8], 0.5)}})
    assert "Every routed block keeps at least 25% of log E in every seed." in healthy
    assert "| covft | 2 | 1.150 | 1.200, 1.100 | 79% | 0.400 |" in healthy
    sick = routing_text({"covft": {"2": block([1.2, 0.2], 0.6), "4": block([0.0, 0.01], 0.999)}})
    assert "Below 25% of log E in some seed: covft block 2, covft block 4." in sick
    assert "collapsed" in sick and "covft block 4." in sick.split("collapsed")[1]


def test_the_image_gain_must_also_clear_its_spread_over_seeds() -> None:
    from covft.recipes.demo.report import grounding_text

    def entry(gains: list[float], sd: float) -> dict:
        mean = sum(gains) / len(gains)
        return {
            "Avg": {"mean": 40.0, "sd": 1.0, "per_seed": [40.0] * len(gains)},
            "Avg_shuffled": {"mean": 40.0 - mean, "sd": 1.0, "per_seed": [40.0 - g for g in gains]},
            "gain": {"mean": mean, "sd": sd, "per_seed": gains},
        }

    _, sentence = grounding_text({"freeze": entry([1.0, 9.0], 5.66)}, 1.0)  # 5 > 2 x 1.0, but not > 2 x 5.66
    assert (
        sentence.startswith("No method's answers rest on the image")
        and "gain's sd over seeds is 11.32" in sentence
    )
    _, sentence = grounding_text({"freeze": entry([9.0, 11.0], 1.41)}, 1.0)
    assert sentence.startswith("The models use the image") and "sd over seeds (2.82)" in sentence
    # every method against its own noise: lora's 4.5 clears 2 x max(1.5, 0.1) although freeze's
    # larger but noisier 5.0 does not clear 2 x 3.0
    gains = {"freeze": entry([2.0, 8.0], 3.0), "lora": entry([4.4, 4.6], 0.1)}
    _, sentence = grounding_text(gains, 1.5)
    assert sentence.startswith("The models use the image: image gain up to 4.50 points (lora), above twice")
    assert sentence.endswith("Not above it: freeze.")
