"""What export needs to know per model family: the processor that makes its directory usable.

The weights and config come from the wrapped transformers model's own ``save_pretrained``; what a
family adds is the processor (tokenizer + image processor + how many image tokens one image
becomes) that ``AutoProcessor.from_pretrained`` reloads. A new family registers one function
here, keyed by its config's ``model_type``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
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


class ProcessorFiles:
    """An image-only processor (built without its torchvision video processor) written as the
    files a Hugging Face directory holds: tokenizer, image processor, ``processor_config.json``
    naming the processor class with its settings. With torchvision installed, ``AutoProcessor``
    rebuilds the complete processor from them (not verified here: no torchvision)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def save_pretrained(self, path) -> None:
        from covft.models.checkpoint import processor_record

        self.processor.tokenizer.save_pretrained(str(path))
        self.processor.image_processor.save_pretrained(str(path))
        record = processor_record(self.processor)
        settings = {k: v for k, v in record["settings"].items() if k != "covft_image_only"}
        config = {"processor_class": record["class"], **settings}
        (Path(path) / "processor_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def own_processor(model) -> Any:
    """The family's multimodal processor covft holds (LLaVA-NeXT, LLaVA-OneVision, Qwen-VL); an
    image-only one is written as its parts (:class:`ProcessorFiles`)."""
    processor = model.processor
    if processor is None:
        raise ValueError(f"this {model.family.display} model has no processor to export")
    return ProcessorFiles(processor) if getattr(processor, "covft_image_only", False) else processor


PROCESSORS: dict[str, Callable[[Any], Any]] = {
    "llava": llava_processor,
    "llava_next": own_processor,
    "llava_onevision": own_processor,
    "qwen2_vl": own_processor,
    "qwen2_5_vl": own_processor,
    "qwen3_vl": own_processor,
}


def processor_for(model) -> Any:
    """The stock processor of ``model``'s family."""
    model_type = model.config.model_type
    if model_type not in PROCESSORS:
        raise NotImplementedError(
            f"export of {model_type!r} models is not implemented; covft exports {', '.join(PROCESSORS)}"
        )
    return PROCESSORS[model_type](model)
