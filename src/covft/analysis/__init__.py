"""The paper's analyses: visual preference conflict, gradient conflict, context vectors.

Pure functions (usable on any models or arrays) and the drivers that train and measure:

- :mod:`covft.analysis.conflict`: :func:`block_distances`, :func:`feature_distances`,
  :func:`split_by_task`, :func:`run_conflict`;
- :mod:`covft.analysis.gradients`: :func:`cosine_to_dominant`, :func:`dominant_direction`,
  :class:`GradientSketch`, :func:`run_gradients`;
- :mod:`covft.analysis.context`: :func:`collect_context`, :func:`cluster_contexts`,
  :func:`pairwise_correlation`, :func:`run_context`;
- :mod:`covft.analysis.mechanisms`: the four mechanisms as numbers with a verdict
  (:func:`conflict_summary`, :func:`gradient_summary`, :func:`context_summary`).

Sub-modules load on first use, so ``import covft.analysis`` stays light. The command line is
``covft analyze conflict|gradients|context`` (docs/analysis.md).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "block_distances": "conflict",
    "block_vectors": "conflict",
    "feature_distances": "conflict",
    "split_by_task": "conflict",
    "run_conflict": "conflict",
    "cosine_to_dominant": "gradients",
    "cosine_to_direction": "gradients",
    "dominant_direction": "gradients",
    "GradientSketch": "gradients",
    "GradientFile": "gradients",
    "read_gradient_file": "gradients",
    "run_gradients": "gradients",
    "collect_context": "context",
    "cluster_contexts": "context",
    "pairwise_cosine": "context",
    "pairwise_correlation": "context",
    "nearest_to_centroids": "context",
    "run_context": "context",
    "task_of": "runs",
    "conflict_summary": "mechanisms",
    "gradient_summary": "mechanisms",
    "context_summary": "mechanisms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"covft.analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'covft.analysis' has no attribute {name!r}")
