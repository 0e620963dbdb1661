"""Turn LLaVA-format samples into model inputs: tokens, labels, pixels and the context text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from covft.data.contract import IMAGE_PLACEHOLDER, image_problem, router_context
from covft.data.errors import BadSampleError
from covft.data.images import to_rgb
from covft.data.templates import render

IGNORE_INDEX = -100


def _sample_id(sample: dict, index: int) -> str:
    return str(sample.get("id", f"#{index}"))


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA's ``pad`` aspect ratio: pad the shorter side, centred, with ``background``."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_colour(image_processor) -> tuple[int, int, int]:
    """The image processor's normalisation mean as an 8-bit RGB colour, truncated as LLaVA's
    ``int(x * 255)`` (CLIP's mean gives (122, 116, 104); rounding would give (123, 117, 104))."""
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    return tuple(int(255 * float(m)) for m in mean)  # type: ignore[return-value]


class ImageInputs(Protocol):
    """How a family turns images into model inputs (:meth:`covft.models.families.Family.image_inputs`).

    Called with the prepared images of each sample that has any, it returns the vision tensors of
    the batch (``pixel_values`` and the family's keys, e.g. ``image_sizes``) and how many LLM
    positions each image takes; :meth:`span` gives the token ids written for one image.
    """

    def __call__(self, images: list[list[Image.Image]]) -> tuple[dict[str, torch.Tensor], list[int]]: ...

    def span(self, count: int) -> list[int]: ...


def sample_images(sample: dict) -> list[Any]:
    """A sample's images as a list: its ``image`` (one image, a list of images, or ``None``)."""
    image = sample.get("image")
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]


