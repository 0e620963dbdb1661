"""What a stock export keeps of the checkpoint besides the weights."""

from __future__ import annotations

import json

import covft
from covft.export import export_checkpoint


def test_the_generation_config_of_the_checkpoint_is_exported(tmp_path):
    """As in Qwen/Qwen2.5-VL-7B-Instruct's generation_config.json: a repetition penalty, two eos ids."""
    model = covft.apply_vft(
        covft.build_model("tiny-test", family="qwen2_5_vl", text_encoder="random-tiny"), "bitfit"
    )
    model.llava.generation_config.repetition_penalty = 1.05
    model.llava.generation_config.eos_token_id = [2, 3]
    model.save_pretrained(tmp_path / "ckpt")
    export_checkpoint(tmp_path / "ckpt", tmp_path / "out")
    exported = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert exported["repetition_penalty"] == 1.05 and exported["eos_token_id"] == [2, 3]
