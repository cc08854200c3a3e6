"""The errors a user sees, each a one-line message: the CLI prints it and exits (status 2, or 1
for :class:`RejectionLimitError`).  Defined here, with no heavy import, so that the CLI catches
them without importing torch."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing configuration problem (one line)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one-line message)."""


class UsageError(ValueError):
    """A bad command-line flag or run directory (one-line message)."""


class TrackingError(RuntimeError):
    """Weights & Biases could not start the run (one-line message)."""


class RejectionLimitError(RuntimeError):
    """Too many consecutive meta-steps were rejected for non-finite values: the run stops."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
