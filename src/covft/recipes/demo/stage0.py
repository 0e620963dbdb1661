"""Stage 0: a CLIP-like starting point for the demo's vision tower.

LLaVA starts from CLIP: a vision tower that is already semantic and knows nothing about
instructions. The demo has no CLIP at its scale, so it makes one: the small ViT of the demo
presets is trained contrastively on the world's captions (``captions.json``) against **frozen**
sentence embeddings of those captions (the packaged all-MiniLM-L6-v2, mean-pooled and
L2-normalised, each caption embedded once and cached). A learned linear head maps the ViT's
pooled output into the text-embedding space; the loss is CLIP's symmetric InfoNCE with a
learnable temperature. Identical captions of different images count as positives of each other
(soft targets), so the loss never pushes apart two images with the same description.

With ``region_weight`` > 0 a second InfoNCE (weighted by it) aligns the patch under each object,
in the block LLaVA feeds the LLM, with the object's own phrase from the caption
(:mod:`covft.recipes.demo.regions`): a caption of several objects, pooled, is told apart from the
batch's other captions by colour alone (the shape probe of docs/demo.md, "Why"), a single
object's phrase is not. With ``position_weight`` > 0 every patch of that block is also classified
by its row and column, so that the LM can find the patch a question names (docs/demo.md, e14).

The trained tower is cached by a hash of everything that determines it (world captions, tower
architecture, schedule, seed, text encoder) under ``<cache_dir>/stage0/<hash>/``
(:func:`covft.utils.cached_output`: built atomically, with its settings and results in
``settings.json``); a later call with the same inputs returns at once, a changed input trains a
new one. The model, loss and retrieval metric are :mod:`covft.recipes.demo.contrastive`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import covft.recipes.demo.vision as demo_vision
from covft.models.checkpoint import file_sha256
from covft.recipes.demo.cache import default_cache_dir
from covft.recipes.demo.contrastive import (
    ContrastiveTower,
    attribute_loss,
    caption_embeddings,
    contrastive_loss,
    cosine_adamw,
    position_accuracy,
    position_loss,
    retrieval_accuracy,
    text_embeddings,
)
from covft.recipes.demo.regions import ATTRIBUTES, RegionTargets, batch_regions
from covft.utils import cached_output

STAGE0_VERSION = "2"
WEIGHTS_FILE = "vision_tower.safetensors"
LOG_FILE = "log.jsonl"


@dataclass
class Stage0Config:
    """Everything that determines a stage-0 tower (besides the world's captions)."""

    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 128
    """Image-caption pairs per step (the contrastive negatives)."""
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_ratio: float = 0.05
    """Linear warmup share of the steps, then cosine decay to 0."""
    init_temperature: float = 0.07
    """CLIP's initial softmax temperature (the learnable logit scale starts at 1/0.07)."""
    max_logit_scale: float = 100.0
    """CLIP's clamp of the logit scale."""
    seed: int = 0
    text_encoder: str = "minilm"
    """Frozen sentence encoder giving the targets (``covft.models.text_encoder``)."""
    vision_hidden: int | None = None
    """Tower width override (None: the presets' default, ``TINY_VISION``)."""
    vision_layers: int | None = None
    """Tower depth override (None: the presets' default)."""
    image_size: int | None = None
    """Tower input size override (None: the presets' default, 64)."""
    eval_pairs: int = 256
    """Captioned images held out of training to measure image-to-caption retrieval."""
    region_weight: float = 0.0
    """Weight of the region-to-phrase InfoNCE beside CLIP's (0: none)."""
    attribute_weight: float = 0.0
    """Weight of the per-region attribute classification (shape, colour, size, texture; 0: none)."""
    position_weight: float = 0.0
    """Weight of every patch's row and column classification (where a patch is; 0: none)."""

    @property
    def uses_regions(self) -> bool:
        return self.region_weight > 0 or self.attribute_weight > 0


@dataclass
class Stage0Result:
    """A trained (or reused) stage-0 tower."""

    path: Path
    """The tower's weights (a ``CLIPVisionModel`` state dict), what presets take as ``vision_weights``."""
    key: str
    """The config hash naming the cache folder."""
    reused: bool
    """True when the cache already held this tower and nothing was trained."""
    info: dict[str, Any] = field(default_factory=dict)
    """Losses, retrieval accuracy before/after, timings (stored with the tower's settings)."""


def _settings(world_dir: str | os.PathLike, config: Stage0Config) -> dict[str, Any]:
    """Everything that determines a tower: the captions file's hash, the architecture, the config."""
    vision = demo_vision.tiny_vision_config(
        config.vision_hidden, config.vision_layers, config.image_size
    ).to_dict()
    world = Path(world_dir)
    return {
        "version": STAGE0_VERSION,
        "captions": file_sha256(world / "captions.json"),
        "scenes": file_sha256(world / "annotations" / "train.jsonl") if config.uses_regions else None,
        "vision": {k: v for k, v in sorted(vision.items()) if k not in ("transformers_version",)},
        "image_mean": demo_vision.IMAGE_MEAN,
        "image_std": demo_vision.IMAGE_STD,
        "config": asdict(config),
    }


def stage0_key(world_dir: str | os.PathLike, config: Stage0Config) -> str:
    """The cache key: a hash of the captions file, the tower architecture and the config."""
    payload = _settings(world_dir, config)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_pixels(world_dir: Path, records: list[dict], image_size: int, progress: bool) -> torch.Tensor:
    from PIL import Image
    from tqdm.auto import tqdm

    processor = demo_vision.demo_image_processor(image_size)
    batches = []
    for start in tqdm(
        range(0, len(records), 256), desc="stage 0: load images", disable=not progress, dynamic_ncols=True
    ):
        images = [
            Image.open(world_dir / record["image"]).convert("RGB") for record in records[start : start + 256]
        ]
        batches.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(batches)


def pretrain_vision_tower(
    world_dir: str | os.PathLike,
    config: Stage0Config | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Stage0Result:
    """Train (or reuse from the cache) the stage-0 tower on ``world_dir``'s captions."""
    config = config or Stage0Config()
    world = Path(world_dir)
    key = stage0_key(world, config)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    build = functools.partial(_train, world, config, key=key, root=root, progress=progress)
    cached = cached_output(root / "stage0" / key, _settings(world, config), build, what="stage-0 tower")
    return Stage0Result(cached.path / WEIGHTS_FILE, key, cached.reused, cached.info)


def _train(
    world: Path, config: Stage0Config, folder: Path, *, key: str, root: Path, progress: bool
) -> dict[str, Any]:
    """Train the tower into ``folder`` (weights and per-step log); returns its summary."""
    from safetensors.torch import save_file

    started = time.perf_counter()
    unique, text_table = caption_embeddings(world, config.text_encoder, root, progress)
    index = {text: i for i, text in enumerate(unique)}
    records = json.loads((world / "captions.json").read_text(encoding="utf-8"))
    vision_config = demo_vision.tiny_vision_config(
        config.vision_hidden, config.vision_layers, config.image_size
    )
    pixels = _load_pixels(world, records, vision_config.image_size, progress)
    caption_ids = torch.tensor([index[record["caption"]] for record in records])
    held = min(config.eval_pairs, len(records) // 5)
    train_pixels, eval_pixels = pixels[held:], pixels[:held]
    train_ids, eval_ids = caption_ids[held:], caption_ids[:held]

    side = vision_config.image_size // vision_config.patch_size  # patches per side
    regions = None
    if config.uses_regions:
        embed = functools.partial(
            text_embeddings, text_encoder=config.text_encoder, cache_dir=root, progress=progress
        )
        regions = RegionTargets.of_world(world, [record["id"] for record in records], side, held, embed)

    torch.manual_seed(config.seed)
    model = ContrastiveTower(
        vision_config,
        text_table.shape[1],
        config.init_temperature,
        regions=config.region_weight > 0,
        attributes=tuple(len(words) for words in ATTRIBUTES.values()) if config.attribute_weight > 0 else (),
        positions=side if config.position_weight > 0 else 0,
    )
    before = _held_out(model, config, eval_pixels, eval_ids, text_table, regions)
    losses = _fit(model, config, train_pixels, train_ids, text_table, progress, regions)
    after = _held_out(model, config, eval_pixels, eval_ids, text_table, regions)
    state = {k: v.detach().contiguous() for k, v in model.tower.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / LOG_FILE).write_text(
        "".join(json.dumps({"step": i + 1, "loss": x}) + "\n" for i, x in enumerate(losses)), encoding="utf-8"
    )
    return {
        "key": key,
        "config": asdict(config),
        "world": str(world.resolve()),
        "pairs": len(records),
        "distinct_captions": len(unique),
        "held_out_pairs": held,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        **{f"{name}_before": value for name, value in before.items()},
        **{f"{name}_after": value for name, value in after.items()},
        "temperature": float(1 / model.logit_scale.detach().exp()),
        **({} if regions is None else regions.counts()),
        "seconds": time.perf_counter() - started,
    }


def _held_out(
    model: ContrastiveTower,
    config: Stage0Config,
    pixels: torch.Tensor,
    caption_ids: torch.Tensor,
    text_table: torch.Tensor,
    regions: RegionTargets | None,
) -> dict[str, Any]:
    """Held-out metrics (%): caption retrieval top-1 and those of the heads the tower trains with."""
    out: dict[str, Any] = {"retrieval_top1": retrieval_accuracy(model, pixels, caption_ids, text_table)}
    if regions is not None:
        out["region_accuracy"] = regions.accuracy(model, pixels)
    if config.position_weight > 0:
        out["position_accuracy"] = position_accuracy(model, pixels)
    return out


def _fit(
    model: ContrastiveTower,
    config: Stage0Config,
    train_pixels: torch.Tensor,
    train_ids: torch.Tensor,
    text_table: torch.Tensor,
    progress: bool,
    regions: RegionTargets | None = None,
) -> list[float]:
    """``config.steps`` contrastive steps over shuffled batches of the training pairs; the losses
    (CLIP's plus ``region_weight`` x the regions')."""
    from tqdm.auto import tqdm

    optimizer, scheduler = cosine_adamw(
        model, config.lr, config.weight_decay, config.warmup_ratio, config.steps
    )
    generator = torch.Generator().manual_seed(config.seed)
    batch = min(config.batch_size, len(train_pixels))
    order = torch.randperm(len(train_pixels), generator=generator)
    cursor = 0
    losses: list[float] = []
    bar = tqdm(total=config.steps, desc="stage 0: contrastive", disable=not progress, dynamic_ncols=True)
    model.train()
    for _step in range(config.steps):
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(train_pixels), generator=generator), 0
        rows = order[cursor : cursor + batch]
        cursor += batch
        ids = train_ids[rows]
        image, patches = model.encode(train_pixels[rows])
        loss = contrastive_loss(image, text_table[ids], ids, model.logit_scale)
        if regions is not None:
            where, targets = batch_regions(regions.train, rows, len(train_pixels))
            features = patches[where[:, 0], where[:, 1]]
            if config.region_weight > 0:
                phrase_ids = targets[:, 0]
                loss = loss + config.region_weight * contrastive_loss(
                    model.region_embeddings(features),
                    regions.embeddings[phrase_ids],
                    phrase_ids,
                    model.region_logit_scale,
                )
            if config.attribute_weight > 0:
                loss = loss + config.attribute_weight * attribute_loss(
                    model.attribute_logits(features), targets[:, 1:]
                )
        if config.position_weight > 0:
            loss = loss + config.position_weight * position_loss(model, patches)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            for scale in (model.logit_scale, model.region_logit_scale):
                if scale is not None:
                    scale.clamp_(0.0, math.log(config.max_logit_scale))
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", temp=f"{float(1 / model.logit_scale.detach().exp()):.3f}")
    bar.close()
    return losses


def read_losses(result: Stage0Result) -> list[float]:
    """The per-step contrastive losses of a stage-0 run (from its ``log.jsonl``)."""
    path = result.path.parent / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line)["loss"] for line in path.read_text(encoding="utf-8").splitlines() if line]
