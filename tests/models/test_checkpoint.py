"""A covft checkpoint, full or delta, reloads as the model that was saved: its dtype (rotary buffers
in float32, as transformers keeps them), template, ``max_length`` and generation config, on the
device asked for."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationConfig

import covft
from covft.models import checkpoint, precision
from tests.conftest import make_samples, moved_trainable


def hf_directory(root, family: str):
    """A local Hugging Face directory (model, tokenizer, image processor), as downloaded ones are."""
    source = covft.build_model("tiny-test", family=family, vision_layers=2, text_encoder="random-tiny")
    source.llava.save_pretrained(root / "hf")
    source.tokenizer.save_pretrained(root / "hf")
    source.image_processor.save_pretrained(root / "hf")
    return root / "hf"


def trained(model, method: str = "lora"):
    return moved_trainable(covft.apply_vft(model, method))


def rotary(model) -> dict[str, torch.Tensor]:
    return {n: b for n, b in model.llava.named_buffers() if n.rsplit(".", 1)[-1] in precision.ROTARY_BUFFERS}


def assert_same_model(loaded, model) -> None:
    """Same weights (dtype and bytes), same rotary buffers, same logits on the same batch."""
    assert precision.dtype_of(loaded.llava) == precision.dtype_of(model.llava)
    assert (loaded.template, loaded.max_length) == (model.template, model.max_length)
    expected, got = rotary(model), rotary(loaded)
    assert got.keys() == expected.keys() and expected
    for name, buffer in expected.items():
        assert got[name].dtype == buffer.dtype == torch.float32, name
        assert torch.equal(got[name], buffer), name
    state, restored = model.state_dict(), loaded.state_dict()
    for name in (n for n in state if not n.startswith("text_encoder.")):
        assert restored[name].dtype == state[name].dtype and torch.equal(restored[name], state[name]), name
    samples = make_samples()[:1]  # an image sample: the plain template takes nothing else
    batch = model.collate(samples)
    assert all(torch.equal(batch[k], v) for k, v in loaded.collate(samples).items())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_a_bf16_checkpoint_of_a_hugging_face_model_reloads_as_it_was_saved(tmp_path, family, delta):
    """bf16 from ``from_pretrained`` keeps the LLM's (and Qwen's tower's) rotary buffers in float32;
    the reload must too (casting them changed every position's angle), and a delta must come back
    in bf16 with its template and max_length, not float32 with the defaults."""
    model = covft.build_model(
        str(hf_directory(tmp_path, family)), dtype="bfloat16", template="plain", text_encoder="random-tiny"
    )
    model.max_length = 640
    trained(model)
    model.save_pretrained(tmp_path / "ckpt", delta=delta)
    loaded = covft.load_pretrained(tmp_path / "ckpt").eval()
    assert precision.dtype_of(loaded.llava) == torch.bfloat16
    assert (loaded.template, loaded.max_length) == ("plain", 640)
    assert_same_model(loaded, model)


def test_a_delta_of_a_preset_without_a_dtype_option_reloads_in_the_saved_dtype(tmp_path):
    model = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny")
    precision.cast(model.llava, torch.bfloat16)
    trained(model)
    model.save_pretrained(tmp_path / "delta", delta=True)
    assert_same_model(covft.load_pretrained(tmp_path / "delta").eval(), model)


@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
def test_a_checkpoint_is_rebuilt_on_the_device_asked_for(tmp_path, delta):
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "lora"
    )
    model.save_pretrained(tmp_path / "ckpt", delta=delta)
    config = checkpoint.read_checked_config(tmp_path / "ckpt")
    rebuilt = checkpoint.rebuild_model(tmp_path / "ckpt", config, "meta", "random-tiny")
    assert {p.device.type for p in rebuilt.llava.parameters()} == {"meta"}
    assert all(b.dtype == torch.float32 for b in rotary(rebuilt).values())


@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
def test_the_generation_config_is_saved_and_restored(tmp_path, delta):
    """As in Qwen/Qwen2.5-VL-7B-Instruct's generation_config.json: a repetition penalty, two eos ids."""
    model = covft.build_model("tiny-test", family="qwen2_5_vl", text_encoder="random-tiny")
    trained(model, "bitfit")
    model.llava.generation_config.repetition_penalty = 1.05
    model.llava.generation_config.eos_token_id = [2, 3]
    model.save_pretrained(tmp_path / "ckpt", delta=delta)
    loaded = covft.load_pretrained(tmp_path / "ckpt").eval()
    assert loaded.llava.generation_config.to_diff_dict() == model.llava.generation_config.to_diff_dict()
    samples = [{"image": make_samples()[0]["image"], "conversations": make_samples()[0]["conversations"][:1]}]
    batch = model.collate(samples, for_generation=True)
    assert torch.equal(loaded.generate(**batch, max_new_tokens=8), model.generate(**batch, max_new_tokens=8))


def test_a_checkpoint_without_a_generation_config_gets_the_tokenizers_ids_as_before(tmp_path):
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "bitfit"
    )
    model.llava.generation_config.repetition_penalty = 1.05
    model.save_pretrained(tmp_path / "ckpt")
    file = tmp_path / "ckpt" / checkpoint.CONFIG_NAME
    config = json.loads(file.read_text())
    del config["generation_config"]  # written by an earlier covft
    file.write_text(json.dumps(config))
    generation = covft.load_pretrained(tmp_path / "ckpt").llava.generation_config
    assert generation.repetition_penalty == GenerationConfig().repetition_penalty  # the default
    assert (generation.pad_token_id, generation.eos_token_id) == (
        model.tokenizer.pad_token_id,
        model.tokenizer.eos_token_id,
    )
