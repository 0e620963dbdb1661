"""What export needs to know per model family: the processor that makes its directory usable.

The weights and config come from the wrapped transformers model's own ``save_pretrained``; what a
family adds is the processor (tokenizer + image processor + how many image tokens one image
becomes) that ``AutoProcessor.from_pretrained`` reloads. A new family registers one function
here, keyed by its config's ``model_type``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from covft.models.towers import has_cls_token


def llava_processor(model) -> Any:
    """``LlavaProcessor``: expands ``<image>`` to as many tokens as covft's collator does."""
    from transformers import LlavaProcessor

    config = model.config
    return LlavaProcessor(
        image_processor=model.image_processor,
        tokenizer=model.tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1 if has_cls_token(model.vision_tower) else 0,
    )


def own_processor(model) -> Any:
    """The family's multimodal processor covft already holds (LLaVA-NeXT, LLaVA-OneVision)."""
    processor = model.processor
    if processor is None or getattr(processor, "video_processor", False) is None:
        raise NotImplementedError(
            f"exporting this {model.family.display} model needs its complete transformers processor "
            "(LLaVA-OneVision's includes a video processor, which needs torchvision); covft holds an "
            "image-only one. Install torchvision and load the base model from its Hugging Face "
            "directory (AutoProcessor), or save the processor yourself beside the exported weights"
        )
    return processor


PROCESSORS: dict[str, Callable[[Any], Any]] = {
    "llava": llava_processor,
    "llava_next": own_processor,
    "llava_onevision": own_processor,
}


def processor_for(model) -> Any:
    """The stock processor of ``model``'s family."""
    model_type = model.config.model_type
    if model_type not in PROCESSORS:
        raise NotImplementedError(
            f"export of {model_type!r} models is not implemented; covft exports {', '.join(PROCESSORS)}"
        )
    return PROCESSORS[model_type](model)
