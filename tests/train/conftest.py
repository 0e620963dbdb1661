"""Fixtures for recipe tests: a tiny LLaVA-format dataset on disk and fast tiny-test configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from covft.train.config import TrainConfig, load_config

COLOURS = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (220, 220, 20)]
NAMES = ["red", "green", "blue", "yellow"]


def write_images(folder: Path) -> list[str]:
    """Four tiny PNGs (one non-square, to exercise the pad-to-square path)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, colour in enumerate(COLOURS):
        name = f"img{index}.png"
        size = (24, 16) if index == 0 else (16, 16)
        Image.new("RGB", size, colour).save(folder / name)
        files.append(name)
    return files


def caption_records(files: list[str]) -> list[dict[str, Any]]:
    """Stage-1 style captions: the human turn is just ``<image>``."""
    return [
        {
            "id": f"cap{i}",
            "image": file,
            "conversations": [
                {"from": "human", "value": "<image>"},
                {"from": "gpt", "value": f"a {NAMES[i]} square"},
            ],
        }
        for i, file in enumerate(files)
    ]


def instruction_records(files: list[str]) -> list[dict[str, Any]]:
    """Stage-2 style: image questions, a multi-turn sample and text-only samples."""
    records: list[dict[str, Any]] = [
        {
            "id": f"vqa{i}",
            "image": file,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is it?"},
                {"from": "gpt", "value": NAMES[i]},
            ],
        }
        for i, file in enumerate(files[:3])
    ]
    records.append(
        {
            "id": "multi",
            "image": files[3],
            "conversations": [
                {"from": "human", "value": "Describe the picture.\n<image>"},
                {"from": "gpt", "value": "a yellow square"},
                {"from": "human", "value": "Is it round?"},
                {"from": "gpt", "value": "no"},
            ],
        }
    )
    records.append(
        {
            "id": "text0",
            "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}],
        }
    )
    records.append(
        {
            "id": "text1",
            "conversations": [{"from": "human", "value": "Count to 3"}, {"from": "gpt", "value": "1 2 3"}],
        }
    )
    return records


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"images", "captions", "instructions"}``: the tiny dataset written once per session."""
    root = tmp_path_factory.mktemp("tiny_llava")
    files = write_images(root / "images")
    (root / "captions.json").write_text(json.dumps(caption_records(files)))
    with open(root / "instructions.jsonl", "w") as handle:
        for record in instruction_records(files):
            handle.write(json.dumps(record) + "\n")
    return {
        "images": root / "images",
        "captions": root / "captions.json",
        "instructions": root / "instructions.jsonl",
    }


def tiny_overrides(data: dict[str, Path], output_dir: Path, *, stage: int = 2, steps: int = 6) -> list[str]:
    """Overrides that make any config a seconds-long tiny-test run."""
    train_file = data["captions"] if stage == 1 else data["instructions"]
    return [
        "model=tiny-test",
        "model_options.vision_layers=2",
        "init_from=null",
        f"stage={stage}",
        f"data.train={train_file}",
        f"data.image_folder={data['images']}",
        f"output_dir={output_dir}",
        f"train.max_steps={steps}",
        "train.batch_size=3",
        "train.precision=fp32",
        "train.gradient_checkpointing=false",
        "train.warmup_ratio=0.0",
        "train.save_steps=0",
        "train.report_to=none",
        "train.progress_bar=false",
        "data.num_workers=0",
        "data.check_images=true",
        "data.max_length=null",
    ]


def tiny_config(
    data: dict[str, Path],
    output_dir: Path,
    *extra: str,
    stage: int = 2,
    steps: int = 6,
    base: str | None = None,
) -> TrainConfig:
    """A validated tiny-test config, from a shipped YAML (``base``) or the schema defaults."""
    if base is None:
        base = "stage1" if stage == 1 else "stage2_covft"
    return load_config(base, [*tiny_overrides(data, output_dir, stage=stage, steps=steps), *extra])
