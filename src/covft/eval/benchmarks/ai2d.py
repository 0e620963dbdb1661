"""AI2D test as LLaVA-style evaluations use it: Hugging Face ``lmms-lab/ai2d``.

Official files: the dataset's parquet shards as downloaded (``data/test-0000x-of-0000y.parquet``,
columns ``question``, ``options`` (list), ``answer`` (index into options, as a string) and
``image``), read directly. Alternatively (ours, docs/benchmarks.md) a ``test.jsonl`` of the same
fields with ``image`` a path relative to the folder.

Prompt: the CoVFT release's ``ai2d_eval.py`` (Cambrian-1's): the question, ``\\nA. option`` per
option, then ``\\nAnswer with the option's letter from the given choices directly.``, which is
also lmms-eval's ``ai2d`` prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import (
    LETTERS,
    MC_SUFFIX,
    hf_records,
    options_from_list,
    options_lines,
    prompt_fields,
)

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "ai2d"
SOURCE = (
    "Hugging Face lmms-lab/ai2d (data/test-*.parquet), or test.jsonl + images/ as docs/benchmarks.md shows"
)
FILE = "test.jsonl"
SHARDS = ("data/test-*.parquet", "test-*.parquet")


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items in file order; ``limit`` caps their number."""
    items: list[dict] = []
    for number, record in enumerate(hf_records(Path(root), SHARDS, FILE, NAME, SOURCE)[:limit]):
        options = options_from_list([str(o) for o in record["options"]])
        answer = int(record["answer"])
        if not 0 <= answer < len(options):
            raise ValueError(f"{NAME}: record {number} of {root}: answer {answer} is out of range")
        text = f"{record['question']}\n{options_lines(options)}\n{MC_SUFFIX}"
        items.append(
            {
                "id": str(record.get("id", number)),
                "image": record["image"],
                **prompt_fields(NAME, text, protocol),
                "options": options,
                "answer": LETTERS[answer],
            }
        )
    return items
