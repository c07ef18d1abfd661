"""Deduplication: exact (``dedup.exact``) and MinHash near-duplicates (``dedup.minhash``).

This package shares its name with the public function :func:`dataforge.dedup`; importing a
submodule would otherwise replace that function on the ``dataforge`` package. The package module
is therefore callable and forwards to :func:`dataforge.api.dedup`, so ``dataforge.dedup(...)``
works whatever was imported first.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dataforge.api import dedup

        return dedup(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature(dataforge.dedup) is the function's
        import inspect

        from dataforge.api import dedup

        return inspect.signature(dedup)


sys.modules[__name__].__class__ = _CallableModule
