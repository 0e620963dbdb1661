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

import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covft.eval.generate import UNIT_KEYS
from covft.eval.report import (
    COLUMN_TITLES,
    ORDER,
    SUMMARY_KEYS,
    bar_chart,
    format_score,
    markdown_table,
    scaled,
    summarize,
)

if TYPE_CHECKING:
    from covft.recipes.demo.pipeline import DemoRun, StartingPoint

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOTS = ("groups.png", "benchmarks.png", "curves.png")


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

    Each benchmark's score on the averaging scale is treated as a proportion of its maximum
    (100; MME/20: 10 per subtask) measured on its independent units. It says how far apart two
    methods must be before the suite's size, alone, stops explaining the gap.
    """
    units = scoring_units(items)
    variance = 0.0
    for name, value in scores.items():
        top = 100.0
        if name == "mme":
            top = 10.0 * len({row["category"] for row in items[name]})
        p = min(max(scaled(name, value) / top, 0.0), 1.0)
        variance += (top * math.sqrt(p * (1 - p) / max(units[name], 1))) ** 2
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
) -> dict[str, dict[str, Any]]:
    """Per method: Avg on the suite, Avg with the images shuffled, and their difference (the
    *image gain*), each as mean over seeds with sd and per-seed values."""
    gains: dict[str, dict[str, Any]] = {}
    for method in methods:
        real = [summarize(scores[seed][method])["Avg"] for seed in sorted(scores)]
        blind = [summarize(shuffled[seed][method])["Avg"] for seed in sorted(scores)]
        diff = [r - b for r, b in zip(real, blind, strict=True)]
        gains[method] = {
            key: {"mean": statistics.fmean(v), "sd": spread(v), "per_seed": v}
            for key, v in (("Avg", real), ("Avg_shuffled", blind), ("gain", diff))
        }
    return gains


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
    best = max(gains, key=lambda m: gains[m]["gain"]["mean"])
    top = gains[best]["gain"]["mean"]
    seed_sd = gains[best]["gain"]["sd"]
    floor = 2.0 * max(noise, seed_sd or 0.0)
    what = "the rough sampling error" if floor == 2.0 * noise else "the gain's sd over seeds"
    if top < floor:
        sentence = (
            f"No method's answers rest on the image beyond the noise (largest image gain {top:.2f}, "
            f"{best}; twice {what} is {floor:.2f}): the models answer from "
            "question priors, so this run cannot test how the vision encoder should be tuned."
        )
    else:
        sentence = (
            f"The models use the image: image gain up to {top:.2f} points ({best}), above twice "
            f"{what} ({floor:.2f})."
        )
    return "\n".join(lines) + "\n\n" + sentence + "\n", sentence


def group_summaries(
    scores: Mapping[int, Mapping[str, Mapping[str, float]]], methods: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and key (G/K/V/Avg): mean over seeds, sd, and the per-seed values."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        per_seed = [summarize(scores[seed][method]) for seed in sorted(scores)]
        result[method] = {}
        for key in SUMMARY_KEYS:
            values = [s[key] for s in per_seed if s[key] is not None]
            result[method][key] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": spread(values),
                "per_seed": values,
            }
    return result


# --------------------------------------------------------------------------- plots


def heatmap(rows: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Methods x benchmarks, on the averaging scale (MME/20), annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rows)
    names = [n for n in ORDER if any(n in rows[m] for m in methods)]
    grid = [[scaled(n, rows[m][n]) if n in rows[m] else float("nan") for n in names] for m in methods]
    figure, axis = plt.subplots(figsize=(1.0 + 0.8 * len(names), 1.2 + 0.5 * len(methods)))
    image = axis.imshow(grid, cmap="viridis", aspect="auto", vmin=0, vmax=100)
    axis.set_xticks(range(len(names)), [COLUMN_TITLES[n] for n in names], rotation=45, ha="right")
    axis.set_yticks(range(len(methods)), methods)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                colour = "white" if value < 60 else "black"
                axis.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axis, label="score (MME/20)")
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

    from covft.train.logging import read_log

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


# --------------------------------------------------------------------------- report


HEALTHY_ROUTING = 0.25
"""A CoMoE block routes healthily when its entropy at the end of stage 2 is at least this share of log E."""


def routing_summary(run: DemoRun) -> dict[str, dict[str, dict[str, Any]]]:
    """Per routed method and block, over seeds: the routing entropy of the last training batch
    (mean, per seed, and the lowest share of log E) and the mean gate of the top expert.

    A dense softmax router can collapse (every sample sent to one expert); this shows whether it did.
    """
    from covft.train.logging import read_log

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


def _timings(run: DemoRun) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of the last time each stage ran (and of the last whole demo call)."""
    from covft.recipes.demo.pipeline import read_stage_log

    seconds: dict[str, dict[str, float]] = {}
    for entry in read_stage_log(run.out):
        if entry["action"] in ("ran", "total"):
            seconds[entry["stage"]] = {
                "wall": entry["seconds"],
                "cpu": entry.get("cpu_seconds", float("nan")),
            }
    return seconds


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
    ``mechanisms``: the paper's mechanisms (:func:`covft.recipes.demo.pipeline.mechanisms`).
    """
    found = {k: v for k, v in (mechanisms or {}).items() if k != "key"}
    methods = list(run.methods)
    means = {m: mean_scores({seed: scores[seed][m] for seed in scores}) for m in methods}
    summaries = group_summaries(scores, methods)
    noise = statistics.fmean(rough_standard_error(means[m], items) for m in methods)
    conclusion = verdict(summaries, noise)
    gains = image_gains(scores, shuffled, methods) if shuffled else {}
    grounding, grounding_sentence = grounding_text(gains, noise) if gains else ("", "")
    if grounding_sentence:
        conclusion += " " + grounding_sentence
    table = markdown_table(means)
    s = run.settings
    timings = _timings(run)
    routing = routing_summary(run)

    bar_chart(means, run.out / "groups.png")
    heatmap(means, run.out / "benchmarks.png")
    training_curves(run, start, run.out / "curves.png")

    results = {
        "preset": run.preset,
        "methods": methods,
        "seeds": sorted(scores),
        "settings": s.to_dict(),
        "starting_point": {
            "path": str(start.path),
            "recipe_key": start.key,
            "shipped": start.shipped,
            "summary": {k: v for k, v in start.summary.items() if k in START_PANELS},
        },
        "scores": {str(seed): dict(scores[seed]) for seed in scores},
        "mean_scores": means,
        "summary": summaries,
        "rough_standard_error_avg": noise,
        "image_gain": gains,
        "scores_images_shuffled": {str(seed): dict(shuffled[seed]) for seed in shuffled} if shuffled else {},
        "verdict": conclusion,
        "suite_units": scoring_units(items),
        "seconds": timings,
        "routing": routing,
        "mechanisms": found,
    }
    (run.out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    units = scoring_units(items)
    lines = [
        f"# CoVFT demo ({run.preset} preset)\n",
        f"World: {s.world_size} training conversations, seed {s.world_seed}, {s.image_size}px; held-out "
        f"suite of 12 benchmarks ({sum(len(v) for v in items.values())} items, "
        f"{sum(units.values())} scoring units). Seeds: {', '.join(map(str, sorted(scores)))}.",
        f"Stage 2, identical for every method: {s.stage2_steps} steps x {s.stage2_batch_size} (one lr "
        f"{s.stage2_lr:g} for all parts, {s.lr_scheduler}, warmup {s.warmup_ratio:g}), every method and "
        "seed from the same starting point.",
        starting_point_text(start) + "\n",
        "## Held-out suite (paper layout; mean over seeds; MME raw, averaged as MME/20)\n",
        table,
        "## Spread over seeds\n",
        spread_table(summaries),
        f"Rough sampling standard error of one Avg (binomial per benchmark, suite size only): "
        f"{noise:.2f} points.\n",
        grounding,
        "## Verdict\n",
        conclusion + "\n",
        routing_text(routing),
        mechanisms_text(found),
        "## Plots\n",
        "![groups](groups.png)\n\n![benchmarks](benchmarks.png)\n\n![curves](curves.png)\n",
        "## Time per stage (when it last ran; `demo` is the last call, reused stages included)\n",
        "| stage | wall seconds | CPU seconds |\n|---|---:|---:|\n"
        + "".join(f"| {k} | {v['wall']:.1f} | {v['cpu']:.1f} |\n" for k, v in timings.items()),
    ]
    (run.out / REPORT_FILE).write_text("\n".join(lines), encoding="utf-8")
    print(table)
    print(spread_table(summaries))
    print(conclusion)
    return results
