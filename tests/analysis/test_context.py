"""Context vectors: correlation, clustering, collection and the command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

import covft
from covft.analysis.context import (
    cluster_contexts,
    collect_context,
    nearest_to_centroids,
    pairwise_correlation,
    pairwise_cosine,
    resolve_block,
)
from covft.analysis.runs import load_records
from covft.cli import main
from covft.errors import UserError


def _vectors(gram: list[list[float]]) -> np.ndarray:
    """Rows whose pairwise dot products (and cosines: unit rows) are ``gram``."""
    return np.linalg.cholesky(np.asarray(gram))


def test_pairwise_cosine_lists_pairs_in_row_major_order() -> None:
    x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    np.testing.assert_allclose(pairwise_cosine(x), [0.0, 1 / np.sqrt(2), 1 / np.sqrt(2)])


def test_correlation_is_one_for_perfectly_related_and_minus_one_for_reversed_similarities() -> None:
    rng = np.random.default_rng(0)
    contexts = rng.normal(size=(12, 6))
    # scaling rows and rotating preserves every pairwise cosine
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    routes = (contexts * rng.uniform(0.5, 3.0, size=(12, 1))) @ rotation
    assert pairwise_correlation(contexts, routes) == pytest.approx(1.0)
    # three samples with pair cosines (0.9, 0.5, 0.1) vs (0.1, 0.5, 0.9): exactly anti-correlated
    a = _vectors([[1, 0.9, 0.5], [0.9, 1, 0.1], [0.5, 0.1, 1]])
    b = _vectors([[1, 0.1, 0.5], [0.1, 1, 0.9], [0.5, 0.9, 1]])
    np.testing.assert_allclose(pairwise_cosine(a), [0.9, 0.5, 0.1])
    assert pairwise_correlation(a, b) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constant"):
        pairwise_correlation(contexts, np.ones((12, 4)))


def test_kmeans_recovers_well_separated_blobs_and_nearest_are_members() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 5.0], [0.0, 0.0, 30.0]])
    truth = np.repeat(np.arange(4), 25)
    x = centres[truth] + rng.normal(scale=0.5, size=(100, 3))
    found = cluster_contexts(x, k=4, seed=0, nearest=4)
    assert adjusted_rand_score(truth, found["labels"]) == 1.0
    assert sorted(found["sizes"]) == [25, 25, 25, 25]
    assert found["points"].shape == (100, 2) and found["center_points"].shape == (4, 2)
    for cluster, near in enumerate(found["nearest"]):
        assert len(near) == 4 and all(found["labels"][i] == cluster for i in near)
        distances = np.linalg.norm(x[near] - found["centers"][cluster], axis=1)
        assert np.all(np.diff(distances) >= 0)
        others = np.flatnonzero(found["labels"] == cluster)
        assert (
            distances[-1] <= np.sort(np.linalg.norm(x[others] - found["centers"][cluster], axis=1))[3] + 1e-12
        )


def test_nearest_to_centroids_handles_small_clusters() -> None:
    x = np.array([[0.0], [1.0], [10.0]])
    assert nearest_to_centroids(x, np.array([[0.2], [10.0]]), np.array([0, 0, 1]), count=4) == [[0, 1], [2]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained CoVFT tiny model (4 blocks, CoMoE in blocks 1 and 2), saved as a checkpoint."""
    model = covft.build_model("tiny-test", vision_layers=4, text_encoder="random-tiny")
    covft.apply_vft(model, "covft")
    path = tmp_path_factory.mktemp("ckpt") / "covft"
    model.save_pretrained(path)
    return path


def test_context_does_not_depend_on_the_batch(world, checkpoint) -> None:
    model = covft.build_model(str(checkpoint))
    records = [r for r in load_records(world / "train.json") if "image" in r][:5]
    samples = [
        {
            "id": r["id"],
            "image": Image.open(world / r["image"]).convert("RGB"),
            "conversations": r["conversations"],
        }
        for r in records
    ]
    one = collect_context(model, samples, "last", batch_size=1, progress=False)
    five = collect_context(model, samples, "last", batch_size=5, progress=False)
    for a, b in zip(one, five, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    contexts, routes = five
    assert contexts.shape == (5, 32) and routes.shape == (5, 8)  # 2 CoMoE blocks x 4 experts
    np.testing.assert_allclose(routes.reshape(5, 2, 4).sum(-1), 1.0, atol=1e-6)
    mean = collect_context(model, samples, "mean", batch_size=5, progress=False)[0]
    block1 = collect_context(model, samples, 1, batch_size=5, progress=False)[0]
    np.testing.assert_allclose(mean, (block1 + contexts) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="not a CoMoE block"):
        collect_context(model, samples, 0)


def test_context_command_end_to_end(world, checkpoint, tmp_path) -> None:
    out = tmp_path / "context"
    args = [
        "analyze",
        "context",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(world / "train.json"),
        "--out",
        str(out),
        "--num-samples",
        "30",
        "--clusters",
        "3",
        "--batch-size",
        "8",
    ]
    assert main(args) == 0
    result = json.loads((out / "context.json").read_text())
    for name in (
        "context_clusters.png",
        "context_nearest.png",
        "routing_vs_context.png",
        "context_clusters.md",
    ):
        assert (out / name).stat().st_size > 0
    vectors = np.load(out / "context_vectors.npz")
    assert result["num_samples"] == 30 == len(vectors["ids"]) and result["block"] == 2
    assert len(result["clusters"]) == 3 and sum(c["size"] for c in result["clusters"]) == 30
    r = result["routing_correlation"]
    assert r["pearson_r"] == pytest.approx(pairwise_correlation(vectors["contexts"], vectors["routes"]))
    assert r["pairs"] == 30 * 29 // 2 and r["paper_r"] == 0.76
    ids = list(vectors["ids"])
    for row in result["clusters"]:
        assert 1 <= len(row["nearest"]) <= 4
        assert all(vectors["labels"][ids.index(item["id"])] == row["cluster"] for item in row["nearest"])
        assert sum(row["families"].values()) == row["size"]
    markdown = (out / "context_clusters.md").read_text()
    assert "## Cluster 2" in markdown and result["clusters"][0]["nearest"][0]["id"] in markdown


@pytest.mark.parametrize("method", ["full", "lora"])
def test_context_refuses_a_checkpoint_without_comoe_blocks_in_one_line_before_writing(
    world, tmp_path, capsys, method
) -> None:
    model = covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny")
    covft.apply_vft(model, method)
    checkpoint = tmp_path / method
    model.save_pretrained(checkpoint)
    out = tmp_path / "context"
    argv = ["analyze", "context", "--checkpoint", str(checkpoint), "--data", str(world / "train.json")]
    assert main([*argv, "--out", str(out), "--num-samples", "4"]) == 2
    err = capsys.readouterr().err
    assert (
        "the model has no CoMoE blocks" in err and f"method is {method!r}" in err and "method 'covft'" in err
    )
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(UserError, match="no CoMoE blocks"):
        resolve_block(covft.build_model(str(checkpoint)), "last")


def test_context_refuses_a_bad_count_before_loading(world, checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "context"
    argv = ["analyze", "context", "--checkpoint", str(checkpoint), "--data", str(world / "train.json")]
    assert main([*argv, "--out", str(out), "--clusters", "0"]) == 2
    assert "--clusters must be >= 1, got 0" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--block", "first"]) == 2
    assert "--block must be last, mean or a block index" in capsys.readouterr().err
    assert not out.exists()
