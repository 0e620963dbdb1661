"""Scene descriptions name every object with its position, in a fixed order; dense captions use them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from covft.recipes.world import make_world
from covft.recipes.world.describe import DENSE_PROMPT, describe, position
from covft.recipes.world.render import draw_scene
from covft.recipes.world.scene import Scene

AT = re.compile(r" at (\d+),(\d+)")


def _phrase(obj) -> str:
    texture = "" if obj.texture == "solid" else f"{obj.texture} "
    label = "" if obj.label is None else f" labelled {obj.label}"
    return f"{obj.size} {texture}{obj.color} {obj.shape}{label} at {position(obj.x, obj.y)}"


@pytest.mark.parametrize("kind", ["objects", "clutter", "text", "diagram", "depth"])
def test_every_object_is_described_with_its_position(kind: str) -> None:
    for seed in range(5):
        scene, _ = draw_scene(np.random.default_rng([seed, 9]), kind, 64)
        text = describe(scene)
        for obj in scene.objects:
            assert _phrase(obj) in text, (kind, text)
        assert len(AT.findall(text)) == len(scene.objects) + (scene.sign is not None)
        assert text.startswith(f'Sign "{scene.sign.text}" at ' if scene.sign else "")
        if kind == "diagram":
            for a, b in scene.arrows:
                assert f"{scene.objects[a].name} to {scene.objects[b].name}" in text


def test_positions_are_centres_in_percent() -> None:
    assert position(0.1849, 0.4051) == "18,41" and position(0.0, 0.995) == "0,100"


def test_order_is_left_to_right_and_depth_scenes_nearest_first() -> None:
    scene, _ = draw_scene(np.random.default_rng(4), "clutter", 64)
    xs = [int(x) for x, _ in AT.findall(describe(scene))]
    assert len(xs) == len(scene.objects) and xs == sorted(xs)

    scene, _ = draw_scene(np.random.default_rng(5), "depth", 64)
    text = describe(scene)
    assert "nearest first" in text
    positions = [text.index(_phrase(o)) for o in sorted(scene.objects, key=lambda o: o.depth)]
    assert positions == sorted(positions)


def test_description_depends_on_the_scene_only() -> None:
    scene, _ = draw_scene(np.random.default_rng(6), "clutter", 64)
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert describe(again) == describe(scene)


def test_world_writes_one_dense_caption_per_training_image(tmp_path: Path) -> None:
    make_world(tmp_path, size=40, seed=3, suite_size=1, image_size=32, progress=False)
    captions = json.loads((tmp_path / "captions.json").read_text())
    dense = json.loads((tmp_path / "dense_captions.json").read_text())
    assert [d["image"] for d in dense] == [c["image"] for c in captions]
    annotations = [
        json.loads(line) for line in (tmp_path / "annotations/train.jsonl").read_text().splitlines()
    ]
    for record, annotation in zip(dense, annotations, strict=True):
        human, gpt = record["conversations"]
        assert human["value"] == f"<image>\n{DENSE_PROMPT}"
        assert gpt["value"] == describe(Scene.from_dict(annotation["scene"]))
