"""Which items an evaluation runs: benchmark names, items from official files or a suite, the blind control.

:func:`collect_items` reads contract items (docs/benchmark-records.md) per benchmark, from the
official files under a data root or from a suite directory; :func:`shuffle_images` gives the same
items with every scoring unit's images taken from another unit (the blind control).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def parse_benchmarks(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` or a comma-separated list (or a list) of benchmark names, checked, in table order."""
    from covft.eval.benchmarks import BENCHMARKS

    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else [str(n) for n in spec]
    names = [n for n in names if n]
    if not names or names == ["all"]:
        return list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: all, {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]


#: The field that ties items scored together into one unit (MME: both questions on an image,
#: MMBench: the circular variants of a question, MMVP: the two images of a pair).
UNIT_KEYS = {"mme": "image_id", "mmbench_en": "index", "mmbench_cn": "index", "mmvp": "pair_id"}


def _image_key(ref: Any) -> tuple[str, Any]:
    """What makes two items' images the same image: their path, else the object itself."""
    path = getattr(ref, "path", None)
    if path is None and isinstance(ref, (str, os.PathLike)):
        path = ref
    return ("path", str(path)) if path is not None else ("object", id(ref))


def shuffle_images(
    items_by_benchmark: Mapping[str, Sequence[Mapping[str, Any]]], seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """A blind control: the same items, each scoring unit given another unit's images.

    Items are grouped into scoring units (:data:`UNIT_KEYS`; elsewhere the items that share an
    image), and the units of a benchmark that hold the same number of distinct images are
    permuted among themselves (a random order shifted by one place, so no unit keeps its own
    images when there are two or more), image for image in order of first appearance. The
    structure scoring relies on survives: MME's two questions still share one image, MMBench's
    circular variants too, and an MMVP pair becomes another pair. Prompts, answers and text-only
    items are unchanged; the permutation depends only on ``seed``, the benchmark and the items.

    A model that ignores the image scores the same on both; the gap between the real and the
    shuffled score is how much its answers rest on the image (the "visual dependency" check of
    blind baselines).
    """
    import random

    shuffled: dict[str, list[dict[str, Any]]] = {}
    for name, items in items_by_benchmark.items():
        copies = [dict(item) for item in items]
        unit_field = UNIT_KEYS.get(name)
        units: dict[Any, list[int]] = {}
        for i, item in enumerate(items):
            if item.get("image") is None:
                continue
            unit = item.get(unit_field) if unit_field else None
            units.setdefault(
                ("unit", str(unit)) if unit is not None else _image_key(item["image"]), []
            ).append(i)
        images: dict[Any, list[Any]] = {}  # unit -> its distinct images, in order of appearance
        for unit, members in units.items():
            seen: dict[Any, Any] = {}
            for i in members:
                seen.setdefault(_image_key(items[i]["image"]), items[i]["image"])
            images[unit] = list(seen.values())
        by_size: dict[int, list[Any]] = {}
        for unit in units:
            by_size.setdefault(len(images[unit]), []).append(unit)
        for size, group in sorted(by_size.items()):
            random.Random(f"{seed}:{name}:{size}:{len(group)}").shuffle(group)
            for k, unit in enumerate(group):
                donor = images[group[(k + 1) % len(group)]]
                own = [_image_key(image) for image in images[unit]]
                for i in units[unit]:
                    copies[i]["image"] = donor[own.index(_image_key(items[i]["image"]))]
        shuffled[name] = copies
    return shuffled


def first_units(name: str, items: Sequence[Mapping[str, Any]], limit: int | None) -> list[Any]:
    """The items of the first ``limit`` scoring units of benchmark ``name`` (:data:`UNIT_KEYS`: an
    MME image's two questions, an MMBench question's circular copies, an MMVP pair; one item
    elsewhere), all of them when ``limit`` is None: a cut never leaves half a unit to be scored
    as a whole one."""
    field = UNIT_KEYS.get(name)
    if limit is None:
        return list(items)
    if field is None:
        return list(items[:limit])
    units: dict[str, None] = {}
    for item in items:
        if len(units) == limit:
            break
        units.setdefault(str(item.get(field)))
    return [item for item in items if str(item.get(field)) in units]


def collect_items(
    benchmarks: str | Sequence[str] = "all",
    *,
    data_root: str | os.PathLike[str] | None = None,
    suite: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    protocol: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Items per benchmark, from the official files under ``data_root`` or from a suite directory.

    With ``data_root`` each benchmark is read by its adapter from its folder there (LLaVA-1.5's
    ``playground/data/eval`` layout works; docs/benchmarks.md), prompts and router text built by
    ``protocol`` (default ``llava15``, the paper's; :mod:`covft.eval.protocol`), and ``limit``
    counts the adapter's units (MME images, MMBench questions, MMVP pairs). With ``suite``
    (written by ``covft.eval.benchmarks.write_suite``, e.g. the conflict world's held-out suite)
    the items bring their own prompt and router text (the ``suite`` protocol), ``"all"`` means
    every benchmark the suite holds and ``limit`` keeps the first units of each file
    (:func:`first_units`).
    """
    from covft.eval.benchmarks import get_adapter, load_suite
    from covft.eval.protocol import DEFAULT_PROTOCOL

    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    if (data_root is None) == (suite is None):
        raise ValueError("give exactly one of data_root (official files) and suite (a suite directory)")
    if suite is not None:
        if protocol not in (None, "suite"):
            raise ValueError(
                f"a suite's items carry their own prompt and router text; protocol {protocol!r} "
                "applies to official files (data_root) only"
            )
        available = load_suite(suite)
        wanted = parse_benchmarks(benchmarks)
        if benchmarks in ("all", ["all"]):
            wanted = [n for n in wanted if n in available]
        missing = [n for n in wanted if n not in available]
        if missing:
            raise FileNotFoundError(
                f"suite {suite} has no {', '.join(f'{n}.jsonl' for n in missing)} "
                f"(it holds: {', '.join(sorted(available))})"
            )
        return {n: first_units(n, available[n], limit) for n in wanted}
    root = Path(data_root)  # type: ignore[arg-type]
    items = {}
    for name in parse_benchmarks(benchmarks):
        adapter = get_adapter(name)
        items[name] = adapter.load(adapter.folder(root), limit, protocol or DEFAULT_PROTOCOL)
    return items
