"""Keeps benchmarks/grounding_check.py from rotting: both diagnostics run on a micro demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import covft
from covft.recipes.demo.pipeline import DemoRun, run_demo
from covft.recipes.demo.settings import micro
from covft.recipes.world.corpus import scene_text
from covft.recipes.world.scene import Scene


@pytest.fixture(scope="module")
def check(benchmark_script):
    return benchmark_script("grounding_check")


def test_probe_and_single_family_run_on_a_micro_demo(check, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    results = run_demo(
        DemoRun(
            out=demo,
            settings=micro(world_size=400),
            methods=["freeze"],
            cache_dir=tmp_path / "cache",
            progress=False,
            from_scratch=True,
        )
    )
    world, start = demo / "world", Path(results["starting_point"]["path"])
    results = check.probe(world, start, max_images=12, neighbourhood=1)
    for tower in ("starting point", "random", "pixels"):
        entry = results[tower]
        assert entry["objects"] >= 12  # every object of 12 scenes
        for target in check.PROBE_TARGETS:
            assert 0.0 <= entry[target] <= 1.0 and 0.0 < entry[f"{target}_majority"] <= 1.0

    learned = check.learnable(world, start, images=12, steps=3, batch=4)
    assert 0.0 <= learned["accuracy"] <= 1.0 and 0.0 < learned["majority"] <= 1.0 and learned["objects"] >= 2

    described = check.describe(world, start, images=6, batch=4, max_new_tokens=6)
    assert set(described) == {"real", "shifted"}
    for entry in described.values():
        assert entry["images"] == 6 and all(0.0 <= entry[k] <= 1.0 for k in ("count", "shape", "color"))
    assert check._score_description(
        " 2 objects: small red circle at 10,20; large blue star at 80,20.",
        {"objects": [{"shape": "star", "color": "blue", "x": 0.8, "y": 0.2},
                     {"shape": "circle", "color": "green", "x": 0.1, "y": 0.2}]},
    ) == (True, 2, 2, 1)  # fmt: skip

    read = check.readout(world, start, images=6, batch=4)
    layers = covft.load_pretrained(str(start)).llava.config.text_config.num_hidden_layers
    assert list(read) == ["tower", "projector", *(f"LM layer {d}" for d in range(1, layers + 1)), "majority"]
    for entry in read.values():
        assert set(entry) == set(check.READOUT_TARGETS) and all(0.0 <= v <= 1.0 for v in entry.values())

    located = check.locate(world, start, images=6, batch=4)
    assert set(located) == {"real", "shifted"}
    for entry in located.values():
        assert entry["objects"] >= 6 and all(0.0 <= entry[k] <= 1.0 for k in ("color", "shape"))

    described = check.described_suite(world)
    assert set(described) == {p.stem for p in (world / "suite").glob("*.jsonl")}
    scenes = [
        json.loads(line)["scene"] for line in (world / "annotations" / "suite.jsonl").read_text().splitlines()
    ]
    for item in (i for items in described.values() for i in items if i["prompt"].startswith("Image: ")):
        assert item["image"] is None  # the description replaces the image
        assert any(scene_text(Scene.from_dict(s)) + "\n" in item["prompt"] for s in scenes)
    pictured = sum(
        1
        for line in (world / "suite").glob("*.jsonl")
        for r in line.read_text().splitlines()
        if '"image": "' in r
    )
    assert (
        pictured > 0
        and sum(i["prompt"].startswith("Image: ") for v in described.values() for i in v) == pictured
    )
    shuffled = check.described_suite(world, shuffle_seed=0)
    for name, items in described.items():  # the same questions, other units' scenes
        assert [i["id"] for i in shuffled[name]] == [i["id"] for i in items]
        assert [i["prompt"].split("\n", 1)[-1] for i in shuffled[name]] == [
            i["prompt"].split("\n", 1)[-1] for i in items
        ]
    assert any(
        a["prompt"] != b["prompt"] for n in described for a, b in zip(described[n], shuffled[n], strict=True)
    )
    with pytest.raises(FileNotFoundError, match="suite.jsonl is missing: `words` needs the scene"):
        check.described_suite(tmp_path / "no-world")
    answered = check.words(world, start, out=tmp_path / "words", batch=8)
    for kind in ("own", "shuffled"):
        assert set(answered[kind]["scores"]) == set(described) and "Avg" in answered[kind]["summary"]
        assert (tmp_path / "words" / kind / "predictions" / "mme.jsonl").is_file()
    assert answered["text_gain"] == pytest.approx(
        answered["own"]["summary"]["Avg"] - answered["shuffled"]["summary"]["Avg"]
    )

    accuracy = check.family(world, "count", steps=2, start=start, held_out=5)
    assert set(accuracy) == {"real", "shuffled", "majority", "image_gain"}
    assert accuracy["image_gain"] == pytest.approx(accuracy["real"] - accuracy["shuffled"])
    assert (demo / "grounding" / "count-freeze-2" / "result.json").is_file()
    with pytest.raises(SystemExit, match="family 'count' has"):
        check.family(world, "count", steps=2, start=start, held_out=10_000)
