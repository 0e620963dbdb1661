"""MMVP: 150 pairs of CLIP-blind images, one two-option question each.

Official files (Hugging Face ``MMVP/MMVP``): ``Questions.csv`` with columns ``Index`` (spelled
``lndex`` in some copies), ``Question``, ``Options`` (``"(a) Open (b) Closed"``) and
``Correct Answer`` (``"(a)"``), and ``MMVP Images/<Index>.jpg``. Questions ``2k-1`` and ``2k`` form
pair ``k``; a pair counts only if both are right. Prompt: LLaVA-1.5's multiple-choice format.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from covft.eval.benchmarks.base import image_file, multiple_choice, require

NAME = "mmvp"
SOURCE = "Hugging Face datasets MMVP/MMVP (Questions.csv and 'MMVP Images/')"
OPTION = re.compile(r"\(([a-z])\)\s*(.*?)\s*(?=\([a-z]\)|$)")


def parse_options(text: str) -> dict[str, str]:
    """``"(a) Open (b) Closed"`` -> ``{"A": "Open", "B": "Closed"}``."""
    options = {letter.upper(): value for letter, value in OPTION.findall(text.strip())}
    if len(options) < 2:
        raise ValueError(f"{NAME}: cannot read options from {text!r}")
    return options


def load(root: Path, limit: int | None = None) -> list[dict]:
    """Items in index order; ``limit`` caps the number of questions, rounded up to whole pairs."""
    root = Path(root)
    csv_path = require(root / "Questions.csv", NAME, SOURCE)
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if limit is not None:
        rows = rows[: limit + limit % 2]
    items: list[dict] = []
    for row in rows:
        index = int((row.get("Index") or row.get("lndex") or "").strip())
        options = parse_options(row["Options"])
        answer = row["Correct Answer"].strip().strip("()").upper()
        if answer not in options:
            raise ValueError(
                f"{NAME}: {csv_path} index {index}: answer {row['Correct Answer']!r} not in options"
            )
        prompt, context = multiple_choice(row["Question"], options)
        items.append(
            {
                "id": str(index),
                "image": image_file(root / "MMVP Images" / f"{index}.jpg", NAME, SOURCE),
                "prompt": prompt,
                "context": context,
                "pair_id": str((index + 1) // 2),
                "options": options,
                "answer": answer,
            }
        )
    return items
