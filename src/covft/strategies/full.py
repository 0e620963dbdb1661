"""Full fine-tuning: every vision parameter on the path to the LLM trains."""

from __future__ import annotations

from covft.models.names import feeding_names
from covft.strategies.base import Strategy, register_strategy


@register_strategy
class Full(Strategy):
    name = "full"

    def vision_trainable(self, model):
        return feeding_names(model)
