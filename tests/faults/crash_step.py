"""A shard step that SIGKILLs the process running it, once, on its first attempt at one input file.

Test helper for the Ray worker-kill test. The step has the same options whether armed or not (so
the local reference run and the Ray run have the same config and manifest); it only kills when the
file ``<flag_dir>/armed`` exists and ``<flag_dir>/killed-<victim>`` does not. The first attempt
writes that marker (with its PID) before killing itself, so Ray's retry of the task runs normally
and records ``<flag_dir>/done-<victim>-<pid>``.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dataforge.step import Step, StepOutput


@dataclass(kw_only=True)
class CrashOnce(Step):
    """Pass rows through; SIGKILL the worker on the first attempt at file ``victim``."""

    name = "test.crash_once"
    flag_dir: str
    victim: str

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        if frame.height and str(frame["_source"][0]).endswith(self.victim):
            flags = Path(self.flag_dir)
            killed = flags / f"killed-{self.victim}"
            if (flags / "armed").exists() and not killed.exists():
                killed.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            (flags / f"done-{self.victim}-{os.getpid()}").write_text("")
        return StepOutput(frame)
