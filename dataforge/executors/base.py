"""The executor contract: run one function over a list of items, results in item order.

Executors know nothing about steps or files; the runner hands them a picklable function and the
items (task numbers). Output must not depend on which executor ran or with how many workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dataforge.errors import ConfigError, choices

EXECUTORS = ("local", "ray")

OnDone = Callable[[int, Any], None]


class Executor(Protocol):
    """Runs ``fn(item)`` for every item; returns the results in item order."""

    name: str
    workers: int

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, on_done: OnDone | None = None
    ) -> list[Any]:
        """Apply ``fn`` to every item (in any order, in parallel); results in item order.

        ``on_done(index, result)`` is called in the driver as each item finishes.
        """
        ...

    def close(self) -> None:
        """Release workers (idempotent)."""
        ...


def make_executor(kind: str = "local", *, workers: int = 1, address: str | None = None) -> Executor:
    """Build an executor by name.

    Args:
        kind: ``local`` (in-process, or a process pool when workers > 1) or ``ray``.
        workers: parallel workers (processes, or Ray CPUs when starting a local Ray).
        address: Ray cluster address to join (``ray`` only); otherwise a local Ray is started.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        msg = f"workers must be a positive integer, got {workers!r}"
        raise ConfigError(msg)
    if kind == "local":
        if address:
            msg = f"--ray-address {address!r} needs --executor ray"
            raise ConfigError(msg)
        from dataforge.executors.local import LocalExecutor

        return LocalExecutor(workers=workers)
    if kind == "ray":
        from dataforge.executors.ray import RayExecutor

        return RayExecutor(workers=workers, address=address)
    msg = f"unknown executor {kind!r}; valid: {choices(EXECUTORS)}"
    raise ConfigError(msg)
