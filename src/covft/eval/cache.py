"""The JSONL prediction cache of :func:`covft.eval.generate.predict`: one ``{id, prediction}`` per line.

Predictions are appended as batches finish; a rerun reads them back and generates only what is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path


def read_cache(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{id: prediction}`` from a JSONL prediction cache (empty if the file does not exist).

    A last line cut short by a crash (no newline, not valid JSON) is dropped and the file
    truncated before it, so appending continues cleanly; a bad complete line is an error naming it.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    predictions: dict[str, str] = {}
    lines = complete.split(b"\n") if complete or data.startswith(b"\n") else []
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            record = _parse_line(raw)
            if record is None:
                raise ValueError(
                    f"prediction cache {path} line {number} is not an {{'id', 'prediction'}} record; "
                    "delete the file to regenerate"
                )
            predictions[record[0]] = record[1]
    if tail.strip():
        record = _parse_line(tail)
        if record is None:  # an interrupted append
            with path.open("r+b") as handle:
                handle.truncate(len(data) - len(tail))
        else:
            predictions[record[0]] = record[1]
            with path.open("ab") as handle:
                handle.write(b"\n")
    return predictions


def _parse_line(raw: bytes) -> tuple[str, str] | None:
    try:
        record = json.loads(raw.decode("utf-8"))
        return str(record["id"]), str(record["prediction"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None


def append_predictions(path: Path, records: Sequence[tuple[str, str]]) -> None:
    """Append ``(id, prediction)`` records and sync them to disk (a crash loses no finished batch)."""
    with path.open("a", encoding="utf-8") as handle:
        for item_id, prediction in records:
            handle.write(json.dumps({"id": item_id, "prediction": prediction}, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
