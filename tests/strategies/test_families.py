"""Every strategy on LLaVA-NeXT and LLaVA-OneVision (anyres tiles), and several images per sample on
every LLaVA family: apply, forward, backward with the declared trainable set, save/load, generate."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import covft
from covft.models import families
from covft.models.names import block_prefix
from tests.conftest import make_samples

FAMILIES = [("llava_next", "clip"), ("llava_onevision", "siglip")]


def build(family: str, tower: str, method: str = "freeze", **options):
    model = covft.build_model(
        "tiny-test", family=family, vision_layers=4, vision_tower=tower, seed=0, text_encoder="random-tiny"
    )
    return covft.apply_vft(model, method, **options)


def mixed_samples() -> list[dict]:
    """One wide image (tiled 1x2), a text-only sample, and a sample with a tall and a square image."""
    pair = {
        "id": "pair",
        "image": [Image.new("RGB", (30, 60), (10, 200, 10)), Image.new("RGB", (32, 32), (10, 10, 200))],
        "conversations": [
            {"from": "human", "value": "<image> and <image>: same colour?"},
            {"from": "gpt", "value": "no"},
        ],
    }
    wide = {**make_samples()[0], "image": Image.new("RGB", (64, 24), (200, 10, 10))}
    return [wide, make_samples()[1], pair]


def off_path(model, name: str) -> bool:
    prefix, _ = block_prefix(model)
    rest = name[len(model.vision_prefix) :]
    return rest.startswith(prefix) and int(rest[len(prefix) :].split(".")[0]) >= model.feeding_layers


@pytest.mark.parametrize(("family", "tower"), FAMILIES)
@pytest.mark.parametrize("method", sorted(covft.available_methods()))
def test_every_strategy_on_anyres_families(family, tower, method, tmp_path):
    model = build(family, tower, method)
    assert model.family.name == family
    batch = model.collate(mixed_samples())
    out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(out.loss)
    out.loss.backward()
    declared = set(model.trainable_parameter_names())
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached <= declared, sorted(reached - declared)[:5]
    on_path = {n for n in declared if not off_path(model, n)}
    assert on_path <= reached, sorted(on_path - reached)[:5]
    assert "llava.model.image_newline" in declared  # learned with the projector (ours)
    assert model.part_of("llava.model.image_newline") == "projector"

    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path / "ckpt")
    loaded = covft.load_pretrained(tmp_path / "ckpt")
    loaded.eval()
    assert loaded.family.name == family
    with torch.no_grad():
        after = loaded(**loaded.collate(mixed_samples())).logits
    assert sorted(loaded.trainable_parameter_names()) == sorted(declared)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize(("family", "tower"), FAMILIES)
def test_tiles_follow_transformers_count_and_route_to_their_sample(family, tower):
    model = build(family, tower, "freeze")
    batch = model.collate(mixed_samples())
    counts = batch["images_per_sample"]
    assert counts.tolist() == [1, 2]
    owner = families.owner(model.family, model.llava, batch, counts)
    # the wide image alone in its sample is tiled (base + a 1x2 grid); in the pair, LLaVA-NeXT tiles
    # each image (base + 2 tiles each: the best pinpoint for 32x32 is 32x64) while OneVision keeps
    # one row per image of a multi-image sample
    expected = [0, 0, 0] + ([1] * 6 if family == "llava_next" else [1, 1])
    assert owner.tolist() == expected
    rows = []
    tower_module = model.vision_tower
    handle = tower_module.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append((args[0] if args else kwargs["pixel_values"]).shape[0]),
        with_kwargs=True,
    )
    with torch.no_grad():
        model(**batch)
    handle.remove()
    assert rows == [len(expected)]


@pytest.mark.parametrize(("family", "tower"), [("llava", "clip"), *FAMILIES])
def test_covft_routes_every_row_of_a_sample_with_that_samples_context(family, tower):
    reference = covft.build_model(
        "tiny-test", family=family, vision_layers=4, vision_tower=tower, seed=0, text_encoder="random-tiny"
    )
    model = build(family, tower, "covft")
    samples = mixed_samples()
    batch = model.collate(samples)
    model.eval()
    reference.eval()
    with torch.no_grad():
        out = model(**batch).logits
        base = reference(**{k: v for k, v in batch.items() if not k.startswith("context_")}).logits
    torch.testing.assert_close(out, base, rtol=1e-5, atol=1e-5)  # CoVFT is the model at initialisation
    for gates in model.routing_weights().values():
        assert gates.shape == (2, 4)  # one gate vector per sample with images, not per tile
    assert model.context.owner is not None


@pytest.mark.parametrize(("family", "tower"), FAMILIES)
def test_generate_with_tiles(family, tower):
    model = build(family, tower, "covft")
    model.eval()
    batch = model.collate(mixed_samples(), for_generation=True)
    ids = model.generate(**batch, max_new_tokens=3)
    assert ids.shape[0] == 3 and ids.shape[1] == batch["input_ids"].shape[1] + 3


def test_lora_targets_only_the_tower_on_every_family():
    for family, tower in [("llava", "clip"), *FAMILIES]:
        model = build(family, tower, "lora")
        adapted = {n.rsplit(".lora_", 1)[0] for n in model.trainable_parameter_names() if ".lora_" in n}
        assert adapted and all(n.startswith(model.vision_prefix) for n in adapted)
        assert {n.rsplit(".", 1)[-1] for n in adapted} == {"q_proj", "k_proj", "v_proj", "out_proj"}


def test_families_are_named_and_planned_ones_refused():
    assert families.family_for_type("llava_next").display == "LLaVA-NeXT"
    with pytest.raises(ValueError, match=r"model_type 'bert', not one of covft's families"):
        families.family_for_type("bert")


def test_video_frames_are_refused_by_context_strategies():
    model = build("llava_onevision", "siglip", "covft")
    batch = model.collate(mixed_samples())
    with pytest.raises(NotImplementedError, match=r"routing video frames \(a second tower pass\)"):
        model(**batch, pixel_values_videos=torch.zeros(1, 2, 3, 32, 32))
    text_only = model.collate([make_samples()[1]])  # videos without images are refused too
    with pytest.raises(NotImplementedError, match=r"routing video frames"):
        model(**text_only, pixel_values_videos=torch.zeros(1, 2, 3, 32, 32))
