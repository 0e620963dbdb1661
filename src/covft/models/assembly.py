"""Building a randomly initialised LLaVA from a geometry: the LLM and vision configs, the image
processor, and :func:`assemble`, which makes the model deterministically from a seed. Presets
(``covft.models.presets``, the demo's) are written with these."""

from __future__ import annotations

import torch

from covft.models.model import CovftModel

__all__ = ["assemble", "image_processor_for", "llama_config", "vision_config"]


def llama_config(
    tokenizer,
    *,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    max_positions: int,
    vocab_size: int | None = None,
    **extra,
):
    """A ``LlamaConfig`` of the given geometry, untied, with the tokenizer's special token ids.

    ``vocab_size`` defaults to the tokenizer's length; ``extra`` are further config fields.
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer) if vocab_size is None else vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def vision_config(
    kind: str, *, hidden: int, layers: int, heads: int, image_size: int, patch_size: int, intermediate: int
):
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    common = dict(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
    )
    if kind == "clip":
        return CLIPVisionConfig(**common, projection_dim=hidden, hidden_act="quick_gelu")
    if kind == "siglip":
        return SiglipVisionConfig(**common, hidden_act="gelu_pytorch_tanh")
    raise ValueError(f"vision_tower must be 'clip' or 'siglip', got {kind!r}")


def image_processor_for(kind: str, image_size: int, mean=None, std=None):
    """A PIL-backed image processor (works without torchvision)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    if kind == "clip":
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    else:
        processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    if mean is not None:
        processor.image_mean, processor.image_std = list(mean), list(std)
    return processor


def assemble(
    *,
    vision_config,
    text_config,
    tokenizer,
    image_processor,
    seed: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    text_encoder: str,
    template: str,
    base: dict,
    vision_feature_layer: int = -2,
    max_length: int = 2048,
) -> CovftModel:
    """Create a randomly initialised LLaVA from configs, deterministically from ``seed``."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    strategy = "default" if vision_config.model_type.startswith("clip") else "full"
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=strategy,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        # _from_config, not the constructor: under DeepSpeed ZeRO-3 it builds the model partitioned
        # (zero.Init) and initialises it gathered; otherwise it is the constructor, weight for weight
        llava = LlavaForConditionalGeneration._from_config(config).to(dtype)
    llava.generation_config.pad_token_id = tokenizer.pad_token_id
    llava.generation_config.eos_token_id = tokenizer.eos_token_id
    llava.generation_config.bos_token_id = tokenizer.bos_token_id
    return CovftModel(
        llava,
        tokenizer,
        image_processor,
        template=template,
        text_encoder=text_encoder,
        base=base,
        max_length=max_length,
    )
