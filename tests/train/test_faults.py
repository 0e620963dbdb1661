"""Faults during training: records the loader accepts train, NaN recovery, resume with changes,
the skip budget. Each test feeds the input that used to fail (issue 13's cases 2, 4, 5, 7, 8, 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import covft
from covft.data.errors import BadSampleError, TooManyBadSamplesError
from covft.models.model import CovftModel
from covft.train import NonFiniteLossError, TrainerCallback, train
from covft.train import checkpoint as ckpt
from covft.train.logging import read_log
from tests.train.conftest import tiny_config

CHEAP = ["method=full", "method_options={}", "train.lr=1e-3"]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def question(sample_id: str, image: Any, *, human: str = "human", gpt: str = "gpt") -> dict[str, Any]:
    return {
        "id": sample_id,
        "image": image,
        "conversations": [
            {"from": human, "value": "<image>\nWhat colour is it?"},
            {"from": gpt, "value": "red"},
        ],
    }


def test_records_the_loader_accepts_are_the_records_that_train(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cases 2 and 9: user/assistant roles, a one-image list and a leading gpt turn all train."""
    leading = question("greeting", "img1.png")
    leading["conversations"].insert(0, {"from": "gpt", "value": "Hello! Ask me anything."})
    records = [
        question("chat", "img0.png", human="user", gpt="assistant"),
        question("listed", ["img2.png"]),
        leading,
    ]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    config = tiny_config(
        tiny_data, tmp_path / "run", *CHEAP, f"data.train={path}", "train.batch_size=3", steps=2
    )
    result = train(config)
    assert result.steps == 2 and result.skipped["total"] == 0
    assert (
        "dropped a leading gpt turn (LLaVA drops it too): 1 sample(s), e.g. ['greeting']"
        in capsys.readouterr().out
    )
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["data_notes"] == {"dropped a leading gpt turn (LLaVA drops it too)": 1}


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision"])
def test_covft_trains_an_anyres_family_on_multi_image_data_and_its_audit_passes(
    tiny_data: dict[str, Path], tmp_path: Path, family: str
) -> None:
    pair = question("pair", ["img0.png", "img1.png"])
    pair["conversations"][0]["value"] = "<image> and <image>: same colour?"
    path = write_jsonl(tmp_path / "data.jsonl", [question("ok", "img0.png"), pair])
    tower = "clip" if family == "llava_next" else "siglip"
    extra = [f"data.train={path}", f"model_options.family={family}", f"model_options.vision_tower={tower}"]
    result = train(tiny_config(tiny_data, tmp_path / "run", *extra, steps=2))
    assert result.steps == 2
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["audit"]["passed"], summary["audit"]
    loaded = covft.load_pretrained(tmp_path / "run")
    assert loaded.family.name == family and loaded.strategy.name == "covft"


