"""Scene descriptions name every object with its box, in a fixed order, and dense captions use them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from covft.data.world import formats, make_world
from covft.data.world.describe import DENSE_PROMPT, describe
from covft.data.world.render import draw_scene, render
from covft.data.world.scene import Scene

BOX = re.compile(r"\[(\d\.\d\d), (\d\.\d\d), (\d\.\d\d), (\d\.\d\d)\]")


@pytest.mark.parametrize("kind", ["objects", "clutter", "text", "diagram", "depth"])
def test_every_object_is_described_with_its_box(kind: str) -> None:
    for seed in range(5):
        scene, rendering = draw_scene(np.random.default_rng([seed, 9]), kind, 64)
        text = describe(scene, rendering)
        for i, obj in enumerate(scene.objects):
            phrase = f"{obj.description()}{'' if obj.label is None else f' labelled {obj.label}'}"
            assert f"{phrase} at {formats.box_text(rendering.normalized_box(i))}" in text, (kind, text)
        assert text.count(" at [") == len(scene.objects) + (scene.sign is not None)
        if scene.sign is not None:
            assert f'A sign that says "{scene.sign.text}"' in text
        if kind == "diagram":
            for a, b in scene.arrows:
                assert f"{scene.objects[a].name} to {scene.objects[b].name}" in text


def test_order_is_left_to_right_and_depth_scenes_nearest_first() -> None:
    scene, rendering = draw_scene(np.random.default_rng(4), "objects", 64)
    boxes = [tuple(map(float, m)) for m in BOX.findall(describe(scene, rendering))]
    centres = [(x1 + x2) / 2 for x1, _, x2, _ in boxes]
    assert len(centres) == len(scene.objects) and centres == sorted(centres)

    scene, rendering = draw_scene(np.random.default_rng(5), "depth", 64)
    text = describe(scene, rendering)
    assert "from nearest to farthest" in text
    nearest_first = sorted(scene.objects, key=lambda o: o.depth)
    positions = [text.index(o.description()) for o in nearest_first]
    assert positions == sorted(positions)


def test_description_depends_on_the_scene_only() -> None:
    scene, rendering = draw_scene(np.random.default_rng(6), "clutter", 64)
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert describe(again, render(again, 64)) == describe(scene, rendering)


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
        scene = Scene.from_dict(annotation["scene"])
        assert gpt["value"] == describe(scene, render(scene, 32))
