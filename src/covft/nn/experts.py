"""E MLP experts mixed per sample, computed as a few GEMMs instead of a loop over experts.

The paper's release runs the experts one by one and stacks a ``[B, N, E, d]`` tensor before
the gated sum. Here all experts' ``fc1`` form one ``[d, E*h]`` GEMM, the per-sample gates scale
the activations grouped by expert, and one ``[E*h, d]`` GEMM for ``fc2`` sums over the experts
inside the matrix product. A custom autograd function keeps only ``x``, the fc1 output, the
gates and the weights for backward and recomputes the activation there, which is what makes the
CoMoE block cheaper in memory than the release (see ``benchmarks/bench_comoe.py``).

:class:`FusedSwiGLUExperts` does the same for gated MLPs ``down(act(gate(x)) * up(x))`` (SwiGLU,
the MLP of Qwen2.5-VL's vision blocks): ``gate`` and ``up`` of all experts are two ``[d, E*h]``
GEMMs and ``down`` one ``[E*h, d]`` GEMM; backward keeps ``x`` and the gate and up outputs and
recomputes ``act(gate) * up``."""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["FusedExperts", "FusedSwiGLUExperts", "fused_experts", "fused_swiglu_experts", "release_workspace"]


# Element-wise work (activation, gating, the activation's derivative) runs over chunks of token
# rows whose [rows, E*h] temporaries stay below this many bytes on CPU, so they are recycled by
# the system allocator and stay in cache instead of costing fresh page faults on every call.
# GEMMs always cover all rows (splitting them would re-pack the weights per chunk). GPUs (caching
# allocator) use a single chunk.
_CPU_CHUNK_BYTES = 2**20


_workspace = threading.local()


