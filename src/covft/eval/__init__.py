"""Evaluation on the paper's 12 benchmarks: adapters, scorers and the paper-layout report.

``covft.eval.benchmarks`` reads official distributions into items, prompted and routed as a
protocol says (``covft.eval.protocol``); :func:`predict` (``covft.eval.generate``) adds a
``prediction`` to each; :func:`score` turns records into numbers by the official rules
(``covft.eval.official``) or, for suites, covft's tolerant ones; :func:`summarize` and
:mod:`covft.eval.report` group them as the paper does; :func:`evaluate` does all of it for a model
and writes a run's report.
"""

from covft.eval.benchmarks import BENCHMARKS
from covft.eval.report import GROUPS, summarize
from covft.eval.scoring import score

__all__ = ["BENCHMARKS", "GROUPS", "evaluate", "predict", "score", "summarize"]


def __getattr__(name: str):
    # generation pulls in the model stack; load it only when asked for
    if name in ("evaluate", "predict"):
        from covft.eval import generate

        return getattr(generate, name)
    raise AttributeError(f"module 'covft.eval' has no attribute {name!r}")
