"""Figures of the analyses (matplotlib, Agg backend: no display needed).

Every function takes the analysis' result (the dict also written as JSON) and a path, draws one
PNG and returns the path.
"""

from __future__ import annotations

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
    "plot_mechanisms",
    "plot_nearest_sheet",
    "plot_routing_correlation",
]

_METRICS = (
    ("param_l2", "parameter L2 distance"),
    ("param_relative", "parameter distance / block norm"),
    ("feature_l2", "feature distance (probe set)"),
)


def _save(fig: Any, path: str | Path) -> Path:
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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


def plot_mechanisms(found: dict[str, Any], raw: dict[str, Any], path: str | Path) -> Path:
    """The four mechanisms side by side (seed 0), each panel titled with its verdict.

    ``found``: the summaries of :mod:`covft.analysis.mechanisms`; ``raw``: what they were computed
    from (``conflict``: ``run_conflict``'s result; ``gradients``: ``{seed: {method: G}}``;
    ``context``: ``{seed: (contexts, routes, families)}``), ``None`` where not measured.
    """
    from covft.analysis.context import pairwise_cosine
    from covft.analysis.gradients import cosine_to_dominant

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    ax = axes[0]
    if raw.get("conflict") is not None:
        summary = found["conflict"]
        blocks = np.arange(len(summary["param_l2_by_block"]))
        ax.plot(blocks, summary["param_l2_by_block"], marker="o", label="parameter L2")
        twin = ax.twinx()
        twin.plot(blocks, summary["feature_l2_by_block"], marker="s", color="tab:orange", label="feature L2")
        twin.set_ylabel("feature L2 (probe set)", color="tab:orange")
        ax.set_xlabel("vision block (feeding the LLM)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("parameter L2, grounding vs captions")
    ax.set_title(_verdict_title("(i) Fig. 1c: conflict by depth", found.get("conflict")), fontsize=9)
    ax = axes[1]
    if raw.get("gradients") is not None:
        bins = np.linspace(-1, 1, 41)
        for method, grads in raw["gradients"][min(raw["gradients"])].items():
            cosines, mean, sd = cosine_to_dominant(grads)
            ax.hist(cosines, bins=bins, alpha=0.55, label=f"{method}: {mean:.3f} +- {sd:.3f}")
        ax.set_xlabel("cosine(step gradient, dominant direction)")
        ax.set_ylabel("steps")
        ax.legend(fontsize=8)
    ax.set_title(_verdict_title("(ii) supp. Fig. A: gradient conflict", found.get("gradients")), fontsize=9)
    context = raw.get("context")
    ax = axes[2]
    if context is not None:
        contexts, routes, families = context[min(context)]
        points = _pca_2d(contexts)
        names = sorted(set(families))
        cmap = plt.get_cmap("tab20")
        for i, name in enumerate(names):
            chosen = np.asarray([f == name for f in families])
            ax.scatter(
                points[chosen, 0], points[chosen, 1], s=6, alpha=0.6, color=cmap(i % cmap.N), label=name
            )
        ax.legend(fontsize=6, ncol=2, markerscale=2)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    ax.set_title(_verdict_title("(iii) Fig. 3a: context vectors by task", found.get("clusters")), fontsize=9)
    ax = axes[3]
    if context is not None:
        contexts, routes, _ = context[min(context)]
        a, b = pairwise_cosine(contexts), pairwise_cosine(routes)
        shown = np.random.default_rng(0).permutation(len(a))[:5000]
        ax.scatter(a[shown], b[shown], s=3, alpha=0.3)
        ax.set_xlabel("context cosine similarity (pair)")
        ax.set_ylabel("routing cosine similarity (pair)")
    ax.set_title(_verdict_title("(iv) Fig. 3b: routing vs context", found.get("routing")), fontsize=9)
    fig.suptitle("The paper's mechanisms on this demo's world and models (seed 0)")
    fig.tight_layout()
    return _save(fig, path)


def _verdict_title(title: str, summary: dict[str, Any] | None) -> str:
    verdict = (summary or {}).get("verdict", "not measured")
    return f"{title}\n{verdict}"


def _pca_2d(x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    components = min(2, x.shape[1], len(x))
    points = PCA(n_components=components, random_state=0).fit_transform(np.asarray(x, dtype=np.float64))
    return np.pad(points, ((0, 0), (0, 2 - components)))


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
