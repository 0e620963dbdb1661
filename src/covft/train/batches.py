"""Training data: the dataset, the DataLoader and its ``collate_fn``, which builds model batches.

The DataLoader's ``collate_fn`` is :class:`PolicyCollate`: the model's :class:`covft.data.Collator`
(tokenising, image preprocessing, context inputs), built once and run where the DataLoader runs
it, in worker processes when ``data.num_workers > 0``. A bad sample never raises inside a worker
(torch would wrap the error in a worker traceback): loading and collation problems travel back
with the batch (:class:`Collated`), and the main process applies the bad-sample policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from covft.data.collator import IGNORE_INDEX, Collator, mean_colour
from covft.data.dataset import LlavaDataset, Record, SkippedSample, SkipReport
from covft.data.errors import BadSampleError
from covft.data.sampler import GroupedBatchSampler
from covft.train import setup
from covft.train.config import TrainConfig


def open_dataset(config: TrainConfig, main: bool) -> LlavaDataset:
    """The training data, checked; what parsing changed to match LLaVA is printed by ``main``."""
    dataset = LlavaDataset(
        config.data.train,  # type: ignore[arg-type]  # checked by the caller
        config.data.image_folder,
        on_bad_sample=config.data.on_bad_sample,
        check_images=config.data.check_images,
        max_skip_fraction=config.data.max_skip_fraction,
        weights=config.data.weights,
        fraction=config.data.fraction,
        fraction_seed=config.data.fraction_seed,
    )
    for notes in (dataset.notes_summary(), dataset.mixture_summary()):
        if notes and main:
            print(f"covft train: {notes}", flush=True)
    return dataset


class IndexedDataset(Dataset):
    """Each loaded sample with its index (to name its file and record); never raises.

    A sample that cannot be loaded comes back as a :class:`SkippedSample` under either policy.
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


@dataclass
class Collated:
    """One micro-batch as the DataLoader yields it."""

    batch: dict[str, Any] | None
    """The model batch, ``None`` when no sample of the micro-batch could be used."""
    ids: list[str] = field(default_factory=list)
    """The ids of the samples in ``batch``."""
    problems: list[BadSampleError] = field(default_factory=list)
    """The bad samples met, each naming its file and record (under ``error``: the first one)."""


class PolicyCollate:
    """The DataLoader's ``collate_fn``: ``(index, sample)`` pairs to a :class:`Collated` batch.

    Picklable (a collator, the records and two settings), so it runs in DataLoader workers. With
    ``vision_every_batch`` (DeepSpeed and FSDP, which gather parameters module by module and
    reduce gradients parameter by parameter, so every process must run the same modules), a
    micro-batch without any image gets one blank image sample whose labels are all ignored: the
    vision tower runs on every process and the loss is that of the real samples (LLaVA feeds a
    zero image to text-only samples for the same reason).
    """

    def __init__(
        self, collator: Collator, records: list[Record], policy: str, *, vision_every_batch: bool = False
    ) -> None:
        self.collator = collator
        self.records = records
        self.stop_at_first = policy == "error"
        self.vision_every_batch = vision_every_batch

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        blank = self.vision_every_batch and all(s.get("image") is None for s in samples)
        if blank:
            samples = [*samples, self._blank_image_sample()]
        batch = self.collator(samples)
        if blank:
            batch["labels"][-1] = IGNORE_INDEX
        return batch

    def _blank_image_sample(self) -> dict[str, Any]:
        from PIL import Image

        colour = mean_colour(self.collator.image_processor)  # zero after normalisation, like LLaVA's
        return {
            "id": "<blank image>",
            "image": Image.new("RGB", (8, 8), colour),
            "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "."}],
        }

    def _locate(self, error: BadSampleError, index: int) -> BadSampleError:
        """``error`` naming the file and record of sample ``index``."""
        located = self.records[index].error(error.reason, error.fix or "")
        located.__cause__ = error
        return located

    def __call__(self, items: list[tuple[int, Any]]) -> Collated:
        problems: list[BadSampleError] = []
        good: list[tuple[int, dict[str, Any]]] = []
        for index, sample in items:
            if isinstance(sample, SkippedSample):
                problems.append(sample.error)
                if self.stop_at_first:
                    return Collated(None, problems=problems)
            else:
                good.append((index, sample))
        if not good:
            return Collated(None, problems=problems)
        try:
            return Collated(self._collate([s for _, s in good]), self._ids(good), problems)
        except BadSampleError as error:
            if self.stop_at_first and len(good) == 1:
                return Collated(None, problems=[*problems, self._locate(error, good[0][0])])
        kept: list[tuple[int, dict[str, Any]]] = []
        for index, sample in good:  # find the culprit(s) one sample at a time
            try:
                self._collate([sample])
            except BadSampleError as single:
                problems.append(self._locate(single, index))
                if self.stop_at_first:
                    return Collated(None, problems=problems)
                continue
            kept.append((index, sample))
        if not kept:
            return Collated(None, problems=problems)
        return Collated(self._collate([s for _, s in kept]), self._ids(kept), problems)

    @staticmethod
    def _ids(samples: list[tuple[int, dict[str, Any]]]) -> list[str]:
        return [str(sample.get("id")) for _, sample in samples]