@dataclass
class Collator:
    """Builds a batch for :class:`covft.models.CovftModel`.

    Output keys: ``input_ids``, ``attention_mask``, ``labels`` (unless ``for_generation``),
    ``pixel_values`` (only the samples that have an image, in batch order; with ``images`` given,
    whatever the family's processor returns beside it) and, when the model's strategy needs the
    instruction, ``context_input_ids`` / ``context_attention_mask``: one row per sample that has
    images, aligned with ``pixel_values``. ``images_per_sample`` (those samples' image counts) is
    added when a sample has several images. The context text is
    :func:`covft.data.contract.router_context` of the sample (its ``context`` when it has one, an
    evaluation item's router text as its protocol built it, else its human turns).

    Without ``images`` every image takes ``num_image_tokens`` positions (LLaVA-1.5); with it, the
    family says how many (anyres tiles, packed patches).
    """

    tokenizer: Any
    image_processor: Any
    image_token_id: int
    num_image_tokens: int
    template: str = "vicuna_v1"
    max_length: int = 2048
    context_tokenizer: Any = None
    context_max_length: int = 512
    image_aspect_ratio: str = "pad"
    images: ImageInputs | None = None

    def __call__(
        self,
        samples: Sequence[dict],
        *,
        template: str | None = None,
        max_length: int | None = None,
        for_generation: bool = False,
    ) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("collate() got an empty list of samples")
        template = template or self.template
        max_length = max_length or self.max_length
        per_sample = [
            [self._prepare_image(image, _sample_id(sample, i)) for image in sample_images(sample)]
            for i, sample in enumerate(samples)
        ]
        with_images = [images for images in per_sample if images]
        vision, counts = self._vision(with_images)
        sequences, labels, contexts = [], [], []
        for index, sample in enumerate(samples):
            sample_id = _sample_id(sample, index)
            spans = [self._span(counts.pop(0)) for _ in per_sample[index]]
            ids, target = self._tokenize(sample, template, for_generation, sample_id, spans)
            ids, target = self._fit(ids, target, max_length, for_generation, sample_id, spans)
            sequences.append(ids)
            labels.append(target)
            if per_sample[index]:
                contexts.append(router_context(sample))
        batch = self._pad(sequences, labels, left=for_generation)
        if for_generation:
            del batch["labels"]
        if with_images:
            batch.update(vision)
            if any(len(images) != 1 for images in with_images):
                batch["images_per_sample"] = torch.tensor([len(images) for images in with_images])
            if self.context_tokenizer is not None:
                encoded = self.context_tokenizer(
                    contexts,
                    padding=True,
                    truncation=True,
                    max_length=self.context_max_length,
                    return_tensors="pt",
                )
                batch["context_input_ids"] = encoded["input_ids"]
                if not bool(encoded["attention_mask"].all()):  # no mask: no device sync in the encoder
                    batch["context_attention_mask"] = encoded["attention_mask"]
        return batch

    def _vision(self, with_images: list[list[Image.Image]]) -> tuple[dict[str, torch.Tensor], list[int]]:
        if not with_images:
            return {}, []
        if self.images is not None:
            vision, counts = self.images(with_images)
            return vision, list(counts)
        flat = [image for images in with_images for image in images]
        pixels = self.image_processor(images=flat, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels}, [self.num_image_tokens] * len(flat)

    def _span(self, count: int) -> list[int]:
        if self.images is not None:
            return self.images.span(count)
        return [self.image_token_id] * count

    def _fit(self, ids, target, max_length: int, for_generation: bool, sample_id: str, spans: list):
        """Truncate to ``max_length`` where that is harmless; say why and what to do where not.

        A cut through any token an image's ``spans`` write (Qwen-VL's start and end markers too)
        would leave the model an image it cannot read."""
        if len(ids) > max_length:
            image_ids = {self.image_token_id, *(t for span in spans for t in span)}
            if not image_ids.isdisjoint(ids[max_length:]):
                raise BadSampleError(
                    f"{len(ids)} tokens exceed max_length={max_length} and truncation would cut image tokens",
                    sample_id=sample_id,
                    fix="raise max_length or shorten the conversation",
                )
            if for_generation:
                raise BadSampleError(
                    f"prompt of {len(ids)} tokens exceeds max_length={max_length}",
                    sample_id=sample_id,
                    fix="raise max_length",
                )
            ids, target = ids[:max_length], target[:max_length]
        if not for_generation and all(t == IGNORE_INDEX for t in target):
            raise BadSampleError(
                "after truncation no answer token is left to train on",
                sample_id=sample_id,
                fix="raise max_length or shorten the conversation",
            )
        return ids, target

    def _tokenize(self, sample: dict, template: str, for_generation: bool, sample_id: str, spans: list):
        conversations = sample.get("conversations")
        if not isinstance(conversations, list):
            raise BadSampleError(
                "no 'conversations' list",
                sample_id=sample_id,
                fix="give conversations as [{'from': 'human', 'value': ...}, ...]",
            )
        problem = image_problem(conversations, len(spans))
        if problem is not None:
            reason, fix = problem
            raise BadSampleError(reason, sample_id=sample_id, fix=fix)
        segments = render(
            conversations,
            template,
            eos_token=self.tokenizer.eos_token or "",
            tokenizer=self.tokenizer,
            add_generation_prompt=for_generation,
            sample_id=sample_id,
        )
        ids: list[int] = []
        target: list[int] = []
        bos = self.tokenizer.bos_token_id
        if bos is not None and template != "chat":
            ids.append(bos)
            target.append(IGNORE_INDEX)
        spans = list(spans)
        for segment in segments:
            pieces = segment.text.split(IMAGE_PLACEHOLDER)
            for k, piece in enumerate(pieces):
                if k > 0:
                    span = spans.pop(0)
                    ids.extend(span)
                    target.extend([IGNORE_INDEX] * len(span))
                if piece:
                    piece_ids = self.tokenizer(piece, add_special_tokens=False)["input_ids"]
                    ids.extend(piece_ids)
                    target.extend(piece_ids if segment.target else [IGNORE_INDEX] * len(piece_ids))
        return ids, target

    def _prepare_image(self, image: Any, sample_id: str) -> Image.Image:
        if not isinstance(image, Image.Image):
            raise BadSampleError(
                f"'image' must be a PIL image after loading, got {type(image).__name__}",
                sample_id=sample_id,
                fix="load images with covft.data.dataset",
            )
        image = to_rgb(image)
        if self.image_aspect_ratio == "pad":
            image = expand_to_square(image, mean_colour(self.image_processor))
        return image

    def _pad(
        self, sequences: list[list[int]], labels: list[list[int]], *, left: bool
    ) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        label_tensor = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
        for row, (ids, target) in enumerate(zip(sequences, labels, strict=True)):
            n = len(ids)
            span = slice(width - n, width) if left else slice(0, n)
            input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
            attention[row, span] = 1
            label_tensor[row, span] = torch.tensor(target, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_tensor}
