"""The Markdown sections of the demo's report: blind control, routing, mechanisms, starting point, spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from covft.eval.report import SUMMARY_KEYS, format_score
from covft.recipes.demo.figures import START_PANELS
from covft.recipes.demo.scores import HEALTHY_ROUTING

if TYPE_CHECKING:
    from covft.recipes.demo.starting_point import StartingPoint


def grounding_text(gains: Mapping[str, Mapping[str, Any]], noise: float) -> tuple[str, str]:
    """Markdown for the blind control and one sentence on whether any method uses the image."""
    lines = [
        "## Does each model look at the image? (blind control)\n",
        "The suite again with every scoring unit given another unit's images (same benchmark, fixed "
        "permutation; an MME image's two questions, MMBench's circular variants and an MMVP pair stay "
        "together). A model that answers from the question alone scores the same; the *image "
        "gain* (Avg minus shuffled Avg) is how much its answers rest on the image.\n",
        "| Method | Avg. | Avg., images shuffled | image gain |",
        "|---|---:|---:|---:|",
    ]
    for method, entry in gains.items():
        gain = format_score(entry["gain"]["mean"])
        if entry["gain"]["sd"] is not None:
            gain += f" ± {format_score(entry['gain']['sd'])}"
        lines.append(
            f"| {method} | {format_score(entry['Avg']['mean'])} | "
            f"{format_score(entry['Avg_shuffled']['mean'])} | {gain} |"
        )

    def floor(method: str) -> float:  # twice the larger of the sampling error and the seed sd
        return 2.0 * max(noise, gains[method]["gain"]["sd"] or 0.0)

    def gain(method: str) -> float:
        return gains[method]["gain"]["mean"]

    def what(method: str) -> str:
        return "the rough sampling error" if floor(method) == 2.0 * noise else "the gain's sd over seeds"

    clear = [m for m in gains if gain(m) >= floor(m)]  # each method against its own noise
    if not clear:
        best = max(gains, key=gain)
        sentence = (
            f"No method's answers rest on the image beyond the noise (largest image gain {gain(best):.2f}, "
            f"{best}; twice {what(best)} is {floor(best):.2f}): the models answer from "
            "question priors, so this run cannot test how the vision encoder should be tuned."
        )
    else:
        best = max(clear, key=gain)
        sentence = (
            f"The models use the image: image gain up to {gain(best):.2f} points ({best}), above twice "
            f"{what(best)} ({floor(best):.2f})."
        )
        if others := [f"{m} ({gain(m):.2f})" for m in clear if m != best]:
            sentence += f" Also above their own noise: {', '.join(others)}."
        if below := [m for m in gains if m not in clear]:
            sentence += f" Not above it: {', '.join(below)}."
    return "\n".join(lines) + "\n\n" + sentence + "\n", sentence


def routing_text(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Markdown lines for :func:`routing_summary`, flagging collapsed and unhealthy routers."""
    if not summary:
        return ""
    lines = [
        "## Routing at the end of stage 2 (last training batch, every seed)\n",
        "| method | block | entropy (nats), mean | per seed | lowest / log E | mean gate of the top expert |",
        "|---|---:|---:|---|---:|---:|",
    ]
    collapsed, unhealthy = [], []
    for method, blocks in summary.items():
        for block, entry in blocks.items():
            seeds = ", ".join(f"{v:.3f}" for v in entry["entropy_per_seed"])
            lines.append(
                f"| {method} | {block} | {entry['entropy']:.3f} | {seeds} | "
                f"{entry['lowest_share_of_max']:.0%} | {entry['top_expert_share']:.3f} |"
            )
            if entry["lowest_share_of_max"] < HEALTHY_ROUTING:
                unhealthy.append(f"{method} block {block}")
            if entry["entropy"] < 0.05 * entry["max_entropy"] and entry["top_expert_share"] > 0.95:
                collapsed.append(f"{method} block {block}")
    if unhealthy:
        lines.append(f"\nBelow {HEALTHY_ROUTING:.0%} of log E in some seed: {', '.join(unhealthy)}.")
    else:
        lines.append(f"\nEvery routed block keeps at least {HEALTHY_ROUTING:.0%} of log E in every seed.")
    if collapsed:
        lines.append(
            f"Routing collapsed (near-zero entropy, one expert holds over {0.95:.0%} of the gate mass) in: "
            f"{', '.join(collapsed)}. There the experts are not context-dependent and CoVFT behaves like "
            "fine-tuning one MLP copy."
        )
    return "\n".join(lines) + "\n"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _mean_sd_text(entry: Mapping[str, float | None], digits: int = 3) -> str:
    text = _number(entry["mean"], digits)
    return text + (f" ± {_number(entry['sd'], digits)}" if entry.get("sd") is not None else "")


