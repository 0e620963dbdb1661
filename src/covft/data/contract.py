"""The sample contract: what a sample may hold, and the one text the router reads from it.

A *sample* is what the collator takes, whether it came from a training file
(:class:`covft.data.dataset.LlavaDataset`) or from an evaluation item (:mod:`covft.eval.generate`)::

    {"id": str, "image": an image, a list of images or None,
     "conversations": [{"from": role, "value": str}, ...],
     "context": optional router text}

- roles: :data:`ROLES` (LLaVA's ``human``/``gpt``; ``user``/``assistant`` mean the same);
- images: one image, a list of images, or ``None``; exactly one :data:`IMAGE_PLACEHOLDER` in the
  human turns per image (:func:`image_problem`), in the order of the list; a dataset may cap the
  count (:func:`multi_image_error`);
- the router's text: :func:`router_context`, the same function for training, evaluation,
  lmms-eval and the downstream study, so a router never reads one text in training and another
  in evaluation.

The dataset checks the contract when a file is opened; the templates and the collator check the
same rules (for samples built in code) with the same definitions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from covft.data.errors import MultiImageNotSupportedError

IMAGE_PLACEHOLDER = "<image>"
HUMAN = "human"
ASSISTANT = "gpt"
ROLES = {"human": HUMAN, "user": HUMAN, "gpt": ASSISTANT, "assistant": ASSISTANT}
"""Every accepted value of a turn's ``from`` and the role it means."""
ROLE_FIX = f"use one of {list(ROLES)} for 'from'"
"""What to do about a turn whose role is not one of :data:`ROLES`."""


def role_of(turn: Any) -> str | None:
    """The role (:data:`HUMAN` or :data:`ASSISTANT`) of a turn, ``None`` when it has no valid one."""
    role = turn.get("from") if isinstance(turn, Mapping) else None
    return ROLES.get(role) if isinstance(role, str) else None


def image_problem(conversations: Sequence[Mapping[str, Any]], images: int) -> tuple[str, str] | None:
    """Why a conversation with ``images`` images breaks the contract, as (reason, fix); ``None`` if not."""
    placeholders = sum(
        turn["value"].count(IMAGE_PLACEHOLDER) for turn in conversations if isinstance(turn.get("value"), str)
    )
    if placeholders == images:
        return None
    return (
        f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {images} image(s)",
        f"put exactly one {IMAGE_PLACEHOLDER} in the human turns per image (LLaVA puts it in the first "
        "turn) or fix the 'image' field",
    )


def prompt_text(turn: str) -> str:
    """A human turn as a bare prompt: without :data:`IMAGE_PLACEHOLDER`, stripped."""
    return turn.replace(IMAGE_PLACEHOLDER, "").strip()


def router_text(turns: Iterable[str], *, remove: Iterable[str] = (), cut: str | None = None) -> str:
    """The text CoVFT's context encoder (and QA-ViT's / Q-MoE's instruction encoder) reads.

    The one policy for training and evaluation: each human turn loses ``<image>``; then every
    match of the regular expression ``cut`` (``.`` stops at line ends) and every occurrence of the
    strings in ``remove`` are deleted; whitespace is collapsed and the turns are joined by spaces.
    Training uses neither ``cut`` nor ``remove`` (:func:`context_text`); an evaluation protocol
    (:mod:`covft.eval.protocol`) names what its benchmarks delete, as the paper's scripts did.
    """
    pattern = re.compile(cut) if cut is not None else None
    parts = []
    for turn in turns:
        text = turn.replace(IMAGE_PLACEHOLDER, " ")
        if pattern is not None:
            text = pattern.sub("", text)
        for phrase in remove:
            text = text.replace(phrase, "")
        parts.append(" ".join(text.split()))
    return " ".join(p for p in parts if p)


def context_text(conversations: Iterable[Mapping[str, Any]]) -> str:
    """The router text of a training conversation: :func:`router_text` of every human turn.

    Answers never reach it (method.md 2.2), so the router cannot peek at the target; the
    instructions inside the human turns (e.g. llava_v1_5_mix665k's "Answer the question using a
    single word or phrase.") are kept.
    """
    return router_text(turn["value"] for turn in conversations if role_of(turn) == HUMAN)


def router_context(sample: Mapping[str, Any]) -> str:
    """The text the router reads for a sample or an evaluation item: the one definition.

    Its ``context`` when it has one (an evaluation item's text as its protocol built it), else its
    human turns (:func:`context_text`, a training sample), else its ``prompt`` (an item without a
    protocol context); always through :func:`router_text`.
    """
    context = sample.get("context")
    if context:
        return router_text([str(context)])
    if "conversations" in sample:
        return context_text(sample["conversations"])
    return router_text([str(sample["prompt"])])


def multi_image_error(images: int, where: str, limit: int = 1) -> MultiImageNotSupportedError:
    """Why a sample with ``images`` > ``limit`` images (at ``where``) is refused."""
    return MultiImageNotSupportedError(
        f"{where}: {images} images in one sample, more than the {limit} this dataset was opened for "
        "(max_images). Fix: open it with max_images=None (every family covft trains takes several "
        "images per sample), split the sample into one sample per image, or drop it"
    )
