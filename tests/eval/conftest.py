"""Tiny copies of every benchmark in its official distribution format, laid out as LLaVA-1.5's
``playground/data/eval`` (docs/benchmarks.md): the files, columns and quirks of the real releases.

- MME: both folder layouts of ``MME_Benchmark_release_version``, a cognition task to ignore, and
  a question with two spaces before "Please answer yes or no.".
- MMBench: TSVs holding the CircularEval copies (row ``i + k * 1e6``), a "nan" hint, a missing
  option D, and (VLMEvalKit style) copies whose image cell is the index of the original row.
- GQA: ``gqa/data/`` (questions JSON and images) plus LLaVA's question JSONL.
- ScienceQA: ``problems.json``, ``pid_splits.json``, ``images/test/<pid>/image.png``, a text-only
  and a train problem to skip, a hint with a double space.
- AI2D: ``lmms-lab/ai2d``'s two parquet shards (``answer`` an index string).
- TextVQA: ``TextVQA_0.5.1_val.json`` (10 answers each), ``train_images/`` and LLaVA's OCR JSONL.
- MMVP: ``Questions.csv`` with the release's ``lndex`` header and ``MMVP Images/``.
- RealWorldQA: a ``data/test-00000-of-00001.parquet`` shard.
- CV-Bench: ``test_2d.parquet`` + ``test_3d.parquet`` with the ``prompt`` field and ``source``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
LLAVA_EVAL = Path("playground") / "data" / "eval"


def save_image(path: Path, index: int = 0) -> Path:
    """An 8x8 single-colour image, format chosen by the suffix (JPEG or PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), COLORS[index % len(COLORS)]).save(path)
    return path


