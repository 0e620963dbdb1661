"""Freeze: nothing in the vision tower trains (LLaVA-1.5's default)."""

from __future__ import annotations

from covft.strategies.base import Strategy, register_strategy


@register_strategy
class Freeze(Strategy):
    name = "freeze"
