"""The paper's analyses: visual preference conflict, gradient conflict, context vectors.

Pure functions (usable on any models or arrays) and the training callbacks that measure:

- :mod:`covft.analysis.conflict`: :func:`block_distances`, :func:`feature_distances`,
  :func:`split_by_task`, :class:`ConflictRecorder`;
- :mod:`covft.analysis.gradients`: :func:`cosine_to_dominant`, :func:`dominant_direction`,
  :class:`GradientSketch`, :class:`GradientRecorder`, :class:`GradientFile`;
- :mod:`covft.analysis.context`: :func:`collect_context`, :func:`cluster_contexts`,
  :func:`pairwise_correlation`;
- :mod:`covft.analysis.mechanisms`: the four mechanisms as numbers with a verdict
  (:func:`conflict_summary`, :func:`gradient_summary`, :func:`context_summary`);
- :mod:`covft.analysis.transfer`: specialization and forgetting of downstream tuning
  (:func:`specialization_forgetting`: E, F, O);
- :mod:`covft.analysis.plots` and :mod:`covft.analysis.mechanisms_figure`: the figures.

Sub-modules load on first use, so ``import covft.analysis`` stays light. The drivers that train
runs and measure them (``run_conflict``, ``run_gradients``, ``run_context``) are recipes,
:mod:`covft.recipes.analyses`; the command line is ``covft analyze conflict|gradients|context``
(docs/analysis.md).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "block_distances": "conflict",
    "block_vectors": "conflict",
    "feature_distances": "conflict",
    "split_by_task": "conflict",
    "ConflictRecorder": "conflict",
    "cosine_to_dominant": "gradients",
    "cosine_to_direction": "gradients",
    "dominant_direction": "gradients",
    "GradientSketch": "gradients",
    "GradientFile": "gradients",
    "GradientRecorder": "gradients",
    "read_gradient_file": "gradients",
    "collect_context": "context",
    "cluster_contexts": "context",
    "pairwise_cosine": "context",
    "pairwise_correlation": "context",
    "nearest_to_centroids": "context",
    "task_of": "runs",
    "conflict_summary": "mechanisms",
    "gradient_summary": "mechanisms",
    "context_summary": "mechanisms",
    "specialization_forgetting": "transfer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"covft.analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'covft.analysis' has no attribute {name!r}")
