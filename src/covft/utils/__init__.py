"""Small helpers every layer may use: atomic files and directories, cached stage outputs, and the
configuration loader of every recipe (:mod:`covft.utils.config`).

This package sits at the bottom of covft's layering with :mod:`covft.errors`: it imports nothing
else of covft, only the standard library (and PyYAML, in :mod:`covft.utils.config`).
"""

from covft.utils.io import (
    CachedOutput,
    StaleOutputError,
    atomic_directory,
    cached_output,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "CachedOutput",
    "StaleOutputError",
    "atomic_directory",
    "cached_output",
    "write_json_atomic",
    "write_text_atomic",
]
