"""`covft downstream`: tune on one downstream set per strategy; report specialization and forgetting.

The protocol of "Keeping Yourself is Important in Downstream Tuning MLLMs" (arXiv 2503.04543),
as method.md section 5 fixes it: start from an instruction-tuned checkpoint, tune it on one
downstream dataset D with each strategy, and measure on D and on upstream benchmarks U before and
after tuning:

- E = A_D(tuned) - A_D(base)                      (specialization),
- F = mean over u in U of A_u(tuned) - A_u(base)  (negative = forgetting),
- O = (E + F) / 2.

Accuracies are percentages; MME is divided by 20 as in the paper's averages. A_D is exact match
after normalisation (lower case, punctuation and articles dropped) of the generated answer against
the first ``gpt`` turn of each held-out LLaVA-format sample, unless the downstream set is a suite
benchmark, which its own scorer scores.

A run directory holds ``base/`` and ``<strategy>/`` (the tuned model under ``model/``, predictions
and upstream reports), ``downstream.json``, ``downstream.md``, ``downstream.png`` and the resolved
``downstream_config.yaml``. A rerun
reuses finished training runs and cached predictions.

This module is the study's configuration (and the LLaVA items of D); the study runs in
:mod:`covft.recipes.downstream_study`, E/F/O are :func:`covft.analysis.transfer.specialization_forgetting`,
the outputs are written by :mod:`covft.recipes.downstream_report`.

Example config (YAML; any key can be overridden on the command line as ``key=value``)::

    base: runs/stage2_full            # instruction-tuned checkpoint (or preset / HF LLaVA dir)
    output_dir: runs/downstream_iconqa
    downstream:
      name: iconqa
      train: data/iconqa/train.json   # LLaVA format
      eval: data/iconqa/test.json     # held-out split, LLaVA format (or a suite with `benchmark`)
      image_folder: data/iconqa
    upstream:
      suite: data/world/suite         # or data_root: data/eval (official files)
      benchmarks: all
      limit: 200
    strategies: [lora, dora, full, top2, last, covft]
    train: {max_steps: 300, lr: 2.0e-5, batch_size: 8}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from covft.utils import config as loader
from covft.utils.config import ConfigError

_TOP_K = re.compile(r"top(\d+)")


# --------------------------------------------------------------------------- configuration


DownstreamConfigError = ConfigError
"""A downstream configuration that cannot be used (the one configuration error of every recipe)."""


@dataclass
class DownstreamData:
    """The downstream dataset D: a LLaVA-format training file and a held-out evaluation split."""

    name: str = "downstream"
    train: str | None = None
    """LLaVA-format JSON/JSONL training samples."""
    eval: str | None = None
    """Held-out split: a LLaVA-format file, or (with ``benchmark``) a suite directory or file."""
    image_folder: str | None = None
    """Folder the LLaVA samples' relative image paths are resolved against."""
    benchmark: str | None = None
    """Score D with this benchmark's scorer; ``eval`` is then a suite (``<benchmark>.jsonl``)."""
    limit: int | None = None
    """Evaluate on the first N held-out items only."""


@dataclass
class UpstreamData:
    """The upstream benchmarks U, from a suite directory or from official files."""

    suite: str | None = None
    data_root: str | None = None
    benchmarks: str | list[str] = "all"
    limit: int | None = None


@dataclass
class StrategySpec:
    """One tuning run: a name for the report, a ``covft.apply_vft`` method and its options."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DownstreamConfig:
    """A whole downstream study."""

    base: str = ""
    """The instruction-tuned starting point: a covft checkpoint, a HF LLaVA directory or a preset."""
    base_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``covft.build_model`` (for presets, e.g. ``vision_layers``)."""
    output_dir: str = "runs/downstream"
    downstream: DownstreamData = field(default_factory=DownstreamData)
    upstream: UpstreamData = field(default_factory=UpstreamData)
    strategies: list[StrategySpec] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)
    """``covft.train`` loop settings (``TrainLoopConfig`` fields: max_steps, lr, batch_size, ...)."""
    eval_batch_size: int = 8
    max_new_tokens: int = 32
    device: str = "cpu"
    """Where the base and the tuned models are evaluated (training places itself via accelerate)."""
    progress: bool = True


