"""AI2D test in the LLaVA / lmms-eval export: one JSONL record per question.

Format (ours, documented in docs/benchmarks.md): ``test.jsonl`` with one record a line,
``{"id": optional, "question": str, "options": [str, ...], "answer": int or "int" (index into
options), "image": path relative to the data root}``, the fields of Hugging Face ``lmms-lab/ai2d``
with the image written to a file. Prompt: LLaVA-1.5's multiple-choice format.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from covft.eval.benchmarks.base import LETTERS, image_file, multiple_choice, options_from_list, read_jsonl

NAME = "ai2d"
SOURCE = (
    "Hugging Face lmms-lab/ai2d (test split), exported to test.jsonl + images/ as docs/benchmarks.md shows"
)
FILE = "test.jsonl"


def load(root: Path, limit: int | None = None) -> list[dict]:
    """Items of ``test.jsonl`` in file order; ``limit`` caps their number."""
    root = Path(root)
    items: list[dict] = []
    for number, record in enumerate(islice(read_jsonl(root / FILE, NAME, SOURCE), limit)):
        options = options_from_list([str(o) for o in record["options"]])
        answer = int(record["answer"])
        if not 0 <= answer < len(options):
            raise ValueError(f"{NAME}: {root / FILE} record {number}: answer {answer} is out of range")
        prompt, context = multiple_choice(record["question"], options)
        items.append(
            {
                "id": str(record.get("id", number)),
                "image": image_file(root / record["image"], NAME, SOURCE),
                "prompt": prompt,
                "context": context,
                "options": options,
                "answer": LETTERS[answer],
            }
        )
    return items
