"""Models built in a dtype keep their rotary buffers in float32, as transformers builds them."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.models import precision


def rotary(model) -> dict[str, torch.Tensor]:
    return {n: b for n, b in model.llava.named_buffers() if n.rsplit(".", 1)[-1] in precision.ROTARY_BUFFERS}


@pytest.mark.parametrize(
    ("preset", "towers"), [("llava-1.5-7b", 1), ("qwen2.5-vl-3b", 2)], ids=["llava", "qwen-tower-too"]
)
def test_a_preset_built_in_bf16_keeps_its_rotary_buffers_in_float32(preset, towers):
    model = covft.build_model(preset, device="meta", dtype="bfloat16", text_encoder="random-tiny")
    assert precision.dtype_of(model.llava) == torch.bfloat16
    buffers = rotary(model)
    assert len(buffers) == 2 * towers  # inv_freq and original_inv_freq of each rotary embedding
    assert {b.dtype for b in buffers.values()} == {torch.float32}


def test_cast_keeps_the_rotary_buffers_bit_for_bit():
    model = covft.build_model("tiny-test", family="qwen2_vl", vision_layers=2, text_encoder="random-tiny")
    before = {n: b.clone() for n, b in rotary(model).items()}
    precision.cast(model.llava, "bfloat16")
    assert precision.dtype_of(model.llava) == torch.bfloat16
    after = rotary(model)
    assert after.keys() == before.keys() and len(before) == 4
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], before[n]) for n in before)


def test_a_dtype_is_read_from_its_name():
    assert precision.as_dtype("bfloat16") is torch.bfloat16
    assert precision.as_dtype("torch.float16") is torch.float16
    assert precision.as_dtype(None) is None
    with pytest.raises(ValueError, match="'bf17' is not a torch dtype"):
        precision.as_dtype("bf17")
