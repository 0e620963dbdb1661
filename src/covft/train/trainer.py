"""The training loop: one ``accelerate`` loop we control, exactly resumable.

``train(config)`` runs one stage of the recipe and returns a :class:`TrainResult`. The same code
runs on one CPU, under ``torchrun``/``accelerate launch`` with DDP, and with DeepSpeed ZeRO or
FSDP when ``accelerate launch`` is given their configs (see ``docs/training.md``).

Exact resume rests on three things: the batch order is a pure function of (seed, epoch) (see
:mod:`covft.data.sampler`), checkpoints hold the model, optimizer, scheduler and every RNG state,
and a resumed run starts at the first micro-batch the checkpoint had not consumed. On one CPU
process with the same seed, an interrupted-and-resumed run ends with bitwise the same weights as
an uninterrupted one.

Callbacks observe training without changing the loop: ``before_optimizer_step(step, model,
loss)`` runs after the gradients of a step are complete (accumulated, reduced across processes,
clipped) and before ``optimizer.step()``, e.g. to read vision gradients; ``after_optimizer_step``
runs after the update, e.g. to snapshot parameters. A plain function ``fn(step, model, loss)`` is
treated as ``before_optimizer_step``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from covft.data.collator import IGNORE_INDEX, mean_colour
from covft.data.dataset import LlavaDataset, SkippedSample, SkipReport
from covft.data.errors import BadSampleError
from covft.data.sampler import GroupedBatchSampler
from covft.errors import UserError
from covft.train import checkpoint as ckpt
from covft.train import recipe
from covft.train.config import ConfigError, TrainConfig, config_from_dict, load_config, save_config
from covft.train.logging import MetricsLogger, require_tracker

CONFIG_FILE = "train_config.yaml"
SUMMARY_FILE = "train_summary.json"
CRASH_ENV = "COVFT_TEST_CRASH_AFTER_STEP"
"""Test hook: when set to k, the process exits hard (``os._exit``) right after optimizer step k."""


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


class TrainerCallback:
    """Override either hook; ``model`` is the unwrapped ``CovftModel``, ``loss`` the step's mean loss."""

    def before_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        """After backward (gradients complete) and before ``optimizer.step()``."""

    def after_optimizer_step(self, step: int, model: nn.Module, loss: float) -> None:
        """After the optimizer and scheduler stepped."""


Callback = TrainerCallback | Callable[[int, nn.Module, float], Any]


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    steps: int
    """Optimizer steps completed (the global step)."""
    metrics: dict[str, float]
    """Final metrics: last logged loss, mean loss of the last steps, throughput, skipped count."""
    loss_history: list[float] = field(default_factory=list)
    """Mean training loss of every optimizer step, from step 1 (including resumed-over steps)."""
    skipped: dict[str, Any] = field(default_factory=dict)
    """Counts and examples of bad samples skipped under ``data.on_bad_sample=skip``."""


