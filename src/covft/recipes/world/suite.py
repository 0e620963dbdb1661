"""The held-out 12-benchmark suite: the paper's benchmark structure and scoring rules, in the world.

Each benchmark is built from its own random stream (never the training stream), and every
image is checked against the training images' content hashes. Items follow
docs/benchmark-records.md and are written with :func:`covft.eval.benchmarks.write_suite`.

``suite_size`` counts scoring units per benchmark: MME images (each with a Yes and a No
question), MMBench questions (each with one item per circular rotation), MMVP pairs (two images),
and single questions elsewhere. The builders' shared parts are :mod:`covft.recipes.world.suite_items`,
the MMVP pairs :mod:`covft.recipes.world.mmvp`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from covft.eval.benchmarks import BENCHMARKS, write_suite
from covft.recipes.world import formats
from covft.recipes.world.mmvp import build_mmvp
from covft.recipes.world.suite_items import SuiteBuilder, choice_item, short_item

SUITE_STREAM = 2
"""Random-stream tag of the suite; training uses 1, so no suite scene is a training scene."""

MME_CATEGORIES: dict[str, str] = {
    "existence": "existence",
    "count": "count",
    "position": "relation",
    "color": "color",
    "OCR": "reading",
}
"""MME subtasks of the world and the question kind behind each."""

MMBENCH_KINDS = (
    "color",
    "shape",
    "size",
    "texture",
    "count",
    "relation",
    "reading",
    "depth",
    "diagram",
    "rule",
)
GQA_KINDS = ("color", "shape", "size", "count", "relation", "existence")
REALWORLD_KINDS = ("color", "shape", "count", "relation", "existence")


def build_mme(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """One image, two questions of one subtask: answer Yes, then answer No."""
    category = list(MME_CATEGORIES)[q % len(MME_CATEGORIES)]
    qa, scene, rendering = b.question(rng, (MME_CATEGORIES[category],))
    image_id = f"mme-{q:05d}"
    image = b.save("mme", image_id, scene, rendering)
    return [
        {
            "id": f"{image_id}-{tag}",
            "image": image,
            "prompt": formats.yes_no_prompt(question),
            "context": question,
            "category": category,
            "image_id": image_id,
            "answer": answer,
        }
        for tag, question, answer in (("yes", qa.yes_question, "Yes"), ("no", qa.no_question, "No"))
    ]


def _mmbench(
    name: str, terse: bool
) -> Callable[[SuiteBuilder, np.random.Generator, int], list[dict[str, Any]]]:
    def build(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
        qa, scene, rendering = b.question(rng, MMBENCH_KINDS)
        options, answer = formats.choose_options(qa.answer, qa.candidates, rng)
        image = b.save(name, f"{name}-{q:05d}", scene, rendering)
        question = qa.terse if terse else qa.question
        items = []
        for rotation in range(len(options)):
            rotated = options[rotation:] + options[:rotation]
            item = choice_item(
                f"{name}-{q:05d}-r{rotation}",
                image,
                question,
                rotated,
                rotated.index(options[answer]),
                qa.hint,
            )
            item.update(index=q, hint=qa.hint, rotation=rotation, category=qa.kind)
            items.append(item)
        return items

    build.__doc__ = f"{name}: multiple choice with circular rotations" + (
        " (terse phrasing)." if terse else "."
    )
    return build


def build_gqa(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """Compositional short-answer questions: attributes, counts, relations, existence."""
    qa, scene, rendering = b.question(rng, GQA_KINDS)
    item = short_item(f"gqa-{q:05d}", b.save("gqa", f"gqa-{q:05d}", scene, rendering), qa.question)
    item.update(answer=qa.answer, category=qa.kind)
    return [item]


def build_scienceqa(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """A stated rule (the hint) applied to what the image shows."""
    qa, scene, rendering = b.question(rng, ("rule",))
    choices, answer = formats.choose_options(qa.answer, qa.candidates, rng)
    image = b.save("scienceqa_img", f"scienceqa_img-{q:05d}", scene, rendering)
    hint = f"Context: {qa.hint}"
    return [
        {
            "id": f"scienceqa_img-{q:05d}",
            "image": image,
            "prompt": formats.multiple_choice_prompt(qa.question, choices, hint),
            "context": formats.multiple_choice_context(qa.question, choices, hint),
            "choices": choices,
            "answer": answer,
            "hint": qa.hint,
        }
    ]


def _options_benchmark(
    name: str, kinds: tuple[str, ...], n_options: int = 4, extra: dict[str, str] | None = None
) -> Callable[[SuiteBuilder, np.random.Generator, int], list[dict[str, Any]]]:
    def build(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
        qa, scene, rendering = b.question(rng, kinds)
        options, answer = formats.choose_options(qa.answer, qa.candidates, rng, n_options)
        item = choice_item(
            f"{name}-{q:05d}", b.save(name, f"{name}-{q:05d}", scene, rendering), qa.question, options, answer
        )
        item.update(extra or {})
        return [item]

    build.__doc__ = f"{name}: multiple choice on {', '.join(kinds)} questions."
    return build


def build_textvqa(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """Read the sign; all ten reference answers are the rendered string."""
    qa, scene, rendering = b.question(rng, ("reading",))
    item = short_item(
        f"textvqa-{q:05d}", b.save("textvqa", f"textvqa-{q:05d}", scene, rendering), qa.question
    )
    item["answers"] = [qa.answer] * 10
    return [item]


def build_realworldqa(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """Cluttered scenes; even questions multiple choice, odd ones short answer."""
    qa, scene, rendering = b.question(rng, REALWORLD_KINDS, scene_kinds=("clutter",))
    image = b.save("realworldqa", f"realworldqa-{q:05d}", scene, rendering)
    if q % 2 == 0:
        options, answer = formats.choose_options(qa.answer, qa.candidates, rng)
        return [choice_item(f"realworldqa-{q:05d}", image, qa.question, options, answer)]
    item = short_item(f"realworldqa-{q:05d}", image, qa.question)
    item["answer"] = qa.answer
    return [item]


BUILDERS: dict[str, Callable[[SuiteBuilder, np.random.Generator, int], list[dict[str, Any]]]] = {
    "mme": build_mme,
    "mmbench_en": _mmbench("mmbench_en", terse=False),
    "mmbench_cn": _mmbench("mmbench_cn", terse=True),
    "gqa": build_gqa,
    "scienceqa_img": build_scienceqa,
    "ai2d": _options_benchmark("ai2d", ("diagram",)),
    "textvqa": build_textvqa,
    "mmvp": build_mmvp,
    "realworldqa": build_realworldqa,
    "cvbench_coco": _options_benchmark("cvbench_coco", ("count",), extra={"source": "COCO", "task": "Count"}),
    "cvbench_ade20k": _options_benchmark(
        "cvbench_ade20k", ("relation",), extra={"source": "ADE20K", "task": "Relation"}
    ),
    "cvbench_omni3d": _options_benchmark(
        "cvbench_omni3d", ("depth",), extra={"source": "Omni3D", "task": "Depth"}
    ),
}
"""One builder per benchmark, in the paper's order (the same names as :data:`covft.eval.BENCHMARKS`)."""


def stream_index(name: str) -> int:
    """The random stream of benchmark ``name``; MMBench-cn shares MMBench-en's questions and images."""
    return BENCHMARKS.index("mmbench_en" if name == "mmbench_cn" else name)


def build_suite(
    directory: Path,
    seed: int,
    suite_size: int,
    image_size: int,
    scene_options: dict[str, Any],
    training_hashes: set[str],
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write all 12 ``<name>.jsonl`` files (and their images) under ``directory``; returns items per benchmark."""
    builder = SuiteBuilder(directory, image_size, scene_options, training_hashes)
    counts = {}
    for name, build in BUILDERS.items():
        items: list[dict[str, Any]] = []
        for q in range(suite_size):
            rng = np.random.default_rng([seed, SUITE_STREAM, stream_index(name), q])
            items += build(builder, rng, q)
            if progress is not None:
                progress(1)
        write_suite(directory, name, items)
        counts[name] = len(items)
    annotations = directory.parent / "annotations" / "suite.jsonl"
    annotations.parent.mkdir(parents=True, exist_ok=True)
    annotations.write_text("".join(json.dumps(a) + "\n" for a in builder.annotations), encoding="utf-8")
    return counts
