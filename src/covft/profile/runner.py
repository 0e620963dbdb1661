"""One strategy's model, optimizer and batches with the operations `covft profile` times and counts."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from covft.profile.analytic import ANALYTIC_METHODS, analytic_flops
from covft.profile.build import build_for_profile, synthetic_batch
from covft.profile.flops import count_flops
from covft.profile.geometry import geometry_of
from covft.profile.settings import ProfileSettings

__all__ = ["Runner", "count_host_syncs", "flops_of"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One strategy's model, optimizer and batches, with the two timed operations."""

    def __init__(self, settings: ProfileSettings, method: str) -> None:
        self.method = method
        self.device = torch.device(settings.device)
        self.clock = time.thread_time if settings.clock == "thread" else time.perf_counter
        self.model = build_for_profile(settings, method)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0, **fused)
        common = dict(context_tokens=settings.context_tokens, seed=settings.seed)
        self.train_batch = synthetic_batch(
            self.model, batch_size=settings.batch_size, text_tokens=settings.text_tokens, **common
        )
        self.prompt = synthetic_batch(
            self.model, batch_size=1, text_tokens=settings.prompt_tokens, train=False, **common
        )

    def forward_backward(self) -> torch.Tensor:
        self.model.train()
        loss = self.model(**self.train_batch).loss
        loss.backward()
        return loss

    def train_step(self) -> None:
        self.forward_backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def prefill(self, inference_mode: bool = True) -> torch.Tensor:
        """The first answer token of the prompt. ``inference_mode=False`` runs under ``no_grad``
        instead: same operations, but visible to Python dispatch modes (host-sync counting)."""
        self.model.eval()
        with torch.inference_mode() if inference_mode else torch.no_grad():
            out = self.model(**self.prompt, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1)

    def timed(self, fn: Callable[[], Any]) -> float:
        _sync(self.device)
        start = self.clock()
        fn()
        _sync(self.device)
        return self.clock() - start

    def close(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        del self.model, self.optimizer, self.train_batch, self.prompt
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value by the host (``.item()``, ``bool(t)``, ...): on a GPU each
    one waits for every queued kernel, so a forward should have as few as possible."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_host_syncs(fn: Callable[[], Any]) -> int:
    """How many times ``fn()`` reads a tensor value on the host (each is a device sync on CUDA)."""
    with _ScalarReads() as reads:
        fn()
    return reads.count


def flops_of(runner: Runner, settings: ProfileSettings) -> dict[str, Any]:
    train_total, train_ops = count_flops(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    prefill_total, _ = count_flops(runner.prefill)
    result: dict[str, Any] = {"train_step": train_total, "prefill": prefill_total, "train_ops": train_ops}
    result["host_syncs_train_forward_backward"] = count_host_syncs(runner.forward_backward)
    runner.optimizer.zero_grad(set_to_none=True)
    # inference_mode hides .item() from dispatch modes: count the same prefill under no_grad
    result["host_syncs_prefill"] = count_host_syncs(lambda: runner.prefill(inference_mode=False))
    if runner.method in ANALYTIC_METHODS:
        geometry = geometry_of(
            runner.model,
            llm_tokens=1 + runner.model.num_image_tokens + settings.text_tokens,
            prompt_tokens=1 + runner.model.num_image_tokens + settings.prompt_tokens,
            context_tokens=settings.context_tokens,
            batch=settings.batch_size,
        )
        result["analytic_train_step"] = analytic_flops(geometry, runner.method)["total"]
        prefill_geometry = geometry_of(
            runner.model,
            llm_tokens=1 + runner.model.num_image_tokens + settings.text_tokens,
            prompt_tokens=1 + runner.model.num_image_tokens + settings.prompt_tokens,
            context_tokens=settings.context_tokens,
            batch=1,
        )
        result["analytic_prefill"] = analytic_flops(prefill_geometry, runner.method, inference=True)["total"]
    return result
