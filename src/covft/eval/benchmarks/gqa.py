"""GQA testdev-balanced: short answers scored by exact match.

Official files (cs.stanford.edu/people/dorarad/gqa/download.html): ``testdev_balanced_questions.json``
from ``questions1.2.zip`` (``question id -> {"imageId", "question", "answer", ...}``) and
``images/<imageId>.jpg`` from ``images.zip``, either directly in the folder or under ``data/``
(LLaVA's ``playground/data/eval/gqa/data``). Prompt: LLaVA-1.5's ``llava_gqa_testdev_balanced.jsonl``
when the folder holds it (its text, order and images), else ``<question>\\nAnswer the question using
a single word or phrase.``, which is also lmms-eval's ``gqa`` prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import (
    SHORT_ANSWER_SUFFIX,
    first_existing,
    image_file,
    prompt_fields,
    read_json,
    read_jsonl,
)

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "gqa"
SOURCE = "https://cs.stanford.edu/people/dorarad/gqa/download.html (questions1.2.zip and images.zip)"
QUESTIONS = "testdev_balanced_questions.json"
LLAVA_QUESTIONS = "llava_gqa_testdev_balanced.jsonl"


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items of testdev-balanced; ``limit`` caps the number of questions."""
    root = Path(root)
    data = first_existing(root, ("data", "."))
    questions = read_json(data / QUESTIONS, NAME, SOURCE)
    if not isinstance(questions, dict):
        raise ValueError(f"{NAME}: {data / QUESTIONS} should map question ids to questions")
    llava = root / LLAVA_QUESTIONS
    if protocol.name == "llava15" and llava.is_file():
        source = LLAVA_QUESTIONS
        prompts = [(str(r["question_id"]), r["image"], r["text"]) for r in read_jsonl(llava, NAME, SOURCE)]
    else:
        source = QUESTIONS
        prompts = [
            (str(qid), f"{q['imageId']}.jpg", f"{q['question']}\n{SHORT_ANSWER_SUFFIX}")
            for qid, q in questions.items()
        ]
    items: list[dict] = []
    for qid, image, text in prompts[:limit]:
        if qid not in questions:
            raise ValueError(f"{NAME}: question {qid} of {root / source} is not in {data / QUESTIONS}")
        items.append(
            {
                "id": qid,
                "image": image_file(data / "images" / image, NAME, SOURCE),
                **prompt_fields(NAME, text, protocol),
                "answer": str(questions[qid]["answer"]),
            }
        )
    return items
