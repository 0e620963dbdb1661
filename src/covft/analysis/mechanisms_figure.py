"""The demo's one-glance figure of the paper's four mechanisms (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from covft.analysis.context import pairwise_cosine  # noqa: E402
from covft.analysis.gradients import cosine_to_dominant  # noqa: E402
from covft.analysis.plots import save_figure  # noqa: E402


def plot_mechanisms(found: dict[str, Any], raw: dict[str, Any], path: str | Path) -> Path:
    """The four mechanisms side by side (seed 0), each panel titled with its verdict.

    ``found``: the summaries of :mod:`covft.analysis.mechanisms`; ``raw``: what they were computed
    from (``conflict``: ``run_conflict``'s result; ``gradients``: ``{seed: {method: G}}``;
    ``context``: ``{seed: (contexts, routes, families)}``), ``None`` where not measured.
    """
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
    return save_figure(fig, path)


def _verdict_title(title: str, summary: dict[str, Any] | None) -> str:
    verdict = (summary or {}).get("verdict", "not measured")
    return f"{title}\n{verdict}"


def _pca_2d(x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    components = min(2, x.shape[1], len(x))
    points = PCA(n_components=components, random_state=0).fit_transform(np.asarray(x, dtype=np.float64))
    return np.pad(points, ((0, 0), (0, 2 - components)))
