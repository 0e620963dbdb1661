"""Presets with the geometry of released LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision checkpoints, random weights
(``device="meta"`` allocates nothing): for parameter counts, FLOPs and memory plans. Real weights
come from a local Hugging Face directory (``covft.build_model(path)``).

Geometries from transformers' conversion scripts for these checkpoints
(docs/plans/model-families/README.md, section 3); the tokenizer is a byte-level stand-in with the
checkpoints' vocabulary size.
"""

from __future__ import annotations

import torch

from covft.models.assembly import anyres_parts, assemble, image_processor_for, llama_config, vision_config
from covft.models.model import CovftModel
from covft.models.precision import as_dtype
from covft.models.presets import register_preset
from covft.models.qwen import CLIP_MEAN, CLIP_STD

NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
"""llava-hf/llava-v1.6-vicuna-7b-hf's anyres grids (tiles of 336 px)."""
ONEVISION_PINPOINTS = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]
"""llava-hf/llava-onevision-qwen2-*-ov-hf's anyres grids: 1x1 to 6x6 tiles of 384 px."""
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
QWEN2_ROPE = {"rope_type": "default", "rope_theta": 1_000_000.0}
"""Qwen2-0.5B's and Qwen2-7B's rotary settings (``config.json`` ``rope_theta``; Qwen2Config's default is 10000)."""


def _clip_l_llama(
    name: str, llm: dict, *, device, seed, dtype, text_encoder, kwargs=None, vision_layers=24, family="llava"
) -> CovftModel:
    """CLIP ViT-L/14-336 (LLaVA-1.5's tower, ``vision_layers`` of its 24 blocks) and a
    Llama-architecture LLM of geometry ``llm``; LLaVA-NeXT (``family="llava_next"``) adds its
    anyres processor (tiles of 336 px on :data:`NEXT_PINPOINTS`)."""
    from covft.models.tokenizer import byte_tokenizer

    tokenizer = byte_tokenizer()
    vision = vision_config(
        "clip", hidden=1024, layers=vision_layers, heads=16, image_size=336, patch_size=14, intermediate=4096
    )
    vision.projection_dim = 768
    text = llama_config(tokenizer, vocab_size=32064, max_positions=4096, rms_norm_eps=1e-5, **llm)
    family_config, processor = None, None
    images = image_processor_for("clip", 336, mean=CLIP_MEAN, std=CLIP_STD)
    if family == "llava_next":
        family_config, images, processor = anyres_parts(
            family, "clip", 336, 14, tokenizer, pinpoints=NEXT_PINPOINTS, mean=CLIP_MEAN, std=CLIP_STD
        )
    return assemble(
        vision_config=vision,
        text_config=text,
        tokenizer=tokenizer,
        image_processor=images,
        seed=seed,
        device=device,
        dtype=as_dtype(dtype),
        text_encoder=text_encoder,
        template="vicuna_v1",
        base={"preset": name, "kwargs": dict(seed=seed, text_encoder=text_encoder, **(kwargs or {}))},
        family=family,
        family_config=family_config,
        processor=processor,
    )


VICUNA_7B = dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008)
VICUNA_13B = dict(hidden=5120, layers=40, heads=40, kv_heads=40, intermediate=13824)


@register_preset("llava-1.5-7b")
def llava_15_7b(
    *,
    device: str = "meta",
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    text_encoder: str = "bert-base-uncased",
    llm_layers: int = 32,
) -> CovftModel:
    """LLaVA-1.5-7B's geometry with random weights (``device='meta'`` allocates nothing).

    The tokenizer is a byte-level stand-in: the geometry (and so every cost) is the real one, but
    a random-weight model has no use for Vicuna's vocabulary.
    """
    llm = {**VICUNA_7B, "layers": llm_layers}
    common = dict(device=device, seed=seed, dtype=dtype, text_encoder=text_encoder)
    return _clip_l_llama("llava-1.5-7b", llm, kwargs={"llm_layers": llm_layers}, **common)


@register_preset("llava-1.5-13b")
def llava_15_13b(
    *,
    device: str = "meta",
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    text_encoder: str = "bert-base-uncased",
) -> CovftModel:
    """llava-hf/llava-1.5-13b-hf's geometry: LLaVA-1.5-7B's CLIP-L/336 and Vicuna-13B."""
    common = dict(device=device, seed=seed, dtype=dtype, text_encoder=text_encoder)
    return _clip_l_llama("llava-1.5-13b", VICUNA_13B, **common)


