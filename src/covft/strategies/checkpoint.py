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

LOAD_OPTIONS = ("device", "dtype", "template", "max_length", "text_encoder")
"""What loading a covft checkpoint takes (everything else is the checkpoint's)."""


def load_pretrained(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype | str | None = None,
    template: str | None = None,
    max_length: int | None = None,
    text_encoder: str | None = None,
) -> CovftModel:
    """Rebuild a model saved with ``save_pretrained``: same structure, same weights, same outputs.

    Defaults are the saved ones; ``dtype`` builds the model in another dtype (the weights are cast
    as they load, rotary buffers kept in float32 as transformers keeps them), ``template`` and
    ``max_length`` change how :meth:`~covft.models.CovftModel.collate` renders samples,
    ``text_encoder`` names another spec for the frozen text encoder.
    """
    path = Path(path)
    config = checkpoint.read_checked_config(path)
    text_encoder = text_encoder or config["text_encoder"]
    model = checkpoint.rebuild_model(path, config, device, text_encoder, dtype=dtype)
    if config["strategy"]:
        apply_vft(model, config["strategy"], **config["options"])
    checkpoint.load_weights(model, path, config, device)
    if template is not None:
        model.template = template
    if max_length is not None:
        model.max_length = int(max_length)
    return model


def build_model(name_or_path: str, **kwargs: Any) -> CovftModel:
    """Build a model from a preset name, a covft checkpoint directory (strategy and weights
    restored, as :func:`load_pretrained`, which takes :data:`LOAD_OPTIONS`) or a local Hugging
    Face checkpoint."""
    if checkpoint.is_checkpoint(name_or_path) and name_or_path not in presets.available_presets():
        unknown = sorted(set(kwargs) - set(LOAD_OPTIONS))
        if unknown:
            raise TypeError(
                f"{name_or_path} is a covft checkpoint, which takes {', '.join(LOAD_OPTIONS)}; not "
                f"{', '.join(unknown)} (its geometry, strategy and weights are the saved ones)"
            )
        return load_pretrained(name_or_path, **kwargs)
    return presets.build_model(name_or_path, **kwargs)
