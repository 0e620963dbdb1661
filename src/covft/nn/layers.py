"""Small building blocks shared by the context-aware modules (CVE, CoMoE)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["QuickGELU", "PostNormResidualBlock"]


class QuickGELU(nn.Module):
    """CLIP's activation, ``x * sigmoid(1.702 x)``.

    CoVFT's residual blocks use it (method.md 2.2) so that they match the CLIP tower they sit in.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class PostNormResidualBlock(nn.Module):
    """``RB(x) = LN(x + W2 act(W1 x))`` with ``W1: k -> expansion*k`` and ``W2: expansion*k -> k``.

    The post-norm residual block of the Context Vector Extractor (method.md 2.2). It works on the
    last axis, so it accepts ``[..., dim]`` inputs (token sequences or single vectors alike).

    Args:
        dim: feature size ``k`` of input and output.
        act_layer: activation class, instantiated without arguments.
        expansion: width multiplier of the hidden layer (2 in the paper).
    """

    def __init__(self, dim: int, act_layer: type[nn.Module] = QuickGELU, expansion: int = 2) -> None:
        super().__init__()
        if dim < 1 or expansion < 1:
            raise ValueError(f"dim and expansion must be positive, got dim={dim}, expansion={expansion}")
        self.fc1 = nn.Linear(dim, expansion * dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(expansion * dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(self.act(self.fc1(x))))
