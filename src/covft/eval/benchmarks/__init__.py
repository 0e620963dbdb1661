"""Benchmark adapters: one per benchmark, each reading the official files into contract items.

``get_adapter(name).load(root, limit, protocol)`` returns the items of one benchmark (see
docs/benchmark-records.md for the fields and docs/benchmarks.md for the file layout each adapter
expects under ``root``). Suites on disk (the synthetic world's held-out sets, or any exported
benchmark) are read with :func:`load_suite` and written with :func:`write_suite`.

Adapters are imported lazily, so ``import covft.eval`` costs nothing until a benchmark is loaded.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from covft.eval.benchmarks.base import ImageRef

__all__ = [
    "BENCHMARKS",
    "BenchmarkAdapter",
    "ImageRef",
    "get_adapter",
    "load_suite",
    "read_suite_file",
    "write_suite",
]


@dataclass(frozen=True)
class BenchmarkAdapter:
    """Where a benchmark's loader lives and which folder of a data root holds its files.

    ``subdirs`` are the folder names the benchmark may have under a shared data root, LLaVA-1.5's
    ``playground/data/eval`` layout among them (docs/benchmarks.md); :meth:`folder` picks the first
    that exists. ``load`` takes the benchmark's own folder.
    """

    name: str
    module: str
    function: str
    subdirs: tuple[str, ...]

    def folder(self, data_root: str | Path) -> Path:
        """The benchmark's folder under ``data_root``: the first of ``subdirs`` that exists (the
        first of them when none does, so that the missing-file error names it)."""
        root = Path(data_root)
        return next((root / d for d in self.subdirs if (root / d).is_dir()), root / self.subdirs[0])

    def load(self, root: str | Path, limit: int | None = None, protocol: str = "llava15") -> list[dict]:
        """Read the official files under ``root`` into contract items (at most ``limit`` units),
        prompts and router text as the named protocol (:mod:`covft.eval.protocol`) builds them."""
        from covft.eval.protocol import FILE_PROTOCOLS, get_protocol

        if limit is not None and limit < 0:
            raise ValueError(f"{self.name}: limit must be None or >= 0, got {limit}")
        spec = get_protocol(protocol)
        if spec.name not in FILE_PROTOCOLS:
            raise ValueError(
                f"{self.name}: protocol {protocol!r} does not read official files; use one of {FILE_PROTOCOLS}"
            )
        loader: Callable[..., list[dict]] = getattr(
            importlib.import_module(f"covft.eval.benchmarks.{self.module}"), self.function
        )
        return loader(Path(root), limit, spec)


_ADAPTERS = (
    BenchmarkAdapter("mme", "mme", "load", ("MME",)),
    BenchmarkAdapter("mmbench_en", "mmbench", "load_en", ("mmbench",)),
    BenchmarkAdapter("mmbench_cn", "mmbench", "load_cn", ("mmbench_cn", "mmbench")),
    BenchmarkAdapter("gqa", "gqa", "load", ("gqa",)),
    BenchmarkAdapter("scienceqa_img", "scienceqa", "load", ("scienceqa",)),
    BenchmarkAdapter("ai2d", "ai2d", "load", ("ai2d",)),
    BenchmarkAdapter("textvqa", "textvqa", "load", ("textvqa",)),
    BenchmarkAdapter("mmvp", "mmvp", "load", ("MMVP", "mmvp")),
    BenchmarkAdapter("realworldqa", "realworldqa", "load", ("realworldqa", "RealWorldQA")),
    BenchmarkAdapter("cvbench_coco", "cvbench", "load_coco", ("cvbench", "CV-Bench")),
    BenchmarkAdapter("cvbench_ade20k", "cvbench", "load_ade20k", ("cvbench", "CV-Bench")),
    BenchmarkAdapter("cvbench_omni3d", "cvbench", "load_omni3d", ("cvbench", "CV-Bench")),
)
_REGISTRY = {adapter.name: adapter for adapter in _ADAPTERS}

#: The paper's 12 benchmarks, in its table order.
BENCHMARKS: tuple[str, ...] = tuple(adapter.name for adapter in _ADAPTERS)


def get_adapter(name: str) -> BenchmarkAdapter:
    """The adapter registered under ``name``; a KeyError lists the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


def write_suite(directory: str | Path, name: str, items: list[dict]) -> Path:
    """Write ``items`` to ``<directory>/<name>.jsonl`` with images as suite-relative paths.

    Images already inside ``directory`` are referenced where they are; other files are copied and
    base64 / in-memory images are saved as PNG, both under ``images/<name>/``. Items sharing one
    :class:`ImageRef` share one file. Returns the JSONL path.
    """
    directory = Path(directory)
    image_dir = directory / "images" / _safe(name)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[int, str | None] = {}
    lines = []
    for number, item in enumerate(items):
        if "id" not in item:
            raise ValueError(f"write_suite({name!r}): item {number} has no 'id'")
        ref = item.get("image")
        if ref is not None and id(ref) not in written:
            written[id(ref)] = _store_image(
                ref, directory, image_dir, f"{number:06d}_{_safe(str(item['id']))}"
            )
        record = {key: value for key, value in item.items() if key != "image"}
        record["image"] = written[id(ref)] if ref is not None else None
        lines.append(json.dumps(record, ensure_ascii=False))
    path = directory / f"{name}.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _store_image(ref: ImageRef, directory: Path, image_dir: Path, stem: str) -> str:
    if not isinstance(ref, ImageRef):
        raise TypeError(f"item image must be an ImageRef or None, got {type(ref).__name__}")
    image_dir.mkdir(parents=True, exist_ok=True)
    source = ref.path
    if source is not None:
        resolved = source.resolve()
        if resolved.is_relative_to(directory.resolve()):
            return resolved.relative_to(directory.resolve()).as_posix()
        target = image_dir / f"{stem}{source.suffix}"
        shutil.copyfile(source, target)
    else:
        target = image_dir / f"{stem}.png"
        ref.load().save(target)
    return target.relative_to(directory).as_posix()


def read_suite_file(path: str | Path) -> list[dict]:
    """Items of one ``<name>.jsonl`` suite file, images resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"suite file not found: {path} (suites are written by covft.eval.benchmarks.write_suite)"
        )
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number} is not valid JSON ({error})") from error
            image = item.get("image")
            item["image"] = ImageRef(path.parent / image) if image else None
            items.append(item)
    return items


def load_suite(directory: str | Path) -> dict[str, list[dict]]:
    """All ``<name>.jsonl`` files of a suite directory, as ``{name: items}`` sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"suite directory not found: {directory} (written by covft.eval.benchmarks.write_suite)"
        )
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"suite directory {directory} holds no <name>.jsonl files")
    return {path.stem: read_suite_file(path) for path in files}
