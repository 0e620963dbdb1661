"""Saving and loading covft models: safetensors weights + a JSON config naming the strategy.

Layout of a checkpoint directory:
- ``covft_config.json``: format version, the transformers model's config (any family, despite
  the key's name ``llava_config``), strategy name and options, text encoder, template,
  ``max_length``, dtype, generation config, the multimodal processor's class and settings
  (families that count image tokens per image), how to rebuild the base model (for delta
  checkpoints), whether it is a delta.
- ``model.safetensors``: every weight (or, for a delta, only what the strategy trained).
- tokenizer and image processor files (Hugging Face format).

The frozen text encoder is never saved: it is rebuilt from its name. Loading a checkpoint
re-applies its strategy, so it lives a layer up: ``covft.strategies.checkpoint.load_pretrained``
(``covft.load_pretrained``) composes :func:`rebuild_model` and :func:`load_weights`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from covft.models import precision
from covft.utils import atomic_directory

FORMAT_VERSION = 1
CONFIG_NAME = "covft_config.json"
WEIGHTS_NAME = "model.safetensors"


def _state_to_save(model, delta: bool) -> dict[str, torch.Tensor]:
    trainable = set(model.trainable_parameter_names())
    state: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("text_encoder."):
            continue
        if delta and name not in trainable:
            continue
        key = tensor.data_ptr()
        if key in seen and tensor.numel() > 0:
            continue  # tied weight: stored once, re-tied on load
        seen[key] = name
        state[name] = tensor.detach().to("cpu").contiguous()
    return state


def save_pretrained(model, path: str | os.PathLike, delta: bool = False) -> None:
    """Write the checkpoint atomically: a crash mid-save never leaves a complete-looking directory."""
    strategy = model.strategy
    config = {
        "format_version": FORMAT_VERSION,
        "llava_config": model.llava.config.to_dict(),
        "strategy": strategy.name if strategy else None,
        "options": asdict(strategy.options) if strategy else None,
        "text_encoder": model.text_encoder_spec,
        "template": model.template,
        "max_length": model.max_length,
        "base": model.base,
        "delta": bool(delta),
        "dtype": str(precision.dtype_of(model.llava)).removeprefix("torch."),
        "processor": processor_record(model.processor),
        "generation_config": model.llava.generation_config.to_diff_dict(),
    }
    if delta and not model.base:
        raise ValueError("a delta checkpoint needs a rebuildable base model (a preset or a local path)")
    with atomic_directory(path) as tmp:
        save_file(_state_to_save(model, delta), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        model.tokenizer.save_pretrained(str(tmp))
        model.image_processor.save_pretrained(str(tmp))
        # the config goes last: its presence marks a complete checkpoint
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str))


_PROCESSOR_PARTS = ("image_processor", "tokenizer", "video_processor", "chat_template", "covft_image_only")


def processor_record(processor) -> dict[str, Any] | None:
    """A multimodal processor as its class and plain settings (``patch_size``, ``image_token``...):
    its image processor and tokenizer are saved on their own, and rebuilding it with
    :func:`~covft.models.assembly.image_only_processor` needs no video processor (torchvision)."""
    if processor is None:
        return None
    plain = (bool, int, float, str, list, tuple, type(None))
    settings = {
        k: v
        for k, v in vars(processor).items()
        if k not in _PROCESSOR_PARTS and not k.startswith("_") and isinstance(v, plain)
    }
    return {"class": type(processor).__name__, "settings": settings}


def rebuild_processor(record: dict[str, Any] | None, image_processor, tokenizer):
    """The processor :func:`processor_record` describes, around the loaded image processor and tokenizer."""
    if record is None:
        return None
    import transformers

    from covft.models.assembly import image_only_processor

    cls = getattr(transformers, record["class"])
    return image_only_processor(cls, image_processor, tokenizer, **record["settings"])


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_fingerprint(model) -> str:
    """SHA-256 of the model's weights: every tensor's name, dtype, shape and bytes, in name order.

    Two models with equal weights have equal fingerprints wherever they were loaded from; a model
    retrained into the same directory does not. The frozen text encoder is left out (it is loaded
    lazily and rebuilt from its name, which :func:`prediction_identity` records). Hashing reads
    every byte once: about 10 s for a 7B model in 16 bit.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith("text_encoder."):
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def prediction_identity(model) -> dict[str, Any]:
    """What a model's predictions depend on besides the evaluation settings: weights, template,
    text encoder. Evaluation caches are keyed by it, so a checkpoint retrained at the same path
    never reuses the old model's predictions."""
    return {
        "weights_sha256": weights_fingerprint(model),
        "template": model.template,
        "text_encoder": model.text_encoder_spec,
    }


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {path} is not a (complete) covft checkpoint")
    return json.loads(file.read_text())


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete covft checkpoint directory (its config is written last)."""
    return (Path(path) / CONFIG_NAME).is_file()


def read_checked_config(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's config, after checking its format version."""
    config = read_config(path)
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {config.get('format_version')} is not {FORMAT_VERSION}")
    return config


