"""Generation and evaluation: benchmark items in, predictions, scores and paper-layout reports out.

:func:`predict` runs greedy, batched generation over contract items (docs/benchmark-records.md):
the item's ``prompt`` is the human turn (``"<image>\\n"`` prepended when the item has an image) and
the item's ``context`` is the router text its protocol built (:mod:`covft.eval.protocol`); the
router reads :func:`covft.data.contract.router_context` of the sample, the function training uses.
Predictions are appended to a JSONL cache as batches finish; a rerun generates only what the cache
lacks.

:func:`evaluate` does that for several benchmarks, scores them and writes ``results.json``,
``predictions/<benchmark>.jsonl`` and ``results.md`` (the paper's 12-column table). The
``covft eval`` command and the demo both call it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from covft.data.contract import IMAGE_PLACEHOLDER
from covft.errors import UserError
from covft.eval.cache import append_predictions, read_cache
from covft.eval.items import UNIT_KEYS, collect_items, parse_benchmarks, shuffle_images

__all__ = [  # what items need is covft.eval.items'; re-exported for the callers of this module
    "DEFAULT_MAX_NEW_TOKENS",
    "ResultsFileError",
    "UNIT_KEYS",
    "build_sample",
    "collect_items",
    "evaluate",
    "generate_batch",
    "load_results",
    "parse_benchmarks",
    "predict",
    "scores_of",
    "shuffle_images",
    "to_model",
]

DEFAULT_MAX_NEW_TOKENS = 128
"""LLaVA-1.5's evaluation scripts generate at most 128 new tokens (greedy stops earlier at EOS)."""
RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"
PREDICTIONS_DIR = "predictions"
SETTINGS_FILE = "eval_settings.json"


# --------------------------------------------------------------------------- samples and context


def build_sample(item: Mapping[str, Any]) -> dict[str, Any]:
    """The collator sample for one contract item: its prompt as the single human turn.

    ``"<image>\\n"`` is prepended when the item has an image (loaded here, RGB). The assistant
    prefix is added by the collator (``for_generation=True``). The item's ``context`` (its
    protocol's router text; the prompt when it has none) rides along for the router.
    """
    if "prompt" not in item:
        raise KeyError(f"item {item.get('id')!r} has no 'prompt' (see docs/benchmark-records.md)")
    from PIL import Image

    ref = item.get("image")
    # an ImageRef (or anything with .load()) is loaded; a PIL image, whose .load() returns its
    # pixel access, is used as it is
    image = (
        ref.load() if ref is not None and not isinstance(ref, Image.Image) and hasattr(ref, "load") else ref
    )
    prompt = str(item["prompt"])
    value = f"{IMAGE_PLACEHOLDER}\n{prompt}" if image is not None else prompt
    return {
        "id": str(item["id"]),
        "image": image,
        "conversations": [{"from": "human", "value": value}],
        "context": str(item.get("context") or prompt),
    }


def to_model(batch: dict, model: Any) -> dict:
    """Move a batch to the model's device; floating tensors (pixels) take the model's dtype."""
    param = next(model.llava.parameters())
    moved = {}
    for key, value in batch.items():
        if value.is_floating_point():
            moved[key] = value.to(device=param.device, dtype=param.dtype)
        else:
            moved[key] = value.to(param.device)
    return moved


def generate_batch(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    template: str | None = None,
) -> list[str]:
    """Greedy answers for one batch of items: the decoded new tokens, stripped."""
    samples = [build_sample(item) for item in items]
    batch = model.collate(samples, template=template, for_generation=True)
    batch = to_model(batch, model)
    output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    texts = model.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [text.strip() for text in texts]


