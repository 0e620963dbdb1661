"""Stage 0's pieces: frozen sentence embeddings, the ViT with its head, CLIP's loss and retrieval accuracy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from covft.models.text_encoder import load_text_encoder


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
