"""Validation helpers for the options of the quality filters (all raise ConfigError naming the value)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataforge.errors import ConfigError
from dataforge.step import check_range


def check_int(step: str, option: str, value: Any, lo: int | None = 0, hi: int | None = None) -> None:
    """Raise ConfigError unless ``value`` is None or an int in ``[lo, hi]``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{step}: option {option!r} must be an integer, got {value!r}"
        raise ConfigError(msg)
    check_range(step, option, value, lo, hi)


def check_bool(step: str, option: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        msg = f"{step}: option {option!r} must be true or false, got {value!r}"
        raise ConfigError(msg)


def check_strings(step: str, option: str, value: Any) -> tuple[str, ...]:
    """Return ``value`` as a tuple of non-empty strings, or raise ConfigError naming the bad item."""
    if isinstance(value, str) or not isinstance(value, tuple | list):
        msg = f"{step}: option {option!r} must be a list of strings, got {value!r}"
        raise ConfigError(msg)
    for item in value:
        if not isinstance(item, str) or not item:
            msg = f"{step}: option {option!r} must hold non-empty strings, got {item!r}"
            raise ConfigError(msg)
    return tuple(value)


def check_min_max(step: str, lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    """Raise ConfigError if both bounds are set and ``lo > hi``."""
    if lo is not None and hi is not None and lo > hi:
        msg = f"{step}: option {lo_name!r} = {lo!r} is greater than {hi_name!r} = {hi!r}"
        raise ConfigError(msg)


def ngram_thresholds(step: str, option: str, value: Any) -> tuple[tuple[int, float | None], ...]:
    """Normalize ``[[n, frac], ...]`` or ``{n: frac}`` to a tuple of ``(n, frac)`` pairs.

    ``None`` (the whole option) means no rule; a ``None`` fraction disables that n only.

    Example:
        >>> ngram_thresholds("s", "top_n_grams", {2: 0.2, 3: None})
        ((2, 0.2), (3, None))
    """
    if value is None:
        return ()
    items = list(value.items()) if isinstance(value, Mapping) else value
    if isinstance(items, str) or not isinstance(items, tuple | list):
        msg = f"{step}: option {option!r} must be a list of [n, fraction] pairs, got {value!r}"
        raise ConfigError(msg)
    out: list[tuple[int, float | None]] = []
    for pair in items:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            msg = f"{step}: option {option!r} must hold [n, fraction] pairs, got {pair!r}"
            raise ConfigError(msg)
        n, frac = pair
        check_int(step, f"{option} n", n, 1, None)
        check_range(step, f"{option}[{n}]", frac, 0, 1)
        if any(n == seen for seen, _ in out):
            msg = f"{step}: option {option!r} lists n = {n!r} twice"
            raise ConfigError(msg)
        out.append((n, None if frac is None else float(frac)))
    return tuple(out)
