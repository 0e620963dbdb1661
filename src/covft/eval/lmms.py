"""An lmms-eval model for covft checkpoints: ``lmms-eval --model covft --model_args pretrained=DIR``.

Install with ``pip install covft[lmms]`` (lmms-eval 0.6 or later); the package's
``lmms_eval.models`` entry point, :func:`manifest`, registers :class:`CovftLMM` as model ``covft``.
lmms-eval is imported only when the class is first used, so importing this module never needs it.
Without ``--device`` the model runs on CUDA when there is one, as lmms-eval's own models do.

The class is a "simple" lmms-eval model: each request carries ``(context, gen_kwargs,
doc_to_visual, doc_id, task, split)``. The context (the task's prompt) is the human turn, and, as
in training, the whole of it (without ``<image>``) is what CoVFT's context encoder reads
(:func:`covft.data.contract.router_context`). Decoding is greedy (the paper evaluates at
temperature 0) and stops at the task's ``until`` strings. Multi-round tasks
(``generate_until_multi_round``) run round by round, each round's prompt and images coming from
the task's ``doc_to_text``, as lmms-eval's own models do.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from covft.data.contract import IMAGE_PLACEHOLDER, prompt_text
from covft.data.templates import render
from covft.eval.generate import DEFAULT_MAX_NEW_TOKENS

INSTALL_HINT = "pip install covft[lmms]"
REGISTERED_NAME = "covft"


def _stop(text: str, until: str | Sequence[str] | None) -> str:
    """Cut ``text`` at the first of the task's ``until`` strings (one string or a list)."""
    cut = len(text)
    for marker in [until] if isinstance(until, str) else until or []:
        if marker:
            position = text.find(marker)
            if position != -1:
                cut = min(cut, position)
    return text[:cut].strip()


