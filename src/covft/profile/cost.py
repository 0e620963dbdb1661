"""Cost of visual fine-tuning strategies, side by side: the layout of the paper's supp. Table E.

For each strategy, on the same base weights and the same synthetic batch:

- **train step**: forward + backward + ``AdamW.step`` over the trainable parameters (median of
  the timed steps after warm-up);
- **inference / sample**: batch 1, one forward of an image + question prompt that produces the
  first answer token's logits (the prefill of ``generate``, ``logits_to_keep=1``), text encoder
  included for context-aware strategies;
- **peak memory**: on CUDA the allocator's peak over the training steps (stats reset between
  strategies, models freed); on CPU the peak resident set of a fresh process per strategy
  (forked from a pre-imported server, so imports are not re-done), minus that process's
  resident set before the model was built;
- **FLOPs** of one training step and one prefill (``FlopCounterMode``), see :mod:`.flops`;
- ratios of every figure to full fine-tuning.

On CPU the timed steps of the strategies are interleaved (round-robin) so that load from other
processes affects them alike; every figure keeps its spread (min/median/max).
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from dataclasses import asdict
from typing import Any

import torch

from covft.profile.memory import isolated, measure_cpu_memory, release_freed_memory, static_training_bytes
from covft.profile.runner import Runner, flops_of
from covft.profile.settings import ProfileSettings

__all__ = ["count_only", "machine_description", "profile"]


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }


def _measure_interleaved(settings: ProfileSettings) -> dict[str, dict[str, Any]]:
    """All models live at once; warm-up, then round-robin timing (CPU, or small GPU geometries)."""
    runners = {m: Runner(settings, m) for m in settings.methods}
    results: dict[str, dict[str, Any]] = {
        m: {"trainable_parameters": r.trainable, "static_training_bytes": static_training_bytes(r.model)}
        for m, r in runners.items()
    }
    for _ in range(settings.warmup):
        for runner in runners.values():
            runner.train_step()
            runner.prefill()
    train: dict[str, list[float]] = {m: [] for m in runners}
    infer: dict[str, list[float]] = {m: [] for m in runners}
    for _ in range(settings.steps):
        for method, runner in runners.items():
            train[method].append(runner.timed(runner.train_step))
    for _ in range(settings.inference_repeats):
        for method, runner in runners.items():
            infer[method].append(runner.timed(runner.prefill))
    for method, runner in runners.items():
        results[method]["train_step_s"] = _spread(train[method])
        results[method]["inference_s"] = _spread(infer[method])
        if settings.count_flops:
            results[method]["flops"] = flops_of(runner, settings)
    for runner in runners.values():
        runner.close()
    return results


def _measure_sequential_cuda(settings: ProfileSettings) -> dict[str, dict[str, Any]]:
    """One model at a time on the GPU: build, reset the allocator's peak, warm up, time, free."""
    device = torch.device(settings.device)
    results: dict[str, dict[str, Any]] = {}
    for method in settings.methods:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        runner = Runner(settings, method)
        weights = torch.cuda.memory_allocated(device)
        for _ in range(settings.warmup):
            runner.train_step()
        train = [runner.timed(runner.train_step) for _ in range(settings.steps)]
        peak = torch.cuda.max_memory_allocated(device)
        for _ in range(settings.warmup):
            runner.prefill()
        infer = [runner.timed(runner.prefill) for _ in range(settings.inference_repeats)]
        results[method] = {
            "trainable_parameters": runner.trainable,
            "static_training_bytes": static_training_bytes(runner.model),
            "train_step_s": _spread(train),
            "inference_s": _spread(infer),
            "memory": {
                "peak_bytes": peak,
                "weights_bytes": weights,
                "kind": "cuda max_memory_allocated over build + training steps",
            },
        }
        if settings.count_flops:
            results[method]["flops"] = flops_of(runner, settings)
        runner.close()
    return results


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def _ratios(results: dict[str, dict[str, Any]]) -> None:
    full = results["full"]
    for entry in results.values():
        entry["ratios_vs_full"] = {
            "train_step": _ratio(entry["train_step_s"]["median"], full["train_step_s"]["median"]),
            "inference": _ratio(entry["inference_s"]["median"], full["inference_s"]["median"]),
            "peak_memory": _ratio(
                entry.get("memory", {}).get("peak_bytes"), full.get("memory", {}).get("peak_bytes")
            ),
            "train_flops": _ratio(
                entry.get("flops", {}).get("train_step"), full.get("flops", {}).get("train_step")
            ),
            "prefill_flops": _ratio(
                entry.get("flops", {}).get("prefill"), full.get("flops", {}).get("prefill")
            ),
        }
        # the spread of the step-time ratio: each timed round's ratio (same round, same load)
        own, ref = entry["train_step_s"]["samples"], full["train_step_s"]["samples"]
        per_round = [a / b for a, b in zip(own, ref, strict=True)]
        entry["ratios_vs_full"]["train_step_per_round"] = _spread(per_round)
        own, ref = entry["inference_s"]["samples"], full["inference_s"]["samples"]
        entry["ratios_vs_full"]["inference_per_round"] = _spread(
            [a / b for a, b in zip(own, ref, strict=True)]
        )


def count_only(settings: ProfileSettings) -> dict[str, Any]:
    """FLOPs only (no timing, no memory): one model at a time, freed before the next.

    For geometries that fit in memory for a step but would take too long to time, e.g. the 7B
    vision tower with a reduced LLM on a CPU.
    """
    settings = settings.resolved()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    results: dict[str, dict[str, Any]] = {}
    for method in settings.methods:
        runner = Runner(settings, method)
        results[method] = {"trainable_parameters": runner.trainable, "flops": flops_of(runner, settings)}
        runner.close()
        release_freed_memory()
    full = results["full"]["flops"]
    for entry in results.values():
        flops = entry["flops"]
        entry["ratios_vs_full"] = {
            "train_flops": flops["train_step"] / full["train_step"],
            "prefill_flops": flops["prefill"] / full["prefill"],
        }
    device = torch.device(settings.device)
    return {
        "settings": asdict(settings),
        "machine": machine_description(device),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "flops_only": True,
        "methods": results,
    }


def machine_description(device: torch.device) -> str:
    """One line: the device, the threads torch uses, torch's version."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores visible"
    return f"{where}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def profile(settings: ProfileSettings) -> dict[str, Any]:
    """Measure every strategy of ``settings.methods``; returns the JSON-ready report.

    On a CPU with ``settings.memory`` the memory figures come from ``forkserver`` processes: call
    this from the ``covft`` command or under ``if __name__ == "__main__":`` in a script.
    """
    settings = settings.resolved()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    if device.type == "cuda":
        results = _measure_sequential_cuda(settings)
    else:
        results = _measure_interleaved(settings)
        if settings.memory:
            for method in settings.methods:
                results[method]["memory"] = isolated(measure_cpu_memory, settings, method)
    _ratios(results)
    return {
        "settings": asdict(settings),
        "machine": machine_description(device),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "methods": results,
    }
