"""RealWorldQA: real-world spatial questions whose text already carries options and instruction.

Official files: the Hugging Face parquet shards as downloaded (``lmms-lab/RealWorldQA``, which the
CoVFT release loads, or ``xai-org/RealworldQA``: ``data/test-0000x-of-0000y.parquet``, columns
``image``, ``question``, ``answer``), read directly. Alternatively (ours, docs/benchmarks.md) a
``realworldqa.jsonl`` of the same fields with ``image`` a path relative to the folder.

Prompt: the question as given (the CoVFT release's ``realworldqa_eval.py`` adds nothing; lmms-eval
strips it); it ends with the authors' instruction, e.g. "Please answer directly with only the
letter of the correct option and nothing else.". Options listed as ``A. text`` lines are parsed
into ``options`` for covft's tolerant suite rules; the official rule compares words.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import hf_records, prompt_fields

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "realworldqa"
SOURCE = (
    "Hugging Face lmms-lab/RealWorldQA or xai-org/RealworldQA (data/test*.parquet), "
    "or realworldqa.jsonl + images/ as docs/benchmarks.md shows"
)
FILE = "realworldqa.jsonl"
SHARDS = ("data/test*.parquet", "test*.parquet")
OPTION_LINE = re.compile(r"^([A-Z])\.\s*(.+?)\s*$")


def parse_options(question: str) -> dict[str, str]:
    """The ``A. text`` lines a question lists, as ``{"A": "text", ...}``."""
    matches = (OPTION_LINE.match(line.strip()) for line in question.splitlines())
    return {m.group(1): m.group(2) for m in matches if m}


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items in file order; ``limit`` caps their number."""
    items: list[dict] = []
    for number, record in enumerate(hf_records(Path(root), SHARDS, FILE, NAME, SOURCE)[:limit]):
        question = str(record["question"])
        text = question.strip() if protocol.name == "lmms-eval" else question
        item = {
            "id": str(record.get("id", number)),
            "image": record["image"],
            **prompt_fields(NAME, text, protocol),
            "answer": str(record["answer"]),
        }
        options = parse_options(question)
        if options:
            item["options"] = options
        items.append(item)
    return items
