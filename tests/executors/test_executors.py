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


def add_payload_len(payload: CountedPayload, x: int) -> tuple[int, int]:
    __import__("time").sleep(0.005)
    return x + len(payload.data), __import__("os").getpid()


@pytest.mark.parametrize("size", [200_000, 10])
def test_a_big_map_function_is_sent_to_each_worker_once(tmp_path, size):
    import functools
    import glob
    import os
    import tempfile

    shared = f"{tempfile.gettempdir()}/dataforge-map-*"
    before = set(glob.glob(shared))
    log = tmp_path / "loads.txt"
    fn = functools.partial(add_payload_len, CountedPayload(str(log), size))
    ex = make_executor("local", workers=2)
    try:
        out = ex.map(fn, list(range(60)))
        assert [r for r, _ in out] == [x + size for x in range(60)]
        in_pool = [pid for _, pid in out if pid != os.getpid()]
        assert in_pool, "no task ran in the pool worker"
        loads = [int(p) for p in log.read_text().split()] if log.exists() else []
        assert set(loads) == set(in_pool)  # only pool workers unpickle; this process calls fn
        if size > 1000:
            # big: loaded once per worker process (not once per task)
            assert len(loads) == len(set(loads)) == 1
        else:
            assert len(loads) == len(in_pool)  # small: sent with every task the pool runs
        assert [r for r, _ in ex.map(fn, list(range(4)))] == [x + size for x in range(4)]  # same pool
    finally:
        ex.close()
    assert set(glob.glob(shared)) == before  # the shared file is removed after each map


def slow_square(x: int) -> tuple[int, int]:
    import os
    import time

    time.sleep(0.05)
    return x * x, os.getpid()


def test_two_workers_are_this_process_and_one_spawned_one():
    """workers=2: this process runs tasks as well (no import wait), one pool process the rest;
    every item runs exactly once and results keep item order."""
    import os

    ex = make_executor("local", workers=2)
    seen = []
    try:
        out = ex.map(slow_square, list(range(40)), on_done=lambda i, r: seen.append(i))
    finally:
        ex.close()
    assert [r for r, _ in out] == [x * x for x in range(40)]
    pids = {pid for _, pid in out}
    assert os.getpid() in pids and len(pids) == 2
    assert sorted(seen) == list(range(40))


def fail_in_pool(driver_pid: int, x: int) -> int:
    import os
    import time

    if os.getpid() != driver_pid:
        msg = f"pool task {x} failed"
        raise InputError(msg)
    time.sleep(0.02)
    return x


def test_an_error_in_a_pool_worker_reaches_the_caller():
    import functools
    import os

    ex = make_executor("local", workers=2)
    try:
        with pytest.raises(InputError, match=r"pool task \d+ failed"):
            ex.map(functools.partial(fail_in_pool, os.getpid()), list(range(30)))
        assert ex.map(square, [1, 2, 3]) == [1, 4, 9]  # the executor still works afterwards
    finally:
        ex.close()


def test_function_files_of_killed_drivers_are_removed(tmp_path, monkeypatch):
    """A SIGKILLed driver cannot remove its temporary function file; the next map that needs one
    removes files of processes that no longer exist (and leaves live ones alone)."""
    import functools
    import os
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f"dataforge-map-{dead_pid}-abc.pkl"
    live = tmp_path / f"dataforge-map-{os.getppid()}-def.pkl"  # our parent: alive
    other = tmp_path / "dataforge-map-notapid.pkl"
    for p in (orphan, live, other):
        p.write_bytes(b"x")
    fn = functools.partial(add_payload_len, CountedPayload(str(tmp_path / "loads.txt"), 200_000))
    ex = make_executor("local", workers=2)
    try:
        assert [r for r, _ in ex.map(fn, [1, 2, 3])] == [200_001, 200_002, 200_003]
    finally:
        ex.close()
    assert not orphan.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.glob("dataforge-map-*")) == sorted([live.name, other.name])


def write_late_in_pool(driver_pid: int, folder: str, x: int) -> int:
    """In the driver: fail at once. In the pool worker: sleep, then leave a file behind."""
    import os
    import pathlib
    import time

    if os.getpid() == driver_pid:
        msg = f"driver task {x} failed"
        raise InputError(msg)
    time.sleep(1.0)
    pathlib.Path(folder, f"done-{x}").write_text("x")
    return x


def test_close_after_a_failed_map_waits_for_tasks_still_running(tmp_path):
    """After an error, a pool task may still be running: close() waits for it, so nothing writes
    into the run's folders once the caller has the error."""
    import functools
    import os

    ex = make_executor("local", workers=2)
    try:
        with pytest.raises(InputError, match="driver task 1 failed"):
            ex.map(functools.partial(write_late_in_pool, os.getpid(), str(tmp_path)), [0, 1])
    finally:
        ex.close()
    assert [p.name for p in tmp_path.iterdir()] == ["done-0"]  # the pool's task 0 had finished


