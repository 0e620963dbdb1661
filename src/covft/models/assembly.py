"""Building a randomly initialised LLaVA from a geometry: the LLM and vision configs, the image
processor, and :func:`assemble`, which makes the model deterministically from a seed. Presets
(``covft.models.presets``, the demo's) are written with these."""

from __future__ import annotations

import torch

from covft.models import precision
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
    vision_config=None,
    text_config=None,
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
    family: str = "llava",
    family_config: dict | None = None,
    processor=None,
    config=None,
) -> CovftModel:
    """Create a randomly initialised model of one of covft's families, deterministically from
    ``seed``: from a vision and a text config (LLaVA families; ``family_config`` holds the family's
    own config fields, ``image_grid_pinpoints``), or from a complete model ``config``."""
    import transformers
    from transformers import CONFIG_MAPPING

    from covft.models.families import family_for_type

    kind = family_for_type(family)
    if config is None:
        strategy = "default" if vision_config.model_type.startswith("clip") else "full"
        config = CONFIG_MAPPING[kind.name](
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            projector_hidden_act="gelu",
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=strategy,
            pad_token_id=tokenizer.pad_token_id,
            **(family_config or {}),
        )
    torch.manual_seed(seed)
    with torch.device(device):
        # _from_config, not the constructor: under DeepSpeed ZeRO-3 it builds the model partitioned
        # (zero.Init) and initialises it gathered; otherwise it is the constructor, weight for weight.
        # Built in ``dtype`` (not cast afterwards): the rotary buffers stay float32, as transformers keeps them
        llava = precision.build(getattr(transformers, kind.model_class), config, dtype)
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
        processor=processor,
    )


def anyres_parts(
    family: str, kind: str, image_size: int, patch_size: int, tokenizer, pinpoints=None, mean=None, std=None
):
    """Config fields, image processor and multimodal processor of a LLaVA-NeXT / OneVision model
    whose base tile is ``image_size``: anyres grids ``pinpoints`` (default 1x2, 2x1 and 2x2 tiles;
    the released checkpoints use the same rule with 336 / 384 px tiles and up to 6x6), images
    normalised with ``mean`` / ``std`` (default: the image processor's)."""
    from transformers import LlavaNextProcessor, LlavaOnevisionProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    side = image_size
    if pinpoints is None:
        pinpoints = [[side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
    pinpoints = [list(p) for p in pinpoints]
    normalise = {} if mean is None else {"image_mean": list(mean), "image_std": list(std)}
    strategy = "default" if kind == "clip" else "full"
    if family == "llava_next":
        images = LlavaNextImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_grid_pinpoints=pinpoints,
            **normalise,
        )
        processor = LlavaNextProcessor(
            images,
            tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1 if kind == "clip" else 0,
        )
    elif family == "llava_onevision":
        images = LlavaOnevisionImageProcessorPil(
            size={"height": side, "width": side}, image_grid_pinpoints=pinpoints, **normalise
        )
        processor = image_only_processor(
            LlavaOnevisionProcessor,
            images,
            tokenizer,
            num_image_tokens=(side // patch_size) ** 2,
            vision_feature_select_strategy=strategy,
            vision_aspect_ratio="anyres_max_9",
        )
    else:
        raise ValueError(f"{family!r} is not an anyres family (llava_next, llava_onevision)")
    return {"image_grid_pinpoints": pinpoints}, images, processor


def image_only_processor(cls, image_processor, tokenizer, **attributes):
    """A multimodal processor without its video processor, for image-only use.

    LLaVA-OneVision's processor insists on a video processor, which needs torchvision; covft only
    asks a processor to prepare images and count their tokens (``replace_image_token``), which
    reads nothing else. With torchvision installed, ``AutoProcessor.from_pretrained`` gives the
    full one.
    """
    processor = cls.__new__(cls)
    processor.image_processor = image_processor
    processor.tokenizer = tokenizer
    if "video_processor" in cls.get_attributes():
        processor.video_processor = None
    processor.chat_template = None
    processor.image_token = getattr(tokenizer, "image_token", None) or "<image>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    for name, value in attributes.items():
        setattr(processor, name, value)
    processor.covft_image_only = True
    return processor


def load_processor(path, family, image_processor, tokenizer):
    """A checkpoint directory's multimodal processor: ``AutoProcessor``'s, or, where that cannot
    be built (Qwen's and LLaVA-OneVision's insist on a video processor, which needs torchvision),
    the family's processor class without it, with the settings of ``processor_config.json``."""
    import json
    from pathlib import Path

    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(str(path))
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    file = Path(path) / "processor_config.json"
    settings = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    name = settings.pop("processor_class", None) or family.model_class.replace(
        "ForConditionalGeneration", "Processor"
    )
    if family.packed and not getattr(tokenizer, "image_token", None):
        settings.setdefault("image_token", "<|image_pad|>")  # Qwen processors' default
    settings = {k: v for k, v in settings.items() if isinstance(v, (bool, int, float, str, list))}
    processor = image_only_processor(getattr(transformers, name), image_processor, tokenizer, **settings)
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    return processor
