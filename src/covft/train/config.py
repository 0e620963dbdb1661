"""The training recipe's configuration: typed dataclasses, YAML files and ``key=value`` overrides.

The dataclasses below *are* the schema: every key a YAML recipe may contain is a field here, with
its type and default. ``model_options`` and ``method_options`` are free-form mappings because their
valid keys belong to ``covft.build_model`` and to the chosen strategy's options dataclass; they
are checked when the model is built.

Loading, overrides, type checks and closest-key errors are :mod:`covft.utils.config`'s (the one
loader every recipe uses); this module adds the schema, its cross-field checks and the packaged
recipes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from covft.data import mixture
from covft.utils import config as loader
from covft.utils.config import ConfigError, parse_override

__all__ = [
    "ConfigError",
    "DataConfig",
    "TrainConfig",
    "TrainLoopConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_yaml",
    "packaged_config",
    "packaged_config_names",
    "parse_override",
    "save_config",
    "valid_keys",
]


@dataclass
class DataConfig:
    """Where the training data lives and how bad samples are handled."""

    train: str | list[str] | None = None
    """JSON (a list) or JSONL file(s) of training samples, LLaVA or ``messages`` records (the format
    is detected per file; docs/training.md); a list mixes several files."""
    weights: list[float] | None = None
    """Repeat factor per ``train`` file, applied after ``fraction`` (2: every record twice; 0.5: a
    seeded half); ``None``: each file once."""
    fraction: float = 1.0
    """Keep this seeded share of every file's records, in (0, 1] (the data-scaling study; a smaller
    fraction's subset lies inside a larger one's)."""
    fraction_seed: int = 0
    """Chooses the ``fraction`` and ``weights`` subsets (independent of ``train.seed``, so every
    strategy sees the same subset)."""
    image_folder: str | None = None
    """Folder that the samples' relative ``image`` paths are resolved against."""
    on_bad_sample: Literal["error", "skip"] = "error"
    """``error`` stops at the first unusable sample (naming it); ``skip`` counts and reports them."""
    max_skip_fraction: float = 0.01
    """With ``skip``: stop (naming the reasons) once more than this fraction of the samples was skipped."""
    template: str | None = None
    """Conversation template; ``None`` -> ``plain`` in stage 1, the model's default in stage 2."""
    max_length: int | None = None
    """Truncate tokenised samples to this many tokens (``None``: the model's ``max_length``, 2048 by
    default, as LLaVA's ``model_max_length``)."""
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
    report_to: str = "auto"
    """Trackers besides ``log.jsonl``, comma-separated: ``tensorboard``, ``wandb``, any other of
    accelerate's (``mlflow``, ...), ``none``, or ``auto`` (the installed local ones: tensorboard)."""
    wandb_project: str = "covft"
    """Project name for wandb (and for the other trackers accelerate builds by name)."""
    progress_bar: bool = True
    audit: bool | Literal["strict"] = True
    """Audit the first optimizer step (``covft.train.audit``): what the strategy declares got a
    gradient and changed, nothing else did, and a save/load round trip restores it. A failed check
    is a warning in the log and ``train_summary.json``; ``strict`` makes it an error."""


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
        return loader.to_dict(self)

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
        files = [self.data.train] if isinstance(self.data.train, str) else self.data.train or []
        weights = self.data.weights if files else None  # checked against the files once they are set
        mixture_problem = mixture.problem(len(files), weights, self.data.fraction)
        if mixture_problem is not None:
            raise ConfigError(f"data: {mixture_problem} (data.train, data.weights, data.fraction)")
        if self.stage == 1 and self.method not in ("freeze", None):
            raise ConfigError(
                f"stage 1 trains the projector only, but method={self.method!r}. "
                "Fix: set method=freeze for stage 1 (or stage=2 to fine-tune with a strategy)"
            )
        return self


def valid_keys() -> list[str]:
    """Every dotted key the schema accepts (free-form mappings listed as ``name.*``)."""
    return loader.valid_keys(TrainConfig)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to a raw config mapping (returns a new mapping)."""
    return loader.apply_overrides(TrainConfig, raw, overrides)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a (possibly nested) mapping."""
    return loader.from_dict(TrainConfig, raw, source).validate()


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML recipe (a path or a packaged name like ``stage2_covft``) into a mapping."""
    if not Path(path).is_file():
        packaged = packaged_config(str(path))
        if packaged is None:
            raise ConfigError(
                f"config file {str(path)!r} not found. Fix: pass a YAML path or a packaged config name "
                f"({', '.join(packaged_config_names())})"
            )
        path = packaged
    return loader.load_yaml(path)


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Load a YAML recipe (a path or a packaged name like ``stage2_covft``) plus overrides."""
    raw = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "overrides"
    return config_from_dict(apply_overrides(raw, list(overrides)), source)


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved configuration as YAML (it reloads to an equal config)."""
    loader.save(config, path)


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
