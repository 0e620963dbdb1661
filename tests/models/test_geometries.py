"""The released LLaVA-NeXT / OneVision geometries: their anyres processors and templates (a forward
on a real device, with few blocks of the released widths) and their LLMs' rotary settings."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.models.geometries import NEXT_PINPOINTS, ONEVISION_PINPOINTS
from tests.conftest import make_samples

ANYRES = {
    # preset: (processor, tile side, pinpoints, vocabulary)
    "llava-next-7b": ("LlavaNextProcessor", 336, NEXT_PINPOINTS, 32064),
    "llava-ov-0.5b": ("LlavaOnevisionProcessor", 384, ONEVISION_PINPOINTS, 152000),
}


@pytest.mark.parametrize("preset", sorted(ANYRES))
def test_an_anyres_preset_collates_and_runs_forward_on_a_real_device(preset):
    processor, side, pinpoints, vocabulary = ANYRES[preset]
    model = covft.build_model(
        preset, device="cpu", llm_layers=1, vision_layers=2, text_encoder="random-tiny"
    ).eval()
    assert type(model.processor).__name__ == processor and model.template == "vicuna_v1"
    assert model.config.image_grid_pinpoints == pinpoints
    assert [list(p) for p in model.image_processor.image_grid_pinpoints] == pinpoints
    batch = model.collate(make_samples()[:1])
    assert batch["image_sizes"].tolist() == [[30, 40]]  # (height, width) of the 40x30 image
    assert batch["pixel_values"].shape[-2:] == (side, side)
    del batch["labels"]
    with torch.no_grad():  # the LM head on the last position only: the forward is what is tested
        logits = model(**batch, logits_to_keep=1).logits
    assert logits.shape == (1, 1, vocabulary) and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("preset", ["llava-ov-0.5b", "llava-ov-7b"])
def test_onevision_presets_have_qwen2s_rotary_base_and_their_processor(preset):
    """Qwen2-0.5B and Qwen2-7B have rope_theta 1e6 (Qwen2Config's default is 1e4)."""
    model = covft.build_model(preset, device="meta", text_encoder="random-tiny")
    assert model.config.text_config.rope_parameters["rope_theta"] == 1_000_000.0
    assert model.processor.num_image_tokens == 729 and model.processor.vision_aspect_ratio == "anyres_max_9"
    assert list(model.image_processor.image_mean) == [0.5, 0.5, 0.5]
