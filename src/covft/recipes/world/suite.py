"""The held-out 12-benchmark suite: the paper's benchmark structure and scoring rules, in the world.

Each benchmark is built from its own random stream (never the training stream), and every
image is checked against the training images' content hashes. Items follow
docs/benchmark-records.md and are written with :func:`covft.eval.benchmarks.write_suite`.

``suite_size`` counts scoring units per benchmark: MME images (each with a Yes and a No
question), MMBench questions (each with one item per circular rotation), MMVP pairs (two images),
and single questions elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from covft.eval.benchmarks import BENCHMARKS, ImageRef, write_suite
from covft.recipes.world import formats
from covft.recipes.world.questions import QA, ask, perturb_text
from covft.recipes.world.render import Rendering, draw_scene, render, visible_enough
from covft.recipes.world.scene import Scene
from covft.recipes.world.tasks import KIND_SCENES
from covft.recipes.world.vocab import COLORS, SHAPES, SIZES, TEXTURES

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
MMVP_DETAILS = ("color", "shape", "size", "texture", "position", "text")
"""What the two images of an MMVP pair may differ in (exactly one of these)."""


def pixel_hash(image: Any) -> str:
    """Content hash of an image's decoded RGB pixels (format-independent)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()


@dataclass
class SuiteBuilder:
    """Draws held-out scenes and saves their images under ``directory/images/<benchmark>/``."""

    directory: Path
    image_size: int
    scene_options: dict[str, Any]
    training_hashes: set[str]
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def draw(self, rng: np.random.Generator, kind: str) -> tuple[Scene, Rendering]:
        """A scene of ``kind`` whose pixels never occur in the training set."""
        for _ in range(100):
            scene, rendering = draw_scene(rng, kind, self.image_size, **self.scene_options)
            if pixel_hash(rendering.image) not in self.training_hashes:
                return scene, rendering
        raise RuntimeError("could not draw a suite image that differs from every training image")

    def question(
        self, rng: np.random.Generator, kinds: tuple[str, ...], scene_kinds: tuple[str, ...] | None = None
    ) -> tuple[QA, Scene, Rendering]:
        """A held-out scene and a question of one of ``kinds`` about it."""
        for _ in range(200):
            kind = kinds[int(rng.integers(len(kinds)))]
            options = scene_kinds or KIND_SCENES[kind]
            scene, rendering = self.draw(rng, options[int(rng.integers(len(options)))])
            qa = ask((kind,), scene, rendering, rng)
            if qa is not None:
                return qa, scene, rendering
        raise RuntimeError(f"no held-out scene fits question kinds {kinds}")

    def save(self, benchmark: str, key: str, scene: Scene, rendering: Rendering) -> ImageRef:
        """Write the image as ``images/<benchmark>/<key>.png`` and remember its scene."""
        relative = f"images/{benchmark}/{key}.png"
        path = self.directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        rendering.image.save(path, format="PNG")
        self.annotations.append({"benchmark": benchmark, "image": relative, "scene": scene.to_dict()})
        return ImageRef(path)


def _choice_item(
    item_id: str, image: ImageRef, question: str, options: list[str], answer: int, hint: str | None = None
) -> dict[str, Any]:
    return {
        "id": item_id,
        "image": image,
        "prompt": formats.multiple_choice_prompt(question, options, hint),
        "context": formats.multiple_choice_context(question, options, hint),
        "options": {formats.LETTERS[i]: text for i, text in enumerate(options)},
        "answer": formats.LETTERS[answer],
    }


