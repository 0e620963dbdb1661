"""E MLP experts as modules, upcycled from a pretrained MLP: :class:`FusedExperts` (fc1, act, fc2:
CLIP/SigLIP) and :class:`FusedSwiGLUExperts` (gated SwiGLU: Qwen2.5-VL's vision MLP). Their forward is
the fused functional form of :mod:`covft.nn.fused`.

The gates are per row of ``x [B, N, d]``. A row is a sample when each sample has one image; for
tiles ``[R, N, d]`` and packed tokens (``[T, 1, d]``) :class:`~covft.nn.comoe.ContextualMoE` passes
each row its sample's gates (``gates[owner]``), so the kernels never see the owner."""

from __future__ import annotations

import math

import torch
from torch import nn

from covft.nn._expert_ops import release_workspace
from covft.nn.fused import fused_experts, fused_swiglu_experts

__all__ = ["FusedExperts", "FusedSwiGLUExperts", "fused_experts", "fused_swiglu_experts", "release_workspace"]


class _Experts(nn.Module):
    """What both fused expert kinds share: their sizes, the activation module and the repr."""

    def __init__(self, num_experts: int, dim: int, hidden_dim: int, act: nn.Module) -> None:
        super().__init__()
        if num_experts < 1 or dim < 1 or hidden_dim < 1:
            raise ValueError(
                f"num_experts, dim and hidden_dim must be positive, got {num_experts}, {dim}, {hidden_dim}"
            )
        self.num_experts = num_experts
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.act = act

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, dim={self.dim}, hidden_dim={self.hidden_dim}"


