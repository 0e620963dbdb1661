"""Pieces every benchmark adapter shares: lazy images, file readers with clear errors, option lines.

An adapter turns one official distribution into contract items (docs/benchmark-records.md):
``{"id", "image", "prompt", "context", "protocol", <scoring fields>}``. Each adapter builds its
prompts itself, per protocol (:mod:`covft.eval.protocol`), because every evaluation script words
them a little differently; the instruction suffixes below are LLaVA-1.5's.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from covft.eval.protocol import Protocol

MC_SUFFIX = "Answer with the option's letter from the given choices directly."
MC_SUFFIX_CN = "请直接回答选项字母。"
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DOCS = "docs/benchmarks.md"


class ImageRef:
    """A lazily loaded image: a file path, base64 text, encoded bytes, or an in-memory PIL image.

    Nothing is decoded until :meth:`load`, so a benchmark of thousands of items costs only
    strings or encoded bytes in memory. ``load`` always returns an RGB image.
    """

    __slots__ = ("_b64", "_data", "_image", "_path")

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        b64: str | None = None,
        data: bytes | None = None,
        image: Image.Image | None = None,
    ) -> None:
        given = sum(x is not None for x in (path, b64, data, image))
        if given != 1:
            raise ValueError(f"ImageRef takes exactly one of path, b64, data, image; got {given}")
        self._path = Path(path) if path is not None else None
        self._b64 = b64
        self._data = data
        self._image = image

    @property
    def path(self) -> Path | None:
        """The file this image is read from, or None for base64 / in-memory images."""
        return self._path

    def load(self) -> Image.Image:
        """Decode the image and return it in RGB mode."""
        if self._image is not None:
            image = self._image
        elif self._path is not None:
            if not self._path.is_file():
                raise FileNotFoundError(f"image file not found: {self._path}")
            with Image.open(self._path) as opened:
                image = opened.copy()
        else:
            with Image.open(io.BytesIO(self._encoded())) as opened:
                image = opened.copy()
        return image if image.mode == "RGB" else image.convert("RGB")

    def _encoded(self) -> bytes:
        if self._data is not None:
            return self._data
        try:
            return base64.b64decode(self._b64 or "", validate=False)
        except binascii.Error as error:
            raise ValueError(f"ImageRef: invalid base64 image data ({error})") from error

    def __repr__(self) -> str:
        if self._path is not None:
            return f"ImageRef(path={str(self._path)!r})"
        if self._b64 is not None:
            return f"ImageRef(b64=<{len(self._b64)} chars>)"
        if self._data is not None:
            return f"ImageRef(data=<{len(self._data)} bytes>)"
        return f"ImageRef(image=<{self._image.size[0]}x{self._image.size[1]}>)"


def missing_file(path: Path, benchmark: str, source: str) -> FileNotFoundError:
    """The error every adapter raises for an absent file: what, for which benchmark, from where."""
    return FileNotFoundError(
        f"{benchmark}: missing {path}. Get it from {source} and lay it out as described in "
        f"{DOCS} (section '{benchmark}')."
    )


def require(path: Path, benchmark: str, source: str) -> Path:
    """Return ``path`` if it exists, else raise :func:`missing_file`'s error."""
    if not path.exists():
        raise missing_file(path, benchmark, source)
    return path


def image_file(path: Path, benchmark: str, source: str) -> ImageRef:
    """An :class:`ImageRef` for an image file that must exist (checked now, decoded later)."""
    return ImageRef(require(path, benchmark, source))


def read_json(path: Path, benchmark: str, source: str) -> object:
    """Parse a JSON file, naming it in the error when it is absent."""
    with require(path, benchmark, source).open(encoding="utf-8") as handle:
        return json.load(handle)


def read_jsonl(path: Path, benchmark: str, source: str) -> Iterator[dict]:
    """Yield the records of a JSONL file (blank lines skipped), naming the line on bad JSON."""
    with require(path, benchmark, source).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{benchmark}: {path} line {number} is not valid JSON ({error})") from error


def prompt_fields(benchmark: str, prompt: str, protocol: Protocol) -> dict[str, str]:
    """An item's ``prompt``, its router text (``context``, as ``protocol`` builds it) and ``protocol``."""
    return {"prompt": prompt, "context": protocol.context(benchmark, prompt), "protocol": protocol.name}


def first_existing(root: Path, candidates: Sequence[str]) -> Path:
    """The first of ``root / c`` that exists; the first candidate when none does (for the error)."""
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
    return root / candidates[0]


def parquet_shards(root: Path, patterns: Sequence[str]) -> list[Path]:
    """The parquet files of the first glob pattern that matches under ``root``, in shard order."""
    for pattern in patterns:
        shards = sorted(root.glob(pattern))
        if shards:
            return shards
    return []


def read_parquet(shards: Sequence[Path], benchmark: str) -> list[dict]:
    """The rows of Hugging Face parquet shards, in order, with ``image`` as an :class:`ImageRef`.

    Images stay encoded (the PNG/JPEG bytes the shards store) until they are loaded; each row
    holds its own bytes, so the rows a caller drops free theirs.
    """
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for shard in shards:
        for batch in pq.read_table(shard).to_batches():
            images = batch.column("image").field("bytes") if "image" in batch.schema.names else None
            records = (batch if images is None else batch.drop_columns(["image"])).to_pylist()
            for number, record in enumerate(records if images is not None else ()):
                if not images[number].is_valid:
                    raise ValueError(f"{benchmark}: {shard} has a row without image bytes ({record})")
                record["image"] = ImageRef(data=images[number].as_py())
            rows.extend(records)
    return rows


def hf_records(root: Path, shards: Sequence[str], jsonl: str, benchmark: str, source: str) -> list[dict]:
    """A Hugging Face benchmark's rows: from its parquet shards (the first of the ``shards`` glob
    patterns that matches under ``root``) when present, else from the JSONL export ``jsonl``
    (docs/benchmarks.md) whose ``image`` is a path relative to ``root``."""
    found = parquet_shards(root, shards)
    if found:
        return read_parquet(found, benchmark)
    rows = list(read_jsonl(root / jsonl, benchmark, source))
    for row in rows:
        row["image"] = image_file(root / row["image"], benchmark, source)
    return rows


#: Cells pandas reads as missing by default (``pandas.read_csv``'s ``na_values``), plus "none" in
#: any case: LLaVA's model_vqa_mmbench.py (``is_none``) and VLMEvalKit (``pd.isna``) read
#: MMBench's TSV with pandas, so an option or hint spelled like this is absent to them.
MISSING_CELLS = frozenset(
    [
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)


def is_missing(cell: str | None) -> bool:
    """Whether a TSV cell is missing as pandas + LLaVA's ``is_none`` read it."""
    return cell is None or cell == "" or cell in MISSING_CELLS or cell.lower() in ("nan", "none")


def options_from_list(choices: Sequence[str]) -> dict[str, str]:
    """``["cat", "dog"]`` -> ``{"A": "cat", "B": "dog"}``."""
    if len(choices) > len(LETTERS):
        raise ValueError(f"{len(choices)} choices is more than {len(LETTERS)} letters")
    return {LETTERS[i]: str(text) for i, text in enumerate(choices)}


def options_lines(options: dict[str, str]) -> str:
    """Options in LLaVA-1.5's layout: one ``"A. text"`` line per option."""
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())
