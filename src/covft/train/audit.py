"""The training-start audit: did the first step train exactly what the strategy declares, and does it save?

It answers the field's most common silent failures ("the tower did not update / did not save",
"LoRA leaked into the wrong tower") in every run's log and ``train_summary.json``. For the first
optimizer step that reaches every declared part (a step whose batches held no image gives the
vision tower no gradient at all; such a step is passed over, at most :data:`MAX_DEFERRED_STEPS`;
a tensor whose gradient is exactly zero there is rechecked in the next steps, see :data:`RECHECK_STEPS`):

- the strategy's declared set (:func:`covft.strategies.declared_trainable`), the parameters with
  ``requires_grad``, ``model.parameter_groups()`` and the optimizer's groups are the same set;
- every declared tensor got a finite, non-zero gradient in the step (except those
  ``model.off_path_trainable()`` names: past ``vision_feature_layer``, they cannot get one), or,
  when its gradient was exactly zero, got a non-zero one in one of the next steps;
- every declared tensor has a non-zero learning rate, and every part (vision, projector, LLM) with
  declared tensors changed in the step. A single tensor may stay bitwise equal: Adam moves each
  element by about ``lr * g / (|g| + eps)``, which for a gradient far below ``adam_epsilon`` (CoVFT's
  routing path while its upcycled experts are still nearly identical) is below float32 resolution;
- no other tensor got a gradient or changed (frozen parts stay bitwise equal from before the first
  forward: :meth:`TrainingAudit.start`);
- the model saved as the run saves it and reloaded with ``covft.load_pretrained`` has the same
  trainable set with equal tensors.

Snapshots are two int64 checksums of each tensor's bit patterns (sum and sum of squares, wrapping):
a few bytes per tensor, changed by any changed element unless two changes cancel in both sums. The
audit only reads (the reload runs under saved and restored RNG states): a run's numbers are bitwise
those of a run without it.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from covft.errors import UserError
from covft.models.checkpoint import save_pretrained
from covft.strategies import declared_trainable, load_pretrained
from covft.train.accelerator import is_deepspeed, is_sharded
from covft.train.audit_report import Finding, format_report, summarise
from covft.train.callbacks import TrainerCallback

PARTS = ("vision", "projector", "llm")
MAX_DEFERRED_STEPS = 10
"""Steps passed over while a declared part gets no gradient at all (text-only batches)."""
RECHECK_STEPS = 3
"""Steps, the audited one included, in which a declared tensor may show a non-zero gradient: a
symmetric start gives exactly zero in the first (LoRA's A while B is zero; CoVFT's routing path while
the upcycled experts are identical). Zero in every step: a finding; a run ending first: unverified."""
ROUND_TRIP_MAX_BYTES = 256 * 2**20
"""Larger models skip the save/load round trip (it writes and reads every weight: 1 s per 256 MiB)."""
_BITS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class AuditError(UserError, RuntimeError):
    """``train.audit=strict`` and the training-start audit found a problem."""


def checksums(tensor: torch.Tensor) -> tuple[int, int]:
    """Sum and sum of squares of the tensor's bit patterns in int64 (wrapping): equal for equal bits."""
    flat = tensor.detach().reshape(-1)
    bits = flat.view(_BITS[flat.element_size()]).to(torch.int64)
    pair = torch.stack([bits.sum(), (bits * bits).sum()]).tolist()
    return pair[0], pair[1]


def gradient_problem(param: nn.Parameter) -> str | None:
    """Why ``param``'s gradient is unusable (``no gradient``, ``zero gradient``, ``non-finite
    gradient``), or ``None`` when it is finite and non-zero."""
    if param.grad is None:
        return "no gradient"
    norm = float(torch.linalg.vector_norm(param.grad.detach(), dtype=torch.float32))
    if norm != norm or norm == float("inf"):
        return "non-finite gradient"
    return "zero gradient" if norm == 0.0 else None


@contextmanager
def preserved_rng():
    """Run the block and restore torch's (CPU and initialised CUDA), Python's and numpy's RNG states."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def set_findings(model: nn.Module, declared: set[str], optimizer: Any) -> list[Finding]:
    """Declared set vs ``requires_grad`` vs ``parameter_groups()`` vs the optimizer's groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    requires = set(model.trainable_parameter_names())
    grouped = {names[id(p)] for params in model.parameter_groups().values() for p in params}
    findings = [Finding(n, "undeclared") for n in sorted(requires - declared)]
    findings += [Finding(n, "declared_frozen") for n in sorted(declared - requires)]
    findings += [Finding(n, "groups") for n in sorted(requires ^ grouped)]
    if optimizer is not None:
        stepped = {names.get(id(p), "?") for group in optimizer.param_groups for p in group["params"]}
        findings += [Finding(n, "not_in_optimizer") for n in sorted((declared & requires) - stepped)]
        findings += [Finding(n, "undeclared_in_optimizer") for n in sorted(stepped - declared)]
    return findings


