"""The training recipe's configuration: typed dataclasses, YAML files and ``key=value`` overrides.

The dataclasses below *are* the schema: every key a YAML recipe may contain is a field here, with
its type and default. ``model_options`` and ``method_options`` are free-form mappings because their
valid keys belong to ``covft.build_model`` and to the chosen strategy's options dataclass; they
are checked when the model is built.

A misspelt key is an error that names the closest valid key, so ``train.lr_sheduler=...`` cannot
silently train with the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from covft.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message says which key and how to fix it."""

    exit_status = 2  # like a usage error


@dataclass
class DataConfig:
    """Where the training data lives and how bad samples are handled."""

    train: str | None = None
    """LLaVA-format JSON (a list) or JSONL file of training samples."""
    image_folder: str | None = None
    """Folder that the samples' relative ``image`` paths are resolved against."""
    on_bad_sample: Literal["error", "skip"] = "error"
    """``error`` stops at the first unusable sample (naming it); ``skip`` counts and reports them."""
    max_skip_fraction: float = 0.01
    """With ``skip``: stop (naming the reasons) once more than this fraction of the samples was skipped."""
    template: str | None = None
    """Conversation template; ``None`` -> ``plain`` in stage 1, the model's default in stage 2."""
    max_length: int | None = None
    """Truncate tokenised samples to this many tokens (``None``: no truncation)."""
    group_by_modality_length: bool = True
    """Batch image and text-only samples separately and group similar lengths together."""
    check_images: bool = True
    """Check that every referenced image file exists before training starts."""
    num_workers: int = 0
    """DataLoader worker processes that load and preprocess images."""


@dataclass
class TrainLoopConfig:
    """Optimisation, schedule, precision and checkpointing of the training loop."""

    epochs: float = 1.0
    """Passes over the data (fractional allowed); ignored when ``max_steps`` > 0."""
    max_steps: int = 0
    """Optimizer steps to run; 0 means derive from ``epochs``."""
    batch_size: int = 4
    """Samples per device per micro-batch."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 2e-5
    """Learning rate for every part unless ``lr_vision``/``lr_projector``/``lr_llm`` override it."""
    lr_vision: float | None = None
    lr_projector: float | None = None
    lr_llm: float | None = None
    weight_decay: float = 0.0
    """AdamW weight decay, applied to matrices only (never to biases or norms)."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    """Fraction of the total steps spent warming the learning rate up linearly from 0."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value (``None``: no clipping)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    seed: int = 42
    """Seeds model initialisation of new modules, the data order and every RNG."""
    save_steps: int = 0
    """Write a resumable checkpoint every this many optimizer steps (0: only the final model)."""
    save_total_limit: int | None = 2
    """Keep at most this many checkpoints (oldest deleted first; ``None``: keep all)."""
    logging_steps: int = 1
    """Write metrics to the trackers and ``log.jsonl`` every this many optimizer steps."""
    report_to: str = "none"
    """Trackers besides ``log.jsonl``, comma-separated: ``tensorboard``, ``wandb``, any other of
    accelerate's (``mlflow``, ...), or ``none``."""
    wandb_project: str = "covft"
    """Project name for wandb (and for the other trackers accelerate builds by name)."""
    progress_bar: bool = True


