"""`covft profile` end to end at a small tiny geometry: JSON structure, Table E markdown, ratios."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from covft.cli import main
from covft.profile import ProfileSettings
from covft.utils.config import ConfigError


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_profile_cli_writes_table_e_with_ratios(tmp_path, capsys, restore_threads):
    out = tmp_path / "profile"
    code = main(
        [
            "profile",
            "--geometry", "tiny",
            "--methods", "freeze,full,covft",
            "--steps", "2",
            "--warmup", "1",
            "--vision-layers", "4",
            "--llm-layers", "1",
            "--batch-size", "1",
            "--threads", "1",
            "--clock", "thread",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "profile.json").read_text())
    assert list(report["methods"]) == ["freeze", "full", "covft"]
    for method, entry in report["methods"].items():
        assert len(entry["train_step_s"]["samples"]) == 2
        assert entry["train_step_s"]["min"] <= entry["train_step_s"]["median"] <= entry["train_step_s"]["max"]
        assert entry["inference_s"]["median"] > 0
        assert entry["memory"]["peak_bytes"] > 0
        assert entry["flops"]["train_step"] == entry["flops"]["analytic_train_step"]
        assert entry["static_training_bytes"]["total"] > 0
        for key in ("train_step", "inference", "peak_memory", "train_flops", "prefill_flops"):
            value = entry["ratios_vs_full"][key]
            if method == "full":
                assert value == 1.0
            else:
                assert value > 0 and math.isfinite(value)
    ratios = {m: e["ratios_vs_full"] for m, e in report["methods"].items()}
    assert ratios["covft"]["train_flops"] > 1 > ratios["freeze"]["train_flops"]
    assert (
        report["methods"]["covft"]["trainable_parameters"] > report["methods"]["full"]["trainable_parameters"]
    )

    markdown = (out / "profile.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    for column in ("train step", "inference / sample", "peak memory", "/ Full FT"):
        assert column in header
    rows = [line for line in markdown.splitlines() if line.startswith(("| freeze", "| full", "| covft"))]
    assert len(rows) >= 3
    assert "| full |" in capsys.readouterr().out
    # covft reads the instruction through the text encoder: one more host read than full (its mask check)
    syncs = {m: e["flops"]["host_syncs_train_forward_backward"] for m, e in report["methods"].items()}
    assert syncs["covft"] >= syncs["full"]


def test_profile_refuses_methods_without_full(tmp_path, capsys):
    # a user's mistake: one line on stderr and a non-zero status, no traceback
    assert main(["profile", "--methods", "freeze,covft", "--out", str(tmp_path)]) != 0
    assert "include 'full'" in capsys.readouterr().err


def test_thread_clock_needs_one_cpu_thread(tmp_path, capsys):
    assert main(["profile", "--clock", "thread", "--out", str(tmp_path)]) != 0
    assert "threads=1" in capsys.readouterr().err


def test_the_7b_geometry_without_cuda_says_how_to_count_it_on_a_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine with a GPU
    assert main(["profile", "--geometry", "llava-1.5-7b", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu --llm-layers 2 --flops-only" in err
    assert "Traceback" not in err
    assert not (tmp_path / "profile.json").exists()


def test_flops_7b_prints_the_analytic_ratio(tmp_path, capsys):
    assert main(["profile", "--flops-7b", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "flops_7b.json").read_text())
    assert report["train_ratio_vs_full"]["full"] == 1.0
    assert 1.0 < report["train_ratio_vs_full"]["covft"] < 1.1
    memory = report["static_training_bytes_bf16"]
    # bf16 weights, gradients and two AdamW states: 8 bytes per trainable parameter, 2 per frozen one
    assert (
        memory["full"]["total"] == memory["full"]["frozen_weights"] + 4 * memory["full"]["trainable_weights"]
    )
    assert 1.0 < report["static_memory_ratio_vs_full"]["covft"] < 1.1
    assert "covft" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("dtype", "foo", "dtype must be a torch floating-point type"),
        ("dtype", "int8", "dtype must be a torch floating-point type"),
        ("threads", -1, "threads must be >= 1, got -1 (--threads)"),
        ("batch_size", -2, "batch_size must be >= 1, got -2 (--batch-size)"),
        ("text_tokens", -1, "text_tokens must be >= 1, got -1 (--text-tokens)"),
        ("inference_repeats", 0, "inference_repeats must be >= 1, got 0 (--inference-repeats)"),
        ("context_tokens", 1, "context_tokens must be >= 2, got 1 (--context-tokens)"),
    ],
)
def test_profile_refuses_a_bad_size_or_dtype_in_one_line_before_measuring(
    tmp_path, capsys, restore_threads, option, value, named
):
    out = tmp_path / "profile"
    flag = "--" + option.replace("_", "-")
    assert main(["profile", flag, str(value), "--steps", "1", "--warmup", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ConfigError, match=re.escape(named)):
        ProfileSettings(**{option: value}).resolved()


def test_profile_help_gives_the_inference_repeats_default_the_code_uses():
    import argparse

    from covft.cli.profile import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "timed prefills (default: steps, at least 3)" in text
    assert ProfileSettings(steps=1).resolved().inference_repeats == 3
    assert ProfileSettings(steps=5).resolved().inference_repeats == 5