def _scratch(tag: str, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor shaped like ``like`` for a temporary that dies inside one call.

    On CPU the buffer is kept per thread and tag and reused by the next call: glibc serves every
    block above 32 MiB (here each ``[B*N, E*h]`` temporary) with a fresh ``mmap`` whose pages fault
    in again on every call, which costs more than the element-wise work itself. Elsewhere (the
    CUDA caching allocator already reuses blocks) this is ``torch.empty_like``. Free the buffers
    with :func:`release_workspace`.
    """
    if like.device.type != "cpu":
        return torch.empty_like(like)
    buffers = getattr(_workspace, "buffers", None)
    if buffers is None:
        buffers = _workspace.buffers = {}
    buffer = buffers.get(tag)
    if buffer is None or buffer.numel() < like.numel() or buffer.dtype != like.dtype:
        buffer = buffers[tag] = torch.empty(like.numel(), dtype=like.dtype)
    return buffer[: like.numel()].view(like.shape)


def release_workspace() -> None:
    """Drop this thread's reusable CPU scratch buffers (see ``_scratch``)."""
    _workspace.buffers = {}


def _activation_kind(act: nn.Module) -> str | None:
    """Activations whose derivative the backward computes in closed form (fewer passes over the
    ``[B*N, E*h]`` activations than autograd): "quick_gelu", "silu", "tanh" or "none" (exact
    GELU). ``None`` for anything else, which goes through autograd."""
    name = type(act).__name__
    if name in ("QuickGELU", "QuickGELUActivation"):
        return "quick_gelu"
    if isinstance(act, nn.SiLU) or name == "SiLUActivation":
        return "silu"
    if name in ("GELUTanh", "PytorchGELUTanh"):
        return "tanh"
    if isinstance(act, nn.GELU):
        return act.approximate
    if name == "GELUActivation" and getattr(act, "act", None) is F.gelu:
        return "none"
    return None


class _ChunkActivation:
    """``act`` recomputed in backward on one chunk of pre-activations, and its vector-Jacobian
    product written in place (closed form for the kinds of :func:`_activation_kind`, autograd
    on ``act`` otherwise).

    Attributes:
        values: ``act(pre)``, shaped like ``pre``.
    """

    def __init__(self, act: nn.Module, kind: str | None, pre: torch.Tensor, need_vjp: bool) -> None:
        self.kind, self.pre = kind, pre
        if kind == "quick_gelu":  # x * sigmoid(1.702 x)
            self.sigmoid = torch.sigmoid(pre * 1.702)
            self.values = pre * self.sigmoid
        elif kind == "silu":
            self.values = F.silu(pre)
        elif kind is None:
            with torch.enable_grad():
                self.leaf = pre.detach().requires_grad_(need_vjp)
                self.graph = act(self.leaf)
            self.values = self.graph.detach()
        else:
            self.values = F.gelu(pre, approximate=kind)

    def vjp_(self, grad: torch.Tensor) -> None:
        """``grad <- grad * act'(pre)`` in place; ``grad`` is shaped like ``pre``."""
        if self.kind == "quick_gelu":  # d/dx = s + 1.702 * x s (1 - s)
            grad.mul_(torch.addcmul(self.sigmoid, self.values, 1.0 - self.sigmoid, value=1.702))
        elif self.kind == "silu":
            torch.ops.aten.silu_backward.grad_input(grad, self.pre, grad_input=grad)
        elif self.kind is None:
            grad.copy_(torch.autograd.grad(self.graph, self.leaf, grad)[0])
        else:
            torch.ops.aten.gelu_backward.grad_input(grad, self.pre, approximate=self.kind, grad_input=grad)


def _row_chunks(rows: int, width: int, tensor: torch.Tensor) -> list[slice]:
    if tensor.device.type != "cpu":
        return [slice(0, rows)]
    step = max(1, _CPU_CHUNK_BYTES // (width * tensor.element_size()))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _by_expert(tensor: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``[rows, E*h]`` viewed as ``[rows, E, h]``."""
    return tensor.view(tensor.shape[0], num_experts, -1)


def _row_gates(gates: torch.Tensor, tokens: int) -> torch.Tensor:
    """``[B, E]`` per-sample gates repeated for each token row: ``[B*N, E, 1]``."""
    return gates.repeat_interleave(tokens, dim=0).unsqueeze(-1)


def _expert_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x [rows, d]`` through every expert's ``weight [E, h, d]`` (and ``bias [E, h]``) in one GEMM:
    ``[rows, E*h]``, grouped by expert."""
    flat_weight = weight.reshape(-1, weight.shape[-1]).t()
    return x.mm(flat_weight) if bias is None else torch.addmm(bias.reshape(-1), x, flat_weight)


def _expert_linear_grads(
    grad_pre: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_weight: bool, need_bias: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`_expert_linear`'s weight and bias from ``grad_pre [rows, E*h]``."""
    grad_weight = grad_pre.t().mm(x).view(weight.shape) if need_weight else None
    grad_bias = grad_pre.sum(0).view(weight.shape[:2]) if need_bias else None
    return grad_weight, grad_bias


def _gate(hidden: torch.Tensor, row_gates: torch.Tensor, out: torch.Tensor) -> None:
    """``out = hidden * gates`` per expert, for chunks of rows ``hidden``/``out [rows, E*h]``."""
    num_experts = row_gates.shape[1]
    torch.mul(_by_expert(hidden, num_experts), row_gates, out=_by_expert(out, num_experts))


def _mix(
    gated: torch.Tensor,
    gates: torch.Tensor,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
    shape: torch.Size,
) -> torch.Tensor:
    """The experts' output projection ``out_weight [E, h, d]`` on the gated activations
    ``[B*N, E*h]`` as one GEMM that sums over the experts, plus the gated biases ``[E, d]``."""
    out = gated.mm(out_weight.reshape(-1, out_weight.shape[-1])).view(shape)
    if out_bias is not None:
        out.add_((gates @ out_bias).unsqueeze(1))
    return out


def _grad_gated(grad_out: torch.Tensor, out_weight: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """d loss / d gated activations ``[B*N, E*h]`` (all experts in one GEMM), in a scratch buffer
    that backward then scales in place into the gradients of what the gates scale."""
    flat_weight = out_weight.reshape(-1, out_weight.shape[-1])
    return torch.mm(grad_out, flat_weight.t(), out=_scratch("backward_grad", like))


def _through_gates(
    hidden: torch.Tensor,
    chunk: slice,
    row_gates: torch.Tensor,
    grad: torch.Tensor | None,
    gated: torch.Tensor | None,
    row_grad_gates: torch.Tensor | None,
    need_grad_hidden: bool,
) -> None:
    """Backward through the gates for one chunk of rows, given ``hidden`` (the recomputed values
    that the gates scale, ``[rows, E*h]``): writes the gated values into ``gated`` (for the output
    weight's gradient) and d loss / d gates per row into ``row_grad_gates``, and, if
    ``need_grad_hidden``, scales ``grad`` (d loss / d gated) in place into d loss / d hidden.
    ``None`` outputs are skipped."""
    row_gates = row_gates[chunk]
    num_experts = row_gates.shape[1]
    if gated is not None:
        _gate(hidden, row_gates, gated[chunk])
    if row_grad_gates is not None:
        grad_by_expert = _by_expert(grad[chunk], num_experts)
        torch.sum(grad_by_expert * _by_expert(hidden, num_experts), dim=-1, out=row_grad_gates[chunk])
    if need_grad_hidden:
        _by_expert(grad[chunk], num_experts).mul_(row_gates)


def _mix_grads(
    grad_out: torch.Tensor,
    gates: torch.Tensor,
    gated: torch.Tensor | None,
    row_grad_gates: torch.Tensor | None,
    out_bias: torch.Tensor | None,
    need_bias: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`_mix` for gates, out_weight and out_bias. ``grad_out [B, N, d]``;
    ``gated``: the recomputed gated activations (``None``: out_weight needs no gradient);
    ``row_grad_gates [B*N, E]``: the gated activations' share of d loss / d gates per row
    (``None``: gates need no gradient)."""
    batch, tokens, dim = grad_out.shape
    grad_gates = grad_weight = grad_bias = None
    if row_grad_gates is not None or need_bias:
        per_sample_grad_out = grad_out.sum(1)  # [B, d]
    if row_grad_gates is not None:
        grad_gates = row_grad_gates.view(batch, tokens, -1).sum(1)
        if out_bias is not None:
            grad_gates += per_sample_grad_out.mm(out_bias.t())
    if need_bias:
        grad_bias = gates.t().mm(per_sample_grad_out)
    if gated is not None:
        num_experts = gates.shape[1]
        grad_weight = gated.t().mm(grad_out.reshape(-1, dim)).view(num_experts, -1, dim)
    return grad_gates, grad_weight, grad_bias


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