class _IndexedDataset(Dataset):
    """Wraps the dataset so each loaded sample carries its index (to name its file and record).

    A sample that cannot be loaded comes back as a :class:`SkippedSample` under either policy, so
    a DataLoader worker never raises (torch would wrap the error in a worker traceback); the
    collator applies the policy in the main process.
    """

    def __init__(self, dataset: LlavaDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        try:
            return index, self.dataset[index]
        except BadSampleError as error:
            return index, SkippedSample(error)


def _keep_as_list(items: list[Any]) -> list[Any]:
    """DataLoader collate that leaves samples alone (the model's collator tokenises them)."""
    return items


def _as_callbacks(callbacks: Iterable[Callback]) -> list[TrainerCallback]:
    result: list[TrainerCallback] = []
    for callback in callbacks:
        if isinstance(callback, TrainerCallback):
            result.append(callback)
        elif callable(callback):
            wrapper = TrainerCallback()
            wrapper.before_optimizer_step = callback  # type: ignore[method-assign]
            result.append(wrapper)
        else:
            raise TypeError(f"callback {callback!r} is neither a TrainerCallback nor callable")
    return result


class _Collator:
    """Turns loaded samples into a model batch, applying the bad-sample policy.

    With ``vision_every_batch`` (DeepSpeed and FSDP, which gather parameters module by module and
    reduce gradients parameter by parameter, so every process must run the same modules), a
    micro-batch without any image gets one blank image sample whose labels are all ignored: the
    vision tower runs on every process and the loss is that of the real samples (LLaVA feeds a
    zero image to text-only samples for the same reason).
    """

    def __init__(
        self,
        model: Any,
        dataset: LlavaDataset,
        config: TrainConfig,
        report: SkipReport,
        *,
        vision_every_batch: bool = False,
    ) -> None:
        self.model = model
        self.dataset = dataset
        self.template = recipe.default_template(config)
        self.max_length = config.data.max_length
        self.policy = config.data.on_bad_sample
        self.report = report
        self.vision_every_batch = vision_every_batch

    def _locate(self, error: BadSampleError, index: int) -> BadSampleError:
        """Add the file and record of sample ``index`` to a collator error."""
        return self.dataset.records[index].error(error.reason, error.fix or "")

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        blank = self.vision_every_batch and all(s.get("image") is None for s in samples)
        if blank:
            samples = [*samples, self._blank_image_sample()]
        batch = self.model.collate(samples, template=self.template, max_length=self.max_length)
        if blank:
            batch["labels"][-1] = IGNORE_INDEX
        return batch

    def _blank_image_sample(self) -> dict[str, Any]:
        from PIL import Image

        colour = mean_colour(self.model.image_processor)  # zero after normalisation, like LLaVA's
        return {
            "id": "<blank image>",
            "image": Image.new("RGB", (8, 8), colour),
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "."}],
        }

    def first_good_batch(self) -> dict[str, Any]:
        """A one-sample batch of the first usable sample (stand-in for an all-bad micro-batch)."""
        for index in range(len(self.dataset)):
            batch, _ids = self([_IndexedDataset(self.dataset)[index]])
            if batch is not None:
                return batch
        raise BadSampleError(
            "no sample of the dataset can be used",
            file=self.dataset.files,
            fix=f"repair the samples listed below\n{self.report.summary()}",
        )

    def __call__(self, items: list[tuple[int, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
        """Returns (batch or None when every sample was skipped, sample ids)."""
        good: list[tuple[int, dict[str, Any]]] = []
        for index, sample in items:
            if isinstance(sample, SkippedSample):
                if self.policy == "error":
                    raise sample.error
                self.report.add(sample.error)
            else:
                good.append((index, sample))
        if not good:
            return None, []
        try:
            return self._collate([s for _, s in good]), [str(s.get("id")) for _, s in good]
        except BadSampleError as error:
            if self.policy == "error" and len(good) == 1:
                raise self._locate(error, good[0][0]) from error
            kept: list[tuple[int, dict[str, Any]]] = []
            for index, sample in good:  # find the culprit(s) one sample at a time
                try:
                    self._collate([sample])
                except BadSampleError as single:
                    located = self._locate(single, index)
                    if self.policy == "error":
                        raise located from single
                    self.report.add(located)
                    continue
                kept.append((index, sample))
            if not kept:
                return None, []
            return self._collate([s for _, s in kept]), [str(s.get("id")) for _, s in kept]


def _accelerator(config: TrainConfig) -> Any:
    """An ``Accelerator`` for this run (DDP/DeepSpeed/FSDP come from ``accelerate launch``)."""
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
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"launched with WORLD_SIZE={launched} but accelerate runs {accelerator.num_processes} process(es); "
            "every process would train alone and overwrite the others' output. Fix: launch with "
            "`accelerate launch` and a config from covft/configs/accelerate, or set ACCELERATE_USE_CPU=1 on CPU"
        )
    return accelerator


def _fill_deepspeed_config(accelerator: Any, config: TrainConfig, model: Any) -> None:
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


def _flag(name: str) -> bool:
    """Whether the launcher set environment variable ``name`` to true."""
    return os.environ.get(name, "false").lower() in ("true", "1")


def _no_accelerator_device() -> bool:
    """True when no GPU-like device exists, so distributed runs must use the CPU (gloo)."""
    from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

    return not (torch.cuda.is_available() or is_xpu_available() or is_npu_available() or is_mps_available())


def _is_deepspeed(accelerator: Any) -> bool:
    return accelerator.state.deepspeed_plugin is not None


def _to_device(
    batch: dict[str, Any], device: torch.device, float_dtype: torch.dtype | None
) -> dict[str, Any]:
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if float_dtype is not None and value.is_floating_point():
                value = value.to(float_dtype)
        moved[key] = value
    return moved


def _global_report(accelerator: Any, report: SkipReport) -> SkipReport:
    """Merge every process's skip counts (collective; the result is meaningful on the main process)."""
    if accelerator.num_processes == 1:
        return report
    from accelerate.utils import gather_object

    merged = SkipReport()
    for part in gather_object([report.to_dict()]):
        merged.merge(SkipReport.from_dict(part))
    return merged


class _GatheredModel:
    """The unwrapped model seen through a gathered full state dict (ZeRO-3 / FSDP shard parameters)."""

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        self._model = model
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _save_final_model(accelerator: Any, model: nn.Module, output_dir: Path) -> None:
    """Save the trained model into ``output_dir`` (safetensors + covft_config.json); collective.

    Everything is written into a temporary folder first and then moved in file by file with
    atomic renames, so a crash leaves whole files only. Under ZeRO-3/FSDP the full state dict is
    gathered first (that is what ``stage3_gather_16bit_weights_on_model_save`` enables).
    """
    from covft.models.checkpoint import save_pretrained

    unwrapped = accelerator.unwrap_model(model)
    target: Any = unwrapped
    if _is_deepspeed(accelerator) or getattr(accelerator.state, "fsdp_plugin", None) is not None:
        target = _GatheredModel(unwrapped, accelerator.get_state_dict(model))
    if accelerator.is_main_process:
        temp = output_dir / ".tmp-final-model"
        if temp.exists():
            shutil.rmtree(temp)
        save_pretrained(target, temp)
        ckpt.fsync_tree(temp)
        for item in sorted(temp.iterdir()):
            destination = output_dir / item.name
            if destination.is_dir():
                shutil.rmtree(destination)
            os.replace(item, destination)
        shutil.rmtree(temp)
        ckpt.fsync_dir(output_dir)
    accelerator.wait_for_everyone()


def _finished_run(output_dir: Path) -> TrainResult | None:
    """The result recorded by a run that completed in ``output_dir``, if any."""
    path = output_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    return TrainResult(
        output_dir, int(summary["steps"]), summary["metrics"], summary["loss_history"], summary["skipped"]
    )


def _check_output_dir(output_dir: Path) -> None:
    """Refuse an ``output_dir`` that cannot be written, before anything is built or written."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir={output_dir} is a file. Fix: choose a directory for output_dir")
    existing = next(path for path in (output_dir, *output_dir.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"output_dir={output_dir} cannot be created: {existing} is a file. Fix: choose another output_dir"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output_dir={output_dir} cannot be written: {existing} is read-only for this user. "
            "Fix: choose a writable output_dir"
        )


def _refuse_earlier_run(output_dir: Path, resume: bool) -> TrainResult | None:
    """An earlier run's result when it finished and ``resume``; refuse to overwrite earlier work."""
    finished = _finished_run(output_dir)
    if finished is not None:
        if not resume:
            raise ConfigError(
                f"{output_dir} already holds a finished run ({finished.steps} steps). "
                "Fix: choose another output_dir, or resume=true to get that run's result back"
            )
        return finished
    existing = ckpt.list_checkpoints(output_dir)
    if existing and not resume:
        raise ConfigError(
            f"{output_dir} already holds checkpoints ({existing[-1][1].name}) of an earlier run. "
            "Fix: resume=true to continue it, or choose another output_dir"
        )
    return None


class _Checkpoints:
    """This run's checkpoints; a new one counts as good only once the step after it was finite.

    A checkpoint written at step k can already hold damaged weights: the update of step k can
    turn them into NaN or into numbers so large that the loss of step k+1 is NaN. So a checkpoint
    is *pending* until step k+1's loss and gradient norm are finite, and old checkpoints are
    rotated away only then: ``save_total_limit`` never deletes the last good one. When step k+1
    is not finite, :meth:`set_aside` moves the pending one to ``nonfinite-checkpoint-k`` (kept
    for inspection, never resumed from), and the error names the last good one.
    """

    def __init__(self, accelerator: Any, output_dir: Path, limit: int | None, resumed: Path | None) -> None:
        self.accelerator = accelerator
        self.output_dir = output_dir
        self.limit = limit
        earlier = [path for _step, path in ckpt.list_checkpoints(output_dir) if path != resumed]
        # the checkpoint resumed from has not yet been followed by a finite step in this process
        self.pending = resumed
        self.good = earlier[-1] if resumed is not None and earlier else None

    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the checkpoint of ``step`` (collective); it is pending until the next step."""
        self.pending = ckpt.save_checkpoint(self.accelerator, self.output_dir, step, state)

    def next_step_was_finite(self) -> None:
        """The pending checkpoint is good: keep it and rotate older ones away."""
        if self.pending is None:
            return
        self.good, self.pending = self.pending, None
        if self.accelerator.is_main_process:
            ckpt.rotate_checkpoints(self.output_dir, self.limit)

    def set_aside(self) -> Path | None:
        """Move the pending checkpoint out of resume's way; returns where it went."""
        if self.pending is None:
            return None
        target = self.pending.with_name(f"nonfinite-{self.pending.name}")
        if self.accelerator.is_main_process:
            if target.exists():
                shutil.rmtree(target)
            os.rename(self.pending, target)
        self.pending = None
        return target


class _SkipBudget:
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
        self.dataset.check_skip_budget(_global_report(self.accelerator, report), self.max_fraction)


def _non_finite(loss: float, grad_norm: Any) -> tuple[str, float] | None:
    """("loss" or "gradient norm", its value) when it is NaN or infinite, else ``None``."""
    if not math.isfinite(loss):
        return "loss", loss
    if grad_norm is not None and not math.isfinite(float(grad_norm)):
        return "gradient norm", float(grad_norm)
    return None


def _open_dataset(config: TrainConfig, main: bool) -> LlavaDataset:
    """The training data, checked; what parsing changed to match LLaVA is printed by ``main``."""
    dataset = LlavaDataset(
        config.data.train,  # type: ignore[arg-type]  # checked by the caller
        config.data.image_folder,
        on_bad_sample=config.data.on_bad_sample,
        check_images=config.data.check_images,
        max_skip_fraction=config.data.max_skip_fraction,
    )
    notes = dataset.notes_summary()
    if notes and main:
        print(f"covft train: {notes}", flush=True)
    return dataset


def _resume(
    accelerator: Any, path: Path, layout: dict[str, Any], dataset: LlavaDataset, config: TrainConfig
) -> dict[str, Any]:
    """Restore a checkpoint; refuse a changed layout, report changed data and schedule settings."""
    state = ckpt.load_checkpoint(accelerator, path)
    saved_layout = state.get("layout", {})
    changed = {k: (saved_layout.get(k), v) for k, v in layout.items() if saved_layout.get(k) != v}
    if changed:
        raise ConfigError(
            f"cannot resume exactly from {path}: the data layout changed {changed} (saved, now). "
            "Fix: resume with the same number of processes, batch_size, grad_accum, seed and steps"
        )
    notices = []
    saved_data = state.get("data")
    if saved_data is not None and list(saved_data.values()) != list(dataset.fingerprints.values()):
        notices.append(
            f"warning: the training data changed since {path.name} was written "
            f"(sha256 then {_short(saved_data)}, now {_short(dataset.fingerprints)}); the batch order "
            "is recomputed from the new data, so the resumed run is not the interrupted one (samples "
            "may be seen twice or not at all). Restore the old data file for an exact resume"
        )
    schedule = recipe.schedule_settings(config.train)
    saved_schedule = state.get("schedule", schedule)
    differences = [
        f"train.{k} {saved_schedule.get(k)} -> {v}" for k, v in schedule.items() if saved_schedule.get(k) != v
    ]
    if differences:
        notices.append(
            f"changed settings take effect from step {int(state['step']) + 1}: {', '.join(differences)}"
        )
    state["notices"] = notices
    if accelerator.is_main_process:
        print(f"covft train: resumed from {path} at step {state['step']}", flush=True)
        for notice in notices:
            print(f"covft train: {notice}", file=sys.stderr, flush=True)
    return state


def _short(fingerprints: dict[str, str]) -> dict[str, str]:
    return {file: digest[:12] for file, digest in fingerprints.items()}


def train(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str], callbacks: Iterable[Callback] = ()
) -> TrainResult:
    """Run one training stage and return its :class:`TrainResult`; see the module docstring.

    ``config`` is a :class:`TrainConfig`, a nested mapping of config keys, or a YAML recipe (path
    or shipped name). ``callbacks`` are :class:`TrainerCallback` objects or ``fn(step, model,
    loss)`` functions (called before each optimizer step). Every input (config, output directory,
    data, model, ``init_from``) is checked before anything is written to ``output_dir``.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    if isinstance(config, Mapping):
        config = config_from_dict(dict(config))
    elif not isinstance(config, TrainConfig):
        config = load_config(config)
    config.validate()
    loop = config.train
    hooks = _as_callbacks(callbacks)
    output_dir = Path(config.output_dir)
    if config.data.train is None:
        raise ConfigError("data.train is not set. Fix: data.train=PATH/TO/llava_format.json")
    require_tracker(loop.report_to)
    _check_output_dir(output_dir)
    finished = _refuse_earlier_run(output_dir, config.resume)
    if finished is not None:
        print(
            f"covft train: {output_dir} already finished ({finished.steps} steps); nothing to do", flush=True
        )
        return finished

    accelerator = _accelerator(config)
    main = accelerator.is_main_process
    resume_from = ckpt.latest_checkpoint(output_dir) if config.resume else None
    set_seed(loop.seed)
    if config.init_from:
        recipe.weight_files(config.init_from)  # a missing stage-1 run is named before anything is built
    dataset = _open_dataset(config, main)
    model = recipe.build_model(config)
    # every input is valid: from here on, output_dir is written
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale(output_dir)
        save_config(config, output_dir / CONFIG_FILE)
    accelerator.wait_for_everyone()
    if loop.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    groups = recipe.optimizer_groups(model.parameter_groups(), loop, recipe.lr_scales(model))
    optimizer = recipe.make_optimizer(groups, loop)
    group_names = [group["name"] for group in optimizer.param_groups]

    sampler = GroupedBatchSampler(
        dataset.has_image,
        dataset.lengths,
        batch_size=loop.batch_size,
        grad_accum=loop.grad_accum,
        world_size=accelerator.num_processes,
        rank=accelerator.process_index,
        seed=loop.seed,
        group_by_modality_length=config.data.group_by_modality_length,
    )
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = loop.max_steps if loop.max_steps > 0 else math.ceil(loop.epochs * steps_per_epoch)
    scheduler = recipe.make_scheduler(optimizer, loop, total_steps)
    _fill_deepspeed_config(accelerator, config, model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    report = SkipReport()
    step = 0
    loss_history: list[float] = []
    notices: list[str] = []
    layout = {
        "world_size": accelerator.num_processes,
        "batch_size": loop.batch_size,
        "grad_accum": loop.grad_accum,
        "seed": loop.seed,
        "group_by_modality_length": config.data.group_by_modality_length,
        "total_steps": total_steps,
    }
    report.merge(dataset.skipped)
    if resume_from is not None:
        state = _resume(accelerator, resume_from, layout, dataset, config)
        recipe.apply_schedule(optimizer, scheduler, loop)
        step = int(state["step"])
        loss_history = [float(x) for x in state["loss_history"]]
        report.merge(SkipReport.from_dict(state.get("skipped", {})))
        notices = state["notices"]
    checkpoints = _Checkpoints(accelerator, output_dir, loop.save_total_limit, resume_from)
    budget = _SkipBudget(
        accelerator, dataset, config.data.max_skip_fraction, enabled=config.data.on_bad_sample == "skip"
    )
    sharded = _is_deepspeed(accelerator) or getattr(accelerator.state, "fsdp_plugin", None) is not None
    collate = _Collator(unwrapped, dataset, config, report, vision_every_batch=sharded)
    logger = MetricsLogger(
        output_dir,
        loop.report_to,
        enabled=main,
        resume_step=step if resume_from is not None else None,
        run_config=config.to_dict(),
        wandb_project=loop.wandb_project,
    )
    ds_dtype = torch.bfloat16 if (_is_deepspeed(accelerator) and loop.precision == "bf16") else None
    crash_after = int(os.environ[CRASH_ENV]) if os.environ.get(CRASH_ENV) else None
    # fp16's loss scaler expects overflowing gradients now and then and skips those updates itself
    check_gradients = loop.precision != "fp16"
    global_batch = sampler.global_batch_size
    progress = tqdm(
        total=total_steps,
        initial=step,
        desc=config.name or f"stage {config.stage} {recipe.strategy_for(config)[0]}",
        disable=not (main and loop.progress_bar),
        dynamic_ncols=True,
    )
    fallback: dict[str, Any] | None = None
    samples_per_second = 0.0
    model.train()
    try:
        while step < total_steps:
            epoch = step // steps_per_epoch
            sampler.set_epoch(epoch)
            sampler.set_start((step % steps_per_epoch) * loop.grad_accum)
            loader = DataLoader(
                _IndexedDataset(dataset),
                batch_sampler=sampler,
                collate_fn=_keep_as_list,
                num_workers=config.data.num_workers,
                # its own generator: iterating must not draw from the global RNG (dropout masks
                # after a resume would differ from the uninterrupted run's)
                generator=torch.Generator().manual_seed(loop.seed + epoch),
            )
            micro_losses: list[torch.Tensor] = []
            step_ids: list[str] = []
            started = time.perf_counter()
            for items in loader:
                batch, ids = collate(items)
                weight = 1.0
                if batch is None:  # every sample of this micro-batch was skipped
                    # forward a good batch with zero weight: every process still runs forward and
                    # backward, so DDP stays in step, and nothing is learned from it
                    batch = fallback if fallback is not None else collate.first_good_batch()
                    weight = 0.0
                else:
                    fallback = batch
                step_ids.extend(ids)
                with accelerator.accumulate(model):
                    outputs = model(**_to_device(batch, accelerator.device, ds_dtype))
                    loss = outputs.loss * weight
                    micro_losses.append(outputs.loss.detach().float())
                    if loss.requires_grad:
                        accelerator.backward(loss)
                    if not accelerator.sync_gradients:
                        continue
                    step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), reduction="mean").item()
                    next_step = step + 1
                    budget.check(report)
                    grad_norm = accelerator.clip_grad_norm_(
                        model.parameters(), loop.max_grad_norm if loop.max_grad_norm is not None else math.inf
                    )
                    bad = _non_finite(step_loss, grad_norm if check_gradients else None)
                    if bad is not None:
                        quantity, value = bad
                        raise NonFiniteLossError(
                            next_step,
                            value,
                            step_ids,
                            checkpoints.good,
                            quantity=quantity,
                            set_aside=checkpoints.set_aside(),
                        )
                    checkpoints.next_step_was_finite()
                    for hook in hooks:
                        hook.before_optimizer_step(next_step, unwrapped, step_loss)
                    optimizer.step()
                    if not accelerator.optimizer_step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step = next_step
                loss_history.append(step_loss)
                for hook in hooks:
                    hook.after_optimizer_step(step, unwrapped, step_loss)
                elapsed = time.perf_counter() - started
                samples_per_second = global_batch / elapsed if elapsed > 0 else 0.0
                if step % loop.logging_steps == 0 or step == total_steps:
                    metrics: dict[str, float] = {
                        "loss": step_loss,
                        "epoch": step / steps_per_epoch,
                        "samples_per_second": samples_per_second,
                        "skipped_samples": float(report.total),
                    }
                    if grad_norm is not None:
                        metrics["grad_norm"] = float(grad_norm)
                    for name, group in zip(group_names, optimizer.param_groups, strict=True):
                        if not name.endswith("_no_decay"):  # same lr as its part's decay group
                            metrics[f"lr/{name}"] = float(group["lr"])
                    stats = unwrapped.routing_stats()
                    metrics.update({key: float(value) for key, value in stats.items()})
                    logger.log(step, metrics)
                progress.update(1)
                progress.set_postfix(loss=f"{step_loss:.4f}", samples_s=f"{samples_per_second:.1f}")
                if loop.save_steps and step % loop.save_steps == 0 and step < total_steps:
                    state = {
                        "step": step,
                        "epoch": epoch,
                        "layout": layout,
                        "loss_history": loss_history,
                        "skipped": _global_report(accelerator, report).to_dict(),
                        "data": dataset.fingerprints,
                        "schedule": recipe.schedule_settings(loop),
                    }
                    checkpoints.save(step, state)
                if crash_after is not None and step == crash_after:
                    os._exit(99)
                micro_losses, step_ids = [], []
                started = time.perf_counter()
                if step >= total_steps:
                    break
    finally:
        progress.close()
        logger.close()

    _save_final_model(accelerator, model, output_dir)
    report = _global_report(accelerator, report)
    tail = loss_history[-max(1, min(10, len(loss_history))) :]
    final = {
        "loss": loss_history[-1] if loss_history else float("nan"),
        "mean_loss_last_steps": sum(tail) / len(tail) if tail else float("nan"),
        "samples_per_second": samples_per_second,
        "skipped_samples": float(report.total),
    }
    if main:
        summary = report.summary()
        if summary:
            print(summary, flush=True)
        ckpt.write_json_atomic(
            output_dir / SUMMARY_FILE,
            {
                "steps": step,
                "metrics": final,
                "loss_history": loss_history,
                "skipped": report.to_dict(),
                "data_notes": {note: len(ids) for note, ids in dataset.notes.items()},
                "resume_notices": notices,
            },
        )
    accelerator.wait_for_everyone()
    return TrainResult(output_dir, step, final, loss_history, report.to_dict())
