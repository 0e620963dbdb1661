"""The context-vector analysis (paper Fig. 3a/b, supp. Fig. B) as a run: load, collect, cluster, write.

The maths (:func:`~covft.analysis.context.collect_context`, clustering, the routing correlation)
is in :mod:`covft.analysis.context`; this driver loads a checkpoint and a data file, runs it and
writes the JSON, the Markdown report, the vectors and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from covft.analysis import plots
from covft.analysis.context import (
    PAPER_ROUTING_CORRELATION,
    cluster_contexts,
    collect_context,
    pairwise_correlation,
    pairwise_cosine,
    resolve_block,
    select_samples,
)
from covft.analysis.runs import family_labels, human_text, load_records
from covft.recipes.analyses.runs import open_rgb
from covft.strategies import build_model
from covft.utils import write_json_atomic, write_text_atomic

ROUTING_DEFINITION = (
    "Pearson r over sample pairs of cos(context_i, context_j) vs cos(routes_i, routes_j); "
    "routes = gates concatenated over all CoMoE blocks"
)


@dataclass
class _Chosen:
    """The samples the analysis reads: their records, ids, task families and image files."""

    records: list[dict[str, Any]]
    ids: list[str]
    families: dict[str, str]
    folder: Path

    def image(self, record: dict[str, Any]) -> Path:
        path = Path(record["image"])
        return path if path.is_absolute() else self.folder / path

    def samples(self) -> list[dict[str, Any]]:
        return [
            {"id": key, "image": self.image(r), "conversations": r["conversations"]}
            for key, r in zip(self.ids, self.records, strict=True)
        ]


def _question(record: dict[str, Any]) -> str:
    turns = [t.get("value", "") for t in record.get("conversations", []) if t.get("from") == "human"]
    return " | ".join(human_text(t) for t in turns if human_text(t))


def _cluster_rows(
    chosen: _Chosen, contexts: np.ndarray, found: dict[str, Any], k: int
) -> list[dict[str, Any]]:
    """Per cluster: its size, its task families and the samples nearest to its centroid."""
    rows = []
    for cluster in range(k):
        members = np.flatnonzero(found["labels"] == cluster)
        counts: dict[str, int] = {}
        for m in members:
            name = chosen.families.get(chosen.ids[m], "other")
            counts[name] = counts.get(name, 0) + 1
        near = [
            {
                "id": chosen.ids[m],
                "image": chosen.records[m]["image"],
                "family": chosen.families.get(chosen.ids[m], "other"),
                "question": _question(chosen.records[m]),
                "distance": float(np.linalg.norm(contexts[m] - found["centers"][cluster])),
            }
            for m in found["nearest"][cluster]
        ]
        rows.append(
            {
                "cluster": cluster,
                "size": int(len(members)),
                "families": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                "nearest": near,
            }
        )
    return rows


def run_context(
    checkpoint: str,
    data: str,
    out_dir: Any,
    *,
    image_folder: str | None = None,
    num_samples: int = 5000,
    clusters: int = 10,
    block: str | int = "last",
    nearest: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    text_encoder: str | None = None,
    max_plot_pairs: int = 20000,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect context vectors of ``num_samples`` samples, cluster them, correlate with routing.

    Writes into ``out_dir``: ``context.json``, ``context_clusters.md``, ``context_vectors.npz``
    (ids, contexts, routes, labels, 2-D points), ``context_clusters.png``,
    ``context_nearest.png`` and ``routing_vs_context.png``. Returns the JSON's content.
    """
    out = Path(out_dir)
    records = load_records(data)
    indices = select_samples(records, num_samples, seed)
    chosen = _Chosen(
        [records[i] for i in indices],
        [str(records[i].get("id")) for i in indices],
        family_labels(data, records),
        Path(image_folder) if image_folder is not None else Path(data).parent,
    )
    model = build_model(checkpoint, **({"text_encoder": text_encoder} if text_encoder else {}))
    chosen_block = resolve_block(model, block)  # a model without CoMoE blocks is refused here
    out.mkdir(parents=True, exist_ok=True)  # nothing is written before the inputs are checked
    contexts, routes = collect_context(model, chosen.samples(), chosen_block, batch_size, progress)
    k = min(clusters, len(contexts))
    found = cluster_contexts(contexts, k=k, seed=seed, nearest=nearest)
    similarity = (pairwise_cosine(contexts), pairwise_cosine(routes))
    r = pairwise_correlation(contexts, routes)
    result = {
        "analysis": "context",
        "checkpoint": str(checkpoint),
        "data": str(data),
        "num_samples": len(indices),
        "block": chosen_block,
        "comoe_layers": list(model.routed_blocks),
        "context_dim": int(contexts.shape[1]),
        "routing_dim": int(routes.shape[1]),
        "clusters": _cluster_rows(chosen, contexts, found, k),
        "pca_explained_variance_ratio": found["explained_variance_ratio"],
        "routing_correlation": {
            "pearson_r": r,
            "pairs": int(len(similarity[0])),
            "paper_r": PAPER_ROUTING_CORRELATION,
            "definition": ROUTING_DEFINITION,
        },
    }
    write_json_atomic(out / "context.json", result)
    write_text_atomic(out / "context_clusters.md", clusters_markdown(result))
    np.savez_compressed(out / "context_vectors.npz", ids=np.asarray(chosen.ids), contexts=contexts,
                        routes=routes, labels=found["labels"], points=found["points"])  # fmt: skip
    _figures(result, chosen, found, similarity, out, seed=seed, max_plot_pairs=max_plot_pairs)
    return result


def _figures(
    result: dict[str, Any],
    chosen: _Chosen,
    found: dict[str, Any],
    similarity: tuple[np.ndarray, np.ndarray],
    out: Path,
    *,
    seed: int,
    max_plot_pairs: int,
) -> None:
    """The clusters in PCA, the nearest samples' sheet and routing vs context similarity."""
    rows = result["clusters"]
    plots.plot_context_clusters(
        found["points"],
        found["labels"],
        found["center_points"],
        out / "context_clusters.png",
        title=f"{result['num_samples']} context vectors (block {result['block']}), PCA, k-means k={len(rows)}",
    )
    sheet = [[open_rgb(chosen.image(item)) for item in row["nearest"]] for row in rows]
    plots.plot_nearest_sheet([row["nearest"] for row in rows], sheet, out / "context_nearest.png")
    shown = np.random.default_rng(seed).permutation(len(similarity[0]))[:max_plot_pairs]
    r = result["routing_correlation"]["pearson_r"]
    plots.plot_routing_correlation(similarity[0][shown], similarity[1][shown], r, out / "routing_vs_context.png",
                                   PAPER_ROUTING_CORRELATION)  # fmt: skip


def clusters_markdown(result: dict[str, Any]) -> str:
    """The nearest samples per centroid as a Markdown report."""
    correlation = result["routing_correlation"]
    lines = [
        f"# Context clusters ({result['num_samples']} samples, block {result['block']})",
        "",
        f"Routing vs context: Pearson r = {correlation['pearson_r']:.3f} over {correlation['pairs']} pairs "
        f"(paper, LLaVA-1.5-7B: {correlation['paper_r']}).",
        "",
    ]
    for row in result["clusters"]:
        families = ", ".join(f"{name} {count}" for name, count in row["families"].items())
        lines += [f"## Cluster {row['cluster']} ({row['size']} samples: {families})", ""]
        lines += ["| id | family | distance | question |", "|---|---|---|---|"]
        for item in row["nearest"]:
            question = item["question"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {item['id']} | {item['family']} | {item['distance']:.4f} | {question} |")
        lines.append("")
    return "\n".join(lines)
