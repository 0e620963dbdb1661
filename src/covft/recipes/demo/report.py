"""The demo's report: the paper's table, spread over seeds, a plain verdict and the plots.

Writes into the demo folder:

- ``report.md``: settings, the starting point's summary, the 12-benchmark table (mean over seeds, the paper's
  layout), G / K / V / Avg with the spread over seeds, a rough sampling error of Avg, and a
  verdict computed from the numbers (CoVFT vs the best other method), whatever it says;
- ``results.json``: every score of every seed and method, means, spreads, timings;
- ``groups.png`` (G/K/V/Avg bars), ``benchmarks.png`` (per-benchmark heatmap),
  ``curves.png`` (the starting point's stages: stage-0 contrastive loss, LM, stage 1a/1b; stage-2
  loss per method).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from covft.eval.report import bar_chart, markdown_table, mme_subtasks_in
from covft.recipes.demo.figures import START_PANELS, heatmap, training_curves
from covft.recipes.demo.layout import DemoRun, read_stage_log
from covft.recipes.demo.scores import (
    group_summaries,
    image_gains,
    mean_scores,
    rough_standard_error,
    routing_summary,
    scoring_units,
    verdict,
)
from covft.recipes.demo.sections import (
    grounding_text,
    mechanisms_text,
    routing_text,
    spread_table,
    starting_point_text,
)
from covft.recipes.demo.starting_point import StartingPoint
from covft.utils import write_json_atomic, write_text_atomic

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOTS = ("groups.png", "benchmarks.png", "curves.png")


def _timings(run: DemoRun) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of the last time each stage ran (and of the last whole demo call)."""
    seconds: dict[str, dict[str, float]] = {}
    for entry in read_stage_log(run.out):
        if entry["action"] in ("ran", "total"):
            seconds[entry["stage"]] = {
                "wall": entry["seconds"],
                "cpu": entry.get("cpu_seconds", float("nan")),
            }
    return seconds


def write_report(
    run: DemoRun,
    start: StartingPoint,
    scores: Mapping[int, Mapping[str, Mapping[str, float]]],
    items: Mapping[str, list[dict]],
    shuffled: Mapping[int, Mapping[str, Mapping[str, float]]] | None = None,
    mechanisms: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.md, results.json and the PNGs; print the table; return the results.

    ``shuffled``: the blind control's scores (same layout as ``scores``), reported as image gains.
    ``mechanisms``: the paper's mechanisms (:func:`covft.recipes.demo.mechanisms.mechanisms`).
    """
    found = {k: v for k, v in (mechanisms or {}).items() if k != "key"}
    methods = list(run.methods)
    means = {m: mean_scores({seed: scores[seed][m] for seed in scores}) for m in methods}
    subtasks = mme_subtasks_in(items.get("mme", ()))
    summaries = group_summaries(scores, methods, subtasks)
    noise = statistics.fmean(rough_standard_error(means[m], items) for m in methods)
    conclusion = verdict(summaries, noise)
    gains = image_gains(scores, shuffled, methods, subtasks) if shuffled else {}
    grounding, grounding_sentence = grounding_text(gains, noise) if gains else ("", "")
    if grounding_sentence:
        conclusion += " " + grounding_sentence
    timings = _timings(run)
    routing = routing_summary(run)

    bar_chart(means, run.out / "groups.png", subtasks)
    heatmap(means, run.out / "benchmarks.png", subtasks)
    training_curves(run, start, run.out / "curves.png")

    results = {
        "preset": run.preset,
        "methods": methods,
        "seeds": sorted(scores),
        "settings": run.settings.to_dict(),
        "starting_point": {
            "path": str(start.path),
            "recipe_key": start.key,
            "shipped": start.shipped,
            "summary": {k: v for k, v in start.summary.items() if k in START_PANELS},
        },
        "scores": {str(seed): dict(scores[seed]) for seed in scores},
        "mean_scores": means,
        "summary": summaries,
        "mme_subtasks": subtasks,
        "rough_standard_error_avg": noise,
        "image_gain": gains,
        "scores_images_shuffled": {str(seed): dict(shuffled[seed]) for seed in shuffled} if shuffled else {},
        "verdict": conclusion,
        "suite_units": scoring_units(items),
        "seconds": timings,
        "routing": routing,
        "mechanisms": found,
    }
    write_json_atomic(run.out / RESULTS_FILE, results)
    table = markdown_table(means, subtasks)
    sections = {"table": table, "grounding": grounding, "verdict": conclusion, "routing": routing_text(routing),
                "mechanisms": mechanisms_text(found), "spread": spread_table(summaries)}  # fmt: skip
    write_text_atomic(run.out / REPORT_FILE, _markdown(run, start, scores, items, noise, timings, sections))
    print(table)
    print(sections["spread"])
    print(conclusion)
    return results


def _markdown(
    run: DemoRun,
    start: StartingPoint,
    scores: Mapping[int, Any],
    items: Mapping[str, list[dict]],
    noise: float,
    timings: Mapping[str, Mapping[str, float]],
    sections: Mapping[str, str],
) -> str:
    """``report.md``: settings, the starting point, the table, spread, blind control, verdict, plots."""
    s = run.settings
    units = scoring_units(items)
    mme_scale = 2 * mme_subtasks_in(items.get("mme", ()))
    lines = [
        f"# CoVFT demo ({run.preset} preset)\n",
        f"World: {s.world_size} training conversations, seed {s.world_seed}, {s.image_size}px; held-out "
        f"suite of 12 benchmarks ({sum(len(v) for v in items.values())} items, "
        f"{sum(units.values())} scoring units). Seeds: {', '.join(map(str, sorted(scores)))}.",
        f"Stage 2, identical for every method: {s.stage2_steps} steps x {s.stage2_batch_size} (one lr "
        f"{s.stage2_lr:g} for all parts, {s.lr_scheduler}, warmup {s.warmup_ratio:g}), every method and "
        "seed from the same starting point.",
        starting_point_text(start) + "\n",
        f"## Held-out suite (paper layout; mean over seeds; MME raw, averaged as MME/{mme_scale})\n",
        sections["table"],
        "## Spread over seeds\n",
        sections["spread"],
        f"Rough sampling standard error of one Avg (binomial per benchmark, suite size only): "
        f"{noise:.2f} points.\n",
        sections["grounding"],
        "## Verdict\n",
        sections["verdict"] + "\n",
        sections["routing"],
        sections["mechanisms"],
        "## Plots\n",
        "![groups](groups.png)\n\n![benchmarks](benchmarks.png)\n\n![curves](curves.png)\n",
        "## Time per stage (when it last ran; `demo` is the last call, reused stages included)\n",
        "| stage | wall seconds | CPU seconds |\n|---|---:|---:|\n"
        + "".join(f"| {k} | {v['wall']:.1f} | {v['cpu']:.1f} |\n" for k, v in timings.items()),
    ]
    return "\n".join(lines)
