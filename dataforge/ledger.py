"""Counts that add up: rows in, kept, dropped by reason, rejected; per step and per run.

A ledger is additive: each task (one input file) keeps its own, and the run's ledger is their sum.
The invariant ``rows_in == kept + dropped + rejected`` is checked by :meth:`Ledger.check` for every
task and for the run, together with the per-step chain (each step's rows in are the previous step's
kept rows).

Example:
    >>> led = Ledger.empty(["filter.x"])
    >>> led.rows_in, led.rejected["bad_json"] = 3, 1
    >>> led.steps[0].rows_in, led.steps[0].kept = 2, 1
    >>> led.steps[0].dropped["too_short"] = 1
    >>> led.kept = 1
    >>> led.check()
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dataforge.errors import LedgerError


@dataclass
class StepCounts:
    """Counts of one step: rows in, kept, dropped by reason, extra counters, seconds spent."""

    step: str
    rows_in: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    counters: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def add(self, other: StepCounts) -> None:
        self.rows_in += other.rows_in
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": self.dropped_total,
            "counters": dict(sorted(self.counters.items())),
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepCounts:
        return cls(
            d["step"],
            d["rows_in"],
            d["kept"],
            Counter(d.get("dropped", {})),
            Counter(d.get("counters", {})),
            d.get("seconds", 0.0),
        )


@dataclass
class Ledger:
    """Run- or task-level counts. ``steps`` follows the pipeline's step order."""

    rows_in: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    steps: list[StepCounts] = field(default_factory=list)

    @classmethod
    def empty(cls, step_names: list[str]) -> Ledger:
        return cls(steps=[StepCounts(name) for name in step_names])

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def dropped_total(self) -> int:
        return sum(s.dropped_total for s in self.steps)

    def dropped_by_reason(self) -> dict[str, int]:
        """``{"<step>:<reason>": n}`` over all steps."""
        out: dict[str, int] = {}
        for s in self.steps:
            for reason, n in sorted(s.dropped.items()):
                out[f"{s.step}:{reason}"] = out.get(f"{s.step}:{reason}", 0) + n
        return out

    def add(self, other: Ledger) -> None:
        """Add ``other`` (same pipeline) into this ledger."""
        if not self.steps:
            self.steps = [StepCounts(s.step) for s in other.steps]
        if [s.step for s in self.steps] != [s.step for s in other.steps]:
            msg = "cannot add ledgers of different pipelines"
            raise LedgerError(msg)
        self.rows_in += other.rows_in
        self.kept += other.kept
        self.rejected.update(other.rejected)
        for mine, theirs in zip(self.steps, other.steps, strict=True):
            mine.add(theirs)

    def check(self, where: str = "run") -> None:
        """Raise LedgerError unless every count adds up."""
        total = self.kept + self.dropped_total + self.rejected_total
        if self.rows_in != total:
            msg = (
                f"{where}: ledger does not add up: rows_in={self.rows_in} but kept={self.kept} + "
                f"dropped={self.dropped_total} + rejected={self.rejected_total} = {total}"
            )
            raise LedgerError(msg)
        expected_in = self.rows_in - self.rejected_total
        for s in self.steps:
            if s.rows_in != expected_in:
                msg = f"{where}: step {s.step} saw {s.rows_in} rows, the previous step kept {expected_in}"
                raise LedgerError(msg)
            if s.rows_in != s.kept + s.dropped_total:
                msg = f"{where}: step {s.step}: rows_in={s.rows_in} != kept={s.kept} + dropped={s.dropped_total}"
                raise LedgerError(msg)
            expected_in = s.kept
        if self.steps and self.steps[-1].kept != self.kept:
            msg = f"{where}: last step kept {self.steps[-1].kept} rows but the run kept {self.kept}"
            raise LedgerError(msg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "dropped": self.dropped_total,
            "rejected": self.rejected_total,
            "dropped_by_reason": self.dropped_by_reason(),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ledger:
        return cls(
            rows_in=d["rows_in"],
            kept=d["kept"],
            rejected=Counter(d.get("rejected_by_reason", {})),
            steps=[StepCounts.from_dict(s) for s in d.get("steps", [])],
        )
