"""Questions about the special scene kinds: reading text, depth, diagrams and the rule family.

They need fine strokes (``reading``), occlusion and scale cues (``depth``), or a small reasoning
step over a drawn diagram or a rule; the object questions are :mod:`covft.recipes.world.questions`.
"""

from __future__ import annotations

import numpy as np

from covft.recipes.world.qa import QA, number_candidates, others, pick, unique
from covft.recipes.world.render import Rendering
from covft.recipes.world.scene import Scene
from covft.recipes.world.vocab import (
    COLORS,
    PROPERTIES,
    SHAPES,
    TEXT_CHARS,
    WORDS,
    looks_like_option_letter,
    plural,
)


def perturb_text(text: str, rng: np.random.Generator) -> str:
    """A different string that looks alike: one character changed (or a different word)."""
    for _ in range(20):
        if rng.random() < 0.3:
            other = str(pick(rng, [w for w in WORDS if len(w) == len(text)] or list(WORDS)))
        else:
            pos = int(rng.integers(len(text)))
            other = text[:pos] + str(pick(rng, list(TEXT_CHARS))) + text[pos + 1 :]
        if other != text and not looks_like_option_letter(other):
            return other
    return text + "A"


def reading_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "What is written on the sign?" (the answer is exactly the rendered string)."""
    if scene.sign is None:
        return None
    text = scene.sign.text
    wrong: list[str] = []
    while len(wrong) < 3:
        candidate = perturb_text(text, rng)
        if candidate not in wrong:
            wrong.append(candidate)
    return QA(
        "reading",
        "What is written on the sign?",
        "Sign text?",
        text,
        wrong,
        f'Does the sign say "{text}"?',
        f'Does the sign say "{wrong[0]}"?',
        "OCR",
    )


def depth_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "Which is closer to the camera, the red circle or the blue square?" (depth scenes)."""
    if scene.kind != "depth" or len(scene.objects) < 2:
        return None
    a, b = (int(i) for i in rng.choice(len(scene.objects), size=2, replace=False))
    oa, ob = scene.objects[a], scene.objects[b]
    near, far = (oa, ob) if oa.depth < ob.depth else (ob, oa)
    return QA(
        "depth",
        f"Which is closer to the camera, the {oa.name} or the {ob.name}?",
        f"Closer: {oa.name} or {ob.name}?",
        near.name,
        [far.name],
        f"Is the {near.name} closer to the camera than the {far.name}?",
        f"Is the {far.name} closer to the camera than the {near.name}?",
        "depth",
        [a, b],
    )


def diagram_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Arrow targets, labels and in-degrees of a diagram."""
    if scene.kind != "diagram":
        return None
    names = [o.name for o in scene.objects]
    outgoing = {a: [b for x, b in scene.arrows if x == a] for a in range(len(names))}
    mode = int(rng.integers(3))
    single = [a for a, bs in outgoing.items() if len(bs) == 1]
    if mode == 0 and single:
        a = int(pick(rng, single))
        b = outgoing[a][0]
        wrong = [n for i, n in enumerate(names) if i not in (a, b)]
        return QA(
            "diagram",
            f"What does the arrow from the {names[a]} point to?",
            f"Arrow from {names[a]} points to?",
            names[b],
            wrong,
            f"Does the arrow from the {names[a]} point to the {names[b]}?",
            f"Does the arrow from the {names[a]} point to the {pick(rng, wrong)}?",
            "diagram",
            [a, b],
        )
    if mode == 1:
        i = int(rng.integers(len(names)))
        label = scene.objects[i].label
        wrong = others(names, names[i])
        return QA(
            "diagram",
            f"Which shape is labelled {label}?",
            f"Shape labelled {label}?",
            names[i],
            wrong,
            f"Is the {names[i]} labelled {label}?",
            f"Is the {pick(rng, wrong)} labelled {label}?",
            "diagram",
            [i],
        )
    i = int(rng.integers(len(names)))
    answer = sum(1 for _, b in scene.arrows if b == i)
    wrong = number_candidates(answer, rng)
    return QA(
        "diagram",
        f"How many arrows point to the {names[i]}?",
        f"Arrows into {names[i]}?",
        str(answer),
        wrong,
        f"Do {answer} arrows point to the {names[i]}?",
        f"Do {pick(rng, wrong)} arrows point to the {names[i]}?",
        "diagram",
        [i],
    )


def _rule_references(scene: Scene, rule: str) -> list[tuple[int, str]]:
    """(object index, words naming it) for the objects a rule question may ask about.

    The words never state the attribute the rule is about, so the answer needs the image: a colour
    rule names the object by its shape, a shape rule by its colour, each only where that shape or
    colour occurs once in the scene (the reference stays unambiguous); a size rule by colour+shape.
    """
    if rule == "color":
        return [(i, scene.objects[i].shape) for i in unique(scene, "shape")]
    if rule == "shape":
        return [(i, f"{scene.objects[i].color} object") for i in unique(scene, "color")]
    return [(i, o.name) for i, o in enumerate(scene.objects)]


def rule_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """A stated rule plus the image decide the answer: "Red and blue objects are hot ... Is the circle hot?".

    The question names the object without the attribute the rule uses (see :func:`_rule_references`);
    None when no object of the scene can be named that way.
    """
    if scene.kind not in ("objects", "clutter") or not scene.objects:
        return None
    positive, negative = PROPERTIES[int(rng.integers(len(PROPERTIES)))]
    mode = int(rng.integers(3))
    if mode == 0:
        chosen = sorted(rng.choice(len(COLORS), size=2, replace=False))
        colors = [list(COLORS)[int(c)] for c in chosen]
        hint = f"In this world, {colors[0]} and {colors[1]} objects are {positive}; all other objects are {negative}."
        holds = [o.color in colors for o in scene.objects]
    elif mode == 1:
        chosen = sorted(rng.choice(len(SHAPES), size=2, replace=False))
        shapes = [SHAPES[int(s)] for s in chosen]
        hint = f"In this world, {plural(shapes[0])} and {plural(shapes[1])} are {positive}; all other shapes are {negative}."
        holds = [o.shape in shapes for o in scene.objects]
    else:
        hint = f"In this world, large objects are {positive}; small and medium objects are {negative}."
        holds = [o.size == "large" for o in scene.objects]
    references = _rule_references(scene, ("color", "shape", "size")[mode])
    if not references:
        return None
    i, ref = references[int(rng.integers(len(references)))]
    answer, wrong = (positive, negative) if holds[i] else (negative, positive)
    return QA(
        "rule",
        f"Is the {ref} {positive} or {negative}?",
        f"{ref}: {positive} or {negative}?",
        answer,
        [wrong],
        f"Is the {ref} {answer}?",
        f"Is the {ref} {wrong}?",
        "rule",
        [i],
        hint=hint,
    )