def _short_item(item_id: str, image: ImageRef, question: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "image": image,
        "prompt": formats.short_answer_prompt(question),
        "context": question,
    }


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
            item = _choice_item(
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
    item = _short_item(f"gqa-{q:05d}", b.save("gqa", f"gqa-{q:05d}", scene, rendering), qa.question)
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
        item = _choice_item(
            f"{name}-{q:05d}", b.save(name, f"{name}-{q:05d}", scene, rendering), qa.question, options, answer
        )
        item.update(extra or {})
        return [item]

    build.__doc__ = f"{name}: multiple choice on {', '.join(kinds)} questions."
    return build


def build_textvqa(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """Read the sign; all ten reference answers are the rendered string."""
    qa, scene, rendering = b.question(rng, ("reading",))
    item = _short_item(
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
        return [_choice_item(f"realworldqa-{q:05d}", image, qa.question, options, answer)]
    item = _short_item(f"realworldqa-{q:05d}", image, qa.question)
    item["answer"] = qa.answer
    return [item]


def _mmvp_variant(scene: Scene, detail: str, rng: np.random.Generator) -> tuple[Scene, str, str, str] | None:
    """The scene with exactly one detail changed: (new scene, question, answer before, answer after)."""
    objects = list(scene.objects)
    if detail == "text":
        if scene.sign is None:
            return None
        new_text = perturb_text(scene.sign.text, rng)
        return (
            replace(scene, sign=replace(scene.sign, text=new_text)),
            "What is written on the sign?",
            scene.sign.text,
            new_text,
        )
    if not objects:
        return None
    if detail == "position":
        pairs = [
            (a, b)
            for a in range(len(objects))
            for b in range(len(objects))
            if a != b and abs(objects[a].x - objects[b].x) > 0.15
        ]
        if not pairs:
            return None
        a, b = pairs[int(rng.integers(len(pairs)))]
        oa, ob = objects[a], objects[b]
        objects[a] = replace(oa, x=round(2 * ob.x - oa.x, 4))
        if not oa.radius < objects[a].x < 1 - oa.radius:
            return None
        before = "left" if oa.x < ob.x else "right"
        after = "right" if before == "left" else "left"
        question = f"Is the {oa.name} to the left or to the right of the {ob.name}?"
        return replace(scene, objects=objects), question, before, after
    i = int(rng.integers(len(objects)))
    obj = objects[i]
    if detail == "color":
        if [o.shape for o in objects].count(obj.shape) != 1:
            return None
        new = str(rng.choice([c for c in COLORS if c != obj.color]))
        objects[i] = replace(obj, color=new)
        return replace(scene, objects=objects), f"What color is the {obj.shape}?", obj.color, new
    if detail == "shape":
        if [o.color for o in objects].count(obj.color) != 1:
            return None
        new = str(rng.choice([s for s in SHAPES if s != obj.shape]))
        objects[i] = replace(obj, shape=new)
        return replace(scene, objects=objects), f"What shape is the {obj.color} object?", obj.shape, new
    if detail == "size":
        new = "large" if obj.size == "small" else "small"
        objects[i] = replace(obj, size=new, radius=SIZES[new])
        return replace(scene, objects=objects), f"What size is the {obj.name}?", obj.size, new
    if detail == "texture":
        new = str(rng.choice([t for t in TEXTURES if t != obj.texture]))
        objects[i] = replace(obj, texture=new)
        return replace(scene, objects=objects), f"What pattern does the {obj.name} have?", obj.texture, new
    raise ValueError(f"unknown MMVP detail {detail!r}")


def _no_overlap(rendering: Rendering) -> bool:
    total = np.sum(rendering.masks, axis=0) if rendering.masks else np.zeros(1)
    return bool(np.all(total <= 1))


def build_mmvp(b: SuiteBuilder, rng: np.random.Generator, q: int) -> list[dict[str, Any]]:
    """Two images differing in exactly one detail; the same question with opposite answers."""
    detail = MMVP_DETAILS[q % len(MMVP_DETAILS)]
    scene_kind = "text" if detail == "text" else "objects"
    options = {"occlusion_rate": 0.0, "min_objects": 2, "max_objects": 4}
    for _ in range(200):
        scene, rendering = draw_scene(rng, scene_kind, b.image_size, **options)
        if pixel_hash(rendering.image) in b.training_hashes or not _no_overlap(rendering):
            continue
        variant = _mmvp_variant(scene, detail, rng)
        if variant is None:
            continue
        scene_b, question, answer_a, answer_b = variant
        rendering_b = render(scene_b, b.image_size)
        if (
            pixel_hash(rendering_b.image) in b.training_hashes
            or not _no_overlap(rendering_b)
            or not visible_enough(scene_b, rendering_b, 1.0)
        ):
            continue
        break
    else:
        raise RuntimeError(f"could not build an MMVP pair differing in {detail}")
    pair_id = f"mmvp-{q:05d}"
    choices = [answer_a, answer_b] if rng.random() < 0.5 else [answer_b, answer_a]
    items = []
    for tag, sc, rd, answer in (("a", scene, rendering, answer_a), ("b", scene_b, rendering_b, answer_b)):
        item = _choice_item(
            f"{pair_id}-{tag}",
            b.save("mmvp", f"{pair_id}-{tag}", sc, rd),
            question,
            choices,
            choices.index(answer),
        )
        item.update(pair_id=pair_id, detail=detail)
        items.append(item)
    return items


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
