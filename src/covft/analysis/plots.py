"""Figures of the analyses (matplotlib, Agg backend: no display needed).

Every function takes the analysis' result (the dict also written as JSON) and a path, draws one
PNG and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "plot_conflict_depth",
    "plot_conflict_steps",
    "plot_context_clusters",
    "plot_gradient_histogram",
    "plot_gradient_steps",
    "plot_nearest_sheet",
    "plot_routing_correlation",
    "plot_transfer",
    "save_figure",
]

_METRICS = (
    ("param_l2", "parameter L2 distance"),
    ("param_relative", "parameter distance / block norm"),
    ("feature_l2", "feature distance (probe set)"),
)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (creating its folder), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_conflict_depth(result: dict[str, Any], path: str | Path) -> Path:
    """Distance between the two task-specific encoders at the last step vs block depth, per strategy."""
    fig, axes = plt.subplots(1, len(_METRICS), figsize=(5 * len(_METRICS), 3.8))
    for ax, (key, label) in zip(axes, _METRICS, strict=True):
        for strategy, data in result["strategies"].items():
            values = data["final"][key]
            depth = np.arange(len(values))
            (line,) = ax.plot(depth, values, marker="o", label=strategy)
            comoe = [i for i in data.get("comoe_layers", []) if i < len(values)]
            if comoe:
                ax.scatter(
                    comoe, [values[i] for i in comoe], s=90, facecolors="none", edgecolors=line.get_color()
                )
        ax.set_xlabel("vision block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(title="strategy (circled: CoMoE blocks)")
    tasks = result["tasks"]
    fig.suptitle(
        f"{tasks['a']} vs {tasks['b']}: encoder distance by depth after {result['total_steps']} steps"
    )
    return save_figure(fig, path)


def plot_conflict_steps(result: dict[str, Any], path: str | Path) -> Path:
    """Distance vs training step, one line per block (colour = depth), one row per strategy."""
    strategies = list(result["strategies"])
    keys = (_METRICS[1], _METRICS[2])
    fig, axes = plt.subplots(len(strategies), len(keys), figsize=(11, 3.6 * len(strategies)), squeeze=False)
    for row, strategy in enumerate(strategies):
        data = result["strategies"][strategy]
        steps = data["steps"]
        for col, (key, label) in enumerate(keys):
            ax = axes[row][col]
            matrix = np.asarray(data[key])
            blocks = matrix.shape[1]
            colours = plt.cm.viridis(np.linspace(0, 1, max(blocks, 2)))
            for i in range(blocks):
                ax.plot(steps, matrix[:, i], color=colours[i], label=f"block {i}")
            ax.set_title(f"{strategy}: {label}")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        if blocks <= 12:
            axes[row][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gradient_histogram(result: dict[str, Any], path: str | Path) -> Path:
    """Histogram of per-step cosine to the dominant direction, per strategy, paper values in the legend."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(-1, 1, 41)
    paper = result.get("paper", {})
    for strategy, data in result["strategies"].items():
        label = f"{strategy}: ours mean {data['mean']:.3f} / std {data['std']:.3f}"
        if strategy in paper:
            label += f" (paper {paper[strategy]['mean']:.3f} / {paper[strategy]['std']:.3f})"
        ax.hist(data["cosine"], bins=bins, alpha=0.55, label=label)
    ax.set_xlabel("cosine(step gradient, dominant direction)")
    ax.set_ylabel("steps")
    ax.legend(fontsize=8)
    ax.set_title("Vision gradient vs dominant direction")
    return save_figure(fig, path)


def plot_gradient_steps(result: dict[str, Any], path: str | Path) -> Path:
    """Per-step cosine to the dominant direction, per strategy."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for strategy, data in result["strategies"].items():
        ax.plot(data["steps"], data["cosine"], marker=".", label=strategy)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine to dominant direction")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_context_clusters(
    points: np.ndarray,
    labels: np.ndarray,
    center_points: np.ndarray,
    path: str | Path,
    title: str = "Context vectors (PCA), coloured by k-means cluster",
) -> Path:
    """2-D PCA scatter of context vectors coloured by cluster, centroids numbered."""
    fig, ax = plt.subplots(figsize=(7, 6))
    k = len(center_points)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    size = 6 if len(points) > 1000 else 18
    ax.scatter(points[:, 0], points[:, 1], c=[cmap(int(c) % cmap.N) for c in labels], s=size, alpha=0.6)
    for cluster, (x, y) in enumerate(center_points):
        ax.scatter([x], [y], marker="X", s=120, color=cmap(cluster % cmap.N), edgecolors="black")
        ax.annotate(
            str(cluster), (x, y), xytext=(5, 5), textcoords="offset points", fontsize=10, weight="bold"
        )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_nearest_sheet(
    clusters: Sequence[Sequence[dict[str, Any]]], images: Sequence[Sequence[Any]], path: str | Path
) -> Path:
    """Contact sheet: one row per cluster, its nearest samples' images with their question."""
    rows = len(clusters)
    cols = max(1, max((len(c) for c in clusters), default=1))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.9 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(clusters[r]):
                item = clusters[r][c]
                ax.imshow(images[r][c], interpolation="nearest")
                question = item.get("question", "")
                text = question if len(question) <= 90 else question[:87] + "..."
                ax.set_title(_wrap(f"[{item.get('family', '')}] {text}", 34), fontsize=7)
            if c == 0:
                ax.text(
                    -0.08, 0.5, f"cluster {r}", transform=ax.transAxes, rotation=90, va="center", ha="right"
                )
    fig.suptitle("Samples nearest to each k-means centroid", y=1.0)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_routing_correlation(
    context_similarity: np.ndarray,
    routing_similarity: np.ndarray,
    r: float,
    path: str | Path,
    paper: float | None,
) -> Path:
    """Scatter of pairwise context vs routing cosine similarity with the Pearson r."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(context_similarity, routing_similarity, s=3, alpha=0.3)
    title = f"Pearson r = {r:.3f}"
    if paper is not None:
        title += f" (paper, LLaVA-1.5-7B: {paper:.2f})"
    ax.set_title(title)
    ax.set_xlabel("context vector cosine similarity (pair)")
    ax.set_ylabel("routing weight cosine similarity (pair)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_transfer(report: dict[str, Any], path: str | Path) -> Path:
    """Specialization (E, y) against stabilization (F, x) per strategy (:mod:`covft.analysis.transfer`).

    ``report``: ``{"downstream": name, "strategies": {name: {"E", "F", "O", ...}}}``.
    """
    rows = report["strategies"]
    if not rows:
        raise ValueError("no tuned strategies to plot")
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for name, row in rows.items():
        ax.scatter([row["F"]], [row["E"]], s=40)
        ax.annotate(f"{name} (O {row['O']:.1f})", (row["F"], row["E"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    values = [v for row in rows.values() for v in (row["E"], row["F"]) if math.isfinite(v)]
    span = max([abs(v) for v in values] + [1.0]) * 1.25
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_xlabel("F: upstream change (negative = forgetting)")
    ax.set_ylabel(f"E: specialization on {report['downstream']}")
    ax.set_title("Specialization vs forgetting")
    fig.tight_layout()
    return save_figure(fig, path)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return "\n".join(lines[:4])
