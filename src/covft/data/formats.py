"""Training-file formats: each record converted, when the file opens, to a LLaVA record.

Three formats are read, detected per file from its records (:class:`FileFormat`):

- ``llava``: LLaVA's ``{"id", "image": path | [paths], "conversations": [{"from", "value"}]}``
  (LLaMA-Factory's *sharegpt* layout names the list ``images``; both are accepted);
- ``messages-text``: LLaMA-Factory / ms-swift, ``{"messages": [{"role", "content": str}],
  "images": [paths]}`` with one ``<image>`` tag in the text per image, in order;
- ``messages-parts``: TRL / Hugging Face chat templates, ``content`` is a list of
  ``{"type": "text", "text": ...}`` and ``{"type": "image"}`` parts; an image part takes its path
  inline (``image`` or ``path``) or else the next entry of ``images``. A message's parts are joined
  by a newline, an image part written as ``<image>`` (so ``[image, text]`` reads as LLaVA's
  ``"<image>\\nquestion"``).

Roles ``user``/``assistant`` become LLaVA's ``human``/``gpt``. A ``system`` message is refused: the
conversation template (``data.template``) supplies the system prompt the model was trained with,
and a per-sample one would be silently dropped by LLaVA-1.5's templates. The converted record is
then checked by :func:`covft.data.records.parse_record` like any LLaVA record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from covft.data.contract import IMAGE_PLACEHOLDER, ROLES
from covft.data.errors import BadSampleError

FORMATS = ("llava", "messages-text", "messages-parts")
MESSAGE_ROLES = ("user", "assistant")
Bad = Callable[[str, str], BadSampleError]
"""Builds the error naming the record being converted from (reason, fix)."""


class MixedFormatsError(BadSampleError):
    """A file whose records are not all in one format (never skipped: the file is refused)."""


def record_format(raw: Any) -> str | None:
    """The format of one raw record (one of :data:`FORMATS`), ``None`` when it has no recognisable shape."""
    if not isinstance(raw, dict):
        return None
    if "conversations" in raw:
        return "llava"
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    contents = [m.get("content") if isinstance(m, dict) else None for m in messages]
    if all(isinstance(c, str) for c in contents):
        return "messages-text"
    if all(isinstance(c, list) for c in contents):
        return "messages-parts"
    return None


class FileFormat:
    """The format of one file: set by its first recognisable record, enforced on every other one."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.kind: str | None = None
        self.first: int | None = None
        """Record number that set :attr:`kind`."""

    def convert(self, raw: Any, index: int) -> Any:
        """Record ``index`` as a raw LLaVA record (unrecognisable shapes pass through to be named by the parser)."""
        kind = record_format(raw)
        if kind is None and not (isinstance(raw, dict) and "messages" in raw):
            return raw  # not an object, or no conversations: the parser names the problem
        sample_id = str(raw.get("id", f"record-{index}"))

        def bad(reason: str, fix: str) -> BadSampleError:
            return BadSampleError(reason, sample_id=sample_id, file=self.file, line=index, fix=fix)

        if kind is None:
            raise bad(
                "'messages' is not a non-empty list of {role, content} messages with all contents strings "
                "or all contents lists of parts",
                'write every message as {"role": ..., "content": ...}, in one content style per record',
            )
        self._settle(kind, index)
        if kind == "llava":
            return raw if "images" not in raw else _llava_images(raw, bad)
        turns, inline = _messages(raw["messages"], kind, bad)
        images = _image_list(raw.get("images"), bad)
        if kind == "messages-parts":
            images = _fill(inline, images, bad)
        converted: dict[str, Any] = {"id": sample_id, "conversations": turns}
        if images:
            converted["image"] = images
        return converted

    def _settle(self, kind: str, index: int) -> None:
        if self.kind is None:
            self.kind, self.first = kind, index
        elif kind != self.kind:
            raise MixedFormatsError(
                f"record is in the {kind!r} format but the file's record {self.first} is {self.kind!r}; "
                "a file holds one format",
                file=self.file,
                line=index,
                fix="convert the file to one format, or split it into one file per format (data.train takes a list)",
            )


def _llava_images(raw: dict[str, Any], bad: Bad) -> dict[str, Any]:
    """A LLaVA record whose images are under LLaMA-Factory's ``images`` key, moved to ``image``."""
    if "image" in raw:
        raise bad("record has both 'image' and 'images'", "keep one of them (a path or a list of paths)")
    converted = {key: value for key, value in raw.items() if key != "images"}
    converted["image"] = raw["images"]
    return converted


def _messages(messages: list[Any], kind: str, bad: Bad) -> tuple[list[dict[str, str]], list[str | None]]:
    """The messages as LLaVA turns, and (parts format) each image part's inline path or ``None``."""
    turns: list[dict[str, str]] = []
    inline: list[str | None] = []
    for number, message in enumerate(messages, start=1):
        role = message.get("role")
        if role == "system":
            raise bad(
                f"message {number} is a system message; covft's conversation templates supply the system prompt",
                "drop the system message (data.template sets the system prompt the model was trained with), "
                "or fold its text into the first user message",
            )
        if role not in MESSAGE_ROLES:
            raise bad(
                f"message {number} has unknown role {role!r}", f"use one of {[*MESSAGE_ROLES, 'system']}"
            )
        content = message["content"]
        if kind == "messages-parts":
            content = _join_parts(content, number, inline, bad)
        turns.append({"from": ROLES[role], "value": content})
    return turns, inline


def _join_parts(parts: list[Any], number: int, inline: list[str | None], bad: Bad) -> str:
    """A content list as text: text parts as they are, image parts as ``<image>``, joined by newlines."""
    texts = []
    for position, part in enumerate(parts, start=1):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image":
            path = part.get("image", part.get("path"))
            if path is not None and not isinstance(path, str):
                raise bad(f"message {number} part {position}: inline image is not a path", "give a file path")
            inline.append(path)
            texts.append(IMAGE_PLACEHOLDER)
        else:
            raise bad(
                f"message {number} part {position} is not a text or image part: {part!r}",
                'use {"type": "text", "text": ...} or {"type": "image"} parts',
            )
    return "\n".join(texts)


def _image_list(images: Any, bad: Bad) -> list[str]:
    """The ``images`` entries as paths (ms-swift also writes ``{"path": ...}``)."""
    if images is None:
        return []
    if not isinstance(images, list):
        raise bad(f"'images' must be a list, got {images!r}", "write the images as a list of paths")
    paths = []
    for number, image in enumerate(images, start=1):
        if isinstance(image, dict) and isinstance(image.get("path"), str):
            image = image["path"]
        if not isinstance(image, str):
            raise bad(
                f"'images' entry {number} is not a path: {str(image)[:80]}",
                "save embedded images (bytes, URLs) to files and list their paths",
            )
        paths.append(image)
    return paths


def _fill(inline: list[str | None], images: list[str], bad: Bad) -> list[str]:
    """Each image part's path: its inline one, else the next entry of ``images`` (all must be used)."""
    wanted = inline.count(None)
    if wanted != len(images):
        raise bad(
            f"{wanted} image part(s) without an inline path but {len(images)} entries in 'images'",
            'give one \'images\' entry per {"type": "image"} part without an inline path, in order',
        )
    remaining = iter(images)
    return [path if path is not None else next(remaining) for path in inline]
