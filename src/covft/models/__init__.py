"""Building LLaVA models with covft: presets, checkpoints, the wrapper and the text encoder."""

from covft.models.checkpoint import load_pretrained
from covft.models.model import CovftModel
from covft.models.presets import available_presets, build_model, register_preset

__all__ = ["CovftModel", "available_presets", "build_model", "load_pretrained", "register_preset"]