@pytest.mark.parametrize("idle", ["0", "0.2"])
def test_close_after_successful_maps_lets_the_workers_exit(monkeypatch, idle):
    """close() does not wait for idle workers to shut down, but they do exit: at once when pools
    are not kept for reuse, after the idle time when they are."""
    import multiprocessing as mp
    import os
    import time

    monkeypatch.setenv("DATAFORGE_POOL_IDLE", idle)
    ex = make_executor("local", workers=2)
    try:
        pids = {pid for _, pid in ex.map(slow_square, list(range(20)))}
    finally:
        ex.close()
    workers = [p for p in mp.active_children() if p.pid in pids - {os.getpid()}]
    assert len(workers) == 1  # the pool's one process ran tasks
    # The pool's own manager thread joins its workers too: when it reaps one first, our join can
    # return before the shared exit code is recorded (waitpid: no such child), so wait for it.
    deadline = time.monotonic() + 60
    for p in workers:
        p.join(timeout=60)
    while any(p.exitcode is None for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p.exitcode for p in workers] == [0], [(p.pid, p.exitcode) for p in workers]
    assert not [p for p in mp.active_children() if p.pid in pids]


DRIVER = """
import os, sys, time
sys.path.insert(0, {root!r})
from dataforge.executors.base import make_executor

def pid_of_worker(x):
    import os, time
    time.sleep(0.2)
    return os.getpid()

if __name__ == "__main__":
    ex = make_executor("local", workers=2)
    pids = set(ex.map(pid_of_worker, list(range(20)))) - {{os.getpid()}}
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)  # killed before this ends, without closing the pool
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="prctl is Linux-only")
def test_pool_workers_die_with_a_killed_driver(tmp_path):
    """A driver killed with SIGKILL (OOM killer, cron timeout) cannot close its pool: the kernel
    must end the spawned workers, or they live on holding memory."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(Path(__file__).resolve().parents[2])))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers, "the pool ran no task"
        for pid in workers:
            os.kill(pid, 0)  # alive while the driver lives
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        alive = set(workers)
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    os.kill(pid, 0)
                    with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init counts as gone
                        if fh.read().split(") ")[1].startswith("Z"):
                            alive.discard(pid)
                except (ProcessLookupError, FileNotFoundError):
                    alive.discard(pid)
            time.sleep(0.1)
        assert not alive, f"workers {alive} outlived their driver"
    finally:
        proc.kill()


def pid_of(x: int) -> tuple[int, int]:
    import os
    import time

    time.sleep(0.02)
    return x, os.getpid()


def _pool_pids(ex) -> set[int]:
    import os

    try:
        return {pid for _, pid in ex.map(pid_of, list(range(20)))} - {os.getpid()}
    finally:
        ex.close()


def test_a_finished_pool_is_reused_by_the_next_executor(monkeypatch):
    """A library user's next run gets the warm pool (no second start-up); with
    DATAFORGE_POOL_IDLE=0 (what the dataforge command sets) or after a failed map it does not."""
    import functools
    import os

    from dataforge.executors import local

    local.release_idle_pools()
    first = _pool_pids(make_executor("local", workers=2))
    assert first and _pool_pids(make_executor("local", workers=2)) == first
    ex = make_executor("local", workers=2)
    with pytest.raises(InputError):
        ex.map(functools.partial(fail_in_pool, os.getpid()), list(range(30)))
    ex.close()  # failed: shut down, not parked
    after_failure = _pool_pids(make_executor("local", workers=2))
    assert after_failure and after_failure.isdisjoint(first)
    monkeypatch.setenv("DATAFORGE_POOL_IDLE", "0")
    fresh = _pool_pids(make_executor("local", workers=2))
    assert fresh.isdisjoint(after_failure) and _pool_pids(make_executor("local", workers=2)).isdisjoint(fresh)
    monkeypatch.setenv("DATAFORGE_POOL_IDLE", "0.3")
    kept = _pool_pids(make_executor("local", workers=2))
    import time

    time.sleep(1.0)  # idle longer than allowed: shut down
    assert _pool_pids(make_executor("local", workers=2)).isdisjoint(kept)
    local.release_idle_pools()
    assert not local._PARKED


_FRESH = """
import os, sys, time
sys.path.insert(0, {root!r})

def pid(x):
    time.sleep(0.02)
    return os.getpid()

if __name__ == "__main__":
    from dataforge.executors.base import make_executor
    from dataforge.executors import local

    runs = []
    if sys.argv[1:] == ["prestart"]:
        local.prestart(2)
        started = sorted(p.pid for e in local._PARKED.values() for p in e.pool._processes.values())
        import polars  # sets _RJEM_MALLOC_CONF in os.environ: the pool started before is still ours
        runs.append(started)
    for _ in range(3):
        ex = make_executor("local", workers=2)
        runs.append(sorted(set(ex.map(pid, list(range(20)))) - {{os.getpid()}}))
        ex.close()
    print(runs)
"""


