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


def test_grounded_captions_read_one_place_both_ways() -> None:
    import random

    from covft.recipes.world.describe import WHAT_IS_AT, WHERE_IS, grounded_caption_record, object_words

    for seed in range(8):
        scene, _ = draw_scene(np.random.default_rng([seed, 4]), "clutter", 64)
        record = grounded_caption_record("s", "i.png", scene, random.Random(seed), turns=3)
        turns = record["conversations"]
        assert len(turns) == 2 * min(3, len(scene.objects)) and turns[0]["value"].startswith("<image>\n")
        assert not any("<image>" in t["value"] for t in turns[1:])
        words = [object_words(o) for o in scene.objects]
        at = {position(o.x, o.y): object_words(o) for o in scene.objects}
        asked = []
        for human, gpt in zip(turns[::2], turns[1::2], strict=True):
            question = human["value"].removeprefix("<image>\n")
            if question.startswith("Where"):
                phrase = question.removeprefix("Where is the ").removesuffix("?")
                assert words.count(phrase) == 1  # only an object no other shares the words of
                assert at[gpt["value"].removeprefix("at ")] == phrase and question == WHERE_IS.format(phrase)
                asked.append(phrase)
            else:
                here = question.removeprefix("What is at ").removesuffix("?")
                assert question == WHAT_IS_AT.format(here) and gpt["value"] == at[here]
                asked.append(at[here])
        assert len(asked) == len(set(asked)) or len(set(words)) < len(words)  # distinct objects
        again = grounded_caption_record("s", "i.png", scene, random.Random(seed), turns=3)
        assert again == record
    empty, _ = draw_scene(np.random.default_rng(1), "text", 64)
    assert (
        grounded_caption_record(
            "s", "i.png", Scene.from_dict({**empty.to_dict(), "objects": []}), random.Random(0), 2
        )
        is None
    )


def test_grounded_captions_file_is_written_once_per_setting(tmp_path: Path) -> None:
    from covft.recipes.world.describe import write_grounded_captions

    make_world(tmp_path, size=30, seed=3, suite_size=1, image_size=32, progress=False)
    path = write_grounded_captions(tmp_path, turns=2, seed=0)
    records = json.loads(path.read_text())
    images = {
        json.loads(line)["image"] for line in (tmp_path / "annotations/train.jsonl").read_text().splitlines()
    }
    assert records and {r["image"] for r in records} <= images
    assert all(len(r["conversations"]) <= 4 for r in records)
    stamp = path.stat().st_mtime_ns
    assert write_grounded_captions(tmp_path, turns=2, seed=0).stat().st_mtime_ns == stamp
    assert json.loads(write_grounded_captions(tmp_path, turns=1, seed=0).read_text()) != records
    with pytest.raises(FileNotFoundError, match="grounded captions need the scenes"):
        write_grounded_captions(tmp_path / "elsewhere", turns=1)
