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


def loop_swiglu_experts(
    x: torch.Tensor,
    gates: torch.Tensor,
    gate_weight: torch.Tensor,
    gate_bias: torch.Tensor | None,
    up_weight: torch.Tensor,
    up_bias: torch.Tensor | None,
    down_weight: torch.Tensor,
    down_bias: torch.Tensor | None,
    act: nn.Module,
) -> torch.Tensor:
    """``sum_e gates[:, e] * down_e(act(gate_e(x)) * up_e(x))``, one expert at a time with plain autograd."""
    out = torch.zeros_like(x)
    for e in range(gate_weight.shape[0]):
        gate_b, up_b, down_b = (None if b is None else b[e] for b in (gate_bias, up_bias, down_bias))
        hidden = act(F.linear(x, gate_weight[e], gate_b)) * F.linear(x, up_weight[e], up_b)
        out = out + gates[:, e, None, None] * F.linear(hidden, down_weight[e].t(), down_b)
    return out


@pytest.fixture
def reference_swiglu_experts():
    return loop_swiglu_experts


class TinyMLP(nn.Module):
    """The CLIPMLP/SiglipMLP interface (.fc1, .activation_fn, .fc2) without importing transformers."""

    def __init__(self, dim: int, hidden: int, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.activation_fn = act
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class TinySwiGLUMLP(nn.Module):
    """Qwen2.5-VL's vision MLP (transformers' ``Qwen2_5_VLMLP``: .gate_proj, .up_proj, .down_proj,
    .act_fn = SiLU, biases in the vision blocks) without importing transformers."""

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        self.act_fn = nn.SiLU()

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_state)) * self.up_proj(hidden_state))


@pytest.fixture
def tiny_swiglu_mlp():
    torch.manual_seed(0)
    return TinySwiGLUMLP(16, 40)


@pytest.fixture
def tiny_mlp():
    torch.manual_seed(0)
    from covft.nn import QuickGELU

    return TinyMLP(16, 48, QuickGELU())
