"""Keeps benchmarks/gpu_checks.sh, the script a GPU session runs first, from rotting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_checks.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the 7B profile for real")
def test_without_cuda_every_check_says_so_and_the_summary_is_written(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this python3
        "PYTHONPATH": str(SCRIPT.parents[1] / "src"),
        "DEMO_S": "5",  # were the demo started on the CPU, it would run into this limit
        "WORK": str(tmp_path / "work"),
    }
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)], cwd=SCRIPT.parents[1], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["profile", "bench", "demo"]
    assert all("failed (status 2;" in line for line in summary[:2])
    assert summary[2] == "demo: skipped (CUDA is not available), 0 s"
    assert not (tmp_path / "work" / "demo").exists()  # nothing started on the CPU
    assert "CUDA is not available" in (out / "profile.log").read_text()
    assert "CUDA is not available" in (out / "bench.log").read_text()
    assert "gpu none" in (out / "machine.txt").read_text()
    assert len(list(out.iterdir())) <= 8  # what a device call brings back
