"""MMBench dev (English and Chinese), one item per TSV row, scored with CircularEval.

Official file: the OpenCompass dev TSV (``mmbench_dev_20230712.tsv`` for English,
``mmbench_dev_cn_20231003.tsv`` for Chinese; LLaVA's evaluation guide downloads both), columns
``index, question, hint, A, B, C, D, answer, category, image, ...`` with the image as base64.
VLMEvalKit's copies (``MMBench_DEV_EN.tsv`` / ``MMBench_DEV_CN.tsv``) are accepted too; there an
image cell may hold the index of the row whose image it shares.

The TSVs already hold the CircularEval copies: row ``i + k * 1_000_000`` is question ``i`` with
its options shifted ``k`` places (and its own answer letter). So, as LLaVA-1.5 and the CoVFT
release do, every row is predicted once, and, as VLMEvalKit scores them, the rows are grouped by
``index % 1_000_000``: a question counts only if every row of its group is right. Items carry
``index`` (the question, ``index % 1e6``) and ``rotation`` (``index // 1e6``, 0 for the original).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import (
    MC_SUFFIX,
    MC_SUFFIX_CN,
    ImageRef,
    is_missing,
    missing_file,
    options_lines,
    prompt_fields,
    require,
)

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

SOURCE = (
    "OpenCompass (https://download.openmmlab.com/mmclassification/datasets/mmbench/, the links in "
    "github.com/open-compass/MMBench and in LLaVA's docs/Evaluation.md)"
)
FILES = {
    "mmbench_en": ("mmbench_dev_20230712.tsv", "MMBench_DEV_EN.tsv"),
    "mmbench_cn": ("mmbench_dev_cn_20231003.tsv", "MMBench_DEV_CN.tsv"),
}
SUFFIX = {"mmbench_en": MC_SUFFIX, "mmbench_cn": MC_SUFFIX_CN}
#: lmms-eval's post_prompt of mmbench_en_dev / mmbench_cn_dev.
LMMS_SUFFIX = {"mmbench_en": f"\n{MC_SUFFIX}", "mmbench_cn": "\n请直接使用所提供的选项字母作为答案回答。"}
CIRCULAR_OFFSET = 1_000_000
"""VLMEvalKit groups a question's rows by ``index % 1e6`` (vlmeval/dataset/utils/multiple_choice.py)."""


def _find_tsv(root: Path, name: str) -> Path:
    for filename in FILES[name]:
        if (root / filename).is_file():
            return root / filename
    raise missing_file(root / FILES[name][0], name, SOURCE)


def _read_rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(2**31 - 1)
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def llava_options(row: dict[str, str]) -> dict[str, str]:
    """Options A-D up to the first missing one, as LLaVA's ``get_options`` reads them."""
    options = {}
    for letter in "ABCD":
        if is_missing(row.get(letter)):
            break
        options[letter] = row[letter]
    return options


def lmms_options(row: dict[str, str]) -> dict[str, str]:
    """Every present option A-E, as lmms-eval's ``create_options_prompt`` reads them."""
    return {letter: row[letter] for letter in "ABCDE" if not is_missing(row.get(letter))}


def prompt(name: str, question: str, hint: str | None, options: dict[str, str], protocol: str) -> str:
    """The prompt of one row: LLaVA's ``model_vqa_mmbench.py --single-pred-prompt`` or lmms-eval's."""
    if protocol == "lmms-eval":
        choices = f"There are several options:\n{options_lines(options)}"
        query = f"{hint} {question} {choices}" if hint is not None else f"{question} {choices}"
        return f"{query}\n{LMMS_SUFFIX[name]}"
    text = f"{hint}\n{question}" if hint is not None else question
    return f"{text}\n{options_lines(options)}\n{SUFFIX[name]}"


def _image(row: dict[str, str], images: dict[str, str]) -> ImageRef | None:
    """The row's image; a short digit cell is the index of the row holding it (VLMEvalKit)."""
    cell = row.get("image", "")
    if len(cell) < 64 and cell.strip() in images:
        cell = images[cell.strip()]
    return None if is_missing(cell) else ImageRef(b64=cell)


def load_split(root: Path, name: str, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items of ``mmbench_en`` or ``mmbench_cn``; ``limit`` caps the number of questions."""
    path = require(_find_tsv(Path(root), name), name, SOURCE)
    rows = _read_rows(path)
    if rows and "answer" not in rows[0]:
        raise ValueError(
            f"{name}: {path} has no 'answer' column; use the dev split (the test split has no answers)"
        )
    images = {row["index"]: row.get("image", "") for row in rows}
    kept = sorted({int(row["index"]) % CIRCULAR_OFFSET for row in rows})[:limit]
    kept_set = set(kept)
    items: list[dict] = []
    for line, row in enumerate(rows, start=2):
        index = int(row["index"])
        if index % CIRCULAR_OFFSET not in kept_set:
            continue
        options = (lmms_options if protocol.name == "lmms-eval" else llava_options)(row)
        answer = row["answer"].strip()
        if answer not in options:
            raise ValueError(f"{name}: {path} line {line}: answer {answer!r} is not one of its options")
        hint = None if is_missing(row.get("hint")) else row["hint"]
        text = prompt(name, row["question"], hint, options, protocol.name)
        items.append(
            {
                "id": str(index),
                "image": _image(row, images),
                **prompt_fields(name, text, protocol),
                "index": index % CIRCULAR_OFFSET,
                "rotation": index // CIRCULAR_OFFSET,
                "options": options,
                "answer": answer,
                "hint": hint,
                "category": row.get("category", ""),
            }
        )
    return items


def load_en(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """MMBench-en dev."""
    return load_split(root, "mmbench_en", limit, protocol)


def load_cn(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """MMBench-cn dev."""
    return load_split(root, "mmbench_cn", limit, protocol)