@dataclass
class TrainConfig:
    """A complete training run: model, strategy, stage, data, loop and output."""

    model: str = "tiny-test"
    """A preset name, a local Hugging Face LLaVA directory or a covft checkpoint directory."""
    model_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``covft.build_model`` (e.g. ``vision_layers``)."""
    method: str = "covft"
    """Visual fine-tuning strategy (``covft.available_methods()``); stage 1 uses ``freeze``."""
    method_options: dict[str, Any] = field(default_factory=dict)
    """Fields of the strategy's options dataclass (e.g. ``num_experts``)."""
    stage: Literal[1, 2] = 2
    """1: projector only (feature alignment); 2: LLM + projector + what the strategy trains."""
    init_from: str | None = None
    """A previous run's output directory whose weights initialise this one (stage 2 <- stage 1)."""
    output_dir: str = "runs/covft"
    name: str | None = None
    """A label for the progress bar (default ``stage <N> <method>``)."""
    resume: bool = False
    """Continue from the newest complete checkpoint in ``output_dir`` (exactly, step for step)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML/JSON-serialisable copy of the configuration."""
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check cross-field constraints; returns ``self`` so calls can be chained."""
        loop = self.train
        positive = {
            "train.batch_size": loop.batch_size,
            "train.grad_accum": loop.grad_accum,
            "train.logging_steps": loop.logging_steps,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if loop.max_steps < 0 or loop.save_steps < 0:
            raise ConfigError("train.max_steps and train.save_steps must be >= 0")
        if loop.max_steps == 0 and loop.epochs <= 0:
            raise ConfigError("set train.max_steps > 0 or train.epochs > 0")
        if not 0.0 <= loop.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {loop.warmup_ratio}")
        if loop.save_total_limit is not None and loop.save_total_limit < 1:
            raise ConfigError("train.save_total_limit must be >= 1 or null (keep all)")
        for key in ("lr", "lr_vision", "lr_projector", "lr_llm"):
            value = getattr(loop, key)
            if value is not None and value < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {value}")
        if not 0.0 <= self.data.max_skip_fraction <= 1.0:
            raise ConfigError(f"data.max_skip_fraction must be in [0, 1], got {self.data.max_skip_fraction}")
        if self.stage == 1 and self.method not in ("freeze", None):
            raise ConfigError(
                f"stage 1 trains the projector only, but method={self.method!r}. "
                "Fix: set method=freeze for stage 1 (or stage=2 to fine-tune with a strategy)"
            )
        return self


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_NESTED: dict[str, type] = {"data": DataConfig, "train": TrainLoopConfig}
_FREE_FORM = ("model_options", "method_options")


def valid_keys() -> list[str]:
    """Every dotted key the schema accepts (free-form mappings listed as ``name.*``)."""
    keys: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NESTED:
            keys.extend(f"{f.name}.{sub.name}" for sub in dataclasses.fields(_NESTED[f.name]))
        elif f.name in _FREE_FORM:
            keys.append(f"{f.name}.*")
        else:
            keys.append(f.name)
    return keys


def _unknown_key(key: str, source: str) -> ConfigError:
    """An error for ``key`` naming the closest valid key."""
    candidates = [k for k in valid_keys() if not k.endswith(".*")] + list(_FREE_FORM)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r} in {source}.{hint} Valid keys: {', '.join(valid_keys())}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type annotation, converting where lossless."""
    origin = get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        # YAML 1.1 reads ``1e-4`` (no dot) as a string; it is a number to anyone writing a recipe.
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'the config'} in {source} must be a mapping, got {values!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        dotted = f"{prefix}{name}"
        if name not in names:
            raise _unknown_key(dotted, source)
        if not prefix and name in _NESTED:
            kwargs[name] = _build(_NESTED[name], value or {}, f"{name}.", source)
        else:
            kwargs[name] = _coerce(value, hints[name], dotted)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (``["a", "b"]``, parsed value); values are read as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a raw config mapping (returns a new mapping)."""
    result = json.loads(json.dumps(raw))
    for text in overrides:
        path, value = parse_override(text)
        top = path[0]
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        if top not in known:
            raise _unknown_key(".".join(path), f"override {text!r}")
        if top in _NESTED:
            if len(path) != 2:
                raise _unknown_key(".".join(path), f"override {text!r}")
            sub = {f.name for f in dataclasses.fields(_NESTED[top])}
            if path[1] not in sub:
                raise _unknown_key(".".join(path), f"override {text!r}")
        elif top not in _FREE_FORM and len(path) != 1:
            raise _unknown_key(".".join(path), f"override {text!r}")
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return result


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a (possibly nested) mapping."""
    return _build(TrainConfig, raw or {}, "", source).validate()


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML recipe into a mapping, naming the file and line on a syntax error."""
    path = Path(path)
    if not path.is_file():
        packaged = packaged_config(str(path))
        if packaged is None:
            raise ConfigError(
                f"config file {str(path)!r} not found. Fix: pass a YAML path or a packaged config name "
                f"({', '.join(packaged_config_names())})"
            )
        path = packaged
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}{where} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must contain a mapping of config keys, got {type(raw).__name__}")
    return raw


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Load a YAML recipe (a path or a packaged name like ``stage2_covft``) plus overrides."""
    raw = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "overrides"
    return config_from_dict(apply_overrides(raw, list(overrides)), source)


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved configuration as YAML (it reloads to an equal config)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def packaged_config_names() -> list[str]:
    """Names of the YAML recipes shipped inside the package (``covft/configs``)."""
    root = resources.files("covft") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def packaged_config(name: str) -> Path | None:
    """Path of a shipped recipe given its name (``stage1`` or ``stage1.yaml``), or ``None``."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if "/" in stem or os.sep in stem:
        return None
    candidate = Path(str(resources.files("covft") / "configs" / f"{stem}.yaml"))
    return candidate if candidate.is_file() else None