def predict(
    model: Any,
    items: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    desc: str = "generate",
    template: str | None = None,
) -> list[dict[str, Any]]:
    """Greedy predictions for ``items``; returns records (each item plus ``prediction``), in order.

    With ``cache`` (a JSONL path), predictions already there are reused and new ones are appended
    after every batch, so an interrupted run continues where it stopped.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids = [str(item["id"]) for item in items]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
        raise ValueError(
            f"item ids must be unique (predictions are cached by id); repeated: {duplicates[:5]}"
        )
    cache_path = Path(cache) if cache is not None else None
    done: dict[str, str] = {}
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        known = read_cache(cache_path)
        done = {i: known[i] for i in ids if i in known}
    todo = [item for item in items if str(item["id"]) not in done]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(items), initial=len(done), desc=desc, disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            texts = generate_batch(model, chunk, max_new_tokens=max_new_tokens, template=template)
            pairs = [(str(item["id"]), text) for item, text in zip(chunk, texts, strict=True)]
            done.update(pairs)
            if cache_path is not None:
                append_predictions(cache_path, pairs)
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return [{**item, "prediction": done[str(item["id"])]} for item in items]


# --------------------------------------------------------------------------- evaluation


def _check_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix predictions of different models or settings in one output directory."""
    path = out_dir / SETTINGS_FILE
    if path.is_file() and not overwrite:
        saved = json.loads(path.read_text(encoding="utf-8"))
        # both ways: a setting only the saved run had (e.g. --shuffle-images) is a change too
        changed = {
            k: (saved.get(k), settings.get(k))
            for k in saved.keys() | settings.keys()
            if saved.get(k) != settings.get(k)
        }
        if changed:
            raise ValueError(
                f"{out_dir} holds predictions made with other settings {changed} (saved, now); "
                "use another output directory or overwrite=True (--overwrite) to start afresh"
            )
    if overwrite and (out_dir / PREDICTIONS_DIR).is_dir():
        for file in (out_dir / PREDICTIONS_DIR).glob("*.jsonl"):
            file.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def evaluate(
    model: Any,
    items_by_benchmark: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str | os.PathLike[str],
    *,
    run_name: str = "model",
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate, score and report every benchmark; returns the content of ``results.json``.

    ``items_by_benchmark`` maps benchmark names (``covft.eval.BENCHMARKS``; a suite uses the
    same names) to contract items. Writes into ``out_dir``: ``predictions/<name>.jsonl`` (also
    the resume cache), ``results.json`` (per-benchmark scores with breakdowns and the summary:
    MME raw, G / K / V / Avg with MME / (2 x its subtasks scored), recorded as ``mme_subtasks``)
    and ``results.md`` (the paper's table). ``settings``
    (e.g. the checkpoint path) are recorded with the items' protocol (:func:`covft.eval.protocol.describe`);
    rerunning with different ones into the same directory is refused unless ``overwrite``.
    """
    from covft.eval.benchmarks import BENCHMARKS
    from covft.eval.protocol import describe
    from covft.eval.report import markdown_table, mme_subtasks_in, summarize
    from covft.eval.scoring import score
    from covft.models.checkpoint import prediction_identity

    unknown = sorted(set(items_by_benchmark) - set(BENCHMARKS))
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    if not items_by_benchmark:
        raise ValueError("evaluate() got no benchmarks")
    out = Path(out_dir)
    recorded = {
        "run": run_name,
        "max_new_tokens": max_new_tokens,
        **prediction_identity(model),  # the cache belongs to these weights, not to a path
        **describe(items_by_benchmark),
        **dict(settings or {}),
    }
    _check_settings(out, recorded, overwrite)
    scores: dict[str, dict[str, Any]] = {}
    ordered = [name for name in BENCHMARKS if name in items_by_benchmark]
    for name in ordered:
        items = items_by_benchmark[name]
        if not items:
            raise ValueError(f"benchmark {name!r} has no items")
        records = predict(
            model,
            items,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            cache=out / PREDICTIONS_DIR / f"{name}.jsonl",
            progress=progress,
            desc=name,
        )
        scores[name] = score(name, records)
    values = {name: result["score"] for name, result in scores.items()}
    subtasks = mme_subtasks_in(items_by_benchmark.get("mme", ()))
    results = {
        "run": run_name,
        "settings": recorded,
        "scores": scores,
        "summary": summarize(values, subtasks),
    }
    (out / RESULTS_FILE).write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    lines = [
        f"# Evaluation: {run_name}\n",
        markdown_table({run_name: values}, subtasks),
        "\n| benchmark | metric | n | score |",
    ]
    lines.append("|---|---|---:|---:|")
    lines += [f"| {n} | {s['metric']} | {s['n']} | {s['score']:.2f} |" for n, s in scores.items()]
    (out / REPORT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results


class ResultsFileError(UserError, ValueError):
    """A ``results.json`` that :func:`evaluate` did not write (not UTF-8, not JSON, no scores)."""

    exit_status = 2  # like `covft compare`'s other input errors


def load_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run directory's ``results.json`` (written by :func:`evaluate`); a file that is not
    one raises :class:`ResultsFileError` naming it and what is wrong with it."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not an evaluated run (covft eval writes it)")
    fix = f"Fix: pass a run directory that covft eval wrote (or rerun covft eval --out {run_dir})"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ResultsFileError(f"{path} is not UTF-8 text (byte {error.start}). {fix}") from error
    except json.JSONDecodeError as error:
        raise ResultsFileError(
            f"{path} is not valid JSON at line {error.lineno}:{error.colno} ({error.msg}). {fix}"
        ) from error
    scores = results.get("scores") if isinstance(results, dict) else None
    entries = scores.values() if isinstance(scores, dict) else ()
    if not entries or not all(
        isinstance(e, dict) and isinstance(e.get("score"), int | float) for e in entries
    ):
        raise ResultsFileError(
            f'{path} is not an evaluated run\'s results.json: it has no "scores" with a score per benchmark. {fix}'
        )
    return results


def scores_of(results: Mapping[str, Any]) -> dict[str, float]:
    """``{benchmark: score}`` of a results mapping (MME raw, as :func:`covft.eval.summarize` takes)."""
    return {name: float(entry["score"]) for name, entry in results["scores"].items()}


def mme_subtasks_of(results: Mapping[str, Any]) -> int:
    """The MME subtasks a results mapping's summary was averaged over (10, the paper's, when an
    older ``results.json`` does not record them)."""
    from covft.eval.report import MME_SUBTASKS

    return int(results.get("summary", {}).get("mme_subtasks", MME_SUBTASKS))
