"""CV-Bench (Cambrian-1), split by image source into COCO, ADE20K and Omni3D benchmarks.

Official files (Hugging Face ``nyu-visionx/CV-Bench``): ``test_2d.jsonl`` + ``test_3d.jsonl``
(current) or ``test.jsonl`` (first release), one record a line with ``idx, type ("2D"/"3D"), task,
question, choices, answer ("(A)"), filename ("img/2D/count/ade20k_10.png", relative to the data
root), source ("COCO"/"ADE20K"/"Omni3D"), ...``, and the ``img/`` folder (the repo's
``build_img.py`` recreates it from the parquet files where it is absent). Prompt: LLaVA-1.5's multiple-choice format
built from ``question`` and ``choices``.
"""

from __future__ import annotations

from pathlib import Path

from covft.eval.benchmarks.base import (
    image_file,
    missing_file,
    multiple_choice,
    options_from_list,
    read_jsonl,
)

SOURCE = "Hugging Face datasets nyu-visionx/CV-Bench (test_2d.jsonl, test_3d.jsonl and img/)"
SOURCES = {"cvbench_coco": "COCO", "cvbench_ade20k": "ADE20K", "cvbench_omni3d": "Omni3D"}


def _files(root: Path, name: str) -> list[Path]:
    single = root / "test.jsonl"
    split = [root / "test_2d.jsonl", root / "test_3d.jsonl"]
    if single.is_file() and not any(p.is_file() for p in split):
        return [single]
    for path in split:
        if not path.is_file():
            raise missing_file(path, name, SOURCE)
    return split


def load_source(root: Path, name: str, limit: int | None = None) -> list[dict]:
    """Items of one CV-Bench source (``name`` is a key of :data:`SOURCES`); ``limit`` caps them."""
    root = Path(root)
    wanted = SOURCES[name]
    items: list[dict] = []
    for path in _files(root, name):
        for record in read_jsonl(path, name, SOURCE):
            if limit is not None and len(items) >= limit:
                return items
            if record["source"] != wanted:
                continue
            options = options_from_list([str(c) for c in record["choices"]])
            answer = str(record["answer"]).strip().strip("()").upper()
            if answer not in options:
                raise ValueError(
                    f"{name}: {path} idx {record['idx']}: answer {record['answer']!r} not in choices"
                )
            prompt, context = multiple_choice(record["question"], options)
            relative = record.get("filename") or record.get("image")
            if not isinstance(relative, str):
                raise ValueError(f"{name}: {path} idx {record['idx']} has no image 'filename'")
            items.append(
                {
                    "id": str(record["idx"]),
                    "image": image_file(root / relative, name, SOURCE),
                    "prompt": prompt,
                    "context": context,
                    "options": options,
                    "answer": answer,
                    "source": wanted,
                    "task": str(record["task"]),
                }
            )
    return items


def load_coco(root: Path, limit: int | None = None) -> list[dict]:
    """CV-Bench 2D questions on COCO images."""
    return load_source(root, "cvbench_coco", limit)


def load_ade20k(root: Path, limit: int | None = None) -> list[dict]:
    """CV-Bench 2D questions on ADE20K images."""
    return load_source(root, "cvbench_ade20k", limit)


def load_omni3d(root: Path, limit: int | None = None) -> list[dict]:
    """CV-Bench 3D questions on Omni3D images."""
    return load_source(root, "cvbench_omni3d", limit)
