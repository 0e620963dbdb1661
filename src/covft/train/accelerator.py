"""The ``accelerate.Accelerator`` of a run: precision, accumulation, engines, trackers.

DDP, DeepSpeed and FSDP come from ``accelerate launch`` (see ``docs/training.md``); this module
checks the launch fits the machine and fills what DeepSpeed's JSON leaves to ``auto``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from covft.train.config import ConfigError, TrainConfig


def make_accelerator(config: TrainConfig, trackers: list[Any]) -> Any:
    """An ``Accelerator`` for this run, logging to ``trackers`` (see :mod:`covft.train.logging`)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # accelerate keeps its settings in process-wide singletons; a library caller may run several
    # stages with different settings (precision, accumulation) in one process, so each run starts
    # from fresh settings. The process group itself (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.train.precision]
    # Text-only batches leave the vision tower unused; sparse routing leaves experts unused.
    handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    cpu = _no_accelerator_device()
    if cpu and _flag("ACCELERATE_USE_FSDP"):
        raise ConfigError(
            "accelerate was launched with FSDP, which it enables only on GPU-like devices: on CPU it "
            "either stops (no available devices) or silently runs plain data parallelism with the "
            "whole model in every process. Fix: run FSDP on GPUs; on CPU use DeepSpeed ZeRO-3 "
            "(configs/accelerate/deepspeed_zero3.yaml --num_processes N) or DDP (cpu_2proc.yaml)"
        )
    if cpu and _flag("ACCELERATE_USE_DEEPSPEED"):
        # accelerate's CPU switch turns DeepSpeed off; DeepSpeed's own CPU accelerator runs on gloo
        cpu = False
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(
        # torchrun on a machine without accelerators: accelerate needs to be told it is DDP on CPU
        cpu=cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=config.train.grad_accum,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=handlers,
        log_with=trackers,
        project_dir=str(Path(config.output_dir)),  # where tensorboard & co. write (logging_dir)
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"launched with WORLD_SIZE={launched} but accelerate runs {accelerator.num_processes} process(es); "
            "every process would train alone and overwrite the others' output. Fix: launch with "
            "`accelerate launch` and a config from covft/configs/accelerate, or set ACCELERATE_USE_CPU=1 on CPU"
        )
    return accelerator


def fill_deepspeed_config(accelerator: Any, config: TrainConfig, model: Any) -> None:
    """Fill the DeepSpeed JSON's ``auto`` entries from the covft config and the model.

    accelerate fills bucket sizes from ``model.config.hidden_size``, which the wrapper does not
    have; they follow the LLM's hidden size d as in transformers' Trainer (d^2, 0.9 d^2, 10 d).
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = config.train.batch_size
    ds["gradient_accumulation_steps"] = config.train.grad_accum
    if ds.get("gradient_clipping", "auto") == "auto":
        ds["gradient_clipping"] = config.train.max_grad_norm or 0.0
    hidden = model.llava.config.text_config.hidden_size
    sizes = {
        "reduce_bucket_size": hidden * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "stage3_param_persistence_threshold": 10 * hidden,
    }
    zero = ds.setdefault("zero_optimization", {})
    for key, value in sizes.items():
        if zero.get(key) == "auto":
            zero[key] = value


def is_deepspeed(accelerator: Any) -> bool:
    """Whether the run is under DeepSpeed."""
    return accelerator.state.deepspeed_plugin is not None


def is_sharded(accelerator: Any) -> bool:
    """Whether parameters are sharded across processes (DeepSpeed ZeRO or FSDP)."""
    return is_deepspeed(accelerator) or getattr(accelerator.state, "fsdp_plugin", None) is not None


def _flag(name: str) -> bool:
    """Whether the launcher set environment variable ``name`` to true."""
    return os.environ.get(name, "false").lower() in ("true", "1")


def _no_accelerator_device() -> bool:
    """True when no GPU-like device exists, so distributed runs must use the CPU (gloo)."""
    from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

    return not (torch.cuda.is_available() or is_xpu_available() or is_npu_available() or is_mps_available())
