"""The MMVP analogue: pairs of held-out images that differ in exactly one detail, asked the same question."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from covft.recipes.world.qa import pick
from covft.recipes.world.render import Rendering, draw_scene, render, sign_text_mask, visible_enough
from covft.recipes.world.scene import Scene
from covft.recipes.world.suite_items import SuiteBuilder, choice_item, pixel_hash
from covft.recipes.world.vocab import COLORS, SHAPES, SIZES, TEXT_CHARS, TEXTURES, looks_like_option_letter

MMVP_DETAILS = ("color", "shape", "size", "texture", "position", "text")
"""What the two images of an MMVP pair may differ in (exactly one of these)."""


def one_character_changed(text: str, rng: np.random.Generator) -> str:
    """``text`` with exactly one character replaced (same length, so it still fits its sign)."""
    pos = int(rng.integers(len(text)))
    chars = [
        c
        for c in TEXT_CHARS
        if c != text[pos] and not looks_like_option_letter(text[:pos] + c + text[pos + 1 :])
    ]
    return text[:pos] + str(pick(rng, chars)) + text[pos + 1 :]


def text_fits_sign(scene: Scene, size: int) -> bool:
    """Whether every pixel of the sign's text lies on its board (always true without a sign)."""
    mask = sign_text_mask(scene, size)
    if scene.sign is None or mask is None:
        return True
    x1, y1, x2, y2 = (round(v * size) for v in scene.sign.box)
    return int(mask[y1:y2, x1:x2].sum()) == int(mask.sum())


def _mmvp_variant(scene: Scene, detail: str, rng: np.random.Generator) -> tuple[Scene, str, str, str] | None:
    """The scene with exactly one detail changed: (new scene, question, answer before, answer after)."""
    objects = list(scene.objects)
    if detail == "text":
        if scene.sign is None:
            return None
        new_text = one_character_changed(scene.sign.text, rng)
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
        if (
            pixel_hash(rendering.image) in b.training_hashes
            or not _no_overlap(rendering)
            or not text_fits_sign(scene, b.image_size)
        ):
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
            or not text_fits_sign(scene_b, b.image_size)
        ):
            continue
        break
    else:
        raise RuntimeError(f"could not build an MMVP pair differing in {detail}")
    pair_id = f"mmvp-{q:05d}"
    choices = [answer_a, answer_b] if rng.random() < 0.5 else [answer_b, answer_a]
    items = []
    for tag, sc, rd, answer in (("a", scene, rendering, answer_a), ("b", scene_b, rendering_b, answer_b)):
        item = choice_item(
            f"{pair_id}-{tag}",
            b.save("mmvp", f"{pair_id}-{tag}", sc, rd),
            question,
            choices,
            choices.index(answer),
        )
        item.update(pair_id=pair_id, detail=detail)
        items.append(item)
    return items
