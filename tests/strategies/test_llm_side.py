"""The LLM side (train_llm, llm_lora_r) combined with vision strategies: what trains, that both
adapters work, identity at initialisation, save/load, and the errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

import covft
from covft.strategies import declared_trainable
from covft.strategies.llm import LlmSideError, llm_lora_regex
from tests.conftest import make_samples
from tests.strategies.tiny_llm import LLM_LINEARS, logits, tiny

RANK = 4


def test_the_regex_adapts_the_llms_decoder_linears_and_nothing_else() -> None:
    pattern = re.compile(llm_lora_regex())
    assert pattern.fullmatch("model.language_model.layers.12.self_attn.o_proj")
    assert pattern.fullmatch("model.language_model.layers.0.mlp.down_proj")
    for name in (
        "model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",  # CLIP/SigLIP attention
        "model.visual.blocks.0.mlp.gate_proj",  # Qwen2.5-VL's SwiGLU vision MLP
        "model.multi_modal_projector.linear_1",
        "lm_head",
        "model.language_model.layers.0.self_attn.q_proj.lora_A",
    ):
        assert not pattern.fullmatch(name), name


@pytest.mark.parametrize("method", ["freeze", "full", "lora", "covft"])
def test_llm_lora_trains_only_the_llms_adapters_and_leaves_the_vision_side_as_it_was(method: str) -> None:
    plain, adapted = tiny(method), tiny(method, llm_lora_r=RANK)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == declared_trainable(adapted)
    llm = {n for n in trainable if adapted.part_of(n) == "llm"}
    assert len(llm) == 2 * LLM_LINEARS and all(".lora_A.llm." in n or ".lora_B.llm." in n for n in llm)
    assert all(n.startswith("llava.model.language_model.layers.") for n in llm)
    # the vision strategy's and the projector's trainable sets are those of the run without LLM LoRA
    others = {n for n, p in plain.named_parameters() if p.requires_grad and plain.part_of(n) != "llm"}
    assert trainable - llm == others
    # no adapter of the LLM anywhere else
    adapters = [n for n, m in adapted.llava.named_modules() if isinstance(m, LoraLayer) and "llm" in m.lora_A]
    assert len(adapters) == LLM_LINEARS and all(
        n.startswith("model.language_model.layers.") for n in adapters
    )


@pytest.mark.parametrize("method", ["freeze", "lora", "covft"])
def test_at_initialisation_the_adapted_model_gives_the_plain_models_logits(method: str) -> None:
    torch.testing.assert_close(logits(tiny(method, llm_lora_r=RANK)), logits(tiny(method)))


def test_both_adapters_are_active_with_vision_lora() -> None:
    """PEFT makes a second adapter the only active one; covft keeps the vision adapter working."""
    model = tiny("lora", llm_lora_r=RANK)
    layers = [m for m in model.llava.modules() if isinstance(m, LoraLayer)]
    assert {tuple(m.active_adapters) for m in layers} == {("default",), ("llm",)}
    before = logits(model)
    for adapter in ("default", "llm"):
        with torch.no_grad():
            for layer in layers:
                if adapter in layer.lora_B:
                    layer.lora_B[adapter].weight.fill_(0.05)
        after = logits(model)
        assert (after - before).abs().max() > 1e-3, f"adapter {adapter!r} does not reach the logits"
        before = after


def test_a_train_step_moves_the_adapters_and_no_llm_weight() -> None:
    model = tiny("lora", llm_lora_r=RANK).train()
    frozen_llm = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if model.part_of(n) == "llm" and not p.requires_grad
    }
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = model.collate(make_samples())
    for _ in range(2):  # LoRA's A gets a gradient once B has moved off zero
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], value) for n, value in frozen_llm.items())
    moved = [
        n for n, p in params.items() if ".lora_A.llm." in n and p.grad is not None and p.grad.abs().sum() > 0
    ]
    assert len(moved) == LLM_LINEARS


def test_save_and_load_restore_the_llm_adapters(tmp_path: Path) -> None:
    model = tiny("freeze", llm_lora_r=RANK)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B.llm." in name:
                param.normal_(0, 0.05)
    for delta in (False, True):
        model.save_pretrained(tmp_path / f"ckpt-{delta}", delta=delta)
        loaded = covft.load_pretrained(tmp_path / f"ckpt-{delta}").eval()
        assert loaded.strategy.options.llm_lora_r == RANK
        torch.testing.assert_close(logits(loaded), logits(model))


def test_contradicting_llm_settings_are_refused_naming_the_options() -> None:
    with pytest.raises(
        LlmSideError, match="set train_llm=true to train the LLM through LoRA, or llm_lora_r=0"
    ):
        tiny("freeze", llm_lora_r=RANK, train_llm=False)
    with pytest.raises(LlmSideError, match="llm_lora_r must be >= 0"):
        tiny("freeze", llm_lora_r=-1)
    with pytest.raises(ValueError, match="strategies do not stack"):
        covft.apply_vft(tiny("freeze", llm_lora_r=RANK), "full")


def test_llava_7b_with_llm_lora_128_trains_llavas_lora_count_on_the_meta_device() -> None:
    """LLaVA-1.5-7B's LoRA recipe (r 128 on every decoder linear of Vicuna-7B) beside CoVFT's tower."""
    model = covft.apply_vft(covft.build_model("llava-1.5-7b", device="meta"), "covft", llm_lora_r=128)
    hidden, mlp, layers, rank = 4096, 11008, 32, 128
    per_layer = rank * (4 * (hidden + hidden) + 2 * (hidden + mlp) + (mlp + hidden))
    assert model.num_parameters("llm", trainable=True) == layers * per_layer == 319_815_680
    assert model.num_parameters("vision", trainable=True) == 529_007_664  # the tower side is unchanged
