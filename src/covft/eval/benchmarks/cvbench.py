"""CV-Bench (Cambrian-1), split by image source into COCO, ADE20K and Omni3D benchmarks.

Official files (Hugging Face ``nyu-visionx/CV-Bench``), read as downloaded: the parquet files
``test_2d.parquet`` + ``test_3d.parquet`` (current release; ``test.parquet`` in the first one),
images inside; or, where they are absent, ``test_2d.jsonl`` + ``test_3d.jsonl`` (``test.jsonl``)
with the ``img/`` folder their ``filename`` points into. Fields used: ``idx``, ``task``,
``prompt`` (``"<question> Select from the following choices.\\n(A) ...\\n(B) ..."``), ``choices``,
``answer`` (``"(A)"``) and ``source`` (``COCO`` / ``ADE20K`` / ``Omni3D``).

Prompt (``llava15``): the CoVFT release's coco / ade / omni scripts (Cambrian-1's): the record's
own ``prompt``, then ``\\nAnswer with the option's letter from the given choices directly.``;
``lmms-eval``: its ``cv_bench`` prompt, ``Note: You only need to respond with A, B, ... without
providing any additional information.\\n\\n<prompt>``. The paper's COCO and ADE20K numbers come
from two other Hugging Face sets the release loads (see docs/benchmarks.md); covft splits the
public CV-Bench by ``source``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import (
    LETTERS,
    MC_SUFFIX,
    image_file,
    missing_file,
    options_from_list,
    prompt_fields,
    read_jsonl,
    read_parquet,
)

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

SOURCE = "Hugging Face datasets nyu-visionx/CV-Bench (test_2d/test_3d .parquet, or .jsonl with img/)"
SOURCES = {"cvbench_coco": "COCO", "cvbench_ade20k": "ADE20K", "cvbench_omni3d": "Omni3D"}
SPLITS = (("test_2d", "test_3d"), ("test",))
LMMS_NOTE = "Note: You only need to respond with {} without providing any additional information.\n"


def records(root: Path, name: str) -> list[dict]:
    """Every CV-Bench record, images attached, from the parquet files or the JSONL + ``img/``."""
    for stems in SPLITS:
        parquet = [root / f"{stem}.parquet" for stem in stems]
        if all(path.is_file() for path in parquet):
            return read_parquet(parquet, name)
        jsonl = [root / f"{stem}.jsonl" for stem in stems]
        if all(path.is_file() for path in jsonl):
            rows = [row for path in jsonl for row in read_jsonl(path, name, SOURCE)]
            for row in rows:
                row["image"] = image_file(root / row["filename"], name, SOURCE)
            return rows
    raise missing_file(root / "test_2d.parquet", name, SOURCE)


def prompt(record: dict, protocol: str) -> str:
    """The prompt of one record (see the module docstring)."""
    if protocol == "lmms-eval":
        letters = ", ".join(LETTERS[: len(record["choices"])])
        return f"{LMMS_NOTE.format(letters)}\n{record['prompt']}"
    return f"{record['prompt']}\n{MC_SUFFIX}"


def load_source(root: Path, name: str, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items of one CV-Bench source (``name`` is a key of :data:`SOURCES`); ``limit`` caps them."""
    wanted = SOURCES[name]
    items: list[dict] = []
    for record in [r for r in records(Path(root), name) if r["source"] == wanted][:limit]:
        if "prompt" not in record:
            raise ValueError(f"{name}: CV-Bench record idx {record['idx']} in {root} has no 'prompt' field")
        options = options_from_list([str(c) for c in record["choices"]])
        answer = str(record["answer"]).strip().strip("()").upper()
        if answer not in options:
            raise ValueError(
                f"{name}: CV-Bench idx {record['idx']}: answer {record['answer']!r} not in choices"
            )
        text = prompt(record, protocol.name)
        items.append(
            {
                "id": str(record["idx"]),
                "image": record["image"],
                **prompt_fields(name, text, protocol),
                "options": options,
                "answer": answer,
                "source": wanted,
                "task": str(record["task"]),
            }
        )
    return items


def load_coco(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """CV-Bench 2D questions on COCO images."""
    return load_source(root, "cvbench_coco", limit, protocol)


def load_ade20k(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """CV-Bench 2D questions on ADE20K images."""
    return load_source(root, "cvbench_ade20k", limit, protocol)


def load_omni3d(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """CV-Bench 3D questions on Omni3D images."""
    return load_source(root, "cvbench_omni3d", limit, protocol)
