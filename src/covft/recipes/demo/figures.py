"""The demo report's figures besides the group bars: the per-benchmark heatmap and the training curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from covft.eval.report import COLUMN_TITLES, MME_SUBTASKS, ORDER, scaled
from covft.train.logging import read_log

if TYPE_CHECKING:
    from covft.recipes.demo.layout import DemoRun
    from covft.recipes.demo.starting_point import StartingPoint


def heatmap(rows: Mapping[str, Mapping[str, float]], path: Path, mme_subtasks: int = MME_SUBTASKS) -> Path:
    """Methods x benchmarks, on the averaging scale (MME / (2 x ``mme_subtasks``)), annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rows)
    names = [n for n in ORDER if any(n in rows[m] for m in methods)]
    grid = [
        [scaled(n, rows[m][n], mme_subtasks) if n in rows[m] else float("nan") for n in names]
        for m in methods
    ]
    figure, axis = plt.subplots(figsize=(1.0 + 0.8 * len(names), 1.2 + 0.5 * len(methods)))
    image = axis.imshow(grid, cmap="viridis", aspect="auto", vmin=0, vmax=100)
    axis.set_xticks(range(len(names)), [COLUMN_TITLES[n] for n in names], rotation=45, ha="right")
    axis.set_yticks(range(len(methods)), methods)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                colour = "white" if value < 60 else "black"
                axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, label=f"score (MME/{2 * mme_subtasks})")
    axis.set_title("Held-out suite, per benchmark (mean over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    smoothed, last = [], None
    for value in values:
        last = value if last is None else weight * last + (1 - weight) * value
        smoothed.append(last)
    return smoothed


START_PANELS = {
    "stage0": "stage 0: contrastive (InfoNCE)",
    "lm": "LM: described scenes (text)",
    "stage1a": "stage 1a: projector, dense captions",
    "stage1b": "stage 1b: projector + LM, dense captions",
}


def training_curves(run: DemoRun, start: StartingPoint, path: Path) -> Path:
    """The starting point's loss curves (binned, as recorded with it) and the stage-2 loss per
    method (seed 0), smoothed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [stage for stage in START_PANELS if start.summary.get(stage, {}).get("curve")]
    count = len(shown) + 1
    figure, grid = plt.subplots(1, count, figsize=(4.7 * count, 3.8), squeeze=False)
    axes = list(grid[0])
    panels = [
        (axes[i], START_PANELS[stage], {stage: start.summary[stage]["curve"]})
        for i, stage in enumerate(shown)
    ]
    panels.append(
        (
            axes[-1],
            "stage 2: instruction tuning",
            {m: [r["loss"] for r in read_log(run.stage2_dir(0, m)) if "loss" in r] for m in run.methods},
        )
    )
    for axis, title, curves in panels:
        for label, losses in curves.items():
            if losses:
                steps = range(1, len(losses) + 1)
                line = axis.plot(steps, _smooth(losses), label=label)[0]
                axis.plot(steps, losses, alpha=0.2, color=line.get_color(), linewidth=0.8)
        axis.set_title(title)
        axis.set_xlabel("optimizer step" if axis is axes[-1] else "training progress (bins)")
        axis.set_ylabel("loss")
        axis.legend(fontsize=8)
    figure.suptitle("Training curves (starting point: binned; stage 2: seed 0; bold: moving average)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
