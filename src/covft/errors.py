"""The errors covft raises for a user's mistake, as opposed to a bug in covft.

Every exception deriving from :class:`UserError` carries a message that names what is wrong (the
file, sample, key or path) and how to fix it. The ``covft`` command prints that message on one
line and exits with status 1 instead of showing a traceback; ``covft --debug ...`` shows it.
Operating-system errors (a missing file, a read-only or full disk) are reported the same way.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave covft (config, data, paths, installed packages)."""

    exit_status = 1
    """What the ``covft`` command exits with."""


class MissingDependencyError(UserError, ImportError):
    """An optional package that the chosen setting needs is not installed."""


class ModelNotFoundError(UserError, ValueError):
    """A model name that is neither a preset nor a directory holding a model."""


class NotExportableError(UserError):
    """A model whose strategy cannot be written as a stock transformers model."""