def apply_policy(collated: Collated, policy: str, report: SkipReport) -> None:
    """Raise the first problem under ``error``; count every one under ``skip`` (main process)."""
    if collated.problems and policy == "error":
        problem = collated.problems[0]
        raise problem from problem.__cause__
    for problem in collated.problems:
        report.add(problem)


def first_good_batch(
    collate: PolicyCollate, dataset: LlavaDataset, policy: str, report: SkipReport
) -> dict[str, Any]:
    """A one-sample batch of the first usable sample (stand-in for an all-bad micro-batch)."""
    indexed = IndexedDataset(dataset)
    for index in range(len(dataset)):
        collated = collate([indexed[index]])
        apply_policy(collated, policy, report)
        if collated.batch is not None:
            return collated.batch
    raise BadSampleError(
        "no sample of the dataset can be used",
        file=dataset.files,
        fix=f"repair the samples listed below\n{report.summary()}",
    )


def make_sampler(dataset: LlavaDataset, config: TrainConfig, accelerator: Any) -> GroupedBatchSampler:
    """This process's batch sampler: the batch order is a pure function of (seed, epoch)."""
    return GroupedBatchSampler(
        dataset.has_image,
        dataset.lengths,
        batch_size=config.train.batch_size,
        grad_accum=config.train.grad_accum,
        world_size=accelerator.num_processes,
        rank=accelerator.process_index,
        seed=config.train.seed,
        group_by_modality_length=config.data.group_by_modality_length,
    )


def make_collate(
    model: Any, dataset: LlavaDataset, config: TrainConfig, *, vision_every_batch: bool
) -> PolicyCollate:
    """The DataLoader's ``collate_fn`` for ``model`` (the unwrapped ``CovftModel``), built once."""
    if model.needs_text:
        model.ensure_text_encoder()  # the collator tokenises the router's context with its tokenizer
    collator = model.collator(setup.default_template(config), config.data.max_length)
    return PolicyCollate(
        collator, dataset.records, config.data.on_bad_sample, vision_every_batch=vision_every_batch
    )


def epoch_loader(
    dataset: LlavaDataset, sampler: GroupedBatchSampler, collate: PolicyCollate, num_workers: int, seed: int
) -> DataLoader:
    """The DataLoader of one epoch (the sampler is already set to its epoch and start)."""
    return DataLoader(
        IndexedDataset(dataset),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        # its own generator: iterating must not draw from the global RNG (dropout masks after a
        # resume would differ from the uninterrupted run's)
        generator=torch.Generator().manual_seed(seed),
    )


def to_device(batch: dict[str, Any], device: torch.device, float_dtype: torch.dtype | None) -> dict[str, Any]:
    """``batch`` with its tensors on ``device`` (floating ones cast to ``float_dtype`` when given)."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if float_dtype is not None and value.is_floating_point():
                value = value.to(float_dtype)
        moved[key] = value
    return moved
