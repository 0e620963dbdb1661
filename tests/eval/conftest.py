"""Tiny fixtures of every benchmark in its official on-disk format (docs/benchmarks.md).

Each builder writes a handful of items with 8x8 images under one data root, using the folder
names the adapters' ``subdir`` expects, so ``get_adapter(name).load(root / adapter.subdir)``
reads them exactly as it would read the real downloads.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def save_image(path: Path, index: int = 0) -> Path:
    """An 8x8 single-colour image, format chosen by the suffix (JPEG or PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), COLORS[index % len(COLORS)]).save(path)
    return path


def png_base64(index: int = 0) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), COLORS[index % len(COLORS)]).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


MME_FOLDER_TASKS = ("artwork", "celebrity", "landmark", "posters", "scene")  # images/ + questions_answers_YN/
MME_FLAT_TASKS = ("existence", "count", "position", "color", "OCR")  # image and txt side by side


def build_mme(root: Path) -> None:
    data = root / "MME" / "MME_Benchmark_release_version" / "MME_Benchmark"
    for number, task in enumerate(MME_FOLDER_TASKS + MME_FLAT_TASKS):
        stems = ["0001", "0002"] if task == "existence" else [f"{task}_1"]
        for k, stem in enumerate(stems):
            lines = (
                f"Is there a {task} {k} in this image? Please answer yes or no.\tYes\n"
                f"Is there no {task} {k} in this image? Please answer yes or no.\tNo\n"
            )
            if task in MME_FOLDER_TASKS:
                save_image(data / task / "images" / f"{stem}.jpg", number)
                txt = data / task / "questions_answers_YN" / f"{stem}.txt"
            else:
                save_image(data / task / f"{stem}.png", number)
                txt = data / task / f"{stem}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(lines, encoding="utf-8")


MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source"]


def build_mmbench(root: Path) -> None:
    rows = [
        ["10", "What animal is shown?", "A photo from a farm.", "cat", "dog", "cow", "horse", "C",
         "object_localization", png_base64(0), "src"],
        ["11", "Is it day or night?", "nan", "day", "night", "nan", "nan", "B", "scene", png_base64(1), "src"],
        ["12", "What colour is it?", "", "red", "green", "blue", "", "A", "attribute", "10", "src"],
    ]  # fmt: skip
    for filename, language in (("mmbench_dev_20230712.tsv", "en"), ("mmbench_dev_cn_20231003.tsv", "cn")):
        path = root / "mmbench" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(MMBENCH_COLUMNS)
            for row in rows:
                writer.writerow(row if language == "en" else [row[0], "图中是什么动物？", *row[2:]])


def build_gqa(root: Path) -> None:
    questions = {
        "201307251": {
            "imageId": "n161313",
            "question": "Is it overcast?",
            "answer": "no",
            "fullAnswer": "No.",
        },
        "201640614": {"imageId": "n235859", "question": "Who is wearing the dress?", "answer": "woman"},
        "202225914": {"imageId": "n161313", "question": "What is the animal?", "answer": "the dog"},
    }
    path = root / "gqa" / "testdev_balanced_questions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(questions), encoding="utf-8")
    save_image(root / "gqa" / "images" / "n161313.jpg", 0)
    save_image(root / "gqa" / "images" / "n235859.jpg", 1)


def build_scienceqa(root: Path) -> None:
    base = root / "scienceqa"
    problems = {
        "5": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1,
              "hint": "Look at the picture.", "image": "image.png", "split": "test"},
        "6": {"question": "Which word is a noun?", "choices": ["run", "table", "blue"], "answer": 1,
              "hint": "", "image": None, "split": "test"},
        "7": {"question": "Which state is highlighted?", "choices": ["Ohio", "Utah", "Iowa"], "answer": 2,
              "hint": "", "image": "image.png", "split": "test"},
        "8": {"question": "Train problem?", "choices": ["x", "y"], "answer": 0,
              "hint": "", "image": "image.png", "split": "train"},
    }  # fmt: skip
    base.mkdir(parents=True, exist_ok=True)
    (base / "problems.json").write_text(json.dumps(problems), encoding="utf-8")
    (base / "pid_splits.json").write_text(json.dumps({"train": ["8"], "test": ["5", "6", "7"]}))
    save_image(base / "test" / "5" / "image.png", 2)
    save_image(base / "test" / "7" / "image.png", 3)


