"""Questions about a scene, with their answers, wrong candidates and yes/no forms.

A :class:`QA` is format-free: the task families (``tasks.py``) and the held-out suite
(``suite.py``) wrap the same QA as a short-answer, multiple-choice or yes/no prompt. Every QA has
two phrasings: ``question`` (the standard one) and ``terse`` (a templated alternative used,
rarely, in training and for the ``mmbench_cn`` analogue).

The kinds need different visual features on purpose: ``relation``/``count`` need where things
are, ``color``/``shape``/``size``/``texture`` need what they are wherever they are, ``reading``
needs fine strokes, ``depth`` needs occlusion and scale cues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from covft.recipes.world.render import Rendering
from covft.recipes.world.scene import Scene, WorldObject
from covft.recipes.world.vocab import (
    COLORS,
    PROPERTIES,
    SHAPES,
    SIZES,
    TEXT_CHARS,
    TEXTURES,
    WORDS,
    looks_like_option_letter,
    plural,
)


@dataclass
class QA:
    """One question about one scene."""

    kind: str
    question: str
    terse: str
    answer: str
    candidates: list[str]
    yes_question: str
    no_question: str
    category: str
    targets: list[int] = field(default_factory=list)
    hint: str | None = None


QuestionMaker = Callable[[Scene, Rendering, np.random.Generator], "QA | None"]


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _unique(scene: Scene, attribute: str) -> list[int]:
    values = [getattr(o, attribute) for o in scene.objects]
    return [i for i, v in enumerate(values) if values.count(v) == 1]


def _others(values: list[str] | tuple[str, ...], answer: str) -> list[str]:
    return [v for v in values if v != answer]


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
    wrong = _others(values, answer)
    return QA(
        kind,
        question,
        terse,
        answer,
        wrong,
        claim.format(answer),
        claim.format(_pick(rng, wrong)),
        kind,
        [index],
    )


def color_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "What color is the circle?" about a shape that occurs once."""
    options = _unique(scene, "shape")
    if not options:
        return None
    i = int(_pick(rng, options))
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
    options = _unique(scene, "color")
    if not options:
        return None
    i = int(_pick(rng, options))
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


def _number_candidates(answer: int, rng: np.random.Generator) -> list[str]:
    near = [answer + d for d in (-2, -1, 1, 2, 3) if answer + d >= 0]
    return [str(n) for n in near]


def count_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """Asks "How many circles / red objects / objects are there?" (counts only drawn objects)."""
    if scene.kind not in ("objects", "clutter") or not scene.objects:
        return None
    mode = int(rng.integers(3))
    if mode == 0:
        shape = str(_pick(rng, list(SHAPES)))
        targets = [i for i, o in enumerate(scene.objects) if o.shape == shape]
        noun = plural(shape)
    elif mode == 1:
        color = str(_pick(rng, list(COLORS)))
        targets = [i for i, o in enumerate(scene.objects) if o.color == color]
        noun = f"{color} objects"
    else:
        targets = list(range(len(scene.objects)))
        noun = "objects"
    answer = len(targets)
    wrong = _number_candidates(answer, rng)
    return QA(
        "count",
        f"How many {noun} are there?",
        f"Number of {noun}?",
        str(answer),
        wrong,
        f"Is the number of {noun} {answer}?",
        f"Is the number of {noun} {_pick(rng, wrong)}?",
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
    a, b = _pick(rng, pairs)
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
    missing = str(_pick(rng, absent))
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


def perturb_text(text: str, rng: np.random.Generator) -> str:
    """A different string that looks alike: one character changed (or a different word)."""
    for _ in range(20):
        if rng.random() < 0.3:
            other = str(_pick(rng, [w for w in WORDS if len(w) == len(text)] or list(WORDS)))
        else:
            pos = int(rng.integers(len(text)))
            other = text[:pos] + str(_pick(rng, list(TEXT_CHARS))) + text[pos + 1 :]
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
        a = int(_pick(rng, single))
        b = outgoing[a][0]
        wrong = [n for i, n in enumerate(names) if i not in (a, b)]
        return QA(
            "diagram",
            f"What does the arrow from the {names[a]} point to?",
            f"Arrow from {names[a]} points to?",
            names[b],
            wrong,
            f"Does the arrow from the {names[a]} point to the {names[b]}?",
            f"Does the arrow from the {names[a]} point to the {_pick(rng, wrong)}?",
            "diagram",
            [a, b],
        )
    if mode == 1:
        i = int(rng.integers(len(names)))
        label = scene.objects[i].label
        wrong = _others(names, names[i])
        return QA(
            "diagram",
            f"Which shape is labelled {label}?",
            f"Shape labelled {label}?",
            names[i],
            wrong,
            f"Is the {names[i]} labelled {label}?",
            f"Is the {_pick(rng, wrong)} labelled {label}?",
            "diagram",
            [i],
        )
    i = int(rng.integers(len(names)))
    answer = sum(1 for _, b in scene.arrows if b == i)
    wrong = _number_candidates(answer, rng)
    return QA(
        "diagram",
        f"How many arrows point to the {names[i]}?",
        f"Arrows into {names[i]}?",
        str(answer),
        wrong,
        f"Do {answer} arrows point to the {names[i]}?",
        f"Do {_pick(rng, wrong)} arrows point to the {names[i]}?",
        "diagram",
        [i],
    )


def rule_question(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> QA | None:
    """A stated rule plus the image decide the answer: "Red and blue objects are hot ... Is the circle hot?"."""
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
    i = int(rng.integers(len(scene.objects)))
    obj = scene.objects[i]
    answer, wrong = (positive, negative) if holds[i] else (negative, positive)
    return QA(
        "rule",
        f"Is the {obj.name} {positive} or {negative}?",
        f"{obj.name}: {positive} or {negative}?",
        answer,
        [wrong],
        f"Is the {obj.name} {answer}?",
        f"Is the {obj.name} {wrong}?",
        "rule",
        [i],
        hint=hint,
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
