"""Every answer the world states is true of the pixels it drew."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covft.recipes.world import make_world
from covft.recipes.world.render import Rendering, render, shade, sign_text_mask, text_mask
from covft.recipes.world.scene import Scene
from covft.recipes.world.scene_questions import perturb_text
from covft.recipes.world.tasks import caption
from covft.recipes.world.vocab import COLORS, SHAPES, plural

SIZE = 64
NAME = re.compile(rf"\b(?:{'|'.join(COLORS)}) (?:{'|'.join(SHAPES)})\b")
BOX = re.compile(r"\[(\d\.\d\d), (\d\.\d\d), (\d\.\d\d), (\d\.\d\d)\]")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    make_world(out, size=300, seed=11, suite_size=6, progress=False)
    return out


@pytest.fixture(scope="module")
def samples(world: Path) -> list[tuple[dict, dict, Scene, Rendering, np.ndarray]]:
    """(record, annotation, scene, re-rendering, saved pixels) of every training image."""
    records = {r["id"]: r for r in json.loads((world / "train.json").read_text())}
    out = []
    for line in (world / "annotations" / "train.jsonl").read_text().splitlines():
        annotation = json.loads(line)
        scene = Scene.from_dict(annotation["scene"])
        with Image.open(world / annotation["image"]) as image:
            pixels = np.asarray(image.convert("RGB"))
        out.append((records[annotation["id"]], annotation, scene, render(scene, SIZE), pixels))
    return out


def of_family(samples: list, family: str) -> list:
    chosen = [s for s in samples if s[1]["family"] == family]
    assert chosen, f"no {family} samples"
    return chosen


def assert_drawn(obj_index: int, scene: Scene, rendering: Rendering, pixels: np.ndarray) -> None:
    """The object's unoccluded pixels in the saved image are its colour or its texture shade."""
    obj = scene.objects[obj_index]
    visible = rendering.visible[obj_index]
    assert visible.sum() > 0
    seen = {tuple(p) for p in pixels[visible]}
    assert seen <= {COLORS[obj.color], shade(obj.color)}, (obj, seen)


def test_annotations_rerender_to_the_saved_pixels(samples: list) -> None:
    for _record, _annotation, _scene, rendering, pixels in samples:
        assert np.array_equal(np.asarray(rendering.image), pixels)


def check_grounding(record: dict, scene: Scene, rendering: Rendering, pixels: np.ndarray) -> None:
    """The answer is a normalised box in the image that holds the named object, and little more."""
    human, gpt = record["conversations"][0]["value"], record["conversations"][1]["value"]
    match = BOX.fullmatch(gpt)
    assert match, gpt
    x1, y1, x2, y2 = (float(v) for v in match.groups())
    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
    target = human.rsplit(": the ", 1)[1].rstrip(".")
    if target == "sign":
        bx1, by1, bx2, by2 = scene.sign.box
        assert x1 <= bx1 and y1 <= by1 and bx2 <= x2 and by2 <= y2
        return
    index = [o.name for o in scene.objects].index(target)
    ys, xs = np.nonzero(rendering.masks[index])
    assert xs.min() >= x1 * SIZE - 1e-6 and xs.max() + 1 <= x2 * SIZE + 1e-6
    assert ys.min() >= y1 * SIZE - 1e-6 and ys.max() + 1 <= y2 * SIZE + 1e-6
    # tight: no more than the 2-decimal rounding (under 1 pixel at 64 px) on each side
    assert (x2 - x1) * SIZE <= xs.max() + 1 - xs.min() + 2
    assert (y2 - y1) * SIZE <= ys.max() + 1 - ys.min() + 2
    assert_drawn(index, scene, rendering, pixels)


def test_grounding_boxes_lie_in_the_image_and_contain_the_named_object(samples: list) -> None:
    for record, _annotation, scene, rendering, pixels in of_family(samples, "grounding"):
        check_grounding(record, scene, rendering, pixels)


