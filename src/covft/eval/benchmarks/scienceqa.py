"""ScienceQA-IMG: the test-split problems that have an image.

Official files (github.com/lupantech/ScienceQA, ``data/scienceqa``): ``problems.json`` (``pid ->
{"question", "choices", "answer", "hint", "image", "split", ...}``), ``pid_splits.json`` (``{"test":
[pid, ...], ...}``) and the images unzipped to ``images/test/<pid>/image.png`` (the folder LLaVA's
``sqa.sh`` passes as ``--image-folder``; a bare ``test/`` folder is read too).

Prompt (``llava15``): LLaVA-1.5's ``llava_test_CQM-A.json`` human turn when the folder holds it,
else the same text rebuilt (``Context: <hint>`` only when the hint is non-empty, the question,
``A. text`` lines, double spaces collapsed once, which reproduces that file on every problem of a
stored copy whose text is unedited), then ``model_vqa_science.py --single-pred-prompt``'s letter
instruction. ``lmms-eval``: its ``scienceqa_img`` prompt (the same lines, no space collapsing).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from covft.data.templates import IMAGE_PLACEHOLDER
from covft.eval.benchmarks.base import (
    MC_SUFFIX,
    first_existing,
    image_file,
    options_from_list,
    options_lines,
    prompt_fields,
    read_json,
)

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

NAME = "scienceqa_img"
SOURCE = (
    "https://github.com/lupantech/ScienceQA (data/scienceqa: problems.json, pid_splits.json, "
    "images/test from the project's download links)"
)
LLAVA_QUESTIONS = "llava_test_CQM-A.json"


def question_text(problem: dict, protocol: str) -> str:
    """The problem's text before the letter instruction (see the module docstring)."""
    hint = str(problem.get("hint") or "")
    lines = [f"Context: {hint}"] if hint else []
    lines += [str(problem["question"]), options_lines(options_from_list(problem["choices"]))]
    text = "\n".join(lines)
    return text if protocol == "lmms-eval" else text.replace("  ", " ").strip()


def _llava_turns(root: Path) -> dict[str, str]:
    """``pid -> human turn`` of LLaVA's question file (``<image>`` removed as model_vqa_science does)."""
    path = root / LLAVA_QUESTIONS
    if not path.is_file():
        return {}
    return {
        str(entry["id"]): entry["conversations"][0]["value"].replace(IMAGE_PLACEHOLDER, "").strip()
        for entry in read_json(path, NAME, SOURCE)
    }


def load(root: Path, limit: int | None, protocol: Protocol) -> list[dict]:
    """Test problems with an image, in ``pid_splits.json`` order; ``limit`` caps their number."""
    root = Path(root)
    problems = read_json(root / "problems.json", NAME, SOURCE)
    splits = read_json(root / "pid_splits.json", NAME, SOURCE)
    if "test" not in splits:
        raise ValueError(f"{NAME}: {root / 'pid_splits.json'} has no 'test' split")
    images = first_existing(root, ("images/test", "test"))
    llava = _llava_turns(root) if protocol.name == "llava15" else {}
    items: list[dict] = []
    for pid in splits["test"]:
        if limit is not None and len(items) >= limit:
            break
        problem = problems[str(pid)]
        if not problem.get("image"):
            continue
        text = f"{llava.get(str(pid)) or question_text(problem, protocol.name)}\n{MC_SUFFIX}"
        items.append(
            {
                "id": str(pid),
                "image": image_file(images / str(pid) / problem["image"], NAME, SOURCE),
                **prompt_fields(NAME, text, protocol),
                "choices": [str(c) for c in problem["choices"]],
                "answer": int(problem["answer"]),
            }
        )
    return items
