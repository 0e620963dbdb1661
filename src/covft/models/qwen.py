"""Qwen-VL models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) from a geometry: configs, the PIL image
processor, an image-only processor, and the presets built with them (a tiny random one per family
for tests, the real checkpoints' geometry for counting on the meta device).

The three families differ in their vision config's field names (Qwen2-VL calls the tower width
``embed_dim`` and the merger's output ``hidden_size``; the others ``hidden_size`` and
``out_hidden_size``), in the MLP (Qwen2.5-VL's is gated) and in Qwen3-VL's learned position
embedding and deepstack taps; everything else (special tokens, mrope, the merger) is shared.
"""

from __future__ import annotations

import copy

import torch

from covft.models.assembly import assemble, image_only_processor
from covft.models.model import CovftModel
from covft.models.precision import as_dtype
from covft.models.tokenizer import QWEN_VISION_TOKENS, byte_tokenizer

__all__ = ["QWEN_FAMILIES", "qwen_config", "qwen_processor", "qwen_vision", "tiny_qwen"]

QWEN_FAMILIES = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
}
"""The Qwen families and their processor classes."""

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def qwen_vision(
    family: str, *, depth: int, hidden: int, heads: int, intermediate: int, patch_size: int, out: int, **extra
) -> dict:
    """The vision config fields of ``family`` (``extra``: window / full-attention blocks of Qwen2.5-VL,
    position embeddings and deepstack taps of Qwen3-VL)."""
    if family == "qwen2_vl":
        ratio = intermediate // hidden
        if ratio * hidden != intermediate:
            raise ValueError(
                f"Qwen2-VL's MLP width is mlp_ratio * embed_dim: {intermediate} is not a multiple of {hidden}"
            )
        return dict(
            depth=depth,
            embed_dim=hidden,
            hidden_size=out,
            mlp_ratio=ratio,
            num_heads=heads,
            patch_size=patch_size,
            **extra,
        )
    return dict(
        depth=depth,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_heads=heads,
        out_hidden_size=out,
        patch_size=patch_size,
        **extra,
    )


def qwen_config(family: str, vision: dict, text: dict, tokenizer):
    """The model config, with the tokenizer's Qwen vision token ids (:data:`QWEN_VISION_TOKENS`)."""
    from transformers import CONFIG_MAPPING

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN_VISION_TOKENS.items()}
    text = {
        "model_type": f"{family}_text",
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **text,
    }
    return CONFIG_MAPPING[family](
        vision_config=vision,
        text_config=text,
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
        pad_token_id=tokenizer.pad_token_id,
    )


def qwen_processor(family: str, tokenizer, *, patch_size: int, min_pixels: int, max_pixels: int, mean, std):
    """``(image processor, processor)``: the PIL ``Qwen2VLImageProcessorPil`` (all three families
    use it) and the family's processor without its video processor (that one needs torchvision)."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    images = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch_size,
        merge_size=2,
        image_mean=list(mean),
        image_std=list(std),
    )
    cls = getattr(transformers, QWEN_FAMILIES[family])
    processor = image_only_processor(
        cls,
        images,
        tokenizer,
        image_token=QWEN_VISION_TOKENS["image_token"],
        video_token=QWEN_VISION_TOKENS["video_token"],
    )
    processor.image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    processor.video_token_id = tokenizer.convert_tokens_to_ids(processor.video_token)
    return images, processor


QWEN3_VL_ROPE = {
    "rope_type": "default",
    "rope_theta": 5_000_000.0,
    "mrope_section": [24, 20, 20],
    "mrope_interleaved": True,
}
"""The released Qwen3-VL checkpoints' rotary settings (their ``config.json``: interleaved mrope)."""


def _text(
    hidden: int,
    layers: int,
    heads: int,
    kv: int,
    intermediate: int,
    vocab: int,
    tie: bool,
    head_dim: int,
    rope: dict | None = None,
):
    """Text config fields; ``rope`` defaults to Qwen2-VL's / Qwen2.5-VL's (theta 1e6, mrope sections
    in the ratio 16:24:24 of the rotary half-dimensions)."""
    half = head_dim // 2  # mrope splits the rotary half-dimensions over (t, h, w)
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    if rope is None:
        rope = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": section}
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=intermediate,
        vocab_size=vocab,
        head_dim=head_dim,
        tie_word_embeddings=tie,
        max_position_embeddings=32768,
        rope_parameters=copy.deepcopy(rope),
    )


