"""Selective tuning: only the top-k vision blocks that feed the LLM train (k=1: the last one)."""

from __future__ import annotations

from dataclasses import dataclass

from covft.models.names import block_param_names
from covft.strategies.base import Strategy, StrategyOptions, register_strategy


@dataclass
class SelectiveOptions(StrategyOptions):
    top_k: int = 1
    """How many of the last feeding blocks train ("Top Layer"/"Last Layer" in Keeping Yourself)."""


@register_strategy
class Selective(Strategy):
    name = "selective"
    Options = SelectiveOptions

    def vision_trainable(self, model):
        feeding = model.feeding_layers
        if not 1 <= self.options.top_k <= feeding:
            raise ValueError(
                f"top_k must be in 1..{feeding} (blocks feeding the LLM), got {self.options.top_k}"
            )
        return [n for i in range(feeding - self.options.top_k, feeding) for n in block_param_names(model, i)]
