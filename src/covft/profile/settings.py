"""What `covft profile` measures and at which geometry: :class:`ProfileSettings`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from covft.models.precision import as_dtype
from covft.strategies import get_strategy
from covft.utils.config import ConfigError

__all__ = ["GEOMETRIES", "TINY_DEFAULTS", "ProfileSettings"]

GEOMETRIES = ("tiny", "llava-1.5-7b")
TINY_DEFAULTS: dict[str, Any] = dict(
    vision_layers=6, vision_hidden=64, image_size=64, patch_size=8, llm_hidden=128, llm_layers=2
)
"""The ``tiny`` geometry: the tiny-test preset with 6 vision blocks (65 tokens, width 64)."""


@dataclass
class ProfileSettings:
    """What to measure and at which geometry. ``device``/``dtype`` ``None`` mean the geometry's
    default: CPU float32 for ``tiny``, CUDA bfloat16 for ``llava-1.5-7b``."""

    geometry: str = "tiny"
    methods: tuple[str, ...] = ("freeze", "full", "covft")
    steps: int = 5
    warmup: int = 2
    inference_repeats: int | None = None
    batch_size: int | None = None
    text_tokens: int = 60
    prompt_tokens: int = 45
    context_tokens: int = 24
    llm_layers: int | None = None
    vision_layers: int | None = None
    train_llm: bool = True
    gradient_checkpointing: bool = False
    device: str | None = None
    dtype: str | None = None
    seed: int = 0
    lr: float = 2e-5
    count_flops: bool = True
    memory: bool = True
    threads: int | None = None
    clock: str = "wall"
    """wall (perf_counter) or thread (CPU time of this thread: with threads=1 on a CPU, immune to
    other processes' load; it misses time spent waiting, which a 1-thread CPU run does not have)."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolved(self) -> ProfileSettings:
        """A copy with the geometry's defaults filled in, validated."""
        if self.geometry not in GEOMETRIES:
            raise ConfigError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if self.steps < 1 or self.warmup < 0:
            raise ConfigError(
                f"need steps >= 1 and warmup >= 0, got steps={self.steps}, warmup={self.warmup}"
            )
        self._check_sizes()
        for method in self.methods:
            get_strategy(method)  # an unknown name fails here, naming the closest one
        if "full" not in self.methods:
            raise ConfigError("ratios are taken against full fine-tuning: include 'full' in methods")
        if self.clock not in ("wall", "thread"):
            raise ConfigError(f"clock must be wall or thread, got {self.clock!r}")
        if self.clock == "thread" and (self.threads != 1 or (self.device or "cpu") != "cpu"):
            raise ConfigError("clock='thread' measures one CPU thread: use it with threads=1 on the CPU")
        big = self.geometry == "llava-1.5-7b"
        settings = ProfileSettings(**asdict(self))
        settings.methods = tuple(self.methods)
        settings.device = self.device or ("cuda" if big else "cpu")
        if torch.device(settings.device).type == "cuda" and not torch.cuda.is_available():
            build = "a CPU build" if torch.version.cuda is None else "no GPU visible"
            default = "; the llava-1.5-7b geometry runs on CUDA by default" if self.device is None else ""
            raise ConfigError(
                f"device {settings.device!r} but CUDA is not available here (torch {torch.__version__}, "
                f"{build}){default}. On a CPU, time the tiny geometry (--device cpu) or count the 7B "
                "geometry's FLOPs: covft profile --geometry llava-1.5-7b --device cpu --llm-layers 2 "
                "--flops-only (or --flops-7b for the analytic ratios)"
            )
        settings.dtype = self.dtype or ("bfloat16" if settings.device == "cuda" else "float32")
        settings.batch_size = self.batch_size or (1 if big else 4)
        settings.inference_repeats = self.inference_repeats or max(self.steps, 3)
        if settings.llm_layers is None:
            settings.llm_layers = 32 if big else TINY_DEFAULTS["llm_layers"]
        if settings.vision_layers is not None and big:
            raise ConfigError("vision_layers applies to the tiny geometry only (the 7B tower has 24 blocks)")
        return settings

    def _check_sizes(self) -> None:
        """Refuse counts a run cannot use and a dtype torch does not have, naming the option."""
        least = {"batch_size": 1, "inference_repeats": 1, "threads": 1, "text_tokens": 1, "prompt_tokens": 1}
        least |= {"context_tokens": 2, "llm_layers": 1, "vision_layers": 1}  # [CLS] and [SEP] at least
        for name, low in least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value} (--{name.replace('_', '-')})")
        try:
            floating = self.dtype is None or as_dtype(self.dtype).is_floating_point
        except ValueError:
            floating = False
        if not floating:
            raise ConfigError(
                f"dtype must be a torch floating-point type (float32, bfloat16, float16), got {self.dtype!r}"
            )
