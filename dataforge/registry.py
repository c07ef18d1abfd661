"""Step name -> step class, and building steps from ``{name: {kwargs}}`` with strict checks.

Example:
    >>> from dataforge.registry import build_step
    >>> step = build_step("filter.gopher_quality", {"min_doc_words": 20})
    >>> step.min_doc_words
    20
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any

from dataforge.errors import ConfigError, choices
from dataforge.step import Step

_REGISTRY: dict[str, type[Step]] = {}

# Modules whose import registers steps. Imported lazily so `import dataforge` stays cheap.
_STEP_MODULES = (
    "dataforge.text.normalize",
    "dataforge.text.quality",
    "dataforge.text.pii",
    "dataforge.text.lang",
    "dataforge.dedup.exact",
    "dataforge.dedup.near",
)


def register(name: str):
    """Class decorator: register a Step subclass under ``name`` (``family.name``)."""

    def deco(cls: type[Step]) -> type[Step]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            msg = f"step name {name!r} registered twice ({_REGISTRY[name].__name__}, {cls.__name__})"
            raise RuntimeError(msg)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for mod in _STEP_MODULES:
        importlib.import_module(mod)


def step_names() -> list[str]:
    """All registered step names, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def step_class(name: str) -> type[Step]:
    """The class registered under ``name``; ConfigError listing valid names otherwise."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        msg = f"unknown step {name!r}; valid: {choices(_REGISTRY)}"
        raise ConfigError(msg) from None


def step_options(name: str) -> list[dataclasses.Field]:
    """The dataclass fields (options) of step ``name``."""
    return [f for f in dataclasses.fields(step_class(name)) if f.init]


def build_step(name: str, kwargs: dict[str, Any] | None = None) -> Step:
    """Instantiate step ``name`` with ``kwargs``; unknown options are errors naming the valid ones."""
    cls = step_class(name)
    kwargs = dict(kwargs or {})
    if not isinstance(kwargs, dict):
        msg = f"step {name!r}: options must be a mapping, got {type(kwargs).__name__}"
        raise ConfigError(msg)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        msg = f"step {name!r}: unknown option {unknown[0]!r}; valid: {choices(fields) or '(none)'}"
        raise ConfigError(msg)
    hints = typing.get_type_hints(cls)
    for key, value in kwargs.items():
        kwargs[key] = _coerce(name, key, value, hints.get(key))
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. missing required option
        msg = f"step {name!r}: {exc}"
        raise ConfigError(msg) from None


def _coerce(step: str, key: str, value: Any, hint: Any) -> Any:
    """Light type check of a YAML value against the option's annotation."""
    if hint is None or value is None:
        return value
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    allowed: tuple = args if origin in (typing.Union, _UnionType) else (hint,)
    allowed = tuple(typing.get_origin(a) or a for a in allowed)
    if any(a is Any for a in allowed):
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in allowed else value
    if tuple in allowed and isinstance(value, list):
        return tuple(value)
    if isinstance(value, bool) and bool not in allowed:
        pass
    elif any(isinstance(value, a) for a in allowed if isinstance(a, type)):
        return value
    wanted = " | ".join(getattr(a, "__name__", str(a)) for a in allowed)
    msg = f"step {step!r}: option {key!r} must be {wanted}, got {value!r}"
    raise ConfigError(msg)


try:  # Python 3.10+: X | Y annotations
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover
    _UnionType = typing.Union  # type: ignore[assignment,misc]