class CovftLMMBase:
    """Everything the lmms-eval model does, without lmms-eval (the public class adds its base class).

    ``pretrained`` is anything ``covft.build_model`` takes (a covft checkpoint directory, a local
    Hugging Face LLaVA directory, a preset). ``task_dict`` is filled by lmms-eval (``{task: {split:
    docs}}``) before requests arrive.
    """

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = DEFAULT_MAX_NEW_TOKENS,
        **unused: Any,
    ) -> None:
        from covft.strategies import build_model

        unknown = sorted(unused)
        if unknown:
            raise TypeError(
                f"covft model: unknown model_args {unknown}; valid: pretrained, device, batch_size, max_new_tokens"
            )
        try:
            self.batch_size_per_gpu = int(batch_size)
        except ValueError:
            raise ValueError(f"covft model: batch_size must be an integer, got {batch_size!r}") from None
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"covft model: batch_size must be >= 1, got {batch_size!r}")
        self.max_new_tokens = int(max_new_tokens)
        self.pretrained = str(pretrained)
        self.model = build_model(self.pretrained)
        if device is None:  # lmms-eval passes none unless --device is given; its own models pick CUDA
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device != "cpu":
            self.model.to(device)
        self.model.eval()
        if not hasattr(self, "task_dict"):
            self.task_dict: dict = {}

    # ------------------------------------------------------------------ requests
    def _doc(self, task: str, split: str, doc_id: Any) -> Any:
        try:
            return self.task_dict[task][split][doc_id]
        except (KeyError, IndexError, TypeError):
            raise KeyError(f"covft model: no document {doc_id!r} in task {task!r}, split {split!r}") from None

    def _item(self, args: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A contract item and the generation kwargs from generate_until-shaped request args."""
        context, gen_kwargs, doc_to_visual, doc_id, task, split = args
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else None
        return self._round_item(context, visuals, doc_id, task, split), dict(gen_kwargs or {})

    @staticmethod
    def _round_item(context: str, visuals: Any, doc_id: Any, task: str, split: str, turn: int = 0) -> dict:
        """The contract item of one prompt and its visuals (at most one image)."""
        from covft.eval.benchmarks import ImageRef

        visuals = [v for v in (visuals or []) if v is not None]
        if len(visuals) > 1:
            raise ValueError(
                f"covft model: task {task!r} gives {len(visuals)} images for document {doc_id!r}; "
                "LLaVA-1.5-style covft models take one image per question"
            )
        image = visuals[0] if visuals else None
        if image is not None and not hasattr(image, "convert"):
            raise TypeError(
                f"covft model: task {task!r} gives a {type(image).__name__} visual; only images (PIL) are supported"
            )
        return {
            "id": f"{task}/{split}/{doc_id}/{turn}",
            "image": ImageRef(image=image.convert("RGB")) if image is not None else None,
            "prompt": prompt_text(context),
        }

    def _limit(self, kwargs: dict[str, Any]) -> int:
        """The request's ``max_new_tokens``, else the model's default."""
        return int(kwargs.get("max_new_tokens", self.max_new_tokens))

    def _answer(self, item: dict[str, Any], kwargs: dict[str, Any]) -> str:
        """One greedy answer, cut at the request's ``until`` strings."""
        from covft.eval.generate import generate_batch

        text = generate_batch(self.model, [item], max_new_tokens=self._limit(kwargs))[0]
        return _stop(text, kwargs.get("until"))

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy answers, one per request, cut at the request's ``until`` strings."""
        from tqdm.auto import tqdm

        from covft.eval.generate import generate_batch

        prepared = [self._item(request.args) for request in requests]
        answers: list[str | None] = [None] * len(prepared)
        groups: dict[int, list[int]] = {}
        for index, (_item, kwargs) in enumerate(prepared):
            groups.setdefault(self._limit(kwargs), []).append(index)
        bar = tqdm(total=len(prepared), desc="covft generate_until", disable=self.rank != 0)
        for limit, indices in groups.items():
            for start in range(0, len(indices), self.batch_size_per_gpu):
                chunk = indices[start : start + self.batch_size_per_gpu]
                texts = generate_batch(self.model, [prepared[i][0] for i in chunk], max_new_tokens=limit)
                for index, text in zip(chunk, texts, strict=True):
                    answers[index] = _stop(text, prepared[index][1].get("until"))
                bar.update(len(chunk))
        bar.close()
        return [answer if answer is not None else "" for answer in answers]

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), whether greedy decoding would produce it)`` per request.

        Requests carry ``(context, doc_to_target, doc_to_visual, doc_id, task, split)``; the
        continuation is scored as the assistant's answer after the context's human turn, written
        as the model's template writes answers (:func:`continuation`).
        """
        import torch

        from covft.eval.generate import build_sample, to_model

        results = []
        for request in requests:
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            target = doc_to_target(doc) if callable(doc_to_target) else doc_to_target
            if isinstance(target, list):
                target = target[0]
            item, _ = self._item((context, {}, doc_to_visual, doc_id, task, split))
            prompt = build_sample(item)
            batch = self.model.collate([prompt], for_generation=True)
            batch = to_model(batch, self.model)
            answer = continuation(self.model, str(target))
            target_ids = self.model.tokenizer(answer, add_special_tokens=False)["input_ids"]
            if not target_ids:
                results.append((0.0, True))
                continue
            device = batch["input_ids"].device
            target_tensor = torch.tensor([target_ids], device=device)
            input_ids = torch.cat([batch["input_ids"], target_tensor], dim=1)
            mask = torch.cat([batch["attention_mask"], torch.ones_like(target_tensor)], dim=1)
            with torch.no_grad():
                extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
                logits = self.model(input_ids=input_ids, attention_mask=mask, **extra).logits
            n = len(target_ids)
            log_probs = torch.log_softmax(logits[0, -n - 1 : -1].float(), dim=-1)
            picked = log_probs.gather(1, target_tensor[0].unsqueeze(1)).squeeze(1)
            greedy = bool((log_probs.argmax(dim=-1) == target_tensor[0]).all())
            value = float(picked.sum())
            results.append((value if math.isfinite(value) else float("-inf"), greedy))
        return results

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[list[str]]:
        """Every round's answer per request, as lmms-eval's multi-round models return them.

        Requests carry ``(context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split)``.
        Round 0 answers ``context`` with ``doc_to_visual(doc)``; before each later round
        ``doc_to_text(doc, previous_output=answers, round_idx=r, previous_round_info=info)`` returns
        ``(visuals, context, done, answers, info)``: the next prompt and images, whether the task is
        finished, the answers so far (the task may rewrite them) and state it passes along. Each
        round is a fresh single-turn prompt; the task carries the history in ``context``.
        """
        from tqdm.auto import tqdm

        results = []
        for request in tqdm(requests, desc="covft generate_until_multi_round", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            kwargs = dict(gen_kwargs or {})
            visuals = doc_to_visual(doc) if doc_to_visual is not None else None
            answers: list[str] = []
            info = None
            for round_idx in itertools.count():
                if round_idx > 0:
                    visuals, context, done, answers, info = doc_to_text(
                        doc, previous_output=answers, round_idx=round_idx, previous_round_info=info
                    )
                    answers = list(answers)
                    if done:
                        break
                item = self._round_item(context, visuals, doc_id, task, split, round_idx)
                answers.append(self._answer(item, kwargs))
            results.append(answers)
        return results

    @property
    def rank(self) -> int:
        return int(getattr(self, "_rank", 0))

    @property
    def world_size(self) -> int:
        return int(getattr(self, "_world_size", 1))


_CLASS: type | None = None


def _lmms_class() -> type:
    """Build (once) the lmms-eval model class, importing lmms-eval now."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    try:
        from lmms_eval.api.model import lmms
    except ImportError as error:
        raise ImportError(
            f"covft.eval.lmms.CovftLMM needs lmms-eval, which is not installed: {INSTALL_HINT}"
        ) from error

    class CovftLMM(CovftLMMBase, lmms):
        """covft checkpoints as an lmms-eval model (``--model covft --model_args pretrained=DIR``)."""

        is_simple = True

        def __init__(self, pretrained: str, **kwargs: Any) -> None:
            lmms.__init__(self)
            CovftLMMBase.__init__(self, pretrained, **kwargs)

    CovftLMM.__module__ = __name__
    _CLASS = CovftLMM
    return CovftLMM


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: lmms-eval (0.6 and later) calls it and registers the
    returned manifest, model ``covft`` at :class:`CovftLMM`'s path (imported when first used)."""
    try:
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as error:
        raise ImportError(f"covft's lmms-eval model needs lmms-eval >= 0.6: {INSTALL_HINT}") from error
    return ModelManifest(model_id=REGISTERED_NAME, simple_class_path=f"{__name__}.CovftLMM")


def __getattr__(name: str) -> Any:
    if name == "CovftLMM":
        return _lmms_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def continuation(model: Any, target: str) -> str:
    """``target`` as the model's template writes an answer right after its generation prompt:
    vicuna puts a space before it (``ASSISTANT: A``), chat templates and ``plain`` none."""
    target = target.lstrip()
    turns = [{"from": "human", "value": IMAGE_PLACEHOLDER}, {"from": "gpt", "value": target}]
    eos = model.tokenizer.eos_token or ""
    segments = render(turns, model.template, eos_token=eos, tokenizer=model.tokenizer)
    answer = next(segment.text for segment in segments if segment.target)
    start = answer.find(target)
    return answer[:start] + target if start >= 0 else target
