"""Training data: JSON or JSONL records (:mod:`covft.data.records`), images loaded lazily.

Each file's format (LLaVA or ``messages``, :mod:`covft.data.formats`) is detected from its records
and converted to LLaVA records. ``image`` is optional (text-only samples) and is relative to an
image folder. Records are parsed and checked against the sample contract
(:mod:`covft.data.contract`) when the dataset is opened; several files are mixed with weights and
a seeded fraction (:mod:`covft.data.mixture`); images are opened only when a sample is requested.

Bad input follows one policy, ``on_bad_sample``: ``"error"`` raises
:class:`~covft.data.errors.BadSampleError` naming the sample id, file, record and the fix;
``"skip"`` drops the sample and records why in :attr:`LlavaDataset.skipped` (structural problems)
or returns a :class:`SkippedSample` marker from ``__getitem__`` (unreadable images) so the training
loop can count it and carry on.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from covft.data import mixture
from covft.data.contract import multi_image_error
from covft.data.errors import BadSampleError, TooManyBadSamplesError
from covft.data.formats import FileFormat, MixedFormatsError
from covft.data.images import ImageTooLargeError, open_image
from covft.data.records import Record, parse_record, read_records

BadSamplePolicy = Literal["error", "skip"]


@dataclass(frozen=True)
class SkippedSample:
    """Stands in for a sample that could not be loaded under the ``skip`` policy."""

    error: BadSampleError


@dataclass
class SkipReport:
    """What was skipped and why: one entry per bad sample (met again in a later epoch: counted once)."""

    samples: dict[str, str] = field(default_factory=dict)
    """Full error message of each skipped sample -> its reason."""

    def add(self, error: BadSampleError) -> None:
        """Record one skipped sample."""
        self.samples.setdefault(str(error), error.reason)

    def merge(self, other: SkipReport) -> None:
        """Add another report's samples (e.g. from another process) into this one."""
        for message, reason in other.samples.items():
            self.samples.setdefault(message, reason)

    @property
    def counts(self) -> Counter[str]:
        """Number of skipped samples per kind of reason (:func:`reason_kind`)."""
        return Counter(reason_kind(reason) for reason in self.samples.values())

    @property
    def total(self) -> int:
        """Number of skipped samples."""
        return len(self.samples)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (stored in checkpoints so a resumed run keeps counting)."""
        return {"total": self.total, "counts": dict(self.counts), "samples": dict(self.samples)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkipReport:
        """Inverse of :meth:`to_dict`."""
        return cls(samples=dict(data.get("samples", {})))

    def summary(self, kinds: int = 10) -> str:
        """A human-readable summary of the ``kinds`` commonest reasons, empty when nothing was skipped."""
        if not self.total:
            return ""
        lines = [f"skipped {self.total} bad sample(s):"]
        counts = self.counts.most_common()
        for kind, count in counts[:kinds]:
            lines.append(f"  {count} x {kind}")
            examples = [m for m, reason in self.samples.items() if reason_kind(reason) == kind][:3]
            lines.extend(f"      e.g. {example}" for example in examples)
        if len(counts) > kinds:
            lines.append(f"  ... and {len(counts) - kinds} other kind(s) of reason")
        return "\n".join(lines)


def reason_kind(reason: str) -> str:
    """A reason with its specifics (quoted names, numbers) blanked, to count reasons by kind."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'...'", reason))


