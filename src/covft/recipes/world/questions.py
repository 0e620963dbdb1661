"""Questions about a scene, with their answers, wrong candidates and yes/no forms.

A :class:`~covft.recipes.world.qa.QA` is format-free: the task families (``tasks.py``) and the held-out suite
(``suite.py``) wrap the same QA as a short-answer, multiple-choice or yes/no prompt. Every QA has
two phrasings: ``question`` (the standard one) and ``terse`` (a templated alternative used,
rarely, in training and for the ``mmbench_cn`` analogue).

The kinds need different visual features on purpose: ``relation``/``count`` need where things
are, ``color``/``shape``/``size``/``texture`` need what they are wherever they are, ``reading``
needs fine strokes, ``depth`` needs occlusion and scale cues. This module holds the object
questions and :func:`ask`; the special scene kinds' questions are
:mod:`covft.recipes.world.scene_questions`.
"""

from __future__ import annotations

import numpy as np

from covft.recipes.world.qa import QA, QuestionMaker, number_candidates, others, pick, unique
from covft.recipes.world.render import Rendering
from covft.recipes.world.scene import Scene, WorldObject
from covft.recipes.world.scene_questions import (
    depth_question,
    diagram_question,
    reading_question,
    rule_question,
)
from covft.recipes.world.vocab import (
    COLORS,
    SHAPES,
    SIZES,
    TEXTURES,
    plural,
)


def _attribute(
    kind: str,
    index: int,
    answer: str,
    values: list[str] | tuple[str, ...],
    question: str,
    terse: str,
    claim: str,
    rng: np.random.Generator,
) -> QA:
    """An attribute QA; ``claim`` is the yes/no form with ``{}`` where the value goes."""
    wrong = others(values, answer)
    return QA(
        kind,
        question,
        terse,
        answer,
        wrong,
        claim.format(answer),
        claim.format(pick(rng, wrong)),
        kind,
        [index],
    )


def color_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "What color is the circle?" about a shape that occurs once."""
    options = unique(scene, "shape")
    if not options:
        return None
    i = int(pick(rng, options))
    shape = scene.objects[i].shape
    return _attribute(
        "color",
        i,
        scene.objects[i].color,
        list(COLORS),
        f"What color is the {shape}?",
        f"Color of the {shape}?",
        f"Is the {shape} {{}}?",
        rng,
    )


def shape_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "What shape is the red object?" about a colour that occurs once."""
    options = unique(scene, "color")
    if not options:
        return None
    i = int(pick(rng, options))
    color = scene.objects[i].color
    return _attribute(
        "shape",
        i,
        scene.objects[i].shape,
        SHAPES,
        f"What shape is the {color} object?",
        f"Shape of the {color} object?",
        f"Is the {color} object a {{}}?",
        rng,
    )


def _appearance_question(
    kind: str,
    values: list[str] | tuple[str, ...],
    question: str,
    terse: str,
    scene: Scene,
    rng: np.random.Generator,
) -> QA | None:
    # sizes and textures are only drawn faithfully outside depth scenes (size follows distance) and diagrams
    if scene.kind not in ("objects", "clutter", "text") or not scene.objects:
        return None
    i = int(rng.integers(len(scene.objects)))
    obj = scene.objects[i]
    return _attribute(
        kind,
        i,
        getattr(obj, kind),
        values,
        question.format(obj.name),
        terse.format(obj.name),
        f"Is the {obj.name} {{}}?",
        rng,
    )


def size_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "What size is the red circle?" (small / medium / large)."""
    return _appearance_question("size", list(SIZES), "What size is the {}?", "Size of the {}?", scene, rng)


def texture_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "What pattern does the red circle have?" (solid / striped / dotted)."""
    return _appearance_question(
        "texture", TEXTURES, "What pattern does the {} have?", "Pattern of the {}?", scene, rng
    )


