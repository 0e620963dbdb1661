"""Gradient conflict: dominant direction, cosines, sketches, and the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from covft.analysis.gradients import (
    PAPER_GRADIENT_COSINE,
    GradientSketch,
    choose_projection,
    cosine_to_direction,
    cosine_to_dominant,
    dominant_direction,
)
from covft.cli import main

from .conftest import TINY


def _orthonormal(dim: int, count: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, count)))
    return q.T


def test_gradients_along_one_direction_have_cosine_one() -> None:
    u = _orthonormal(50, 1)[0]
    grads = np.outer([0.5, 2.0, 1.0, 3.0], u)
    cosines, mean, std = cosine_to_dominant(grads)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-12)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(dominant_direction(grads), u, atol=1e-12)


def test_dominant_direction_is_sign_aligned_with_the_mean() -> None:
    u = _orthonormal(20, 1)[0]
    grads = np.outer([-1.0, -2.0, -0.5], u)  # all steps point along -u
    np.testing.assert_allclose(dominant_direction(grads), -u, atol=1e-12)
    assert cosine_to_dominant(grads)[1] == pytest.approx(1.0)


def test_orthogonal_gradient_has_cosine_zero_and_known_mixtures_their_angle() -> None:
    u, v = _orthonormal(30, 2)
    grads = np.stack([10 * u, 9 * u, 11 * u, 0.1 * v])
    direction = dominant_direction(grads)
    np.testing.assert_allclose(direction, u, atol=1e-12)  # v carries almost no energy
    cosines = cosine_to_direction(grads, direction)
    np.testing.assert_allclose(cosines, [1.0, 1.0, 1.0, 0.0], atol=1e-12)
    assert cosine_to_direction(np.stack([u + v]), u)[0] == pytest.approx(1 / np.sqrt(2))
    assert cosine_to_direction(torch.zeros(1, 30), u)[0] == 0.0  # a zero gradient counts as 0


def test_centred_pca_uses_scikit_learn_on_the_spread() -> None:
    u, v = _orthonormal(10, 2)
    grads = np.stack([3 * u + v, 3 * u - v, 3 * u + 0.5 * v, 3 * u - 0.5 * v])  # shared u, spread along v
    np.testing.assert_allclose(abs(dominant_direction(grads, center=True) @ v), 1.0, atol=1e-9)
    np.testing.assert_allclose(dominant_direction(grads, center=False), u, atol=1e-9)


@pytest.mark.parametrize("kind", ["gaussian", "countsketch"])
def test_sketch_is_deterministic_and_preserves_cosines(kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    g, h = torch.randn(2, 12000, generator=generator)
    mixed = g + 0.5 * h
    sketch = GradientSketch(dim=1024, seed=3, kind=kind, chunk=3000)
    parts = lambda x: [x[:7000].reshape(70, 100), x[7000:]]  # noqa: E731 - any split of the same vector
    a, a_again, m = sketch(parts(g)), sketch(parts(g)), sketch(parts(mixed))
    assert a.shape == (1024,) and torch.equal(a, a_again)
    exact = float(torch.cosine_similarity(g, mixed, dim=0))
    assert float(torch.cosine_similarity(a, m, dim=0)) == pytest.approx(exact, abs=0.08)
    assert not torch.equal(a, GradientSketch(dim=1024, seed=4, kind=kind, chunk=3000)(parts(g)))


def test_auto_projection_is_exact_for_small_models() -> None:
    assert choose_projection("auto", num_parameters=50_000, steps=100, max_exact_mb=2048) == "none"
    assert (
        choose_projection("auto", num_parameters=529_007_664, steps=100, max_exact_mb=2048) == "countsketch"
    )
    assert choose_projection("gaussian", num_parameters=10, steps=1, max_exact_mb=2048) == "gaussian"


def test_a_text_only_step_is_not_recorded_as_a_cosine_of_zero() -> None:
    """After a batch without an image the tower never ran (every vision grad is None): that step
    has no gradient direction, so the recorder skips it (as GradientFile does) instead of
    storing a zero row that would count as cosine 0 and pull the mean down."""
    import covft
    from covft.analysis.gradients import GradientRecorder

    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "full"
    )
    params = [p for n, p in model.named_parameters() if p.requires_grad and model.part_of(n) == "vision"]
    generator = torch.Generator().manual_seed(0)
    recorder = GradientRecorder("none")
    for step in range(1, 7):
        for param in params:
            param.grad = None if step in (2, 5) else torch.randn(param.shape, generator=generator)
        recorder.before_optimizer_step(step, model, 1.0)
    assert recorder.steps == [1, 3, 4, 6]
    assert recorder.matrix().shape == (4, sum(p.numel() for p in params))
    assert bool((recorder.matrix().abs().sum(dim=1) > 0).all())


def test_gradients_command_end_to_end(world, tmp_path) -> None:
    out = tmp_path / "gradients"
    args = [
        "analyze",
        "gradients",
        "--data",
        str(world / "train.json"),
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--lr",
        "1e-3",
    ]
    assert main(args + [a for o in TINY for a in ("--set", o)]) == 0
    result = json.loads((out / "gradients.json").read_text())
    assert (out / "gradients_hist.png").stat().st_size > 0 and (
        out / "gradients_steps.png"
    ).stat().st_size > 0
    assert result["paper"]["full"] == PAPER_GRADIENT_COSINE["full"]
    assert result["paper"]["covft"] == {"mean": 0.189, "std": 0.051}
    for strategy in ("full", "covft"):
        data = result["strategies"][strategy]
        cosines = np.asarray(data["cosine"])
        assert data["steps"] == [1, 2, 3] and data["projection"] == "none"
        assert np.all(np.abs(cosines) <= 1 + 1e-9)
        assert data["mean"] == pytest.approx(cosines.mean()) and data["std"] == pytest.approx(cosines.std())
        assert data["mean"] > 0  # sign-aligned with the mean gradient
    assert result["strategies"]["covft"]["num_parameters"] != result["strategies"]["full"]["num_parameters"]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the runs that would train (none should), instead of training them."""
    import covft.train

    trained: list[str] = []
    monkeypatch.setattr(covft.train, "train", lambda config, callbacks=(): trained.append(config.method))
    return trained


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--strategies", "full,nosuch"], "unknown method 'nosuch'"),
        (["--strategies", "full,full"], "strategies named twice: full"),
        (["--strategies", " , "], "--strategies is empty"),
        (["--steps", "0"], "steps must be >= 1, got 0"),
        (["--steps", "-3"], "steps must be >= 1, got -3"),
        (["--set", "method_options.nosuch=1"], "nosuch"),
    ],
)
def test_gradients_refuses_a_bad_strategy_or_step_count_before_the_first_run(
    world, tmp_path, capsys, no_training, argv, named
) -> None:
    out = tmp_path / "gradients"
    command = ["analyze", "gradients", "--data", str(world / "train.json"), "--out", str(out), *argv]
    assert main(command + [a for o in TINY for a in ("--set", o)]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert no_training == [] and not out.exists()
