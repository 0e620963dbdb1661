"""Memory of training a strategy: static bytes (weights, gradients, AdamW state) and, on a CPU, the
peak resident set of a fresh process per strategy."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Callable
from typing import Any

import torch

from covft.profile.runner import Runner
from covft.profile.settings import ProfileSettings

__all__ = ["isolated", "measure_cpu_memory", "release_freed_memory", "static_training_bytes"]


def static_training_bytes(model, optimizer_states: int = 2) -> dict[str, int]:
    """Bytes of weights, gradients and AdamW state (``optimizer_states`` tensors per trainable
    parameter, in the parameter's dtype as ``torch.optim.AdamW`` keeps them): the part of the
    training peak that activations come on top of. Works on ``device="meta"`` models."""
    frozen = trainable = 0
    for param in model.parameters():
        size = param.numel() * param.element_size()
        if param.requires_grad:
            trainable += size
        else:
            frozen += size
    total = frozen + trainable * (2 + optimizer_states)
    return {"frozen_weights": frozen, "trainable_weights": trainable, "total": total}


def _rss_bytes(field_name: str) -> int:
    """VmRSS / VmHWM of this process from /proc (Linux), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def release_freed_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_cpu_memory(settings: ProfileSettings, method: str) -> dict[str, Any]:
    """Peak resident memory of building ``method`` and running 2 training steps, as the increase
    over this process's resident set just before building.

    Runs in a fresh process (see :func:`_isolated`). A first, unmeasured build and step load
    every lazily imported module and start the thread pool; it is then freed and trimmed, and the
    high-water mark is reset (``/proc/self/clear_refs``), so the figure is the model's own:
    weights, gradients, AdamW state and activations.
    """
    torch.set_num_threads(settings.threads or torch.get_num_threads())
    warm = Runner(settings, method)
    warm.train_step()
    warm.close()
    del warm
    release_freed_memory()
    baseline = _rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:  # reset VmHWM to the current RSS (Linux >= 4.0)
        handle.write("5")
    runner = Runner(settings, method)
    for _ in range(2):  # the second step holds weights, gradients, AdamW state and activations at once
        runner.train_step()
    peak = _rss_bytes("VmHWM")
    return {
        "peak_bytes": peak - baseline,
        "baseline_bytes": baseline,
        "kind": "CPU: peak RSS over build + 2 training steps minus the RSS before, one fresh process per method",
    }


_PRELOAD = [
    "covft.profile.memory",
    "covft.strategies",
    "covft.models.presets",
    "transformers.models.llava.modeling_llava",
    "transformers.models.clip.modeling_clip",
    "transformers.models.llama.modeling_llama",
    "transformers.models.bert.modeling_bert",
]


def isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh process forked from a server that already imported covft
    and the model code (``forkserver``: no fork of a process whose thread pools already run)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()
