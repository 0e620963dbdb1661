"""Every adapter reads its tiny official-format fixture into contract items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from covft.eval import BENCHMARKS
from covft.eval.benchmarks import ImageRef, get_adapter, load_suite, read_suite_file, write_suite
from covft.eval.benchmarks.base import MC_SUFFIX, MC_SUFFIX_CN, SHORT_ANSWER_SUFFIX
from covft.eval.benchmarks.mmbench import rotate
from covft.eval.benchmarks.mmvp import parse_options

SCORING_FIELDS = {
    "mme": {"category", "image_id", "answer"},
    "mmbench_en": {"index", "options", "answer", "hint", "rotation"},
    "mmbench_cn": {"index", "options", "answer", "hint", "rotation"},
    "gqa": {"answer"},
    "scienceqa_img": {"choices", "answer"},
    "ai2d": {"options", "answer"},
    "textvqa": {"answers"},
    "mmvp": {"pair_id", "options", "answer"},
    "realworldqa": {"answer"},
    "cvbench_coco": {"options", "answer", "source", "task"},
    "cvbench_ade20k": {"options", "answer", "source", "task"},
    "cvbench_omni3d": {"options", "answer", "source", "task"},
}
EXPECTED_COUNTS = {
    "mme": 22,  # 11 images x 2 questions
    "mmbench_en": 9,  # 4 + 2 + 3 rotations
    "mmbench_cn": 9,
    "gqa": 3,
    "scienceqa_img": 2,  # the test problem without an image and the train problem are skipped
    "ai2d": 2,
    "textvqa": 2,
    "mmvp": 4,
    "realworldqa": 2,
    "cvbench_coco": 2,
    "cvbench_ade20k": 1,
    "cvbench_omni3d": 1,
}


def load(data_root: Path, name: str, limit: int | None = None) -> list[dict]:
    adapter = get_adapter(name)
    return adapter.load(data_root / adapter.subdir, limit)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_adapter_yields_contract_items(data_root: Path, name: str) -> None:
    items = load(data_root, name)
    assert len(items) == EXPECTED_COUNTS[name]
    assert len({item["id"] for item in items}) == len(items)
    for item in items:
        assert {"id", "image", "prompt", "context"} | SCORING_FIELDS[name] <= set(item)
        assert isinstance(item["id"], str)
        assert "<image>" not in item["prompt"] and "<image>" not in item["context"]
        assert item["context"] and item["context"] in item["prompt"]
        image = item["image"].load()
        assert image.mode == "RGB" and image.size == (8, 8)
        if "options" in SCORING_FIELDS[name]:
            assert item["answer"] in item["options"]
            for letter, text in item["options"].items():
                assert f"{letter}. {text}" in item["prompt"]


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("mmbench_en", MC_SUFFIX),
        ("mmbench_cn", MC_SUFFIX_CN),
        ("gqa", SHORT_ANSWER_SUFFIX),
        ("scienceqa_img", MC_SUFFIX),
        ("ai2d", MC_SUFFIX),
        ("textvqa", SHORT_ANSWER_SUFFIX),
        ("mmvp", MC_SUFFIX),
        ("cvbench_coco", MC_SUFFIX),
        ("cvbench_omni3d", MC_SUFFIX),
    ],
)
def test_prompts_end_with_llava_instruction_that_context_lacks(
    data_root: Path, name: str, suffix: str
) -> None:
    for item in load(data_root, name):
        assert item["prompt"] == f"{item['context']}\n{suffix}"


def test_mme_reads_both_official_layouts_and_pairs_questions_by_image(data_root: Path) -> None:
    items = load(data_root, "mme")
    assert {item["category"] for item in items} == {
        "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
    }  # fmt: skip
    first = items[0]
    assert first["id"] == "existence/0001/0" and first["image_id"] == "existence/0001"
    assert first["prompt"] == "Is there a existence 0 in this image? Please answer yes or no."
    assert first["context"] == "Is there a existence 0 in this image?"
    assert [i["answer"] for i in items[:2]] == ["Yes", "No"]
    assert items[0]["image"] is items[1]["image"]
    artwork = [i for i in items if i["category"] == "artwork"]
    assert artwork[0]["image"].path.parts[-2:] == ("images", "artwork_1.jpg")
    assert len(load(data_root, "mme", limit=1)) == 2  # limit counts images; both questions kept


def test_mmbench_rotations_hint_and_shared_images(data_root: Path) -> None:
    items = load(data_root, "mmbench_en")
    first = [i for i in items if i["index"] == "10"]
    assert [i["rotation"] for i in first] == [0, 1, 2, 3]
    assert [i["answer"] for i in first] == ["C", "B", "A", "D"]  # "cow" moves towards the front
    assert all(i["options"][i["answer"]] == "cow" for i in first)
    assert first[1]["prompt"] == (
        "A photo from a farm.\nWhat animal is shown?\nA. dog\nB. cow\nC. horse\nD. cat\n" + MC_SUFFIX
    )
    two = [i for i in items if i["index"] == "11"]
    assert [i["options"] for i in two] == [{"A": "day", "B": "night"}, {"A": "night", "B": "day"}]
    assert two[0]["hint"] is None and two[0]["prompt"].startswith("Is it day or night?\nA. day")
    shared = [i for i in items if i["index"] == "12"]
    assert len(shared) == 3  # empty option D dropped
    assert shared[0]["image"].load().getpixel((0, 0)) == first[0]["image"].load().getpixel((0, 0))
    assert len(load(data_root, "mmbench_en", limit=1)) == 4  # limit counts questions


def test_rotate_moves_the_answer_with_its_text() -> None:
    options, letter = rotate(["a", "b", "c"], answer=0, rotation=2)
    assert options == {"A": "c", "B": "a", "C": "b"} and letter == "B"


def test_scienceqa_keeps_only_test_problems_with_images(data_root: Path) -> None:
    items = load(data_root, "scienceqa_img")
    assert [i["id"] for i in items] == ["5", "7"]
    assert items[0]["prompt"] == (
        "Context: Look at the picture.\nWhich is a mammal?\nA. frog\nB. whale\n" + MC_SUFFIX
    )
    assert items[1]["context"] == "Which state is highlighted?\nA. Ohio\nB. Utah\nC. Iowa"
    assert items[0]["choices"] == ["frog", "whale"] and items[0]["answer"] == 1


def test_mmvp_pairs_and_options(data_root: Path) -> None:
    items = load(data_root, "mmvp")
    assert [i["pair_id"] for i in items] == ["1", "1", "2", "2"]
    assert [i["answer"] for i in items] == ["A", "B", "B", "A"]
    assert items[0]["options"] == {"A": "Open", "B": "Closed"}
    assert len(load(data_root, "mmvp", limit=3)) == 4  # whole pairs
    assert parse_options("(a) A red apple (b) Two green pears") == {
        "A": "A red apple",
        "B": "Two green pears",
    }


def test_realworldqa_keeps_question_as_prompt_and_parses_options(data_root: Path) -> None:
    mc, short = load(data_root, "realworldqa")
    assert mc["prompt"].endswith("nothing else.") and "Please answer" not in mc["context"]
    assert mc["options"] == {"A": "Left", "B": "Straight", "C": "Right"} and mc["answer"] == "C"
    assert (
        "options" not in short and short["answer"] == "3" and short["context"] == "How many lanes are there?"
    )


def test_cvbench_splits_by_source(data_root: Path) -> None:
    coco = load(data_root, "cvbench_coco")
    assert [(i["id"], i["task"], i["answer"]) for i in coco] == [("1", "Relation", "B"), ("2", "Count", "A")]
    (ade,) = load(data_root, "cvbench_ade20k")
    assert ade["options"] == {"A": "3", "B": "2", "C": "1", "D": "0"} and ade["answer"] == "C"
    assert load(data_root, "cvbench_omni3d")[0]["source"] == "Omni3D"


def test_textvqa_and_gqa_fields(data_root: Path) -> None:
    textvqa = load(data_root, "textvqa")
    assert textvqa[0]["id"] == "34602" and len(textvqa[0]["answers"]) == 10
    gqa = load(data_root, "gqa", limit=2)
    assert [i["answer"] for i in gqa] == ["no", "woman"]
    assert gqa[0]["prompt"] == "Is it overcast?\n" + SHORT_ANSWER_SUFFIX


MISSING = {
    "mme": "existence",
    "mmbench_en": "mmbench_dev_20230712.tsv",
    "mmbench_cn": "mmbench_dev_cn_20231003.tsv",
    "gqa": "testdev_balanced_questions.json",
    "scienceqa_img": "problems.json",
    "ai2d": "test.jsonl",
    "textvqa": "TextVQA_0.5.1_val.json",
    "mmvp": "Questions.csv",
    "realworldqa": "realworldqa.jsonl",
    "cvbench_coco": "test_2d.jsonl",
    "cvbench_ade20k": "test_2d.jsonl",
    "cvbench_omni3d": "test_2d.jsonl",
}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_missing_files_name_path_benchmark_and_source(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as error:
        get_adapter(name).load(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{name}: missing {tmp_path}")
    assert MISSING[name] in message
    assert "Get it from" in message and "docs/benchmarks.md" in message


def test_missing_image_is_named(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "gqa").mkdir()
    source = data_root / "gqa" / "testdev_balanced_questions.json"
    (tmp_path / "gqa" / source.name).write_text(source.read_text())
    with pytest.raises(FileNotFoundError, match=r"gqa: missing .*images/n161313\.jpg"):
        get_adapter("gqa").load(tmp_path / "gqa")


def test_negative_limit_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match="mmvp: limit must be None or >= 0, got -1"):
        load(data_root, "mmvp", limit=-1)
    assert load(data_root, "textvqa", limit=0) == []


def test_unknown_benchmark_lists_known_names() -> None:
    with pytest.raises(KeyError, match="unknown benchmark 'vqav2'.*mme, mmbench_en"):
        get_adapter("vqav2")


def test_image_ref_is_lazy_and_returns_rgb(tmp_path: Path) -> None:
    ref = ImageRef(tmp_path / "later.png")  # nothing read yet
    with pytest.raises(FileNotFoundError, match="later.png"):
        ref.load()
    Image.new("L", (8, 8), 128).save(tmp_path / "later.png")
    assert ref.load().mode == "RGB" and ref.load().getpixel((0, 0)) == (128, 128, 128)
    assert ImageRef(image=Image.new("RGBA", (4, 4))).load().mode == "RGB"
    with pytest.raises(ValueError, match="exactly one of path, b64, image; got 2"):
        ImageRef(tmp_path / "x.png", b64="AAAA")


def test_suite_round_trip_keeps_fields_and_pixels(data_root: Path, tmp_path: Path) -> None:
    mmbench = load(data_root, "mmbench_en")[:4]  # base64 images, one shared by four items
    gqa = load(data_root, "gqa")  # file images outside the suite
    extra = [{"id": "x", "image": None, "prompt": "p", "context": "c", "answer": "yes"}]
    write_suite(tmp_path, "mmbench_en", mmbench)
    write_suite(tmp_path, "gqa", gqa + extra)
    lines = [json.loads(line) for line in (tmp_path / "mmbench_en.jsonl").read_text().splitlines()]
    assert len({line["image"] for line in lines}) == 1 and lines[0]["image"].startswith("images/mmbench_en/")
    suite = load_suite(tmp_path)
    assert sorted(suite) == ["gqa", "mmbench_en"]
    for original, loaded in zip(mmbench + gqa, suite["mmbench_en"] + suite["gqa"][:3], strict=True):
        assert {k: v for k, v in loaded.items() if k != "image"} == {
            k: v for k, v in original.items() if k != "image"
        }
        assert loaded["image"].load().getpixel((4, 4)) == original["image"].load().getpixel((4, 4))
    assert suite["gqa"][-1]["image"] is None
    assert len(read_suite_file(tmp_path / "gqa.jsonl")) == 4
    with pytest.raises(FileNotFoundError, match="suite directory not found"):
        load_suite(tmp_path / "nowhere")


def test_cvbench_reads_the_first_release_single_file(data_root: Path, tmp_path: Path) -> None:
    shutil.copytree(data_root / "cvbench" / "img", tmp_path / "img")
    lines = [(data_root / "cvbench" / f).read_text() for f in ("test_2d.jsonl", "test_3d.jsonl")]
    (tmp_path / "test.jsonl").write_text("".join(lines))
    assert [i["id"] for i in get_adapter("cvbench_coco").load(tmp_path)] == ["1", "2"]
    assert [i["id"] for i in get_adapter("cvbench_omni3d").load(tmp_path)] == ["3"]
