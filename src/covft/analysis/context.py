"""Context vectors of a trained CoVFT model (paper Fig. 3a/b, supp. Fig. B).

For each sample the vision tower runs once with its instruction, and every CoMoE block records
its router input (``ContextualMoE.last_context``, the CVE output) and its gates
(``last_gates``). Analyses:

- **clusters**: k-means (k=10) on the context vectors of one block, PCA to 2-D for the picture,
  and the samples nearest to each centroid (supp. Fig. B). The paper takes the vectors "from the
  penultimate vision encoder layer (i.e. the features actually fed to the LLM)": the block whose
  output the LLM reads, which with LLaVA-1.5's default CoMoE placement (blocks 11..22) is the
  *last* CoMoE block, block 22 (``block="last"``, the default). ``block="mean"`` averages the
  vectors of all CoMoE blocks; an integer picks one block.
- **routing vs context** (Fig. 3b): over all pairs of samples, the Pearson correlation between
  the cosine similarity of their context vectors and the cosine similarity of their routing
  weights concatenated over all CoMoE blocks (paper: r = 0.76).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from covft.analysis.runs import preserve_forward_state, vision_forward
from covft.errors import UserError

__all__ = [
    "PAPER_ROUTING_CORRELATION",
    "NotCoVFTError",
    "cluster_contexts",
    "collect_context",
    "nearest_to_centroids",
    "pairwise_correlation",
    "pairwise_cosine",
    "resolve_block",
    "select_samples",
]

PAPER_ROUTING_CORRELATION = 0.76
"""Fig. 3b, LLaVA-1.5-7B trained on the 665K mix (reference only)."""


class NotCoVFTError(UserError, ValueError):
    """A model without the CoMoE blocks the analysis reads (not trained with CoVFT), or a block
    index that is not one of them."""

    exit_status = 2  # like a usage error: the command was given the wrong checkpoint or block


def _comoe_modules(model: nn.Module) -> dict[int, nn.Module]:
    layers = list(getattr(model, "routed_blocks", []))
    if not layers:
        method = getattr(getattr(model, "strategy", None), "name", None)
        found = f" (its method is {method!r})" if method else ""
        raise NotCoVFTError(
            f"the model has no CoMoE blocks{found}: give a checkpoint trained with method 'covft' "
            "(dense or sparse routing)"
        )
    return {index: model.encoder_layers[index].mlp for index in layers}


def resolve_block(model: nn.Module, block: str | int) -> str | int:
    """``"last"`` -> the last CoMoE block index, ``"mean"`` stays, an int must be a CoMoE block."""
    layers = sorted(_comoe_modules(model))
    if block == "last":
        return layers[-1]
    if block == "mean":
        return "mean"
    index = int(block)
    if index not in layers:
        raise NotCoVFTError(f"block {index} is not a CoMoE block; CoMoE blocks: {layers} (--block)")
    return index


def collect_context(
    model: nn.Module,
    samples: Sequence[dict[str, Any]],
    block: str | int = "last",
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Context vectors ``[N, d_ctx]`` (of ``block``) and routing weights ``[N, sum_blocks E]``.

    ``samples`` are collator samples (``{"id", "image", "conversations"}``), each with one image:
    a PIL image, or a file path opened only when its batch runs (so thousands of samples never sit
    in memory at once). Runs only the vision tower, in eval mode, without gradients.
    """
    from tqdm.auto import tqdm

    modules = _comoe_modules(model)
    chosen = resolve_block(model, block)
    contexts: list[np.ndarray] = []
    routes: list[np.ndarray] = []
    bar = tqdm(total=len(samples), desc="context vectors", disable=not progress, unit="sample")
    for start in range(0, len(samples), batch_size):
        chunk = [_with_image(sample) for sample in samples[start : start + batch_size]]
        batch = model.collate(chunk)
        with preserve_forward_state(model):
            vision_forward(model, batch)
            per_block = {i: m.last_context for i, m in modules.items()}
            if any(v is None for v in per_block.values()):
                raise ValueError(
                    "uniform routing has no router input: context vectors need dense or sparse routing"
                )
            if chosen == "mean":
                shapes = {tuple(v.shape) for v in per_block.values()}
                if len(shapes) != 1:
                    raise ValueError(
                        f"CoMoE blocks have context vectors of different shapes {shapes}; pick one block"
                    )
                vector = torch.stack([v.float() for v in per_block.values()]).mean(0)
            else:
                vector = per_block[chosen].float()
            gates = torch.cat([modules[i].last_gates.float() for i in sorted(modules)], dim=-1)
        contexts.append(vector.cpu().numpy())
        routes.append(gates.cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    if not contexts:
        raise ValueError("no samples given")
    return np.concatenate(contexts), np.concatenate(routes)


def _with_image(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with its image opened as RGB when it is given as a path."""
    image = sample["image"]
    if isinstance(image, (str, Path)):
        with Image.open(image) as handle:
            return {**sample, "image": handle.convert("RGB")}
    return sample


def pairwise_cosine(x: np.ndarray) -> np.ndarray:
    """Cosine similarity of every unordered pair of rows ``i < j``, row-major (``N(N-1)/2`` values)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    similarity = unit @ unit.T
    return similarity[np.triu(np.ones(similarity.shape, dtype=bool), k=1)]


def pairwise_correlation(contexts: np.ndarray, routes: np.ndarray) -> float:
    """Pearson r between pairwise context cosine similarity and pairwise routing cosine similarity."""
    if len(contexts) != len(routes):
        raise ValueError(f"{len(contexts)} context vectors vs {len(routes)} routing vectors")
    if len(contexts) < 3:
        raise ValueError("need at least 3 samples (2 pairs) for a correlation")
    a, b = pairwise_cosine(contexts), pairwise_cosine(routes)
    if a.std() == 0 or b.std() == 0:
        raise ValueError("one of the similarities is constant over all pairs: the correlation is undefined")
    return float(np.corrcoef(a, b)[0, 1])


def nearest_to_centroids(
    x: np.ndarray, centers: np.ndarray, labels: np.ndarray, count: int = 4
) -> list[list[int]]:
    """For each centroid, the indices of the ``count`` members of its cluster closest to it (Euclidean)."""
    nearest = []
    for cluster, center in enumerate(centers):
        members = np.flatnonzero(labels == cluster)
        distances = np.linalg.norm(x[members] - center, axis=1)
        nearest.append(members[np.argsort(distances, kind="stable")[:count]].tolist())
    return nearest


def cluster_contexts(x: np.ndarray, k: int = 10, seed: int = 0, nearest: int = 4) -> dict[str, Any]:
    """k-means (scikit-learn, 10 restarts) and a 2-D PCA of ``x``.

    Returns ``labels`` [N], ``centers`` [k, d], ``points`` [N, 2] (PCA), ``center_points`` [k, 2],
    ``explained_variance_ratio`` (2), ``nearest`` (indices per centroid) and ``sizes``.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"{len(x)} samples cannot make {k} clusters: lower k or add samples")
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    components = min(2, x.shape[1], len(x))
    pca = PCA(n_components=components, random_state=seed).fit(x)
    points = pca.transform(x)
    centers_2d = pca.transform(kmeans.cluster_centers_)
    if components < 2:
        points = np.pad(points, ((0, 0), (0, 2 - components)))
        centers_2d = np.pad(centers_2d, ((0, 0), (0, 2 - components)))
    labels = kmeans.labels_
    return {
        "labels": labels,
        "centers": kmeans.cluster_centers_,
        "points": points,
        "center_points": centers_2d,
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
        "nearest": nearest_to_centroids(x, kmeans.cluster_centers_, labels, nearest),
        "sizes": np.bincount(labels, minlength=k).tolist(),
    }


def select_samples(records: Sequence[dict[str, Any]], num_samples: int, seed: int) -> list[int]:
    """Indices of single-image records: all when ``num_samples`` is 0 or exceeds them, else a seeded draw."""
    candidates = [i for i, r in enumerate(records) if isinstance(r.get("image"), str)]
    if not candidates:
        raise ValueError("the dataset has no sample with one image")
    if num_samples <= 0 or num_samples >= len(candidates):
        return candidates
    chosen = np.random.default_rng(seed).choice(len(candidates), size=num_samples, replace=False)
    return [candidates[i] for i in sorted(chosen.tolist())]
