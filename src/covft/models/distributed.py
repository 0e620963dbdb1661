"""Helpers for sharded parameters (DeepSpeed ZeRO-3) when the model is built or modified."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def gathered(params: list[nn.Parameter], modifier_rank: int | None = None) -> Iterator[None]:
    """Gather ZeRO-3-partitioned parameters for the duration of the block (a no-op otherwise).

    CoMoE upcycles experts by copying the block's MLP; under ZeRO-3 each rank holds only a shard
    of that MLP, so it must be gathered first or the experts would be copies of empty tensors.
    With ``modifier_rank`` set, what that rank writes into the parameters is kept (re-partitioned
    on exit), e.g. when ``init_from`` weights are loaded into a partitioned model.
    """
    sharded = [p for p in params if hasattr(p, "ds_id")]
    if not sharded:
        yield
        return
    import deepspeed  # only reached when parameters are DeepSpeed-partitioned

    with deepspeed.zero.GatheredParameters(sharded, modifier_rank=modifier_rank):
        yield
