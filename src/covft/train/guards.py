"""What stops a run early: a non-finite loss or gradient, too many skipped samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from covft.data.dataset import LlavaDataset, SkipReport
from covft.errors import UserError


class NonFiniteLossError(UserError, RuntimeError):
    """Training stopped because the loss or the gradient norm became NaN or infinite."""

    def __init__(
        self,
        step: int,
        loss: float,
        sample_ids: Sequence[str],
        last_checkpoint: Path | None,
        *,
        quantity: str = "loss",
        set_aside: Path | None = None,
    ) -> None:
        self.step = step
        self.loss = loss
        self.last_checkpoint = last_checkpoint
        self.set_aside = set_aside
        kept = (
            f"last good checkpoint: {last_checkpoint}"
            if last_checkpoint
            else "no good checkpoint was written yet"
        )
        if set_aside is not None:
            kept += (
                f"; the checkpoint written one step before was moved to {set_aside} (the step after it "
                "was not finite, so its weights may already be damaged)"
            )
        super().__init__(
            f"{quantity} is {loss} at step {step} (samples {list(sample_ids)[:8]}); training stopped "
            f"and nothing of that step was saved, {kept}. Fix: lower train.lr or raise train.warmup_ratio "
            "(changes take effect on resume), use precision=fp32 or bf16 instead of fp16, check those "
            "samples, then rerun with resume=true"
        )


def non_finite(loss: float, grad_norm: Any) -> tuple[str, float] | None:
    """("loss" or "gradient norm", its value) when it is NaN or infinite, else ``None``."""
    if not math.isfinite(loss):
        return "loss", loss
    if grad_norm is not None and not math.isfinite(float(grad_norm)):
        return "gradient norm", float(grad_norm)
    return None


def global_report(accelerator: Any, report: SkipReport) -> SkipReport:
    """Merge every process's skip counts (collective; the result is meaningful on the main process)."""
    if accelerator.num_processes == 1:
        return report
    from accelerate.utils import gather_object

    merged = SkipReport()
    for part in gather_object([report.to_dict()]):
        merged.merge(SkipReport.from_dict(part))
    return merged


class SkipBudget:
    """Stops training once more samples were skipped than ``data.max_skip_fraction`` allows.

    Every process adds its local count to one all-reduce per step; only when the sum changes are
    the reports gathered and merged (a sample is counted once however often it is met).
    """

    def __init__(self, accelerator: Any, dataset: LlavaDataset, max_fraction: float, enabled: bool) -> None:
        self.accelerator = accelerator
        self.dataset = dataset
        self.max_fraction = max_fraction
        self.enabled = enabled
        self.seen = -1.0

    def check(self, report: SkipReport) -> None:
        """Collective when enabled; raises :class:`TooManyBadSamplesError` over the budget."""
        if not self.enabled:
            return
        count = torch.tensor([float(report.total)], device=self.accelerator.device)
        total = float(self.accelerator.reduce(count, reduction="sum").item())
        if total == self.seen:
            return
        self.seen = total
        self.dataset.check_skip_budget(global_report(self.accelerator, report), self.max_fraction)