class LlavaDataset:
    """A map-style dataset over one or more JSON/JSONL files (LLaVA or ``messages`` records).

    ``dataset[i]`` returns ``{"id", "image", "conversations"}`` (the collator's sample format;
    ``image`` is a PIL image, a list of them for a multi-image record, or ``None``), or a
    :class:`SkippedSample` when an image cannot be read under ``skip``.
    ``weights``, ``fraction`` and ``fraction_seed`` mix the files (:func:`covft.data.mixture.mix`).
    A record with more than ``max_images`` images raises
    :class:`~covft.data.errors.MultiImageNotSupportedError` when the dataset opens (``None``, the
    default: no limit; every family covft trains takes several images per sample).
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | list[str | os.PathLike[str]],
        image_folder: str | os.PathLike[str] | None = None,
        *,
        on_bad_sample: BadSamplePolicy = "error",
        check_images: bool = True,
        max_skip_fraction: float = 1.0,
        weights: list[float] | None = None,
        fraction: float = 1.0,
        fraction_seed: int = 0,
        max_images: int | None = None,
    ) -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.max_images = max_images
        self.skipped = SkipReport()
        self.fingerprints: dict[str, str] = {}
        """SHA-256 of each data file's bytes (a resumed run checks its data did not change)."""
        self.formats: dict[str, str] = {}
        """Each data file's detected format (:data:`covft.data.formats.FORMATS`)."""
        path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        read = [(str(path), self._load_file(Path(path), check_images)) for path in path_list]
        self.usable = sum(len(records) for _, records in read)
        """Usable records in the files, before the mixture repeats or drops any."""
        self.fraction = fraction
        self.records, self.shares = mixture.mix(read, weights, fraction, fraction_seed)
        self.files = ", ".join(str(p) for p in path_list)
        if not self.records:
            detail = f" ({self.skipped.total} bad sample(s) skipped)" if self.skipped.total else ""
            raise BadSampleError(
                f"dataset is empty: no usable samples{detail}",
                file=self.files,
                fix="point data.train at a JSON/JSONL file (LLaVA or messages records) with at least one valid sample"
                + (f"\n{self.skipped.summary()}" if self.skipped.total else ""),
            )
        self.check_skip_budget(self.skipped, max_skip_fraction)

    @property
    def num_records(self) -> int:
        """Records in the data files, the usable ones and those skipped when the files were read."""
        return self.usable + self.skipped.total

    def mixture_summary(self) -> str:
        """What each file contributes (records, fraction, weight, samples); empty for one whole file."""
        if len(self.shares) == 1 and self.fraction == 1.0 and self.shares[0].weight == 1.0:
            return ""
        return mixture.describe(self.shares, self.fraction)

    @property
    def drawn(self) -> int:
        """Distinct records the mixture trains on (a repeated record counts once, as a skip does)."""
        return sum(min(share.kept, share.samples) for share in self.shares)

    def check_skip_budget(self, report: SkipReport, max_fraction: float) -> None:
        """Raise :class:`TooManyBadSamplesError` when ``report`` skipped more than ``max_fraction``.

        Records refused when the files were read count against every record in the files; samples
        found bad while training (``report``'s others) against the records the mixture draws on, so
        ``data.fraction=0.125`` does not loosen the budget eightfold.
        """
        read = self.skipped.total
        during = len(report.samples.keys() - self.skipped.samples.keys())
        share = read / self.num_records + during / self.drawn
        if share <= max_fraction:
            return
        if not during:
            counted = f"{read} of {self.num_records} samples ({100 * share:.1f}%) are unusable"
        elif not read:
            counted = f"{during} of {self.drawn} samples ({100 * share:.1f}%) are unusable"
        else:
            counted = (
                f"{read} of the {self.num_records} records in the files and {during} of the {self.drawn} "
                f"samples trained on ({100 * share:.1f}% in all) are unusable"
            )
        raise TooManyBadSamplesError(
            f"{counted}, more than data.max_skip_fraction={max_fraction:g} allows; stopped so that "
            "the data cannot silently shrink",
            file=self.files,
            fix="repair the causes below (many missing images usually mean a wrong data.image_folder), "
            f"or raise data.max_skip_fraction if losing that much data is intended\n{report.summary()}",
        )

    @property
    def notes(self) -> dict[str, list[str]]:
        """What parsing changed to match LLaVA -> the ids of the samples it changed."""
        found: dict[str, list[str]] = {}
        for record in self.records:
            for note in record.notes:
                found.setdefault(note, []).append(record.sample_id)
        return found

    def notes_summary(self) -> str:
        """One line per kind of change parsing made (empty when none), with example ids."""
        return "\n".join(f"{note}: {len(ids)} sample(s), e.g. {ids[:3]}" for note, ids in self.notes.items())

    def _load_file(self, path: Path, check_images: bool) -> list[Record]:
        if not path.is_file():
            raise BadSampleError(
                "data file not found",
                file=str(path),
                fix="check data.train (relative paths are resolved against the current directory)",
            )
        content = path.read_bytes()
        self.fingerprints[str(path)] = hashlib.sha256(content).hexdigest()
        file_format = FileFormat(str(path))
        records = []
        for index, raw in read_records(path, content):
            try:
                record = parse_record(file_format.convert(raw, index), str(path), index)
                if self.max_images is not None and len(record.images) > self.max_images:
                    raise multi_image_error(len(record.images), record.where, self.max_images)
                if check_images:
                    for image in record.images:
                        self._check_image_exists(record, image)
            except BadSampleError as error:
                if self.on_bad_sample == "error" or isinstance(error, MixedFormatsError):
                    raise
                self.skipped.add(error)
                continue
            records.append(record)
        self.formats[str(path)] = file_format.kind or "llava"
        return records

    def resolve_image(self, image: str) -> Path:
        """The file a record's relative image path refers to."""
        path = Path(image)
        if self.image_folder is not None and not path.is_absolute():
            path = self.image_folder / path
        return path

    def _check_image_exists(self, record: Record, image: str) -> None:
        path = self.resolve_image(image)
        if not path.is_file():
            raise record.error(
                f"image file {str(path)!r} not found",
                "check data.image_folder and the sample's 'image' path, or use data.on_bad_sample=skip",
            )

    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Per-sample rough lengths (words, plus a fixed allowance per image)."""
        return [r.length + (576 if r.has_image else 0) for r in self.records]

    @property
    def has_image(self) -> list[bool]:
        """Per-sample modality: True for samples with an image."""
        return [r.has_image for r in self.records]

    def load_image(self, record: Record, image: str) -> Image.Image:
        """Open one image as RGB (:func:`covft.data.images.to_rgb`), raising :class:`BadSampleError`
        if it is missing, corrupt or too large to decode safely."""
        path = self.resolve_image(image)
        try:
            return open_image(path)
        except FileNotFoundError as exc:
            raise record.error(
                f"image file {str(path)!r} not found", "check data.image_folder and the sample's 'image' path"
            ) from exc
        except ImageTooLargeError as exc:
            raise record.error(
                f"image file {str(path)!r} is too large to decode safely: {exc}",
                "replace it with a downscaled copy (the vision tower sees 336 px anyway), or drop the "
                "sample (data.on_bad_sample=skip)",
            ) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise record.error(
                f"image file {str(path)!r} is corrupt or not an image ({exc})",
                "re-download or replace the image, or use data.on_bad_sample=skip",
            ) from exc

    def __getitem__(self, index: int) -> dict[str, Any] | SkippedSample:
        record = self.records[index]
        try:
            images = [self.load_image(record, image) for image in record.images]
        except BadSampleError as error:
            if self.on_bad_sample == "error":
                raise
            return SkippedSample(error)
        sample: dict[str, Any] = {
            "id": record.sample_id,
            "image": (images[0] if len(images) == 1 else images) if images else None,
            "conversations": [dict(turn) for turn in record.conversations],
        }
        return sample

    def describe(self, index: int) -> str:
        """Where sample ``index`` came from, for error messages."""
        return self.records[index].where
