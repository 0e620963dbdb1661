"""Qwen2-VL, Qwen2.5-VL, Qwen3-VL x every strategy that applies: apply, forward + backward with
exactly the declared trainable set, save/load round trip, generate; the packed-tower errors."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.models.names import block_prefix
from covft.nn.experts import FusedExperts, FusedSwiGLUExperts
from tests.conftest import make_samples

QWEN = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
TRAINED = ["freeze", "full", "lora", "dora", "bitfit", "selective", "qmoe"]


def build(family: str, method: str | None = None, **options):
    model = covft.build_model("tiny-test", family=family, seed=0, text_encoder="random-tiny")
    return model if method is None else covft.apply_vft(model, method, **options)


def _block(model, name: str) -> int | None:
    prefix, _ = block_prefix(model)
    rest = name[len(model.vision_prefix) :]
    return int(rest[len(prefix) :].split(".")[0]) if rest.startswith(prefix) else None


@pytest.mark.parametrize("family", QWEN)
def test_the_family_names_the_tower_merger_and_blocks(family):
    model = build(family)
    assert model.family.name == family and model.family.packed
    assert model.vision_prefix == "llava.model.visual."
    assert block_prefix(model)[0] == "blocks." and model.feeding_layers == len(model.encoder_layers) == 4
    parts = {name: model.part_of(name) for name, _ in model.named_parameters()}
    assert all(parts[n] == "projector" for n in parts if ".visual.merger." in n or "deepstack_merger" in n)
    assert {parts[n] for n in parts if n.startswith("llava.model.visual.blocks.")} == {"vision"}
    assert {parts[n] for n in parts if ".language_model." in n} == {"llm"}
    assert model.off_path_trainable() == []


@pytest.mark.parametrize("family", QWEN)
def test_collated_images_get_qwens_tokens_and_mrope_positions(family):
    model = build(family)
    batch = model.collate(make_samples())
    grid = batch["image_grid_thw"]
    assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    ids, config = batch["input_ids"], model.config
    per_image = (grid.prod(-1) // 4).tolist()  # 2x2 merge: one LLM position per 4 patches
    assert (ids == config.image_token_id).sum(-1).tolist() == [per_image[0], 0, per_image[1]]
    for row in (0, 2):  # <|vision_start|> + N x <|image_pad|> + <|vision_end|>
        start = int((ids[row] == config.vision_start_token_id).nonzero())
        n = per_image[0 if row == 0 else 1]
        assert (ids[row, start + 1 : start + 1 + n] == config.image_token_id).all()
        assert int(ids[row, start + 1 + n]) == config.vision_end_token_id
    model.eval()
    with torch.no_grad():
        model(**batch)
    # the model placed mrope positions: an image of h x w merged tokens advances them by max(h, w)
    deltas = model.llava.model.rope_deltas.flatten().tolist()
    merged = [(int(h) // 2, int(w) // 2) for _, h, w in grid.tolist()]
    assert deltas == [max(merged[0]) - per_image[0], 0, max(merged[1]) - per_image[1]]


@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("method", TRAINED)
def test_apply_forward_backward_save_load_generate(family, method, tmp_path):
    model = build(family, method)
    batch = model.collate(make_samples())
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()

    declared = set(model.trainable_parameter_names())
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached <= declared, f"gradient reached undeclared parameters: {sorted(reached - declared)[:5]}"
    assert declared <= reached, f"declared parameters got no gradient: {sorted(declared - reached)[:5]}"
    parts = {model.part_of(n) for n in declared}
    assert {"llm", "projector"} <= parts
    vision = {n for n in declared if model.part_of(n) == "vision"}
    if method in ("freeze", "qmoe"):
        assert vision == set()
    else:
        assert vision
    if method == "selective":
        assert {_block(model, n) for n in vision} == {3}
    if method in ("lora", "dora"):
        adapted = {n.split(".lora_")[0] for n in vision}
        assert {a.rsplit(".", 1)[1] for a in adapted} == {"qkv", "proj"}
        assert all(".attn." in a for a in adapted) and len(adapted) == 2 * model.feeding_layers
    if method == "bitfit":
        assert all(n.endswith(".bias") for n in vision)
    if method == "qmoe":
        gates = model.routing_weights()["projector"]
        assert gates.shape == (2, 4)  # one gate row per sample with an image

    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path / "ckpt")
    loaded = covft.load_pretrained(tmp_path / "ckpt")
    loaded.eval()
    assert loaded.family.name == family and type(loaded.processor) is type(model.processor)
    with torch.no_grad():
        after = loaded(**loaded.collate(make_samples())).logits
    assert sorted(loaded.trainable_parameter_names()) == sorted(declared)
    torch.testing.assert_close(after, before, rtol=0, atol=0)

    prompt = loaded.collate(make_samples(), for_generation=True)
    generated = loaded.generate(**prompt, max_new_tokens=2, min_new_tokens=2)
    assert generated.shape == (3, prompt["input_ids"].shape[1] + 2)


@pytest.mark.parametrize("family", QWEN)
def test_covft_places_comoe_in_the_late_half_with_the_familys_experts(family):
    model = build(family, "covft")
    assert model.routed_blocks == [2, 3]
    experts = model.encoder_layers[3].mlp.experts
    assert isinstance(experts, FusedSwiGLUExperts if family == "qwen2_5_vl" else FusedExperts)
    vision = {n for n in model.trainable_parameter_names() if model.part_of(n) == "vision"}
    norms = {n for n in vision if ".norm1." in n or ".norm2." in n}
    assert {_block(model, n) for n in norms} == {0, 1, 2, 3}
    assert {_block(model, n) for n in vision - norms} == {2, 3}


@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("method", ["vpt", "qavit"])
def test_prompt_strategies_refuse_packed_towers(family, method):
    with pytest.raises(NotImplementedError, match="packed tower is not implemented"):
        build(family, method)


@pytest.mark.parametrize("family", QWEN)
def test_covft_is_the_stock_model_at_initialisation_and_trains(family):
    model = build(family)
    batch = model.collate(make_samples())
    model.eval()
    with torch.no_grad():
        stock = model(**batch).logits
    covft.apply_vft(model, "covft")
    batch = model.collate(make_samples())  # now with the instructions' context tokens
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, stock, atol=1e-5, rtol=1e-5)
    model.train()
    model(**batch).loss.backward()
    declared = set(model.trainable_parameter_names())
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached <= declared
    assert model.routing_weights()[3].shape == (2, 4)


@pytest.mark.parametrize("family", QWEN)
def test_llm_lora_adapts_only_the_qwen_llm(family):
    model = build(family, "lora", llm_lora_r=4)
    adapted = [n for n, _ in model.llava.named_modules() if n.endswith("lora_A")]
    llm = [n for n in adapted if n.startswith("model.language_model.layers.")]
    vision = [n for n in adapted if n.startswith("model.visual.blocks.")]
    assert len(llm) == 7 * 2 and len(vision) == 2 * 4 and len(llm) + len(vision) == len(adapted)
    model(**model.collate(make_samples())).loss.backward()
    declared = set(model.trainable_parameter_names())
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached == declared


def test_a_sample_with_two_images_is_one_routing_row_and_gets_both_images_positions():
    from PIL import Image

    model = covft.build_model("tiny-test", family="qwen2_5_vl", text_encoder="random-tiny", image_size=64)
    covft.apply_vft(model, "qmoe")
    samples = make_samples()
    samples[2]["image"] = [Image.new("RGB", (64, 48), (1, 2, 3)), Image.new("RGB", (30, 40), (9, 9, 9))]
    samples[2]["conversations"][0]["value"] = "<image> and <image>: which is darker?"
    batch = model.collate(samples)
    assert batch["images_per_sample"].tolist() == [1, 2]
    model(**batch).loss.backward()
    tokens = batch["image_grid_thw"].prod(-1).tolist()
    assert model.context.owner.bincount().tolist() == [tokens[0], tokens[1] + tokens[2]]
    assert model.routing_weights()["projector"].shape == (2, 4)
    merged = [(h // 2, w // 2) for _, h, w in batch["image_grid_thw"].tolist()]
    offset = [max(hw) - hw[0] * hw[1] for hw in merged]
    assert model.llava.model.rope_deltas.flatten().tolist() == [offset[0], 0, offset[1] + offset[2]]
