"""Several training files mixed with weights, and a seeded fraction of each (the data-scaling study).

The paper's data-scaling study (Fig. 4) trains on 12.5/25/50/100% of the instruction mix, one
epoch each. ``fraction`` keeps that share of every file's usable records (rounded to the nearest
record), chosen by ranking the records on a hash of (``seed``, file position, record number): the
choice depends on nothing else (not the strategy, not the Python or NumPy version), and a smaller
fraction keeps a subset of a larger one (12.5% inside 25% inside 50%). Within a file the kept
records stay in file order.

``weights`` are *repeat factors*, applied after the fraction: a file of ``n`` kept records with
weight ``w`` contributes ``floor(w) * n`` copies (each record ``floor(w)`` times) plus the
``round((w - floor(w)) * n)`` first records of the same kind of hash ranking, so ``0.5`` keeps a
seeded half and ``2`` doubles a file. The counts are exact and :func:`describe` prints them.
With one file, ``fraction=1`` and no weights the records are returned unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from covft.data.records import Record


@dataclass(frozen=True)
class Share:
    """What one file contributes to the mixture."""

    file: str
    records: int
    """Usable records read from the file."""
    kept: int
    """Records kept by the fraction."""
    weight: float
    samples: int
    """Samples in the mixture after the weight."""


def problem(files: int, weights: Sequence[float] | None, fraction: float) -> str | None:
    """Why these mixture settings are invalid for ``files`` files; ``None`` when they are valid."""
    if not 0.0 < fraction <= 1.0:
        return f"fraction must be in (0, 1], got {fraction}"
    if weights is None:
        return None
    if len(weights) != files:
        return f"{len(weights)} weight(s) for {files} file(s); give one weight per file"
    if any(not w > 0 for w in weights):
        return f"weights are repeat factors and must be > 0, got {list(weights)}"
    return None


def ranked(records: Sequence[Record], seed: int, purpose: str, position: int) -> list[Record]:
    """``records`` ordered by a hash of (seed, purpose, file position, record number): a seeded order
    that the records' content, the platform and the library versions do not change."""

    def key(record: Record) -> bytes:
        return hashlib.sha256(f"{seed}:{purpose}:{position}:{record.index}".encode()).digest()

    return sorted(records, key=key)


def first_share(
    records: Sequence[Record], share: float, seed: int, purpose: str, position: int
) -> list[Record]:
    """The ``round(share * len(records))`` records first in the seeded ranking, in file order."""
    count = math.floor(share * len(records) + 0.5)
    chosen = {id(r) for r in ranked(records, seed, purpose, position)[:count]}
    return [r for r in records if id(r) in chosen]


def mix(
    files: Sequence[tuple[str, list[Record]]], weights: Sequence[float] | None, fraction: float, seed: int
) -> tuple[list[Record], list[Share]]:
    """The mixture's records (files in order) and what each file contributed."""
    reason = problem(len(files), weights, fraction)
    if reason is not None:
        raise ValueError(reason)
    records: list[Record] = []
    shares = []
    for position, (file, read) in enumerate(files):
        kept = read if fraction == 1.0 else first_share(read, fraction, seed, "fraction", position)
        weight = 1.0 if weights is None else float(weights[position])
        whole = math.floor(weight)
        extra = first_share(kept, weight - whole, seed, "weight", position) if weight != whole else []
        part = kept * whole + extra
        records.extend(part)
        shares.append(Share(file, len(read), len(kept), weight, len(part)))
    return records, shares


def describe(shares: Sequence[Share], fraction: float) -> str:
    """One line per file (records read, kept by the fraction, samples after the weight) and the total."""
    lines = [
        f"{s.file}: {s.records} records, fraction {fraction:g} -> {s.kept}, weight {s.weight:g} -> {s.samples} samples"
        for s in shares
    ]
    lines.append(f"mixture: {sum(s.samples for s in shares)} samples per epoch")
    return "\n".join(lines)
