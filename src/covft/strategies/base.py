"""The small contract every visual fine-tuning strategy follows, and the one place trainability is set.

A strategy is a class registered by name with :func:`register_strategy`. It has
- ``Options``: a dataclass whose fields are its options and whose defaults are the paper's;
  every strategy's options include ``train_llm`` and ``train_projector`` (LLaVA-1.5 stage 2
  trains both);
- ``apply(model)``: change the structure in place (swap modules, add hooks), if it needs to;
- ``vision_trainable(model)``: the names of the parameters it trains, besides the LLM and the
  projector (usually in the vision tower);
- for export to a stock transformers model: ``fold_into_stock(model)`` when ``apply`` changed the
  structure in a way that folds back into the stock weights (LoRA, DoRA), or ``adds_beyond_stock``
  naming what it adds that stock transformers has no module for.

:func:`set_trainable` is the only code that sets ``requires_grad``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from covft.errors import UserError
from covft.strategies.llm import apply_llm_lora, check_llm_side, llm_trainable, quantize_llm
from covft.utils.hints import did_you_mean

STRATEGIES: dict[str, type[Strategy]] = {}


@dataclass
class StrategyOptions:
    """Options shared by every strategy."""

    train_llm: bool = True
    """Train the LLM (LLaVA-1.5 stage 2). False for stage 1 or a frozen-LLM study."""
    train_projector: bool = True
    """Train the vision-language projector."""
    llm_lora_r: int = 0
    """With ``train_llm``: train the LLM through LoRA adapters of this rank (PEFT, on its decoder
    layers' attention and MLP linears only) instead of all its weights; 0: no LoRA."""
    llm_lora_alpha: int | None = None
    """LoRA alpha of the LLM's adapters; default twice the rank (LLaVA-1.5's LoRA recipe: 128 / 256)."""
    llm_lora_dropout: float = 0.05
    """Dropout on the LLM adapters' input (LLaVA-1.5's LoRA recipe)."""
    llm_quantization: str | None = None
    """With ``llm_lora_r``: hold the LLM's decoder linears in 4 bits (``nf4`` or ``fp4``, bitsandbytes)
    under the adapters, QLoRA; null: full precision."""


class Strategy:
    """Base class: subclass, set ``name`` and ``Options``, implement what differs."""

    name: ClassVar[str]
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    needs_text: ClassVar[bool] = False
    """Whether the strategy reads the instruction through the frozen text encoder."""
    needs_text_tokens: ClassVar[bool] = False
    """Whether it reads the instruction's token states (not only the [CLS] vector)."""
    changes_structure: ClassVar[bool] = False
    """Whether ``apply`` swaps modules or adds parameters (such strategies cannot be re-applied)."""
    adds_beyond_stock: ClassVar[str] = ""
    """What ``apply`` adds that the stock transformers architecture has no module for and that cannot
    be folded into its weights, in a few words; empty when the model exports to a stock one."""

    def __init__(self, options: StrategyOptions) -> None:
        self.options = options

    def apply(self, model) -> None:
        """Change the model in place. Default: nothing."""

    def vision_trainable(self, model) -> Iterable[str]:
        """Names of the parameters trained besides the LLM and the projector."""
        return ()

    def lr_scales(self, model) -> dict[str, float]:
        """Learning-rate multipliers of some trained parameters, by name (default: none; the
        trainer gives every other parameter its part's learning rate)."""
        return {}

    def fold_into_stock(self, model) -> str:
        """Leave ``model.llava`` a stock transformers model with the same outputs, in place (for export).

        Returns what was folded, for the export summary. Default: nothing to fold.
        """
        return "nothing to fold"


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``."""
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


class UnknownMethodError(UserError, ValueError):
    """A strategy name that is not registered."""


class UnknownOptionError(UserError, TypeError):
    """An option that the chosen strategy does not have."""


def available_methods() -> list[str]:
    return sorted(STRATEGIES)


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``: the one lookup of a method name. An unknown name
    raises :class:`UnknownMethodError` naming the closest registered one and all of them."""
    if name not in STRATEGIES:
        raise UnknownMethodError(
            f"unknown method {name!r}.{did_you_mean(name, STRATEGIES)} "
            f"Available: {', '.join(available_methods())}"
        )
    return STRATEGIES[name]


def option_names(method: str) -> list[str]:
    """The options of strategy ``method`` (the fields of its ``Options``), in declaration order."""
    return [f.name for f in dataclasses.fields(get_strategy(method).Options)]


def make_options(cls: type[Strategy], options: dict[str, Any]) -> StrategyOptions:
    """Build the options dataclass, rejecting unknown names with the closest and the valid ones."""
    fields = [f.name for f in dataclasses.fields(cls.Options)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UnknownOptionError(
            f"unknown option(s) {unknown} for method {cls.name!r}.{did_you_mean(unknown[0], fields)} "
            f"Valid: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls.Options)
    coerced = {k: _coerce(v, hints.get(k)) for k, v in options.items()}
    return cls.Options(**coerced)


def _coerce(value: Any, hint: Any) -> Any:
    """Accept JSON/YAML forms (lists for tuples) for saved options."""
    if isinstance(value, list) and hint is not None and typing.get_origin(hint) is tuple:
        return tuple(value)
    return value


def declared_trainable(model) -> set[str]:
    """The parameter names the model's strategy declares trainable: its own (``vision_trainable``),
    the projector's with ``train_projector``, the LLM's with ``train_llm`` (only its adapters with
    ``llm_lora_r``). The one definition that :func:`set_trainable` applies and the trainer's audit
    checks a step against."""
    strategy: Strategy = model.strategy
    names = set(strategy.vision_trainable(model)) | llm_trainable(model, strategy.options)
    if strategy.options.train_projector:
        names |= {name for name, _ in model.named_parameters() if model.part_of(name) == "projector"}
    return names


def set_trainable(model) -> list[str]:
    """Freeze everything, then unfreeze exactly what the strategy declares. Returns the names."""
    strategy: Strategy = model.strategy
    names = declared_trainable(model)
    all_params = dict(model.named_parameters())
    unknown = names - set(all_params)
    if unknown:
        raise RuntimeError(
            f"strategy {strategy.name!r} declared parameters that do not exist: {sorted(unknown)[:5]}"
        )
    for name, param in all_params.items():
        param.requires_grad_(name in names and model.part_of(name) != "text_encoder")
    return sorted(names)


def apply_vft(model, method: str, **options: Any):
    """Apply a visual fine-tuning strategy to ``model`` in place and set what trains. Returns ``model``."""
    cls = get_strategy(method)
    current = model.strategy
    if current is not None and (current.changes_structure or current.options.llm_lora_r):
        raise ValueError(
            f"the model already has strategy {current.name!r}, which changed its structure; strategies do not "
            "stack: build a fresh model (or load the stage-1 checkpoint) and apply one strategy"
        )
    strategy = cls(make_options(cls, options))
    check_llm_side(strategy.options)
    if strategy.needs_text:
        model.ensure_text_encoder()
    model.strategy = strategy
    strategy.apply(model)
    if strategy.options.llm_quantization:
        quantize_llm(model, strategy.options.llm_quantization)
    if strategy.options.llm_lora_r:
        apply_llm_lora(model, strategy.options)
    model.refresh_routed_modules()
    set_trainable(model)
    return model
