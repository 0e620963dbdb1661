"""The recipe end to end on a 2-layer tiny-test model: every strategy, callbacks, logging, failures."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import covft
from covft.cli import main as cli_main
from covft.data.errors import BadSampleError
from covft.models.model import CovftModel
from covft.train import NonFiniteLossError, TrainerCallback, TrainResult, setup, train
from covft.train import checkpoint as ckpt
from covft.train.config import ConfigError, TrainLoopConfig
from covft.train.logging import read_log
from tests.train.conftest import tiny_config, tiny_overrides

PROJECTOR = "llava.model.multi_modal_projector."


def loss_went_down(result: TrainResult) -> bool:
    history = result.loss_history
    first, last = sum(history[:2]) / 2, sum(history[-2:]) / 2
    return all(math.isfinite(x) for x in history) and last < first - 0.1


@pytest.fixture(scope="module")
def stage1(tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Stage 1 once per module: the projector alone learns to caption the four squares."""
    output = tmp_path_factory.mktemp("stage1")
    trained: list[list[str]] = []

    def record_trainable(step: int, model: CovftModel, loss: float) -> None:
        trained.append(model.trainable_parameter_names())

    result = train(
        tiny_config(tiny_data, output, "train.lr=1e-2", stage=1, steps=6), callbacks=[record_trainable]
    )
    assert trained and all(name.startswith(PROJECTOR) for name in trained[0])
    return result


def test_stage1_trains_the_projector_only(stage1: TrainResult) -> None:
    assert stage1.steps == 6 and len(stage1.loss_history) == 6
    assert stage1.loss_history[-1] < stage1.loss_history[0] - 0.1
    saved = json.loads((stage1.output_dir / "covft_config.json").read_text())
    assert saved["strategy"] == "freeze" and saved["options"]["train_llm"] is False
    assert (stage1.output_dir / "model.safetensors").is_file()
    assert (stage1.output_dir / "train_config.yaml").is_file()  # the resolved config sits by the weights


