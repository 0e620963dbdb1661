"""covft checkpoints of every family rebuild the family's class and processor (not only LLaVA-1.5's)."""

from __future__ import annotations

import pytest
import torch

import covft
from tests.conftest import make_samples


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision", "qwen2_5_vl"])
def test_a_full_checkpoint_restores_the_family_processor_and_logits(family, tmp_path):
    model = covft.apply_vft(
        covft.build_model("tiny-test", family=family, text_encoder="random-tiny"), "bitfit"
    )
    model.save_pretrained(tmp_path / "ckpt")
    loaded = covft.load_pretrained(tmp_path / "ckpt")
    assert type(loaded.llava) is type(model.llava) and loaded.family is model.family
    assert type(loaded.processor) is type(model.processor)
    batch = model.collate(make_samples())
    again = loaded.collate(make_samples())
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    state, restored = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(state[k], restored[k]) for k in state if not k.startswith("text_encoder."))
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**again).logits, model(**batch).logits, rtol=0, atol=0)


def test_a_delta_checkpoint_of_a_qwen_model_rebuilds_its_preset(tmp_path):
    model = covft.apply_vft(
        covft.build_model("tiny-test", family="qwen3_vl", text_encoder="random-tiny"), "lora"
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "delta", delta=True)
    loaded = covft.load_pretrained(tmp_path / "delta")
    batch = model.collate(make_samples())
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)
