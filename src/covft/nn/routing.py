"""The small contract of routed modules: modules that mix experts per sample with gates they compute.

As PEFT's ``BaseTunerLayer`` marks the layers a tuner added, :class:`RoutedModule` marks the
modules a routing strategy added (CoMoE in the vision blocks, Q-MoE in the projector), so the
model wrapper finds them by walking its modules and reads their gates and auxiliary losses
without knowing any strategy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["RoutedModule", "gate_statistics"]


class RoutedModule(nn.Module):
    """Base class of modules that route each sample over experts.

    Every forward sets:

    Attributes:
        last_gates: ``[B, E]`` detached per-sample expert weights of the last forward (rows sum
            to one; ``[S, E]``, one row per sample, when ``ContextState.owner`` maps several tower
            rows or packed tokens to each sample), ``None`` before the first forward.
        aux_loss: auxiliary (e.g. load-balancing) loss of the last forward, already weighted, with
            grad; ``None`` when the module has none. The wrapper adds it to the training loss.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_gates: torch.Tensor | None = None
        self.aux_loss: torch.Tensor | None = None


def gate_statistics(weights: dict) -> dict[str, float]:
    """Routing entropy (nats, mean over samples), its maximum, and expert usage (mean gate) per
    routed module, from ``{key: gates [B, E]}``."""
    stats: dict[str, float] = {}
    for key, gates in weights.items():
        g = gates.float().clamp_min(1e-12)
        stats[f"routing/{key}/entropy"] = float(-(g * g.log()).sum(-1).mean())
        stats[f"routing/{key}/max_entropy"] = math.log(g.shape[-1])
        for e, usage in enumerate(gates.float().mean(0).tolist()):
            stats[f"routing/{key}/expert{e}"] = usage
    return stats