def round_trip(model: nn.Module, declared: set[str]) -> tuple[int, list[Finding]]:
    """Save ``model`` as the run does, reload it with ``covft.load_pretrained``; the number of
    declared tensors found equal and the findings."""
    params = dict(model.named_parameters())
    with tempfile.TemporaryDirectory(prefix="covft-audit-") as tmp, preserved_rng():
        save_pretrained(model, Path(tmp) / "model")
        loaded = load_pretrained(Path(tmp) / "model")
    reloaded = dict(loaded.named_parameters())
    findings = [
        Finding(n, "reload_trainable_set") for n in sorted(set(loaded.trainable_parameter_names()) ^ declared)
    ]
    equal = 0
    for name in sorted(declared):
        if name not in reloaded:
            findings.append(Finding(name, "reload_missing"))
        elif torch.equal(reloaded[name].detach(), params[name].detach().cpu()):
            equal += 1
        else:
            findings.append(Finding(name, "reload_differs"))
    return equal, findings


class TrainingAudit(TrainerCallback):
    """The audit as a trainer callback (``train.audit``, on by default); see the module docstring."""

    def __init__(
        self,
        optimizer: Any = None,
        *,
        strict: bool = False,
        skip_steps: str | None = None,
        skip_round_trip: str | None = None,
        main_process: bool = True,
    ) -> None:
        self.optimizer, self.strict, self.main_process = optimizer, strict, main_process
        self.skip_steps, self.skip_round_trip = skip_steps, skip_round_trip
        self.step: int | None = None
        self.deferred: list[str] = []
        self.report: dict[str, Any] | None = None
        self.frozen_at_start: dict[str, tuple[int, int]] = {}

    def start(self, model: nn.Module) -> None:
        """Checksum the frozen tensors before the first forward: a write in a forward (a hook) counts."""
        frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
        self.frozen_at_start = {n: checksums(p) for n, p in frozen} if self.skip_steps is None else {}

    @classmethod
    def for_run(cls, accelerator: Any, optimizer: Any, strict: bool) -> TrainingAudit:
        """The audit of a run under ``accelerator``: what its distribution allows checking."""
        skip_steps = skip_round_trip = None
        if is_deepspeed(accelerator):
            skip_steps = "DeepSpeed steps inside backward and keeps gradients in its own partitioned buffers"
            skip_round_trip = (
                "the weights are partitioned (ZeRO); gathering them for a reload is the final save's job"
            )
        elif is_sharded(accelerator):
            skip_steps = skip_round_trip = "FSDP shards parameters and gradients"
        return cls(
            None if skip_steps else optimizer,
            strict=strict,
            skip_steps=skip_steps,
            skip_round_trip=skip_round_trip,
            main_process=accelerator.is_main_process,
        )

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if self.report is not None:
            return
        if self.step is not None:
            self._recheck_before(step, model)
            return
        self.declared = declared_trainable(model)
        self.strategy = model.strategy.name if model.strategy is not None else None
        self.sizes = {name: p.numel() for name, p in model.named_parameters()}
        self.parts = {name: model.part_of(name) for name, _ in model.named_parameters()}
        self.expected_without_gradient = set(model.off_path_trainable())
        self.findings = set_findings(model, self.declared, self.optimizer)
        if self.skip_steps is None:
            self.gradients = {n: gradient_problem(p) for n, p in model.named_parameters()}
            silent = self._parts_without_gradient()
            if silent and len(self.deferred) < MAX_DEFERRED_STEPS:
                self.deferred.append(
                    f"step {step}: no gradient reached {', '.join(silent)} (no image in the step?)"
                )
                return
            start = {n: c for n, c in self.frozen_at_start.items() if n not in self.declared}
            self.before = {n: start.get(n) or checksums(p) for n, p in model.named_parameters()}
            self.lrs = self._learning_rates(model)
            live = self.declared - self.expected_without_gradient
            self.waiting = {n for n in live if self.gradients[n] == "zero gradient"}
            self.rechecked: set[str] = set()
        self.step = step

    def _parts_without_gradient(self) -> list[str]:
        """Declared parts none of whose tensors got a gradient (``no gradient``, not zero)."""
        live = {self.parts[n] for n in self.declared - self.expected_without_gradient}
        reached = {self.parts[n] for n, problem in self.gradients.items() if problem != "no gradient"}
        return [part for part in PARTS if part in live and part not in reached]

    def _learning_rates(self, model: nn.Module) -> dict[str, float]:
        if self.optimizer is None:
            return {}
        by_id = {id(p): group["lr"] for group in self.optimizer.param_groups for p in group["params"]}
        return {n: by_id[id(p)] for n, p in model.named_parameters() if id(p) in by_id}

    def _recheck_before(self, step: int, model: nn.Module) -> None:
        """A later step: the waiting tensors (exactly zero gradient so far) that got one now, snapshotted."""
        params = dict(model.named_parameters())
        self.reached = {n for n in self.waiting if gradient_problem(params[n]) is None}
        self.before = {n: checksums(params[n]) for n in self.reached}

    def after_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        if self.report is not None or self.step is None or self.skip_steps is not None:
            return
        params = dict(model.named_parameters())
        changed = {n for n, pair in self.before.items() if checksums(params[n]) != pair}
        if step > self.step:  # a recheck: these got a gradient now (and may have changed)
            self.waiting -= self.reached
            self.rechecked |= self.reached
            self.changed |= changed
            self.gradients.update(dict.fromkeys(self.reached))
            return
        self.changed = changed
        for name in sorted(self.parts):
            self.findings += self._tensor_findings(name)

    def _tensor_findings(self, name: str) -> Iterable[Finding]:
        gradient, changed = self.gradients[name], name in self.changed
        if name in self.expected_without_gradient or name in self.waiting:
            return []
        if name not in self.declared:
            found = [Finding(name, "frozen_gradient")] if gradient != "no gradient" else []
            return found + ([Finding(name, "frozen_changed")] if changed else [])
        if gradient is not None:
            return [Finding(name, "gradient", gradient)]
        if changed or self.lrs.get(name, 0.0) != 0.0:
            return []  # a non-zero lr that moves nothing: an update below float resolution (see below)
        return [Finding(name, "unchanged", "lr 0")]

    def _part_findings(self) -> list[Finding]:
        """Parts with declared tensors none of which changed: "the tower did not update"."""
        live = self.declared - self.expected_without_gradient
        trained = {self.parts[n] for n in live}
        moved = {self.parts[n] for n in live & self.changed}
        return [Finding(part, "part_unchanged") for part in PARTS if part in trained and part not in moved]

    def on_step_end(self, step: int, model: nn.Module, loss: float) -> None:
        if self.report is not None or self.step is None:
            return
        if step == self.step:
            self.round_trip = self._round_trip(model)
        self.last_step = step
        if getattr(self, "waiting", None) and step < self.step + RECHECK_STEPS:
            return  # exactly zero gradients (LoRA's A while B is zero) are rechecked next step
        self._conclude()

    def _round_trip(self, model: nn.Module) -> dict[str, Any]:
        """The round trip's record (and its findings), or why it was skipped."""
        if self.skip_round_trip is not None:
            return {"skipped": self.skip_round_trip}
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        if size > ROUND_TRIP_MAX_BYTES:
            reason = f"the model holds {size / 2**20:.0f} MiB (> {ROUND_TRIP_MAX_BYTES // 2**20} MiB): "
            return {"skipped": reason + "a round trip would write and read all of it"}
        if not self.main_process:
            return {"skipped": "checked by the main process"}
        equal, findings = round_trip(model, self.declared)
        self.findings += findings
        return {"equal_tensors": equal}

    def _conclude(self) -> None:
        """Build the report, print it (main process), raise under strict when something failed."""
        if self.skip_steps is None:
            self.findings += self._part_findings()
        waiting = sorted(getattr(self, "waiting", ()))
        unverified = waiting if self.last_step == self.step else []  # no later step to show a gradient
        if not unverified:
            steps = f"steps {self.step}-{self.last_step}"
            self.findings += [Finding(n, "gradient", f"zero gradient in {steps}") for n in waiting]
        self.report = summarise(
            step=self.step,
            strategy=self.strategy,
            params=self.sizes,
            parts=self.parts,
            declared=self.declared,
            gradients=None if self.skip_steps else self.gradients,
            changed=None if self.skip_steps else self.changed,
            expected_without_gradient=self.expected_without_gradient,
            findings=self.findings,
            round_trip=self.round_trip,
            deferred=self.deferred,
            rechecked=len(getattr(self, "rechecked", ())),
            unverified=unverified,
            skip_steps=self.skip_steps,
        )
        lines = format_report(self.report, self.strict)
        if self.main_process:
            print("\n".join(lines), flush=True)
        if self.strict and not self.report["passed"]:
            raise AuditError(" ".join(line.strip() for line in lines if line.strip()))

    def summary(self) -> dict[str, Any]:
        """What goes into ``train_summary.json``: the report, or why no step was audited."""
        if self.report is None and self.step is not None:
            self._conclude()  # the run ended while tensors with a zero gradient were being rechecked
        if self.report is not None:
            return self.report
        reason = "the run ended before a step reached every declared part"
        if self.main_process:
            print(f"covft audit: not run: {reason} ({'; '.join(self.deferred)})", flush=True)
        return {"passed": None, "not_run": reason, "deferred": self.deferred}
