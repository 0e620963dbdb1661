"""FLOPs of a training step and of a prefill, counted with ``FlopCounterMode``.

Counting convention (``torch.utils.flop_counter``): a matrix product ``[M, K] @ [K, N]`` is
``2*M*K*N`` FLOPs; convolutions likewise; attention is two batched products forward and five
backward, over the full ``S_q x S_k`` square (a causal mask is not discounted); element-wise
work (activations, norms, softmax, the optimizer update) is not counted. PyTorch's registry
misses the CPU flash-attention kernels, so :data:`CPU_ATTENTION_FORMULAS` adds them with the
same convention as the CUDA kernels.

The analytic model in :mod:`covft.profile.analytic` writes out the same products by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["CPU_ATTENTION_FORMULAS", "GlobalFlopCounterMode", "count_flops"]

aten = torch.ops.aten


def _attention_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``q @ k^T`` and ``scores @ v`` over ``[B, H, S, D]`` tensors."""
    batch, heads, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return 2 * batch * heads * s_q * s_k * d_q + 2 * batch * heads * s_q * s_k * d_v


def _attention_backward(
    grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """Recompute the scores, then grad of scores, v, q and k: five batched products."""
    batch, heads, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    scores = 2 * batch * heads * s_q * s_k
    return scores * d_q + scores * d_v + scores * d_v + scores * d_q + scores * d_q


CPU_ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}
"""FLOP formulas for the CPU attention kernels, which ``torch.utils.flop_counter`` does not register."""


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP goes to "Global"."""

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class GlobalFlopCounterMode(FlopCounterMode):
    """``FlopCounterMode`` without its per-module breakdown.

    The module tracker hooks the inputs of every module for backward; a custom autograd function
    that calls ``torch.autograd.grad`` inside its backward (the fused experts differentiate their
    activation module that way) then fails with "A leaf node was passed to
    _will_engine_execute_node". Counting is unchanged: the same dispatch mode and formulas.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mod_tracker = _GlobalOnly()


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn()`` under ``FlopCounterMode`` and return (total FLOPs, FLOPs by aten op name)."""
    counter = GlobalFlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FORMULAS)
    with counter:
        fn()
    by_op = {str(op): int(v) for op, v in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops()), by_op
