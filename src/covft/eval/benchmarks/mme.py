"""MME-Perception: yes/no questions, two per image, over ten perception subtasks.

Official layout (``MME_Benchmark_release_version/MME_Benchmark/``, the root itself or any of the
nested folders may be given): one folder per subtask, either
``<task>/images/<name>.jpg`` + ``<task>/questions_answers_YN/<name>.txt`` or ``<task>/<name>.jpg``
+ ``<task>/<name>.txt``; every txt line is ``question<TAB>answer``, the question ending with
"Please answer yes or no." (twice with two spaces before "Please").

Prompts: ``llava15`` replaces that sentence with LLaVA's short-answer instruction exactly as
LLaVA-1.5's ``llava_mme.jsonl`` does (the rule reproduces all 2,374 of its lines); ``lmms-eval``
as lmms-eval's ``mme`` task does (its replace keeps the second space of the two-space questions).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import SHORT_ANSWER_SUFFIX, image_file, missing_file, prompt_fields

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "mme"
SOURCE = "the MME authors (github.com/BradyFU/Awesome-Multimodal-Large-Language-Models, MME section; HF lmms-lab/MME)"
PERCEPTION_TASKS = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")
YES_NO = " Please answer yes or no."


def _dataset_dir(root: Path) -> Path:
    """The folder holding the subtask folders: the root itself or the release's nested folders."""
    for candidate in (
        root / "MME_Benchmark_release_version" / "MME_Benchmark",
        root / "MME_Benchmark_release_version",
        root / "MME_Benchmark",
    ):
        if (candidate / PERCEPTION_TASKS[0]).is_dir():
            return candidate
    return root


def _image_for(folder: Path, stem: str, txt: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise missing_file(folder / f"{stem}.jpg", NAME, f"{SOURCE} (the image for {txt})")


def _task_files(task_dir: Path) -> list[tuple[Path, Path]]:
    """(txt, image folder) pairs of one subtask in either official layout, sorted by name."""
    qa_dir = task_dir / "questions_answers_YN"
    if qa_dir.is_dir():
        return [(txt, task_dir / "images") for txt in sorted(qa_dir.glob("*.txt"))]
    return [(txt, task_dir) for txt in sorted(task_dir.glob("*.txt"))]


def _parse(txt: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(txt.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        question, sep, answer = line.rpartition("\t")
        if not sep or answer.strip() not in ("Yes", "No"):
            raise ValueError(f"{NAME}: {txt} line {number} is not 'question<TAB>Yes|No': {line!r}")
        pairs.append((question, answer.strip()))
    return pairs


def prompt(question: str, protocol: str) -> str:
    """The prompt for an MME question as written in its txt file."""
    if protocol == "lmms-eval":  # lmms-eval mme_doc_to_text: strip, then replace
        return f"{question.strip().replace(YES_NO, '')}\n{SHORT_ANSWER_SUFFIX}"
    # LLaVA's llava_mme.jsonl (its convert_answer_to_mme.py inverts this rule)
    return f"{question.replace(YES_NO, '').strip()}\n{SHORT_ANSWER_SUFFIX}"


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items of the ten perception subtasks; ``limit`` caps the number of images (pairs kept)."""
    data = _dataset_dir(Path(root))
    items: list[dict] = []
    images = 0
    for task in PERCEPTION_TASKS:
        task_dir = data / task
        if not task_dir.is_dir():
            raise missing_file(task_dir, NAME, SOURCE)
        for txt, image_dir in _task_files(task_dir):
            if limit is not None and images >= limit:
                return items
            image = image_file(_image_for(image_dir, txt.stem, txt), NAME, SOURCE)
            image_id = f"{task}/{txt.stem}"
            for k, (question, answer) in enumerate(_parse(txt)):
                text = prompt(question, protocol.name)
                items.append(
                    {
                        "id": f"{image_id}/{k}",
                        "image": image,
                        **prompt_fields(NAME, text, protocol),
                        "category": task,
                        "image_id": image_id,
                        "answer": answer,
                    }
                )
            images += 1
    return items
