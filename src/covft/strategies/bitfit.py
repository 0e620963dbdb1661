"""BitFit: only the biases of the vision tower (on the path to the LLM) train."""

from __future__ import annotations

from covft.models.names import feeding_names
from covft.strategies.base import Strategy, register_strategy


@register_strategy
class BitFit(Strategy):
    name = "bitfit"

    def vision_trainable(self, model):
        return [n for n in feeding_names(model) if n.endswith(".bias")]
