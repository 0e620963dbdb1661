"""Every adapter reads its official-format fixture (conftest.py) into contract items, with the paper's
prompts and router text (``llava15``), lmms-eval's prompts, and the real releases' quirks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from tests.eval.conftest import CVBENCH_3D, CVBENCH_ROWS, RWQA_ROWS, write_jsonl

from covft.eval import BENCHMARKS
from covft.eval.benchmarks import ImageRef, get_adapter, load_suite, read_suite_file, write_suite
from covft.eval.benchmarks.base import MC_SUFFIX, SHORT_ANSWER_SUFFIX
from covft.eval.benchmarks.mmvp import parse_options, release_options
from covft.eval.generate import collect_items

SCORING_FIELDS = {
    "mme": {"category", "image_id", "answer"},
    "mmbench_en": {"index", "options", "answer", "hint", "rotation"},
    "mmbench_cn": {"index", "options", "answer", "hint", "rotation"},
    "gqa": {"answer"},
    "scienceqa_img": {"choices", "answer"},
    "ai2d": {"options", "answer"},
    "textvqa": {"answers", "ocr_tokens"},
    "mmvp": {"pair_id", "options", "answer"},
    "realworldqa": {"answer"},
    "cvbench_coco": {"options", "answer", "source", "task"},
    "cvbench_ade20k": {"options", "answer", "source", "task"},
    "cvbench_omni3d": {"options", "answer", "source", "task"},
}
EXPECTED_COUNTS = {
    "mme": 22,  # 11 perception images x 2 questions; the cognition task is ignored
    "mmbench_en": 9,  # the TSV's rows: 4 + 2 + 3 (each question and its CircularEval copies)
    "mmbench_cn": 9,
    "gqa": 3,
    "scienceqa_img": 3,  # the test problem without an image and the train problem are skipped
    "ai2d": 3,  # two parquet shards
    "textvqa": 3,
    "mmvp": 4,
    "realworldqa": 3,
    "cvbench_coco": 2,
    "cvbench_ade20k": 1,
    "cvbench_omni3d": 2,
}
SHORT = f"\n{SHORT_ANSWER_SUFFIX}"
MC = f"\n{MC_SUFFIX}"


def load(data_root: Path, name: str, limit: int | None = None, protocol: str = "llava15") -> list[dict]:
    adapter = get_adapter(name)
    return adapter.load(adapter.folder(data_root), limit, protocol)


def first(data_root: Path, name: str, protocol: str = "llava15") -> dict:
    return load(data_root, name, protocol=protocol)[0]


@pytest.mark.parametrize("protocol", ["llava15", "lmms-eval"])
@pytest.mark.parametrize("name", BENCHMARKS)
def test_adapter_yields_contract_items(data_root: Path, name: str, protocol: str) -> None:
    items = load(data_root, name, protocol=protocol)
    assert len(items) == EXPECTED_COUNTS[name]
    assert len({item["id"] for item in items}) == len(items)
    for item in items:
        assert {"id", "image", "prompt", "context", "protocol"} | SCORING_FIELDS[name] <= set(item)
        assert isinstance(item["id"], str) and item["protocol"] == protocol
        assert "<image>" not in item["prompt"] and "<image>" not in item["context"]
        assert item["context"] == " ".join(item["context"].split())  # router text: whitespace collapsed
        image = item["image"].load()
        assert image.mode == "RGB" and image.size == (8, 8)
        if "options" in SCORING_FIELDS[name]:
            assert item["answer"] in item["options"]


def test_llava_layout_folders_are_found(data_root: Path) -> None:
    folders = {name: get_adapter(name).folder(data_root).name for name in BENCHMARKS}
    assert folders["mmbench_cn"] == "mmbench_cn"  # the CoVFT release's folder; LLaVA's docs use mmbench/
    assert folders["gqa"] == "gqa" and folders["mmvp"] == "MMVP" and folders["cvbench_omni3d"] == "cvbench"


# --------------------------------------------------------------------------- llava15 prompts and router text
# The expected strings are written out by hand from the CoVFT release's scripts (docs/benchmarks.md).


def test_mme_prompt_replaces_the_yes_no_sentence_as_llava_mme_jsonl(data_root: Path) -> None:
    items = load(data_root, "mme")
    assert {item["category"] for item in items} == {
        "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
    }  # fmt: skip
    one = items[0]
    assert one["id"] == "existence/0001/0" and one["image_id"] == "existence/0001"
    assert one["prompt"] == "Is there a existence 0 in this image?" + SHORT
    assert one["context"] == "Is there a existence 0 in this image? " + SHORT_ANSWER_SUFFIX  # kept
    color = next(i for i in items if i["category"] == "color")  # two spaces before "Please"
    assert color["prompt"] == "Is there a red color 0 in the image?" + SHORT
    lmms = next(i for i in load(data_root, "mme", protocol="lmms-eval") if i["category"] == "color")
    assert lmms["prompt"] == "Is there a red color 0 in the image? " + SHORT  # lmms-eval keeps one space
    assert [i["answer"] for i in items[:2]] == ["Yes", "No"] and items[0]["image"] is items[1]["image"]
    artwork = next(i for i in items if i["category"] == "artwork")
    assert artwork["image"].path.parts[-2:] == ("images", "artwork_1.jpg")
    assert len(load(data_root, "mme", limit=1)) == 2  # limit counts images; both questions kept


def test_mmbench_reads_rows_with_their_circular_copies(data_root: Path) -> None:
    items = load(data_root, "mmbench_en")
    assert [i["id"] for i in items[:4]] == ["0", "1000000", "2000000", "3000000"]
    cow = [i for i in items if i["index"] == 0]
    assert [i["rotation"] for i in cow] == [0, 1, 2, 3] and [i["answer"] for i in cow] == ["C", "B", "A", "D"]
    assert all(i["options"][i["answer"]] == "cow" for i in cow)
    assert (
        cow[1]["prompt"]
        == "A photo from a farm.\nWhat animal is shown?\nA. dog\nB. cow\nC. horse\nD. cat" + MC
    )
    assert cow[1]["context"] == "A photo from a farm. What animal is shown? A. dog B. cow C. horse D. cat"
    day = [i for i in items if i["index"] == 1]
    assert (
        day[0]["hint"] is None and day[0]["prompt"] == "Is it day or night?\nA. day\nB. night" + MC
    )  # "nan" hint
    colour = [i for i in items if i["index"] == 2]
    assert len(colour) == 3 and list(colour[0]["options"]) == ["A", "B", "C"]  # empty option D absent
    pixels = {i["image"].load().getpixel((0, 0)) for i in colour}  # copies name row 2's image by its index
    assert pixels == {(0, 0, 255)}
    assert len(load(data_root, "mmbench_en", limit=1)) == 4  # limit counts questions, copies kept
    cn = load(data_root, "mmbench_cn")[0]
    assert cn["prompt"].endswith("\n请直接回答选项字母。") and "请直接" not in cn["context"]
    lmms = load(data_root, "mmbench_en", protocol="lmms-eval")[4]
    assert lmms["prompt"] == f"Is it day or night? There are several options:\nA. day\nB. night\n{MC}"


def test_gqa_uses_llava_question_file_with_images_under_data(data_root: Path) -> None:
    items = load(data_root, "gqa")
    assert [i["id"] for i in items] == ["202225914", "201307251", "201640614"]  # the JSONL's order
    assert items[0]["prompt"] == "What is the animal?" + SHORT and items[0]["answer"] == "dog"
    assert items[0]["context"] == "What is the animal? " + SHORT_ANSWER_SUFFIX
    assert items[1]["image"].path.parts[-3:] == ("data", "images", "n161313.jpg")
    lmms = load(data_root, "gqa", protocol="lmms-eval")
    assert [i["id"] for i in lmms] == ["201307251", "201640614", "202225914"]  # questions JSON order
    assert lmms[0]["prompt"] == "Is it overcast?" + SHORT


def test_gqa_without_llava_file_builds_the_same_prompt(data_root: Path, tmp_path: Path) -> None:
    shutil.copytree(data_root / "gqa" / "data", tmp_path / "data")
    items = get_adapter("gqa").load(tmp_path)
    assert {i["id"]: i["prompt"] for i in items} == {i["id"]: i["prompt"] for i in load(data_root, "gqa")}


def test_scienceqa_reads_images_test_and_builds_cqm_a(data_root: Path) -> None:
    items = load(data_root, "scienceqa_img")
    assert [i["id"] for i in items] == ["5", "7", "9"]
    assert items[0]["image"].path.parts[-4:] == ("images", "test", "5", "image.png")
    # LLaVA's llava_test_CQM-A.json collapses double spaces ("Look at  the" in the hint)
    assert items[0]["prompt"] == "Context: Look at the picture.\nWhich is a mammal?\nA. frog\nB. whale" + MC
    assert items[0]["context"] == "Context: Look at the picture. Which is a mammal? A. frog B. whale"
    assert items[1]["prompt"] == "Which state is highlighted?\nA. Ohio\nB. Utah\nC. Iowa" + MC  # no hint
    assert items[0]["choices"] == ["frog", "whale"] and items[0]["answer"] == 1
    lmms = first(data_root, "scienceqa_img", "lmms-eval")
    assert lmms["prompt"] == "Context: Look at  the picture.\nWhich is a mammal?\nA. frog\nB. whale" + MC


def test_scienceqa_takes_llava_question_file_verbatim(data_root: Path, tmp_path: Path) -> None:
    shutil.copytree(data_root / "scienceqa", tmp_path / "scienceqa")
    turn = "<image>\nContext: From the file.\nWhich is a mammal?\nA. frog\nB. whale"
    entry = {"id": "5", "image": "5/image.png", "conversations": [{"from": "human", "value": turn}]}
    (tmp_path / "scienceqa" / "llava_test_CQM-A.json").write_text(json.dumps([entry]))
    items = get_adapter("scienceqa_img").load(tmp_path / "scienceqa")
    assert items[0]["prompt"] == "Context: From the file.\nWhich is a mammal?\nA. frog\nB. whale" + MC
    assert (
        items[1]["prompt"] == "Which state is highlighted?\nA. Ohio\nB. Utah\nC. Iowa" + MC
    )  # not in the file


def test_ai2d_reads_parquet_shards_in_order(data_root: Path) -> None:
    items = load(data_root, "ai2d")
    assert [i["answer"] for i in items] == ["B", "A", "C"]  # "1", "0", "2"; the second shard last
    assert items[0]["prompt"] == "Which stage comes after the egg?\nA. adult\nB. larva\nC. pupa\nD. egg" + MC
    assert items[0]["context"] == " ".join(items[0]["prompt"].split())  # the release keeps the instruction
    assert items[2]["image"].load().getpixel((0, 0)) == (0, 0, 255)


def test_ai2d_and_realworldqa_read_a_jsonl_export_too(data_root: Path, tmp_path: Path) -> None:
    for n in range(2):
        Image.new("RGB", (8, 8), (n, 0, 0)).save(tmp_path / f"{n}.png")
    write_jsonl(
        tmp_path / "ai2d" / "test.jsonl",
        [{"id": "a", "question": "Q?", "options": ["x", "y"], "answer": "1", "image": "../0.png"}],
    )
    write_jsonl(
        tmp_path / "realworldqa" / "realworldqa.jsonl",
        [{"question": RWQA_ROWS[1]["question"], "answer": "3", "image": "../1.png"}],
    )
    (ai2d,) = get_adapter("ai2d").load(tmp_path / "ai2d")
    assert ai2d["id"] == "a" and ai2d["answer"] == "B" and ai2d["prompt"] == "Q?\nA. x\nB. y" + MC
    (rwqa,) = get_adapter("realworldqa").load(tmp_path / "realworldqa")
    assert rwqa["prompt"] == RWQA_ROWS[1]["question"] and rwqa["image"].load().getpixel((0, 0)) == (1, 0, 0)


def test_textvqa_uses_llava_ocr_prompts_and_falls_back_without_them(data_root: Path, tmp_path: Path) -> None:
    items = load(data_root, "textvqa")
    assert [i["id"] for i in items] == [
        "34602",
        "34603",
        "34604",
    ]  # annotation order, matched by image+question
    assert items[0]["prompt"] == "What brand is this?\nReference OCR token: NOKIA, Phone" + SHORT
    assert (
        items[0]["context"] == "What brand is this? Reference OCR token: NOKIA, Phone " + SHORT_ANSWER_SUFFIX
    )
    assert items[2]["prompt"] == "What does the sign say?\nReference OCR token: " + SHORT
    assert all(i["ocr_tokens"] for i in items) and len(items[0]["answers"]) == 10
    base = tmp_path / "textvqa"
    shutil.copytree(data_root / "textvqa", base)
    (base / "llava_textvqa_val_v051_ocr.jsonl").unlink()
    plain = get_adapter("textvqa").load(base)
    assert plain[0]["prompt"] == "What brand is this?" + SHORT and not plain[0]["ocr_tokens"]
    assert [i["prompt"] for i in load(data_root, "textvqa", protocol="lmms-eval")] == [
        i["prompt"] for i in plain
    ]


def test_mmvp_prompt_is_the_release_options_block(data_root: Path) -> None:
    items = load(data_root, "mmvp")
    assert [i["pair_id"] for i in items] == ["1", "1", "2", "2"]
    assert [i["answer"] for i in items] == ["A", "B", "B", "A"]
    question = "Are the butterfly's wings closer to being open or closed?"
    assert items[0]["prompt"] == f"{question} Options:\nA. Open\nB. Closed" + MC
    assert items[0]["context"] == f"{question} Options: A. Open B. Closed"
    assert first(data_root, "mmvp", "lmms-eval")["prompt"] == f"{question}\nA. Open\nB. Closed" + MC
    assert len(load(data_root, "mmvp", limit=1)) == 2  # limit counts pairs
    assert len(load(data_root, "mmvp", limit=2)) == len(load(data_root, "mmvp", limit=3)) == 4
    assert parse_options("(a) A red apple (b) Two green pears") == {
        "A": "A red apple",
        "B": "Two green pears",
    }
    assert release_options("(a) Yes(b) No") == "\nA. Yes\nB. No"


def test_realworldqa_keeps_question_and_its_instruction(data_root: Path) -> None:
    mc, short, word = load(data_root, "realworldqa")
    assert mc["prompt"] == RWQA_ROWS[0]["question"]
    assert mc["context"].endswith(
        "C. Right Please answer directly with only the letter of the correct option and nothing else."
    )
    assert mc["options"] == {"A": "Left", "B": "Straight", "C": "Right"} and mc["answer"] == "C"
    assert "options" not in short and short["answer"] == "3" and word["answer"] == "Wet"


def test_cvbench_uses_its_prompt_field_and_splits_by_source(data_root: Path) -> None:
    coco = load(data_root, "cvbench_coco")
    assert [(i["id"], i["task"], i["answer"]) for i in coco] == [("1", "Relation", "B"), ("2", "Count", "A")]
    assert coco[0]["prompt"] == CVBENCH_ROWS[1]["prompt"] + MC
    assert coco[0]["context"] == " ".join(CVBENCH_ROWS[1]["prompt"].split())  # instruction dropped
    (ade,) = load(data_root, "cvbench_ade20k")
    assert ade["options"] == {"A": "3", "B": "2", "C": "1", "D": "0"} and ade["answer"] == "C"
    depth, distance = load(data_root, "cvbench_omni3d")
    # the omni script deletes the options and the "Estimate ..." sentence, keeps the instruction
    instruction = " Answer with the option's letter from the given choices directly."
    assert (
        depth["context"]
        == "Which is closer to the camera, the lamp or the chair? Select from the following choices."
        + instruction
    )
    assert (
        distance["context"]
        == "Which is closer to the sofa, the table or the door? Select from the following choices."
        + instruction
    )
    lmms = first(data_root, "cvbench_coco", "lmms-eval")
    note = "Note: You only need to respond with A, B without providing any additional information.\n"
    assert lmms["prompt"] == f"{note}\n{CVBENCH_ROWS[1]['prompt']}"


def test_cvbench_reads_jsonl_with_img_folder(tmp_path: Path) -> None:
    for number, row in enumerate(CVBENCH_ROWS + CVBENCH_3D):
        (tmp_path / row["filename"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (number, 0, 0)).save(tmp_path / row["filename"])
    rows = [{k: v for k, v in row.items() if k != "image"} for row in CVBENCH_ROWS + CVBENCH_3D]
    write_jsonl(tmp_path / "test.jsonl", rows)  # the first release: one file
    coco = get_adapter("cvbench_coco").load(tmp_path)
    assert [i["id"] for i in coco] == ["1", "2"] and coco[1]["image"].load().getpixel((0, 0)) == (2, 0, 0)
    write_jsonl(tmp_path / "test_2d.jsonl", rows[:3])
    write_jsonl(tmp_path / "test_3d.jsonl", rows[3:])
    assert [i["id"] for i in get_adapter("cvbench_omni3d").load(tmp_path)] == ["3", "4"]


# --------------------------------------------------------------------------- errors and suites

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
    "cvbench_coco": "test_2d.parquet",
    "cvbench_ade20k": "test_2d.parquet",
    "cvbench_omni3d": "test_2d.parquet",
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
    (tmp_path / "data").mkdir()
    shutil.copy(data_root / "gqa" / "data" / "testdev_balanced_questions.json", tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"gqa: missing .*data/images/n161313\.jpg"):
        get_adapter("gqa").load(tmp_path)


def test_limit_protocol_and_name_errors(data_root: Path) -> None:
    with pytest.raises(ValueError, match="mmvp: limit must be None or >= 0, got -1"):
        load(data_root, "mmvp", limit=-1)
    assert load(data_root, "textvqa", limit=0) == []
    with pytest.raises(ValueError, match="protocol 'suite' does not read official files"):
        load(data_root, "gqa", protocol="suite")
    with pytest.raises(KeyError, match="unknown benchmark 'vqav2'.*mme, mmbench_en"):
        get_adapter("vqav2")
    with pytest.raises(KeyError, match="unknown protocol 'llava'"):
        collect_items("gqa", data_root=data_root, protocol="llava")
    with pytest.raises(ValueError, match="a suite's items carry their own prompt"):
        collect_items("gqa", suite=data_root, protocol="llava15")


def test_a_suite_limit_keeps_whole_scoring_units(tmp_path: Path) -> None:
    """--limit on a suite counts units, as on official files: an MMVP pair or an MME image's two
    questions are never cut in half (a half unit would be scored as a whole one)."""
    question = {"image": None, "prompt": "Q", "context": "Q"}
    options = {"A": "x", "B": "y"}
    mmvp = [{**question, "id": str(i), "pair_id": str((i + 1) // 2), "options": options, "answer": "A"}
            for i in range(1, 7)]  # fmt: skip
    mme = [{**question, "id": f"t/{k}/{j}", "image_id": f"t/{k}", "category": "existence", "answer": "Yes"}
           for k in range(3) for j in range(2)]  # fmt: skip
    gqa = [{**question, "id": f"g{i}", "answer": "red"} for i in range(5)]
    for name, items in (("mmvp", mmvp), ("mme", mme), ("gqa", gqa)):
        write_suite(tmp_path, name, items)
    cut = collect_items("mmvp,mme,gqa", suite=tmp_path, limit=2)
    assert [i["pair_id"] for i in cut["mmvp"]] == ["1", "1", "2", "2"]
    assert [i["image_id"] for i in cut["mme"]] == ["t/0", "t/0", "t/1", "t/1"]
    assert [i["id"] for i in cut["gqa"]] == ["g0", "g1"]
    assert collect_items("mme", suite=tmp_path, limit=0)["mme"] == []


def test_image_ref_is_lazy_and_returns_rgb(tmp_path: Path) -> None:
    ref = ImageRef(tmp_path / "later.png")  # nothing read yet
    with pytest.raises(FileNotFoundError, match="later.png"):
        ref.load()
    Image.new("L", (8, 8), 128).save(tmp_path / "later.png")
    assert ref.load().mode == "RGB" and ref.load().getpixel((0, 0)) == (128, 128, 128)
    assert ImageRef(image=Image.new("RGBA", (4, 4))).load().mode == "RGB"
    assert ImageRef(data=(tmp_path / "later.png").read_bytes()).load().getpixel((1, 1)) == (128, 128, 128)
    with pytest.raises(ValueError, match="exactly one of path, b64, data, image; got 2"):
        ImageRef(tmp_path / "x.png", b64="AAAA")


def test_suite_round_trip_keeps_fields_and_pixels(data_root: Path, tmp_path: Path) -> None:
    mmbench = load(data_root, "mmbench_en")[4:6]  # base64 images
    ai2d = load(data_root, "ai2d")  # parquet images, saved as PNG files
    gqa = load(data_root, "gqa")  # file images outside the suite
    extra = [{"id": "x", "image": None, "prompt": "p", "context": "c", "answer": "yes"}]
    write_suite(tmp_path, "mmbench_en", mmbench)
    write_suite(tmp_path, "ai2d", ai2d)
    write_suite(tmp_path, "gqa", gqa + extra)
    lines = [json.loads(line) for line in (tmp_path / "mmbench_en.jsonl").read_text().splitlines()]
    assert lines[0]["image"].startswith("images/mmbench_en/") and lines[0]["protocol"] == "llava15"
    suite = load_suite(tmp_path)
    assert sorted(suite) == ["ai2d", "gqa", "mmbench_en"]
    for original, loaded in zip(
        mmbench + ai2d + gqa, suite["mmbench_en"] + suite["ai2d"] + suite["gqa"][:3], strict=True
    ):
        assert {k: v for k, v in loaded.items() if k != "image"} == {
            k: v for k, v in original.items() if k != "image"
        }
        assert loaded["image"].load().getpixel((4, 4)) == original["image"].load().getpixel((4, 4))
    assert suite["gqa"][-1]["image"] is None
    assert len(read_suite_file(tmp_path / "gqa.jsonl")) == 4
    with pytest.raises(FileNotFoundError, match="suite directory not found"):
        load_suite(tmp_path / "nowhere")