def _mechanism_row(name: str, entry: Mapping[str, Any]) -> tuple[str, str]:
    """(paper, here) cells of one mechanism."""
    if entry["verdict"] == "not measured":
        return "", f"not measured: {entry['reason']}"
    if name == "conflict":
        by_block = ", ".join(_number(v) for v in entry["param_l2_by_block"])
        sums = entry["param_l2_sum_by_step"]
        return entry["paper"], (
            f"parameter L2 by block {by_block}; Spearman with depth {_number(entry['depth_spearman'], 2)}; "
            f"sum over blocks {' -> '.join(_number(v) for v in sums)} at steps {entry['steps']} "
            f"({entry['images']} image pairs, {entry['tasks']['a']} vs {entry['tasks']['b']})"
        )
    if name == "gradients":
        paper = entry["paper"]
        summary = entry["summary"]
        return (
            f"full {paper['full']['mean']} (sd {paper['full']['sd']}) -> CoVFT {paper['covft']['mean']} "
            f"(sd {paper['covft']['sd']})",
            f"full {_mean_sd_text(summary['full']['mean'])} (sd {_mean_sd_text(summary['full']['sd'])}) -> "
            f"CoVFT {_mean_sd_text(summary['covft']['mean'])} (sd {_mean_sd_text(summary['covft']['sd'])}); "
            "mean ± sd over seeds of each run's statistics",
        )
    if name == "clusters":
        first = next(iter(entry["per_seed"].values()))
        return entry["paper"], (
            f"NMI {_mean_sd_text(entry['nmi'])}, purity {_mean_sd_text(entry['purity'])} "
            f"(k-means k={entry['k']}, {first['samples']} training samples, {first['families']} task families)"
        )
    seeds = entry["per_seed"].values()
    gate_sd = statistics.fmean(v["gate_sd"] for v in seeds)
    shares = [v["between_family_share"] for v in seeds if v.get("between_family_share") is not None]
    share = f", {statistics.fmean(shares):.0%} of it between task families" if shares else ""
    return f"r = {entry['paper']['pearson_r']}", (
        f"r = {_mean_sd_text(entry['pearson_r'])} (gate sd across samples {gate_sd:.3f}{share})"
    )


MECHANISM_TITLES = {
    "conflict": "(i) Fig. 1c: preference conflict grows with depth",
    "gradients": "(ii) supp. Fig. A: gradient cosine to the dominant direction",
    "clusters": "(iii) Fig. 3a: context-vector clusters follow the task",
    "routing": "(iv) Fig. 3b: routing similarity vs context similarity",
}


def mechanisms_text(found: Mapping[str, Any]) -> str:
    """Markdown for the mechanisms section: paper vs here, the verdict and its rule, CPU seconds."""
    if not found:
        return ""
    lines = [
        "## The paper's mechanisms, measured on this world and these models\n",
        "| mechanism | paper (LLaVA-1.5-7B, 665K) | here | verdict |",
        "|---|---|---|---|",
    ]
    for name, title in MECHANISM_TITLES.items():
        if name in found:
            paper, here = _mechanism_row(name, found[name])
            lines.append(f"| {title} | {paper} | {here} | **{found[name]['verdict']}** |")
    lines.append("\nRules (fixed before measuring, covft.analysis.mechanisms):\n")
    for name in MECHANISM_TITLES:
        if name in found:
            seconds = found[name].get("seconds", {})
            cost = f" (measured in {seconds['cpu']:.0f} CPU s)" if seconds else ""
            lines.append(f"- {MECHANISM_TITLES[name].split(':')[0]}: {found[name]['rule']}{cost}.")
    lines.append("\n![mechanisms](mechanisms/mechanisms.png)\n")
    return "\n".join(lines) + "\n"


def starting_point_text(start: StartingPoint) -> str:
    """One paragraph: where the starting point came from and what each of its stages reached."""
    made = "shipped with covft, hash-verified" if start.shipped else "trained here by the recipe"
    parts = [
        f"Starting point ({made}; recipe {start.key}): tower, projector and LM every method starts from."
    ]
    stage0 = start.summary.get("stage0", {})
    if stage0:
        parts.append(
            f"Stage 0 (contrastive tower): loss {stage0.get('loss_first', float('nan')):.3f} -> "
            f"{stage0.get('loss_last', float('nan')):.3f} over {stage0['config']['steps']} steps, image-to-"
            f"caption top-1 on {stage0.get('held_out_pairs')} held-out pairs "
            f"{stage0.get('retrieval_top1_before', 0):.1f}% -> {stage0.get('retrieval_top1_after', 0):.1f}%."
        )
    for stage in ("lm", "stage1a", "stage1b"):
        entry = start.summary.get(stage)
        if entry and entry.get("curve"):
            curve = entry["curve"]
            parts.append(
                f"{START_PANELS[stage].capitalize()}: {entry['steps']} steps, loss {curve[0]:.3f} -> {curve[-1]:.3f}."
            )
    return " ".join(parts)


def spread_table(summaries: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """G / K / V / Avg as mean ± sd over seeds, plus every seed's Avg."""
    lines = ["| Method | G. | K. | V. | Avg. | Avg. per seed |", "|---|---:|---:|---:|---:|---|"]
    for method, summary in summaries.items():
        cells = []
        for key in SUMMARY_KEYS:
            entry = summary[key]
            text = format_score(entry["mean"])
            if entry["sd"] is not None:
                text += f" ± {format_score(entry['sd'])}"
            cells.append(text)
        seeds = ", ".join(format_score(v) for v in summary["Avg"]["per_seed"])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n"
