"""Stage 0: the contrastive loss goes down, and the cache is reused or invalidated by the config hash."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

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
