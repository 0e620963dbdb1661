"""Callbacks: observe training without changing the loop.

``before_optimizer_step(step, model, loss)`` runs after the gradients of a step are complete
(accumulated, reduced across processes, clipped) and before ``optimizer.step()``, e.g. to read
vision gradients; ``after_optimizer_step`` runs after the update, e.g. to snapshot parameters;
``on_step_end`` runs once the step is logged and its checkpoint (if any) is written. A plain
function ``fn(step, model, loss)`` is treated as ``before_optimizer_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn


class TrainerCallback:
    """Override any hook; ``model`` is the unwrapped ``CovftModel``, ``loss`` the step's mean loss."""

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        """After backward (gradients complete) and before ``optimizer.step()``."""

    def after_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        """After the optimizer and scheduler stepped."""

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        """After the step was logged and its checkpoint, if one was due, written."""


Callback = TrainerCallback | Callable[[int, nn.Module, float], Any]


def as_callbacks(callbacks: Iterable[Callback]) -> list[TrainerCallback]:
    """``callbacks`` as :class:`TrainerCallback` objects (a function becomes ``before_optimizer_step``)."""
    result: list[TrainerCallback] = []
    for callback in callbacks:
        if isinstance(callback, TrainerCallback):
            result.append(callback)
        elif callable(callback):
            wrapper = TrainerCallback()
            wrapper.before_optimizer_step = callback  # type: ignore[method-assign]
            result.append(wrapper)
        else:
            raise TypeError(f"callback {callback!r} is neither a TrainerCallback nor callable")
    return result
