"""Loading a covft checkpoint: the options that apply to it are honoured, any other is refused by name."""

from __future__ import annotations

import pytest
import torch

import covft
from covft.data.templates import VICUNA_SYSTEM
from covft.models import precision
from tests.conftest import make_samples


@pytest.fixture
def checkpoint_dir(tmp_path):
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "lora"
    )
    model.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.mark.parametrize(
    "load", [covft.build_model, covft.load_pretrained], ids=["build_model", "load_pretrained"]
)
def test_dtype_device_template_and_max_length_apply_to_a_checkpoint(checkpoint_dir, load):
    model = load(
        str(checkpoint_dir),
        dtype="bfloat16",
        device="cpu",
        template="plain",
        max_length=64,
        text_encoder="random-tiny",
    )
    assert model.strategy.name == "lora"
    assert precision.dtype_of(model.llava) == torch.bfloat16
    rotary = [b for n, b in model.llava.named_buffers() if n.endswith("inv_freq")]
    assert rotary and all(b.dtype == torch.float32 for b in rotary)
    assert (model.template, model.max_length) == ("plain", 64)
    text = model.tokenizer.decode(model.collate(make_samples()[:1])["input_ids"][0])
    assert VICUNA_SYSTEM not in text and "USER:" not in text  # rendered with the plain template


def test_an_option_a_checkpoint_does_not_take_is_refused_by_name(checkpoint_dir):
    with pytest.raises(
        TypeError, match=r"covft checkpoint, which takes device, dtype, .*; not no_such_option, seed"
    ):
        covft.build_model(str(checkpoint_dir), dtype="bfloat16", no_such_option=1, seed=0)
    with pytest.raises(TypeError, match="no_such_option"):
        covft.load_pretrained(checkpoint_dir, no_such_option=1)
