"""RealWorldQA: real-world spatial questions whose text already carries options and instruction.

Format (ours, documented in docs/benchmarks.md): ``realworldqa.jsonl`` with one record a line,
``{"id": optional, "question": str, "answer": str, "image": path relative to the data root}``,
the fields of Hugging Face ``xai-org/RealworldQA`` with the image written to a file. The question
is used as the prompt unchanged (it ends with the authors' own instruction, e.g. "Please answer
directly with only the letter of the correct option and nothing else."); the context drops that
instruction. Options, when the question lists ``"A. text"`` lines, are parsed into ``options``.
"""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

from covft.eval.benchmarks.base import image_file, read_jsonl

NAME = "realworldqa"
SOURCE = "Hugging Face xai-org/RealworldQA (test split), exported to realworldqa.jsonl + images/ as docs/benchmarks.md shows"
FILE = "realworldqa.jsonl"
OPTION_LINE = re.compile(r"^([A-Z])\.\s*(.+?)\s*$")


def split_question(question: str) -> tuple[str, dict[str, str]]:
    """The question without its trailing instruction lines, and the options it lists."""
    lines = question.strip().splitlines()
    while lines and lines[-1].strip().lower().startswith("please answer"):
        lines.pop()
    options = {}
    for line in lines:
        match = OPTION_LINE.match(line.strip())
        if match:
            options[match.group(1)] = match.group(2)
    return "\n".join(lines).strip(), options


def load(root: Path, limit: int | None = None) -> list[dict]:
    """Items of ``realworldqa.jsonl`` in file order; ``limit`` caps their number."""
    root = Path(root)
    items: list[dict] = []
    for number, record in enumerate(islice(read_jsonl(root / FILE, NAME, SOURCE), limit)):
        context, options = split_question(record["question"])
        item = {
            "id": str(record.get("id", number)),
            "image": image_file(root / record["image"], NAME, SOURCE),
            "prompt": record["question"].strip(),
            "context": context,
            "answer": str(record["answer"]).strip(),
        }
        if options:
            item["options"] = options
        items.append(item)
    return items
