"""The world's held-out suite: contract conformance, held-out images, and scoring sanity."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from covft.eval import BENCHMARKS, score
from covft.eval.benchmarks import ImageRef, load_suite
from covft.recipes.world import make_world
from covft.recipes.world.formats import MULTIPLE_CHOICE, SHORT_ANSWER, YES_NO
from covft.recipes.world.suite import BUILDERS
from covft.recipes.world.suite_items import pixel_hash

SUITE = 40
LETTERS = "ABCDEFGH"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    make_world(out, size=100, seed=5, suite_size=SUITE, progress=False)
    return out


@pytest.fixture(scope="module")
def suite(world: Path) -> dict[str, list[dict]]:
    return load_suite(world / "suite")


def test_suite_has_the_papers_twelve_benchmarks(suite: dict[str, list[dict]]) -> None:
    assert tuple(BUILDERS) == BENCHMARKS
    assert set(suite) == set(BENCHMARKS)


def check_options(item: dict) -> None:
    options = item["options"]
    assert list(options) == list(LETTERS[: len(options)]) and len(options) >= 2
    assert len(set(options.values())) == len(options)
    assert item["answer"] in options


def test_every_item_follows_the_contract(suite: dict[str, list[dict]]) -> None:
    for name, items in suite.items():
        assert len({item["id"] for item in items}) == len(items), name
        for item in items:
            assert isinstance(item["image"], ImageRef)
            assert item["image"].load().size == (64, 64)
            prompt, context = item["prompt"], item["context"]
            assert "<image>" not in prompt and "<image>" not in context
            assert prompt.startswith(context) and context.strip()
            suffix = prompt[len(context) :].strip()
            if name == "mme":
                assert suffix == YES_NO and item["answer"] in ("Yes", "No")
                assert item["category"] in {"existence", "count", "position", "color", "OCR"}
            elif name in ("gqa", "textvqa") or (name == "realworldqa" and "options" not in item):
                assert suffix == SHORT_ANSWER
            else:
                assert suffix == MULTIPLE_CHOICE
                assert MULTIPLE_CHOICE not in context
            if name.startswith("mmbench"):
                check_options(item)
                assert isinstance(item["index"], int) and isinstance(item["rotation"], int)
                assert "hint" in item and (item["hint"] is None or item["hint"] in context)
            elif name == "scienceqa_img":
                assert isinstance(item["choices"], list) and 0 <= item["answer"] < len(item["choices"])
                assert item["hint"] in context and "this world" in item["hint"]
            elif name == "textvqa":
                assert len(item["answers"]) == 10 and len(set(item["answers"])) == 1
            elif name == "gqa":
                assert isinstance(item["answer"], str) and item["answer"]
            elif name == "realworldqa":
                if "options" in item:
                    check_options(item)
                else:
                    assert item["answer"]
            elif name in ("ai2d", "mmvp") or name.startswith("cvbench"):
                check_options(item)
            if name.startswith("cvbench"):
                source, task = {
                    "cvbench_coco": ("COCO", "Count"),
                    "cvbench_ade20k": ("ADE20K", "Relation"),
                    "cvbench_omni3d": ("Omni3D", "Depth"),
                }[name]
                assert (item["source"], item["task"]) == (source, task)


def test_mme_gives_each_image_one_yes_and_one_no(suite: dict[str, list[dict]]) -> None:
    by_image = defaultdict(list)
    for item in suite["mme"]:
        by_image[item["image_id"]].append(item)
    assert len(by_image) == SUITE
    for items in by_image.values():
        assert sorted(i["answer"] for i in items) == ["No", "Yes"]
        assert len({i["category"] for i in items}) == 1 and len({i["image"].path for i in items}) == 1


def test_mmbench_has_one_item_per_rotation_and_cn_rephrases_en(suite: dict[str, list[dict]]) -> None:
    for name in ("mmbench_en", "mmbench_cn"):
        questions = defaultdict(list)
        for item in suite[name]:
            questions[item["index"]].append(item)
        assert len(questions) == SUITE
        for items in questions.values():
            n = len(items[0]["options"])
            assert sorted(i["rotation"] for i in items) == list(range(n))
            assert len({i["options"][i["answer"]] for i in items}) == 1
            assert len({tuple(sorted(i["options"].values())) for i in items}) == 1
            assert len({i["options"]["A"] for i in items}) == n
    en = {i["id"].split("-", 1)[1]: i for i in suite["mmbench_en"]}
    cn = {i["id"].split("-", 1)[1]: i for i in suite["mmbench_cn"]}
    assert en.keys() == cn.keys()
    rephrased = sum(en[k]["context"] != cn[k]["context"] for k in en)
    assert rephrased == len(en)
    assert all(en[k]["options"] == cn[k]["options"] and en[k]["answer"] == cn[k]["answer"] for k in en)


def test_mmvp_items_come_in_pairs_with_opposite_answers(suite: dict[str, list[dict]]) -> None:
    pairs = defaultdict(list)
    for item in suite["mmvp"]:
        pairs[item["pair_id"]].append(item)
    assert len(pairs) == SUITE
    for items in pairs.values():
        assert len(items) == 2 and items[0]["answer"] != items[1]["answer"]
        assert list(items[0]["options"]) == ["A", "B"]


def test_suite_images_never_appear_in_training(world: Path) -> None:
    def hashes(folder: Path) -> set[str]:
        out = set()
        for path in folder.rglob("*.png"):
            with Image.open(path) as image:
                out.add(pixel_hash(image))
        return out

    train, held_out = hashes(world / "images" / "train"), hashes(world / "suite" / "images")
    assert len(train) > 50 and len(held_out) > 12 * SUITE // 2
    assert train.isdisjoint(held_out)


def gold(name: str, item: dict) -> str:
    if name == "scienceqa_img":
        return LETTERS[item["answer"]]
    if name == "textvqa":
        return item["answers"][0]
    return item["answer"]


def test_gold_answers_score_full_marks(suite: dict[str, list[dict]]) -> None:
    for name, items in suite.items():
        result = score(name, [{**item, "prediction": gold(name, item)} for item in items])
        if name == "mme":
            assert all(v["acc"] == 100 and v["acc_plus"] == 100 for v in result["breakdown"].values())
            assert len(result["breakdown"]) == 5
        else:
            assert result["score"] == pytest.approx(100.0), name


def test_a_constant_answer_scores_about_chance(suite: dict[str, list[dict]]) -> None:
    for name in ("ai2d", "cvbench_coco", "cvbench_ade20k", "cvbench_omni3d", "scienceqa_img"):
        items = suite[name]
        sizes = [len(i["choices"]) if name == "scienceqa_img" else len(i["options"]) for i in items]
        chance = 100 * sum(1 / n for n in sizes) / len(items)
        result = score(name, [{**item, "prediction": "A"} for item in items])
        # binomial spread of a fair letter shuffle: 3.5 standard deviations
        spread = 350 * (chance / 100 * (1 - chance / 100) / len(items)) ** 0.5
        assert abs(result["score"] - chance) <= spread, (name, result["score"], chance)
    mme = score("mme", [{**item, "prediction": "Yes"} for item in suite["mme"]])
    assert all(v["acc"] == 50 and v["acc_plus"] == 0 for v in mme["breakdown"].values())
    for name in ("mmbench_en", "mmbench_cn", "mmvp"):
        assert score(name, [{**item, "prediction": "A"} for item in suite[name]])["score"] == 0, name
    common = Counter(item["answer"] for item in suite["gqa"]).most_common(1)[0]
    gqa = score("gqa", [{**item, "prediction": common[0]} for item in suite["gqa"]])
    assert gqa["score"] == pytest.approx(100 * common[1] / SUITE) and gqa["score"] < 50
    assert score("textvqa", [{**item, "prediction": "CAT"} for item in suite["textvqa"]])["score"] < 20
