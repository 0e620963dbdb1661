"""Visual fine-tuning strategies, each registered by name (see ``base.py`` for the contract).

Adding a strategy: write a module with a ``@register_strategy`` class and import it here.
"""

from covft.strategies import bitfit, covft, freeze, full, lora, qavit, qmoe, selective, vpt  # noqa: F401
from covft.strategies.base import (
    STRATEGIES,
    Strategy,
    StrategyOptions,
    UnknownMethodError,
    UnknownOptionError,
    apply_vft,
    available_methods,
    declared_trainable,
    get_strategy,
    option_names,
    register_strategy,
    set_trainable,
)
from covft.strategies.checkpoint import build_model, load_pretrained

__all__ = [
    "STRATEGIES",
    "Strategy",
    "StrategyOptions",
    "UnknownMethodError",
    "UnknownOptionError",
    "apply_vft",
    "available_methods",
    "build_model",
    "declared_trainable",
    "get_strategy",
    "load_pretrained",
    "option_names",
    "register_strategy",
    "set_trainable",
]
