"""Specialization and forgetting of downstream tuning: E, F and O (method.md section 5).

The protocol of "Keeping Yourself is Important in Downstream Tuning MLLMs" (arXiv 2503.04543):
tune an instruction-tuned model on one downstream set D and measure D and the upstream benchmarks
U before and after. Pure arithmetic on accuracies; the study that trains and evaluates is
:mod:`covft.recipes.downstream_study`, its figure :func:`covft.analysis.plots.plot_transfer`.
"""

from __future__ import annotations

from collections.abc import Mapping


def specialization_forgetting(
    downstream_base: float,
    downstream_tuned: float,
    upstream_base: Mapping[str, float],
    upstream_tuned: Mapping[str, float],
) -> dict[str, float]:
    """E, F and O (method.md section 5) from accuracies in percent (MME already divided by 20).

    ``upstream_*`` map each upstream benchmark to its accuracy before / after tuning; both must
    name the same benchmarks, at least one.
    """
    if set(upstream_base) != set(upstream_tuned):
        raise ValueError(
            f"upstream benchmarks differ before and after tuning: {sorted(upstream_base)} vs {sorted(upstream_tuned)}"
        )
    if not upstream_base:
        raise ValueError("F needs at least one upstream benchmark")
    specialization = float(downstream_tuned) - float(downstream_base)
    forgetting = sum(float(upstream_tuned[u]) - float(upstream_base[u]) for u in upstream_base) / len(
        upstream_base
    )
    return {"E": specialization, "F": forgetting, "O": (specialization + forgetting) / 2.0}
