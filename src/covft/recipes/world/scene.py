"""Scenes of the conflict world: what is in an image, independent of how it is drawn.

Geometry is in normalised image coordinates (0..1, origin top-left), rounded to 4 decimals so a
scene written to JSON and read back renders to the same pixels. Every object has a colour+shape
pair unique in its scene, so "the red circle" always names exactly one object.

Scene kinds:
  * ``objects``: 2-5 shapes on a grey background, occasionally one partly occluding another;
  * ``text``: a sign with 1-4 rendered characters, plus 0-2 shapes;
  * ``diagram``: 3-4 labelled shapes joined by arrows on a white page;
  * ``depth``: 2-3 shapes on a ground plane, nearer ones larger, lower and in front;
  * ``clutter``: 6-8 shapes, overlaps allowed.

Drawing a scene of each kind at random is :mod:`covft.recipes.world.sampling`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from covft.recipes.world.vocab import (
    name,
)

SCENE_KINDS: tuple[str, ...] = ("objects", "text", "diagram", "depth", "clutter")


def round4(value: float) -> float:
    """``value`` rounded to the scene's 4 decimals (so a scene survives a JSON round trip)."""
    return round(float(value), 4)


@dataclass
class WorldObject:
    """One shape: identity (shape, color), appearance (size, texture) and placement."""

    shape: str
    color: str
    size: str
    texture: str
    x: float
    y: float
    radius: float
    depth: float = 1.0
    label: str | None = None

    @property
    def name(self) -> str:
        """The referring name, e.g. ``"red circle"``."""
        return name(self.color, self.shape)

    def description(self) -> str:
        """A short position-free description, e.g. ``"a large striped red circle"``."""
        texture = "" if self.texture == "solid" else self.texture + " "
        article = "an" if self.size[0] in "aeiou" else "a"
        return f"{article} {self.size} {texture}{self.color} {self.shape}"


@dataclass
class Sign:
    """A rectangular board with a short string written on it."""

    text: str
    box: tuple[float, float, float, float]
    font_size: float
    text_color: str
    board_color: str


@dataclass
class Scene:
    """Everything one image shows."""

    kind: str
    background: tuple[int, int, int]
    objects: list[WorldObject] = field(default_factory=list)
    sign: Sign | None = None
    arrows: list[tuple[int, int]] = field(default_factory=list)
    horizon: float | None = None
    ground: tuple[int, int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_dict`."""
        sign = data.get("sign")
        return cls(
            kind=data["kind"],
            background=tuple(data["background"]),
            objects=[WorldObject(**obj) for obj in data["objects"]],
            sign=None if sign is None else Sign(**{**sign, "box": tuple(sign["box"])}),
            arrows=[tuple(arrow) for arrow in data["arrows"]],
            horizon=data["horizon"],
            ground=None if data["ground"] is None else tuple(data["ground"]),
        )

    def find(self, object_name: str) -> WorldObject:
        """The object called ``object_name`` (e.g. "red circle")."""
        for obj in self.objects:
            if obj.name == object_name:
                return obj
        raise KeyError(f"no {object_name!r} in this scene")


class SceneRejected(Exception):
    """A sampled layout could not be completed; the caller samples again."""


def training_annotations(world: str | Path, needed_for: str) -> list[dict[str, Any]]:
    """The record (``id``, ``image``, ``scene``, ...) of every training image of a world, from
    ``<world>/annotations/train.jsonl``; a missing file raises naming ``needed_for``."""
    path = Path(world) / "annotations" / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {needed_for}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
