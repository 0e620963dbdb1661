"""The instruction-tuning task families: one scene becomes one LLaVA conversation.

Families mirror LLaVA-665K in miniature: captions, grounding (text -> box), region descriptions
(box -> text), attribute / count / relation / depth / reading / diagram questions, science-style
rule questions, multiple choice, yes/no, multi-turn conversations and text-only samples. The
visual preference conflict is built in: grounding, count and relation need precise positions;
captions, region descriptions and attributes need position-free identity and colour; reading
needs fine strokes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from covft.recipes.world import formats
from covft.recipes.world.qa import QA
from covft.recipes.world.questions import ATTRIBUTE_KINDS, ask
from covft.recipes.world.render import Rendering, draw_scene
from covft.recipes.world.scene import Scene
from covft.recipes.world.vocab import SHAPE_SIDES, WORDS

FAMILY_WEIGHTS: dict[str, float] = {
    "caption": 0.12,
    "grounding": 0.10,
    "region": 0.07,
    "attribute": 0.10,
    "count": 0.09,
    "relation": 0.09,
    "depth": 0.05,
    "reading": 0.09,
    "diagram": 0.05,
    "rule": 0.04,
    "multiple_choice": 0.07,
    "yes_no": 0.06,
    "multi_turn": 0.05,
    "text_only": 0.02,
}
"""Default share of each family in the training mix."""

FAMILIES: tuple[str, ...] = tuple(FAMILY_WEIGHTS)

KIND_SCENES: dict[str, tuple[str, ...]] = {
    "color": ("objects", "objects", "clutter", "text"),
    "shape": ("objects", "objects", "clutter", "text"),
    "size": ("objects", "objects", "clutter"),
    "texture": ("objects", "objects", "clutter"),
    "count": ("objects", "objects", "clutter"),
    "relation": ("objects", "objects", "objects", "clutter"),
    "existence": ("objects", "clutter", "text"),
    "reading": ("text",),
    "depth": ("depth",),
    "diagram": ("diagram",),
    "rule": ("objects", "objects", "clutter"),
}
"""Which scene kinds each question kind is asked about (repeats weight the draw)."""

CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image briefly.",
    "What is in the image?",
    "Give a short caption for the image.",
)
GROUNDING_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}."
REGION_PROMPT = "Please provide a short description for this region: {}"


@dataclass
class Sample:
    """One training conversation before it is written: turns plus where each answer comes from."""

    family: str
    turns: list[tuple[str, str]]
    scene: Scene | None = None
    rendering: Rendering | None = None
    kinds: list[str] = field(default_factory=list)
    targets: list[list[int]] = field(default_factory=list)

    def conversations(self) -> list[dict[str, str]]:
        """LLaVA's ``conversations`` list; the first human turn carries ``<image>`` when there is one."""
        messages = []
        for k, (human, gpt) in enumerate(self.turns):
            if k == 0 and self.scene is not None:
                human = "<image>\n" + human
            messages += [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
        return messages

    def record(self, sample_id: str, image: str | None) -> dict[str, Any]:
        """The LLaVA JSON record (no ``image`` key for text-only samples)."""
        out: dict[str, Any] = {"id": sample_id}
        if image is not None:
            out["image"] = image
        out["conversations"] = self.conversations()
        return out


def join_phrases(phrases: list[str]) -> str:
    """Joins phrases as "a", "a and b", "a, b and c"."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene) -> str:
    """A position-free caption: what is there (size, texture, colour, shape), in a canonical order."""
    objects = sorted(scene.objects, key=lambda o: (o.shape, o.color))
    if scene.kind == "diagram":
        return f"A diagram of {join_phrases(['a ' + o.name for o in objects])} joined by arrows."
    if scene.kind == "depth":
        return f"{join_phrases(['a ' + o.name for o in objects]).capitalize()} standing on the ground."
    phrases = [o.description() for o in objects]
    if scene.sign is not None:
        sign = f'A sign that says "{scene.sign.text}"'
        return sign + (f" next to {join_phrases(phrases)}." if phrases else ".")
    text = join_phrases(phrases)
    return text[0].upper() + text[1:] + "."


def phrasing(qa: QA, rng: np.random.Generator, alt_rate: float) -> str:
    """The standard question, or with probability ``alt_rate`` its terse alternative."""
    return qa.terse if rng.random() < alt_rate else qa.question


def _scene_for(
    kind: str, rng: np.random.Generator, image_size: int, options: dict[str, Any]
) -> tuple[Scene, Rendering]:
    scenes = KIND_SCENES[kind]
    return draw_scene(rng, scenes[int(rng.integers(len(scenes)))], image_size, **options)


def question_on_new_scene(
    kinds: tuple[str, ...], rng: np.random.Generator, image_size: int, options: dict[str, Any]
) -> tuple[QA, Scene, Rendering]:
    """Draw a scene suited to one of ``kinds`` and ask that kind of question about it."""
    for _ in range(100):
        kind = kinds[int(rng.integers(len(kinds)))]
        scene, rendering = _scene_for(kind, rng, image_size, options)
        qa = ask((kind,), scene, rendering, rng)
        if qa is not None:
            return qa, scene, rendering
    raise RuntimeError(f"no scene fits question kinds {kinds}")


def _grounding_target(
    scene: Scene, rendering: Rendering, rng: np.random.Generator, prefer_clear: bool
) -> tuple[int, str, str]:
    """(object index or -1 for the sign, referring expression, box text)."""
    if scene.sign is not None and (not scene.objects or rng.random() < 0.3):
        x1, y1, x2, y2 = scene.sign.box
        box = (
            np.floor(x1 * 100) / 100,
            np.floor(y1 * 100) / 100,
            np.ceil(x2 * 100) / 100,
            np.ceil(y2 * 100) / 100,
        )
        return -1, "the sign", formats.box_text(box)
    candidates = list(range(len(scene.objects)))
    if prefer_clear:
        clear = [i for i in candidates if rendering.visible[i].sum() == rendering.masks[i].sum()]
        candidates = clear or candidates
    i = candidates[int(rng.integers(len(candidates)))]
    return i, f"the {scene.objects[i].name}", formats.box_text(rendering.normalized_box(i))


def conflict_pair(scene: Scene, rendering: Rendering, rng: np.random.Generator) -> tuple[Sample, Sample]:
    """A grounding sample and a caption sample of the same image: the paper's Fig. 1b/c setup, where
    two models differing only in their text queries are fine-tuned on identical images."""
    i, expression, box = _grounding_target(scene, rendering, rng, prefer_clear=False)
    grounding = Sample(
        "grounding",
        [(GROUNDING_PROMPT.format(expression), box)],
        scene,
        rendering,
        ["grounding"],
        [[i] if i >= 0 else []],
    )
    prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
    captioning = Sample(
        "caption",
        [(prompt, caption(scene))],
        scene,
        rendering,
        ["caption"],
        [list(range(len(scene.objects)))],
    )
    return grounding, captioning


def _short(qa: QA, rng: np.random.Generator, alt_rate: float) -> tuple[str, str]:
    return formats.short_answer_prompt(phrasing(qa, rng, alt_rate)), qa.answer


def text_only_turn(rng: np.random.Generator) -> tuple[str, str]:
    """A question about the world's vocabulary that needs no image."""
    mode = int(rng.integers(4))
    word = WORDS[int(rng.integers(len(WORDS)))]
    if mode == 0:
        shape = list(SHAPE_SIDES)[int(rng.integers(3))]
        return f"How many sides does a {shape} have?", str(SHAPE_SIDES[shape])
    if mode == 1:
        return f"How many letters are in the word {word}?", str(len(word))
    if mode == 2:
        a, b = (int(v) for v in rng.integers(0, 5, size=2))
        return f"What is {a} plus {b}?", str(a + b)
    return f"Spell {word} backwards.", word[::-1]


SHORT_FAMILY_KINDS: dict[str, tuple[str, ...]] = {
    "attribute": ATTRIBUTE_KINDS,
    "count": ("count",),
    "relation": ("relation",),
    "depth": ("depth",),
    "reading": ("reading",),
    "diagram": ("diagram",),
}
CHOICE_KINDS: tuple[str, ...] = (
    "color",
    "shape",
    "size",
    "texture",
    "count",
    "relation",
    "depth",
    "reading",
    "diagram",
)
YES_NO_KINDS: tuple[str, ...] = ("existence", "color", "shape", "count", "relation", "reading", "depth")
MULTI_TURN_KINDS: tuple[str, ...] = ("color", "shape", "size", "texture", "count", "relation", "existence")


def make_sample(
    family: str, rng: np.random.Generator, image_size: int = 64, alt_rate: float = 0.1, **scene_options: Any
) -> Sample:
    """One training sample of ``family`` (see :data:`FAMILIES`), drawn from ``rng``."""
    options = dict(scene_options)
    if family == "text_only":
        return Sample(family, [text_only_turn(rng)], kinds=["text"], targets=[[]])
    if family in ("caption", "grounding", "region"):
        weights = {
            "caption": ("objects",) * 6 + ("text", "text", "clutter", "depth", "diagram"),
            "grounding": ("objects",) * 7 + ("clutter", "clutter", "text"),
            "region": ("objects",) * 7 + ("clutter", "clutter", "text"),
        }[family]
        scene, rendering = draw_scene(rng, weights[int(rng.integers(len(weights)))], image_size, **options)
        if family == "caption":
            prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
            return Sample(
                family,
                [(prompt, caption(scene))],
                scene,
                rendering,
                ["caption"],
                [list(range(len(scene.objects)))],
            )
        i, expression, box = _grounding_target(scene, rendering, rng, prefer_clear=family == "region")
        if family == "grounding":
            turn = (GROUNDING_PROMPT.format(expression), box)
        else:
            description = f'a sign that says "{scene.sign.text}"' if i < 0 else scene.objects[i].description()
            turn = (REGION_PROMPT.format(box), description)
        return Sample(family, [turn], scene, rendering, [family], [[i] if i >= 0 else []])
    if family in SHORT_FAMILY_KINDS:
        qa, scene, rendering = question_on_new_scene(SHORT_FAMILY_KINDS[family], rng, image_size, options)
        return Sample(family, [_short(qa, rng, alt_rate)], scene, rendering, [qa.kind], [qa.targets])
    if family in ("rule", "multiple_choice"):
        kinds = ("rule",) if family == "rule" else CHOICE_KINDS
        qa, scene, rendering = question_on_new_scene(kinds, rng, image_size, options)
        choices, answer = formats.choose_options(qa.answer, qa.candidates, rng)
        hint = None if qa.hint is None else f"Context: {qa.hint}"
        prompt = formats.multiple_choice_prompt(phrasing(qa, rng, alt_rate), choices, hint)
        return Sample(family, [(prompt, formats.LETTERS[answer])], scene, rendering, [qa.kind], [qa.targets])
    if family == "yes_no":
        qa, scene, rendering = question_on_new_scene(YES_NO_KINDS, rng, image_size, options)
        yes = rng.random() < 0.5
        prompt = formats.yes_no_prompt(qa.yes_question if yes else qa.no_question)
        return Sample(family, [(prompt, "Yes" if yes else "No")], scene, rendering, [qa.kind], [qa.targets])
    if family == "multi_turn":
        qa, scene, rendering = question_on_new_scene(MULTI_TURN_KINDS, rng, image_size, options)
        turns, kinds, targets, seen = [_short(qa, rng, alt_rate)], [qa.kind], [qa.targets], {qa.question}
        wanted = int(rng.integers(2, 4))
        for _ in range(20):
            if len(turns) == wanted:
                break
            more = ask(MULTI_TURN_KINDS, scene, rendering, rng)
            if more is not None and more.question not in seen:
                seen.add(more.question)
                turns.append(_short(more, rng, alt_rate))
                kinds.append(more.kind)
                targets.append(more.targets)
        return Sample(family, turns, scene, rendering, kinds, targets)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
