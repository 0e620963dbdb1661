"""Stage 0: a CLIP-like starting point for the demo's vision tower.

LLaVA starts from CLIP: a vision tower that is already semantic and knows nothing about
instructions. The demo has no CLIP at its scale, so it makes one: the small ViT of the demo
presets is trained contrastively on the world's captions (``captions.json``) against **frozen**
sentence embeddings of those captions (the packaged all-MiniLM-L6-v2, mean-pooled and
L2-normalised, each caption embedded once and cached). A learned linear head maps the ViT's
pooled output into the text-embedding space; the loss is CLIP's symmetric InfoNCE with a
learnable temperature. Identical captions of different images count as positives of each other
(soft targets), so the loss never pushes apart two images with the same description.

The trained tower is cached by a hash of everything that determines it (world captions, tower
architecture, schedule, seed, text encoder) under ``<cache_dir>/stage0/<hash>/``; a later call
with the same inputs returns at once, a changed input trains a new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import covft.recipes.demo.presets as demo_presets
from covft.models.checkpoint import file_sha256

STAGE0_VERSION = "1"
WEIGHTS_FILE = "vision_tower.safetensors"
INFO_FILE = "stage0.json"
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
    """Losses, retrieval accuracy before/after, timings (the content of ``stage0.json``)."""


def stage0_key(world_dir: str | os.PathLike, config: Stage0Config) -> str:
    """The cache key: a hash of the captions file, the tower architecture and the config."""
    vision = demo_presets.tiny_vision_config(
        config.vision_hidden, config.vision_layers, config.image_size
    ).to_dict()
    payload = {
        "version": STAGE0_VERSION,
        "captions": file_sha256(Path(world_dir) / "captions.json"),
        "vision": {k: v for k, v in sorted(vision.items()) if k not in ("transformers_version",)},
        "image_mean": demo_presets.IMAGE_MEAN,
        "image_std": demo_presets.IMAGE_STD,
        "config": asdict(config),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sentence_embeddings(
    texts: list[str], text_encoder: str = "minilm", batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings of ``texts`` from the frozen encoder."""
    from tqdm.auto import tqdm

    from covft.models.text_encoder import load_text_encoder

    encoder = load_text_encoder(text_encoder)
    chunks = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="stage 0: embed captions", disable=not progress, dynamic_ncols=True):
        encoded = encoder.tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt"
        )
        _, hidden = encoder(encoded["input_ids"], encoded["attention_mask"])
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        chunks.append(F.normalize(pooled, dim=-1))
    return torch.cat(chunks) if chunks else torch.empty(0, encoder.hidden_size)


