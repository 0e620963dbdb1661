"""Errors raised for bad training or evaluation data."""

from __future__ import annotations

import functools
from typing import Any

from covft.errors import UserError


class BadSampleError(UserError, ValueError):
    """A sample that cannot be used, with where it came from and what to do about it.

    The message always names the sample id and, when known, the file (and line or record
    number) it was read from, so a user can find and fix it in a 665K-line file.
    """

    def __init__(
        self,
        reason: str,
        *,
        sample_id: str | None = None,
        file: str | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.reason = reason
        self.sample_id = sample_id
        self.file = file
        self.line = line
        self.fix = fix
        where = []
        if sample_id is not None:
            where.append(f"sample {sample_id!r}")
        if file is not None:
            where.append(f"in {file}" + (f" (record {line})" if line is not None else ""))
        text = (" ".join(where) + ": " if where else "") + reason
        if fix:
            text += f". Fix: {fix}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # keep the fields through pickling (errors travel back from DataLoader worker processes)
        rebuild = functools.partial(
            type(self), self.reason, sample_id=self.sample_id, file=self.file, line=self.line, fix=self.fix
        )
        return rebuild, ()


class TooManyBadSamplesError(BadSampleError):
    """More samples were skipped than ``data.max_skip_fraction`` allows."""


class MultiImageNotSupportedError(UserError):
    """A sample with more images than the dataset's ``max_images`` (raised when the data opens)."""
