"""LLaVA-format records: reading JSON or JSONL files and checking each record against the sample contract.

A record looks like LLaVA's ``llava_v1_5_mix665k.json``::

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is on the bus?"},
                       {"from": "gpt", "value": "A poster."}, ...]}

:func:`read_records` yields the raw objects of a file; :func:`parse_record` checks one of them
(cheap structural checks, so a 665K-record file fails in seconds, not hours into training) and
turns it into a :class:`Record`. What a valid sample is lives in :mod:`covft.data.contract`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covft.data.contract import ASSISTANT, HUMAN, IMAGE_PLACEHOLDER, ROLE_FIX, image_problem, role_of
from covft.data.errors import BadSampleError

LEADING_ANSWER_DROPPED = "dropped a leading gpt turn (LLaVA drops it too)"
IMAGE_MOVED_FIRST = "moved <image> to the front of its turn (LLaVA's preprocess_multimodal does)"


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

    @property
    def where(self) -> str:
        """Where the sample came from, for error messages."""
        return f"sample {self.sample_id!r} in {self.file} (record {self.index})"

    def error(self, reason: str, fix: str) -> BadSampleError:
        """A :class:`BadSampleError` naming this sample, its file and record."""
        return BadSampleError(reason, sample_id=self.sample_id, file=self.file, line=self.index, fix=fix)


def read_records(path: Path, content: bytes) -> Iterator[tuple[int, Any]]:
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
    if not stripped.startswith("["):  # a JSONL record is an object, never a list
        # split on newlines only: str.splitlines also splits on U+2028, U+2029 and U+0085, which
        # JSON allows unescaped inside a string (json.dumps(..., ensure_ascii=False) writes them)
        for number, line in enumerate(text.split("\n"), start=1):
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
    one-element image list to its path, a leading assistant turn is dropped as LLaVA drops it, and
    a one-image record's ``<image>`` moved to the front of its turn as LLaVA moves it (the record's
    :attr:`Record.notes` say so). Raises :class:`BadSampleError` for a record that
    can never train as intended: not an object, no conversations, unknown roles, turns that do not
    alternate, no assistant turn, an empty answer (it would train on the end-of-sequence token
    only), ``<image>`` inside an answer, or a number of ``<image>`` placeholders different from
    the number of images. A record with several images is read (its image list kept); whether it
    can train is the dataset's check (:func:`~covft.data.contract.multi_image_error`).
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
    problem = image_problem(turns, len(images))
    if problem is not None:
        raise bad(*problem)
    if len(images) == 1 and (moved := _image_first(turns)) is not None:
        turns, notes = moved, (*notes, IMAGE_MOVED_FIRST)
    length = sum(len(t["value"].split()) for t in turns)
    return Record(sample_id, turns, images, file, index, length, notes)


def _image_first(turns: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """LLaVA's rewrite of a one-image conversation, ``"<image>\n" + the turn without it`` (stripped),
    or None when the turn already reads so: ``"What is it?\n<image>"`` trains as ``"<image>\nWhat
    is it?"`` in LLaVA-1.5 and -NeXT, and covft's evaluation prompts put the image first too."""

    def first(value: str) -> str:
        if IMAGE_PLACEHOLDER not in value:
            return value
        return f"{IMAGE_PLACEHOLDER}\n{value.replace(IMAGE_PLACEHOLDER, '').strip()}".strip()

    if all(first(turn["value"]) == turn["value"] for turn in turns):
        return None
    return [{**turn, "value": first(turn["value"])} for turn in turns]


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
        role = role_of(turn)
        if role is None:
            raise bad(f"turn {number} has unknown role {turn['from']!r}", ROLE_FIX)
        if not isinstance(turn["value"], str):
            raise bad(f"turn {number} 'value' is not a string", "make every turn's value a string")
        turns.append({"from": role, "value": turn["value"]})
    notes: tuple[str, ...] = ()
    if turns[0]["from"] == ASSISTANT:
        turns = turns[1:]  # LLaVA's preprocessing drops it too: nothing asked, nothing to answer
        notes = (LEADING_ANSWER_DROPPED,)
    if not any(t["from"] == ASSISTANT for t in turns):
        raise bad(
            "conversation has no assistant turn after a human turn, so nothing would be learned from it",
            "add a {'from': 'gpt', 'value': ...} answer or drop the sample",
        )
    offset = 1 + len(notes)  # turn numbers as in the file
    for position, turn in enumerate(turns):
        number = position + offset
        if turn["from"] != (HUMAN if position % 2 == 0 else ASSISTANT):
            raise bad(
                f"turn {number} is a second {turn['from']} turn in a row",
                "make the turns alternate human, gpt, human, gpt, ... (merge or drop the extra turn)",
            )
        if turn["from"] == ASSISTANT and not turn["value"].strip():
            raise bad(
                f"turn {number} is an empty answer (it would train on the end-of-sequence token only)",
                "write the answer or drop the sample",
            )
        if turn["from"] == ASSISTANT and IMAGE_PLACEHOLDER in turn["value"]:
            raise bad(
                f"turn {number} is an answer containing {IMAGE_PLACEHOLDER}",
                f"move {IMAGE_PLACEHOLDER} into the first human turn (the image is part of the question)",
            )
    return turns, notes


def _images(image: Any, bad: Callable[[str, str], BadSampleError]) -> tuple[str, ...]:
    """The record's image paths (how many a sample may have is :func:`~covft.data.contract.image_problem`'s)."""
    if image is None:
        return ()
    if isinstance(image, str):
        return (image,)
    if isinstance(image, list) and all(isinstance(i, str) for i in image):
        return tuple(image)
    raise bad(f"'image' must be a path or a list of paths, got {image!r}", "fix the 'image' field")
