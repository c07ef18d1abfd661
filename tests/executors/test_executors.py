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


class CountedPayload:
    """A big bound argument that records every time a process unpickles it."""

    def __init__(self, log: str, size: int) -> None:
        self.log, self.data = log, list(range(size))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        with open(self.log, "a") as fh:
            fh.write(f"{__import__('os').getpid()}\n")


def add_payload_len(payload: CountedPayload, x: int) -> int:
    return x + len(payload.data)


@pytest.mark.parametrize(("size", "most_loads"), [(200_000, 2), (10, 60)])
def test_a_big_map_function_is_sent_to_each_worker_once(tmp_path, size, most_loads):
    import functools
    import glob
    import tempfile

    shared = f"{tempfile.gettempdir()}/dataforge-map-*"
    before = set(glob.glob(shared))
    log = tmp_path / "loads.txt"
    fn = functools.partial(add_payload_len, CountedPayload(str(log), size))
    ex = make_executor("local", workers=2)
    try:
        assert ex.map(fn, list(range(60))) == [x + size for x in range(60)]
        loads = log.read_text().split()
        # big: loaded once per worker process (not once per task); small: sent with every task
        assert len(loads) <= most_loads and len(set(loads)) <= 2
        if most_loads == 2:
            assert len(loads) == len(set(loads))
        else:
            assert len(loads) == 60
        assert ex.map(fn, list(range(4))) == [x + size for x in range(4)]  # a second map, same pool
    finally:
        ex.close()
    assert set(glob.glob(shared)) == before  # the shared file is removed after each map
