"""One router-text policy for training and evaluation, and the protocols that apply it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import covft
from covft.data.contract import context_text, router_text
from covft.eval.benchmarks import get_adapter
from covft.eval.generate import build_sample
from covft.eval.protocol import LLAVA15_ROUTER, PROTOCOLS, describe, get_protocol


def test_router_text_removes_image_cut_and_phrases_and_collapses_space() -> None:
    assert (
        router_text(["<image>\nWhat is it?\nAnswer briefly.", "  And why? "])
        == "What is it? Answer briefly. And why?"
    )
    assert router_text(["Q?\nAnswer briefly."], remove=("\nAnswer briefly.",)) == "Q?"
    assert router_text(["Q?\n(A) cat\n(B) dog\nPick."], cut=r"\([A-Z]\).*") == "Q? Pick."  # per line
    conversation = [
        {
            "from": "human",
            "value": "<image>\nWhat colour?\nAnswer the question using a single word or phrase.",
        },
        {"from": "gpt", "value": "Red"},
        {"from": "human", "value": "And the shape?"},
    ]
    # training keeps the instruction inside the human turns and never sees the answers
    assert (
        context_text(conversation)
        == "What colour? Answer the question using a single word or phrase. And the shape?"
    )


def test_llava15_router_text_is_training_text_except_where_the_release_drops_the_instruction(
    data_root: Path,
) -> None:
    """The router sees, at evaluation, what it saw in training for the same human turn, except for
    the benchmarks where the CoVFT release's scripts cut the instruction (and omni's options)."""
    for name in ("gqa", "textvqa", "mme", "ai2d", "realworldqa", "mmbench_en", "mmvp", "cvbench_coco"):
        adapter = get_adapter(name)
        item = adapter.load(adapter.folder(data_root), 1)[0]
        training = context_text([{"from": "human", "value": f"<image>\n{item['prompt']}"}])
        if name in LLAVA15_ROUTER:
            suffix = LLAVA15_ROUTER[name].remove[0].strip()
            assert training == f"{item['context']} {suffix}"
        else:
            assert item["context"] == training


def test_collator_encodes_the_items_router_text(data_root: Path) -> None:
    model = covft.apply_vft(
        covft.build_model("tiny-test", vision_layers=2, text_encoder="random-tiny"), "covft"
    )
    adapter = get_adapter("cvbench_omni3d")
    items = adapter.load(adapter.folder(data_root))
    batch = model.collate([build_sample(item) for item in items], for_generation=True)
    expected = model.text_encoder.tokenizer([i["context"] for i in items], padding=True, return_tensors="pt")
    assert torch.equal(batch["context_input_ids"], expected["input_ids"])
    assert "(A)" not in items[0]["context"] and "(A)" in items[0]["prompt"]


def test_protocols_are_named_and_described(data_root: Path) -> None:
    assert list(PROTOCOLS) == ["llava15", "lmms-eval", "suite"]
    assert get_protocol("lmms-eval").scoring == "official" and get_protocol("suite").scoring == "tolerant"
    with pytest.raises(KeyError, match="unknown protocol 'vlmevalkit'; known: llava15, lmms-eval, suite"):
        get_protocol("vlmevalkit")
    adapter = get_adapter("textvqa")
    items = {"textvqa": adapter.load(adapter.folder(data_root)), "gqa": []}
    assert describe(items) == {"protocol": "llava15", "textvqa_ocr_tokens": True}
    assert describe({"gqa": [{"id": "1", "prompt": "p"}]}) == {"protocol": "suite"}