def png_bytes(index: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), COLORS[index % len(COLORS)]).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_parquet(path: Path, rows: list[dict]) -> None:
    """A Hugging Face style parquet file: ``image`` as the ``{bytes, path}`` struct ``datasets`` writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [
            {**row, "image": {"bytes": png_bytes(row["image"]), "path": f"{n}.png"}}
            for n, row in enumerate(rows)
        ]
    )
    pq.write_table(table, path)


# --------------------------------------------------------------------------- MME

MME_FOLDER_TASKS = ("artwork", "celebrity", "landmark", "posters", "scene")  # images/ + questions_answers_YN/
MME_FLAT_TASKS = ("existence", "count", "position", "color", "OCR")  # image and txt side by side
TWO_SPACES = "Is there a red color 0 in the image?  Please answer yes or no."


def build_mme(root: Path) -> None:
    data = root / "MME" / "MME_Benchmark_release_version"
    for number, task in enumerate((*MME_FOLDER_TASKS, *MME_FLAT_TASKS, "code_reasoning")):
        stems = ["0001", "0002"] if task == "existence" else [f"{task}_1"]
        for k, stem in enumerate(stems):
            first = (
                TWO_SPACES
                if task == "color"
                else f"Is there a {task} {k} in this image? Please answer yes or no."
            )
            lines = f"{first}\tYes\nIs there no {task} {k} in this image? Please answer yes or no.\tNo\n"
            if task in MME_FOLDER_TASKS:
                save_image(data / task / "images" / f"{stem}.jpg", number)
                txt = data / task / "questions_answers_YN" / f"{stem}.txt"
            else:
                save_image(data / task / f"{stem}.png", number)
                txt = data / task / f"{stem}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(lines, encoding="utf-8")


# --------------------------------------------------------------------------- MMBench

MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source"]
#: (index, question, hint, options, answer letter, category, reference image by index in copies)
MMBENCH_QUESTIONS = (
    (
        0,
        "What animal is shown?",
        "A photo from a farm.",
        ["cat", "dog", "cow", "horse"],
        "C",
        "object",
        False,
    ),
    (1, "Is it day or night?", "nan", ["day", "night"], "B", "scene", False),
    (2, "What colour is it?", "", ["red", "green", "blue"], "A", "attribute", True),
)


def mmbench_rows(question: str | None = None) -> list[list[str]]:
    """Every row of the fixture TSV: each question, then its CircularEval copies (options shifted)."""
    rows = []
    for index, text, hint, options, answer, category, by_reference in MMBENCH_QUESTIONS:
        n = len(options)
        for k in range(n):
            shifted = options[k:] + options[:k]
            letter = "ABCD"[(("ABCD".index(answer)) - k) % n]
            image = str(index) if by_reference and k else base64.b64encode(png_bytes(index)).decode()
            cells = [*shifted, *[""] * (4 - n)]
            rows.append(
                [str(index + k * 1_000_000), question or text, hint, *cells, letter, category, image, "src"]
            )
    return rows


def build_mmbench(root: Path) -> None:
    for folder, filename, question in (
        ("mmbench", "mmbench_dev_20230712.tsv", None),
        ("mmbench_cn", "mmbench_dev_cn_20231003.tsv", "图中是什么？"),
    ):
        path = root / folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(MMBENCH_COLUMNS)
            writer.writerows(mmbench_rows(question))


# --------------------------------------------------------------------------- GQA

GQA_QUESTIONS = {
    "201307251": {"imageId": "n161313", "question": "Is it overcast?", "answer": "no", "fullAnswer": "No."},
    "201640614": {"imageId": "n235859", "question": "Who is wearing the dress?", "answer": "woman"},
    "202225914": {"imageId": "n161313", "question": "What is the animal?", "answer": "dog"},
}


def build_gqa(root: Path) -> None:
    data = root / "gqa" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "testdev_balanced_questions.json").write_text(json.dumps(GQA_QUESTIONS), encoding="utf-8")
    save_image(data / "images" / "n161313.jpg", 0)
    save_image(data / "images" / "n235859.jpg", 1)
    llava_order = ["202225914", "201307251", "201640614"]  # LLaVA's file has its own order
    write_jsonl(
        root / "gqa" / "llava_gqa_testdev_balanced.jsonl",
        [
            {"question_id": qid, "image": f"{GQA_QUESTIONS[qid]['imageId']}.jpg", "category": "default",
             "text": f"{GQA_QUESTIONS[qid]['question']}\nAnswer the question using a single word or phrase."}
            for qid in llava_order
        ],
    )  # fmt: skip


# --------------------------------------------------------------------------- ScienceQA

SQA_PROBLEMS = {
    "5": {"question": "Which is a mammal?", "choices": ["frog", "whale"], "answer": 1,
          "hint": "Look at  the picture.", "image": "image.png", "split": "test"},
    "6": {"question": "Which word is a noun?", "choices": ["run", "table", "blue"], "answer": 1,
          "hint": "", "image": None, "split": "test"},
    "7": {"question": "Which state is highlighted?", "choices": ["Ohio", "Utah", "Iowa"], "answer": 2,
          "hint": "", "image": "image.png", "split": "test"},
    "8": {"question": "Train problem?", "choices": ["x", "y"], "answer": 0,
          "hint": "", "image": "image.png", "split": "train"},
    "9": {"question": "Which is a gas?", "choices": ["ice", "steam", "rock", "wood"], "answer": 1,
          "hint": "", "image": "image.png", "split": "test"},
}  # fmt: skip


def build_scienceqa(root: Path) -> None:
    base = root / "scienceqa"
    base.mkdir(parents=True, exist_ok=True)
    (base / "problems.json").write_text(json.dumps(SQA_PROBLEMS), encoding="utf-8")
    (base / "pid_splits.json").write_text(json.dumps({"train": ["8"], "test": ["5", "6", "7", "9"]}))
    for pid in ("5", "7", "9"):
        save_image(base / "images" / "test" / pid / "image.png", int(pid))


# --------------------------------------------------------------------------- AI2D

AI2D_ROWS = [
    {"question": "Which stage comes after the egg?", "options": ["adult", "larva", "pupa", "egg"], "answer": "1",
     "image": 0},
    {"question": "What does the sun provide?", "options": ["energy", "water", "soil", "air"], "answer": "0",
     "image": 1},
    {"question": "Which is a producer?", "options": ["hawk", "snake", "grass", "mouse"], "answer": "2", "image": 2},
]  # fmt: skip


def build_ai2d(root: Path) -> None:
    write_parquet(root / "ai2d" / "data" / "test-00000-of-00002.parquet", AI2D_ROWS[:2])
    write_parquet(root / "ai2d" / "data" / "test-00001-of-00002.parquet", AI2D_ROWS[2:])


# --------------------------------------------------------------------------- TextVQA

TEXTVQA_DATA = [
    {"question": "what brand is this?", "question_id": 34602, "image_id": "0054c91397f2fe05",
     "answers": ["nokia"] * 8 + ["toshiba", "nokia phone"]},
    {"question": "what number is on the shirt?", "question_id": 34603, "image_id": "005635e119b9f32f",
     "answers": ["10", "10", "ten", "10", "10.", "10", "10", "10", "10", "10"]},
    {"question": "what does the sign say?", "question_id": 34604, "image_id": "0054c91397f2fe05",
     "answers": ["stop"] * 2 + ["halt"] * 8},
]  # fmt: skip
TEXTVQA_OCR = {34602: "NOKIA, Phone", 34603: "10", 34604: ""}


def build_textvqa(root: Path) -> None:
    base = root / "textvqa"
    base.mkdir(parents=True, exist_ok=True)
    (base / "TextVQA_0.5.1_val.json").write_text(
        json.dumps({"dataset_name": "textvqa", "dataset_type": "val", "data": TEXTVQA_DATA})
    )
    save_image(base / "train_images" / "0054c91397f2fe05.jpg", 0)
    save_image(base / "train_images" / "005635e119b9f32f.jpg", 1)
    write_jsonl(
        base / "llava_textvqa_val_v051_ocr.jsonl",
        [
            {"question_id": e["image_id"], "image": f"{e['image_id']}.jpg", "category": "default",
             "text": f"{e['question'].capitalize()}\nReference OCR token: {TEXTVQA_OCR[e['question_id']]}\n"
                     "Answer the question using a single word or phrase."}
            for e in reversed(TEXTVQA_DATA)
        ],
    )  # fmt: skip


# --------------------------------------------------------------------------- MMVP

MMVP_ROWS = [
    ["1", "Are the butterfly's wings closer to being open or closed?", "(a) Open (b) Closed", "(a)"],
    ["2", "Are the butterfly's wings closer to being open or closed?", "(a) Open (b) Closed", "(b)"],
    ["3", "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(b)"],
    ["4", "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(a)"],
]


def build_mmvp(root: Path) -> None:
    base = root / "MMVP"
    base.mkdir(parents=True, exist_ok=True)
    with (base / "Questions.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lndex", "Question", "Options", "Correct Answer"])
        writer.writerows(MMVP_ROWS)
    for index in range(1, 5):
        save_image(base / "MMVP Images" / f"{index}.jpg", index)


# --------------------------------------------------------------------------- RealWorldQA

RWQA_ROWS = [
    {"question": "In which direction is the front wheel of the car on the right side facing?\n"
                 "A. Left\nB. Straight\nC. Right\n"
                 "Please answer directly with only the letter of the correct option and nothing else.",
     "answer": "C", "image": 0},
    {"question": "How many lanes are there?\nPlease answer directly with a single word or number.",
     "answer": "3", "image": 1},
    {"question": "Is the road wet or dry?\nPlease answer directly with a single word or number.",
     "answer": "Wet", "image": 2},
]  # fmt: skip


def build_realworldqa(root: Path) -> None:
    write_parquet(root / "realworldqa" / "data" / "test-00000-of-00001.parquet", RWQA_ROWS)


# --------------------------------------------------------------------------- CV-Bench

CHOOSE = " Select from the following choices."
CVBENCH_ROWS = [
    {"idx": 0, "type": "2D", "task": "Count", "source": "ADE20K", "choices": ["3", "2", "1", "0"],
     "answer": "(C)", "question": "How many organs are in the image?", "filename": "img/2D/count/ade20k_10.png",
     "prompt": "How many organs are in the image?" + CHOOSE + "\n(A) 3\n(B) 2\n(C) 1\n(D) 0", "image": 0},
    {"idx": 1, "type": "2D", "task": "Relation", "source": "COCO", "choices": ["left", "right"],
     "answer": "(B)", "question": "Is the cup to the left or right of the plate?",
     "filename": "img/2D/relation/coco_5.png",
     "prompt": "Is the cup to the left or right of the plate?" + CHOOSE + "\n(A) left\n(B) right", "image": 1},
    {"idx": 2, "type": "2D", "task": "Count", "source": "COCO", "choices": ["1", "2", "3"], "answer": "(A)",
     "question": "How many cars are in the image?", "filename": "img/2D/count/coco_7.png",
     "prompt": "How many cars are in the image?" + CHOOSE + "\n(A) 1\n(B) 2\n(C) 3", "image": 2},
]  # fmt: skip
CVBENCH_3D = [
    {"idx": 3, "type": "3D", "task": "Depth", "source": "Omni3D", "choices": ["lamp", "chair"], "answer": "(A)",
     "question": "Which is closer to the camera, the lamp or the chair?", "filename": "img/3D/depth/omni3d_1.png",
     "prompt": "Which is closer to the camera, the lamp or the chair?" + CHOOSE + "\n(A) lamp\n(B) chair",
     "image": 3},
    {"idx": 4, "type": "3D", "task": "Distance", "source": "Omni3D", "choices": ["table", "door"],
     "answer": "(B)", "question": "Which is closer to the sofa, the table or the door?",
     "filename": "img/3D/distance/omni3d_2.png",
     "prompt": "Estimate the real-world distances between objects in this image. Which is closer to the sofa, "
               "the table or the door?" + CHOOSE + "\n(A) table\n(B) door", "image": 4},
]  # fmt: skip


def build_cvbench(root: Path) -> None:
    write_parquet(root / "cvbench" / "test_2d.parquet", CVBENCH_ROWS)
    write_parquet(root / "cvbench" / "test_3d.parquet", CVBENCH_3D)


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
def llava_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``playground/data/eval`` with every benchmark's official-format fixture."""
    base = tmp_path_factory.mktemp("llava")
    for build in BUILDERS:
        build(base / LLAVA_EVAL)
    return base


@pytest.fixture(scope="session")
def data_root(llava_tree: Path) -> Path:
    """The data root (LLaVA's ``playground/data/eval``) of the fixtures."""
    return llava_tree / LLAVA_EVAL
