"""The training-start audit: exact parts on healthy runs, named problems on broken ones, strict mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import covft
from covft.models.model import CovftModel
from covft.train import audit, setup, train
from covft.train.audit import AuditError, checksums, preserved_rng
from tests.train.conftest import tiny_config

PROJECTOR_WEIGHT = "llava.model.multi_modal_projector.linear_1.weight"
VISION = "llava.model.vision_tower."


def summary_audit(output_dir: Path) -> dict[str, Any]:
    return json.loads((output_dir / "train_summary.json").read_text())["audit"]


def reference_model(method: str) -> CovftModel:
    """The tiny-test model with ``method`` applied, built apart from the trainer."""
    return covft.apply_vft(covft.build_model("tiny-test", vision_layers=2, seed=42), method)


@pytest.mark.parametrize("method", ["freeze", "full", "lora", "covft"])
def test_the_audit_passes_with_the_exact_parts_of_each_strategy(
    method: str, tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(tiny_config(tiny_data, tmp_path, f"method={method}", "method_options={}", steps=2))
    report = summary_audit(tmp_path)
    assert report["problems"] == [] and report["strategy"] == method and report["unverified"] == []
    model = reference_model(method)
    expected = {p: model.num_parameters(p, trainable=True) for p in ("vision", "projector", "llm")}
    off_path = set(model.off_path_trainable())  # declared, but past vision_feature_layer: listed apart
    off_path_count = sum(p.numel() for n, p in model.named_parameters() if n in off_path)
    expected["vision"] -= off_path_count
    expected = {part: count for part, count in expected.items() if count}
    assert len(report["expected_without_gradient"]) == len(off_path)
    assert {part: r["parameters"] for part, r in report["trainable"].items()} == expected
    if method == "freeze":
        assert "vision" not in report["trainable"]
    for part in ("vision", "projector", "llm"):  # every parameter is accounted for, once
        counted = sum(r[part]["parameters"] for r in (report["trainable"], report["frozen"]) if part in r)
        assert counted + (off_path_count if part == "vision" else 0) == model.num_parameters(part)
    if method in ("lora", "covft"):  # part of the tower trains, the rest stays frozen
        assert report["trainable"]["vision"]["tensors"] > 0 and report["frozen"]["vision"]["tensors"] > 0
    # exactly zero gradients in step 1, non-zero in step 2: LoRA's A (B starts at zero) and CoVFT's
    # routing path (the upcycled experts start identical)
    waiting = {"lora": ("lora_A",), "covft": (".mlp.router.", ".mlp.cve.")}.get(method, ())
    expected_rechecked = sum(any(k in n for k in waiting) for n in covft.strategies.declared_trainable(model))
    assert report["rechecked"] == expected_rechecked and (expected_rechecked > 0) == bool(waiting)
    for record in report["trainable"].values():
        assert record["got_gradient"] == record["tensors"]
        assert record["tensors"] - report["rechecked"] <= record["changed"] <= record["tensors"]
    for record in report["frozen"].values():
        assert record["unchanged"] == record["tensors"]
    trained = sum(r["tensors"] for r in report["trainable"].values()) + len(off_path)  # all declared ones
    assert report["round_trip"] == {"equal_tensors": trained}
    out = capsys.readouterr().out
    assert f"covft audit (step 1, strategy {method}):" in out
    assert "trainable tensors equal" in out


def test_the_audit_changes_no_number(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    """Loss history and final weights are bitwise those of a run without the audit."""
    results = [
        train(tiny_config(tiny_data, tmp_path / flag, f"train.audit={flag}", steps=3))
        for flag in ("true", "false")
    ]
    assert results[0].loss_history == results[1].loss_history
    weights = [load_file(str(r.output_dir / "model.safetensors")) for r in results]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert summary_audit(tmp_path / "true")["step"] == 1
    assert summary_audit(tmp_path / "false") is None


def test_the_round_trip_draws_no_random_number() -> None:
    model = reference_model("covft")
    declared = covft.strategies.declared_trainable(model)
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    equal, findings = audit.round_trip(model, declared)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert findings == [] and equal == len(declared)
    with preserved_rng():
        torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_checksums_are_equal_for_equal_bits_and_differ_after_one_ulp() -> None:
    tensor = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    before = checksums(tensor)
    assert checksums(tensor.clone()) == before
    tensor[123] = torch.nextafter(tensor[123], torch.tensor(float("inf")))
    assert checksums(tensor) != before
    assert checksums(torch.ones(4, dtype=torch.bfloat16)) != checksums(torch.zeros(4, dtype=torch.bfloat16))


def broken_build(monkeypatch: pytest.MonkeyPatch, breakage) -> None:
    """Make the trainer's model build apply ``breakage(model)`` after the strategy."""
    build = setup.build_model

    def build_and_break(config):
        model = build(config)
        breakage(model)
        return model

    monkeypatch.setattr(setup, "build_model", build_and_break)


