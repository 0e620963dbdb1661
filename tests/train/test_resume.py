"""Exact resume: a run killed mid-training and resumed ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from covft.data.dataset import LlavaDataset
from covft.train import batches, train
from covft.train import checkpoint as ckpt
from covft.train.config import ConfigError
from covft.train.logging import read_log
from tests.train.conftest import instruction_records, tiny_config, tiny_overrides, write_images
from tests.train.crash_run import EXIT_STATUS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", ["covft", "lora"])  # lora has dropout: its RNG state must resume too
def test_killed_run_resumes_to_bitwise_identical_weights(
    method: str, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    extra = [
        f"method={method}",
        "method_options={}",
        "train.batch_size=2",
        "train.grad_accum=2",  # 6 samples, 4 per step: epochs end mid-way through global batches
        "train.save_steps=2",
        "train.save_total_limit=1",
        "train.lr=1e-3",
        "train.warmup_ratio=0.2",
    ]
    steps = 6
    reference = train(tiny_config(tiny_data, tmp_path / "reference", *extra, steps=steps))

    interrupted = tmp_path / "interrupted"
    overrides = tiny_overrides(tiny_data, interrupted, steps=steps) + extra
    # the same torch thread count as this process: bitwise equality needs the same reductions
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.train.crash_run", "3", "stage2_covft", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert crashed.returncode == EXIT_STATUS, crashed.stderr[-3000:]
    assert [step for step, _ in ckpt.list_checkpoints(interrupted)] == [2]  # step 3 is lost work
    assert not (interrupted / "model.safetensors").exists()
    assert [r["step"] for r in read_log(interrupted)] == [1, 2, 3]

    resumed = train(tiny_config(tiny_data, interrupted, *extra, "resume=true", steps=steps))
    assert resumed.steps == steps
    assert resumed.loss_history == reference.loss_history
    assert [r["step"] for r in read_log(interrupted)] == list(range(1, steps + 1))
    expected = load_file(str(tmp_path / "reference" / "model.safetensors"))
    actual = load_file(str(interrupted / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"


def test_resume_with_a_different_layout_is_refused(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    train(tiny_config(tiny_data, tmp_path, "method=full", "method_options={}", "train.save_steps=1", steps=2))
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    (tmp_path / "train_summary.json").unlink()  # as if it had been killed after checkpoint-1
    changed = tiny_config(
        tiny_data, tmp_path, "method=full", "method_options={}", "train.batch_size=2", "resume=true", steps=2
    )
    with pytest.raises(ConfigError, match="cannot resume exactly.*batch_size"):
        train(changed)


def test_resume_with_a_different_data_fraction_is_refused(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    train(tiny_config(tiny_data, tmp_path, "method=full", "method_options={}", "train.save_steps=1", steps=2))
    (tmp_path / "train_summary.json").unlink()
    changed = tiny_config(
        tiny_data, tmp_path, "method=full", "method_options={}", "data.fraction=0.5", "resume=true", steps=2
    )
    with pytest.raises(ConfigError, match="cannot resume exactly.*fraction"):
        train(changed)


def test_resume_without_a_checkpoint_starts_fresh(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    result = train(
        tiny_config(tiny_data, tmp_path, "method=full", "method_options={}", "resume=true", steps=2)
    )
    assert result.steps == 2 and len(result.loss_history) == 2


def test_resume_from_a_data_fraction_with_the_whole_data_is_refused(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """The other direction: a mixture dropped on resume is a changed layout too."""
    args = ("method=full", "method_options={}", "train.save_steps=1")
    train(tiny_config(tiny_data, tmp_path, *args, "data.fraction=0.5", steps=2))
    (tmp_path / "train_summary.json").unlink()
    with pytest.raises(ConfigError, match=r"cannot resume exactly.*'fraction': \(0\.5, 1\.0\)"):
        train(tiny_config(tiny_data, tmp_path, *args, "resume=true", steps=2))


def test_a_run_that_skips_a_whole_micro_batch_resumes_exactly(tmp_path: Path) -> None:
    """The stand-in batch of an all-skipped step is the dataset's first usable sample, not the
    last batch seen, so the resumed run forwards the same stand-in and ends bitwise equal."""
    files = write_images(tmp_path / "images")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in instruction_records(files)))
    dataset = LlavaDataset(path, tmp_path / "images")
    data = {"images": tmp_path / "images", "instructions": path}
    extra = [
        "method=full",
        "method_options={}",
        "train.batch_size=1",
        "train.save_steps=4",
        "train.save_total_limit=null",
        "train.lr=1e-3",
        "data.on_bad_sample=skip",
        "data.max_skip_fraction=0.5",
    ]
    config = tiny_config(data, tmp_path / "run", *extra, steps=6)
    sampler = batches.make_sampler(dataset, config, SimpleNamespace(num_processes=1, process_index=0))
    order = [dataset.records[b[0]] for b in sampler]
    step5 = order[4]
    # the stand-in differs from the last batch before it (an image sample stands in for a text one)
    assert step5.images and not order[3].images and dataset.records[0].images, [r.sample_id for r in order]
    (tmp_path / "images" / step5.images[0]).write_bytes(b"not an image")

    reference = train(tiny_config(data, tmp_path / "reference", *extra, steps=6))
    train(tiny_config(data, tmp_path / "run", *extra, steps=6))
    (tmp_path / "run" / "train_summary.json").unlink()  # as if killed after checkpoint-4
    resumed = train(tiny_config(data, tmp_path / "run", *extra, "resume=true", steps=6))
    assert reference.skipped["total"] == resumed.skipped["total"] == 1
    assert resumed.loss_history == reference.loss_history
    expected = load_file(str(tmp_path / "reference" / "model.safetensors"))
    actual = load_file(str(tmp_path / "run" / "model.safetensors"))
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after resume"