def test_a_fresh_processs_second_run_reuses_the_pool(tmp_path):
    """In a new process, the first map imports threadpoolctl (tasks run here under its thread
    limits), which sets KMP_DUPLICATE_LIB_OK in the environment; the pool parked after that map
    must still be the one the second run takes (it was spawned again, ~1-2 s, before). Workers
    started ahead (prestart, then Polars' import sets _RJEM_MALLOC_CONF) serve the first run."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "fresh.py"
    script.write_text(_FRESH.format(root=str(Path(__file__).resolve().parents[2])), encoding="utf-8")
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if k not in ("KMP_DUPLICATE_LIB_OK", "_RJEM_MALLOC_CONF", "DATAFORGE_POOL_IDLE")
    }
    for args in ([], ["prestart"]):
        res = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert res.returncode == 0, res.stderr
        runs = ast.literal_eval(res.stdout.strip().splitlines()[-1])
        assert len(runs) == 3 + len(args) and runs[0]
        assert all(r == runs[0] for r in runs)  # with prestart: the first run used the workers started ahead


def test_warm_says_whether_a_map_finds_its_workers_up():
    """warm(): one worker, or a pool that has run tasks (this executor's or a parked one), yes; no
    pool, or one started ahead whose workers may still be importing, no (the runner then counts
    the lines of the inputs in this process instead of waiting for them)."""
    from dataforge.executors import local

    local.release_idle_pools()
    assert local.LocalExecutor(workers=1).warm()
    ex = local.LocalExecutor(workers=2)
    assert not ex.warm()
    ex.map(pid_of, list(range(4)))
    assert ex.warm()
    ex.close()  # parked
    assert local.LocalExecutor(workers=2).warm() and not local.LocalExecutor(workers=3).warm()
    local.release_idle_pools()
    local.prestart(2)
    assert not local.LocalExecutor(workers=2).warm()
    local.release_idle_pools()


def test_a_prestarted_pool_nobody_takes_is_stopped():
    """Workers started ahead for a run that then has nothing to do (its output is up to date) are
    stopped by release_idle_pools (the dataforge command calls it at exit) even while importing,
    so the command does not wait for them; with one worker nothing is started."""
    import time

    from dataforge.executors import local

    local.release_idle_pools()
    local.prestart(1)
    assert not local._PARKED
    local.prestart(2)
    (entry,) = local._PARKED.values()
    assert entry.fresh
    procs = list(entry.pool._processes.values())
    assert len(procs) == 1 and procs[0].is_alive()
    local.release_idle_pools()
    deadline = time.monotonic() + 10
    while procs[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs[0].is_alive() and not local._PARKED


def read_relative(_: int) -> tuple[int, str]:
    import os
    import time

    time.sleep(0.02)
    with open("which.txt") as fh:
        return os.getpid(), fh.read()


def test_a_pool_is_not_reused_from_another_directory_or_environment(tmp_path, monkeypatch):
    """Workers keep the working directory and environment they started with: a pool made in one
    project folder must not serve a run in another (relative paths would resolve in the first),
    and a pool is parked under the settings it was made with, not those at close."""
    import os

    from dataforge.executors import local

    local.release_idle_pools()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "which.txt").write_text(name)
    monkeypatch.chdir(tmp_path / "a")
    ex = make_executor("local", workers=2)
    try:
        first = ex.map(read_relative, list(range(12)))
        monkeypatch.setenv("DATAFORGE_TEST_MARK", "changed while open")
    finally:
        ex.close()
    assert {t for _, t in first} == {"a"}
    first_pool = {pid for pid, _ in first} - {os.getpid()}
    assert first_pool
    monkeypatch.chdir(tmp_path / "b")
    ex = make_executor("local", workers=2)
    try:
        out = ex.map(read_relative, list(range(12)))
    finally:
        ex.close()
    assert {t for _, t in out} == {"b"}
    assert any(pid != os.getpid() for pid, _ in out)
    # the first pool's folder with the environment it was closed under (not the one it was made
    # with, whose workers lack the variable): not that pool either
    monkeypatch.chdir(tmp_path / "a")
    assert _pool_pids(make_executor("local", workers=2)).isdisjoint(first_pool)
    local.release_idle_pools()


def test_a_parked_pool_whose_worker_died_is_not_reused():
    import os
    import signal

    from dataforge.executors import local

    local.release_idle_pools()
    first = _pool_pids(make_executor("local", workers=2))
    for pid in first:
        os.kill(pid, signal.SIGKILL)  # the OOM killer, while the pool is parked
    ex = make_executor("local", workers=2)
    try:
        out = ex.map(pid_of, list(range(20)))
    finally:
        ex.close()
    assert [x for x, _ in out] == list(range(20))
    assert ({pid for _, pid in out} - {os.getpid()}).isdisjoint(first)
    local.release_idle_pools()
