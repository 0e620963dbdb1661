"""TextVQA val: short answers scored by VQA accuracy against ten annotator answers.

Official files (textvqa.org/dataset): ``TextVQA_0.5.1_val.json`` (``{"data": [{"question",
"question_id", "image_id", "answers": [10 str], ...}]}``) and ``train_images/<image_id>.jpg`` (val
images live in the train image zip).

Prompt (``llava15``): LLaVA-1.5's ``llava_textvqa_val_v051_ocr.jsonl`` when the folder holds it
(from LLaVA's ``eval.zip``; the paper's setting, also the CoVFT release's): ``<Question>\\nReference
OCR token: <tokens>\\nAnswer the question using a single word or phrase.``, matched to the
annotations by image id and lower-cased question as LLaVA's ``eval_textvqa.py`` does. Without that
file the prompt has no OCR tokens: the capitalised question and the short-answer instruction
(what LLaVA's file holds minus the OCR line, and lmms-eval's default ``textvqa_val`` prompt).
Items record which in ``ocr_tokens``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, image_file, prompt_fields, read_json, read_jsonl

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "textvqa"
SOURCE = "https://textvqa.org/dataset (TextVQA_0.5.1_val.json and train_val_images.zip)"
QUESTIONS = "TextVQA_0.5.1_val.json"
LLAVA_QUESTIONS = "llava_textvqa_val_v051_ocr.jsonl"
LLAVA_SOURCE = "LLaVA's eval.zip (docs/Evaluation.md of haotian-liu/LLaVA)"


def _ocr_prompts(root: Path) -> dict[tuple[str, str], str]:
    """``(image id, lower-cased question) -> prompt`` of LLaVA's OCR question file."""
    prompts = {}
    for record in read_jsonl(root / LLAVA_QUESTIONS, NAME, LLAVA_SOURCE):
        question = record["text"].split("\n")[0].lower()  # eval_textvqa.py's prompt_processor
        prompts[(str(record["question_id"]), question)] = record["text"]
    return prompts


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items of the val split in file order; ``limit`` caps their number."""
    root = Path(root)
    payload = read_json(root / QUESTIONS, NAME, SOURCE)
    ocr = protocol.name == "llava15" and (root / LLAVA_QUESTIONS).is_file()
    prompts = _ocr_prompts(root) if ocr else {}
    items: list[dict] = []
    for entry in payload["data"][:limit]:
        key = (str(entry["image_id"]), entry["question"].lower())
        if ocr and key not in prompts:
            raise ValueError(f"{NAME}: question {entry['question_id']} is not in {root / LLAVA_QUESTIONS}")
        text = prompts[key] if ocr else f"{entry['question'].capitalize()}\n{SHORT_ANSWER_SUFFIX}"
        items.append(
            {
                "id": str(entry["question_id"]),
                "image": image_file(root / "train_images" / f"{entry['image_id']}.jpg", NAME, SOURCE),
                **prompt_fields(NAME, text, protocol),
                "ocr_tokens": ocr,
                "answers": [str(a) for a in entry["answers"]],
            }
        )
    return items