def test_a_multi_image_record_trains_with_one_context_per_sample(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Two images in one sample: both reach the tower, the router reads the sample's text once."""
    pair = question("pair", ["img0.png", "img1.png"])
    pair["conversations"][0]["value"] = "<image> and <image>: same colour?"
    path = write_jsonl(tmp_path / "data.jsonl", [question("ok", "img0.png"), pair])
    result = train(tiny_config(tiny_data, tmp_path / "run", *CHEAP, f"data.train={path}", steps=2))
    assert result.steps == 2 and result.skipped["total"] == 0


class Poison(TrainerCallback):
    """Sets one LLM weight to NaN after optimizer step ``step`` (an update that exploded)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def after_optimizer_step(self, step: int, model: CovftModel, loss: float) -> None:
        if step == self.step:
            with torch.no_grad():
                model.parameter_groups()["llm"][0].fill_(float("nan"))


def test_nan_right_after_a_checkpoint_sets_it_aside_and_resume_recovers(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Case 4: checkpoint-2 already holds the damage that makes step 3 NaN; it is not 'last good'."""
    extra = [*CHEAP, "train.save_steps=1", "train.save_total_limit=1"]
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3") as info:
        train(tiny_config(tiny_data, tmp_path, *extra, steps=4), callbacks=[Poison(step=2)])
    error = info.value
    assert error.last_checkpoint == tmp_path / "checkpoint-1"
    assert error.set_aside == tmp_path / "nonfinite-checkpoint-2"
    assert "checkpoint-1" in str(error) and "nonfinite-checkpoint-2" in str(error)
    # save_total_limit=1 did not delete checkpoint-1 while checkpoint-2 was unproven
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    kept = load_file(str(tmp_path / "checkpoint-1" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in kept.values() if t.is_floating_point())
    damaged = load_file(str(tmp_path / "nonfinite-checkpoint-2" / "model.safetensors"))
    assert any(not torch.isfinite(t).all() for t in damaged.values() if t.is_floating_point())

    resumed = train(tiny_config(tiny_data, tmp_path, *extra, "resume=true", steps=4))
    assert resumed.steps == 4 and all(torch.isfinite(torch.tensor(resumed.loss_history)))
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [3]


def test_a_non_finite_gradient_stops_before_the_update(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    """Case 4: the loss is finite but the gradient is not; the weights must not take that step."""
    calls = {"backward": 0}

    class InfiniteGradient(TrainerCallback):
        def __init__(self) -> None:
            self.installed = False

        def after_optimizer_step(self, step: int, model: CovftModel, loss: float) -> None:
            if not self.installed:  # from step 2 on, one gradient overflows
                self.installed = True
                weight = model.parameter_groups()["llm"][0]
                weight.register_hook(lambda grad: calls.__setitem__("backward", 1) or grad * float("inf"))

    snapshots: list[torch.Tensor] = []

    def before(step: int, model: CovftModel, loss: float) -> None:
        snapshots.append(model.parameter_groups()["llm"][0].detach().clone())

    with pytest.raises(NonFiniteLossError, match=r"gradient norm is (inf|nan) at step 2") as info:
        train(tiny_config(tiny_data, tmp_path, *CHEAP, steps=3), callbacks=[InfiniteGradient(), before])
    assert calls["backward"] == 1 and info.value.step == 2 and info.value.last_checkpoint is None
    assert len(snapshots) == 1  # the update of step 2 never reached the optimizer


def test_a_changed_lr_on_resume_takes_effect_and_is_reported(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 4: train.lr changed on resume=true is applied from the next step, and said so."""
    extra = ["method=full", "method_options={}", "train.lr_scheduler=constant", "train.save_steps=2"]
    train(tiny_config(tiny_data, tmp_path, *extra, "train.lr=1e-3", steps=4))
    (tmp_path / "train_summary.json").unlink()  # as if killed after checkpoint-2
    (tmp_path / "model.safetensors").unlink()
    capsys.readouterr()
    resumed = train(tiny_config(tiny_data, tmp_path, *extra, "train.lr=2.5e-4", "resume=true", steps=4))
    assert resumed.steps == 4
    rates = {record["step"]: record["lr/llm"] for record in read_log(tmp_path)}
    assert rates == {1: 1e-3, 2: 1e-3, 3: 2.5e-4, 4: 2.5e-4}
    notice = "changed settings take effect from step 3: train.lr 0.001 -> 0.00025"
    assert notice in capsys.readouterr().err
    assert json.loads((tmp_path / "train_summary.json").read_text())["resume_notices"] == [notice]


def test_resume_warns_by_name_when_the_data_changed(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case 5: the batch order depends on the data; a changed file is named on resume."""
    path = write_jsonl(tmp_path / "data.jsonl", [question(f"q{i}", f"img{i}.png") for i in range(4)])
    extra = [*CHEAP, f"data.train={path}", "train.batch_size=2", "train.save_steps=1"]
    train(tiny_config(tiny_data, tmp_path / "run", *extra, steps=3))
    (tmp_path / "run" / "train_summary.json").unlink()
    write_jsonl(path, [question(f"q{i}", f"img{i}.png") for i in range(3)])  # a sample removed
    capsys.readouterr()
    train(tiny_config(tiny_data, tmp_path / "run", *extra, "resume=true", steps=3))
    err = capsys.readouterr().err
    assert "warning: the training data changed since checkpoint-2 was written" in err
    assert str(path) in err and "not the interrupted one" in err


def write_corrupt_images(tiny_data: dict[str, Path], root: Path, bad: int) -> Path:
    """The tiny instruction set plus ``bad`` samples whose image files exist but are not images."""
    root.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in tiny_data["instructions"].read_text().splitlines()]
    for k in range(bad):
        (root / f"corrupt{k}.png").write_bytes(b"not an image at all")
        records.append(question(f"corrupt{k}", str(root / f"corrupt{k}.png")))
    return write_jsonl(root / "train.jsonl", records)


def test_skipping_past_the_budget_mid_run_stops_and_says_why(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Case 8: corrupt images are only found when loaded; past the budget the run stops."""
    path = write_corrupt_images(tiny_data, tmp_path / "data", bad=3)  # 3 of 9 samples
    config = tiny_config(
        tiny_data,
        tmp_path / "run",
        *CHEAP,
        f"data.train={path}",
        "data.on_bad_sample=skip",
        "data.max_skip_fraction=0.2",  # 1 of 9 is within the budget, 2 are not
        "train.batch_size=1",
        steps=9,
    )
    with pytest.raises(TooManyBadSamplesError) as info:
        train(config)
    message = str(info.value)
    assert "2 of 9 samples (22.2%) are unusable, more than data.max_skip_fraction=0.2" in message
    assert "2 x image file '...' is corrupt or not an image" in message


def test_when_no_sample_is_usable_the_error_lists_the_skipped_ones(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Case 7: the message lists what was skipped instead of pointing at nothing 'above'."""
    root = tmp_path / "data"
    root.mkdir()
    records = []
    for k in range(2):
        (root / f"corrupt{k}.png").write_bytes(b"not an image")
        records.append(question(f"corrupt{k}", str(root / f"corrupt{k}.png")))
    path = write_jsonl(root / "train.jsonl", records)
    config = tiny_config(
        tiny_data,
        tmp_path / "run",
        *CHEAP,
        f"data.train={path}",
        "data.on_bad_sample=skip",
        "data.max_skip_fraction=1.0",
        "train.batch_size=1",
        steps=1,
    )
    with pytest.raises(BadSampleError, match="no sample of the dataset can be used") as info:
        train(config)
    assert "skipped 2 bad sample(s)" in str(info.value) and "'corrupt1'" in str(info.value)
    assert "above" not in str(info.value)
