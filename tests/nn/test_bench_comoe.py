"""Keeps benchmarks/bench_comoe.py from rotting: its measuring function runs on a tiny geometry."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_comoe.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_comoe", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_on_a_tiny_geometry_and_fused_saves_less():
    bench = _load()
    results = bench.run_benchmark(batch=2, tokens=7, dim=8, hidden=32, experts=4, repeats=2, warmup=1)
    fused, loop = results["fused"], results["loop"]
    assert fused.median_s > 0 and loop.median_s > 0
    assert fused.peak_bytes is None and loop.peak_bytes is None  # CPU: no CUDA peak
    assert results["max_abs_diff"] < 1e-5
    # Saved for backward, float32: fused keeps x, the fc1 output and the gates; the loop keeps x,
    # per expert the fc1 output, the sigmoid and the activation, the stacked outputs and the gates.
    rows, gates_bytes = 2 * 7, 2 * 4 * 4
    assert fused.saved_bytes == 4 * rows * (8 + 4 * 32) + gates_bytes
    assert loop.saved_bytes == 4 * rows * (8 + 4 * 3 * 32 + 4 * 8) + gates_bytes
    assert results["memory_saving"] == 1 - fused.saved_bytes / loop.saved_bytes
    table = bench.format_results(results)
    assert "loop time / fused time" in table and "activation memory saving" in table
