"""Model families: where each transformers multimodal class keeps its parts, and how its images map
to tower rows.

A :class:`Family` is data plus a few small functions. Everything in covft that needs to know a
path (the tower, its blocks, the projector), an attention or MLP layout, or how many tower rows an
image becomes asks the model's family (``CovftModel.family``) instead of assuming LLaVA-1.5.
Adding a family means adding one :class:`Family` here (and tiny configs for its tests), not
touching the strategies.

Routing is per *sample* (method.md 2.3): every tower row (an image, an anyres tile) or packed
token of one sample shares that sample's context. :func:`owner` builds the row -> sample map the
context-aware modules read (``ContextState.owner``); for one image per sample and one row per
image it is ``None``, today's LLaVA-1.5 path, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "FAMILIES",
    "Family",
    "ProcessorImages",
    "add_token_types",
    "family_of",
    "family_for_type",
    "owner",
]


def _llava_feeding(llava: nn.Module, depth: int) -> int:
    """Blocks whose output reaches the LLM given ``vision_feature_layer``: ``hidden_states[k]`` is
    block ``k - 1``'s output (index 0 is the embeddings), so -2 on 24 blocks feeds 0..22."""
    feature_layer = llava.config.vision_feature_layer
    indices = feature_layer if isinstance(feature_layer, (list, tuple)) else [feature_layer]
    resolved = [i if i >= 0 else depth + 1 + i for i in indices]
    if any(not 0 <= i <= depth for i in resolved):
        raise ValueError(f"vision_feature_layer={feature_layer} is out of range for {depth} blocks")
    return max(resolved)


def _every_block(llava: nn.Module, depth: int) -> int:
    """Towers whose merger reads the last block: every block feeds the LLM."""
    return depth


def _one_row_per_image(llava: nn.Module, batch: Mapping, counts: torch.Tensor) -> torch.Tensor:
    return torch.ones(int(counts.sum()), dtype=torch.long)