@pytest.mark.parametrize("method", covft.available_methods())
def test_stage2_from_stage1_loss_goes_down_for_every_strategy(
    method: str, stage1: TrainResult, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """`covft train stage2_<method>` (the shipped recipe, shrunk) from stage 1's output."""
    output = tmp_path / method
    overrides = tiny_overrides(tiny_data, output, steps=6) + [
        f"init_from={stage1.output_dir}",
        "train.lr=1e-3",
    ]
    assert cli_main(["train", f"stage2_{method}", *overrides]) == 0
    summary = json.loads((output / "train_summary.json").read_text())
    result = TrainResult(output, summary["steps"], summary["metrics"], summary["loss_history"])
    assert result.steps == 6
    assert loss_went_down(result), result.loss_history
    saved = json.loads((output / "covft_config.json").read_text())
    assert saved["strategy"] == method


def test_stage2_starts_from_stage1_weights(
    stage1: TrainResult, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(tiny_data, tmp_path, f"init_from={stage1.output_dir}")
    model = setup.build_model(config)
    saved = load_file(str(stage1.output_dir / "model.safetensors"))
    fresh = covft.build_model("tiny-test", vision_layers=2, seed=config.train.seed)
    state = model.state_dict()
    projector = [name for name in saved if name.startswith(PROJECTOR)]
    assert projector
    for name in projector:
        assert torch.equal(state[name], saved[name])
        assert not torch.equal(fresh.state_dict()[name], saved[name])  # stage 1 changed it


def test_init_from_an_unrelated_model_is_an_error(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    other = covft.build_model("tiny-test", vision_layers=2, llm_hidden=32)
    other.save_pretrained(tmp_path / "other")
    config = tiny_config(tiny_data, tmp_path / "run", f"init_from={tmp_path / 'other'}")
    with pytest.raises(ConfigError, match="shape mismatch"):
        setup.build_model(config)
    with pytest.raises(FileNotFoundError, match="no .safetensors"):
        setup.load_init_weights(other, tmp_path)


def test_parameter_groups_have_per_part_learning_rates(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_config(
        tiny_data, tmp_path, "train.lr=2e-5", "train.lr_vision=1e-6", "train.weight_decay=0.1", steps=100
    )
    model = setup.build_model(config)
    groups = setup.optimizer_groups(model.parameter_groups(), config.train)
    by_name = {g["name"]: g for g in groups}
    assert by_name["vision"]["lr"] == pytest.approx(1e-6)
    assert by_name["projector"]["lr"] == by_name["llm"]["lr"] == pytest.approx(2e-5)
    assert by_name["llm"]["weight_decay"] == 0.1 and by_name["llm_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim < 2 for p in by_name["vision_no_decay"]["params"])
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # every trainable parameter exactly once, nothing frozen
    assert sum(len(g["params"]) for g in groups) == len(grouped)


def test_covft_router_lr_scale_gives_the_routing_path_its_own_groups(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_config(tiny_data, tmp_path, "train.lr=1e-3", "method_options.router_lr_scale=0.1", steps=10)
    model = setup.build_model(config)
    groups = setup.optimizer_groups(model.parameter_groups(), config.train, setup.lr_scales(model))
    by_name = {g["name"]: g for g in groups}
    assert by_name["vision"]["lr"] == pytest.approx(1e-3)
    assert by_name["vision_x0.1"]["lr"] == by_name["vision_x0.1_no_decay"]["lr"] == pytest.approx(1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    scaled = {names[id(p)] for g in groups if g["name"].startswith("vision_x0.1") for p in g["params"]}
    routing = {
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (".mlp.router." in n or ".mlp.cve." in n)
    }
    assert scaled == routing and routing
    assert {id(p) for g in groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    unscaled = tiny_config(tiny_data, tmp_path, "method_options.router_lr_scale=1.0", steps=10)
    assert setup.lr_scales(setup.build_model(unscaled)) == {}


def test_a_resumed_schedule_keeps_a_scaled_groups_exact_learning_rate(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """apply_schedule (run on every resume) reads the multiplier from the group, not from its name,
    which keeps six digits: 1/3 must stay 1/3."""
    config = tiny_config(
        tiny_data, tmp_path, "train.lr=1e-3", "method_options.router_lr_scale=0.3333333333", steps=10
    )
    model = setup.build_model(config)
    groups = setup.optimizer_groups(model.parameter_groups(), config.train, setup.lr_scales(model))
    optimizer = setup.make_optimizer(groups, config.train)
    scheduler = setup.make_scheduler(optimizer, config.train, 10)
    fresh = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert fresh["vision_x0.333333"] == 1e-3 * 0.3333333333
    setup.apply_schedule(optimizer, scheduler, config.train, 0)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == fresh


def _previous_factor(kind: str, warmup: int, total: int, step: int) -> float:
    """The hand-written schedule the shipped demo starting point was trained with (before get_scheduler)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _learning_rates(kind: str, warmup_ratio: float, total: int) -> list[float]:
    """The learning rate of each of ``total`` optimizer steps under ``make_scheduler`` (base lr 1)."""
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1.0)
    loop = TrainLoopConfig(lr=1.0, lr_scheduler=kind, warmup_ratio=warmup_ratio)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building the schedule warns about nothing
        scheduler = setup.make_scheduler(optimizer, loop, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_schedule_is_transformers_entered_one_step_in() -> None:
    rates = _learning_rates("cosine", warmup_ratio=0.2, total=13)  # ceil(2.6) = 3 warmup steps
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the first update already learns
    assert rates[8] == pytest.approx(0.5)
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    from transformers.optimization import _get_cosine_schedule_with_warmup_lr_lambda as hf_cosine

    assert rates == [
        hf_cosine(s + 1, num_warmup_steps=4, num_training_steps=14, num_cycles=0.5) for s in range(13)
    ]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedule_reproduces_the_previous_multipliers(kind: str) -> None:
    # 300 steps at warmup_ratio 0.03 is the demo's stage 2; cosine must match bitwise (the demo's
    # results.json and the shipped starting point rest on it), linear to the last bit of a float
    rates = _learning_rates(kind, warmup_ratio=0.03, total=300)
    previous = [_previous_factor(kind, 9, 300, s) for s in range(300)]
    if kind == "linear":
        assert rates == pytest.approx(previous, rel=1e-15, abs=1e-15)
    else:
        assert rates == previous


class Recorder(TrainerCallback):
    """Reads vision gradients before each update and snapshots a parameter after it."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.vision_grad_norms: list[float] = []
        self.changed: list[bool] = []
        self.routing: list[dict] = []
        self._before: torch.Tensor | None = None
        self._watched: torch.Tensor | None = None

    def before_optimizer_step(self, step: int, model: CovftModel, loss: float) -> None:
        vision = [p for p in model.parameter_groups()["vision"] if p.grad is not None]
        assert vision, "vision gradients must be there before the step"
        self.vision_grad_norms.append(float(torch.stack([p.grad.norm() for p in vision]).norm()))
        self._watched = vision[0]
        self._before = vision[0].detach().clone()
        self.routing.append(model.routing_weights())
        self.steps.append(step)

    def after_optimizer_step(self, step: int, model: CovftModel, loss: float) -> None:
        assert self._before is not None and self._watched is not None
        self.changed.append(not torch.equal(self._before, self._watched))


def test_callbacks_read_gradients_before_and_parameters_after_each_step(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    recorder = Recorder()
    plain_calls: list[tuple[int, float]] = []
    result = train(
        tiny_config(tiny_data, tmp_path, "train.grad_accum=2", "train.batch_size=3", steps=3),
        callbacks=[recorder, lambda step, model, loss: plain_calls.append((step, loss))],
    )
    assert recorder.steps == [1, 2, 3] and [s for s, _ in plain_calls] == [1, 2, 3]
    assert [loss for _, loss in plain_calls] == pytest.approx(result.loss_history)
    assert all(norm > 0 for norm in recorder.vision_grad_norms)
    assert recorder.changed == [True, True, True]
    # CoVFT routes per sample: one gate vector per image sample of the last micro-batch
    assert all(weights for weights in recorder.routing)


@pytest.mark.parametrize("method", ["covft", "qavit", "qmoe"])
def test_context_tokens_reach_the_model(
    method: str, tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[set[str]] = []
    forward = CovftModel.forward

    def spy(self: CovftModel, *args: object, **kwargs: object) -> object:
        seen.append(set(kwargs))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(CovftModel, "forward", spy)
    train(tiny_config(tiny_data, tmp_path, f"method={method}", "method_options={}", steps=1))
    assert seen and all({"context_input_ids", "pixel_values"} <= keys for keys in seen)


def test_logging_writes_jsonl_tensorboard_and_routing_stats(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    sys.modules.pop("wandb", None)
    train(tiny_config(tiny_data, tmp_path, "train.report_to=tensorboard", steps=3))
    records = read_log(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    for key in ("loss", "samples_per_second", "grad_norm", "lr/vision", "lr/projector", "lr/llm", "epoch"):
        assert key in records[0], key
    routing = [k for k in records[0] if k.startswith("routing/")]
    assert any("entropy" in k for k in routing) and any("expert" in k for k in routing)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "wandb" not in sys.modules
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["steps"] == 3 and len(summary["loss_history"]) == 3


def test_a_resumed_run_keeps_every_step_in_tensorboard(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    """TensorBoard purges the events at steps >= purge_step: those after the checkpoint, not its own."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = ("method=full", "method_options={}", "train.save_steps=2", "train.report_to=tensorboard")
    train(tiny_config(tiny_data, tmp_path, *extra, steps=4))
    (tmp_path / "train_summary.json").unlink()  # as if killed after step 4, before the end
    train(tiny_config(tiny_data, tmp_path, *extra, "resume=true", steps=4))
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3, 4]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    def poison(step: int, model: CovftModel, loss: float) -> None:
        if step == 3:
            with torch.no_grad():
                model.parameter_groups()["llm"][0].fill_(float("nan"))

    poisoner = TrainerCallback()
    poisoner.after_optimizer_step = poison  # type: ignore[method-assign]
    config = tiny_config(
        tiny_data,
        tmp_path,
        "method=full",
        "method_options={}",
        "train.save_steps=2",
        "train.save_total_limit=null",
        steps=4,
    )
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4") as info:
        train(config, callbacks=[poisoner])
    assert info.value.step == 4
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert info.value.last_checkpoint == ckpt.checkpoint_path(tmp_path, 2)
    weights = load_file(str(tmp_path / "checkpoint-2" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()  # the poisoned model was never saved


def write_bad_training_set(tiny_data: dict[str, Path], root: Path) -> Path:
    """Good samples plus a corrupt image and a conversation whose truncation cuts image tokens."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "corrupt.png").write_bytes(b"not an image at all")
    lines = tiny_data["instructions"].read_text().splitlines()
    bad = [
        {
            "id": "corrupt",
            "image": str(root / "corrupt.png"),
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}],
        },
        {
            "id": "too-long",
            "image": "img0.png",
            "conversations": [
                {"from": "human", "value": "x" * 300 + "<image>"},
                {"from": "gpt", "value": "no"},
            ],
        },
    ]
    path = root / "train.jsonl"
    path.write_text("\n".join(lines + [json.dumps(b) for b in bad]) + "\n")
    return path


def test_bad_samples_error_names_sample_and_file(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    path = write_bad_training_set(tiny_data, tmp_path / "data")
    config = tiny_config(
        tiny_data,
        tmp_path / "run",
        f"data.train={path}",
        "data.max_length=300",
        "method=freeze",
        "method_options={}",
        steps=2,
    )
    with pytest.raises(BadSampleError) as info:
        train(config)
    message = str(info.value)
    assert str(path) in message and ("'corrupt'" in message or "'too-long'" in message)
    assert "Fix:" in message


def test_bad_samples_skipped_are_counted_and_reported(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_bad_training_set(tiny_data, tmp_path / "data")
    config = tiny_config(
        tiny_data,
        tmp_path / "run",
        f"data.train={path}",
        "data.max_length=300",
        "data.on_bad_sample=skip",
        "data.max_skip_fraction=0.5",
        "method=freeze",
        "method_options={}",
        "train.batch_size=4",
        steps=2,
    )
    result = train(config)
    assert result.steps == 2
    assert result.skipped["total"] == 2
    assert sum(result.skipped["counts"].values()) == 2
    messages = "\n".join(result.skipped["samples"])
    assert "'corrupt'" in messages and "'too-long'" in messages and str(path) in messages
    assert "skipped 2 bad sample(s)" in capsys.readouterr().out
    assert read_log(tmp_path / "run")[-1]["skipped_samples"] == 2


def test_a_micro_batch_of_only_bad_samples_is_skipped(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    path = write_bad_training_set(tiny_data, tmp_path / "data")
    steps = 8  # one sample per step: every sample, the two bad ones included, comes up
    config = tiny_config(
        tiny_data,
        tmp_path / "run",
        f"data.train={path}",
        "data.max_length=300",
        "data.on_bad_sample=skip",
        "data.max_skip_fraction=0.5",
        "method=freeze",
        "method_options={}",
        "train.batch_size=1",
        steps=steps,
    )
    result = train(config)
    assert result.steps == steps and result.skipped["total"] == 2
    assert all(math.isfinite(x) for x in result.loss_history)


def test_an_existing_run_is_not_overwritten_without_resume(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    cheap = ["method=freeze", "method_options={}", "train.save_steps=1"]
    first = train(tiny_config(tiny_data, tmp_path, *cheap, steps=2))
    with pytest.raises(ConfigError, match="already holds a finished run.*resume=true"):
        train(tiny_config(tiny_data, tmp_path, *cheap, steps=2))
    again = train(tiny_config(tiny_data, tmp_path, *cheap, "resume=true", steps=2))
    assert again.loss_history == first.loss_history and again.steps == 2
    (tmp_path / "train_summary.json").unlink()  # an unfinished run: checkpoints but no summary
    with pytest.raises(ConfigError, match="already holds checkpoints.*resume=true"):
        train(tiny_config(tiny_data, tmp_path, *cheap, steps=2))


def test_train_accepts_a_mapping(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    config = tiny_config(tiny_data, tmp_path, "method=freeze", "method_options={}", steps=1)
    result = train(config.to_dict())
    assert result.steps == 1 and result.output_dir == tmp_path


def test_missing_data_file_is_a_clear_error(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BadSampleError, match="data file not found"):
        train(
            tiny_config(tiny_data, tmp_path, f"data.train={tmp_path / 'nope.json'}", "method=freeze", steps=1)
        )


def test_bf16_and_gradient_checkpointing_runs_in_one_process(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    """Several runs with different accelerate settings in one process (what the demo does)."""
    cheap = ["method=full", "method_options={}", "train.lr=1e-3"]
    bf16 = train(tiny_config(tiny_data, tmp_path / "bf16", *cheap, "train.precision=bf16", steps=3))
    checkpointed = train(
        tiny_config(
            tiny_data,
            tmp_path / "ckpt",
            *cheap,
            "train.gradient_checkpointing=true",
            "train.grad_accum=2",
            steps=3,
        )
    )
    for result in (bf16, checkpointed):
        assert all(math.isfinite(x) for x in result.loss_history)
        assert result.loss_history[-1] < result.loss_history[0]
