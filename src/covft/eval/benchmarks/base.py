"""Pieces every benchmark adapter shares: lazy images, LLaVA-1.5 prompt formats, clear file errors.

An adapter turns one official distribution into contract items (docs/benchmark-records.md):
``{"id", "image", "prompt", "context", <scoring fields>}``. The prompt formats below are the ones
LLaVA-1.5's evaluation scripts use, so a model trained on llava_v1_5_mix665k sees the instruction
suffixes it was trained with.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

MC_SUFFIX = "Answer with the option's letter from the given choices directly."
MC_SUFFIX_CN = "请直接回答选项字母。"
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DOCS = "docs/benchmarks.md"


class ImageRef:
    """A lazily loaded image: a file path, base64-encoded bytes, or an in-memory PIL image.

    Nothing is decoded until :meth:`load`, so a benchmark of thousands of items costs only
    strings in memory. ``load`` always returns an RGB image.
    """

    __slots__ = ("_b64", "_image", "_path")

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        b64: str | None = None,
        image: Image.Image | None = None,
    ) -> None:
        given = sum(x is not None for x in (path, b64, image))
        if given != 1:
            raise ValueError(f"ImageRef takes exactly one of path, b64, image; got {given}")
        self._path = Path(path) if path is not None else None
        self._b64 = b64
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
            try:
                data = base64.b64decode(self._b64 or "", validate=False)
            except binascii.Error as error:
                raise ValueError(f"ImageRef: invalid base64 image data ({error})") from error
            with Image.open(io.BytesIO(data)) as opened:
                image = opened.copy()
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        if self._path is not None:
            return f"ImageRef(path={str(self._path)!r})"
        if self._b64 is not None:
            return f"ImageRef(b64=<{len(self._b64)} chars>)"
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


def options_from_list(choices: list[str]) -> dict[str, str]:
    """``["cat", "dog"]`` -> ``{"A": "cat", "B": "dog"}``."""
    if len(choices) > len(LETTERS):
        raise ValueError(f"{len(choices)} choices is more than {len(LETTERS)} letters")
    return {LETTERS[i]: str(text) for i, text in enumerate(choices)}


def options_lines(options: dict[str, str]) -> str:
    """Options in LLaVA-1.5's layout: one ``"A. text"`` line per option."""
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def multiple_choice(
    question: str, options: dict[str, str], hint: str | None = None, *, suffix: str = MC_SUFFIX
) -> tuple[str, str]:
    """Return ``(prompt, context)`` for a multiple-choice question.

    The context (CoVFT's text-encoder input) is the hint, question and options; the prompt adds
    the instruction suffix on its own last line, as LLaVA-1.5's ``--single-pred-prompt`` does.
    """
    parts = [hint.strip()] if hint and hint.strip() else []
    parts.append(question.strip())
    parts.append(options_lines(options))
    context = "\n".join(parts)
    return f"{context}\n{suffix}", context


def short_answer(question: str) -> tuple[str, str]:
    """Return ``(prompt, context)`` for a single-word / short-phrase question."""
    context = question.strip()
    return f"{context}\n{SHORT_ANSWER_SUFFIX}", context
