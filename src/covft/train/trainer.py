"""The training loop: one ``accelerate`` loop we control, exactly resumable.

``Trainer(config, callbacks).fit()`` (or ``train(config, callbacks)``) runs one stage of the
recipe and returns a :class:`TrainResult`. The same code runs on one CPU, under
``torchrun``/``accelerate launch`` with DDP, and with DeepSpeed ZeRO or FSDP when ``accelerate
launch`` is given their configs (see ``docs/training.md``).

Exact resume rests on three things: the batch order is a pure function of (seed, epoch) (see
:mod:`covft.data.sampler`), checkpoints hold the model, optimizer, scheduler and every RNG state,
and a resumed run starts at the first micro-batch the checkpoint had not consumed. On one CPU
process with the same seed, an interrupted-and-resumed run ends with bitwise the same weights as
an uninterrupted one. Callbacks (:mod:`covft.train.callbacks`) observe training without changing it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from covft.data.dataset import SkipReport
from covft.train import batches, outputs, setup
from covft.train import checkpoint as ckpt
from covft.train.accelerator import fill_deepspeed_config, is_deepspeed, is_sharded, make_accelerator
from covft.train.audit import TrainingAudit
from covft.train.callbacks import Callback, TrainerCallback, as_callbacks
from covft.train.config import ConfigError, TrainConfig, config_from_dict, load_config, save_config
from covft.train.guards import NonFiniteLossError, SkipBudget, global_report, non_finite
from covft.train.logging import finish_trackers, make_trackers, require_trackers, start_trackers
from covft.train.outputs import CONFIG_FILE, SUMMARY_FILE, TrainResult
from covft.train.resume import restore

__all__ = ["CONFIG_FILE", "SUMMARY_FILE", "NonFiniteLossError", "TrainResult", "Trainer", "TrainerCallback"]


def _as_config(config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str]) -> TrainConfig:
    if isinstance(config, Mapping):
        return config_from_dict(dict(config))
    return config if isinstance(config, TrainConfig) else load_config(config)


class Trainer:
    """One training stage: :meth:`fit` runs :meth:`setup`, then the loop (see the module docstring).

    Each optimizer step is :meth:`train_step` over its micro-batches; :meth:`save` writes a
    resumable checkpoint and :meth:`resume` continues from one.
    """

    def __init__(
        self,
        config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str],
        callbacks: Iterable[Callback] = (),
    ) -> None:
        self.config = _as_config(config).validate()
        self.loop = self.config.train
        self.callbacks = as_callbacks(callbacks)
        self.output_dir = Path(self.config.output_dir)
        self.step = 0
        self.loss_history: list[float] = []
        self.notices: list[str] = []
        self.report = SkipReport()
        self.samples_per_second = 0.0
        self.audit: TrainingAudit | None = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> TrainResult | None:
        """Check every input, then build the run; returns the result of an already finished run.

        Every input (config, output directory, data, model, ``init_from``) is checked before
        anything is written to ``output_dir``.
        """
        config, loop = self.config, self.loop
        if config.data.train is None:
            raise ConfigError("data.train is not set. Fix: data.train=PATH/TO/llava_format.json")
        require_trackers(loop.report_to)
        outputs.check_output_dir(self.output_dir)
        finished = outputs.refuse_earlier_run(self.output_dir, config.resume)
        if finished is not None:
            return finished
        from accelerate.utils import set_seed

        latest = ckpt.list_checkpoints(self.output_dir)[-1:] if config.resume else []
        resume_step, self.resume_from = latest[0] if latest else (None, None)
        self.accelerator = make_accelerator(config, make_trackers(config, resume_step))
        set_seed(loop.seed)
        if config.init_from:
            setup.weight_files(config.init_from)  # a missing stage-1 run is named before anything is built
        self.dataset = batches.open_dataset(config, self.accelerator.is_main_process)
        model = setup.build_model(config)
        self._create_output_dir()  # every input is valid: from here on, output_dir is written
        self._prepare(model)
        self.report.merge(self.dataset.skipped)
        if self.resume_from is not None:
            self.resume(self.resume_from)
        self._prepare_loop()
        if loop.audit:  # last, so that it reads each step after the user's callbacks
            self.audit = TrainingAudit.for_run(
                self.accelerator, self.optimizer, strict=loop.audit == "strict"
            )
            self.audit.start(self.unwrapped)
            self.callbacks.append(self.audit)
        return None

    def _create_output_dir(self) -> None:
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale(self.output_dir)
            save_config(self.config, self.output_dir / CONFIG_FILE)
        self.accelerator.wait_for_everyone()

    def _prepare(self, model: Any) -> None:
        """Optimizer, batch sampler and schedule; everything handed to ``accelerator.prepare``."""
        loop, accelerator = self.loop, self.accelerator
        if loop.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        groups = setup.optimizer_groups(model.parameter_groups(), loop, setup.lr_scales(model))
        optimizer = setup.make_optimizer(groups, loop)
        self.group_names = [group["name"] for group in optimizer.param_groups]
        self.sampler = batches.make_sampler(self.dataset, self.config, accelerator)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = setup.total_steps(loop, self.steps_per_epoch)
        scheduler = setup.make_scheduler(optimizer, loop, self.total_steps)
        fill_deepspeed_config(accelerator, self.config, model)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.unwrapped = accelerator.unwrap_model(self.model)

    @property
    def layout(self) -> dict[str, Any]:
        """What fixes the batch order: a resumed run must have the same."""
        return {
            "world_size": self.accelerator.num_processes,
            "batch_size": self.loop.batch_size,
            "grad_accum": self.loop.grad_accum,
            "seed": self.loop.seed,
            "group_by_modality_length": self.config.data.group_by_modality_length,
            "total_steps": self.total_steps,
            **self._mixture(),
        }

    def _mixture(self) -> dict[str, Any]:
        """The data mixture, when it is not one whole pass over the files (older checkpoints lack it)."""
        data = self.config.data
        if data.fraction == 1.0 and data.weights is None:
            return {}
        return {"fraction": data.fraction, "weights": data.weights, "fraction_seed": data.fraction_seed}

    def _prepare_loop(self) -> None:
        """Checkpoints, skip budget, the DataLoader's collate_fn, trackers and the loop's guards."""
        accelerator, config, loop = self.accelerator, self.config, self.loop
        self.checkpoints = ckpt.CheckpointKeeper(
            accelerator, self.output_dir, loop.save_total_limit, self.resume_from
        )
        skipping = config.data.on_bad_sample == "skip"
        self.budget = SkipBudget(accelerator, self.dataset, config.data.max_skip_fraction, enabled=skipping)
        self.collate = batches.make_collate(
            self.unwrapped, self.dataset, config, vision_every_batch=is_sharded(accelerator)
        )
        start_trackers(accelerator, config)
        self.float_dtype = (
            torch.bfloat16 if (is_deepspeed(accelerator) and loop.precision == "bf16") else None
        )
        # fp16's loss scaler expects overflowing gradients now and then and skips those updates itself
        self.check_gradients = loop.precision != "fp16"
        self.fallback: dict[str, Any] | None = None

    # ------------------------------------------------------------------ resume / save
    def resume(self, path: Path) -> None:
        """Continue from checkpoint ``path``: weights, optimizer, schedule, RNG, history, skips."""
        state = restore(self.accelerator, path, self.layout, self.dataset, self.config)
        self.step = int(state["step"])
        setup.apply_schedule(self.optimizer, self.scheduler, self.loop, self.step)
        self.loss_history = [float(x) for x in state["loss_history"]]
        self.report.merge(SkipReport.from_dict(state.get("skipped", {})))
        self.notices = state["notices"]

    def save(self) -> None:
        """Write a resumable checkpoint of the current step (collective)."""
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "layout": self.layout,
            "loss_history": self.loss_history,
            "skipped": global_report(self.accelerator, self.report).to_dict(),
            "data": self.dataset.fingerprints,
            "schedule": setup.schedule_settings(self.loop),
        }
        self.checkpoints.save(self.step, state)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Set up (unless done), train to ``total_steps``, save the model; returns the result."""
        from tqdm.auto import tqdm

        finished = self.setup()
        if finished is not None:
            print(
                f"covft train: {self.output_dir} already finished ({finished.steps} steps); nothing to do",
                flush=True,
            )
            return finished
        self.progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.config.name or f"stage {self.config.stage} {setup.strategy_for(self.config)[0]}",
            disable=not (self.accelerator.is_main_process and self.loop.progress_bar),
            dynamic_ncols=True,
        )
        self.model.train()
        try:
            while self.step < self.total_steps:
                self._train_epoch(self.step // self.steps_per_epoch)
        finally:
            self.progress.close()
            finish_trackers(self.accelerator)
        return self._finish()

    def _train_epoch(self, epoch: int) -> None:
        """Train from the current step to the end of ``epoch`` (or to ``total_steps``)."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        self.sampler.set_start((self.step % self.steps_per_epoch) * self.loop.grad_accum)
        loader = batches.epoch_loader(
            self.dataset, self.sampler, self.collate, self.config.data.num_workers, self.loop.seed + epoch
        )
        self._micro_losses: list[torch.Tensor] = []
        self._stand_in_losses: list[torch.Tensor] = []
        self._step_ids: list[str] = []
        self._started = time.perf_counter()
        for collated in loader:
            batches.apply_policy(collated, self.config.data.on_bad_sample, self.report)
            batch, weight = collated.batch, 1.0
            if batch is None:  # every sample of this micro-batch was skipped
                # forward a good batch with zero weight: every process still runs forward and
                # backward, so DDP stays in step, and nothing is learned from it. Always the
                # dataset's first usable sample, never the last batch seen, so that a resumed run
                # forwards the same stand-in as the uninterrupted one
                if self.fallback is None:
                    self.fallback = batches.first_good_batch(
                        self.collate, self.dataset, self.config.data.on_bad_sample, self.report
                    )
                batch, weight = self.fallback, 0.0
            self._step_ids.extend(collated.ids)
            step_loss = self.train_step(batch, weight)
            if step_loss is not None:
                self._end_step(step_loss)
                if self.step >= self.total_steps:
                    break

    def train_step(self, batch: dict[str, Any], weight: float = 1.0) -> float | None:
        """Forward and backward one micro-batch; after the last one of a step, update the model.

        Returns the step's mean loss when the optimizer stepped, else ``None``.
        """
        accelerator, model = self.accelerator, self.model
        with accelerator.accumulate(model):
            output = model(**batches.to_device(batch, accelerator.device, self.float_dtype))
            loss = output.loss * weight
            if weight > 0:  # a stand-in's loss is not the step's: nothing was learned from it
                self._micro_losses.append(output.loss.detach().float())
            else:
                self._stand_in_losses.append(output.loss.detach().float())
            if loss.requires_grad:
                accelerator.backward(loss)
            if not accelerator.sync_gradients:
                return None
            local = torch.stack(self._micro_losses or self._stand_in_losses).mean()
            step_loss = accelerator.reduce(local, reduction="mean").item()
            self._optimizer_step(step_loss)
        return step_loss

    def _optimizer_step(self, step_loss: float) -> None:
        """Check the step is finite, run the callbacks, then update weights and schedule."""
        next_step = self.step + 1
        self.budget.check(self.report)
        max_norm = self.loop.max_grad_norm if self.loop.max_grad_norm is not None else math.inf
        self.grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        bad = non_finite(step_loss, self.grad_norm if self.check_gradients else None)
        if bad is not None:
            quantity, value = bad
            last_good = self.checkpoints.good
            raise NonFiniteLossError(
                next_step,
                value,
                self._step_ids,
                last_good,
                quantity=quantity,
                set_aside=self.checkpoints.set_aside(),
            )
        self.checkpoints.next_step_was_finite()
        for callback in self.callbacks:
            callback.before_optimizer_step(next_step, self.unwrapped, step_loss)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _end_step(self, step_loss: float) -> None:
        """Count the step, run the callbacks, log, checkpoint when due."""
        self.step += 1
        self.loss_history.append(step_loss)
        for callback in self.callbacks:
            callback.after_optimizer_step(self.step, self.unwrapped, step_loss)
        elapsed = time.perf_counter() - self._started
        self.samples_per_second = self.sampler.global_batch_size / elapsed if elapsed > 0 else 0.0
        if self.step % self.loop.logging_steps == 0 or self.step == self.total_steps:
            self.accelerator.log(self._metrics(step_loss), step=self.step)
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{step_loss:.4f}", samples_s=f"{self.samples_per_second:.1f}")
        if self.loop.save_steps and self.step % self.loop.save_steps == 0 and self.step < self.total_steps:
            self.save()
        for callback in self.callbacks:
            callback.on_step_end(self.step, self.unwrapped, step_loss)
        self._micro_losses, self._stand_in_losses, self._step_ids = [], [], []
        self._started = time.perf_counter()

    def _metrics(self, step_loss: float) -> dict[str, float]:
        """What is logged for a step: loss, progress, throughput, gradient norm, lr, routing."""
        metrics: dict[str, float] = {
            "loss": step_loss,
            "epoch": self.step / self.steps_per_epoch,
            "samples_per_second": self.samples_per_second,
            "skipped_samples": float(self.report.total),
        }
        if self.grad_norm is not None:
            metrics["grad_norm"] = float(self.grad_norm)
        for name, group in zip(self.group_names, self.optimizer.param_groups, strict=True):
            if not name.endswith("_no_decay"):  # same lr as its part's decay group
                metrics[f"lr/{name}"] = float(group["lr"])
        metrics.update({key: float(value) for key, value in self.unwrapped.routing_stats().items()})
        return metrics

    def _finish(self) -> TrainResult:
        """Save the model and ``train_summary.json`` (collective); returns the result."""
        outputs.save_final_model(self.accelerator, self.model, self.output_dir)
        report = global_report(self.accelerator, self.report)
        return outputs.finish_run(
            self.accelerator,
            self.output_dir,
            self.loss_history,
            report,
            self.samples_per_second,
            data_notes={note: len(ids) for note, ids in self.dataset.notes.items()},
            resume_notices=self.notices,
            audit=self.audit.summary() if self.audit is not None else None,
        )


def train(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str], callbacks: Iterable[Callback] = ()
) -> TrainResult:
    """Run one training stage and return its :class:`TrainResult` (``Trainer(config, callbacks).fit()``).

    ``config`` is a :class:`TrainConfig`, a nested mapping of config keys, or a YAML recipe (path
    or shipped name). ``callbacks`` are :class:`TrainerCallback` objects or ``fn(step, model,
    loss)`` functions (called before each optimizer step).
    """
    return Trainer(config, callbacks).fit()
