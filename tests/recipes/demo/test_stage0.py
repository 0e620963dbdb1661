"""Stage 0: the contrastive loss goes down, and the cache is reused or invalidated by the config hash."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from covft.recipes.demo.contrastive import contrastive_loss
from covft.recipes.demo.stage0 import (
    Stage0Config,
    pretrain_vision_tower,
    read_losses,
    stage0_key,
)

SMALL = Stage0Config(
    steps=40,
    batch_size=16,
    lr=2e-3,
    vision_hidden=32,
    vision_layers=2,
    image_size=32,
    eval_pairs=8,
    text_encoder="random-tiny",
)


def test_contrastive_loss_treats_equal_captions_as_positives() -> None:
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    text = image.clone()
    scale = torch.tensor(2.0)
    distinct = contrastive_loss(image, text, torch.tensor([0, 1, 2, 3]), scale)
    # rows 0 and 1 share a caption: putting their targets on both can only be scored as a soft target
    shared = contrastive_loss(image, text, torch.tensor([0, 0, 2, 3]), scale)
    assert torch.isfinite(distinct) and torch.isfinite(shared)
    # perfect alignment with a large temperature scale drives the loss to ~0 for distinct captions
    assert float(contrastive_loss(image, text, torch.arange(4), torch.tensor(5.0))) < float(distinct)
    # identical embeddings for a shared caption: the soft target is exactly matched (loss = log 2 floor)
    twins = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=-1)
    loss = contrastive_loss(twins, twins, torch.tensor([0, 0]), torch.tensor(3.0))
    assert abs(float(loss) - float(torch.log(torch.tensor(2.0)))) < 1e-5


def test_stage0_lowers_its_loss_and_is_cached_by_config(micro_world: Path, tmp_path: Path) -> None:
    first = pretrain_vision_tower(micro_world, SMALL, cache_dir=tmp_path, progress=False)
    assert not first.reused and first.path.is_file()
    losses = read_losses(first)
    assert len(losses) == SMALL.steps
    assert statistics.fmean(losses[-8:]) < statistics.fmean(losses[:8]) - 0.1
    assert first.info["loss_last"] == losses[-1]

    stamp = first.path.stat().st_mtime_ns
    again = pretrain_vision_tower(micro_world, SMALL, cache_dir=tmp_path, progress=False)
    assert again.reused and again.key == first.key and again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp

    changed = replace(SMALL, steps=2)
    assert stage0_key(micro_world, changed) != first.key
    other = pretrain_vision_tower(micro_world, changed, cache_dir=tmp_path, progress=False)
    assert not other.reused and other.key != first.key and other.path != first.path
    assert first.path.is_file()  # the earlier tower stays cached


def test_scene_regions_put_each_object_and_the_sign_on_the_patch_under_its_centre() -> None:
    from covft.recipes.demo.regions import scene_regions
    from covft.recipes.world.scene import Scene, Sign, WorldObject

    scene = Scene(
        kind="text",
        background=(0, 0, 0),
        objects=[
            WorldObject("circle", "red", "large", "striped", x=0.05, y=0.05, radius=0.1),
            WorldObject("star", "blue", "small", "solid", x=0.99, y=0.55, radius=0.05),
        ],
        sign=Sign("TAXI", (0.5, 0.0, 0.8, 0.2), 0.1, "black", "white"),
    )
    assert scene_regions(scene, 8) == [
        (0, "a large striped red circle"),
        (4 * 8 + 7, "a small blue star"),  # row int(0.55 * 8) = 4, column clamped to 7
        (0 * 8 + 5, 'a sign that says "TAXI"'),  # the board's centre (0.65, 0.1)
    ]


def test_batch_regions_keeps_the_batch_images_regions_in_batch_positions() -> None:
    from covft.recipes.demo.regions import batch_regions

    # (image, patch, phrase): image 0 has two regions, image 2 one, image 3 none
    table = torch.tensor([[0, 5, 1], [0, 9, 0], [1, 3, 2], [2, 7, 1]])
    where, phrases = batch_regions(table, torch.tensor([2, 0]), images=4)
    assert where.tolist() == [[1, 5], [1, 9], [0, 7]]  # image 0 is the batch's second row
    assert phrases.tolist() == [[1], [0], [1]]
    empty, none = batch_regions(table, torch.tensor([3]), images=4)
    assert empty.shape == (0, 2) and none.numel() == 0


def test_world_regions_label_every_object_with_its_attributes(micro_world: Path) -> None:
    import json

    from covft.recipes.demo.regions import ATTRIBUTES, IGNORE, world_regions

    records = [
        json.loads(line) for line in (micro_world / "annotations" / "train.jsonl").read_text().splitlines()
    ]
    ids = [r["id"] for r in records]
    phrases, table = world_regions(micro_world, ids, grid=4)
    assert table.shape[1] == 3 + len(ATTRIBUTES) and len(phrases) == len(set(phrases))
    objects = sum(len(r["scene"]["objects"]) for r in records)
    signs = sum(r["scene"]["sign"] is not None for r in records)
    assert len(table) == objects + signs and signs > 0
    assert int((table[:, 3] == IGNORE).sum()) == signs
    first = next(i for i, r in enumerate(records) if r["scene"]["objects"])
    obj = records[first]["scene"]["objects"][0]
    row = table[table[:, 0] == first][0].tolist()
    assert phrases[row[2]].endswith(f"{obj['color']} {obj['shape']}")
    assert [words[k] for words, k in zip(ATTRIBUTES.values(), row[3:], strict=True)] == [
        obj["shape"], obj["color"], obj["size"], obj["texture"]
    ]  # fmt: skip


def test_attribute_loss_ignores_regions_without_the_attribute() -> None:
    from covft.recipes.demo.contrastive import attribute_loss

    logits = [torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([[0.0, 0.0, 9.0], [1.0, 0.0, 0.0]])]
    right = attribute_loss(logits, torch.tensor([[0, 2], [1, -100]]))
    expected = torch.nn.functional.cross_entropy(logits[0], torch.tensor([0, 1]))
    expected = (expected + torch.nn.functional.cross_entropy(logits[1][:1], torch.tensor([2]))) / 2
    assert torch.allclose(right, expected)
    assert float(attribute_loss(logits, torch.tensor([[1, 0], [0, -100]]))) > float(right)


def test_region_alignment_trains_and_changes_the_cache_key(micro_world: Path, tmp_path: Path) -> None:
    from covft.recipes.demo.regions import world_regions

    regional = replace(SMALL, region_weight=1.0, attribute_weight=1.0)
    assert stage0_key(micro_world, regional) != stage0_key(micro_world, SMALL)
    assert stage0_key(micro_world, regional) != stage0_key(
        micro_world, replace(regional, attribute_weight=0.0)
    )

    result = pretrain_vision_tower(micro_world, regional, cache_dir=tmp_path, progress=False)
    losses = read_losses(result)
    assert statistics.fmean(losses[-8:]) < statistics.fmean(losses[:8]) - 0.1
    info = result.info
    assert info["regions"] > info["distinct_phrases"] > 1
    after = info["region_accuracy_after"]
    assert set(after) == {"phrase", "shape", "color", "size", "texture"}
    assert all(0.0 <= value <= 100.0 for value in after.values())
    # the attribute heads learn: colour, one patch's mean, is read well above its chance
    assert after["color"] > info["region_accuracy_before"]["color"]
    # the saved tower is the CLIPVisionModel alone: the region head is stage 0's, not the tower's
    from safetensors.torch import load_file

    assert not any("region" in name or name.startswith("head") for name in load_file(str(result.path)))

    with pytest.raises(FileNotFoundError, match="scene annotations"):
        world_regions(tmp_path, ["world-000000"], grid=4)


def test_position_logits_name_every_patch_row_and_column() -> None:
    from transformers import CLIPVisionConfig

    from covft.recipes.demo.contrastive import ContrastiveTower, position_logits, position_loss

    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=12, patch_size=4)  # fmt: skip
    tower = ContrastiveTower(config, text_dim=8, init_temperature=0.07, positions=3)
    patches = torch.randn(2, 9, 16)
    (rows, row_truth), (cols, col_truth) = position_logits(tower, patches)
    assert rows.shape == cols.shape == (18, 3)
    # row-major: patch 5 of a 3x3 grid is row 1, column 2, in both images of the batch
    assert row_truth.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] * 2
    assert col_truth.tolist() == [0, 1, 2] * 6
    expected = (
        torch.nn.functional.cross_entropy(rows, row_truth)
        + torch.nn.functional.cross_entropy(cols, col_truth)
    ) / 2
    assert torch.allclose(position_loss(tower, patches), expected)
    with pytest.raises(ValueError, match="without positions"):
        position_loss(ContrastiveTower(config, text_dim=8, init_temperature=0.07), patches)


def test_position_head_trains_and_changes_the_cache_key(micro_world: Path, tmp_path: Path) -> None:
    placed = replace(SMALL, position_weight=1.0)
    assert stage0_key(micro_world, placed) != stage0_key(micro_world, SMALL)
    result = pretrain_vision_tower(micro_world, placed, cache_dir=tmp_path, progress=False)
    info = result.info
    # held-out images: where each patch is, from its features alone, well above chance (1 in 4
    # rows or columns of the 32-pixel, patch-8 grid) after training and better than before
    assert info["position_accuracy_after"] > max(50.0, info["position_accuracy_before"] + 20.0)
    assert "region_accuracy_after" not in info
    from safetensors.torch import load_file

    assert not any(name.startswith("position") for name in load_file(str(result.path)))
