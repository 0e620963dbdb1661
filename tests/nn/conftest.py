"""Shared helpers for the covft.nn tests: the per-expert reference loop lives here, never in src."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def loop_experts(
    x: torch.Tensor,
    gates: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    act: nn.Module,
) -> torch.Tensor:
    """``sum_e gates[:, e] * fc2_e(act(fc1_e(x)))``, one expert at a time with plain autograd."""
    out = torch.zeros_like(x)
    for e in range(fc1_weight.shape[0]):
        expert = F.linear(act(F.linear(x, fc1_weight[e], fc1_bias[e])), fc2_weight[e].t(), fc2_bias[e])
        out = out + gates[:, e, None, None] * expert
    return out


@pytest.fixture
def reference_experts():
    return loop_experts


class TinyMLP(nn.Module):
    """The CLIPMLP/SiglipMLP interface (.fc1, .activation_fn, .fc2) without importing transformers."""

    def __init__(self, dim: int, hidden: int, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.activation_fn = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


@pytest.fixture
def tiny_mlp():
    torch.manual_seed(0)
    from covft.nn import QuickGELU

    return TinyMLP(16, 48, QuickGELU())
