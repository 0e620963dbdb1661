"""Visual preference conflict: task split, distances, and the command end to end."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import covft
from covft.analysis.conflict import (
    block_distances,
    feature_distances,
    measure_steps,
    split_by_task,
)
from covft.analysis.runs import load_records, task_of
from covft.cli import main
from covft.recipes.analyses.conflict import run_conflict
from covft.utils.config import ConfigError

from .conftest import TINY


def _sample(sample_id: str, image: str, *turns: tuple[str, str]) -> dict:
    conversations = []
    for k, (human, gpt) in enumerate(turns):
        conversations += [
            {"from": "human", "value": ("<image>\n" if k == 0 else "") + human},
            {"from": "gpt", "value": gpt},
        ]
    return {"id": sample_id, "image": image, "conversations": conversations}


GROUND = "Please provide the bounding box coordinate of the region this sentence describes: the red star."
REGION = "Please provide a short description for this region: [0.1, 0.2, 0.3, 0.4]"


def test_task_of_reads_world_and_llava_prompts() -> None:
    assert task_of("<image>\n" + GROUND) == "grounding"
    assert task_of(REGION) == "region"
    assert task_of("<image>\nDescribe the image briefly.") == "caption"
    assert task_of("<image>") == "caption"  # stage-1 "plain" captions
    assert task_of("How many circles are there?") is None
    brief = [  # LLaVA's brief-caption prompts (its captions for stage 1 and the conflict analysis)
        "Describe the image concisely.",
        "Provide a brief description of the given image.",
        "Offer a succinct explanation of the picture presented.",
        "Summarize the visual content of the image.",
        "Give a short and clear explanation of the subsequent image.",
        "Share a concise interpretation of the image provided.",
        "Present a compact description of the photo's key features.",
        "Relay a brief, clear account of the picture shown.",
        "Render a clear and concise summary of the photo.",
        "Write a terse but informative summary of the picture.",
        "Create a compact narrative representing the image presented.",
    ]
    assert [task_of(f"<image>\n{prompt}") for prompt in brief] == ["caption"] * len(brief)
    assert (
        task_of("What is the color of the short bus?\nAnswer the question using a single word or phrase.")
        is None
    )


def test_split_keeps_only_shared_images_in_the_same_order() -> None:
    records = [
        _sample("mixed", "a.png", (GROUND, "[0.1, 0.1, 0.2, 0.2]"), (REGION, "a red star"), ("Why?", "x")),
        _sample("g-only", "b.png", (GROUND, "[0.3, 0.3, 0.4, 0.4]")),
        _sample("count", "c.png", ("How many stars?", "2")),
    ]
    captions = [
        _sample("cap-b", "b.png", ("Describe the image briefly.", "A star.")),
        _sample("cap-x", "x.png"),
    ]
    a, b = split_by_task(records, "grounding", "caption", captions)
    assert [s["image"] for s in a] == ["b.png"] == [s["image"] for s in b]
    a, b = split_by_task(records, "grounding", "region")
    assert [s["id"] for s in a] == ["mixed:grounding"] and [s["id"] for s in b] == ["mixed:region"]
    # each side holds only its task's turns, <image> on the first human turn
    assert [t["value"] for t in a[0]["conversations"]] == ["<image>\n" + GROUND, "[0.1, 0.1, 0.2, 0.2]"]
    assert [t["value"] for t in b[0]["conversations"]] == ["<image>\n" + REGION, "a red star"]
    with pytest.raises(ValueError, match="no image has both"):
        split_by_task(records, "grounding", "caption")


def test_world_split_pairs_grounding_with_captions_of_the_same_images(world) -> None:
    records = load_records(world / "train.json")
    a, b = split_by_task(records, "grounding", "caption", load_records(world / "captions.json"))
    assert a and [s["image"] for s in a] == [s["image"] for s in b]
    assert all(task_of(s["conversations"][0]["value"]) == "grounding" for s in a)
    assert all(task_of(s["conversations"][0]["value"]) == "caption" for s in b)


def test_block_distances_zero_for_identical_and_exact_for_a_known_change() -> None:
    model = covft.build_model("tiny-test", vision_layers=3, text_encoder="random-tiny")
    covft.apply_vft(model, "covft")
    other = copy.deepcopy(model)
    assert block_distances(model, other) == [0.0, 0.0, 0.0]
    with torch.no_grad():
        expert = other.encoder_layers[1].mlp.experts
        weight = next(expert.parameters())
        weight.add_(0.5)  # a change inside a CoMoE block's experts counts for that block
        other.encoder_layers[2].layer_norm1.bias.add_(
            torch.full_like(other.encoder_layers[2].layer_norm1.bias, 2.0)
        )
    distances = block_distances(model, other)
    assert distances[0] == 0.0
    assert distances[1] == pytest.approx(0.5 * math.sqrt(weight.numel()), rel=1e-6)
    assert distances[2] == pytest.approx(
        2.0 * math.sqrt(other.encoder_layers[2].layer_norm1.bias.numel()), rel=1e-6
    )
    plain = covft.build_model("tiny-test", vision_layers=3, text_encoder="random-tiny")
    with pytest.raises(ValueError, match="different block structures"):
        block_distances(model, plain)


def test_feature_distance_is_rms_token_distance_averaged_over_images() -> None:
    a = torch.zeros(2, 4, 3)
    b = torch.zeros(2, 4, 3)
    b[0] += 1.0  # image 0: every token moved by sqrt(3)
    assert feature_distances([a], [a]) == [0.0]
    assert feature_distances([a], [b]) == [pytest.approx(math.sqrt(3) / 2)]


def test_measure_steps() -> None:
    assert measure_steps(7, 3) == [0, 3, 6, 7]
    assert measure_steps(2, 5) == [0, 2]


def test_identical_runs_are_at_distance_zero(world, tmp_path) -> None:
    records = load_records(world / "train.json")
    a, _ = split_by_task(records, "grounding", "caption", load_records(world / "captions.json"))
    result = run_conflict(
        a,
        a,
        tmp_path,
        image_folder=world,
        strategies=["covft"],
        steps=1,
        every=1,
        probe_size=2,
        batch_size=1,
        lr=1e-3,
        overrides=TINY,
    )
    data = result["strategies"]["covft"]
    assert data["steps"] == [0, 1]
    for key in ("param_l2", "param_relative", "feature_l2"):
        assert all(v == 0.0 for row in data[key] for v in row), key
    assert data["outside_l2"] == [0.0, 0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # runs and snapshots cleaned up


def test_conflict_command_end_to_end(world, tmp_path) -> None:
    out = tmp_path / "conflict"
    args = [
        "analyze",
        "conflict",
        "--data",
        str(world / "train.json"),
        "--out",
        str(out),
        "--steps",
        "2",
        "--every",
        "1",
        "--probe-size",
        "2",
        "--batch-size",
        "1",
        "--lr",
        "1e-3",
    ]
    assert main(args + [a for o in TINY for a in ("--set", o)]) == 0
    result = json.loads((out / "conflict.json").read_text())
    assert (out / "conflict_depth.png").stat().st_size > 0 and (out / "conflict_steps.png").stat().st_size > 0
    assert result["tasks"] == {"a": "grounding", "b": "caption"} and result["same_images"]
    full, ours = result["strategies"]["full"], result["strategies"]["covft"]
    for data in (full, ours):
        assert data["steps"] == [0, 1, 2]
        assert data["param_l2"][0] == [0.0, 0.0, 0.0]  # same start
        assert len(data["final"]["feature_l2"]) == 3
        assert data["final"]["param_l2"][2] == 0.0  # block 2 never feeds the LLM: frozen in both
    assert full["final"]["param_l2"][0] > 0  # full FT trains block 0
    assert ours["comoe_layers"] == [1] and ours["final"]["param_l2"][1] > 0
    assert full["outside_l2"][-1] > 0 and ours["outside_l2"][-1] == 0.0  # CoVFT leaves embeddings frozen


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"strategies": ["full", "nosuch"]}, "unknown method 'nosuch'"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"every": 0}, "every must be >= 1, got 0"),
    ],
)
def test_conflict_refuses_bad_runs_before_writing_or_training(world, tmp_path, options, named) -> None:
    import covft.train

    records = load_records(world / "train.json")
    a, b = split_by_task(records, "grounding", "caption", load_records(world / "captions.json"))
    out = tmp_path / "conflict"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(covft.train, "train", lambda *args, **kwargs: pytest.fail("a run trained"))
        with pytest.raises(ConfigError, match=named):
            run_conflict(a, b, out, image_folder=world, **{"steps": 2, "overrides": TINY, **options})
    assert not out.exists()
