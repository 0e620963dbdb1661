"""GQA testdev-balanced: short answers scored by exact match.

Official files (cs.stanford.edu/people/dorarad/gqa/download.html): ``testdev_balanced_questions.json``
from ``questions1.2.zip`` (a dict ``question id -> {"imageId", "question", "answer", ...}``) and
``images/<imageId>.jpg`` from ``images.zip``. Prompt: LLaVA-1.5's short-answer format.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from covft.eval.benchmarks.base import image_file, read_json, short_answer

NAME = "gqa"
SOURCE = "https://cs.stanford.edu/people/dorarad/gqa/download.html (questions1.2.zip and images.zip)"
QUESTIONS = "testdev_balanced_questions.json"


def load(root: Path, limit: int | None = None) -> list[dict]:
    """Items of testdev-balanced in file order; ``limit`` caps the number of questions."""
    root = Path(root)
    questions = read_json(root / QUESTIONS, NAME, SOURCE)
    if not isinstance(questions, dict):
        raise ValueError(f"{NAME}: {root / QUESTIONS} should map question ids to questions")
    items: list[dict] = []
    for qid, entry in islice(questions.items(), limit):
        prompt, context = short_answer(entry["question"])
        items.append(
            {
                "id": str(qid),
                "image": image_file(root / "images" / f"{entry['imageId']}.jpg", NAME, SOURCE),
                "prompt": prompt,
                "context": context,
                "answer": str(entry["answer"]),
            }
        )
    return items
