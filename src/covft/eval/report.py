"""The paper's summary: Cambrian-1 groups, MME scaled to 0-100, a markdown table and a bar chart.

``summarize`` follows method.md section 4: MME-Perception (10 subtasks, max 2000) is divided by 20
before averaging; an MME with another number of subtasks (a suite's) by 2 x its subtasks, so that
it too averages on 0-100. A group mean is the mean of its benchmarks present, and ``Avg`` is the
mean of all benchmark scores present (not of the group means). Benchmarks without a score are
listed under ``"missing"`` and ``"covers"`` says which benchmarks each mean was taken over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

GROUPS: dict[str, tuple[str, ...]] = {
    "General": ("mme", "mmbench_en", "mmbench_cn", "gqa"),
    "Knowledge & OCR": ("scienceqa_img", "ai2d", "textvqa"),
    "Vision-centric": ("mmvp", "realworldqa", "cvbench_coco", "cvbench_ade20k", "cvbench_omni3d"),
}
#: Summary key of each group, as in the paper's "Mean (%)" columns.
GROUP_KEYS: dict[str, str] = {"General": "G", "Knowledge & OCR": "K", "Vision-centric": "V"}
#: Column headers of the paper's per-task tables (supp. Tables F-I).
COLUMN_TITLES: dict[str, str] = {
    "mme": "MME^P",
    "mmbench_en": "MMB^en",
    "mmbench_cn": "MMB^cn",
    "gqa": "GQA",
    "scienceqa_img": "SQA^I",
    "ai2d": "AI2D",
    "textvqa": "TextVQA",
    "mmvp": "MMVP",
    "realworldqa": "RWQA",
    "cvbench_coco": "COCO",
    "cvbench_ade20k": "ADE",
    "cvbench_omni3d": "Omni3D",
}
ORDER: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)
#: MME-Perception's subtasks: each scores 0-200 (acc + acc+), so the paper's MME/20 is MME/(2 x 10).
MME_SUBTASKS = 10
MME_SCALE = 2.0 * MME_SUBTASKS
SUMMARY_KEYS = ("G", "K", "V", "Avg")


def scaled(name: str, value: float, mme_subtasks: int = MME_SUBTASKS) -> float:
    """A benchmark score on the 0-100 scale used for averaging: MME divided by 2 x its subtasks
    (the paper's MME/20 for MME-Perception's 10), every other benchmark as it is."""
    if name != "mme":
        return value
    if mme_subtasks < 1:
        raise ValueError(f"mme_subtasks must be at least 1, got {mme_subtasks}")
    return value / (2.0 * mme_subtasks)


def mme_subtasks_in(items: Iterable[Mapping]) -> int:
    """The number of MME subtasks (distinct ``category`` values) among ``items``; 10 if none."""
    return len({str(item["category"]) for item in items}) or MME_SUBTASKS


def _count(counts: int | Mapping[str, int], run: str) -> int:
    return counts if isinstance(counts, int) else counts.get(run, MME_SUBTASKS)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(scores: Mapping[str, float | None], mme_subtasks: int = MME_SUBTASKS) -> dict:
    """Group means and the overall average of one run's benchmark scores.

    ``scores`` maps benchmark names to scores as :func:`covft.eval.score` reports them (MME
    raw); ``mme_subtasks``: how many MME subtasks were scored (MME averages as raw / (2 x that)).
    Returns the raw per-benchmark scores (None when missing), ``"G"``, ``"K"``, ``"V"``,
    ``"Avg"`` (None when no benchmark of theirs is present), ``"missing"`` (benchmarks without a
    score), ``"covers"`` (for each mean, the benchmarks it averages) and ``"mme_subtasks"``.
    """
    unknown = sorted(set(scores) - set(ORDER))
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {', '.join(ORDER)}")
    present = {name: float(v) for name, v in scores.items() if v is not None}
    summary: dict = {name: present.get(name) for name in ORDER}
    covers: dict[str, list[str]] = {}
    for group, names in GROUPS.items():
        key = GROUP_KEYS[group]
        covers[key] = [n for n in names if n in present]
        summary[key] = _mean([scaled(n, present[n], mme_subtasks) for n in covers[key]])
    covers["Avg"] = [n for n in ORDER if n in present]
    summary["Avg"] = _mean([scaled(n, present[n], mme_subtasks) for n in covers["Avg"]])
    summary["missing"] = [n for n in ORDER if n not in present]
    summary["covers"] = covers
    summary["mme_subtasks"] = mme_subtasks
    return summary


def format_score(value: float | None, decimals: int = 2) -> str:
    """A score as the paper prints it: rounded half up (``66.835`` -> ``"66.84"``), "–" if missing.

    Means of two-decimal scores often land exactly on a half; binary floats store ``66.835`` as
    ``66.83499...``, which plain formatting would round down.
    """
    if value is None:
        return "–"
    exact = Decimal(f"{value:.10f}")
    return str(exact.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def markdown_table(
    rows: Mapping[str, Mapping[str, float | None]], mme_subtasks: int | Mapping[str, int] = MME_SUBTASKS
) -> str:
    """The paper's per-task table: a row per run, the 12 benchmarks (MME raw) then G/K/V/Avg.

    ``mme_subtasks``: MME's subtasks, for every run or per run (10 for a run not named). Missing
    scores show as "–"; a footnote lists, per run, the benchmarks its means leave out, and one
    says how MME was averaged when it had other than the paper's 10 subtasks.
    """
    header = ["Method", *(COLUMN_TITLES[n] for n in ORDER), "G.", "K.", "V.", "Avg."]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    notes, scales = [], []
    for run, scores in rows.items():
        summary = summarize(scores, _count(mme_subtasks, run))
        if summary["mme"] is not None and summary["mme_subtasks"] != MME_SUBTASKS:
            count = summary["mme_subtasks"]
            scales.append(f"{run}: MME/{2 * count} ({count} subtasks)")
        cells = [format_score(summary[n], 1 if n == "mme" else 2) for n in ORDER]
        cells += [format_score(summary[key], 2) for key in SUMMARY_KEYS]
        lines.append("| " + " | ".join([run, *cells]) + " |")
        if summary["missing"]:
            notes.append(f"{run}: means exclude {', '.join(summary['missing'])}")
    table = "\n".join(lines) + "\n"
    if notes:
        table += "\nMissing scores: " + "; ".join(notes) + ".\n"
    if scales:
        table += "\nMME averaged as " + "; ".join(scales) + ".\n"
    return table


def bar_chart(
    rows: Mapping[str, Mapping[str, float | None]],
    path: str | Path,
    mme_subtasks: int | Mapping[str, int] = MME_SUBTASKS,
) -> Path:
    """Grouped bars of G, K, V and Avg, one bar per run, saved as a PNG at ``path``.

    ``mme_subtasks`` as for :func:`markdown_table`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("bar_chart needs at least one run")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summaries = {run: summarize(scores, _count(mme_subtasks, run)) for run, scores in rows.items()}
    width = 0.8 / len(summaries)
    figure, axis = plt.subplots(figsize=(2.0 + 1.6 * len(SUMMARY_KEYS), 4.0))
    for offset, (run, summary) in enumerate(summaries.items()):
        xs = [i - 0.4 + width * (offset + 0.5) for i in range(len(SUMMARY_KEYS))]
        heights = [summary[key] if summary[key] is not None else 0.0 for key in SUMMARY_KEYS]
        bars = axis.bar(xs, heights, width=width, label=run)
        axis.bar_label(
            bars, labels=[format_score(summary[k], 1) for k in SUMMARY_KEYS], fontsize=7, padding=2
        )
    axis.set_xticks(range(len(SUMMARY_KEYS)), ["General", "Knowledge & OCR", "Vision-centric", "Average"])
    axis.set_ylabel("score (%)")
    values = [s[k] for s in summaries.values() for k in SUMMARY_KEYS if s[k] is not None]
    if values:
        axis.set_ylim(max(0.0, min(values) - 10.0), min(100.0, max(values) + 5.0))
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
