"""Every registered strategy x {tiny CLIP LLaVA, tiny SigLIP LLaVA}: apply, forward, backward, save/load."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.models.names import VISION_PREFIX, block_prefix
from covft.strategies import UnknownMethodError, UnknownOptionError
from tests.conftest import make_samples

TOWERS = ["clip", "siglip"]


def build(tower: str, method: str, **options):
    model = covft.build_model(
        "tiny-test", vision_layers=4, vision_tower=tower, seed=0, text_encoder="random-tiny"
    )
    return covft.apply_vft(model, method, **options)


def off_path(model, name: str) -> bool:
    """Parameters of blocks past vision_feature_layer never receive a gradient."""
    prefix, _ = block_prefix(model)
    rest = name[len(VISION_PREFIX) :]
    return rest.startswith(prefix) and int(rest[len(prefix) :].split(".")[0]) >= model.feeding_layers


def test_registry_has_the_ten_methods():
    expected = {"freeze", "full", "lora", "dora", "bitfit", "vpt", "selective", "qavit", "qmoe", "covft"}
    assert expected <= set(covft.available_methods())


@pytest.mark.parametrize("tower", TOWERS)
@pytest.mark.parametrize("method", sorted(covft.available_methods()))
def test_apply_forward_backward_save_load(method, tower, tmp_path):
    model = build(tower, method)
    batch = model.collate(make_samples())
    out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.loss)
    out.loss.backward()

    declared = set(model.trainable_parameter_names())
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached <= declared, f"gradient reached undeclared parameters: {sorted(reached - declared)[:5]}"
    on_path = {n for n in declared if not off_path(model, n)}
    assert set(model.off_path_trainable()) == declared - on_path
    assert on_path <= reached, f"declared parameters got no gradient: {sorted(on_path - reached)[:5]}"
    assert not any(n.startswith("text_encoder.") for n in declared)
    # what the LLM side trains in stage 2
    assert any(".language_model." in n for n in declared)
    assert any(".multi_modal_projector." in n for n in declared)
    if method == "freeze":
        assert not any(n.startswith(VISION_PREFIX) for n in declared)
    else:
        assert any(n.startswith(VISION_PREFIX) or "router" in n for n in declared)

    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path / "ckpt")
    loaded = covft.load_pretrained(tmp_path / "ckpt")
    loaded.eval()
    with torch.no_grad():
        after = loaded(**loaded.collate(make_samples())).logits
    assert loaded.strategy.name == method
    assert sorted(loaded.trainable_parameter_names()) == sorted(declared)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["covft", "lora", "vpt"])
def test_delta_checkpoint_holds_only_trained_weights_and_reproduces(method, tmp_path):
    from safetensors.torch import load_file

    model = build("clip", method)
    with torch.no_grad():  # move off the initialisation so the delta matters
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "delta", delta=True)
    saved = load_file(str(tmp_path / "delta" / "model.safetensors"))
    assert set(saved) == set(model.trainable_parameter_names())
    loaded = covft.load_pretrained(tmp_path / "delta")
    model.eval(), loaded.eval()
    batch = model.collate(make_samples())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_lora_never_touches_the_llm():
    model = build("clip", "lora")
    adapted = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert adapted and all(".vision_tower." in n for n in adapted)
    # the LLM has q_proj/v_proj too: a bare-suffix target list would have matched them
    assert any(n.endswith("language_model.layers.0.self_attn.q_proj") for n, _ in model.named_modules())
    assert len(adapted) == 4 * model.feeding_layers


def test_stage_one_is_projector_only():
    model = build("clip", "freeze", train_llm=False)
    parts = {model.part_of(n) for n in model.trainable_parameter_names()}
    assert parts == {"projector"}


def test_selective_trains_only_the_last_k_feeding_blocks():
    model = build("clip", "selective", top_k=2)
    prefix, _ = block_prefix(model)
    blocks = {
        int(n[len(VISION_PREFIX) + len(prefix) :].split(".")[0])
        for n in model.trainable_parameter_names()
        if n.startswith(VISION_PREFIX)
    }
    assert blocks == {model.feeding_layers - 2, model.feeding_layers - 1}


def test_bitfit_trains_only_biases():
    model = build("siglip", "bitfit")
    vision = [n for n in model.trainable_parameter_names() if n.startswith(VISION_PREFIX)]
    assert vision and all(n.endswith(".bias") for n in vision)


def test_vpt_keeps_sequence_length_and_hidden_states():
    model = build("clip", "vpt", num_prompts=5)
    batch = model.collate(make_samples())
    pixel_values = batch["pixel_values"]
    out = model.vision_tower(pixel_values, output_hidden_states=True)
    tokens = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2 + 1
    # every block's recorded output is prompt-free (hidden_states[0], the embeddings as seen by
    # block 0, carries block 0's prompts: no LLaVA feature layer selects it)
    assert [h.shape[1] for h in out.hidden_states[1:]] == [tokens] * 4


def test_strategies_do_not_stack_and_bad_options_are_named():
    model = build("clip", "covft")
    with pytest.raises(ValueError, match="do not stack"):
        covft.apply_vft(model, "lora")
    fresh = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny")
    with pytest.raises(UnknownOptionError, match="num_expert.*Did you mean 'num_experts'.*Valid"):
        covft.apply_vft(fresh, "covft", num_expert=3)
    with pytest.raises(UnknownMethodError, match="Did you mean 'covft'"):
        covft.apply_vft(fresh, "covfft")
    with pytest.raises(ValueError, match="method 'full'"):
        covft.apply_vft(fresh, "covft", context="none")
