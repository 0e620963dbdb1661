"""Visual fine-tuning strategies, each registered by name (see ``base.py`` for the contract).

Adding a strategy: write a module with a ``@register_strategy`` class and import it here.
"""

from covft.strategies import bitfit, covft, freeze, full, lora, qavit, qmoe, selective, vpt  # noqa: F401
from covft.strategies.base import (
    STRATEGIES,
    Strategy,
    StrategyOptions,
    apply_vft,
    available_methods,
    get_strategy,
    register_strategy,
    set_trainable,
)

__all__ = [
    "STRATEGIES",
    "Strategy",
    "StrategyOptions",
    "apply_vft",
    "available_methods",
    "get_strategy",
    "register_strategy",
    "set_trainable",
]
