"""Fixtures for recipe tests: a tiny LLaVA-format dataset on disk and fast tiny-test configs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from covft.train.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_processes(
    *args: str, accelerate_config: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in 2 CPU processes from the repository root: ``torchrun``, or ``accelerate
    launch`` with ``accelerate_config``; one thread per process."""
    if accelerate_config is None:
        launcher = ["torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    else:
        launcher = ["accelerate.commands.launch", "--config_file", str(accelerate_config)]
        launcher += ["--num_processes", "2", "--main_process_port", str(free_port())]
    paths = os.pathsep.join([str(REPO), str(REPO / "src")])
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=paths, **(env or {}))
    command = [sys.executable, "-m", *launcher, *args]
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)
