"""Samples as segments of what the vision tower processes: the ``owner`` map and sums over it.

When one sample has several tower rows (several images, anyres tiles: ``[R, N, d]``) or the
tower works on packed tokens (Qwen-VL: ``[T, d]``), an ``owner`` tensor (long, one entry per row
or per packed token) says which sample each belongs to: an index into the ``S`` per-sample
context rows. The entries of one sample need not be contiguous. Routing is per sample, so the
context-aware modules reduce over each sample's rows with the helpers here: one ``index_add_``
over all rows, no padding and no loop over samples.
"""

from __future__ import annotations

import torch

__all__ = ["check_owner", "segment_mean", "segment_sum"]


def check_owner(owner: torch.Tensor, rows: int, samples: int) -> None:
    """Raise ``ValueError`` unless ``owner`` is a long tensor ``[rows]`` whose values index
    ``samples`` samples and every sample owns at least one row (one device sync)."""
    if owner.dtype != torch.long or owner.dim() != 1 or owner.shape[0] != rows:
        raise ValueError(
            f"owner must be a long tensor with one sample index per row (or packed token) of the "
            f"tower input, shape [{rows}], got {owner.dtype} of shape {tuple(owner.shape)}"
        )
    if rows == 0 or samples < 1:
        raise ValueError(f"owner maps {rows} rows to {samples} samples: both must be positive")
    counts = torch.bincount(owner.clamp(0, samples - 1), minlength=samples)
    low, high, empty = torch.stack([owner.min(), owner.max(), (counts == 0).sum()]).tolist()
    if low < 0 or high >= samples:
        raise ValueError(
            f"owner values must index the {samples} samples (0..{samples - 1}), got values in [{low}, {high}]"
        )
    if empty:
        missing = (counts == 0).nonzero().flatten()[:8].tolist()
        raise ValueError(
            f"every sample must own at least one row or token, but {empty} of {samples} own none "
            f"(samples {missing}{', ...' if empty > 8 else ''}): the per-sample context (text) and "
            "the owner disagree"
        )


def segment_sum(values: torch.Tensor, owner: torch.Tensor, samples: int) -> torch.Tensor:
    """``values [R, ...]`` summed per sample: ``[S, ...]``, accumulated in at least float32 (half
    precision inputs sum in float32, so long segments keep their precision) and returned so."""
    dtype = torch.promote_types(values.dtype, torch.float32)
    total = values.new_zeros((samples, *values.shape[1:]), dtype=dtype)
    return total.index_add_(0, owner, values.to(dtype))


def segment_mean(rows: torch.Tensor, owner: torch.Tensor, samples: int) -> torch.Tensor:
    """Mean over all tokens of each sample of ``rows [R, N, d]`` (``owner [R]``): ``[S, d]`` in
    ``rows``' dtype, as if each sample's tokens were one row averaged with ``mean(dim=1)``."""
    dtype = torch.promote_types(rows.dtype, torch.float32)
    total = segment_sum(rows.sum(dim=1, dtype=dtype), owner, samples)
    tokens = torch.bincount(owner, minlength=samples).to(dtype) * rows.shape[1]
    return (total / tokens.unsqueeze(-1)).to(rows.dtype)