def _anyres_rows(llava: nn.Module, batch: Mapping, counts: torch.Tensor) -> torch.Tensor:
    """Tiles per image, with transformers' own count (LLaVA-NeXT's ``get_image_features``)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    config = llava.config
    sizes = batch["image_sizes"]
    tiles = [
        image_size_to_num_patches(
            image_size=size,
            grid_pinpoints=config.image_grid_pinpoints,
            patch_size=config.vision_config.image_size,
        )
        for size in sizes
    ]
    return torch.tensor(tiles, dtype=torch.long)


def _onevision_rows(llava: nn.Module, batch: Mapping, counts: torch.Tensor) -> torch.Tensor:
    """LLaVA-OneVision tiles an image only when its sample has one image (``need_patching``)."""
    tiles = _anyres_rows(llava, batch, counts)
    alone = torch.repeat_interleave(counts == 1, counts)
    return torch.where(alone, tiles, torch.ones_like(tiles))


def _grid_rows(llava: nn.Module, batch: Mapping, counts: torch.Tensor) -> torch.Tensor:
    """Qwen towers: one packed token per patch, ``t * h * w`` per image."""
    return batch["image_grid_thw"].prod(-1).to(torch.long)


@dataclass(frozen=True)
class Family:
    """Where a transformers multimodal class keeps its parts (names relative to the HF model).

    Attributes:
        name: covft's name, also the ``config.json`` ``model_type``.
        display: the family's usual name.
        model_class: the transformers class (``getattr(transformers, model_class)``).
        tower: the vision tower's module path.
        projector: module paths of the projector part (trained with ``train_projector``, the
            ``projector`` learning rate); LLaVA-NeXT/OneVision's ``image_newline`` lives in LLM
            space and is learned with the projector (ours).
        attention: the attribute of a block that holds its self-attention.
        attention_linears: the attention's linear layers (LoRA's default targets).
        block_norms: a block's two LayerNorms (CoVFT trains them).
        packed: the tower works on packed ``[T, d]`` tokens (Qwen), not ``[rows, N, d]``.
        multi_image: whether a sample may hold several images.
        feeding: ``(llava, depth) -> blocks that reach the LLM``.
        rows: ``(llava, batch, images per sample) -> tower rows (or packed tokens) per image``.
        image_keys: batch keys besides ``pixel_values`` that describe the images.
        off_path: tower parameter name fragments that never reach the LLM.
        nested_images: the image processor takes one list of images per sample (it decides per
            sample, as LLaVA-OneVision's tiling does).
        image_span: tokens written before and after an image's placeholder run (Qwen's
            ``<|vision_start|>`` / ``<|vision_end|>``).
        aspect_ratio: the collator's image preparation: ``pad`` (LLaVA-1.5's square padding) or
            ``anyres`` (images go to the processor as they are).
        token_types: the model reads ``mm_token_type_ids`` (1 at image positions) to place its
            multimodal rotary positions (Qwen's mrope); :class:`CovftModel` derives them from
            ``input_ids``.
    """

    name: str
    display: str
    model_class: str
    tower: str = "model.vision_tower"
    projector: tuple[str, ...] = ("model.multi_modal_projector",)
    attention: str = "self_attn"
    attention_linears: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
    block_norms: tuple[str, ...] = ("layer_norm1", "layer_norm2")
    packed: bool = False
    multi_image: bool = True
    feeding: Callable[[nn.Module, int], int] = _llava_feeding
    rows: Callable[[nn.Module, Mapping, torch.Tensor], torch.Tensor] = _one_row_per_image
    image_keys: tuple[str, ...] = ()
    off_path: tuple[str, ...] = ("post_layernorm", "head.")
    nested_images: bool = False
    image_span: tuple[str, str] = ("", "")
    aspect_ratio: str = "anyres"
    token_types: bool = False
    notes: dict = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        """The tower's parameter prefix in ``CovftModel.named_parameters()``."""
        return f"llava.{self.tower}."

    def projector_prefixes(self) -> tuple[str, ...]:
        return tuple(f"llava.{p}" for p in self.projector)

    def module(self, llava: nn.Module, path: str) -> nn.Module:
        return llava.get_submodule(path)

    def image_inputs(self, processor: Any) -> ProcessorImages:
        """The collator's :class:`~covft.data.collator.ImageInputs` for this family's processor."""
        tokenizer = processor.tokenizer
        around = [tokenizer.convert_tokens_to_ids(t) if t else None for t in self.image_span]
        return ProcessorImages(
            processor,
            nested=self.nested_images,
            prefix=() if around[0] is None else (around[0],),
            suffix=() if around[1] is None else (around[1],),
        )

    def num_images(self, batch: Mapping) -> int:
        if self.packed:
            return int(batch["image_grid_thw"].shape[0])
        return int(batch["pixel_values"].shape[0])


@dataclass
class ProcessorImages:
    """Images through a transformers multimodal processor: its image processor makes the tensors,
    its ``replace_image_token`` says how many positions each image takes (transformers' own count,
    never re-derived here)."""

    processor: Any
    nested: bool = False
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()

    def __call__(self, images: list[list[Any]]) -> tuple[dict[str, torch.Tensor], list[int]]:
        flat = [image for sample in images for image in sample]
        arg = images if self.nested else flat
        out = self.processor.image_processor(images=arg, return_tensors="pt")
        token = self.processor.image_token
        counts = [len(self.processor.replace_image_token(out, i)) // len(token) for i in range(len(flat))]
        return {k: torch.as_tensor(v) for k, v in out.items()}, counts

    def span(self, count: int) -> list[int]:
        return [*self.prefix, *[self.processor.image_token_id] * count, *self.suffix]


LLAVA = Family("llava", "LLaVA-1.5", "LlavaForConditionalGeneration", aspect_ratio="pad")
LLAVA_NEXT = Family(
    "llava_next",
    "LLaVA-NeXT",
    "LlavaNextForConditionalGeneration",
    projector=("model.multi_modal_projector", "model.image_newline"),
    rows=_anyres_rows,
    image_keys=("image_sizes",),
)
LLAVA_ONEVISION = Family(
    "llava_onevision",
    "LLaVA-OneVision",
    "LlavaOnevisionForConditionalGeneration",
    projector=("model.multi_modal_projector", "model.image_newline"),
    rows=_onevision_rows,
    image_keys=("image_sizes", "batch_num_images"),
    nested_images=True,
)

_QWEN = dict(  # packed towers read through a merger after the last block (plan section 1)
    tower="model.visual",
    projector=("model.visual.merger",),
    attention="attn",
    attention_linears=("qkv", "proj"),
    block_norms=("norm1", "norm2"),
    packed=True,
    feeding=_every_block,
    rows=_grid_rows,
    image_keys=("image_grid_thw",),
    off_path=(),
    image_span=("<|vision_start|>", "<|vision_end|>"),
    token_types=True,
)
QWEN2_VL = Family("qwen2_vl", "Qwen2-VL", "Qwen2VLForConditionalGeneration", **_QWEN)
QWEN2_5_VL = Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", **_QWEN)
QWEN3_VL = Family(
    "qwen3_vl",
    "Qwen3-VL",
    "Qwen3VLForConditionalGeneration",
    # the deepstack mergers map earlier blocks into LLM space, as the main merger does the last
    **{**_QWEN, "projector": ("model.visual.merger", "model.visual.deepstack_merger_list")},
)

FAMILIES: dict[str, Family] = {
    f.name: f for f in (LLAVA, LLAVA_NEXT, LLAVA_ONEVISION, QWEN2_VL, QWEN2_5_VL, QWEN3_VL)
}
"""Supported families by ``model_type``."""


def family_for_type(model_type: str | None, where: str = "this model") -> Family:
    """The family of a ``config.json`` ``model_type``; a clear error for any other."""
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    raise ValueError(
        f"{where} has model_type {model_type!r}, not one of covft's families "
        f"({', '.join(FAMILIES)}); see docs/families.md"
    )


def family_of(llava: nn.Module) -> Family:
    """The family of a transformers model, from its config's ``model_type``."""
    return family_for_type(getattr(llava.config, "model_type", None), type(llava).__name__)


def owner(
    family: Family, llava: nn.Module, batch: Mapping, images_per_sample: torch.Tensor | None
) -> torch.Tensor | None:
    """Tower row (or packed token) -> sample index, or ``None`` when rows are samples already.

    ``images_per_sample`` counts the images of each sample that has any (``None``: one each).
    """
    images = family.num_images(batch)
    counts = (
        torch.ones(images, dtype=torch.long)
        if images_per_sample is None
        else images_per_sample.to("cpu", torch.long)
    )
    if int(counts.sum()) != images:
        raise ValueError(f"images_per_sample sums to {int(counts.sum())} but the batch has {images} images")
    rows = family.rows(llava, batch, counts).to("cpu")
    if not family.packed and bool((counts == 1).all()) and bool((rows == 1).all()):
        return None
    image_owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    return torch.repeat_interleave(image_owner, rows)


def add_token_types(
    family: Family, input_ids: torch.Tensor | None, image_token_id: int, kwargs: dict
) -> None:
    """Qwen's mrope finds each image's positions by ``mm_token_type_ids`` (0 text, 1 image): derive
    them from ``input_ids`` unless given (transformers' processors make them; covft's collator
    writes the image tokens, so they follow from the ids)."""
    if family.token_types and input_ids is not None and "mm_token_type_ids" not in kwargs:
        kwargs["mm_token_type_ids"] = (input_ids == image_token_id).to(torch.int32)
