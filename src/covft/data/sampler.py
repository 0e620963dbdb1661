"""Deterministic, resumable, distributed batch order grouped by modality and length.

The order of an epoch is a pure function of ``(seed, epoch)`` and of the dataset's modalities and
lengths. That is what makes exact resume possible: a resumed run recomputes the same order and
starts at the first micro-batch it has not consumed, without reading the skipped data.

Layout: the epoch is cut into *global batches* of ``batch_size * world_size * grad_accum``
samples, one per optimizer step. Micro-batch ``a`` of rank ``r`` within a step is slice
``a * world_size + r`` of that global batch. So one process with ``grad_accum = k`` and ``k``
processes with ``grad_accum = 1`` see the same samples in each optimizer step (equal gradients up
to floating-point summation order).

With ``group_by_modality_length`` (LLaVA's ``group_by_modality_length``), each global batch holds
only image samples or only text-only samples where possible, and samples inside it are sorted by
length so each micro-batch pads little. Global batches are then shuffled. The last, incomplete
global batch is filled by wrapping around to the start of the epoch's order, so every rank always
gets the same number of equally sized micro-batches (DDP never waits on a missing batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch


class GroupedBatchSampler:
    """Yields this rank's micro-batches (lists of dataset indices) for one epoch.

    Call :meth:`set_epoch` before iterating, and :meth:`set_start` to skip micro-batches a
    resumed run has already consumed in that epoch.
    """

    def __init__(
        self,
        has_image: Sequence[bool],
        lengths: Sequence[int],
        *,
        batch_size: int,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_by_modality_length: bool = True,
    ) -> None:
        if len(has_image) != len(lengths):
            raise ValueError("has_image and lengths must have one entry per sample")
        if not len(lengths):
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.has_image = list(has_image)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.group = group_by_modality_length
        self.epoch = 0
        self.start = 0

    @property
    def global_batch_size(self) -> int:
        """Samples consumed by one optimizer step across all ranks."""
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch (the last global batch is completed by wrapping around)."""
        return math.ceil(len(self.lengths) / self.global_batch_size)

    def __len__(self) -> int:
        """Micro-batches this rank yields in the current epoch from the current start."""
        return self.steps_per_epoch * self.grad_accum - self.start

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order is produced next (and reset the start to 0)."""
        self.epoch = epoch
        self.start = 0

    def set_start(self, micro_batch: int) -> None:
        """Skip the first ``micro_batch`` micro-batches of this rank in the current epoch."""
        if not 0 <= micro_batch <= self.steps_per_epoch * self.grad_accum:
            raise ValueError(f"start {micro_batch} is outside the epoch")
        self.start = micro_batch

    def global_batches(self) -> list[list[int]]:
        """The epoch's global batches (every rank computes the same list)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.global_batch_size
        if not self.group:
            total = self.steps_per_epoch * size
            order = (order * math.ceil(total / len(order)))[:total]
            return [order[i : i + size] for i in range(0, total, size)]
        batches: list[list[int]] = []
        leftovers: list[int] = []
        for modality in (True, False):
            members = [i for i in order if self.has_image[i] == modality]
            full = len(members) - len(members) % size
            for start in range(0, full, size):
                chunk = sorted(members[start : start + size], key=lambda i: -self.lengths[i])
                batches.append(chunk)
            leftovers.extend(members[full:])
        # the two modalities' remainders (each < size, together < 2 * size) make the mixed
        # batch(es); the last one is completed by wrapping around the epoch's order
        if leftovers:
            padded = len(leftovers) + (-len(leftovers)) % size
            leftovers = (leftovers + order * math.ceil(padded / len(order)))[:padded]
            for start in range(0, padded, size):
                batches.append(sorted(leftovers[start : start + size], key=lambda i: -self.lengths[i]))
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.batch_size
        position = 0
        for batch in self.global_batches():
            for accum in range(self.grad_accum):
                if position >= self.start:
                    slot = accum * self.world_size + self.rank
                    yield batch[slot * micro : (slot + 1) * micro]
                position += 1
