"""Keeps benchmarks/bench_owner.py from rotting: the three routing layouts run on a tiny geometry."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_owner.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_owner", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mlp", ["clip", "swiglu"])
def test_tiles_and_packed_route_like_batched(mlp):
    result = _load().measure(
        [
            "--mlp",
            mlp,
            "--tokens",
            "6",
            "--dim",
            "8",
            "--hidden",
            "16",
            "--text-dim",
            "8",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]
    )
    assert set(result["seconds"]) == {"batched", "tiles", "packed"}
    assert all(value > 0 for value in result["seconds"].values())
    assert result["max_diff"]["batched"] == 0.0
    assert result["max_diff"]["tiles"] < 1e-5 and result["max_diff"]["packed"] < 1e-5
