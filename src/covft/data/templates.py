"""Conversation templates: how a LLaVA conversation becomes token segments with training targets.

A template turns ``[{"from": "human"|"gpt", "value": str}, ...]`` into a list of
:class:`Segment` (text, is_target). Segments are tokenised one by one so the label mask is
exact by construction (no offset arithmetic on a rendered string). The same function builds the
evaluation prompt: ``add_generation_prompt=True`` stops after the last human turn and appends the
assistant prefix.

- ``vicuna_v1``: LLaVA-1.5's template (the paper's): system prompt, ``USER: ... ASSISTANT: ...</s>``.
- ``plain``: stage-1 feature alignment: the human turn is reduced to the image, the target is the
  caption followed by a newline.
- ``chat``: the tokenizer's own chat template (for LLMs that ship one, e.g. SmolLM2).
"""

from __future__ import annotations

from dataclasses import dataclass

from covft.data.contract import HUMAN, IMAGE_PLACEHOLDER, ROLE_FIX, context_text, role_of, router_text
from covft.data.errors import BadSampleError

__all__ = ["IMAGE_PLACEHOLDER", "TEMPLATES", "Segment", "context_text", "render", "router_text"]
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TEMPLATES = ("vicuna_v1", "plain", "chat")


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation; ``target`` pieces are what the loss trains on."""

    text: str
    target: bool


def _turns(conversations: list[dict], sample_id: str | None) -> list[dict]:
    """The conversation's turns with their roles as :data:`~covft.data.contract.ROLES` define them."""
    if not conversations:
        raise BadSampleError(
            "empty conversation", sample_id=sample_id, fix="give at least one human turn and one gpt turn"
        )
    turns = []
    for i, turn in enumerate(conversations):
        role = role_of(turn)
        if role is None:
            raise BadSampleError(
                f"turn {i} has unknown role {turn.get('from')!r}", sample_id=sample_id, fix=ROLE_FIX
            )
        if not isinstance(turn.get("value"), str):
            raise BadSampleError(f"turn {i} has no string 'value'", sample_id=sample_id)
        turns.append({"from": role, "value": turn["value"]})
    return turns


def render(
    conversations: list[dict],
    template: str,
    *,
    eos_token: str,
    tokenizer=None,
    add_generation_prompt: bool = False,
    sample_id: str | None = None,
) -> list[Segment]:
    """Render a conversation as segments.

    With ``add_generation_prompt`` the conversation is cut after its last human turn (any later
    answer is dropped) and the assistant prefix is appended: the evaluation prompt. Otherwise the
    conversation must contain at least one gpt turn.
    """
    turns = _turns(conversations, sample_id)
    if add_generation_prompt:
        while turns and turns[-1]["from"] == "gpt":
            turns.pop()
        if not turns:
            raise BadSampleError("no human turn to answer", sample_id=sample_id)
    elif not any(t["from"] == "gpt" for t in turns):
        raise BadSampleError(
            "conversation has no assistant (gpt) turn, so nothing to train on",
            sample_id=sample_id,
            fix="add a gpt answer or drop the sample",
        )
    if template == "vicuna_v1":
        return _vicuna(turns, eos_token, add_generation_prompt)
    if template == "plain":
        return _plain(turns, add_generation_prompt, sample_id)
    if template == "chat":
        return _chat(turns, tokenizer, add_generation_prompt, sample_id)
    raise ValueError(f"unknown template {template!r}; choose from {', '.join(TEMPLATES)}")


def _vicuna(turns: list[dict], eos: str, add_generation_prompt: bool) -> list[Segment]:
    segments = [Segment(VICUNA_SYSTEM + " ", False)]
    for turn in turns:
        if turn["from"] == HUMAN:
            segments.append(Segment(f"USER: {turn['value']} ASSISTANT:", False))
        else:
            segments.append(Segment(f" {turn['value']}{eos}", True))
    if add_generation_prompt and segments[-1].target:
        raise AssertionError("generation prompt must end with a human turn")
    return segments


def _plain(turns: list[dict], add_generation_prompt: bool, sample_id: str | None) -> list[Segment]:
    if len(turns) > 2:  # LLaVA's preprocess_plain asserts one question and one answer
        raise BadSampleError(
            f"the plain (stage-1) template takes one caption turn, this sample has {len(turns)} turns",
            sample_id=sample_id,
            fix="give stage 1 single-turn captioning samples, or train it with a chat template",
        )
    human = turns[0]
    if IMAGE_PLACEHOLDER not in human["value"]:
        raise BadSampleError(
            "the plain (stage-1) template needs an image in the first human turn",
            sample_id=sample_id,
            fix="use captioning samples with '<image>' for stage 1",
        )
    if (images := human["value"].count(IMAGE_PLACEHOLDER)) > 1:
        raise BadSampleError(  # LLaVA's stage 1 replaces the turn by one image token
            f"the plain (stage-1) template takes one image, this sample has {images}",
            sample_id=sample_id,
            fix="give stage 1 single-image captioning samples, or train it with a chat template",
        )
    segments = [Segment(IMAGE_PLACEHOLDER, False)]
    if not add_generation_prompt:
        answer = next(t for t in turns if t["from"] == "gpt")
        segments.append(Segment(answer["value"] + "\n", True))
    return segments


def _chat(turns: list[dict], tokenizer, add_generation_prompt: bool, sample_id: str | None) -> list[Segment]:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat' needs a tokenizer with a chat_template; use 'vicuna_v1' instead")
    messages = [
        {"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in turns
    ]
    segments: list[Segment] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] == "user":
            text = tokenizer.apply_chat_template(
                messages[: i + 1], tokenize=False, add_generation_prompt=True
            )
            target = False
        else:
            text = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            target = True
        if not text.startswith(rendered):
            raise BadSampleError(
                "the tokenizer's chat template does not render conversations incrementally",
                sample_id=sample_id,
                fix="use template 'vicuna_v1'",
            )
        segments.append(Segment(text[len(rendered) :], target))
        rendered = text
    return segments
