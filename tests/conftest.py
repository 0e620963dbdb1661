"""Shared fixtures: tiny LLaVA-format samples and tiny models."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def benchmark_script():
    """Loads ``benchmarks/<name>.py`` as a module (the scripts are not a package), once per name."""

    def load(name: str):
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses in a script look their module up here
            spec.loader.exec_module(module)
        return sys.modules[name]

    return load


def make_samples() -> list[dict]:
    """An image sample, a text-only sample and a multi-turn sample with a non-square image."""
    return [
        {
            "id": "img",
            "image": Image.new("RGB", (40, 30), (200, 10, 10)),
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is the square?"},
                {"from": "gpt", "value": "red"},
            ],
        },
        {
            "id": "text",
            "image": None,
            "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}],
        },
        {
            "id": "multi",
            "image": Image.new("RGB", (30, 40), (10, 10, 200)),
            "conversations": [
                {"from": "human", "value": "What is it?\n<image>"},
                {"from": "gpt", "value": "blue"},
                {"from": "human", "value": "Are you sure?"},
                {"from": "gpt", "value": "yes"},
            ],
        },
    ]


@pytest.fixture
def samples() -> list[dict]:
    return make_samples()


def moved_trainable(model, seed: int = 1):
    """``model`` in eval mode with every trainable weight moved by seeded noise, so that a save or
    load that drops or mixes up trained weights cannot pass unnoticed."""
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    return model
