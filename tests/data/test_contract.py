"""The sample contract: one definition of roles, the image placeholder, image counts and the router text."""

from __future__ import annotations

import pytest

from covft.data.contract import image_problem, prompt_text, role_of, router_context
from covft.data.errors import BadSampleError
from covft.data.records import parse_record
from covft.data.templates import render


def test_roles_are_llava_names_with_chat_aliases() -> None:
    assert [role_of({"from": r}) for r in ("human", "user", "gpt", "assistant")] == [
        "human",
        "human",
        "gpt",
        "gpt",
    ]
    assert role_of({"from": "bot"}) is None and role_of({"value": "x"}) is None and role_of("human") is None


def test_templates_accept_exactly_the_roles_the_dataset_accepts() -> None:
    aliased = [{"from": "user", "value": "<image>\nQ?"}, {"from": "assistant", "value": "A."}]
    canonical = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]
    assert render(aliased, "vicuna_v1", eos_token="</s>") == render(canonical, "vicuna_v1", eos_token="</s>")
    assert (
        parse_record({"id": "a", "image": "x.png", "conversations": aliased}, "f", 1).conversations
        == canonical
    )
    bad = [{"from": "bot", "value": "Q?"}, {"from": "gpt", "value": "A."}]
    with pytest.raises(BadSampleError, match=r"unknown role 'bot'.*'human', 'user', 'gpt', 'assistant'"):
        render(bad, "vicuna_v1", eos_token="</s>")
    with pytest.raises(BadSampleError, match=r"unknown role 'bot'.*'human', 'user', 'gpt', 'assistant'"):
        parse_record({"id": "b", "conversations": bad}, "f", 1)


def test_image_counts_and_placeholders() -> None:
    turns = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]
    assert image_problem(turns, 1) is None
    assert image_problem(turns, 0)[0] == "1 <image> placeholder(s) but 0 image(s)"
    assert image_problem(turns, 2)[0] == "1 <image> placeholder(s) but 2 image(s)"
    assert image_problem([{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}], 0) is None
    text_only = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A."}]
    record = parse_record({"id": "e", "image": [], "conversations": text_only}, "f", 1)
    assert record.images == ()  # an empty image list is a text-only sample


def test_router_context_is_one_text_for_training_samples_and_evaluation_items() -> None:
    sample = {"conversations": [
        {"from": "user", "value": "<image>\nWhat colour?\nAnswer briefly."},
        {"from": "gpt", "value": "red"},
        {"from": "human", "value": "  And  the shape? "},
    ]}  # fmt: skip
    assert router_context(sample) == "What colour? Answer briefly. And the shape?"
    assert router_context({**sample, "context": "What colour?"}) == "What colour?"
    item = {"id": "i", "prompt": "What colour?\nAnswer briefly."}
    assert router_context(item) == "What colour? Answer briefly."
    assert router_context({**item, "context": " What\ncolour? "}) == "What colour?"
    assert prompt_text("<image>\nWhat colour? ") == "What colour?"
