"""The "Did you mean ...?" of every error that names a misspelt key, method, option, tracker or preset."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(
    name: str, choices: Iterable[str], *, template: str = " Did you mean {!r}?", cutoff: float = 0.6
) -> str:
    """``template`` filled with the closest of ``choices`` to ``name`` (difflib), or ``""`` when none
    is close enough (``cutoff``: difflib's similarity threshold, 0 always names one)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=cutoff)
    return template.format(close[0]) if close else ""
