"""Stage 0's region targets: which patch shows which object, and the object's phrase.

Every object of a pretraining image is named by the phrase its caption uses for it
(:meth:`covft.recipes.world.scene.WorldObject.description`, e.g. ``"a large striped red circle"``),
a sign by its caption (``'a sign that says "TAXI"'``), and placed on the patch under its centre
(the sign: under its board's centre). The scenes come from the world's
``annotations/train.jsonl``, the source of truth the captions were written from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from covft.recipes.demo.contrastive import (
    ContrastiveTower,
    attribute_accuracy,
    region_accuracy,
    region_features,
)
from covft.recipes.world.scene import Scene, WorldObject, training_annotations
from covft.recipes.world.vocab import COLORS, SHAPES, SIZES, TEXTURES

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": tuple(SIZES),
    "texture": TEXTURES,
}
"""The words of an object's phrase, one classification each (``attribute_weight``)."""
IGNORE = -100
"""The attribute label of a region that has none (a sign), ignored by the loss."""


def scene_regions(scene: Scene, grid: int) -> list[tuple[int, str]]:
    """(patch index, phrase) of every object and of the sign, on a ``grid`` x ``grid`` patch grid."""

    def patch(x: float, y: float) -> int:
        return min(int(y * grid), grid - 1) * grid + min(int(x * grid), grid - 1)

    regions = [(patch(obj.x, obj.y), obj.description()) for obj in scene.objects]
    if scene.sign is not None:
        x1, y1, x2, y2 = scene.sign.box
        regions.append((patch((x1 + x2) / 2, (y1 + y2) / 2), f'a sign that says "{scene.sign.text}"'))
    return regions


def _labels(obj: WorldObject | None) -> list[int]:
    if obj is None:
        return [IGNORE] * len(ATTRIBUTES)
    return [words.index(getattr(obj, name)) for name, words in ATTRIBUTES.items()]


def world_regions(world: Path, ids: list[str], grid: int) -> tuple[list[str], torch.Tensor]:
    """The distinct phrases, and one ``(image, patch, phrase, *attributes)`` row per region of the
    images ``ids`` (image = the position in ``ids``; one label per :data:`ATTRIBUTES`, ``IGNORE``
    for a sign), from ``<world>/annotations/train.jsonl``."""
    annotations = training_annotations(world, "stage 0's region targets need the world's scene annotations")
    scenes = {record["id"]: record["scene"] for record in annotations}
    missing = [i for i in ids if i not in scenes]
    if missing:
        path = world / "annotations" / "train.jsonl"
        raise KeyError(f"{path} has no scene for {len(missing)} captioned images (first: {missing[0]})")
    rows = []
    for image, sample_id in enumerate(ids):
        scene = Scene.from_dict(scenes[sample_id])
        objects = [*scene.objects, None]  # scene_regions lists the objects, then the sign if any
        for (patch, phrase), obj in zip(scene_regions(scene, grid), objects, strict=False):
            rows.append((image, patch, phrase, _labels(obj)))
    phrases = sorted({row[2] for row in rows})
    index = {phrase: i for i, phrase in enumerate(phrases)}
    table = torch.tensor([(image, patch, index[phrase], *labels) for image, patch, phrase, labels in rows])
    return phrases, table.reshape(-1, 3 + len(ATTRIBUTES)).long()


def batch_regions(table: torch.Tensor, rows: torch.Tensor, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The regions of the images ``rows`` (indices into ``images`` images): ``(n, 2)`` rows of
    (position in ``rows``, patch) and their targets, ``(n, k)`` rows of (phrase id, *attributes)."""
    position = torch.full((images,), -1, dtype=torch.long)
    position[rows] = torch.arange(len(rows))
    where = position[table[:, 0]]
    keep = where >= 0
    return torch.stack([where[keep], table[keep, 1]], dim=1), table[keep, 2:]


@dataclass
class RegionTargets:
    """Stage 0's regions split like its pairs (the first ``held`` images are held out): rows of
    (image, patch, phrase id) and the phrases' frozen embeddings."""

    phrases: list[str]
    embeddings: torch.Tensor
    train: torch.Tensor
    """Training regions, image indices counted from the first training image."""
    held: torch.Tensor

    @classmethod
    def of_world(
        cls, world: Path, ids: list[str], grid: int, held: int, embed: Callable[[list[str]], torch.Tensor]
    ) -> RegionTargets:
        """The regions of the captioned images ``ids``; ``embed`` gives the phrases' embeddings."""
        phrases, table = world_regions(world, ids, grid)
        train = table[table[:, 0] >= held].clone()
        train[:, 0] -= held
        return cls(phrases, embed(phrases), train, table[table[:, 0] < held])

    def counts(self) -> dict[str, int]:
        """How many regions (training and held-out) and distinct phrases there are."""
        return {"regions": len(self.train) + len(self.held), "distinct_phrases": len(self.phrases)}

    def accuracy(self, model: ContrastiveTower, held_pixels: torch.Tensor) -> dict[str, float]:
        """Held-out accuracy (%): region-to-phrase top-1 (``phrase``, with a region head) and each
        attribute's classification (with an attribute head)."""
        out = {}
        features = region_features(model, held_pixels, self.held[:, :2])
        if model.region_head is not None:
            out["phrase"] = region_accuracy(model, features, self.held[:, 2], self.embeddings)
        if model.attribute_head is not None:
            out.update(zip(ATTRIBUTES, attribute_accuracy(model, features, self.held[:, 3:]), strict=True))
        return out
