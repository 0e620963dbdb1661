"""Shared fixtures: tiny LLaVA-format samples and tiny models."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)


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
