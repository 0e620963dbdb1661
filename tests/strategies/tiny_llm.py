"""The tiny model and logits the LLM-side tests (LoRA, QLoRA) share."""

from __future__ import annotations

import torch

import covft
from tests.conftest import make_samples

LLM_LINEARS = 2 * 7
"""Linears of tiny-test's LLM that get an adapter: 2 decoder layers x (q, k, v, o, gate, up, down)."""


def tiny(method: str = "freeze", **options) -> covft.CovftModel:
    """tiny-test with a 2-block tower and ``method`` applied with ``options``, in eval mode."""
    model = covft.build_model("tiny-test", vision_layers=2, seed=0, text_encoder="random-tiny")
    return covft.apply_vft(model, method, **options).eval()


def logits(model) -> torch.Tensor:
    """The model's logits on the shared samples (collated by the model: CoVFT also needs the instruction)."""
    inputs = model.collate(make_samples())
    del inputs["labels"]
    with torch.no_grad():
        return model(**inputs).logits
