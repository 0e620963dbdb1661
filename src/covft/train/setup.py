"""Setting up a training stage of the LLaVA-1.5 recipe: its model, parameter groups and schedule.

* Stage 1 (feature alignment): only the projector trains: the ``freeze`` strategy with
  ``train_llm=False``; the ``plain`` template by default.
* Stage 2 (instruction tuning): the LLM, the projector and whatever the strategy trains in the
  vision tower; initialised from stage 1's output (``init_from``).

Optimiser parameter groups separate the vision tower, the projector and the LLM so each may have
its own learning rate (all equal by default, as in the paper), and weight decay applies to weight
matrices only, never to biases or normalisation parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from covft.models import available_presets
from covft.models.distributed import gathered
from covft.strategies import apply_vft, option_names
from covft.strategies import build_model as load_model
from covft.strategies.base import UnknownMethodError
from covft.train.config import ConfigError, TrainConfig, TrainLoopConfig
from covft.utils.hints import did_you_mean

PARTS = ("vision", "projector", "llm")


def strategy_for(config: TrainConfig) -> tuple[str, dict[str, Any]]:
    """The (method, options) that ``covft.apply_vft`` receives for this stage."""
    options = dict(config.method_options)
    if config.stage == 1:
        if options.get("train_llm", False) or not options.get("train_projector", True):
            raise ConfigError(
                "stage 1 trains the projector only. Fix: drop method_options.train_llm / "
                "method_options.train_projector from the stage-1 config"
            )
        options["train_llm"] = False
        return "freeze", options
    return config.method, options


def default_template(config: TrainConfig) -> str | None:
    """Conversation template: the config's, else ``plain`` in stage 1, else the model's default."""
    if config.data.template is not None:
        return config.data.template
    return "plain" if config.stage == 1 else None


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a saved model directory (single file or shards)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"init_from={str(root)!r} does not exist. Fix: run the previous stage first (its output_dir, "
            "e.g. covft train stage1 ... output_dir=runs/stage1), point init_from at a finished run, "
            "or set init_from=null to start from `model`"
        )
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"init_from={str(root)!r} holds no .safetensors weights. Fix: point init_from at the "
            "output_dir of a finished stage-1 run (it contains the saved model)"
        )
    return files


def load_init_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Copy every tensor of a saved run whose name and shape match ``model``; returns their names.

    Used for stage 2 <- stage 1: the stage-1 model has the base architecture, so its tensors map
    onto the freshly built base model one to one before the stage-2 strategy is applied. Under
    DeepSpeed ZeRO-3 (a model built partitioned) each tensor is gathered while it is written.
    """
    targets = {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers())}
    loaded: list[str] = []
    mismatched: list[str] = []
    with torch.no_grad():
        for file in weight_files(path):
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    target = targets.get(name)
                    if target is None:
                        continue
                    with gathered([target], modifier_rank=0):
                        tensor = handle.get_tensor(name)
                        if tensor.shape != target.shape:
                            mismatched.append(f"{name}: {tuple(tensor.shape)} vs {tuple(target.shape)}")
                            continue
                        target.data.copy_(tensor.to(target.dtype))
                    loaded.append(name)
    if mismatched:
        raise ConfigError(
            f"init_from={str(path)!r} does not fit the model built from `model`: shape mismatch for "
            f"{mismatched[:3]}. Fix: use the same model and model_options as the stage-1 run"
        )
    if not loaded:
        raise ConfigError(
            f"init_from={str(path)!r} shares no parameter names with the model. Fix: use the same "
            "model and model_options as the run that produced it"
        )
    return loaded


def build_model(config: TrainConfig) -> Any:
    """Build the model for this stage: base model, ``init_from`` weights, then the strategy."""
    options = dict(config.model_options)
    if config.model in available_presets():
        options.setdefault("seed", config.train.seed)  # a preset's random init follows the run's seed
    model = load_model(config.model, **options)
    if config.init_from:
        load_init_weights(model, config.init_from)
    method, options = strategy_for(config)
    check_method_options(method, options)
    apply_vft(model, method, **options)
    return model


def check_method_options(method: str, options: dict[str, Any]) -> None:
    """Reject an unknown method or option up front, naming the closest valid one."""
    try:
        fields = option_names(method)  # the one strategy lookup (closest name in its error)
    except UnknownMethodError as error:
        raise ConfigError(f"{error} Fix: set method to one of them") from error
    for key in options:
        if key not in fields:
            hint = did_you_mean(key, fields, template=" Did you mean 'method_options.{}'?")
            raise ConfigError(
                f"method_options.{key} is not an option of method {method!r}.{hint} Valid: {fields}. "
                "Fix: drop it (e.g. method_options={} when switching method on another strategy's config)"
            )


def learning_rates(loop: TrainLoopConfig) -> dict[str, float]:
    """Per-part learning rates: ``lr_<part>`` when set, else ``lr``."""
    return {
        "vision": loop.lr if loop.lr_vision is None else loop.lr_vision,
        "projector": loop.lr if loop.lr_projector is None else loop.lr_projector,
        "llm": loop.lr if loop.lr_llm is None else loop.lr_llm,
    }


