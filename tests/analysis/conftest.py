"""Fixtures for the analysis tests: one tiny conflict world and tiny-model training overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from covft.recipes.world import make_world

TINY = [
    "model=tiny-test",
    "model_options.vision_layers=3",
    "model_options.text_encoder=random-tiny",
    "model_options.llm_layers=1",
    "train.precision=fp32",
    "train.warmup_ratio=0.0",
    "train.progress_bar=false",
    "data.num_workers=0",
]
"""Recipe overrides for seconds-long runs: 3 vision blocks (2 feed the LLM, CoMoE in block 1), 1 LLM layer."""


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-sample conflict world (32-pixel images): train.json, captions.json, annotations."""
    root = tmp_path_factory.mktemp("world")
    make_world(root, size=40, seed=0, suite_size=1, image_size=32, progress=False)
    return root
