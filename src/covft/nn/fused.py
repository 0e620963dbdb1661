"""E MLP experts mixed per sample, computed as a few GEMMs instead of a loop over experts:
the functional form (:func:`fused_experts`, :func:`fused_swiglu_experts`) and its autograd functions.

The paper's release runs the experts one by one and stacks a ``[B, N, E, d]`` tensor before
the gated sum. Here all experts' ``fc1`` form one ``[d, E*h]`` GEMM, the per-sample gates scale
the activations grouped by expert, and one ``[E*h, d]`` GEMM for ``fc2`` sums over the experts
inside the matrix product. A custom autograd function keeps only ``x``, the fc1 output, the
gates and the weights for backward and recomputes the activation there, which is what makes the
CoMoE block cheaper in memory than the release (see ``benchmarks/bench_comoe.py``).

:func:`fused_swiglu_experts` does the same for gated MLPs ``down(act(gate(x)) * up(x))`` (SwiGLU,
the MLP of Qwen2.5-VL's vision blocks): ``gate`` and ``up`` of all experts are two ``[d, E*h]``
GEMMs and ``down`` one ``[E*h, d]`` GEMM; backward keeps ``x`` and the gate and up outputs and
recomputes ``act(gate) * up``."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from covft.nn._expert_ops import (
    _activation_kind,
    _ChunkActivation,
    _expert_linear,
    _expert_linear_grads,
    _gate,
    _grad_gated,
    _mix,
    _mix_grads,
    _row_chunks,
    _row_gates,
    _scratch,
    _through_gates,
)

__all__ = ["fused_experts", "fused_swiglu_experts"]


class _FusedExpertsFunction(torch.autograd.Function):
    """Forward and hand-written backward of the gated mixture of MLP experts.

    Saved for backward: ``x``, the fc1 pre-activation ``[B, N, E*h]``, the gates and the weights.
    The activation and the gated activation are recomputed in backward; the activation's
    derivative is in closed form for the usual ViT activations and comes from autograd on the
    activation module otherwise, so any element-wise activation works (QuickGELU, tanh-GELU,
    exact GELU, SiLU, ...). Every GEMM covers all experts and all tokens; element-wise work runs
    over chunks of token rows (see ``_CPU_CHUNK_BYTES``).
    """

    @staticmethod
    def forward(ctx, x, gates, fc1_weight, fc1_bias, fc2_weight, fc2_bias, act):
        pre = _expert_linear(x.reshape(-1, x.shape[-1]), fc1_weight, fc1_bias)
        row_gates = _row_gates(gates, x.shape[1])
        gated = _scratch("forward_gated", pre)
        for chunk in _row_chunks(*pre.shape, pre):
            _gate(act(pre[chunk]), row_gates[chunk], gated[chunk])
        out = _mix(gated, gates, fc2_weight, fc2_bias, x.shape)
        del gated
        ctx.act = act
        ctx.save_for_backward(x, pre, gates, fc1_weight, fc2_weight, fc2_bias)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, pre, gates, fc1_weight, fc2_weight, fc2_bias = ctx.saved_tensors
        need_x, need_gates, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:6]
        rows, wide = pre.shape
        need_pre = need_x or need_w1 or need_b1
        flat_grad_out = grad_out.reshape(rows, -1)
        row_gates = _row_gates(gates, x.shape[1])
        # d loss / d pre overwrites d loss / d gated chunk by chunk (each chunk is consumed first):
        # one activation-sized buffer fewer, which on CPU is also one fresh mmap fewer.
        grad_pre = _grad_gated(flat_grad_out, fc2_weight, pre) if need_gates or need_pre else None
        gated = _scratch("backward_gated", pre) if need_w2 else None
        row_grad_gates = pre.new_empty(rows, gates.shape[1]) if need_gates else None
        kind = _activation_kind(ctx.act)
        for chunk in _row_chunks(rows, wide, pre):
            activation = _ChunkActivation(ctx.act, kind, pre[chunk], need_pre)
            _through_gates(activation.values, chunk, row_gates, grad_pre, gated, row_grad_gates, need_pre)
            if need_pre:
                activation.vjp_(grad_pre[chunk])
            del activation

        grad_gates, grad_w2, grad_b2 = _mix_grads(grad_out, gates, gated, row_grad_gates, fc2_bias, need_b2)
        del gated
        flat_x = x.reshape(rows, -1)
        grad_x = grad_pre.mm(fc1_weight.reshape(wide, -1)).view(x.shape) if need_x else None
        grad_w1, grad_b1 = _expert_linear_grads(grad_pre, flat_x, fc1_weight, need_w1, need_b1)
        return grad_x, grad_gates, grad_w1, grad_b1, grad_w2, grad_b2, None


class _FusedSwiGLUExpertsFunction(torch.autograd.Function):
    """Forward and hand-written backward of the gated mixture of gated-MLP (SwiGLU) experts.

    Saved for backward: ``x``, the gate and up projections' outputs ``[B*N, E*h]`` each, the
    gates and the weights. ``act(gate) * up`` and its gated value are recomputed in backward; the
    activation's derivative is in closed form for SiLU (and the other kinds of
    :func:`_activation_kind`), from autograd on the activation module otherwise. Biases may be
    ``None``.
    """

    @staticmethod
    def forward(ctx, x, gates, gate_weight, gate_bias, up_weight, up_bias, down_weight, down_bias, act):
        flat_x = x.reshape(-1, x.shape[-1])
        gate_pre = _expert_linear(flat_x, gate_weight, gate_bias)
        up = _expert_linear(flat_x, up_weight, up_bias)
        row_gates = _row_gates(gates, x.shape[1])
        gated = _scratch("forward_gated", gate_pre)
        for chunk in _row_chunks(*gate_pre.shape, gate_pre):
            torch.mul(act(gate_pre[chunk]), up[chunk], out=gated[chunk])
            _gate(gated[chunk], row_gates[chunk], gated[chunk])
        out = _mix(gated, gates, down_weight, down_bias, x.shape)
        del gated
        ctx.act = act
        ctx.save_for_backward(x, gate_pre, up, gates, gate_weight, up_weight, down_weight, down_bias)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, gate_pre, up, gates, gate_weight, up_weight, down_weight, down_bias = ctx.saved_tensors
        need_x, need_gates, need_wg, need_bg, need_wu, need_bu, need_wd, need_bd = ctx.needs_input_grad[:8]
        rows, wide = gate_pre.shape
        need_grad_gate = need_x or need_wg or need_bg
        need_grad_up = need_x or need_wu or need_bu
        need_grad_hidden = need_grad_gate or need_grad_up
        flat_grad_out = grad_out.reshape(rows, -1)
        row_gates = _row_gates(gates, x.shape[1])
        # d loss / d gate_pre overwrites d loss / d gated chunk by chunk, as in FusedExperts.
        grad_gate = (
            _grad_gated(flat_grad_out, down_weight, gate_pre) if need_gates or need_grad_hidden else None
        )
        grad_up = _scratch("backward_grad_up", up) if need_grad_up else None
        gated = _scratch("backward_gated", gate_pre) if need_wd else None
        row_grad_gates = gate_pre.new_empty(rows, gates.shape[1]) if need_gates else None
        kind = _activation_kind(ctx.act)
        for chunk in _row_chunks(rows, wide, gate_pre):
            activation = _ChunkActivation(ctx.act, kind, gate_pre[chunk], need_grad_gate)
            up_chunk = up[chunk]
            hidden = activation.values * up_chunk
            _through_gates(hidden, chunk, row_gates, grad_gate, gated, row_grad_gates, need_grad_hidden)
            del hidden
            if need_grad_up:  # d hidden / d up = act(gate)
                torch.mul(grad_gate[chunk], activation.values, out=grad_up[chunk])
            if need_grad_gate:  # d hidden / d gate = up * act'(gate)
                activation.vjp_(grad_gate[chunk].mul_(up_chunk))
            del activation

        grad_gates, grad_wd, grad_bd = _mix_grads(grad_out, gates, gated, row_grad_gates, down_bias, need_bd)
        del gated
        flat_x = x.reshape(rows, -1)
        grad_x = None
        if need_x:
            grad_x = grad_gate.mm(gate_weight.reshape(wide, -1))
            grad_x = grad_x.addmm_(grad_up, up_weight.reshape(wide, -1)).view(x.shape)
        grad_wg, grad_bg = _expert_linear_grads(grad_gate, flat_x, gate_weight, need_wg, need_bg)
        grad_wu, grad_bu = _expert_linear_grads(grad_up, flat_x, up_weight, need_wu, need_bu)
        return grad_x, grad_gates, grad_wg, grad_bg, grad_wu, grad_bu, grad_wd, grad_bd, None


def _check_inputs(
    x: torch.Tensor,
    gates: torch.Tensor,
    hidden_layers: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    out_layer: tuple[str, torch.Tensor, torch.Tensor | None],
) -> None:
    """Raise a ValueError naming the first input whose shape is wrong. ``hidden_layers`` maps a
    layer name to its ``(weight [E, h, d], bias [E, h])``, ``out_layer`` is ``(name, weight
    [E, h, d], bias [E, d])``; E and h are read from the first hidden weight, B and d from
    ``x [B, N, d]``. ``None`` biases are skipped."""
    first, (first_weight, _) = next(iter(hidden_layers.items()))
    if x.dim() != 3:
        raise ValueError(f"x must be [B, N, d], got shape {tuple(x.shape)}")
    if first_weight.dim() != 3:
        raise ValueError(f"{first}_weight must be [E, h, d], got shape {tuple(first_weight.shape)}")
    batch, _, dim = x.shape
    num_experts, hidden, _ = first_weight.shape
    out_name, out_weight, out_bias = out_layer
    expected = {}
    for name, (weight, bias) in hidden_layers.items():
        expected[f"{name}_weight"] = (weight, (num_experts, hidden, dim))
        expected[f"{name}_bias"] = (bias, (num_experts, hidden))
    expected[f"{out_name}_weight"] = (out_weight, (num_experts, hidden, dim))
    expected[f"{out_name}_bias"] = (out_bias, (num_experts, dim))
    expected["gates"] = (gates, (batch, num_experts))
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} for x of shape {tuple(x.shape)} and {num_experts} experts "
                f"of hidden size {hidden}, got {tuple(tensor.shape)}"
            )


def _apply(function: type[torch.autograd.Function], x: torch.Tensor, tensors: list, act: nn.Module):
    """``function.apply(x, *tensors, act)`` with everything cast to the compute dtype: the autocast
    dtype under ``torch.autocast`` (autocast is then disabled inside), else ``x.dtype``."""
    if getattr(act, "inplace", False):
        raise ValueError(f"act must be out-of-place (its input is saved for backward), got {act!r}")
    device_type = x.device.type
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
    args = [None if t is None else t.to(dtype) for t in (x, *tensors)]
    if autocast:
        with torch.autocast(device_type, enabled=False):
            return function.apply(*args, act)
    return function.apply(*args, act)


def fused_experts(
    x: torch.Tensor,
    gates: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    act: nn.Module,
) -> torch.Tensor:
    """``y[b] = sum_e gates[b, e] * (fc2_e(act(fc1_e(x[b]))))`` for all experts in two GEMMs.

    Args:
        x: ``[B, N, d]`` tokens.
        gates: ``[B, E]`` per-sample expert weights (one gate vector shared by all tokens).
        fc1_weight: ``[E, h, d]`` (``nn.Linear`` layout stacked over experts); fc1_bias: ``[E, h]``;
            fc2_weight: ``[E, h, d]`` (each expert's ``fc2.weight`` transposed, so all experts' fc2
            is one contiguous ``[E*h, d]`` matrix and needs no copy); fc2_bias: ``[E, d]``.
        act: element-wise, parameter-free, out-of-place activation module.

    Returns:
        ``[B, N, d]``. Under ``torch.autocast`` everything is computed in the autocast dtype;
        otherwise gates and weights are cast to ``x.dtype``.
    """
    _check_inputs(x, gates, {"fc1": (fc1_weight, fc1_bias)}, ("fc2", fc2_weight, fc2_bias))
    return _apply(_FusedExpertsFunction, x, [gates, fc1_weight, fc1_bias, fc2_weight, fc2_bias], act)


def fused_swiglu_experts(
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
    """``y[b] = sum_e gates[b, e] * down_e(act(gate_e(x[b])) * up_e(x[b]))`` for all experts in three GEMMs.

    The gated MLP of SwiGLU (``act`` = SiLU), e.g. Qwen2.5-VL's vision MLP.

    Args:
        x: ``[B, N, d]`` tokens.
        gates: ``[B, E]`` per-sample expert weights (one gate vector shared by all tokens).
        gate_weight, up_weight: ``[E, h, d]`` (``nn.Linear`` layout stacked over experts);
            gate_bias, up_bias: ``[E, h]`` or ``None``; down_weight: ``[E, h, d]`` (each expert's
            ``down_proj.weight`` transposed, one contiguous ``[E*h, d]`` matrix); down_bias:
            ``[E, d]`` or ``None``.
        act: element-wise, parameter-free, out-of-place activation module (``nn.SiLU()`` for SwiGLU).

    Returns:
        ``[B, N, d]``, in the dtype rule of :func:`fused_experts`.
    """
    hidden_layers = {"gate": (gate_weight, gate_bias), "up": (up_weight, up_bias)}
    _check_inputs(x, gates, hidden_layers, ("down", down_weight, down_bias))
    tensors = [gates, gate_weight, gate_bias, up_weight, up_bias, down_weight, down_bias]
    return _apply(_FusedSwiGLUExpertsFunction, x, tensors, act)