def optimizer_groups(
    parts: dict[str, list[nn.Parameter]],
    loop: TrainLoopConfig,
    scales: Mapping[int, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: one per (part, decay / no decay), named for logging.

    ``scales`` maps ``id(parameter)`` to a learning-rate multiplier (:func:`lr_scales`); each
    multiplier of a part gets its own groups, named ``<part>_x<scale>``.
    """
    rates = learning_rates(loop)
    scales = scales or {}
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"parameter_groups() returned unknown parts {sorted(unknown)}; expected {PARTS}")
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for part in PARTS:
        params = [p for p in parts.get(part, []) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        for scale in sorted({scales.get(id(p), 1.0) for p in params}, reverse=True):
            scaled = [p for p in params if scales.get(id(p), 1.0) == scale]
            name = part if scale == 1.0 else f"{part}_x{scale:g}"
            decay = [p for p in scaled if p.ndim >= 2]
            no_decay = [p for p in scaled if p.ndim < 2]
            for suffix, members, weight_decay in (
                ("", decay, loop.weight_decay),
                ("_no_decay", no_decay, 0.0),
            ):
                if members:
                    groups.append(
                        {
                            "name": name + suffix,
                            "params": members,
                            "lr": rates[part] * scale,
                            "lr_scale": scale,  # read back by apply_schedule, exactly
                            "weight_decay": weight_decay,
                        }
                    )
    if not groups:
        raise ConfigError("nothing to train: the strategy left no trainable parameters")
    return groups


def lr_scales(model: nn.Module) -> dict[int, float]:
    """The strategy's learning-rate multipliers (``Strategy.lr_scales``) by ``id(parameter)``."""
    strategy = getattr(model, "strategy", None)
    named = strategy.lr_scales(model) if strategy is not None else {}
    if not named:
        return {}
    params = dict(model.named_parameters())
    missing = sorted(set(named) - set(params))
    if missing:
        raise ValueError(
            f"strategy {strategy.name!r} scales the learning rate of unknown parameters {missing[:3]}"
        )
    return {id(params[name]): float(scale) for name, scale in named.items()}


def total_steps(loop: TrainLoopConfig, steps_per_epoch: int) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs`` passes over the data."""
    return loop.max_steps if loop.max_steps > 0 else math.ceil(loop.epochs * steps_per_epoch)


def make_optimizer(groups: list[dict[str, Any]], loop: TrainLoopConfig) -> torch.optim.Optimizer:
    """AdamW over the parameter groups."""
    return torch.optim.AdamW(
        groups, lr=loop.lr, betas=(loop.adam_beta1, loop.adam_beta2), eps=loop.adam_epsilon
    )


SCHEDULE_KEYS = (
    "lr",
    "lr_vision",
    "lr_projector",
    "lr_llm",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "lr_scheduler",
    "warmup_ratio",
    "max_grad_norm",
)
"""The optimisation settings a resumed run may change (they take effect from the next step)."""


def schedule_settings(loop: TrainLoopConfig) -> dict[str, Any]:
    """The values of :data:`SCHEDULE_KEYS` (stored in checkpoints, compared on resume)."""
    return {key: getattr(loop, key) for key in SCHEDULE_KEYS}


def apply_schedule(optimizer: Any, scheduler: Any, loop: TrainLoopConfig, steps_taken: int) -> None:
    """Set every parameter group's hyperparameters from ``loop`` after ``steps_taken`` optimizer steps.

    A restored checkpoint brings back the learning rates, betas and decay it was saved with; this
    makes the config's values the ones in force, so a changed ``train.lr`` on resume takes effect
    instead of being silently ignored. With unchanged settings it recomputes the same numbers. The
    schedule's position is set from ``steps_taken`` (:func:`make_scheduler`'s convention), so
    checkpoints written before the schedule came from transformers resume at the right step too.
    """
    schedule = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps the torch scheduler
    schedule.last_epoch = steps_taken + 1
    rates = learning_rates(loop)
    for index, group in enumerate(optimizer.param_groups):
        part, _, scale = group["name"].removesuffix("_no_decay").partition("_x")  # parameter_groups' names
        # the group's exact multiplier; older checkpoints have only the name's six digits
        base = rates[part] * group.get("lr_scale", float(scale) if scale else 1.0)
        schedule.base_lrs[index] = base
        group["initial_lr"] = base
        group["lr"] = base * schedule.lr_lambdas[index](schedule.last_epoch)
        group["betas"] = (loop.adam_beta1, loop.adam_beta2)
        group["eps"] = loop.adam_epsilon
        if not group["name"].endswith("_no_decay"):
            group["weight_decay"] = loop.weight_decay


_SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
"""``train.lr_scheduler`` -> the name ``transformers.get_scheduler`` knows (each with linear warmup)."""


def make_scheduler(
    optimizer: torch.optim.Optimizer, loop: TrainLoopConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``transformers.get_scheduler``'s warmup and decay, entered one step in so the first update learns.

    transformers warms up as ``step / warmup``: its step 0 has learning rate 0, an update that only
    fills Adam's moments. covft takes the same schedule with one more warmup step and one more
    step in all, and starts it at its step 1: step ``s`` of the run (from 0) gets
    ``(s + 1) / (warmup + 1)`` during the ``ceil(warmup_ratio * total)`` warmup steps and exactly
    transformers' cosine/linear/constant value after them (docs/decisions.md, "Configuration").
    The scheduler's ``last_epoch`` is therefore always the number of optimizer steps taken plus one.
    """
    from transformers import get_scheduler

    warmup = math.ceil(loop.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        _SCHEDULES[loop.lr_scheduler],
        optimizer,
        num_warmup_steps=warmup + 1,
        num_training_steps=total_steps + 1,
    )
    with warnings.catch_warnings():
        # torch warns that a step before optimizer.step() skips the schedule's first value: that is the point
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        scheduler.step()
    return scheduler
