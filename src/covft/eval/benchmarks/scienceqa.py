"""ScienceQA-IMG: the test-split problems that have an image.

Official files (github.com/lupantech/ScienceQA, ``data/scienceqa``): ``problems.json`` (a dict
``pid -> {"question", "choices", "answer", "hint", "image", "split", ...}``), ``pid_splits.json``
(``{"test": [pid, ...], ...}``) and ``test/<pid>/image.png``. Prompt as in LLaVA-1.5's
``llava_test_CQM-A``: ``"Context: <hint>"`` (only when the hint is non-empty), question,
``"A. text"`` lines, then the letter instruction.
"""

from __future__ import annotations

from pathlib import Path

from covft.eval.benchmarks.base import image_file, multiple_choice, options_from_list, read_json

NAME = "scienceqa_img"
SOURCE = (
    "https://github.com/lupantech/ScienceQA (data/scienceqa: problems.json, pid_splits.json, test/ images)"
)


def load(root: Path, limit: int | None = None) -> list[dict]:
    """Test problems with an image, in ``pid_splits.json`` order; ``limit`` caps their number."""
    root = Path(root)
    problems = read_json(root / "problems.json", NAME, SOURCE)
    splits = read_json(root / "pid_splits.json", NAME, SOURCE)
    if "test" not in splits:
        raise ValueError(f"{NAME}: {root / 'pid_splits.json'} has no 'test' split")
    items: list[dict] = []
    for pid in splits["test"]:
        if limit is not None and len(items) >= limit:
            break
        problem = problems[str(pid)]
        if not problem.get("image"):
            continue
        choices = [str(c) for c in problem["choices"]]
        hint = str(problem.get("hint") or "").strip()
        prompt, context = multiple_choice(
            problem["question"], options_from_list(choices), f"Context: {hint}" if hint else None
        )
        items.append(
            {
                "id": str(pid),
                "image": image_file(root / "test" / str(pid) / problem["image"], NAME, SOURCE),
                "prompt": prompt,
                "context": context,
                "choices": choices,
                "answer": int(problem["answer"]),
            }
        )
    return items
