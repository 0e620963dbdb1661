"""The numbers of the demo's report: means and spread over seeds, sampling error, verdicts, routing.

Pure functions of the suite's scores (and of the stage-2 training logs for routing); the report
(:mod:`covft.recipes.demo.report`) writes them as ``results.json`` and Markdown.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from covft.eval.generate import UNIT_KEYS
from covft.eval.report import MME_SUBTASKS, SUMMARY_KEYS, mme_subtasks_in, scaled, summarize
from covft.train.logging import read_log

if TYPE_CHECKING:
    from covft.recipes.demo.layout import DemoRun


def mean_scores(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """Per-benchmark mean over seeds (raw scores, MME unscaled)."""
    names = sorted({n for scores in per_seed.values() for n in scores})
    return {n: statistics.fmean(s[n] for s in per_seed.values() if n in s) for n in names}


def spread(values: list[float]) -> float | None:
    """Sample standard deviation, or None with fewer than two values."""
    return statistics.stdev(values) if len(values) > 1 else None


def scoring_units(items: Mapping[str, list[dict]]) -> dict[str, int]:
    """Independent scoring units per benchmark (MME images, MMBench questions, MMVP pairs, items)."""
    units = {}
    for name, rows in items.items():
        key = UNIT_KEYS.get(name)
        units[name] = len({str(row[key]) for row in rows}) if key else len(rows)
    return units


def rough_standard_error(scores: Mapping[str, float], items: Mapping[str, list[dict]]) -> float:
    """A rough sampling standard error of Avg: binomial per benchmark, independent benchmarks.

    Each benchmark's score on the averaging scale (100 at most; MME / (2 x its subtasks in
    ``items``)) is treated as a proportion measured on its independent units. It says how far
    apart two methods must be before the suite's size, alone, stops explaining the gap.
    """
    units = scoring_units(items)
    subtasks = mme_subtasks_in(items.get("mme", ()))
    variance = 0.0
    for name, value in scores.items():
        p = min(max(scaled(name, value, subtasks) / 100.0, 0.0), 1.0)
        variance += (100.0 * math.sqrt(p * (1 - p) / max(units[name], 1))) ** 2
    return math.sqrt(variance) / max(len(scores), 1)


def verdict(summaries: Mapping[str, Mapping[str, Any]], noise: float) -> str:
    """One paragraph comparing CoVFT's Avg with the best other method; says what the numbers say."""
    if "covft" not in summaries or len(summaries) < 2:
        ranking = sorted(summaries, key=lambda m: summaries[m]["Avg"]["mean"], reverse=True)
        return f"Ranking by Avg: {', '.join(ranking)} (CoVFT was not among the methods compared)."
    others = {m: s for m, s in summaries.items() if m != "covft"}
    best = max(others, key=lambda m: others[m]["Avg"]["mean"])
    ours, theirs = summaries["covft"]["Avg"]["mean"], others[best]["Avg"]["mean"]
    gap = ours - theirs
    sds = [summaries[m]["Avg"]["sd"] for m in ("covft", best) if summaries[m]["Avg"]["sd"] is not None]
    seed_note = f"; seed spread (sd) up to {max(sds):.2f}" if sds else "; one seed, so no seed spread"
    head = (
        f"CoVFT Avg {ours:.2f} vs the best other method, {best}, {theirs:.2f}: "
        f"gap {gap:+.2f} points (rough sampling error of one Avg: {noise:.2f}{seed_note})."
    )
    floor = max([2.0 * noise, *(2.0 * sd for sd in sds)])
    if gap <= 0:
        return head + " **CoVFT does not beat the baselines in this setting.**"
    if gap < floor:
        return head + " CoVFT is ahead, but by less than the noise: **no reliable difference.**"
    return head + " **CoVFT is ahead by more than the noise estimate in this setting.**"


def image_gains(
    scores: Mapping[int, Mapping[str, Mapping[str, float]]],
    shuffled: Mapping[int, Mapping[str, Mapping[str, float]]],
    methods: list[str],
    mme_subtasks: int = MME_SUBTASKS,
) -> dict[str, dict[str, Any]]:
    """Per method: Avg on the suite, Avg with the images shuffled, and their difference (the
    *image gain*), each as mean over seeds with sd and per-seed values (MME over ``mme_subtasks``)."""
    gains: dict[str, dict[str, Any]] = {}
    for method in methods:
        real = [summarize(scores[seed][method], mme_subtasks)["Avg"] for seed in sorted(scores)]
        blind = [summarize(shuffled[seed][method], mme_subtasks)["Avg"] for seed in sorted(scores)]
        diff = [r - b for r, b in zip(real, blind, strict=True)]
        gains[method] = {
            key: {"mean": statistics.fmean(v), "sd": spread(v), "per_seed": v}
            for key, v in (("Avg", real), ("Avg_shuffled", blind), ("gain", diff))
        }
    return gains


def group_summaries(
    scores: Mapping[int, Mapping[str, Mapping[str, float]]],
    methods: list[str],
    mme_subtasks: int = MME_SUBTASKS,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and key (G/K/V/Avg): mean over seeds, sd, and the per-seed values (MME averaged
    as raw / (2 x ``mme_subtasks``))."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        per_seed = [summarize(scores[seed][method], mme_subtasks) for seed in sorted(scores)]
        result[method] = {}
        for key in SUMMARY_KEYS:
            values = [s[key] for s in per_seed if s[key] is not None]
            result[method][key] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": spread(values),
                "per_seed": values,
            }
    return result


HEALTHY_ROUTING = 0.25
"""A CoMoE block routes healthily when its entropy at the end of stage 2 is at least this share of log E."""


def routing_summary(run: DemoRun) -> dict[str, dict[str, dict[str, Any]]]:
    """Per routed method and block, over seeds: the routing entropy of the last training batch
    (mean, per seed, and the lowest share of log E) and the mean gate of the top expert.

    A dense softmax router can collapse (every sample sent to one expert); this shows whether it did.
    """
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for method in run.methods:
        lasts = [read_log(run.stage2_dir(seed, method)) for seed in range(run.seeds)]
        lasts = [records[-1] for records in lasts if records]
        if not lasts or not any(k.startswith("routing/") for k in lasts[0]):
            continue
        blocks = sorted({k.split("/")[1] for k in lasts[0] if k.startswith("routing/")}, key=_block_order)
        summary[method] = {}
        for block in blocks:
            entropies = [float(last[f"routing/{block}/entropy"]) for last in lasts]
            top = [
                max(float(v) for k, v in last.items() if k.startswith(f"routing/{block}/expert"))
                for last in lasts
            ]
            maximum = float(lasts[0][f"routing/{block}/max_entropy"])
            summary[method][block] = {
                "entropy": statistics.fmean(entropies),
                "entropy_per_seed": entropies,
                "max_entropy": maximum,
                "lowest_share_of_max": min(entropies) / maximum,
                "top_expert_share": statistics.fmean(top),
            }
    return summary


def _block_order(block: str) -> tuple[int, str]:
    return (int(block), "") if block.isdigit() else (10**6, block)