def caption_embeddings(
    world_dir: str | os.PathLike,
    text_encoder: str = "minilm",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[list[str], torch.Tensor]:
    """The distinct captions of a world and their embeddings, computed once and cached."""
    from safetensors.torch import load_file, save_file

    records = json.loads((Path(world_dir) / "captions.json").read_text(encoding="utf-8"))
    unique = sorted({record["caption"] for record in records})
    digest = hashlib.sha256(text_encoder.encode() + b"\0" + "\0".join(unique).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else demo_presets.default_cache_dir()
    path = root / "stage0" / "text" / f"{digest}.safetensors"
    if path.is_file():
        return unique, load_file(str(path))["embeddings"]
    embeddings = sentence_embeddings(unique, text_encoder, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_file({"embeddings": embeddings.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return unique, embeddings


class ContrastiveTower(nn.Module):
    """The ViT, a linear head into the text space and CLIP's learnable logit scale."""

    def __init__(self, vision_config, text_dim: int, init_temperature: float) -> None:
        super().__init__()
        from transformers import CLIPVisionModel

        self.tower = CLIPVisionModel(vision_config)
        self.head = nn.Linear(vision_config.hidden_size, text_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings in the text space."""
        pooled = self.tower(pixel_values=pixel_values).pooler_output
        return F.normalize(self.head(pooled), dim=-1)


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, caption_ids: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE; pairs with the same caption are all positives (uniform soft targets)."""
    logits = logit_scale.exp() * image @ text.t()
    same = (caption_ids[:, None] == caption_ids[None, :]).to(logits.dtype)
    targets = same / same.sum(-1, keepdim=True)
    image_to_text = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    text_to_image = -(targets * logits.t().log_softmax(-1)).sum(-1).mean()
    return 0.5 * (image_to_text + text_to_image)


@torch.no_grad()
def retrieval_accuracy(
    model: ContrastiveTower, pixels: torch.Tensor, caption_ids: torch.Tensor, texts: torch.Tensor
) -> float:
    """Image-to-caption top-1 accuracy (%) among the distinct captions of the given pairs."""
    if len(pixels) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    candidates = torch.unique(caption_ids)
    images = torch.cat([model(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    best = (images @ texts[candidates].t()).argmax(-1)
    model.train(was_training)
    return 100.0 * float((candidates[best] == caption_ids).float().mean())


def _load_pixels(world_dir: Path, records: list[dict], image_size: int, progress: bool) -> torch.Tensor:
    from PIL import Image
    from tqdm.auto import tqdm

    processor = demo_presets.demo_image_processor(image_size)
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
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    config = config or Stage0Config()
    world = Path(world_dir)
    key = stage0_key(world, config)
    root = Path(cache_dir) if cache_dir is not None else demo_presets.default_cache_dir()
    target = root / "stage0" / key
    if (target / WEIGHTS_FILE).is_file() and (target / INFO_FILE).is_file():
        info = json.loads((target / INFO_FILE).read_text(encoding="utf-8"))
        return Stage0Result(target / WEIGHTS_FILE, key, True, info)

    started = time.perf_counter()
    unique, text_table = caption_embeddings(world, config.text_encoder, root, progress)
    index = {text: i for i, text in enumerate(unique)}
    records = json.loads((world / "captions.json").read_text(encoding="utf-8"))
    vision_config = demo_presets.tiny_vision_config(
        config.vision_hidden, config.vision_layers, config.image_size
    )
    pixels = _load_pixels(world, records, vision_config.image_size, progress)
    caption_ids = torch.tensor([index[record["caption"]] for record in records])
    held = min(config.eval_pairs, len(records) // 5)
    train_pixels, eval_pixels = pixels[held:], pixels[:held]
    train_ids, eval_ids = caption_ids[held:], caption_ids[:held]

    torch.manual_seed(config.seed)
    model = ContrastiveTower(vision_config, text_table.shape[1], config.init_temperature)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "logit_scale"]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    warmup = max(1, math.ceil(config.warmup_ratio * config.steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, config.steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    before = retrieval_accuracy(model, eval_pixels, eval_ids, text_table)
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
        loss = contrastive_loss(model(train_pixels[rows]), text_table[ids], ids, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(config.max_logit_scale))
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", temp=f"{float(1 / model.logit_scale.detach().exp()):.3f}")
    bar.close()
    after = retrieval_accuracy(model, eval_pixels, eval_ids, text_table)
    info = {
        "key": key,
        "config": asdict(config),
        "world": str(world.resolve()),
        "pairs": len(records),
        "distinct_captions": len(unique),
        "held_out_pairs": held,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "retrieval_top1_before": before,
        "retrieval_top1_after": after,
        "temperature": float(1 / model.logit_scale.detach().exp()),
        "seconds": time.perf_counter() - started,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.tower.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / LOG_FILE).write_text(
            "".join(json.dumps({"step": i + 1, "loss": x}) + "\n" for i, x in enumerate(losses)),
            encoding="utf-8",
        )
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Stage0Result(target / WEIGHTS_FILE, key, False, info)


def read_losses(result: Stage0Result) -> list[float]:
    """The per-step contrastive losses of a stage-0 run (from its ``log.jsonl``)."""
    path = result.path.parent / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line)["loss"] for line in path.read_text(encoding="utf-8").splitlines() if line]
