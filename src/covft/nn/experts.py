"""E MLP experts mixed per sample, computed as two GEMMs instead of a loop over experts.

The paper's release runs the experts one by one and stacks a ``[B, N, E, d]`` tensor before
the gated sum. Here all experts' ``fc1`` form one ``[d, E*h]`` GEMM, the per-sample gates scale
the activations grouped by expert, and one ``[E*h, d]`` GEMM for ``fc2`` sums over the experts
inside the matrix product. A custom autograd function keeps only ``x``, the fc1 output, the
gates and the weights for backward and recomputes the activation there, which is what makes the
CoMoE block cheaper in memory than the release (see ``benchmarks/bench_comoe.py``).
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["FusedExperts", "fused_experts", "release_workspace"]


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
    ``[B*N, E*h]`` activations than autograd): "quick_gelu", "tanh" or "none" (exact GELU).
    ``None`` for anything else, which goes through autograd."""
    name = type(act).__name__
    if name in ("QuickGELU", "QuickGELUActivation"):
        return "quick_gelu"
    if name in ("GELUTanh", "PytorchGELUTanh"):
        return "tanh"
    if isinstance(act, nn.GELU):
        return act.approximate
    if name == "GELUActivation" and getattr(act, "act", None) is F.gelu:
        return "none"
    return None


