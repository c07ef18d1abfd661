"""Executors: results in item order, errors propagate, real local Ray."""

from __future__ import annotations

import pytest

from dataforge.errors import ConfigError, InputError
from dataforge.executors.base import make_executor


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        msg = f"bad item {x}"
        raise InputError(msg)
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_local_results_in_order(workers):
    ex = make_executor("local", workers=workers)
    done = []
    try:
        assert ex.map(square, list(range(10)), on_done=lambda i, r: done.append(i)) == [
            x * x for x in range(10)
        ]
    finally:
        ex.close()
    assert sorted(done) == list(range(10))


@pytest.mark.parametrize("workers", [1, 2])
def test_local_errors_propagate_with_type(workers):
    ex = make_executor("local", workers=workers)
    try:
        with pytest.raises(InputError, match="bad item 3"):
            ex.map(fail_on_three, list(range(6)))
    finally:
        ex.close()


def test_bad_executor_options():
    with pytest.raises(ConfigError, match="unknown executor 'dask'; valid: local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="workers must be a positive integer, got 0"):
        make_executor("local", workers=0)
    with pytest.raises(ConfigError, match="needs --executor ray"):
        make_executor("local", address="auto")


@pytest.mark.ray
def test_ray_results_in_order_and_errors():
    pytest.importorskip("ray")
    ex = make_executor("ray", workers=2)
    try:
        assert ex.map(square, list(range(8))) == [x * x for x in range(8)]
        with pytest.raises(InputError, match="bad item 3"):
            ex.map(fail_on_three, list(range(6)))
    finally:
        ex.close()
