"""The training recipe: LLaVA-1.5's two stages on ``accelerate``, exactly resumable.

``train(config, callbacks=...)`` (``Trainer(config, callbacks).fit()``) runs one stage and returns a :class:`TrainResult`;
``load_config(path, overrides)`` reads a YAML recipe with ``key=value`` overrides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from covft.train.config import ConfigError, DataConfig, TrainConfig, TrainLoopConfig, load_config

if TYPE_CHECKING:
    from covft.train.trainer import NonFiniteLossError, Trainer, TrainerCallback, TrainResult, train

__all__ = [
    "ConfigError",
    "DataConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainLoopConfig",
    "TrainResult",
    "Trainer",
    "TrainerCallback",
    "load_config",
    "train",
]

_LAZY = {"train", "Trainer", "TrainResult", "TrainerCallback", "NonFiniteLossError"}


def __getattr__(name: str) -> Any:
    # The trainer imports accelerate and torch; load it only when used.
    if name in _LAZY:
        from covft.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'covft.train' has no attribute {name!r}")