def first_vision_weight(model: CovftModel) -> str:
    return next(n for n, p in model.named_parameters() if n.startswith(VISION) and not p.requires_grad)


def test_a_tower_weight_unfrozen_outside_the_strategy_is_named(
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    leaked: list[str] = []

    def unfreeze(model: CovftModel) -> None:
        leaked.append(first_vision_weight(model))
        model.get_parameter(leaked[0]).requires_grad_(True)

    broken_build(monkeypatch, unfreeze)
    train(tiny_config(tiny_data, tmp_path, "method=lora", "method_options={}", steps=2))
    report = summary_audit(tmp_path)
    assert report["passed"] is False
    kinds = {problem["kind"]: problem for problem in report["problems"]}
    assert set(kinds) == {"undeclared", "undeclared_in_optimizer", "frozen_gradient", "frozen_changed"}
    assert all(problem["names"] == leaked and problem["count"] == 1 for problem in kinds.values())
    out = capsys.readouterr().out
    assert "FAILED (warning; train.audit=strict makes it an error): 4 problems" in out
    assert f"it trains anyway (a leak) (1): {leaked[0]}" in out


def test_a_frozen_weight_written_during_the_forward_is_named(
    tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen tensors are checksummed before the first forward, not at the optimizer step: a
    hook that writes one in place on every forward is caught."""
    written: list[str] = []

    def write_in_forward(model: CovftModel) -> None:
        written.append(first_vision_weight(model))
        weight = model.get_parameter(written[0])

        def hook(module, args):
            with torch.no_grad():
                weight.add_(1.0)

        model.register_forward_pre_hook(hook)

    broken_build(monkeypatch, write_in_forward)
    train(tiny_config(tiny_data, tmp_path, "method=freeze", "method_options={}", steps=2))
    report = summary_audit(tmp_path)
    assert report["passed"] is False
    assert [(p["kind"], p["names"]) for p in report["problems"]] == [("frozen_changed", written)]


def zero_the_projector_gradient(model: CovftModel) -> None:
    model.get_parameter(PROJECTOR_WEIGHT).register_hook(torch.zeros_like)


def test_a_declared_weight_whose_gradient_is_zeroed_is_named(
    tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_build(monkeypatch, zero_the_projector_gradient)
    train(tiny_config(tiny_data, tmp_path, "method=freeze", "method_options={}", steps=2))
    report = summary_audit(tmp_path)
    assert report["passed"] is False
    assert [(p["kind"], p["names"]) for p in report["problems"]] == [
        ("gradient", [f"{PROJECTOR_WEIGHT} (zero gradient in steps 1-2)"])
    ]
    assert report["trainable"]["projector"]["got_gradient"] == report["trainable"]["projector"]["tensors"] - 1


def test_a_zero_gradient_with_no_later_step_is_said_unverified_not_failed(
    tiny_data: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # one exactly zero gradient is what a symmetric start gives (LoRA's A, CoVFT's routing path):
    # without a later step the audit cannot tell it from a broken wiring, and says so
    broken_build(monkeypatch, zero_the_projector_gradient)
    train(tiny_config(tiny_data, tmp_path, "method=freeze", "method_options={}", steps=1))
    report = summary_audit(tmp_path)
    assert report["passed"] is True and report["unverified"] == [PROJECTOR_WEIGHT]
    assert "1 of them had an exactly zero gradient in step 1 and the run ended" in capsys.readouterr().out


def test_strict_mode_stops_the_run_naming_the_parameter_and_the_fix(
    tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_build(monkeypatch, zero_the_projector_gradient)
    config = tiny_config(
        tiny_data, tmp_path, "method=freeze", "method_options={}", "train.audit=strict", steps=2
    )
    with pytest.raises(
        AuditError, match=rf"{PROJECTOR_WEIGHT} \(zero gradient in steps 1-2\).*Fix: its output does not"
    ):
        train(config)
    assert not (tmp_path / "train_summary.json").exists()


def test_a_weight_that_does_not_survive_the_reload_is_named(
    tiny_data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = audit.load_pretrained

    def load_and_lose(path: Path) -> CovftModel:
        model = load(path)
        with torch.no_grad():
            model.get_parameter(PROJECTOR_WEIGHT).add_(1.0)
        return model

    monkeypatch.setattr(audit, "load_pretrained", load_and_lose)
    train(tiny_config(tiny_data, tmp_path, "method=freeze", "method_options={}", steps=1))
    report = summary_audit(tmp_path)
    assert [(p["kind"], p["names"]) for p in report["problems"]] == [("reload_differs", [PROJECTOR_WEIGHT])]
    assert (
        report["round_trip"]["equal_tensors"] == sum(r["tensors"] for r in report["trainable"].values()) - 1
    )


def test_a_part_with_learning_rate_zero_is_named_as_not_training(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    train(
        tiny_config(
            tiny_data, tmp_path, "method=freeze", "method_options={}", "train.lr_projector=0", steps=2
        )
    )
    report = summary_audit(tmp_path)
    problems = {p["kind"]: p for p in report["problems"]}
    assert sorted(problems) == ["part_unchanged", "unchanged"]
    assert problems["unchanged"]["count"] == report["trainable"]["projector"]["tensors"] == 4
    assert all(
        n.startswith("llava.model.multi_modal_projector.") and n.endswith("(lr 0)")
        for n in problems["unchanged"]["names"]
    )
    assert problems["part_unchanged"]["names"] == ["projector"]
    assert report["trainable"]["projector"]["changed"] == 0 and report["trainable"]["llm"]["changed"] == 21


def test_the_audit_passes_with_lora_on_both_the_tower_and_the_llm(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    # two PEFT adapters: if the vision one were left inactive its tensors would get no gradient
    train(tiny_config(tiny_data, tmp_path, "method=lora", "method_options={llm_lora_r: 4}", steps=2))
    report = summary_audit(tmp_path)
    assert report["passed"] is True and report["problems"] == []
    assert report["trainable"]["llm"]["tensors"] == 28 == report["trainable"]["llm"]["got_gradient"]
    assert report["trainable"]["vision"]["tensors"] == 8 == report["trainable"]["vision"]["got_gradient"]
    assert report["rechecked"] == 4 + 14  # every lora_A: the tower's and the LLM's


def test_the_audit_passes_with_qlora(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    options = "method_options={llm_lora_r: 4, llm_quantization: nf4}"
    train(tiny_config(tiny_data, tmp_path, "method=freeze", options, steps=2))
    report = summary_audit(tmp_path)
    assert report["passed"] is True and report["trainable"]["llm"]["tensors"] == 28
    assert report["frozen"]["llm"]["unchanged"] == report["frozen"]["llm"]["tensors"]  # the 4-bit weights


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        # reentrant checkpointing with a frozen embedding leaves LoRA without gradients elsewhere
        ("method_options={llm_lora_r: 4}", "train.gradient_checkpointing=true"),
        ("method_options={llm_lora_r: 4, llm_quantization: nf4}", "train.precision=bf16"),
    ],
)
def test_llm_adapters_get_gradients_under_checkpointing_and_bf16(
    tiny_data: dict[str, Path], tmp_path: Path, options: str, setting: str
) -> None:
    if "llm_quantization" in options:
        pytest.importorskip("bitsandbytes")
    train(tiny_config(tiny_data, tmp_path, "method=lora", options, setting, steps=3))
    report = summary_audit(tmp_path)
    assert report["passed"] is True and report["problems"] == []
    assert report["trainable"]["llm"]["got_gradient"] == report["trainable"]["llm"]["tensors"] == 28
