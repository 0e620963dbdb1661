"""Scale-out: a 2-process DDP (gloo, CPU) run matches a 1-process run at the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from covft.train import train
from covft.train.logging import read_log
from tests.train.conftest import tiny_config, tiny_overrides, two_processes


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_the_same_global_batch(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    steps = 4
    common = [
        "method=covft",
        "method_options={}",
        "train.batch_size=2",
        "train.lr=1e-3",
        "train.save_steps=2",
    ]
    # one process: 2 samples per micro-batch, 2 micro-batches per step -> 4 samples per step
    single = train(tiny_config(tiny_data, tmp_path / "single", *common, "train.grad_accum=2", steps=steps))

    # two processes: 2 samples each, no accumulation -> the same 4 samples per step
    distributed = tmp_path / "ddp"
    overrides = tiny_overrides(tiny_data, distributed, steps=steps) + [*common, "train.grad_accum=1"]
    result = two_processes("-m", "covft.cli", "train", "stage2_covft", *overrides)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])

    ddp_losses = [record["loss"] for record in read_log(distributed)]
    assert len(ddp_losses) == steps
    assert ddp_losses == pytest.approx(single.loss_history, rel=1e-4, abs=1e-5)
    expected = load_file(str(tmp_path / "single" / "model.safetensors"))
    actual = load_file(str(distributed / "model.safetensors"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-3, atol=1e-5, msg=name)
    # the checkpoint holds one RNG state per process
    assert sorted(p.name for p in (distributed / "checkpoint-2").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


@pytest.mark.slow
def test_two_process_ddp_trains_llm_adapters_as_one_process(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """LoRA on the tower and on the LLM (two PEFT adapters) under DDP: the same losses and adapters."""
    steps = 3
    # no adapter dropout: its masks come from each process's own RNG stream
    options = "method_options={llm_lora_r: 4, llm_lora_dropout: 0.0, dropout: 0.0}"
    common = ["method=lora", options, "train.batch_size=2", "train.lr=1e-3"]
    single = train(tiny_config(tiny_data, tmp_path / "single", *common, "train.grad_accum=2", steps=steps))
    distributed = tmp_path / "ddp"
    overrides = tiny_overrides(tiny_data, distributed, steps=steps) + [*common, "train.grad_accum=1"]
    result = two_processes("-m", "covft.cli", "train", "stage2_covft", *overrides)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    assert [r["loss"] for r in read_log(distributed)] == pytest.approx(
        single.loss_history, rel=1e-4, abs=1e-5
    )
    expected = load_file(str(tmp_path / "single" / "model.safetensors"))
    actual = load_file(str(distributed / "model.safetensors"))
    adapters = [name for name in expected if ".lora_" in name]
    assert sum(".lora_B.llm." in name for name in adapters) == 14
    for name in adapters:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-3, atol=1e-5, msg=name)