def rebuild_model(
    path: str | os.PathLike,
    config: dict[str, Any],
    device: str | torch.device,
    text_encoder: str,
    dtype: torch.dtype | str | None = None,
):
    """The checkpoint's model before its strategy and weights, on ``device`` in ``dtype`` (default:
    the saved one): the rebuilt base for a delta checkpoint, else a model of the saved config's
    family (random weights) with the saved tokenizer, image processor and processor. Either way with
    the saved template, ``max_length`` and generation config."""
    dtype = precision.as_dtype(dtype or config.get("dtype", "float32"))
    if config["delta"]:
        from covft.models.presets import rebuild_base

        model = rebuild_base(config["base"], device=device, dtype=dtype, text_encoder=text_encoder)
    else:
        model = _rebuild_full(path, config, device, dtype, text_encoder)
    model.template = config["template"]
    model.max_length = config.get("max_length", 2048)
    saved = config.get("generation_config")
    if saved is not None:
        from transformers import GenerationConfig

        model.llava.generation_config = GenerationConfig.from_dict(saved)
    return model


def _rebuild_full(path, config: dict[str, Any], device, dtype: torch.dtype, text_encoder: str):
    import transformers
    from transformers import CONFIG_MAPPING, AutoImageProcessor, AutoTokenizer

    from covft.models.families import family_for_type
    from covft.models.model import CovftModel

    saved = config["llava_config"]
    family = family_for_type(saved.get("model_type", "llava"), str(path))
    with torch.device(device):
        llava = precision.build(
            getattr(transformers, family.model_class), CONFIG_MAPPING[family.name].from_dict(saved), dtype
        )
    with _quiet_config_warnings():
        # never the export's covft_hf.py: the tokenizer is covft's own (trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    image_processor = AutoImageProcessor.from_pretrained(str(path))
    # checkpoints without a saved generation config (older covft) get these, as before
    llava.generation_config.pad_token_id = tokenizer.pad_token_id
    llava.generation_config.eos_token_id = tokenizer.eos_token_id
    return CovftModel(
        llava,
        tokenizer,
        image_processor,
        text_encoder=text_encoder,
        base=config["base"],
        processor=rebuild_processor(config.get("processor"), image_processor, tokenizer),
    )


@contextlib.contextmanager
def _quiet_config_warnings():
    """AutoTokenizer reads a covft export's ``config.json`` (model type "covft", which only the
    Auto classes' remote code knows) and warns that its type differs from the base config's; the
    tokenizer does not depend on it."""
    logger = logging.getLogger("transformers.configuration_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_weights(model, path: str | os.PathLike, config: dict[str, Any], device: str | torch.device) -> None:
    """Load the checkpoint's weights into ``model`` (rebuilt, strategy applied), checking that they
    match: a full checkpoint must cover every weight but the text encoder's and tied copies."""
    path = Path(path)
    state = load_file(str(path / WEIGHTS_NAME), device=str(device))
    restored = _restore_prequantized(model, state, device)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("text_encoder.") and k not in restored]
    if config["delta"]:
        missing = []  # a delta holds only what trained; the rest comes from the rebuilt base
    else:
        tied = _tied_names(model)
        missing = [k for k in missing if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path}: weights do not match the model (missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )


def _restore_prequantized(model, state: dict[str, torch.Tensor], device: str | torch.device) -> set[str]:
    """Put 4-bit weights (bitsandbytes ``Params4bit``, QLoRA's LLM) back with their saved quantization
    state, taking their entries out of ``state``: ``load_state_dict`` would copy the packed codes
    but keep the scales the rebuilt model quantized itself. Returns the weights' names."""
    restored = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if type(weight).__name__ != "Params4bit" or f"{name}.weight" not in state:
            continue
        prefix = f"{name}.weight."
        stats = {key[len(prefix) :]: state.pop(key) for key in [k for k in state if k.startswith(prefix)]}
        module.weight = type(weight).from_prequantized(
            state.pop(f"{name}.weight"), stats, requires_grad=False, device=str(device), module=module
        )
        restored.add(f"{name}.weight")
    return restored


def _tied_names(model) -> set[str]:
    """Names that share storage with an earlier name (tied weights are saved once)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict().items():
        if tensor.numel() and tensor.data_ptr() in seen:
            tied.add(name)
        seen.setdefault(tensor.data_ptr(), name)
    return tied
