"""Keeps benchmarks/bench_comoe.py from rotting: its measuring function runs on a tiny geometry."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

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


def test_swiglu_benchmark_on_a_tiny_geometry_saves_the_gate_and_up_outputs_only():
    bench = _load()
    results = bench.run_benchmark(
        mlp="swiglu", batch=2, tokens=7, dim=8, hidden=12, experts=4, repeats=2, warmup=1
    )
    fused, loop = results["fused"], results["loop"]
    assert isinstance(bench.build_fused("swiglu", 4, 8, 12), bench.FusedSwiGLUExperts)
    assert fused.median_s > 0 and loop.median_s > 0
    assert results["max_abs_diff"] < 1e-5
    assert results["geometry"] == {"tokens": 7, "dim": 8, "hidden": 12}
    assert len(fused.times_s) == len(loop.times_s) == 2
    assert results["round_ratios"] == [lo / fu for lo, fu in zip(loop.times_s, fused.times_s, strict=True)]
    # Saved for backward, float32: fused keeps x, the gate and up outputs and the gates; the loop
    # keeps x, per expert the gate output, its SiLU, the up output and their product, the
    # stacked outputs and the gates.
    rows, gates_bytes = 2 * 7, 2 * 4 * 4
    assert fused.saved_bytes == 4 * rows * (8 + 2 * 4 * 12) + gates_bytes
    assert loop.saved_bytes == 4 * rows * (8 + 4 * 4 * 12 + 4 * 8) + gates_bytes


def test_command_line_defaults_to_each_mlp_geometry_and_prints_both_ratios(capsys):
    bench = _load()
    assert bench.GEOMETRIES["swiglu"] == {"tokens": 576, "dim": 1280, "hidden": 3420}  # Qwen2.5-VL vision MLP
    bench.main(
        ["--mlp", "swiglu", "--tokens", "3", "--dim", "8", "--hidden", "12", "--experts", "2"]
        + ["--repeats", "1", "--warmup", "0"]
    )
    printed = capsys.readouterr().out
    assert "CoMoE experts (swiglu): B=2 N=3 d=8 h=12 E=2" in printed
    assert (
        "loop time / fused time" in printed
        and "per repeat" in printed
        and "activation memory saving" in printed
    )


def test_the_chosen_clock_times_every_step():
    bench = _load()
    ticks = iter(range(1000))
    results = bench.run_benchmark(
        batch=1, tokens=3, dim=4, hidden=8, experts=2, repeats=3, warmup=0, clock=lambda: float(next(ticks))
    )
    # Each timed step reads the clock twice, one tick apart.
    assert results["fused"].times_s == results["loop"].times_s == [1.0, 1.0, 1.0]
    assert results["time_ratio"] == 1.0 and results["round_ratios"] == [1.0, 1.0, 1.0]


def test_cuda_without_cuda_is_a_one_line_error(capsys, monkeypatch):
    bench = _load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--device", "cuda", "--tokens", "3", "--dim", "8", "--hidden", "12"])
    assert exit_info.value.code == 2
    assert "CUDA is not available here" in capsys.readouterr().err
