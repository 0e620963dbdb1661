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

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from covft.data.errors import BadSampleError, TooManyBadSamplesError
from covft.data.images import ImageTooLargeError, open_image

IMAGE_PLACEHOLDER = "<image>"
HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")

LEADING_ANSWER_DROPPED = "dropped a leading gpt turn (LLaVA drops it too)"

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
    notes: tuple[str, ...] = ()
    """What parsing changed to match LLaVA (e.g. :data:`LEADING_ANSWER_DROPPED`)."""

    @property
    def has_image(self) -> bool:
        """Whether the sample carries at least one image."""
        return bool(self.images)

    def error(self, reason: str, fix: str) -> BadSampleError:
        """A :class:`BadSampleError` naming this sample, its file and record."""
        return BadSampleError(reason, sample_id=self.sample_id, file=self.file, line=self.index, fix=fix)


def _read_records(path: Path, content: bytes) -> Iterator[tuple[int, Any]]:
    """Yield (record number, raw object) from the ``content`` of a JSON list or a JSONL file.

    A file is read as a JSON list when it starts with ``[`` (after a UTF-8 byte-order mark, if
    any), otherwise as JSONL (one object per line), whatever its suffix.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadSampleError(
            f"file is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
            file=str(path),
            fix="save the file as UTF-8 (LLaVA's JSON files are UTF-8)",
        ) from exc
    stripped = text.lstrip()
    if path.suffix == ".jsonl" or (stripped and not stripped.startswith("[")):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise _not_jsonl(path, text, number, exc) from exc
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


def _not_jsonl(path: Path, text: str, number: int, exc: json.JSONDecodeError) -> BadSampleError:
    """The error for a line that is not JSON; names the real problem when the file is one JSON object."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and "conversations" in whole:
        return BadSampleError(
            "file is a single JSON object spread over several lines, neither a JSON list nor JSONL",
            file=str(path),
            fix="put the records in a list ([{...}, {...}]) or write one record per line (JSONL)",
        )
    if isinstance(whole, dict):
        lists = [key for key, value in whole.items() if isinstance(value, list)]
        inside = f"; the records may be the list under {lists[0]!r}" if lists else ""
        return BadSampleError(
            f"file is a JSON object with keys {list(whole)[:5]}, not a list of records{inside}",
            file=str(path),
            fix="save the list of records itself as the file (a JSON list or JSONL)",
        )
    return BadSampleError(
        f"line is not valid JSON ({exc.msg} at column {exc.colno})",
        file=str(path),
        line=number,
        fix="repair or delete that line; JSONL needs one complete JSON object per line",
    )


