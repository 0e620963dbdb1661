"""The format-free question: :class:`QA`, and the small draws every question maker shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from covft.recipes.world.render import Rendering
from covft.recipes.world.scene import Scene


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


def pick(rng: np.random.Generator, items: list) -> object:
    """One of ``items``, drawn with ``rng``."""
    return items[int(rng.integers(len(items)))]


def unique(scene: Scene, attribute: str) -> list[int]:
    """Indices of the objects whose ``attribute`` no other object of the scene shares."""
    values = [getattr(o, attribute) for o in scene.objects]
    return [i for i, v in enumerate(values) if values.count(v) == 1]


def others(values: list[str] | tuple[str, ...], answer: str) -> list[str]:
    """The wrong candidates: every value but ``answer``."""
    return [v for v in values if v != answer]


def number_candidates(answer: int, rng: np.random.Generator) -> list[str]:
    """Wrong counts near ``answer`` (never negative)."""
    near = [answer + d for d in (-2, -1, 1, 2, 3) if answer + d >= 0]
    return [str(n) for n in near]
