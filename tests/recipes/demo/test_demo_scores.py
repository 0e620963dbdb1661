"""The demo's numbers average the suite's MME over its own subtasks (MME / (2 x subtasks))."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from covft.recipes.demo.figures import heatmap
from covft.recipes.demo.scores import group_summaries, image_gains, rough_standard_error

# A 5-subtask MME (max 1000) and two other benchmarks, one item each per unit.
ITEMS = {
    "mme": [
        {"category": f"task{c}", "image_id": f"{c}-{i}"} for c in range(5) for i in range(4) for _ in range(2)
    ],
    "gqa": [{"id": str(i)} for i in range(20)],
    "mmvp": [{"pair_id": str(i // 2)} for i in range(40)],
}
GOLD = {"mme": 1000.0, "gqa": 100.0, "mmvp": 100.0}


def test_gold_scores_summarise_to_100_with_the_suites_mme() -> None:
    scores = {0: {"freeze": GOLD}, 1: {"freeze": GOLD}}
    summary = group_summaries(scores, ["freeze"], 5)["freeze"]
    assert [summary[key]["mean"] for key in ("G", "K", "V", "Avg")] == [100.0, None, 100.0, 100.0]
    assert group_summaries(scores, ["freeze"])["freeze"]["G"]["mean"] == 75.0  # MME/20: (50 + 100) / 2
    gains = image_gains(scores, {s: {"freeze": {**GOLD, "mme": 500.0}} for s in scores}, ["freeze"], 5)
    assert gains["freeze"]["gain"]["mean"] == pytest.approx(50.0 / 3)


def test_rough_standard_error_treats_mme_on_0_to_100() -> None:
    half = {"mme": 500.0, "gqa": 50.0, "mmvp": 50.0}
    # each benchmark at p = 0.5 on its units: 20 MME images, 20 GQA items, 20 MMVP pairs
    expected = math.sqrt(3 * (100 * math.sqrt(0.25 / 20)) ** 2) / 3
    assert rough_standard_error(half, ITEMS) == pytest.approx(expected)


def test_heatmap_scales_mme_by_its_subtasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    texts: list[str] = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "text",
        lambda self, x, y, s, **kw: texts.append(s) or original(self, x, y, s, **kw),
    )
    path = heatmap({"freeze": GOLD}, tmp_path / "benchmarks.png", 5)
    assert texts == ["100.0", "100.0", "100.0"]
    with Image.open(path) as image:
        assert image.format == "PNG"