def _row_chunks(rows: int, width: int, tensor: torch.Tensor) -> list[slice]:
    if tensor.device.type != "cpu":
        return [slice(0, rows)]
    step = max(1, _CPU_CHUNK_BYTES // (width * tensor.element_size()))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


class _FusedExpertsFunction(torch.autograd.Function):
    """Forward and hand-written backward of the gated mixture of MLP experts.

    Saved for backward: ``x``, the fc1 pre-activation ``[B, N, E*h]``, the gates and the weights.
    The activation and the gated activation are recomputed in backward; the activation's
    derivative comes from autograd on the activation module, so any element-wise activation
    works (QuickGELU, tanh-GELU, exact GELU, ...). Every GEMM covers all experts and all tokens;
    element-wise work runs over chunks of token rows (see ``_CPU_CHUNK_BYTES``).
    """

    @staticmethod
    def forward(ctx, x, gates, fc1_weight, fc1_bias, fc2_weight, fc2_bias, act):
        batch, tokens, dim = x.shape
        num_experts, hidden, _ = fc1_weight.shape
        rows, wide = batch * tokens, num_experts * hidden
        pre = torch.addmm(fc1_bias.reshape(wide), x.reshape(rows, dim), fc1_weight.reshape(wide, dim).t())
        row_gates = gates.repeat_interleave(tokens, dim=0).unsqueeze(-1)  # [rows, E, 1]
        gated = _scratch("forward_gated", pre)
        for chunk in _row_chunks(rows, wide, pre):
            torch.mul(
                act(pre[chunk]).view(-1, num_experts, hidden),
                row_gates[chunk],
                out=gated[chunk].view(-1, num_experts, hidden),
            )
        out = gated.mm(fc2_weight.reshape(wide, dim))  # sums over experts inside the GEMM
        del gated
        out = out.view(batch, tokens, dim).add_((gates @ fc2_bias).unsqueeze(1))
        ctx.act = act
        ctx.save_for_backward(x, pre, gates, fc1_weight, fc2_weight, fc2_bias)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, pre, gates, fc1_weight, fc2_weight, fc2_bias = ctx.saved_tensors
        need_x, need_gates, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:6]
        batch, tokens, dim = x.shape
        num_experts, hidden, _ = fc1_weight.shape
        rows, wide = batch * tokens, num_experts * hidden
        grad_out = grad_out.reshape(rows, dim)
        need_pre = need_x or need_w1 or need_b1
        grad_x = grad_gates = grad_w1 = grad_b1 = grad_w2 = grad_b2 = None
        if not (need_pre or need_gates or need_w2 or need_b2):
            return grad_x, grad_gates, grad_w1, grad_b1, grad_w2, grad_b2, None

        row_gates = gates.repeat_interleave(tokens, dim=0).unsqueeze(-1)  # [rows, E, 1]
        # d loss / d (gated activation), all experts in one GEMM; scaled in place into d loss / d act.
        grad_gated = None
        if need_gates or need_pre:
            grad_gated = torch.mm(
                grad_out, fc2_weight.reshape(wide, dim).t(), out=_scratch("backward_grad", pre)
            )
        gated = _scratch("backward_gated", pre) if need_w2 else None
        # d loss / d pre overwrites grad_gated chunk by chunk (each chunk is consumed first): one
        # activation-sized buffer fewer, which on CPU is also one fresh mmap fewer.
        grad_pre = grad_gated if need_pre else None
        row_grad_gates = pre.new_empty(rows, num_experts) if need_gates else None
        kind = _activation_kind(ctx.act)
        for chunk in _row_chunks(rows, wide, pre):
            pre_chunk = pre[chunk]
            if kind is None:  # any activation: its derivative through autograd
                with torch.enable_grad():
                    pre_chunk = pre_chunk.detach().requires_grad_(need_pre)
                    activated = ctx.act(pre_chunk)
                act_flat = activated.detach()
            elif kind == "quick_gelu":  # x * sigmoid(1.702 x), derivative in closed form below
                sig = torch.sigmoid(pre_chunk * 1.702)
                act_flat = pre_chunk * sig
            else:
                act_flat = F.gelu(pre_chunk, approximate=kind)
            act_values = act_flat.view(-1, num_experts, hidden)
            if need_w2:
                torch.mul(act_values, row_gates[chunk], out=gated[chunk].view(-1, num_experts, hidden))
            if grad_gated is not None:
                grad_gated_chunk = grad_gated[chunk].view(-1, num_experts, hidden)
                if need_gates:
                    torch.sum(grad_gated_chunk * act_values, dim=-1, out=row_grad_gates[chunk])
                if need_pre:
                    grad_act = grad_gated_chunk.mul_(row_gates[chunk]).view(-1, wide)
                    if kind is None:
                        (grad_pre[chunk],) = torch.autograd.grad(activated, pre_chunk, grad_act)
                    elif kind == "quick_gelu":  # d/dx = s + 1.702 * x s (1 - s), written in place
                        grad_act.mul_(torch.addcmul(sig, act_flat, 1.0 - sig, value=1.702))
                    else:
                        torch.ops.aten.gelu_backward.grad_input(
                            grad_act, pre_chunk, approximate=kind, grad_input=grad_pre[chunk]
                        )
            del act_flat, act_values
        del grad_gated

        if need_gates or need_b2:
            per_sample_grad_out = grad_out.view(batch, tokens, dim).sum(1)  # [B, d]
        if need_gates:
            grad_gates = row_grad_gates.view(batch, tokens, num_experts).sum(1)
            grad_gates += per_sample_grad_out.mm(fc2_bias.t())
        if need_b2:
            grad_b2 = gates.t().mm(per_sample_grad_out)
        if need_w2:
            grad_w2 = gated.t().mm(grad_out).view(num_experts, hidden, dim)
            del gated
        if need_x:
            grad_x = grad_pre.mm(fc1_weight.reshape(wide, dim)).view(batch, tokens, dim)
        if need_w1:
            grad_w1 = grad_pre.t().mm(x.reshape(rows, dim)).view(num_experts, hidden, dim)
        if need_b1:
            grad_b1 = grad_pre.sum(0).view(num_experts, hidden)
        return grad_x, grad_gates, grad_w1, grad_b1, grad_w2, grad_b2, None


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
    if x.dim() != 3:
        raise ValueError(f"x must be [B, N, d], got shape {tuple(x.shape)}")
    batch, _, dim = x.shape
    if fc1_weight.dim() != 3:
        raise ValueError(f"fc1_weight must be [E, h, d], got shape {tuple(fc1_weight.shape)}")
    num_experts, hidden, fc1_in = fc1_weight.shape
    expected = {
        "fc1_weight": (fc1_weight, (num_experts, hidden, dim)),
        "fc1_bias": (fc1_bias, (num_experts, hidden)),
        "fc2_weight": (fc2_weight, (num_experts, hidden, dim)),
        "fc2_bias": (fc2_bias, (num_experts, dim)),
        "gates": (gates, (batch, num_experts)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {shape} for x of shape {tuple(x.shape)} and {num_experts} experts "
                f"of hidden size {hidden}, got {tuple(tensor.shape)}"
            )
    if getattr(act, "inplace", False):
        raise ValueError(f"act must be out-of-place (the fc1 output is saved for backward), got {act!r}")
    device_type = x.device.type
    autocast = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
    args = [t.to(dtype) for t in (x, gates, fc1_weight, fc1_bias, fc2_weight, fc2_bias)]
    if autocast:
        with torch.autocast(device_type, enabled=False):
            return _FusedExpertsFunction.apply(*args, act)
    return _FusedExpertsFunction.apply(*args, act)


class FusedExperts(nn.Module):
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
        super().__init__()
        if num_experts < 1 or dim < 1 or hidden_dim < 1:
            raise ValueError(
                f"num_experts, dim and hidden_dim must be positive, got {num_experts}, {dim}, {hidden_dim}"
            )
        factory = {"device": device, "dtype": dtype}
        self.num_experts = num_experts
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.act = act
        self.fc1_weight = nn.Parameter(torch.empty(num_experts, hidden_dim, dim, **factory))
        self.fc1_bias = nn.Parameter(torch.empty(num_experts, hidden_dim, **factory))
        self.fc2_weight = nn.Parameter(torch.empty(num_experts, hidden_dim, dim, **factory))
        self.fc2_bias = nn.Parameter(torch.empty(num_experts, dim, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Independent ``nn.Linear``-style init per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        with torch.no_grad():
            for weight, bias, fan_in in (
                (self.fc1_weight, self.fc1_bias, self.dim),
                (self.fc2_weight, self.fc2_bias, self.hidden_dim),
            ):
                bound = 1.0 / math.sqrt(fan_in)
                weight.uniform_(-bound, bound)
                bias.uniform_(-bound, bound)

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
        weight = fc1.weight
        if weight.numel() != fc1.out_features * fc1.in_features:
            raise ValueError(
                f"fc1.weight holds {weight.numel()} values, expected {fc1.out_features * fc1.in_features}: "
                "gather sharded (ZeRO-3) parameters before upcycling"
            )
        experts = cls(
            num_experts, fc1.in_features, fc1.out_features, act, device=weight.device, dtype=weight.dtype
        )
        with torch.no_grad():
            experts.fc1_weight.copy_(fc1.weight.unsqueeze(0).expand_as(experts.fc1_weight))
            experts.fc2_weight.copy_(fc2.weight.t().unsqueeze(0).expand_as(experts.fc2_weight))
            for target, bias in ((experts.fc1_bias, fc1.bias), (experts.fc2_bias, fc2.bias)):
                if bias is None:
                    target.zero_()
                else:
                    target.copy_(bias.unsqueeze(0).expand_as(target))
        return experts

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """``x [B, N, d]``, ``gates [B, E]`` -> ``[B, N, d]``, see :func:`fused_experts`."""
        return fused_experts(
            x, gates, self.fc1_weight, self.fc1_bias, self.fc2_weight, self.fc2_bias, self.act
        )

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, dim={self.dim}, hidden_dim={self.hidden_dim}"
