"""Evaluation caches belong to weights, not paths (issue 13, case 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import covft
from covft.cli import main
from covft.eval.benchmarks import ImageRef, write_suite
from covft.models.checkpoint import weights_fingerprint


def tiny(seed: int):
    return covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny", seed=seed)


def test_the_fingerprint_follows_the_weights_not_the_object(tmp_path: Path) -> None:
    model = tiny(0)
    before = weights_fingerprint(model)
    model.save_pretrained(tmp_path / "a")
    assert weights_fingerprint(covft.load_pretrained(tmp_path / "a")) == before
    assert weights_fingerprint(tiny(1)) != before
    with torch.no_grad():
        next(model.llava.parameters()).view(-1)[0] += 1e-3  # one number changed
    assert weights_fingerprint(model) != before


def test_eval_into_the_same_out_after_retraining_the_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    image = ImageRef(image=Image.new("RGB", (16, 16), (200, 30, 30)))
    questions = ["What colour is it?", "Is it round?"]
    gqa = [dict(id=f"q{i}", image=image, prompt=q, context=q, answer="red") for i, q in enumerate(questions)]
    write_suite(suite, "gqa", gqa)
    checkpoint, out = tmp_path / "runs" / "stage2", tmp_path / "eval"
    argv = [
        "eval",
        str(checkpoint),
        "--suite",
        str(suite),
        "--out",
        str(out),
        "--max-new-tokens",
        "2",
        "--no-progress",
    ]
    tiny(0).save_pretrained(checkpoint)
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())["settings"]["weights_sha256"]

    assert main(argv) == 0  # the same weights: the cache is reused
    tiny(1).save_pretrained(checkpoint)  # retrained into the same path
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds predictions made with other settings {'weights_sha256': (" in err and first in err
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["settings"]["weights_sha256"] != first
