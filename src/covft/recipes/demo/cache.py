"""Where the demo caches what it builds once (tokenizers, towers, converted LMs, recipe stages)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Where the demo caches what it builds once (``$COVFT_CACHE`` or ``runs/cache``)."""
    return Path(os.environ.get("COVFT_CACHE", "runs/cache"))