def parse_record(raw: Any, file: str, index: int) -> Record:
    """Check one raw record's structure and turn it into a :class:`Record`.

    Roles are normalised to LLaVA's ``human``/``gpt`` (``user``/``assistant`` are accepted), a
    one-element image list to its path, and a leading assistant turn is dropped as LLaVA drops it
    (the record's :attr:`Record.notes` say so). Raises :class:`BadSampleError` for a record that
    can never train as intended: not an object, no conversations, unknown roles, turns that do not
    alternate, no assistant turn, an empty answer (it would train on the end-of-sequence token
    only), ``<image>`` inside an answer, more than one image, or a number of ``<image>``
    placeholders different from the number of images.
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

    turns, notes = _turns(raw.get("conversations"), bad)
    images = _images(raw.get("image"), bad)
    placeholders = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        raise bad(
            f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s)",
            f"put exactly one {IMAGE_PLACEHOLDER} in the human turns per image (LLaVA puts it in the "
            "first turn) or fix the 'image' field",
        )
    length = sum(len(t["value"].split()) for t in turns)
    return Record(sample_id, turns, images, file, index, length, notes)


def _turns(
    conversations: Any, bad: Callable[[str, str], BadSampleError]
) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    """The conversation as alternating human/gpt turns, and notes on what was changed."""
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
        turns.append({"from": "human" if role in HUMAN_ROLES else "gpt", "value": turn["value"]})
    notes: tuple[str, ...] = ()
    if turns[0]["from"] == "gpt":
        turns = turns[1:]  # LLaVA's preprocessing drops it too: nothing asked, nothing to answer
        notes = (LEADING_ANSWER_DROPPED,)
    if not any(t["from"] == "gpt" for t in turns):
        raise bad(
            "conversation has no assistant turn after a human turn, so nothing would be learned from it",
            "add a {'from': 'gpt', 'value': ...} answer or drop the sample",
        )
    offset = 1 + len(notes)  # turn numbers as in the file
    for position, turn in enumerate(turns):
        number = position + offset
        if turn["from"] != ("human" if position % 2 == 0 else "gpt"):
            raise bad(
                f"turn {number} is a second {turn['from']} turn in a row",
                "make the turns alternate human, gpt, human, gpt, ... (merge or drop the extra turn)",
            )
        if turn["from"] == "gpt" and not turn["value"].strip():
            raise bad(
                f"turn {number} is an empty answer (it would train on the end-of-sequence token only)",
                "write the answer or drop the sample",
            )
        if turn["from"] == "gpt" and IMAGE_PLACEHOLDER in turn["value"]:
            raise bad(
                f"turn {number} is an answer containing {IMAGE_PLACEHOLDER}",
                f"move {IMAGE_PLACEHOLDER} into the first human turn (the image is part of the question)",
            )
    return turns, notes


def _images(image: Any, bad: Callable[[str, str], BadSampleError]) -> tuple[str, ...]:
    """The record's image path as a tuple of zero or one path."""
    if image is None:
        return ()
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if isinstance(image, str):
        return (image,)
    if isinstance(image, list) and all(isinstance(i, str) for i in image):
        raise bad(
            f"{len(image)} images in one sample; LLaVA-1.5 models take one image per sample",
            "split the sample into one sample per image, or drop it",
        )
    raise bad(f"'image' must be a path or a list of paths, got {image!r}", "fix the 'image' field")


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
        max_skip_fraction: float = 1.0,
    ) -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.image_folder = Path(image_folder) if image_folder is not None else None
        self.skipped = SkipReport()
        self.records: list[Record] = []
        self.fingerprints: dict[str, str] = {}
        """SHA-256 of each data file's bytes (a resumed run checks its data did not change)."""
        path_list = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        for path in path_list:
            self._load_file(Path(path), check_images)
        self.files = ", ".join(str(p) for p in path_list)
        if not self.records:
            detail = f" ({self.skipped.total} bad sample(s) skipped)" if self.skipped.total else ""
            raise BadSampleError(
                f"dataset is empty: no usable samples{detail}",
                file=self.files,
                fix="point data.train at a LLaVA-format JSON/JSONL file with at least one valid sample"
                + (f"\n{self.skipped.summary()}" if self.skipped.total else ""),
            )
        self.check_skip_budget(self.skipped, max_skip_fraction)

    @property
    def num_records(self) -> int:
        """Records in the data files, the usable ones and those skipped when the files were read."""
        return len(self.records) + self.skipped.total

    def check_skip_budget(self, report: SkipReport, max_fraction: float) -> None:
        """Raise :class:`TooManyBadSamplesError` when ``report`` skipped more than ``max_fraction``."""
        allowed = max_fraction * self.num_records
        if report.total <= allowed:
            return
        raise TooManyBadSamplesError(
            f"{report.total} of {self.num_records} samples ({100 * report.total / self.num_records:.1f}%) "
            f"are unusable, more than data.max_skip_fraction={max_fraction:g} allows; stopped so that "
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

    def _load_file(self, path: Path, check_images: bool) -> None:
        if not path.is_file():
            raise BadSampleError(
                "data file not found",
                file=str(path),
                fix="check data.train (relative paths are resolved against the current directory)",
            )
        content = path.read_bytes()
        self.fingerprints[str(path)] = hashlib.sha256(content).hexdigest()
        for index, raw in _read_records(path, content):
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
            "image": images[0] if len(images) == 1 else (images or None),
            "conversations": [dict(turn) for turn in record.conversations],
        }
        return sample

    def describe(self, index: int) -> str:
        """Where sample ``index`` came from, for error messages."""
        record = self.records[index]
        return f"sample {record.sample_id!r} in {record.file} (record {record.index})"
