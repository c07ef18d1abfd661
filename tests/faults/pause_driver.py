"""Run the dataforge CLI, but stop dead at a chosen point so the test can SIGKILL it there.

Test helper, not a test. Usage::

    python tests/faults/pause_driver.py <dataforge CLI args...>

with these environment variables:

``FAULT_SENTINEL``  file to create (with a description of the point) once the process is paused.
``FAULT_RENAME``    fnmatch pattern on the destination path of ``os.replace``: the process pauses
                    just before the Nth matching rename, i.e. with the file (or partial folder)
                    completely written under its temporary name but not yet in place.
``FAULT_CALL``      ``module:function``: the process pauses on entry to the Nth call of that function
                    (the module attribute is wrapped, so only callers that look it up there see it).
``FAULT_NTH``       which match pauses (1-based, default 1).

Pausing means: write the sentinel, then wait. The test polls for the sentinel, looks at the
output folder, and either kills the process group with SIGKILL, so no ``finally`` or ``except``
clause of dataforge runs (exactly what a crash, an OOM kill or a pulled plug leaves behind), or
changes the world (fills the disk) and creates ``<sentinel>.go`` to let the run go on.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

_count = 0


def _pause(what: str) -> None:
    sentinel = os.environ["FAULT_SENTINEL"]
    tmp = f"{sentinel}.tmp"
    Path(tmp).write_text(what)
    os.rename(tmp, sentinel)
    go = Path(f"{sentinel}.go")
    while not go.exists():  # the test kills us here, or lets us go on
        time.sleep(0.01)


def _hit(what: str) -> None:
    global _count
    _count += 1
    if _count == int(os.environ.get("FAULT_NTH", "1")):
        _pause(what)


def _install() -> None:
    pattern = os.environ.get("FAULT_RENAME")
    if pattern:
        real_replace = os.replace

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if fnmatch.fnmatch(os.fspath(dst), pattern):
                _hit(f"rename {os.fspath(src)} -> {os.fspath(dst)}")
            real_replace(src, dst, *args, **kwargs)

        os.replace = replace  # type: ignore[assignment]
    target = os.environ.get("FAULT_CALL")
    if target:
        mod_name, attr = target.split(":")
        mod = importlib.import_module(mod_name)
        real = getattr(mod, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _hit(f"call {target}")
            return real(*args, **kwargs)

        setattr(mod, attr, wrapper)


if __name__ == "__main__":
    _install()
    from dataforge.cli import main

    sys.argv[0] = "dataforge"
    main()
