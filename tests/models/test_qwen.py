"""Qwen-VL presets: the real checkpoints' geometry on the meta device (exact CoVFT counts, docs/families.md),
and loading a Hugging Face Qwen-VL directory."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.models.presets import from_hf_checkpoint
from tests.conftest import make_samples

# docs/plans/model-families/count_parameters.json: vision, projector (mergers), LLM, CoVFT vision trainable
COUNTS = {
    "qwen2.5-vl-3b": (631_975_680, 36_708_608, 3_085_938_688, 1_053_175_360, list(range(16, 32))),
    "qwen2.5-vl-7b": (631_975_680, 44_574_464, 7_615_616_512, 1_053_175_360, list(range(16, 32))),
    "qwen3-vl-2b": (306_242_560, 100_714_496, 1_720_574_976, 529_007_664, list(range(12, 24))),
    "qwen3-vl-8b": (415_891_440, 160_496_896, 8_190_735_360, 721_120_440, list(range(13, 27))),
}


@pytest.mark.parametrize("preset", sorted(COUNTS))
def test_real_geometry_on_meta_has_the_planned_covft_trainable_count(preset):
    vision, projector, llm, trainable, blocks = COUNTS[preset]
    model = covft.build_model(preset, device="meta")
    assert [model.num_parameters(part) for part in ("vision", "projector", "llm")] == [vision, projector, llm]
    assert model.feeding_layers == len(model.encoder_layers)  # the merger reads the last block
    covft.apply_vft(model, "covft")
    assert model.routed_blocks == blocks
    assert model.text_encoder.hidden_size == 768
    assert model.num_parameters("vision", trainable=True) == trainable
    assert model.num_parameters("projector", trainable=True) == projector
    assert model.num_parameters("llm", trainable=True) == llm


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_a_hugging_face_qwen_directory_loads_with_its_processor(family, tmp_path):
    model = covft.build_model("tiny-test", family=family, text_encoder="random-tiny")
    model.llava.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    model.image_processor.save_pretrained(tmp_path)
    loaded = from_hf_checkpoint(tmp_path, text_encoder="random-tiny")
    assert loaded.family is model.family and type(loaded.llava) is type(model.llava)
    assert loaded.processor.image_token == "<|image_pad|>"
    batch, again = model.collate(make_samples()), loaded.collate(make_samples())
    assert batch.keys() == again.keys() and all(torch.equal(batch[k], again[k]) for k in batch)
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**again).logits, model(**batch).logits, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("preset", "section", "theta", "interleaved"),
    [
        ("qwen2.5-vl-3b", [16, 24, 24], 1_000_000.0, None),
        ("qwen2.5-vl-7b", [16, 24, 24], 1_000_000.0, None),
        ("qwen3-vl-2b", [24, 20, 20], 5_000_000.0, True),
        ("qwen3-vl-8b", [24, 20, 20], 5_000_000.0, True),
    ],
)
def test_presets_have_the_released_rotary_settings(preset, section, theta, interleaved):
    """The released config.json files: Qwen2.5-VL mrope [16, 24, 24] at theta 1e6, Qwen3-VL
    interleaved mrope [24, 20, 20] at theta 5e6."""
    model = covft.build_model(preset, device="meta", text_encoder="random-tiny")
    rope = model.config.text_config.rope_parameters
    assert (rope["mrope_section"], rope["rope_theta"], rope.get("mrope_interleaved")) == (
        section,
        theta,
        interleaved,
    )
    assert model.llava.model.language_model.rotary_emb.mrope_section == section