def count_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "How many circles / red objects / objects are there?" (counts only drawn objects)."""
    if scene.kind not in ("objects", "clutter") or not scene.objects:
        return None
    mode = int(rng.integers(3))
    if mode == 0:
        shape = str(pick(rng, list(SHAPES)))
        targets = [i for i, o in enumerate(scene.objects) if o.shape == shape]
        noun = plural(shape)
    elif mode == 1:
        color = str(pick(rng, list(COLORS)))
        targets = [i for i, o in enumerate(scene.objects) if o.color == color]
        noun = f"{color} objects"
    else:
        targets = list(range(len(scene.objects)))
        noun = "objects"
    answer = len(targets)
    wrong = number_candidates(answer, rng)
    return QA(
        "count",
        f"How many {noun} are there?",
        f"Number of {noun}?",
        str(answer),
        wrong,
        f"Is the number of {noun} {answer}?",
        f"Is the number of {noun} {pick(rng, wrong)}?",
        "count",
        targets,
    )


def clear_pairs(scene: Scene, axis: str, margin: float = 0.12) -> list[tuple[int, int]]:
    """Ordered pairs of objects whose centres differ clearly (and mostly) along ``axis``."""
    pairs = []
    for a, oa in enumerate(scene.objects):
        for b, ob in enumerate(scene.objects):
            if a == b:
                continue
            dx, dy = oa.x - ob.x, oa.y - ob.y
            main, other = (dx, dy) if axis == "x" else (dy, dx)
            if abs(main) > max(margin, oa.radius + ob.radius * 0.5) and abs(main) > abs(other):
                pairs.append((a, b))
    return pairs


def relation_word(a: WorldObject, b: WorldObject, axis: str) -> str:
    """Where ``a`` is relative to ``b`` along ``axis``: left/right or above/below."""
    if axis == "x":
        return "left" if a.x < b.x else "right"
    return "above" if a.y < b.y else "below"


def relation_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "Is the red circle to the left or to the right of the blue square?" (or above/below)."""
    if scene.kind not in ("objects", "clutter", "text"):
        return None
    for axis in ("x", "y") if rng.random() < 0.6 else ("y", "x"):
        pairs = clear_pairs(scene, axis)
        if pairs:
            break
    else:
        return None
    a, b = pick(rng, pairs)
    oa, ob = scene.objects[a], scene.objects[b]
    answer = relation_word(oa, ob, axis)
    if axis == "x":
        wrong = "right" if answer == "left" else "left"
        question = f"Is the {oa.name} to the left or to the right of the {ob.name}?"
        terse = f"{oa.name} relative to {ob.name}: left or right?"
        yes, no = (f"Is the {oa.name} to the {w} of the {ob.name}?" for w in (answer, wrong))
    else:
        wrong = "below" if answer == "above" else "above"
        question = f"Is the {oa.name} above or below the {ob.name}?"
        terse = f"{oa.name} relative to {ob.name}: above or below?"
        yes, no = (f"Is the {oa.name} {w} the {ob.name}?" for w in (answer, wrong))
    return QA("relation", question, terse, answer, [wrong], yes, no, "position", [a, b])


def existence_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "Is there a red circle in the image?"; the absent object shares a colour or shape with a present one."""
    if not scene.objects:
        return None
    present = {o.name for o in scene.objects}
    i = int(rng.integers(len(scene.objects)))
    obj = scene.objects[i]
    near = [f"{c} {obj.shape}" for c in COLORS] + [f"{obj.color} {s}" for s in SHAPES]
    absent = [n for n in near if n not in present]
    missing = str(pick(rng, absent))
    exists = rng.random() < 0.5
    asked = obj.name if exists else missing
    answer = "yes" if exists else "no"
    return QA(
        "existence",
        f"Is there a {asked} in the image?",
        f"Any {asked}?",
        answer,
        ["no" if exists else "yes"],
        f"Is there a {obj.name} in the image?",
        f"Is there a {missing} in the image?",
        "existence",
        [i] if exists else [],
    )


MAKERS: dict[str, QuestionMaker] = {
    "color": color_question,
    "shape": shape_question,
    "size": size_question,
    "texture": texture_question,
    "count": count_question,
    "relation": relation_question,
    "existence": existence_question,
    "reading": reading_question,
    "depth": depth_question,
    "diagram": diagram_question,
    "rule": rule_question,
}
"""Every question kind by name."""

ATTRIBUTE_KINDS: tuple[str, ...] = ("color", "shape", "size", "texture")


def ask(
    kinds: tuple[str, ...] | list[str], scene: Scene, rendering: Rendering, rng: np.random.Generator
) -> QA | None:
    """A question of one of ``kinds`` (tried in random order), or None if none fits the scene."""
    for j in rng.permutation(len(kinds)):
        qa = MAKERS[kinds[int(j)]](scene, rendering, rng)
        if qa is not None:
            return qa
    return None
