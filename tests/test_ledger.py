"""The ledger invariant: rows_in == kept + dropped + rejected, per step and per run."""

from __future__ import annotations

from collections import Counter

import pytest

from dataforge.errors import LedgerError
from dataforge.ledger import Ledger, StepCounts


def good() -> Ledger:
    return Ledger(
        rows_in=10,
        kept=5,
        rejected=Counter({"bad_json": 2}),
        steps=[
            StepCounts("a", rows_in=8, kept=6, dropped=Counter({"short": 2})),
            StepCounts("b", rows_in=6, kept=5, dropped=Counter({"dup": 1})),
        ],
    )


def test_good_ledger_checks_and_roundtrips():
    led = good()
    led.check()
    again = Ledger.from_dict(led.to_dict())
    again.check()
    assert again.to_dict() == led.to_dict()
    assert led.dropped_by_reason() == {"a:short": 2, "b:dup": 1}


def test_sum_of_ledgers_still_adds_up():
    total = Ledger()
    for _ in range(3):
        total.add(good())
    total.check()
    assert (total.rows_in, total.kept, total.dropped_total, total.rejected_total) == (30, 15, 9, 6)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda led: setattr(led, "rows_in", 11), "does not add up"),
        (lambda led: setattr(led, "kept", 4), "does not add up"),
        (lambda led: led.steps[1].__setattr__("rows_in", 7), "saw 7 rows"),
        (lambda led: led.steps[0].dropped.update({"short": 1}), "does not add up"),
    ],
)
def test_broken_ledgers_are_caught(mutate, message):
    led = good()
    mutate(led)
    with pytest.raises(LedgerError, match=message):
        led.check()


def test_adding_different_pipelines_fails():
    other = Ledger.empty(["x"])
    led = good()
    with pytest.raises(LedgerError):
        led.add(other)
