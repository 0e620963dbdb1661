"""MMVP: 150 pairs of CLIP-blind images, one two-option question each.

Official files (Hugging Face ``MMVP/MMVP``, which the CoVFT release downloads): ``Questions.csv``
with columns ``Index`` (spelled ``lndex`` in the release), ``Question``, ``Options`` (``"(a) Open
(b) Closed"``) and ``Correct Answer`` (``"(a)"``), and ``MMVP Images/<Index>.jpg``. Questions
``2k-1`` and ``2k`` form pair ``k``; a pair counts only if both are right.

Prompts: ``llava15`` as the CoVFT release's ``mmvp_eval.py`` (Cambrian-1's) builds them from the
raw options text: ``<question> Options:\\nA. Open\\nB. Closed\\n<letter instruction>``;
``lmms-eval`` as its ``mmvp`` task: ``<question>\\nA. Open\\nB. Closed\\n<letter instruction>``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.benchmarks.base import MC_SUFFIX, image_file, options_lines, prompt_fields, require

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "mmvp"
SOURCE = "Hugging Face datasets MMVP/MMVP (Questions.csv and 'MMVP Images/')"
OPTION = re.compile(r"\(([a-z])\)\s*(.*?)\s*(?=\([a-z]\)|$)")


def parse_options(text: str) -> dict[str, str]:
    """``"(a) Open (b) Closed"`` -> ``{"A": "Open", "B": "Closed"}``."""
    options = {letter.upper(): value for letter, value in OPTION.findall(text.strip())}
    if len(options) < 2:
        raise ValueError(f"{NAME}: cannot read options from {text!r}")
    return options


def release_options(text: str) -> str:
    """The option lines ``mmvp_eval.py`` makes of the raw text: split at "(b)", "(a)" -> "A."."""
    parts = [part.strip().replace("(a)", "A.").replace("(b)", "B.") for part in text.split("(b)")]
    if len(parts) > 1:
        parts[1] = f"B. {parts[1]}"
    return "".join(f"\n{part}" for part in parts)


def prompt(question: str, options_text: str, protocol: str) -> str:
    """The prompt of one question (see the module docstring)."""
    if protocol == "lmms-eval":
        return f"{question}\n{options_lines(parse_options(options_text))}\n{MC_SUFFIX}"
    return f"{question} Options:{release_options(options_text)}\n{MC_SUFFIX}"


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Items in index order; ``limit`` counts pairs (the benchmark's scoring unit), as ``--limit`` does."""
    root = Path(root)
    csv_path = require(root / "Questions.csv", NAME, SOURCE)
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if limit is not None:
        kept = set(list(dict.fromkeys(_pair(row) for row in rows))[:limit])
        rows = [row for row in rows if _pair(row) in kept]
    items: list[dict] = []
    for row in rows:
        index = _index(row)
        options = parse_options(row["Options"])
        answer = row["Correct Answer"].strip().strip("()").upper()
        if answer not in options:
            raise ValueError(
                f"{NAME}: {csv_path} index {index}: answer {row['Correct Answer']!r} not in options"
            )
        text = prompt(row["Question"], row["Options"], protocol.name)
        items.append(
            {
                "id": str(index),
                "image": image_file(root / "MMVP Images" / f"{index}.jpg", NAME, SOURCE),
                **prompt_fields(NAME, text, protocol),
                "pair_id": str(_pair(row)),
                "options": options,
                "answer": answer,
            }
        )
    return items


def _index(row: dict) -> int:
    """The question's index (the file's header is spelled ``lndex`` in some copies)."""
    return int((row.get("Index") or row.get("lndex") or "").strip())


def _pair(row: dict) -> int:
    """Questions 2k-1 and 2k ask about the two images of pair k."""
    return (_index(row) + 1) // 2