def tiny_qwen(family: str, *, device: str, base: dict) -> CovftModel:
    """A random Qwen-VL small enough for unit tests, of the geometry in ``base["kwargs"]`` (the
    ``tiny-test`` preset's): ``vision_layers`` blocks of ``vision_hidden`` (4 heads, patch
    ``patch_size``, 2x2 merge), an LLM of ``llm_layers`` x ``llm_hidden``; an image has at most
    ``image_size ** 2`` pixels (32: up to 2x2 merged tokens)."""
    geometry = base["kwargs"]
    seed, text_encoder = geometry["seed"], geometry["text_encoder"]
    tokenizer = byte_tokenizer(QWEN_VISION_TOKENS)
    depth, hidden, patch = geometry["vision_layers"], geometry["vision_hidden"], geometry["patch_size"]
    extra = {}
    if family == "qwen2_5_vl":  # windows of 2x2 merged tokens; full attention in every other block
        extra = dict(window_size=4 * patch, fullatt_block_indexes=list(range(1, depth, 2)), hidden_act="silu")
    elif family == "qwen3_vl":  # deepstack taps before the last block (one per LLM layer at most)
        taps = list(range(max(0, depth - 1 - geometry["llm_layers"]), depth - 1))
        extra = dict(num_position_embeddings=16, deepstack_visual_indexes=taps)
    vision = qwen_vision(
        family,
        depth=depth,
        hidden=hidden,
        heads=4,
        intermediate=4 * hidden,
        patch_size=patch,
        out=geometry["llm_hidden"],
        **extra,
    )
    width = geometry["llm_hidden"]
    text = _text(width, geometry["llm_layers"], 4, 2, 2 * width, len(tokenizer), False, width // 4)
    side = geometry["image_size"]
    pixels = {"patch_size": patch, "min_pixels": (2 * patch) ** 2, "max_pixels": side * side}
    return _assemble(family, vision, text, tokenizer, pixels, CLIP_MEAN, CLIP_STD,
                     seed=seed, device=device, text_encoder=text_encoder, base=base)  # fmt: skip


def _assemble(
    family: str, vision: dict, text: dict, tokenizer, pixels: dict, mean, std, **options
) -> CovftModel:
    """A covft model of a Qwen family from its tower and LLM configs and the processor's pixel range."""
    images, processor = qwen_processor(family, tokenizer, mean=mean, std=std, **pixels)
    return assemble(
        config=qwen_config(family, vision, text, tokenizer),
        tokenizer=tokenizer,
        image_processor=images,
        processor=processor,
        template="vicuna_v1",
        family=family,
        **options,
    )


def _real(family: str, name: str, vision: dict, text: dict, patch: int, mean, std):
    def build(
        *,
        device: str = "meta",
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
        text_encoder: str = "bert-base-uncased",
    ) -> CovftModel:
        dtype = as_dtype(dtype)
        tokenizer = byte_tokenizer(QWEN_VISION_TOKENS)
        pixels = {"patch_size": patch, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280}
        base = {"preset": name, "kwargs": dict(seed=seed, text_encoder=text_encoder)}
        return _assemble(family, vision, text, tokenizer, pixels, mean, std,
                         seed=seed, device=device, dtype=dtype, text_encoder=text_encoder, base=base)  # fmt: skip

    build.__doc__ = f"{name}'s geometry with random weights (``device='meta'`` allocates nothing); a byte tokenizer stands in."
    return build


def _qwen25_tower(out: int) -> dict:
    """The vision tower of every released Qwen2.5-VL (32 blocks x 1280, SwiGLU MLP 3420, windows of
    112 px, full attention in blocks 7/15/23/31); only the merger's output width differs."""
    return qwen_vision(
        "qwen2_5_vl",
        depth=32,
        hidden=1280,
        heads=16,
        intermediate=3420,
        patch_size=14,
        out=out,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        hidden_act="silu",
    )


PRESETS = {
    # Qwen/Qwen2.5-VL-7B-Instruct (docs/plans/model-families/README.md section 3.1)
    "qwen2.5-vl-7b": _real(
        "qwen2_5_vl",
        "qwen2.5-vl-7b",
        _qwen25_tower(out=3584),
        _text(3584, 28, 28, 4, 18944, 152064, False, 128),
        14,
        CLIP_MEAN,
        CLIP_STD,
    ),
    # Qwen/Qwen2.5-VL-3B-Instruct: the 7B's tower, a 2048-wide merger output, Qwen2.5-3B (tied)
    "qwen2.5-vl-3b": _real(
        "qwen2_5_vl",
        "qwen2.5-vl-3b",
        _qwen25_tower(out=2048),
        _text(2048, 36, 16, 2, 11008, 151936, True, 128),
        14,
        CLIP_MEAN,
        CLIP_STD,
    ),
    # Qwen/Qwen3-VL-2B-Instruct: a CLIP-L-shaped tower (24 x 1024, MLP 4096), Qwen3-1.7B (tied)
    "qwen3-vl-2b": _real(
        "qwen3_vl",
        "qwen3-vl-2b",
        qwen_vision(
            "qwen3_vl",
            depth=24,
            hidden=1024,
            heads=16,
            intermediate=4096,
            patch_size=16,
            out=2048,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17],
        ),
        _text(2048, 28, 16, 8, 6144, 151936, True, 128, rope=QWEN3_VL_ROPE),
        16,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    ),
    # Qwen/Qwen3-VL-8B-Instruct
    "qwen3-vl-8b": _real(
        "qwen3_vl",
        "qwen3-vl-8b",
        qwen_vision(
            "qwen3_vl",
            depth=27,
            hidden=1152,
            heads=16,
            intermediate=4304,
            patch_size=16,
            out=4096,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[8, 16, 24],
        ),
        _text(4096, 36, 32, 8, 12288, 151936, False, 128, rope=QWEN3_VL_ROPE),
        16,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    ),
}
"""Real checkpoint geometries (registered by :mod:`covft.models.presets`)."""
