"""FSDP2 (``torch.distributed.fsdp.fully_shard``) with 2 CPU processes on covft's CoVFT model.

accelerate does not enable FSDP on CPU (docs/training.md), so the trainer's FSDP path is tested on
GPUs only; this test shards the model itself, as accelerate's FSDP2 plugin does (every encoder
and decoder layer, then the root), so every module covft adds (CoMoE experts, the context
encoder's router, frozen and trainable parameters in one block) is exercised sharded on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.train.conftest import REPO, two_processes
from tests.train.fsdp2_reference import one_process_losses


@pytest.mark.slow
def test_fully_shard_on_two_cpu_processes_equals_one_process_and_resumes(tmp_path: Path) -> None:
    out, checkpoint = tmp_path / "losses.json", tmp_path / "dcp"
    result = two_processes(str(REPO / "tests" / "train" / "fsdp2_worker.py"), str(out), str(checkpoint))
    assert result.returncode == 0, result.stderr[-4000:]
    sharded = json.loads(out.read_text())
    reference = one_process_losses()
    assert sharded["losses"] == pytest.approx(reference, abs=1e-5)
    assert reference[-1] < reference[0]  # it trains
    # the last step redone from the sharded checkpoint of the step before gives the same loss
    assert sharded["resumed_last"] == pytest.approx(sharded["losses"][-1], abs=1e-6)
