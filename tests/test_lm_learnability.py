"""Keeps benchmarks/lm_learnability.py honest: its items answer what they ask, its loop learns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from covft.recipes.demo.pretrain import SHIPPED


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("lm_learnability")


@pytest.fixture(scope="module")
def tokenizer(script):
    return script._tokenizer(SHIPPED)


def test_membership_items_answer_whether_the_query_is_listed(script) -> None:
    rng, tokens = np.random.default_rng(0), np.arange(100, 160)
    answers = []
    for _ in range(200):
        ids, yes, kind = script.membership_item(rng, tokens, 10, separator=7)
        listed, separator, query = ids[:10], ids[10], ids[11]
        assert kind == "membership" and separator == 7 and len(set(listed)) == 10
        assert set(listed) <= set(tokens.tolist()) and query in tokens
        assert (query in listed) == yes
        answers.append(yes)
    assert 0.35 < np.mean(answers) < 0.65


def test_a_suffix_puts_the_yes_no_answer_prompt_between_query_and_answer(script, tokenizer) -> None:
    prompt = script.answer_prompt(tokenizer, 15)
    assert tokenizer.decode(list(prompt)) == " Please answer yes or no.\nASSISTANT:"
    assert script.answer_prompt(tokenizer, 2) == prompt[-2:] and script.answer_prompt(tokenizer, 0) == ()
    with pytest.raises(ValueError, match="--suffix 16: the answer prompt has 15 tokens"):
        script.answer_prompt(tokenizer, 16)
    rng, tokens = np.random.default_rng(3), np.arange(100, 160)
    for _ in range(50):
        ids, yes, _ = script.membership_item(rng, tokens, 10, 7, prompt)
        assert len(ids) == 12 + 15 and tuple(ids[12:]) == prompt and (ids[11] in ids[:10]) == yes


def test_existence_items_answer_from_the_description_they_carry(script, tokenizer) -> None:
    rng, answers = np.random.default_rng(1), []
    for _ in range(60):
        ids, yes, kind = script.words_item(rng, tokenizer, ("existence",))
        text = tokenizer.decode(ids)
        assert kind == "existence" and text.startswith("USER: Image: ") and text.endswith("ASSISTANT:")
        asked = re.search(r"Is there a (\w+ \w+) in the image\?", text).group(1)
        description = text.split("\n")[0]
        # objects are described "size [texture] colour shape": the asked pair is adjacent iff present
        assert (f" {asked} " in description or f" {asked}." in description) == yes
        answers.append(yes)
    assert 0.3 < np.mean(answers) < 0.7


def test_question_first_items_carry_the_same_question_and_scene_in_the_other_order(script, tokenizer) -> None:
    for seed in range(20):
        default = tokenizer.decode(
            script.words_item(np.random.default_rng(seed), tokenizer, ("existence",))[0]
        )
        ids, yes, _ = script.words_item(np.random.default_rng(seed), tokenizer, ("existence",), None, True)
        first = tokenizer.decode(ids)
        description, question = default.removeprefix("USER: ").split("\n")[:2]
        assert first == f"USER: {question}\n{description}\nASSISTANT:"
        assert first.split("\n")[1].startswith("Image: ") and " in the image?" in first.split("\n")[0]


def test_control_items_answer_whether_the_word_is_described(script, tokenizer) -> None:
    rng = np.random.default_rng(2)
    for _ in range(40):
        ids, yes, _ = script.words_item(rng, tokenizer, ("existence",), word="circle")
        assert ("circle" in tokenizer.decode(ids).split("\n")[0]) == yes


def test_fresh_lm_takes_the_starting_points_architecture_with_overrides(script) -> None:
    text = json.loads((SHIPPED / "covft_config.json").read_text())["llava_config"]["text_config"]
    model = script.fresh_lm(SHIPPED, 1024)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (
        text["num_hidden_layers"],
        text["hidden_size"],
    )
    wider = script.fresh_lm(SHIPPED, 1024, layers=2, width=64)
    assert (wider.config.num_hidden_layers, wider.config.hidden_size) == (2, 64)
    assert wider.config.intermediate_size == round(text["intermediate_size"] * 64 / text["hidden_size"])
    default, wide_init = (script.fresh_lm(SHIPPED, 1024, init_range=r) for r in (None, 0.088))
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert default.config.initializer_range == 0.02 and wide_init.config.initializer_range == 0.088
    assert abs(default.state_dict()[weight].std().item() - 0.02) < 0.002
    assert abs(wide_init.state_dict()[weight].std().item() - 0.088) < 0.005


def test_the_control_is_learned_and_the_curve_is_recorded(script, tmp_path: Path) -> None:
    out = tmp_path / "control.json"
    args = ["control", "--steps", "80", "--every", "40", "--held-out", "64", "--batch-size", "16"]
    assert script.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [point["step"] for point in result["curve"]] == [40, 80]
    assert result["settings"]["task"] == "control" and result["settings"]["layers"] == 3
    # a fixed word's presence is learned within 80 steps (seeds 0 and 2: 94 %, 100 %): the loop itself works
    assert result["curve"][-1]["accuracy"] >= max(0.8, result["majority"] + 0.15)
    assert set(result["curve"][-1]["per_kind"]) == {"existence"}


def test_unknown_task_is_refused(script) -> None:
    with pytest.raises(ValueError, match="unknown task 'count'"):
        script.run("count", steps=1)
    with pytest.raises(ValueError, match="--suffix is for the membership task, not 'words'"):
        script.run("words", steps=1, suffix=2)
    with pytest.raises(ValueError, match="--question-first is for the words and control tasks"):
        script.run("membership", steps=1, question_first=True)


def test_zero_steps_evaluates_once_untrained(script) -> None:
    result = script.run("membership", steps=0, held_out=32, log=lambda _: None)
    assert [(point["step"], point["loss"]) for point in result["curve"]] == [(0, None)]
    assert 0.0 <= result["curve"][0]["accuracy"] <= 1.0 and result["settings"]["lm"] is None


def test_text_loss_adds_the_prompts_next_token_loss(script) -> None:
    losses = {}
    for weight in (0.0, 1.0):
        result = script.run(
            "control", steps=1, every=1, held_out=8, batch_size=4, text_loss=weight, log=lambda _: None
        )
        losses[weight] = result["curve"][0]["loss"]
        assert result["settings"]["text_loss"] == weight
    # an untrained LM's answer loss is about log 2; its next-token loss over 1,024 tokens about log 1024
    assert losses[0.0] < 1.0 and 5.0 < losses[1.0] - losses[0.0] < 8.0
