"""Stage 0's pieces: frozen sentence embeddings, the ViT with its heads, CLIP's loss and retrieval accuracy.

Two alignments share the tower: the image's pooled output against its caption (CLIP), and, when
``regions`` is on, the patch under each object against that object's own phrase (region-text
alignment, as RegionCLIP and GLIP add to CLIP): the feature LLaVA feeds the LLM
(:data:`REGION_LAYER`) must then tell apart two objects that differ in one word, which a pooled
caption of several objects does not ask.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from covft.models.text_encoder import load_text_encoder
from covft.recipes.demo.cache import default_cache_dir
from covft.utils import atomic_directory


def sentence_embeddings(
    texts: list[str], text_encoder: str = "minilm", batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings of ``texts`` from the frozen encoder."""
    from tqdm.auto import tqdm

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


REGION_LAYER = -2
"""The hidden state whose patches are aligned with object phrases: LLaVA's ``vision_feature_layer``."""


class ContrastiveTower(nn.Module):
    """The ViT, a linear head into the text space and CLIP's learnable logit scale; with
    ``regions``, a second head and scale for patch-to-phrase alignment; with ``attributes`` (the
    number of words of each attribute), a linear classifier per attribute on the same patch; with
    ``positions`` (the patch grid's side), a classifier of every patch's row and column."""

    def __init__(
        self,
        vision_config,
        text_dim: int,
        init_temperature: float,
        regions: bool = False,
        attributes: tuple[int, ...] = (),
        positions: int = 0,
    ) -> None:
        super().__init__()
        from transformers import CLIPVisionModel

        self.tower = CLIPVisionModel(vision_config)
        self.head = nn.Linear(vision_config.hidden_size, text_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.region_head = nn.Linear(vision_config.hidden_size, text_dim, bias=False) if regions else None
        self.region_logit_scale = (
            nn.Parameter(torch.tensor(math.log(1.0 / init_temperature))) if regions else None
        )
        self.attributes = tuple(attributes)
        self.attribute_head = nn.Linear(vision_config.hidden_size, sum(attributes)) if attributes else None
        self.positions = positions
        self.position_head = nn.Linear(vision_config.hidden_size, 2 * positions) if positions else None

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings in the text space."""
        pooled = self.tower(pixel_values=pixel_values).pooler_output
        return F.normalize(self.head(pooled), dim=-1)

    def encode(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embeddings, patches): every patch's hidden state in :data:`REGION_LAYER`, CLS
        excluded, ``(batch, patches, hidden)`` in row-major order: the features of
        :meth:`region_embeddings`, :meth:`attribute_logits` and :func:`position_logits`."""
        out = self.tower(pixel_values=pixel_values, output_hidden_states=True)
        return F.normalize(self.head(out.pooler_output), dim=-1), out.hidden_states[REGION_LAYER][:, 1:]

    def region_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised region embeddings in the text space."""
        if self.region_head is None:
            raise ValueError("this ContrastiveTower was built without regions=True")
        return F.normalize(self.region_head(features), dim=-1)

    def attribute_logits(self, features: torch.Tensor) -> list[torch.Tensor]:
        """One ``(n, words)`` logit block per attribute."""
        if self.attribute_head is None:
            raise ValueError("this ContrastiveTower was built without attributes")
        return list(self.attribute_head(features).split(self.attributes, dim=-1))


def position_logits(
    model: ContrastiveTower, patches: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((row logits, rows), (column logits, columns)) of every patch of ``patches`` ``(batch, n, hidden)``."""
    if model.position_head is None:
        raise ValueError("this ContrastiveTower was built without positions")
    side = model.positions
    index = torch.arange(patches.shape[1], device=patches.device).repeat(patches.shape[0])
    rows, cols = model.position_head(patches.reshape(-1, patches.shape[-1])).split(side, dim=-1)
    return (rows, index // side), (cols, index % side)


def position_loss(model: ContrastiveTower, patches: torch.Tensor) -> torch.Tensor:
    """Mean of the row and the column cross-entropies over every patch."""
    return torch.stack(
        [F.cross_entropy(logits, truth) for logits, truth in position_logits(model, patches)]
    ).mean()


def attribute_loss(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of the cross-entropy (labels ``-100``, a region without the attribute, ignored)."""
    losses = [
        F.cross_entropy(block, labels[:, k], ignore_index=-100, reduction="sum")
        / (labels[:, k] >= 0).sum().clamp_min(1)
        for k, block in enumerate(logits)
    ]
    return torch.stack(losses).mean()


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


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block, back in the mode it was in after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _top1(queries: torch.Tensor, ids: torch.Tensor, table: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``queries`` against the rows of ``table`` named by the distinct ``ids``."""
    candidates = torch.unique(ids)
    best = (queries @ table[candidates].t()).argmax(-1)
    return 100.0 * float((candidates[best] == ids).float().mean())


@torch.no_grad()
def region_features(model: ContrastiveTower, pixels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The regions' features in eval mode (one tower pass for every held-out metric)."""
    with evaluating(model):
        patches = model.encode(pixels)[1]
        return patches[regions[:, 0], regions[:, 1]]


@torch.no_grad()
def region_accuracy(
    model: ContrastiveTower, features: torch.Tensor, phrase_ids: torch.Tensor, phrases: torch.Tensor
) -> float:
    """Region-to-phrase top-1 accuracy (%) among the distinct phrases of the given regions."""
    if len(features) == 0:
        return float("nan")
    return _top1(model.region_embeddings(features), phrase_ids, phrases)


@torch.no_grad()
def attribute_accuracy(model: ContrastiveTower, features: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Per attribute, the classifier's accuracy (%) on the regions that have the attribute."""
    out = []
    for k, block in enumerate(model.attribute_logits(features)):
        known = labels[:, k] >= 0
        out.append(
            100.0 * float((block[known].argmax(-1) == labels[known, k]).float().mean())
            if known.any()
            else float("nan")
        )
    return out


@torch.no_grad()
def position_accuracy(model: ContrastiveTower, pixels: torch.Tensor) -> float:
    """Held-out accuracy (%) of the position head, rows and columns together."""
    with evaluating(model):
        patches = torch.cat([model.encode(pixels[i : i + 256])[1] for i in range(0, len(pixels), 256)])
        pairs = position_logits(model, patches)
    return 100.0 * float(torch.cat([(logits.argmax(-1) == truth).float() for logits, truth in pairs]).mean())


@torch.no_grad()
def retrieval_accuracy(
    model: ContrastiveTower, pixels: torch.Tensor, caption_ids: torch.Tensor, texts: torch.Tensor
) -> float:
    """Image-to-caption top-1 accuracy (%) among the distinct captions of the given pairs."""
    if len(pixels) == 0:
        return float("nan")
    with evaluating(model):
        images = torch.cat([model(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
    return _top1(images, caption_ids, texts)


def cosine_adamw(
    model: nn.Module, lr: float, weight_decay: float, warmup_ratio: float, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases, norms and logit scales) and linear warmup then cosine decay to 0."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, math.ceil(warmup_ratio * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def caption_embeddings(
    world_dir: str | os.PathLike,
    text_encoder: str = "minilm",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[list[str], torch.Tensor]:
    """The distinct captions of a world and their embeddings, computed once and cached."""
    records = json.loads((Path(world_dir) / "captions.json").read_text(encoding="utf-8"))
    unique = sorted({record["caption"] for record in records})
    return unique, text_embeddings(unique, text_encoder=text_encoder, cache_dir=cache_dir, progress=progress)


def text_embeddings(
    unique: list[str], *, text_encoder: str, cache_dir: str | os.PathLike | None, progress: bool
) -> torch.Tensor:
    """The embeddings of distinct texts, computed once and cached by their hash."""
    from safetensors.torch import load_file, save_file

    digest = hashlib.sha256(text_encoder.encode() + b"\0" + "\0".join(unique).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "stage0" / "text" / digest
    if not (folder / "embeddings.safetensors").is_file():
        embeddings = sentence_embeddings(unique, text_encoder, progress=progress)
        with atomic_directory(folder, keep_existing=True) as tmp:  # a concurrent run that finished first wins
            save_file({"embeddings": embeddings.contiguous()}, str(tmp / "embeddings.safetensors"))
    return load_file(str(folder / "embeddings.safetensors"))["embeddings"]
