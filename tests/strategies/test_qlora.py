"""QLoRA: the LLM's decoder linears in 4 bits (bitsandbytes) under LoRA adapters, beside a vision strategy."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

import covft
from covft.strategies.llm import LlmSideError
from tests.conftest import make_samples
from tests.strategies.tiny_llm import LLM_LINEARS, logits, tiny

bnb = pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_the_llms_decoder_linears_are_4_bit_under_trainable_adapters(kind: str) -> None:
    model = tiny("lora", llm_lora_r=4, llm_quantization=kind)
    bases = [m.get_base_layer() for m in model.llava.modules() if hasattr(m, "lora_A") and "llm" in m.lora_A]
    assert len(bases) == LLM_LINEARS and all(isinstance(b, bnb.nn.Linear4bit) for b in bases)
    assert {b.weight.quant_type for b in bases} == {kind} and all(
        b.weight.dtype == torch.uint8 for b in bases
    )
    # nothing else is quantized: tower (with its own LoRA), projector, embeddings, lm_head
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.llava.modules()) == LLM_LINEARS
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and model.part_of(n) == "llm"}
    assert len(trainable) == 2 * LLM_LINEARS and all(".lora_" in n for n in trainable)
    # the quantized model computes close to the full-precision one (adapters start at zero)
    full, quantized = logits(tiny("lora")), logits(model)
    assert 0 < (quantized - full).abs().max() < 0.5 * full.abs().max()


def test_a_step_trains_the_adapters_and_leaves_the_4_bit_weights_bitwise_equal() -> None:
    model = tiny("freeze", llm_lora_r=4, llm_quantization="nf4").train()
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}
    assert len(packed) == LLM_LINEARS
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = model.collate(make_samples())
    for _ in range(2):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], value) for n, value in packed.items())
    reached = [
        n for n, p in params.items() if ".lora_A.llm." in n and p.grad is not None and p.grad.abs().sum() > 0
    ]
    assert len(reached) == LLM_LINEARS


@pytest.mark.parametrize("delta", [True, False])
def test_save_and_load_quantize_the_same_base_again(tmp_path: Path, delta: bool) -> None:
    model = tiny("freeze", llm_lora_r=4, llm_quantization="nf4")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B.llm." in name:
                param.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "ckpt", delta=delta)
    loaded = covft.load_pretrained(tmp_path / "ckpt").eval()
    assert loaded.strategy.options.llm_quantization == "nf4"
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)


def test_quantization_without_adapters_and_unknown_formats_are_refused() -> None:
    with pytest.raises(LlmSideError, match=r"can only train through adapters \(QLoRA\): set llm_lora_r"):
        tiny(llm_quantization="nf4")
    with pytest.raises(LlmSideError, match=r"llm_quantization must be one of \('nf4', 'fp4'\)"):
        tiny(llm_lora_r=4, llm_quantization="int8")


def test_a_missing_bitsandbytes_is_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(LlmSideError, match=r"pip install 'covft\[qlora\]'"):
        tiny(llm_lora_r=4, llm_quantization="nf4")
