"""MMBench dev (English and Chinese) with circular evaluation.

Official file: the OpenCompass dev TSV (``mmbench_dev_20230712.tsv`` for English,
``mmbench_dev_cn_20231003.tsv`` for Chinese), columns ``index, question, hint, A, B, C, D,
answer, category, image, ...`` with the image as base64. VLMEvalKit's copies (``MMBench_DEV_EN.tsv``
/ ``MMBench_DEV_CN.tsv``) are accepted too; there an image cell may hold the index of the row whose
image it shares.

Circular evaluation: every question yields one item per rotation of its non-empty options
(rotation ``r`` moves option ``r`` to ``A``), and the question counts as right only if every
rotation is answered right. Prompts follow LLaVA-1.5's ``model_vqa_mmbench``: hint, question,
``"A. text"`` lines, then the English or Chinese letter instruction.
"""

from __future__ import annotations

import csv
from pathlib import Path

from covft.eval.benchmarks.base import (
    LETTERS,
    MC_SUFFIX,
    MC_SUFFIX_CN,
    ImageRef,
    missing_file,
    multiple_choice,
    require,
)

SOURCE = (
    "OpenCompass (https://download.openxlab.org.cn/ or the links in github.com/open-compass/MMBench; "
    "LLaVA's eval zip ships the same TSVs)"
)
FILES = {
    "mmbench_en": ("mmbench_dev_20230712.tsv", "MMBench_DEV_EN.tsv"),
    "mmbench_cn": ("mmbench_dev_cn_20231003.tsv", "MMBench_DEV_CN.tsv"),
}
SUFFIX = {"mmbench_en": MC_SUFFIX, "mmbench_cn": MC_SUFFIX_CN}
OPTION_COLUMNS = ("A", "B", "C", "D", "E")


def _present(value: str | None) -> bool:
    return value is not None and value.strip() not in ("", "nan", "NaN", "None")


def _find_tsv(root: Path, name: str) -> Path:
    for filename in FILES[name]:
        for candidate in (root / filename, root / "mmbench" / filename):
            if candidate.is_file():
                return candidate
    raise missing_file(root / FILES[name][0], name, SOURCE)


def _read_rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(2**31 - 1)
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def rotate(options: list[str], answer: int, rotation: int) -> tuple[dict[str, str], str]:
    """Options and answer letter after moving option ``rotation`` to the front."""
    n = len(options)
    texts = options[rotation:] + options[:rotation]
    return {LETTERS[i]: text for i, text in enumerate(texts)}, LETTERS[(answer - rotation) % n]


def load_split(root: Path, name: str, limit: int | None = None) -> list[dict]:
    """Items of ``mmbench_en`` or ``mmbench_cn``; ``limit`` caps the number of questions."""
    path = require(_find_tsv(Path(root), name), name, SOURCE)
    rows = _read_rows(path)
    if rows and "answer" not in rows[0]:
        raise ValueError(
            f"{name}: {path} has no 'answer' column; use the dev split (the test split has no answers)"
        )
    images = {row["index"]: row.get("image", "") for row in rows}
    items: list[dict] = []
    for row_number, row in enumerate(rows[: limit if limit is not None else len(rows)], start=2):
        texts = [row[c].strip() for c in OPTION_COLUMNS if _present(row.get(c))]
        answer = row["answer"].strip()
        if answer not in LETTERS[: len(texts)]:
            raise ValueError(f"{name}: {path} line {row_number} answer {answer!r} is not one of its options")
        image_cell = row.get("image", "")
        if len(image_cell) < 64 and image_cell.strip() in images:
            image_cell = images[image_cell.strip()]
        image = ImageRef(b64=image_cell) if _present(image_cell) else None
        hint = row["hint"].strip() if _present(row.get("hint")) else None
        for rotation in range(len(texts)):
            options, letter = rotate(texts, LETTERS.index(answer), rotation)
            prompt, context = multiple_choice(row["question"], options, hint, suffix=SUFFIX[name])
            items.append(
                {
                    "id": f"{row['index']}/r{rotation}",
                    "image": image,
                    "prompt": prompt,
                    "context": context,
                    "index": row["index"],
                    "options": options,
                    "answer": letter,
                    "hint": hint,
                    "rotation": rotation,
                    "category": row.get("category", ""),
                }
            )
    return items


def load_en(root: Path, limit: int | None = None) -> list[dict]:
    """MMBench-en dev, circular."""
    return load_split(root, "mmbench_en", limit)


def load_cn(root: Path, limit: int | None = None) -> list[dict]:
    """MMBench-cn dev, circular."""
    return load_split(root, "mmbench_cn", limit)