def _linear_init_(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """``nn.Linear``'s init, independent per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


def _check_gathered(name: str, linear: nn.Linear) -> None:
    expected = linear.out_features * linear.in_features
    if linear.weight.numel() != expected:
        raise ValueError(
            f"{name}.weight holds {linear.weight.numel()} values, expected {expected}: "
            "gather sharded (ZeRO-3) parameters before upcycling"
        )


def _upcycle_(weight: torch.Tensor, bias: torch.Tensor | None, linear: nn.Linear, transposed: bool) -> None:
    """Copy ``linear``'s weight (transposed for an output projection) and bias into every expert;
    a missing bias becomes zeros."""
    with torch.no_grad():
        source = linear.weight.t() if transposed else linear.weight
        weight.copy_(source.unsqueeze(0).expand_as(weight))
        if bias is not None and linear.bias is None:
            bias.zero_()
        elif bias is not None:
            bias.copy_(linear.bias.unsqueeze(0).expand_as(bias))


class FusedExperts(_Experts):
    """E experts with the MLP shape fc1 (d->h), act, fc2 (h->d), mixed per sample by gates [B, E].

    Parameters: ``fc1_weight [E, h, d]`` and ``fc1_bias [E, h]`` (``nn.Linear`` layout stacked over
    experts), ``fc2_weight [E, h, d]`` (each expert's ``fc2.weight`` **transposed**: all experts' fc2
    is then one contiguous ``[E*h, d]`` matrix, used by the single fc2 GEMM without a copy) and
    ``fc2_bias [E, d]``. Build it from a pretrained
    MLP with :meth:`from_linear` (upcycling) so that every expert starts as that MLP.

    Args:
        num_experts: E.
        dim: model width d.
        hidden_dim: MLP width h.
        act: activation module applied between fc1 and fc2 (kept as a submodule).
        device, dtype: where to allocate the parameters.
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        hidden_dim: int,
        act: nn.Module,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_experts, dim, hidden_dim, act)
        factory = {"device": device, "dtype": dtype}
        self.fc1_weight = nn.Parameter(torch.empty(num_experts, hidden_dim, dim, **factory))
        self.fc1_bias = nn.Parameter(torch.empty(num_experts, hidden_dim, **factory))
        self.fc2_weight = nn.Parameter(torch.empty(num_experts, hidden_dim, dim, **factory))
        self.fc2_bias = nn.Parameter(torch.empty(num_experts, dim, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Independent ``nn.Linear``-style init per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        _linear_init_(self.fc1_weight, self.fc1_bias, self.dim)
        _linear_init_(self.fc2_weight, self.fc2_bias, self.hidden_dim)

    @classmethod
    def from_linear(cls, fc1: nn.Linear, fc2: nn.Linear, act: nn.Module, num_experts: int) -> FusedExperts:
        """Upcycle a pretrained MLP: every expert is a copy of ``fc1``/``fc2`` weights and biases.

        Parameters land on the device and dtype of ``fc1.weight``. A missing bias becomes zeros.
        Under DeepSpeed ZeRO-3 the caller must gather ``fc1``/``fc2`` first (their local shards
        are empty), e.g. inside ``deepspeed.zero.GatheredParameters``.
        """
        if fc1.out_features != fc2.in_features or fc2.out_features != fc1.in_features:
            raise ValueError(
                "fc1/fc2 do not form an MLP d->h->d: "
                f"fc1 {fc1.in_features}->{fc1.out_features}, fc2 {fc2.in_features}->{fc2.out_features}"
            )
        _check_gathered("fc1", fc1)
        _check_gathered("fc2", fc2)
        weight = fc1.weight
        experts = cls(
            num_experts, fc1.in_features, fc1.out_features, act, device=weight.device, dtype=weight.dtype
        )
        _upcycle_(experts.fc1_weight, experts.fc1_bias, fc1, transposed=False)
        _upcycle_(experts.fc2_weight, experts.fc2_bias, fc2, transposed=True)
        return experts

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``x [B, N, d]``, ``gates [B, E]`` -> ``[B, N, d]``, see :func:`fused_experts`."""
        return fused_experts(
            x, gates, self.fc1_weight, self.fc1_bias, self.fc2_weight, self.fc2_bias, self.act
        )


class FusedSwiGLUExperts(_Experts):
    """E gated-MLP experts ``down(act(gate(x)) * up(x))`` (SwiGLU with the default SiLU, the MLP of
    Qwen2.5-VL's vision blocks), mixed per sample by gates [B, E].

    Parameters: ``gate_weight``, ``up_weight [E, h, d]`` and ``gate_bias``, ``up_bias [E, h]``
    (``nn.Linear`` layout stacked over experts), ``down_weight [E, h, d]`` (each expert's
    ``down_proj.weight`` **transposed**, as ``FusedExperts.fc2_weight``) and ``down_bias [E, d]``;
    with ``bias=False`` the three biases are ``None``. Build it from a pretrained gated MLP with
    :meth:`from_linear` (upcycling) so that every expert starts as that MLP.

    Args:
        num_experts: E.
        dim: model width d.
        hidden_dim: MLP width h (``intermediate_size``).
        act: activation applied to the gate projection (kept as a submodule); ``None``: ``nn.SiLU()``.
        bias: whether the three projections have biases (Qwen2.5-VL's vision MLP: yes; LLaMA-style: no).
        device, dtype: where to allocate the parameters.
    """

    def __init__(
        self,
        num_experts: int,
        dim: int,
        hidden_dim: int,
        act: nn.Module | None = None,
        *,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_experts, dim, hidden_dim, nn.SiLU() if act is None else act)
        factory = {"device": device, "dtype": dtype}
        for name in ("gate", "up", "down"):
            self.register_parameter(
                f"{name}_weight", nn.Parameter(torch.empty(num_experts, hidden_dim, dim, **factory))
            )
            width = dim if name == "down" else hidden_dim
            parameter = nn.Parameter(torch.empty(num_experts, width, **factory)) if bias else None
            self.register_parameter(f"{name}_bias", parameter)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Independent ``nn.Linear``-style init per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        _linear_init_(self.gate_weight, self.gate_bias, self.dim)
        _linear_init_(self.up_weight, self.up_bias, self.dim)
        _linear_init_(self.down_weight, self.down_bias, self.hidden_dim)

    @classmethod
    def from_linear(
        cls, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear, act: nn.Module, num_experts: int
    ) -> FusedSwiGLUExperts:
        """Upcycle a pretrained gated MLP: every expert is a copy of its three projections.

        Parameters land on the device and dtype of ``gate_proj.weight``. The experts have biases
        if any projection has one; a missing bias then becomes zeros. Under DeepSpeed ZeRO-3 the
        caller must gather the projections first, as for :meth:`FusedExperts.from_linear`.
        """
        projections = {"gate": gate_proj, "up": up_proj, "down": down_proj}
        shapes = {name: (linear.in_features, linear.out_features) for name, linear in projections.items()}
        dim, hidden = shapes["gate"]
        if shapes != {"gate": (dim, hidden), "up": (dim, hidden), "down": (hidden, dim)}:
            found = ", ".join(
                f"{name}_proj {fan_in}->{fan_out}" for name, (fan_in, fan_out) in shapes.items()
            )
            raise ValueError(f"gate_proj/up_proj/down_proj do not form a gated MLP d->h->d: {found}")
        for name, linear in projections.items():
            _check_gathered(f"{name}_proj", linear)
        weight = gate_proj.weight
        bias = any(linear.bias is not None for linear in projections.values())
        experts = cls(num_experts, dim, hidden, act, bias=bias, device=weight.device, dtype=weight.dtype)
        for name, linear in projections.items():
            target_weight = getattr(experts, f"{name}_weight")
            _upcycle_(target_weight, getattr(experts, f"{name}_bias"), linear, transposed=name == "down")
        return experts

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``x [B, N, d]``, ``gates [B, E]`` -> ``[B, N, d]``, see :func:`fused_swiglu_experts`."""
        return fused_swiglu_experts(
            x,
            gates,
            self.gate_weight,
            self.gate_bias,
            self.up_weight,
            self.up_bias,
            self.down_weight,
            self.down_bias,
            self.act,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.gate_bias is not None}"
