"""Model dtypes as transformers keeps them.

Building a model in a dtype (``_from_config(config, dtype=...)``, ``from_pretrained(...,
dtype=...)``) leaves the rotary embeddings' inverse frequencies (``inv_freq``,
``original_inv_freq``: buffers that no state dict holds, so no checkpoint restores them) in
float32, while ``module.to(dtype)`` would round them too and move every position's angle. covft
builds in a dtype through transformers' own path (:func:`build`), and casts an existing model with
:func:`cast`, which keeps those buffers as they are.
"""

from __future__ import annotations

import torch
from torch import nn

ROTARY_BUFFERS = ("inv_freq", "original_inv_freq")
"""Buffer names of transformers' rotary embeddings (text models and the Qwen towers)."""


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.bfloat16`` for ``"bfloat16"``, ``"torch.bfloat16"`` or the dtype itself; ``None`` stays."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype (e.g. 'bfloat16', 'float32')")
    return value


def build(cls, config, dtype: torch.dtype | str | None):
    """``cls`` (a transformers model class) from ``config`` in ``dtype``, as transformers builds it:
    ``_from_config`` (under DeepSpeed ZeRO-3 it builds the model partitioned), with the rotary
    buffers in float32."""
    return cls._from_config(config, dtype=as_dtype(dtype) or torch.float32)


def cast(module: nn.Module, dtype: torch.dtype | str) -> nn.Module:
    """``module.to(dtype)`` keeping the rotary buffers (:data:`ROTARY_BUFFERS`) in float32."""
    kept = {
        name: buffer
        for name, buffer in module.named_buffers()
        if name.rsplit(".", 1)[-1] in ROTARY_BUFFERS and buffer.dtype == torch.float32
    }
    module.to(as_dtype(dtype))
    for name, buffer in kept.items():
        owner, _, leaf = name.rpartition(".")
        module.get_submodule(owner)._buffers[leaf] = buffer
    return module


def dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype of a model's first parameter (what covft checkpoints record as the model's)."""
    return next(module.parameters()).dtype
