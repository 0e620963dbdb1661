"""What the FLOP count of LLaVA (+ a strategy) depends on: :class:`FlopGeometry`, read from a built
model (:func:`geometry_of`), and LLaVA-1.5-7B's, read from the ``llava-1.5-7b`` preset."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from covft.models import build_model
from covft.models.towers import has_cls_token
from covft.strategies import apply_vft

__all__ = ["FlopGeometry", "geometry_of", "llava_15_7b_geometry"]


@dataclass(frozen=True)
class FlopGeometry:
    """Everything the FLOP count of LLaVA (+ a strategy) depends on. Per-sample token counts.

    ``llm_tokens`` is the whole training sequence (image tokens included); ``prompt_tokens`` the
    prefill of the inference measurement. ``comoe_blocks`` and ``num_experts`` describe CoVFT.
    """

    vision_layers: int
    feeding_layers: int
    vision_width: int
    vision_mlp: int
    image_size: int
    patch_size: int
    channels: int
    cls_token: bool
    image_tokens: int
    llm_layers: int
    llm_width: int
    llm_mlp: int
    llm_heads: int
    llm_kv_heads: int
    vocab: int
    text_layers: int
    text_width: int
    text_mlp: int
    text_pooler: bool
    llm_tokens: int
    prompt_tokens: int
    context_tokens: int
    comoe_blocks: int = 0
    num_experts: int = 4
    cve_heads: int = 4
    batch: int = 1
    train_llm: bool = True
    train_projector: bool = True
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def vision_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + (1 if self.cls_token else 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "vision_tokens": self.vision_tokens}


def geometry_of(
    model, *, llm_tokens: int, prompt_tokens: int, context_tokens: int, batch: int
) -> FlopGeometry:
    """The :class:`FlopGeometry` of a built :class:`~covft.models.CovftModel` (strategy applied)."""
    config = model.config
    vision, text = config.vision_config, config.text_config
    strategy = model.strategy
    encoder = model.text_encoder
    num_experts, cve_heads = 4, 4
    if model.routed_blocks:
        moe = model.encoder_layers[model.routed_blocks[0]].mlp
        num_experts = moe.num_experts
        cve_heads = moe.cve.attn.num_heads if moe.cve is not None else cve_heads
    encoder_config = encoder.model.config if encoder is not None else None
    return FlopGeometry(
        vision_layers=vision.num_hidden_layers,
        feeding_layers=model.feeding_layers,
        vision_width=vision.hidden_size,
        vision_mlp=vision.intermediate_size,
        image_size=vision.image_size,
        patch_size=vision.patch_size,
        channels=vision.num_channels,
        cls_token=has_cls_token(model.vision_tower),
        image_tokens=model.num_image_tokens,
        llm_layers=text.num_hidden_layers,
        llm_width=text.hidden_size,
        llm_mlp=text.intermediate_size,
        llm_heads=text.num_attention_heads,
        llm_kv_heads=text.num_key_value_heads,
        vocab=text.vocab_size,
        text_layers=encoder_config.num_hidden_layers if encoder_config else 0,
        text_width=encoder_config.hidden_size if encoder_config else 0,
        text_mlp=encoder_config.intermediate_size if encoder_config else 0,
        text_pooler=bool(encoder is not None and getattr(encoder.model, "pooler", None) is not None),
        llm_tokens=llm_tokens,
        prompt_tokens=prompt_tokens,
        context_tokens=context_tokens,
        comoe_blocks=len(model.routed_blocks),
        num_experts=num_experts,
        cve_heads=cve_heads,
        batch=batch,
        train_llm=strategy.options.train_llm if strategy else True,
        train_projector=strategy.options.train_projector if strategy else True,
    )


@functools.cache
def llava_15_7b_geometry() -> FlopGeometry:
    """LLaVA-1.5-7B with CoVFT's defaults, 576 image tokens and about 60 text tokens per sample (a
    typical 665K turn), batch 1: the geometry of the ``llava-1.5-7b`` preset (CLIP ViT-L/14-336,
    Vicuna-7B, bert-base-uncased), built on the meta device."""
    model = apply_vft(build_model("llava-1.5-7b", device="meta"), "covft")
    image_tokens = model.num_image_tokens
    geometry = geometry_of(
        model, llm_tokens=image_tokens + 60, prompt_tokens=image_tokens + 45, context_tokens=24, batch=1
    )
    source = "LLaVA-1.5-7B: CLIP ViT-L/14-336, Vicuna-7B, bert-base-uncased; 576 + ~60 tokens"
    return replace(geometry, notes={"source": source})
