"""The gradient conflict analysis (paper supp. Fig. A) as a run: train every strategy, record, measure.

The recorders and the statistic (:func:`covft.analysis.gradients.cosine_to_dominant`) are in
:mod:`covft.analysis.gradients`; this driver trains each strategy on the same data and schedule
through :class:`~covft.recipes.analyses.runs.RunSettings` and writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from covft.analysis import plots
from covft.analysis.gradients import PAPER_GRADIENT_COSINE, DeferredGradientRecorder, cosine_to_dominant
from covft.recipes.analyses.runs import RUNS_FOLDER, RunSettings, remove_if_empty
from covft.utils import write_json_atomic


def run_gradients(
    out_dir: Any,
    *,
    data: str,
    image_folder: str | None = None,
    strategies: Sequence[str] = ("full", "covft"),
    steps: int = 50,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    config: str | None = None,
    overrides: Sequence[str] = (),
    projection: str = "auto",
    sketch_dim: int = 4096,
    sketch_seed: int = 0,
    max_exact_mb: float = 2048.0,
    center: bool = False,
    keep_runs: bool = False,
) -> dict[str, Any]:
    """Train every strategy on the same data and schedule; return the cosine statistics per strategy."""
    out = Path(out_dir)
    settings = RunSettings(config, overrides, steps, batch_size, lr, seed, image_folder, keep_runs)
    settings.check(strategies)
    results: dict[str, Any] = {}
    for strategy in strategies:
        deferred = DeferredGradientRecorder(projection, sketch_dim, sketch_seed, steps, max_exact_mb)
        settings.train(strategy, data, out / RUNS_FOLDER / strategy, [deferred])
        recorder = deferred.recorder
        assert recorder is not None
        cosines, mean, std = cosine_to_dominant(recorder.matrix(), center=center)
        results[strategy] = {
            "steps": recorder.steps,
            "cosine": cosines.tolist(),
            "mean": mean,
            "std": std,
            "loss": recorder.losses,
            "num_parameters": recorder.num_parameters,
            "projection": recorder.projection,
            "sketch_dim": sketch_dim if recorder.projection != "none" else None,
        }
    remove_if_empty(out / RUNS_FOLDER)
    return {
        "analysis": "gradients",
        "data": str(data),
        "total_steps": steps,
        "center": center,
        "strategies": results,
        "paper": {
            "source": "CoVFT supp. Fig. A, LLaVA-1.5-7B on the 665K mix (reference only)",
            **PAPER_GRADIENT_COSINE,
        },
        "definition": "cos(g_t, u), u = first principal component of stacked per-step vision gradients "
        f"({'centred' if center else 'uncentred'}), sign-aligned with their mean",
    }


def write_gradients(result: dict[str, Any], out: Path) -> None:
    """``gradients.json`` and the two figures (histogram, per step) into ``out``."""
    write_json_atomic(out / "gradients.json", result)
    plots.plot_gradient_histogram(result, out / "gradients_hist.png")
    plots.plot_gradient_steps(result, out / "gradients_steps.png")
