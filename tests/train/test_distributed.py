"""The sharded engines with 2 CPU processes, launched with the shipped accelerate configs.

DeepSpeed ZeRO-3 runs on CPU (DeepSpeed's CPU accelerator, gloo): it equals one process with
gradient accumulation, resumes exactly, and builds CoVFT's experts from gathered MLP weights.
accelerate enables FSDP only on GPU-like devices; on CPU the launch is refused by name (the
trainer-level FSDP test runs where two GPUs are present). FSDP's ``fully_shard`` itself is
exercised on CPU by ``test_fsdp2.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import covft
from covft.train import checkpoint as ckpt
from covft.train import train
from covft.train.logging import read_log
from tests.train.conftest import REPO, tiny_config, tiny_overrides, two_processes

ACCELERATE = REPO / "src" / "covft" / "configs" / "accelerate"
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install 'covft[dev]')",
)


def launch(config: str, overrides: list[str], *, crash_after: int | None = None):
    """``accelerate launch --config_file <shipped config> --num_processes 2 -m covft.cli train ...``;
    with ``crash_after``, every process is killed after that step (``tests/train/crash_run.py``)."""
    command = ["covft.cli", "train"] if crash_after is None else ["tests.train.crash_run", str(crash_after)]
    train_command = ["-m", *command, "stage2_covft", *overrides]
    return two_processes(*train_command, accelerate_config=ACCELERATE / config)


@pytest.fixture(scope="module")
def image_data(tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six image samples and a saved tiny-test model to start from.

    Only image samples: under DeepSpeed a step without any image gives the vision parameters zero
    gradients, and AdamW still moves them by momentum, where one process leaves them untouched
    (docs/training.md); with an image in every step the engines must agree to rounding.
    """
    root = tmp_path_factory.mktemp("zero3")
    records = [json.loads(line) for line in tiny_data["instructions"].read_text().splitlines()]
    images = [r for r in records if "image" in r]
    images += [dict(r, id=f"{r['id']}-again") for r in images[:2]]
    (root / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in images))
    covft.build_model("tiny-test", vision_layers=2, seed=0).save_pretrained(root / "init")
    return {**tiny_data, "instructions": root / "images.jsonl", "init": root / "init"}


def settings(data: dict[str, Path], *extra: str) -> list[str]:
    """What every run of these tests shares (on top of the tiny-test overrides)."""
    return [
        f"init_from={data['init']}",  # under ZeRO-3 loaded into a model built partitioned
        "method=full",
        "method_options={}",
        "train.batch_size=2",
        "train.lr=1e-3",
        "train.save_steps=2",
        *extra,
    ]


def launched(data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """Overrides of a 2-process launch: 2 samples per process, no accumulation, 4 steps."""
    return [*tiny_overrides(data, out, steps=4), *settings(data, *extra)]


def one_process(data: dict[str, Path], out: Path):
    """The reference: one process, 2 samples per micro-batch, 2 micro-batches per step."""
    return train(tiny_config(data, out, *settings(data, "train.grad_accum=2"), steps=4))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@needs_deepspeed
@pytest.mark.slow
def test_zero3_equals_one_process_and_resumes_exactly(image_data: dict[str, Path], tmp_path: Path) -> None:
    """Killed after step 3 (checkpoint-2 on disk), resumed: every loss and weight as one process's."""
    single = one_process(image_data, tmp_path / "single")
    out = tmp_path / "zero3"
    crashed = launch("deepspeed_zero3.yaml", launched(image_data, out), crash_after=3)
    assert crashed.returncode != 0 and [s for s, _ in ckpt.list_checkpoints(out)] == [2], crashed.stderr[
        -4000:
    ]
    before_crash = [record["loss"] for record in read_log(out)]
    assert before_crash == pytest.approx(single.loss_history[:3], abs=1e-5)
    assert sorted(p.name for p in (out / "checkpoint-2").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    resumed = launch("deepspeed_zero3.yaml", launched(image_data, out, "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    losses = [record["loss"] for record in read_log(out)]
    assert losses[2] == before_crash[2]  # step 3 recomputed from the checkpoint, exactly
    assert losses == pytest.approx(single.loss_history, abs=1e-5)
    expected, actual = weights(tmp_path / "single"), weights(out)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=name)


@needs_deepspeed
@pytest.mark.slow
def test_zero3_covft_experts_are_upcycled_from_the_gathered_mlp(
    image_data: dict[str, Path], tmp_path: Path
) -> None:
    """Built partitioned, each CoMoE block's experts must be copies of the full (gathered) MLP."""
    out = tmp_path / "covft"
    overrides = launched(
        image_data,
        out,
        "method=covft",
        "model_options.text_encoder=random-tiny",
        "train.lr=0",
        "train.save_steps=0",
    )
    result = launch("deepspeed_zero3.yaml", [*overrides, "train.max_steps=1"])
    assert result.returncode == 0, result.stderr[-4000:]
    saved, start = weights(out), weights(image_data["init"])
    blocks = json.loads((out / "covft_config.json").read_text())["options"]
    experts = [name for name in saved if name.endswith("experts.fc1_weight")]
    assert experts and blocks["num_experts"] == 4
    for name in experts:
        mlp = name.replace("mlp.experts.fc1_weight", "mlp.fc1.weight")
        stacked = saved[name]
        assert stacked.shape[0] == 4
        for expert in stacked:
            assert torch.equal(expert, start[mlp]), f"{name} is not a copy of {mlp}"


def test_fsdp_on_cpu_is_refused_by_name_not_run_as_ddp(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs: FSDP runs for real (test_fsdp_equals_one_process_on_gpus)")
    out = tmp_path / "fsdp"
    result = launch(
        "fsdp.yaml", [*tiny_overrides(tiny_data, out, steps=1), "method=full", "method_options={}"]
    )
    assert result.returncode != 0
    assert (
        "covft train: error: accelerate was launched with FSDP, which it enables only on GPU" in result.stderr
    )
    assert not out.exists()


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="accelerate enables FSDP only on GPU-like devices (accelerate/state.py: MULTI_CPU never "
    "becomes FSDP), and NCCL needs one GPU per process",
)
def test_fsdp_equals_one_process_on_gpus(image_data: dict[str, Path], tmp_path: Path) -> None:
    extra = ["train.precision=fp32"]
    single = one_process(image_data, tmp_path / "single")
    sharded = launch("fsdp.yaml", launched(image_data, tmp_path / "fsdp", *extra))
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    losses = [record["loss"] for record in read_log(tmp_path / "fsdp")]
    assert losses == pytest.approx(single.loss_history, abs=1e-5)
    interrupted = tmp_path / "interrupted"
    launch("fsdp.yaml", launched(image_data, interrupted, *extra), crash_after=3)
    resumed = launch("fsdp.yaml", launched(image_data, interrupted, *extra, "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert [record["loss"] for record in read_log(interrupted)] == pytest.approx(losses, abs=1e-6)
