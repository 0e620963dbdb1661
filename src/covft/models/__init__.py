"""Building LLaVA models with covft: presets, checkpoints, the wrapper and the text encoder.

Loading a covft checkpoint re-applies its strategy: ``covft.load_pretrained`` (in ``covft.strategies``).
"""

from covft.models import geometries  # noqa: F401  (registers the NeXT / OneVision geometry presets)
from covft.models.model import CovftModel
from covft.models.presets import available_presets, build_model, register_preset

__all__ = ["CovftModel", "available_presets", "build_model", "register_preset"]