def test_conflict_pair_asks_for_boxes_and_captions_of_the_same_images(world: Path, samples: list) -> None:
    grounding = json.loads((world / "conflict" / "grounding.json").read_text())
    captions = json.loads((world / "conflict" / "caption.json").read_text())
    assert [r["image"] for r in grounding] == [r["image"] for r in captions] and len(grounding) > 150
    by_image = {
        annotation["image"]: (scene, rendering, pixels) for _, annotation, scene, rendering, pixels in samples
    }
    for box_record, caption_record in zip(grounding, captions, strict=True):
        scene, rendering, pixels = by_image[box_record["image"]]
        check_grounding(box_record, scene, rendering, pixels)
        assert caption_record["conversations"][1]["value"] == caption(scene)


def test_region_descriptions_describe_the_object_in_the_box(samples: list) -> None:
    for record, annotation, scene, rendering, _pixels in of_family(samples, "region"):
        human, gpt = record["conversations"][0]["value"], record["conversations"][1]["value"]
        box = tuple(float(v) for v in BOX.search(human).groups())
        if annotation["targets"][0]:
            index = annotation["targets"][0][0]
            assert rendering.normalized_box(index) == box
            assert gpt == scene.objects[index].description()
        else:
            assert gpt == f'a sign that says "{scene.sign.text}"'


def expected_count(question: str, scene: Scene) -> int:
    match = re.search(r"How many (.+) are there\?|Number of (.+)\?", question)
    noun = match.group(1) or match.group(2)
    if noun == "objects":
        return len(scene.objects)
    if noun.endswith(" objects"):
        return sum(o.color == noun.split()[0] for o in scene.objects)
    shape = {plural(s): s for s in SHAPES}[noun]
    return sum(o.shape == shape for o in scene.objects)


def test_counts_equal_the_objects_drawn(samples: list) -> None:
    for record, annotation, scene, rendering, pixels in of_family(samples, "count"):
        question, answer = record["conversations"][0]["value"], record["conversations"][1]["value"]
        targets = annotation["targets"][0]
        assert int(answer) == len(targets) == expected_count(question, scene)
        for index in targets:
            assert_drawn(index, scene, rendering, pixels)


def test_rendered_text_is_the_reading_answer(samples: list) -> None:
    for record, _annotation, scene, _rendering, pixels in of_family(samples, "reading"):
        answer = record["conversations"][1]["value"]
        assert answer == scene.sign.text
        x1, y1, x2, y2 = (round(v * SIZE) for v in scene.sign.box)
        ink = np.zeros((SIZE, SIZE), dtype=bool)
        ink[y1:y2, x1:x2] = np.all(pixels[y1:y2, x1:x2] == COLORS[scene.sign.text_color], axis=-1)
        assert np.array_equal(ink, sign_text_mask(scene, SIZE))
        center = (
            (scene.sign.box[0] + scene.sign.box[2]) / 2 * SIZE,
            (scene.sign.box[1] + scene.sign.box[3]) / 2 * SIZE,
        )
        size = round(scene.sign.font_size * SIZE)
        assert np.array_equal(ink, text_mask(answer, center, size, SIZE))
        wrong = perturb_text(answer, np.random.default_rng(0))
        assert not np.array_equal(ink, text_mask(wrong, center, size, SIZE))


def test_relation_answers_follow_the_object_centres(samples: list) -> None:
    for record, _annotation, scene, _rendering, _pixels in of_family(samples, "relation"):
        question, answer = record["conversations"][0]["value"], record["conversations"][1]["value"]
        a, b = (scene.find(n) for n in NAME.findall(question))
        truth = {"left": a.x < b.x, "right": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}
        assert truth[answer]


def test_depth_answers_name_the_nearer_object_drawn_larger(samples: list) -> None:
    for record, _annotation, scene, _rendering, _pixels in of_family(samples, "depth"):
        near = scene.find(record["conversations"][1]["value"])
        others = [o for o in scene.objects if o.name in record["conversations"][0]["value"] and o is not near]
        assert len(others) == 1
        assert near.depth < others[0].depth and near.radius > others[0].radius


