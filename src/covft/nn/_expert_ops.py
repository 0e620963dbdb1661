"""The pieces of the fused experts' forward and backward: GEMMs over all experts, gating, chunked
element-wise work and the reusable CPU scratch buffers (see :mod:`covft.nn.fused`)."""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

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