def build_ai2d(root: Path) -> None:
    save_image(root / "ai2d" / "images" / "4.png", 0)
    save_image(root / "ai2d" / "images" / "9.png", 1)
    write_jsonl(
        root / "ai2d" / "test.jsonl",
        [
            {"question": "Which stage comes after the egg?", "options": ["adult", "larva", "pupa", "egg"],
             "answer": "1", "image": "images/4.png"},
            {"id": "ai2d-9", "question": "What does the sun provide?", "options": ["energy", "water"],
             "answer": 0, "image": "images/9.png"},
        ],
    )  # fmt: skip


def build_textvqa(root: Path) -> None:
    data = [
        {"question": "what brand is this?", "question_id": 34602, "image_id": "0054c91397f2fe05",
         "answers": ["nokia"] * 8 + ["toshiba", "nokia phone"]},
        {"question": "what number is on the shirt?", "question_id": 34603, "image_id": "005635e119b9f32f",
         "answers": ["5", "5", "five", "5", "05", "5", "5", "5", "5", "5"]},
    ]  # fmt: skip
    path = root / "textvqa" / "TextVQA_0.5.1_val.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset_name": "textvqa", "dataset_type": "val", "data": data}))
    save_image(root / "textvqa" / "train_images" / "0054c91397f2fe05.jpg", 0)
    save_image(root / "textvqa" / "train_images" / "005635e119b9f32f.jpg", 1)


def build_mmvp(root: Path) -> None:
    base = root / "MMVP"
    base.mkdir(parents=True, exist_ok=True)
    rows = [
        ["1", "Are the butterfly's wings closer to being open or closed?", "(a) Open (b) Closed", "(a)"],
        ["2", "Are the butterfly's wings closer to being open or closed?", "(a) Open (b) Closed", "(b)"],
        ["3", "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(b)"],
        ["4", "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(a)"],
    ]
    with (base / "Questions.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lndex", "Question", "Options", "Correct Answer"])
        writer.writerows(rows)
    for index in range(1, 5):
        save_image(base / "MMVP Images" / f"{index}.jpg", index)


def build_realworldqa(root: Path) -> None:
    base = root / "realworldqa"
    save_image(base / "images" / "0.png", 0)
    save_image(base / "images" / "1.png", 1)
    write_jsonl(
        base / "realworldqa.jsonl",
        [
            {"question": "In which direction is the front wheel of the car on the right side facing?\n"
                         "A. Left\nB. Straight\nC. Right\n"
                         "Please answer directly with only the letter of the correct option and nothing else.",
             "answer": "C", "image": "images/0.png"},
            {"question": "How many lanes are there?\nPlease answer directly with a single word or number.",
             "answer": "3", "image": "images/1.png"},
        ],
    )  # fmt: skip


def build_cvbench(root: Path) -> None:
    base = root / "cvbench"
    records = [
        {"idx": 0, "type": "2D", "task": "Count", "filename": "img/2D/count/ade20k_10.png",
         "question": "How many organs are in the image?", "choices": ["3", "2", "1", "0"], "answer": "(C)",
         "source": "ADE20K"},
        {"idx": 1, "type": "2D", "task": "Relation", "filename": "img/2D/relation/coco_5.png",
         "question": "Is the cup to the left or right of the plate?", "choices": ["left", "right"],
         "answer": "(B)", "source": "COCO"},
        {"idx": 2, "type": "2D", "task": "Count", "filename": "img/2D/count/coco_7.png",
         "question": "How many cars are in the image?", "choices": ["1", "2", "3"], "answer": "(A)",
         "source": "COCO"},
        {"idx": 3, "type": "3D", "task": "Depth", "filename": "img/3D/depth/omni3d_1.png",
         "question": "Which is closer to the camera, the lamp or the chair?", "choices": ["lamp", "chair"],
         "answer": "(A)", "source": "Omni3D"},
    ]  # fmt: skip
    for number, record in enumerate(records):
        save_image(base / record["filename"], number)
    write_jsonl(base / "test_2d.jsonl", records[:3])
    write_jsonl(base / "test_3d.jsonl", records[3:])


BUILDERS = (
    build_mme,
    build_mmbench,
    build_gqa,
    build_scienceqa,
    build_ai2d,
    build_textvqa,
    build_mmvp,
    build_realworldqa,
    build_cvbench,
)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding every benchmark's tiny official-format fixture."""
    root = tmp_path_factory.mktemp("benchmarks")
    for build in BUILDERS:
        build(root)
    return root