def test_captions_name_every_object_and_no_position(samples: list) -> None:
    for _record, _annotation, scene, _rendering, _pixels in samples:
        text = caption(scene)
        for obj in scene.objects:
            assert obj.shape in text and obj.color in text
        assert not re.search(r"\b(left|right|above|below|top|bottom)\b", text)


def test_suite_counts_and_relations_are_true(world: Path) -> None:
    scenes = {
        a["image"]: Scene.from_dict(a["scene"])
        for a in map(json.loads, (world / "annotations" / "suite.jsonl").read_text().splitlines())
    }
    for line in (world / "suite" / "cvbench_coco.jsonl").read_text().splitlines():
        item = json.loads(line)
        assert int(item["options"][item["answer"]]) == expected_count(
            item["context"].split("\n")[0], scenes[item["image"]]
        )
    for line in (world / "suite" / "cvbench_ade20k.jsonl").read_text().splitlines():
        item = json.loads(line)
        scene = scenes[item["image"]]
        a, b = (scene.find(n) for n in NAME.findall(item["context"].split("\n")[0]))
        truth = {"left": a.x < b.x, "right": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}
        assert truth[item["options"][item["answer"]]]


def test_mmvp_pairs_differ_in_exactly_the_stated_detail(world: Path) -> None:
    scenes = {
        a["image"]: a["scene"]
        for a in map(json.loads, (world / "annotations" / "suite.jsonl").read_text().splitlines())
    }
    items = [json.loads(line) for line in (world / "suite" / "mmvp.jsonl").read_text().splitlines()]
    pairs: dict[str, list[dict]] = {}
    for item in items:
        pairs.setdefault(item["pair_id"], []).append(item)
    fields = {
        "color": {"color"},
        "shape": {"shape"},
        "size": {"size", "radius"},
        "texture": {"texture"},
        "position": {"x"},
    }
    details = set()
    for first, second in pairs.values():
        assert first["prompt"] == second["prompt"] and first["options"] == second["options"]
        assert first["answer"] != second["answer"] and first["detail"] == second["detail"]
        detail = first["detail"]
        details.add(detail)
        a, b = scenes[first["image"]], scenes[second["image"]]
        assert {k: v for k, v in a.items() if k not in ("objects", "sign")} == {
            k: v for k, v in b.items() if k not in ("objects", "sign")
        }
        if detail == "text":
            assert a["objects"] == b["objects"]
            assert {k for k in a["sign"] if a["sign"][k] != b["sign"][k]} == {"text"}
            changed = (a["sign"]["text"], b["sign"]["text"])
        else:
            assert a["sign"] == b["sign"]
            diffs = [(oa, ob) for oa, ob in zip(a["objects"], b["objects"], strict=True) if oa != ob]
            assert len(diffs) == 1
            oa, ob = diffs[0]
            assert {k for k in oa if oa[k] != ob[k]} == fields[detail]
            if detail == "position":
                changed = tuple(
                    "left" if o["x"] < reference_x(sc, item) else "right"
                    for o, sc, item in ((oa, a, first), (ob, b, second))
                )
            else:
                changed = (oa[detail], ob[detail])
        assert changed[0] != changed[1]
        assert changed == (first["options"][first["answer"]], second["options"][second["answer"]])
        with (
            Image.open(world / "suite" / first["image"]) as im_a,
            Image.open(world / "suite" / second["image"]) as im_b,
        ):
            assert not np.array_equal(np.asarray(im_a), np.asarray(im_b))
    assert details == {"color", "shape", "size", "texture", "position", "text"}


def reference_x(scene: dict, item: dict) -> float:
    """The x of the reference object, named second in a left/right question."""
    reference = NAME.findall(item["context"].split("\n")[0])[1]
    return next(o["x"] for o in scene["objects"] if f"{o['color']} {o['shape']}" == reference)
