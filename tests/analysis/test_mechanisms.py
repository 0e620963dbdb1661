"""The mechanisms' verdicts follow their rules on measurements with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from covft.analysis.gradients import GradientFile, read_gradient_file
from covft.analysis.mechanisms import (
    CLUSTER_NMI_THRESHOLD,
    conflict_summary,
    context_summary,
    gradient_summary,
    not_measured,
)


def _conflict(param_l2_by_step: list[list[float]], feeding: int = 3) -> dict:
    steps = [0, 5, 10][: len(param_l2_by_step)]
    final = param_l2_by_step[-1]
    return {
        "tasks": {"a": "grounding", "b": "caption"},
        "n_samples": 40,
        "strategies": {
            "full": {
                "feeding_blocks": feeding,
                "steps": steps,
                "param_l2": param_l2_by_step,
                "final": {"param_l2": final, "param_relative": final, "feature_l2": final},
            }
        },
    }


def test_conflict_growing_with_training_and_depth_is_reproduced() -> None:
    # the block past the feeding layer (0.0) is ignored
    summary = conflict_summary(_conflict([[0, 0, 0, 0], [0.1, 0.2, 0.3, 0], [0.2, 0.4, 0.6, 0]]))
    assert summary["param_l2_by_block"] == [0.2, 0.4, 0.6]
    assert summary["depth_spearman"] == pytest.approx(1.0)
    assert summary["param_l2_sum_by_step"] == pytest.approx([0.0, 0.6, 1.2])
    assert summary["grows_during_training"] and summary["verdict"] == "reproduced"


@pytest.mark.parametrize(
    "by_step",
    [
        [[0, 0, 0], [0.3, 0.2, 0.1], [0.6, 0.4, 0.2]],  # grows, but shallower blocks more
        [[0, 0, 0], [0.2, 0.4, 0.6], [0.1, 0.2, 0.3]],  # deeper more, but shrinks late in training
    ],
)
def test_conflict_against_depth_or_shrinking_is_not_reproduced(by_step) -> None:
    assert conflict_summary(_conflict(by_step))["verdict"] == "not reproduced"


def _gradients(rng: np.random.Generator, spread: float, steps: int = 40, dims: int = 64) -> np.ndarray:
    direction = np.zeros(dims)
    direction[0] = 1.0
    return direction + spread * rng.standard_normal((steps, dims))


def test_gradients_more_aligned_and_steadier_under_covft_is_reproduced() -> None:
    rng = np.random.default_rng(0)
    per_seed = {s: {"full": _gradients(rng, 2.0), "covft": _gradients(rng, 0.2)} for s in (0, 1)}
    summary = gradient_summary(per_seed)
    assert summary["verdict"] == "reproduced"
    assert summary["summary"]["covft"]["mean"]["mean"] > summary["summary"]["full"]["mean"]["mean"]
    assert summary["summary"]["covft"]["mean"]["sd"] is not None  # spread over the two seeds
    assert summary["paper"]["covft"] == {"mean": 0.189, "sd": 0.051}
    # one seed going the other way is enough to fail the rule
    per_seed[1] = {"full": per_seed[1]["covft"], "covft": per_seed[1]["full"]}
    assert gradient_summary(per_seed)["verdict"] == "not reproduced"


def _contexts(rng: np.random.Generator, per_family: int = 30) -> tuple[np.ndarray, list[str]]:
    centres = 10 * rng.standard_normal((4, 16))
    x = np.concatenate([c + rng.standard_normal((per_family, 16)) for c in centres])
    return x, [f"family{i}" for i in range(4) for _ in range(per_family)]


def test_clusters_following_families_and_context_routing_are_reproduced() -> None:
    rng = np.random.default_rng(0)
    contexts, families = _contexts(rng)
    routes = np.abs(contexts[:, :8])  # a function of the context: similar contexts, similar routes
    summary = context_summary({0: (contexts, routes, families)}, k=4)
    assert summary["clusters"]["nmi"]["mean"] == pytest.approx(1.0)
    assert summary["clusters"]["purity"]["mean"] == pytest.approx(1.0)
    assert summary["clusters"]["verdict"] == "reproduced"
    assert summary["routing"]["pearson_r"]["mean"] > 0.5 and summary["routing"]["verdict"] == "reproduced"
    assert summary["routing"]["per_seed"]["0"]["between_family_share"] > 0.9  # routes follow the families


def test_random_clusters_and_a_collapsed_router_are_not_reproduced() -> None:
    rng = np.random.default_rng(1)
    contexts, families = _contexts(rng)
    shuffled = list(rng.permutation(families))
    collapsed = np.tile([1.0, 0.0, 0.0, 0.0], (len(contexts), 1))
    summary = context_summary({0: (contexts, collapsed, shuffled)}, k=4)
    assert summary["clusters"]["nmi"]["mean"] < CLUSTER_NMI_THRESHOLD
    assert summary["clusters"]["verdict"] == "not reproduced"
    assert summary["routing"]["pearson_r"]["mean"] is None  # constant routing: r undefined
    assert summary["routing"]["per_seed"]["0"]["gate_sd"] == 0.0
    assert summary["routing"]["per_seed"]["0"]["between_family_share"] is None
    assert summary["routing"]["verdict"] == "not reproduced"


def test_not_measured_names_the_reason_and_the_rule() -> None:
    entry = not_measured("routing", "covft not among the methods")
    assert entry["verdict"] == "not measured" and "covft" in entry["reason"] and "Pearson" in entry["rule"]


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vision = torch.nn.Linear(3, 2)
        self.llm = torch.nn.Linear(2, 1)

    def part_of(self, name: str) -> str:
        return "vision" if name.startswith("vision") else "llm"


def test_gradient_file_keeps_the_last_row_of_a_step_and_skips_steps_without_vision_gradient(tmp_path) -> None:
    model = _Model()
    recorder = GradientFile(tmp_path / "g.f32", dim=16, seed=0)
    for step in (1, 2):
        model.zero_grad()
        model.llm(model.vision(torch.full((1, 3), float(step)))).sum().backward()
        recorder.before_optimizer_step(step, model, 0.0)
    model.zero_grad(set_to_none=True)
    model.llm(torch.ones(1, 2)).sum().backward()  # a text-only step: the tower gets no gradient
    recorder.before_optimizer_step(3, model, 0.0)
    model.vision(torch.ones(1, 3)).sum().backward()  # a resumed run records step 2 again
    recorder.before_optimizer_step(2, model, 0.0)
    steps, rows = read_gradient_file(tmp_path / "g.f32", dim=16)
    assert steps.tolist() == [1, 2] and rows.shape == (2, 16)
    expected = recorder.sketch([p.grad for p in model.vision.parameters()]).numpy()
    np.testing.assert_allclose(rows[1], expected)
    with pytest.raises(ValueError, match="rows of 16"):
        read_gradient_file(tmp_path / "g.f32", dim=15)
