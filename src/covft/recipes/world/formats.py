"""Prompt formats shared by the training mix and the held-out suite (LLaVA-1.5's conventions)."""

from __future__ import annotations

import numpy as np

SHORT_ANSWER = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
YES_NO = "Please answer yes or no."
LETTERS = "ABCDEFGH"


def box_text(box: tuple[float, float, float, float]) -> str:
    """LLaVA's normalised box text, e.g. ``"[0.12, 0.30, 0.45, 0.66]"``."""
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def choose_options(
    answer: str, candidates: list[str], rng: np.random.Generator, n_options: int = 4
) -> tuple[list[str], int]:
    """Up to ``n_options`` options (answer + distinct wrong candidates) in random order, and the answer's index."""
    wrong = [c for c in dict.fromkeys(candidates) if c != answer]
    picks = [wrong[int(i)] for i in rng.permutation(len(wrong))[: n_options - 1]]
    options = [answer, *picks]
    order = [int(i) for i in rng.permutation(len(options))]
    options = [options[i] for i in order]
    return options, options.index(answer)


def option_lines(options: list[str]) -> str:
    """``"A. x\\nB. y"``."""
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def with_hint(question: str, hint: str | None) -> str:
    """The question, preceded by its hint line when there is one."""
    return question if hint is None else f"{hint}\n{question}"


def multiple_choice_context(question: str, options: list[str], hint: str | None = None) -> str:
    """Question (with hint) and option lines: the context-encoder text, without the instruction."""
    return f"{with_hint(question, hint)}\n{option_lines(options)}"


def multiple_choice_prompt(question: str, options: list[str], hint: str | None = None) -> str:
    """LLaVA-1.5's multiple-choice prompt."""
    return f"{multiple_choice_context(question, options, hint)}\n{MULTIPLE_CHOICE}"


def short_answer_prompt(question: str) -> str:
    """LLaVA-1.5's short-answer prompt."""
    return f"{question}\n{SHORT_ANSWER}"


def yes_no_prompt(question: str) -> str:
    """A yes/no question with MME's closing instruction."""
    return f"{question} {YES_NO}"
