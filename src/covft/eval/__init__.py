"""Evaluation on the paper's 12 benchmarks: adapters, scorers and the paper-layout report.

``covft.eval.benchmarks`` reads official distributions into items; generation (elsewhere) adds a
``prediction`` to each; :func:`score` turns records into numbers; :func:`summarize` and
:mod:`covft.eval.report` group them as the paper does.
"""

from covft.eval.benchmarks import BENCHMARKS
from covft.eval.report import GROUPS, summarize
from covft.eval.scoring import score

__all__ = ["BENCHMARKS", "GROUPS", "score", "summarize"]
