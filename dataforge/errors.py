"""The few exceptions dataforge raises on purpose.

The CLI maps each of them to a message and an exit code in one place (``cli.py``):
``ConfigError`` and ``InputError`` exit with 2 (usage or configuration), ``DataError`` with 1.
"""

from __future__ import annotations


class DataforgeError(Exception):
    """Base class for every error dataforge raises on purpose."""

    exit_code = 2


class ConfigError(DataforgeError):
    """A pipeline, step or option is invalid (unknown name, bad value, missing key)."""

    exit_code = 2


class InputError(DataforgeError):
    """An input path is missing, empty or unreadable before any work starts."""

    exit_code = 2


class DataError(DataforgeError):
    """The data itself failed a check: too many rejects, a corrupt shard, a broken invariant."""

    exit_code = 1


class OutputError(DataforgeError):
    """The output folder cannot be written or already holds a different run."""

    exit_code = 2


class LedgerError(DataError):
    """Counts do not add up: ``rows_in != kept + dropped + rejected``."""


def choices(values: object) -> str:
    """Format valid choices for an error message: ``a, b, c``."""
    return ", ".join(sorted(str(v) for v in values))  # type: ignore[attr-defined]
