"""TextVQA val: short answers scored by VQA accuracy against ten annotator answers.

Official files (textvqa.org/dataset): ``TextVQA_0.5.1_val.json`` (``{"data": [{"question",
"question_id", "image_id", "answers": [10 str], ...}]}``) and ``train_images/<image_id>.jpg``
(val images live in the train image zip). Prompt: LLaVA-1.5's short-answer format without the
reference OCR tokens (Cambrian-1's setting).
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from covft.eval.benchmarks.base import image_file, read_json, short_answer

NAME = "textvqa"
SOURCE = "https://textvqa.org/dataset (TextVQA_0.5.1_val.json and train_val_images.zip)"
QUESTIONS = "TextVQA_0.5.1_val.json"


def load(root: Path, limit: int | None = None) -> list[dict]:
    """Items of the val split in file order; ``limit`` caps their number."""
    root = Path(root)
    payload = read_json(root / QUESTIONS, NAME, SOURCE)
    items: list[dict] = []
    for entry in islice(payload["data"], limit):
        prompt, context = short_answer(entry["question"])
        items.append(
            {
                "id": str(entry["question_id"]),
                "image": image_file(root / "train_images" / f"{entry['image_id']}.jpg", NAME, SOURCE),
                "prompt": prompt,
                "context": context,
                "answers": [str(a) for a in entry["answers"]],
            }
        )
    return items
