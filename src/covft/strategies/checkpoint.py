"""Loading covft checkpoints: rebuild the model, re-apply the saved strategy, load the weights.

The strategy-agnostic pieces (config, rebuilding, weights) are in :mod:`covft.models.checkpoint`;
this module adds the one step that needs the strategies, so ``covft.models`` never imports them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from covft.models import checkpoint, presets
from covft.models.model import CovftModel
from covft.strategies.base import apply_vft


def load_pretrained(
    path: str | os.PathLike, device: str | torch.device = "cpu", **overrides: Any
) -> CovftModel:
    """Rebuild a model saved with ``save_pretrained``: same structure, same weights, same outputs.

    ``overrides``: ``text_encoder`` (another spec for the frozen text encoder).
    """
    path = Path(path)
    config = checkpoint.read_checked_config(path)
    text_encoder = overrides.pop("text_encoder", config["text_encoder"])
    model = checkpoint.rebuild_model(path, config, device, text_encoder)
    if config["strategy"]:
        apply_vft(model, config["strategy"], **config["options"])
    checkpoint.load_weights(model, path, config, device)
    return model


def build_model(name_or_path: str, **kwargs: Any) -> CovftModel:
    """Build a model from a preset name, a covft checkpoint directory (strategy and weights
    restored, as :func:`load_pretrained`) or a local Hugging Face LLaVA checkpoint."""
    if checkpoint.is_checkpoint(name_or_path) and name_or_path not in presets.available_presets():
        return load_pretrained(name_or_path, **kwargs)
    return presets.build_model(name_or_path, **kwargs)
