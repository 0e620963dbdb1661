"""Small helpers every layer may use: atomic files and directories, cached stage outputs.

This package sits at the bottom of covft's layering with :mod:`covft.errors`: it imports nothing
else of covft, and only the standard library.
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