@register_preset("llava-next-7b")
def llava_next_7b(
    *,
    device: str = "meta",
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    text_encoder: str = "bert-base-uncased",
    llm_layers: int = 32,
    vision_layers: int = 24,
) -> CovftModel:
    """llava-hf/llava-v1.6-vicuna-7b-hf's geometry: LLaVA-1.5-7B's CLIP-L/336 and Vicuna-7B, anyres
    tiles of 336 px on five grids, ``image_newline``. ``llm_layers`` / ``vision_layers`` build fewer
    blocks of the same widths (quick real-device checks)."""
    common = dict(device=device, seed=seed, dtype=dtype, text_encoder=text_encoder)
    llm = {**VICUNA_7B, "layers": llm_layers}
    layers = {"llm_layers": llm_layers, "vision_layers": vision_layers}
    return _clip_l_llama(
        "llava-next-7b", llm, kwargs=layers, vision_layers=vision_layers, family="llava_next", **common
    )


def _onevision(
    name: str, text: dict, *, device, seed, dtype, text_encoder, llm_layers, vision_layers
) -> CovftModel:
    """SigLIP so400m (``vision_layers`` of its 26 blocks, no head) and a Qwen2 LLM of geometry
    ``text`` (``llm_layers`` blocks), with OneVision's anyres processor (384 px tiles on
    :data:`ONEVISION_PINPOINTS`, ``anyres_max_9``)."""
    from transformers import Qwen2Config

    from covft.models.tokenizer import byte_tokenizer

    tokenizer = byte_tokenizer()
    vision = vision_config(
        "siglip",
        hidden=1152,
        layers=vision_layers,
        heads=16,
        image_size=384,
        patch_size=14,
        intermediate=4304,
    )
    vision.vision_use_head = False
    llm = Qwen2Config(
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rope_parameters=dict(QWEN2_ROPE),
        **{**text, "num_hidden_layers": llm_layers},
    )
    family_config, images, processor = anyres_parts(
        "llava_onevision", "siglip", 384, 14, tokenizer, ONEVISION_PINPOINTS, SIGLIP_MEAN, SIGLIP_STD
    )
    layers = {"llm_layers": llm_layers, "vision_layers": vision_layers}
    return assemble(
        vision_config=vision,
        text_config=llm,
        tokenizer=tokenizer,
        image_processor=images,
        seed=seed,
        device=device,
        dtype=as_dtype(dtype),
        text_encoder=text_encoder,
        template="vicuna_v1",  # random weights: the byte tokenizer has no chat template
        base={"preset": name, "kwargs": dict(seed=seed, text_encoder=text_encoder, **layers)},
        vision_feature_layer=-1,
        family="llava_onevision",
        family_config={**family_config, "tie_word_embeddings": text["tie_word_embeddings"]},
        processor=processor,
    )


@register_preset("llava-ov-0.5b")
def llava_ov_05b(
    *,
    device: str = "meta",
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    text_encoder: str = "bert-base-uncased",
    llm_layers: int = 24,
    vision_layers: int = 26,
) -> CovftModel:
    """llava-hf/llava-onevision-qwen2-0.5b-ov-hf's geometry: SigLIP so400m (26 blocks, no head) and
    Qwen2-0.5B (tied embeddings)."""
    text = dict(
        vocab_size=152000,
        hidden_size=896,
        intermediate_size=4864,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    common = dict(device=device, seed=seed, dtype=dtype, text_encoder=text_encoder)
    return _onevision("llava-ov-0.5b", text, llm_layers=llm_layers, vision_layers=vision_layers, **common)


@register_preset("llava-ov-7b")
def llava_ov_7b(
    *,
    device: str = "meta",
    seed: int = 0,
    dtype: torch.dtype | str = torch.float32,
    text_encoder: str = "bert-base-uncased",
    llm_layers: int = 28,
    vision_layers: int = 26,
) -> CovftModel:
    """llava-hf/llava-onevision-qwen2-7b-ov-hf's geometry: SigLIP so400m and Qwen2-7B."""
    text = dict(
        vocab_size=152128,
        hidden_size=3584,
        intermediate_size=18944,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    common = dict(device=device, seed=seed, dtype=dtype, text_encoder=text_encoder)
    return _onevision("llava-ov-7b", text, llm_layers=llm_layers, vision_layers=vision_layers, **common)
