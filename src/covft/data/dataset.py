"""LLaVA-format training data: JSON or JSONL records, images loaded lazily.

A record looks like LLaVA's ``llava_v1_5_mix665k.json``::

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is on the bus?"},
                       {"from": "gpt", "value": "A poster."}, ...]}

``image`` is optional (text-only samples) and is relative to an image folder. Records are parsed
and checked when the dataset is opened (cheap structural checks, so a 665K-record file fails in
seconds, not hours into training); images are opened only when a sample is requested.

Bad input follows one policy, ``on_bad_sample``: ``"error"`` raises
:class:`~covft.data.errors.BadSampleError` naming the sample id, file, record and the fix;
``"skip"`` drops the sample and records why in :attr:`LlavaDataset.skipped` (structural problems)
or returns a :class:`SkippedSample` marker from ``__getitem__`` (unreadable images) so the training
loop can count it and carry on.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from covft.data.errors import BadSampleError

IMAGE_PLACEHOLDER = "<image>"
HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")

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
        """Number of skipped samples per reason."""
        return Counter(self.samples.values())

    @property
    def total(self) -> int:
        """Number of skipped samples."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (stored in checkpoints so a resumed run keeps counting)."""
        return {"total": self.total, "counts": dict(self.counts), "samples": dict(self.samples)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkipReport:
        """Inverse of :meth:`to_dict`."""
        return cls(samples=dict(data.get("samples", {})))

    def summary(self) -> str:
        """A human-readable multi-line summary, empty when nothing was skipped."""
        if not self.total:
            return ""
        lines = [f"skipped {self.total} bad sample(s):"]
        for reason, count in self.counts.most_common():
            lines.append(f"  {count} x {reason}")
            examples = [message for message, r in self.samples.items() if r == reason][:3]
            lines.extend(f"      e.g. {example}" for example in examples)
        return "\n".join(lines)


@dataclass(frozen=True)
class Record:
    """One parsed sample: where it came from plus its content (no image loaded yet)."""

    sample_id: str
    conversations: list[dict[str, str]]
    images: tuple[str, ...]
    file: str
    index: int
    """Record number in a JSON list, line number in a JSONL file (both 1-based)."""
    length: int
    """Rough length in words of the whole conversation, for length-grouped batching."""

    @property
    def has_image(self) -> bool:
        """Whether the sample carries at least one image."""
        return bool(self.images)

    def error(self, reason: str, fix: str) -> BadSampleError:
        """A :class:`BadSampleError` naming this sample, its file and record."""
        return BadSampleError(reason, sample_id=self.sample_id, file=self.file, line=self.index, fix=fix)


def _read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (record number, raw object) from a JSON list or a JSONL file.

    A file is read as a JSON list when it starts with ``[``, otherwise as JSONL (one object per
    line), whatever its suffix.
    """
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix == ".jsonl" or (stripped and not stripped.startswith("[")):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadSampleError(
                    f"line is not valid JSON ({exc.msg} at column {exc.colno})",
                    file=str(path),
                    line=number,
                    fix="repair or delete that line; JSONL needs one complete JSON object per line",
                ) from exc
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadSampleError(
            f"file is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            file=str(path),
            fix="repair the JSON at that position (e.g. `python -m json.tool FILE`) or convert to JSONL",
        ) from exc
    yield from enumerate(data, start=1)


def parse_record(raw: Any, file: str, index: int) -> Record:
    """Check one raw record's structure and turn it into a :class:`Record`.

    Raises :class:`BadSampleError` for a record that can never train: not an object, no
    conversations, unknown roles, no assistant turn, or a number of ``<image>`` placeholders
    different from the number of images.
    """
    if not isinstance(raw, dict):
        raise BadSampleError(
            f"record is a {type(raw).__name__}, expected an object",
            file=file,
            line=index,
            fix='write each sample as {"id": ..., "conversations": [...]}',
        )
    sample_id = str(raw.get("id", f"record-{index}"))

    def bad(reason: str, fix: str) -> BadSampleError:
        return BadSampleError(reason, sample_id=sample_id, file=file, line=index, fix=fix)

    conversations = raw.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise bad("no 'conversations' list", "add a non-empty 'conversations' list of {from, value} turns")
    turns: list[dict[str, str]] = []
    for number, turn in enumerate(conversations, start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise bad(f"turn {number} is not an object with 'from' and 'value'", "fix that turn")
        role = turn["from"]
        if role not in HUMAN_ROLES + ASSISTANT_ROLES:
            raise bad(
                f"turn {number} has unknown role {role!r}",
                f"use one of {list(HUMAN_ROLES + ASSISTANT_ROLES)} for 'from'",
            )
        if not isinstance(turn["value"], str):
            raise bad(f"turn {number} 'value' is not a string", "make every turn's value a string")
        turns.append({"from": role, "value": turn["value"]})
    if not any(t["from"] in ASSISTANT_ROLES for t in turns):
        raise bad(
            "conversation has no assistant turn, so nothing would be learned from it",
            "add a {'from': 'gpt', 'value': ...} answer or drop the sample",
        )
    image = raw.get("image")
    if image is None:
        images: tuple[str, ...] = ()
    elif isinstance(image, str):
        images = (image,)
    elif isinstance(image, list) and all(isinstance(i, str) for i in image):
        images = tuple(image)
    else:
        raise bad(f"'image' must be a path or a list of paths, got {image!r}", "fix the 'image' field")
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        raise bad(
            f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s)",
            f"put exactly one {IMAGE_PLACEHOLDER} in the human turns per image (LLaVA puts it in the "
            "first turn) or fix the 'image' field",
        )
    length = sum(len(t["value"].split()) for t in turns)
    return Record(sample_id, turns, images, file, index, length)


class LlavaDataset:
    """A map-style dataset over one or more LLaVA JSON/JSONL files.

    ``dataset[i]`` returns ``{"id", "image": PIL.Image | None, "conversations"}`` (the collator's
    sample format), or a :class:`SkippedSample` when the image cannot be read under ``skip``.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | list[str | os.PathLike[str]],
        image_folder: str | os.PathLike[str] | None = None,
        *,
        on_bad_sample: BadSamplePolicy = "error",
        check_images: bool = True,
    ) -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.skipped = SkipReport()
        self.records: list[Record] = []
        path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        for path in path_list:
            self._load_file(Path(path), check_images)
        if not self.records:
            detail = (
                f" ({self.skipped.total} bad sample(s) skipped)\n{self.skipped.summary()}"
                if self.skipped.total
                else ""
            )
            raise BadSampleError(
                f"dataset is empty: no usable samples{detail}",
                file=", ".join(str(p) for p in path_list),
                fix="point data.train at a LLaVA-format JSON/JSONL file with at least one valid sample",
            )

    def _load_file(self, path: Path, check_images: bool) -> None:
        if not path.is_file():
            raise BadSampleError(
                "data file not found",
                file=str(path),
                fix="check data.train (relative paths are resolved against the current directory)",
            )
        for index, raw in _read_records(path):
            try:
                record = parse_record(raw, str(path), index)
                if check_images:
                    for image in record.images:
                        self._check_image_exists(record, image)
            except BadSampleError as error:
                if self.on_bad_sample == "error":
                    raise
                self.skipped.add(error)
                continue
            self.records.append(record)

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
        """Open one image as RGB, raising :class:`BadSampleError` if it is missing or corrupt."""
        path = self.resolve_image(image)
        try:
            with Image.open(path) as handle:
                return handle.convert("RGB")
        except FileNotFoundError as exc:
            raise record.error(
                f"image file {str(path)!r} not found", "check data.image_folder and the sample's 'image' path"
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
            "image": images[0] if len(images) == 1 else (images or None),
            "conversations": [dict(turn) for turn in record.conversations],
        }
        return sample

    def describe(self, index: int) -> str:
        """Where sample ``index`` came from, for error messages."""
        record = self.records[index]
        return f"sample {record.sample_id!r} in {record.file} (record {record.index})"