def strategy_spec(entry: str | Mapping[str, Any]) -> StrategySpec:
    """A strategy entry of the config: a name or ``{name, method, options}``.

    Names are method names (``lora``, ``dora``, ``full``, ``covft``, ...) plus the selective
    shorthands of Keeping Yourself: ``last`` (the last feeding block) and ``top<k>`` (the top k).
    The method and its options are checked here, before anything trains.
    """
    from covft.train.setup import check_method_options

    if isinstance(entry, str):
        match = _TOP_K.fullmatch(entry)
        if entry == "last":
            return StrategySpec(entry, "selective", {"top_k": 1})
        if match:
            return StrategySpec(entry, "selective", {"top_k": int(match.group(1))})
        spec = StrategySpec(entry, entry, {})
    elif isinstance(entry, Mapping):
        unknown = sorted(set(entry) - {"name", "method", "options"})
        if unknown or "method" not in entry:
            raise DownstreamConfigError(
                f"strategy entry {dict(entry)!r}: give {{method, options, name}} (unknown keys {unknown})"
            )
        spec = StrategySpec(
            str(entry.get("name", entry["method"])), str(entry["method"]), dict(entry.get("options") or {})
        )
    else:
        raise DownstreamConfigError(f"strategy entry {entry!r} is neither a name nor a mapping")
    try:
        check_method_options(spec.method, spec.options)
    except ConfigError as error:
        raise DownstreamConfigError(
            f"strategy {spec.name!r}: {error} (or a selective shorthand: 'last', 'top<k>')"
        ) from error
    return spec


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> DownstreamConfig:
    """Build and check a :class:`DownstreamConfig` from a (YAML) mapping."""
    raw = dict(raw)
    if "strategies" in raw:
        entries = raw["strategies"]
        if isinstance(entries, str):
            entries = [e.strip() for e in entries.split(",") if e.strip()]
        if entries is not None and not isinstance(entries, list | tuple):
            raise DownstreamConfigError(
                f"strategies: got {entries!r}, not a list. Fix: give a list of names or "
                "{method, options, name} mappings, e.g. strategies=[lora,full,covft]"
            )
        raw["strategies"] = [strategy_spec(e) for e in entries or []]
    config = loader.from_dict(DownstreamConfig, raw, source)
    if not config.base:
        raise DownstreamConfigError("base is not set. Fix: base=PATH/TO/instruction_tuned_checkpoint")
    if not config.strategies:
        raise DownstreamConfigError(
            "no strategies. Fix: strategies=[lora,full,covft] (or a list in the YAML)"
        )
    names = [s.name for s in config.strategies]
    if len(set(names)) != len(names) or "base" in names:
        raise DownstreamConfigError(f"strategy names must be unique and not 'base': {names}")
    d = config.downstream
    if not d.train or not d.eval:
        raise DownstreamConfigError(
            "downstream.train and downstream.eval must both be set (LLaVA-format files)"
        )
    u = config.upstream
    if (u.suite is None) == (u.data_root is None):
        raise DownstreamConfigError("set exactly one of upstream.suite and upstream.data_root")
    return config


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> DownstreamConfig:
    """Read a YAML config and apply ``key=value`` overrides (dotted keys, YAML values)."""
    raw = loader.load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "overrides"
    return config_from_dict(loader.apply_overrides(DownstreamConfig, raw, overrides), source)


# --------------------------------------------------------------------------- data


def llava_items(
    path: str | os.PathLike[str], image_folder: str | None, limit: int | None = None
) -> list[dict]:
    """Contract items from a held-out LLaVA-format file: the first human turn and its gpt answer.

    ``prompt`` is the human turn without ``<image>``; the router reads it whole, as in training
    (no ``context`` field); ``answer`` is the first ``gpt`` turn.
    """
    from covft.data.contract import ASSISTANT, HUMAN, prompt_text
    from covft.data.dataset import LlavaDataset
    from covft.eval.benchmarks import ImageRef

    dataset = LlavaDataset(path, image_folder)
    items = []
    for record in dataset.records[:limit] if limit is not None else dataset.records:
        turns = record.conversations
        prompt = prompt_text(next(t["value"] for t in turns if t["from"] == HUMAN))
        answer = next(t["value"] for t in turns if t["from"] == ASSISTANT)
        image = ImageRef(dataset.resolve_image(record.images[0])) if record.images else None
        items.append({"id": record.sample_id, "image": image, "prompt": prompt, "answer": answer})
    return items
