"""The paper's analyses as runs: train (or load) models, measure them with :mod:`covft.analysis`, write.

- :mod:`~covft.recipes.analyses.runs`: one validated training config per analysis run
  (:func:`analysis_config`, :class:`RunSettings`);
- :mod:`~covft.recipes.analyses.conflict`: :func:`run_conflict` (Fig. 1b/c);
- :mod:`~covft.recipes.analyses.gradients`: :func:`run_gradients` (supp. Fig. A);
- :mod:`~covft.recipes.analyses.context`: :func:`run_context` (Fig. 3a/b, supp. Fig. B).

The maths and the training callbacks that measure stay in :mod:`covft.analysis`, which imports no
recipe; ``covft analyze`` (:mod:`covft.cli.analyze`) calls these drivers.
"""

from covft.recipes.analyses.conflict import run_conflict
from covft.recipes.analyses.context import run_context
from covft.recipes.analyses.gradients import run_gradients

__all__ = ["run_conflict", "run_context", "run_gradients"]
