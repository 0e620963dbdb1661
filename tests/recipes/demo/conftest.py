"""Shared fixtures for the demo tests: one tiny conflict world per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-conversation world with 32-pixel images and a 2-unit suite (a few seconds)."""
    from covft.recipes.world import make_world

    out = tmp_path_factory.mktemp("world")
    make_world(out, size=60, seed=0, suite_size=2, image_size=32, progress=False)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tiny models gain nothing from two, and a busy machine punishes it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
