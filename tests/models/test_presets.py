"""Presets and checkpoint sources: local Hugging Face LLaVA directories, ZeRO-3 gathering."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

import covft
from covft.models.distributed import gathered
from tests.conftest import make_samples


def test_local_hf_llava_checkpoint_loads_and_matches(tmp_path):
    source = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=3)
    source.llava.save_pretrained(tmp_path / "hf")
    source.tokenizer.save_pretrained(tmp_path / "hf")
    source.image_processor.save_pretrained(tmp_path / "hf")
    loaded = covft.build_model(str(tmp_path / "hf"), text_encoder="random-tiny")
    assert loaded.base["path"].endswith("hf") and loaded.template == "vicuna_v1"
    source.eval(), loaded.eval()
    batch = source.collate(make_samples())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, source(**batch).logits, rtol=0, atol=0)
    covft.apply_vft(loaded, "covft")  # strategies apply to a loaded HF model too
    assert loaded.routed_blocks == [0]


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither a preset"):
        covft.build_model(str(tmp_path / "nothing"))


def test_siglip_has_no_cls_and_uses_full_features():
    model = covft.build_model("tiny-test", vision_layers=2, vision_tower="siglip", text_encoder="random-tiny")
    assert model.config.vision_feature_select_strategy == "full"
    assert model.num_image_tokens == 16


def test_zero3_sharded_parameters_are_gathered_before_upcycling(monkeypatch):
    calls = []

    class Gathered:
        def __init__(self, params, modifier_rank=None):
            calls.append((len(params), modifier_rank))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(zero=types.SimpleNamespace(GatheredParameters=Gathered))
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    plain = [torch.nn.Parameter(torch.zeros(2))]
    with gathered(plain):
        pass
    assert calls == []  # not partitioned: nothing to gather, deepspeed never touched
    sharded = torch.nn.Parameter(torch.zeros(2))
    sharded.ds_id = 7
    with gathered([sharded, plain[0]]):
        pass
    assert calls == [(1, None)]


def test_instruction_vectors_are_cached_per_distinct_instruction():
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "covft"
    )
    encoder = model.text_encoder
    calls = []
    hook = encoder.model.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0] if args else 1)
    )
    batch = model.collate(make_samples())
    with torch.no_grad():
        model(**batch)
        first = model.context.text.clone()
        model(**batch)
    hook.remove()
    assert len(calls) == 2  # two distinct instructions, each encoded once, one at a time
    torch.testing.assert_close(model.context.text, first, rtol=0, atol=0)
    uncached = encoder(batch["context_input_ids"], batch.get("context_attention_mask"))[0]
    torch.testing.assert_close(first, uncached, rtol=1e-5, atol=1e-5)
    assert model.context.text_tokens is None  # CoVFT routes on [CLS] only


def test_qavit_reads_token_states_uncached():
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "qavit"
    )
    with torch.no_grad():
        model(**model.collate(make_samples()))
    assert model.context.text_tokens is not None and model.context.text_tokens.shape[0] == 2


def test_models_layer_points_covft_checkpoints_to_the_loader_that_restores_the_strategy(tmp_path):
    from covft.models import build_model as build_base

    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "bitfit"
    )
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="is a covft checkpoint: load it with covft.build_model"):
        build_base(str(tmp_path / "ckpt"))
    assert covft.build_model(str(tmp_path / "ckpt")).strategy.name == "bitfit"


@pytest.mark.parametrize("model_type", ["idefics3", "paligemma"])
def test_a_checkpoint_of_another_family_is_refused_before_loading(tmp_path, model_type: str) -> None:
    (tmp_path / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    with pytest.raises(
        NotImplementedError,
        match=rf"is a '{model_type}' checkpoint; covft supports .*Qwen3-VL.*docs/families.md",
    ):
        covft.build_model(str(tmp_path))


@pytest.mark.parametrize(("family", "tower"), [("llava_next", "clip"), ("llava_onevision", "siglip")])
def test_a_hugging_face_directory_of_an_anyres_family_loads_with_its_processor(tmp_path, family, tower):
    """Saved the way the Hub's llava-hf repositories are (model, tokenizer, processor files)."""
    source = covft.build_model(
        "tiny-test", family=family, vision_tower=tower, vision_layers=2, text_encoder="random-tiny"
    )
    source.llava.save_pretrained(tmp_path)
    source.tokenizer.save_pretrained(tmp_path)
    source.image_processor.save_pretrained(tmp_path)
    attributes = {"processor_class": type(source.processor).__name__}
    attributes |= {k: v for k, v in vars(source.processor).items() if isinstance(v, (str, int, bool))}
    (tmp_path / "processor_config.json").write_text(json.dumps(attributes))
    model = covft.build_model(str(tmp_path), text_encoder="random-tiny")
    assert model.family.name == family and type(model.llava) is type(source.llava)
    assert type(model.processor) is type(source.processor)
    samples = make_samples()
    batch, expected = model.collate(samples), source.collate(samples)
    assert batch.keys() == expected.keys()
    assert all(torch.equal(batch[k], expected[k]) for k in batch)
    model.eval(), source.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, source(**expected).logits, rtol=0, atol=0)
