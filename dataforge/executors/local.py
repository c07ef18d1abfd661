"""Local executor: in-process for one worker; for N > 1, this process plus N - 1 spawned ones.

This process works too: a spawned worker first spends a second or two importing Polars, numba and
the steps, and this process has them already, so it starts on the first task at once. Tasks are
handed out one at a time, in item order, to whichever process is free (this one or a pool worker).

The function of a ``map`` (a stage's job: steps, schema and the plan of every task) is pickled once
into a temporary file that each worker loads once, not with every task: a plan of 15,000 tasks
(1 TB at 64 MiB) would otherwise be pickled 15,000 times. The file is removed after the map; files
left by a driver that was killed (named after its process id) are removed by the next map.

A pool whose maps all finished is kept for the next executor of this process with as many workers
(``DATAFORGE_POOL_IDLE`` seconds, default 60; the ``dataforge`` command sets 0: one run per
process), so a library user's next run does not wait for workers to start again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from dataforge.executors.base import OnDone

log = logging.getLogger(__name__)


_THREAD_VARS = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(threads: int, parent: int | None = None) -> None:
    # Polars, OpenMP (scikit-learn's HistGradientBoosting) and BLAS read these when first imported
    # in the freshly spawned worker: N workers x all-core thread pools oversubscribe the machine,
    # and OpenMP's spin-waiting then slows small parallel regions down by an order of magnitude.
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    if parent is not None:
        _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this worker when the driver dies without closing the pool
    (SIGKILL, the OOM killer, a cron ``timeout``): otherwise the worker lives on, holding memory.
    Elsewhere a no-op (the pool's own shutdown still applies)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: keep the old behaviour
        return
    if os.getppid() != parent:  # the driver died before the request took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


#: Functions that pickle to more than this go to the workers through a file, once.
SHARED_FN_BYTES = 64 << 10

_MAP_PREFIX = "dataforge-map-"  # temporary files: dataforge-map-<driver pid>-<random>.pkl


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by someone else
        return True
    return True


def _remove_orphans() -> None:
    """Remove the function files of drivers that died without cleaning up (SIGKILL, OOM killer):
    files named after a process that no longer exists."""
    folder = tempfile.gettempdir()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(_MAP_PREFIX) and name.endswith(".pkl")):
            continue
        pid = name[len(_MAP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
                log.info("removed %s, left by process %s which no longer runs", name, pid)


_SHARED: dict[str, Callable[[Any], Any]] = {}  # in a worker: the function of the current map

#: Seconds an idle pool is kept for the next run of this process (``DATAFORGE_POOL_IDLE``; 0: none).
POOL_IDLE_SECONDS = 60.0

#: Seconds a pool started ahead of its run (:func:`prestart`) waits to be taken.
PRESTART_SECONDS = 60.0


@dataclass
class _Parked:
    pool: ProcessPoolExecutor
    timer: threading.Timer
    fresh: bool = False  # started by prestart and not used yet: its workers may still be importing


_PARKED: dict[tuple[Any, ...], _Parked] = {}
_PARKED_LOCK = threading.Lock()
_PROBE_SECONDS = 30.0  # a parked pool must answer a no-op within this to be reused


#: Variables libraries set in os.environ when imported (threadpoolctl at this module's first map,
#: Polars): a worker sets them itself when it imports the same library, so they do not tell a
#: pool made before the import from one made after it (it was never reused otherwise)
_SET_BY_IMPORTS = frozenset({"KMP_DUPLICATE_LIB_OK", "_RJEM_MALLOC_CONF"})


def _pool_key(workers: int) -> tuple[Any, ...]:
    # spawned workers copy the working directory, the environment and the import path once, when
    # they start: a pool made under other ones (another project's folder, a test's monkeypatched
    # variable, a changed sys.path) must not be reused, or its workers resolve relative paths and
    # read settings as they were then
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k not in _SET_BY_IMPORTS))
    return (workers, os.getpid(), os.getcwd(), env, tuple(sys.path))


def _idle_seconds() -> float:
    raw = os.environ.get("DATAFORGE_POOL_IDLE")
    if raw is None:
        return POOL_IDLE_SECONDS
    try:
        return max(0.0, float(raw))
    except ValueError:
        log.warning("DATAFORGE_POOL_IDLE=%r is not a number of seconds; using %s", raw, POOL_IDLE_SECONDS)
        return POOL_IDLE_SECONDS


def _park(key: tuple[Any, ...], pool: ProcessPoolExecutor, *, fresh: bool = False) -> bool:
    """Keep an idle pool for the next executor of this process with the same worker count, working
    directory and environment (``key``): a run started soon after (the next step of a pipeline
    file, the next call of a training job, a benchmark's next repeat) then starts at full speed
    instead of waiting 1-2 s for spawned workers to import Polars and the kernels. It is shut
    down after ``DATAFORGE_POOL_IDLE`` seconds unused (default 60). ``key`` is :func:`_pool_key`
    as it was when the pool was made (the settings its workers have). A ``fresh`` pool (see
    :func:`prestart`) is kept PRESTART_SECONDS whatever that setting. False (not parked): reuse is
    off, or the pool is broken."""
    idle = PRESTART_SECONDS if fresh else _idle_seconds()
    if idle <= 0 or getattr(pool, "_broken", False):
        return False
    timer = threading.Timer(idle, _expire, args=(key, pool))
    timer.daemon = True
    with _PARKED_LOCK:
        old = _PARKED.pop(key, None)
        _PARKED[key] = _Parked(pool, timer, fresh)
    if old is not None:
        _discard(old)
    timer.start()
    return True


def _take_parked(key: tuple[Any, ...]) -> ProcessPoolExecutor | None:
    with _PARKED_LOCK:
        entry = _PARKED.pop(key, None)
    if entry is None:
        return None
    entry.timer.cancel()
    pool = entry.pool
    if entry.fresh and not getattr(pool, "_broken", False):
        return pool  # its workers may be importing: the run's first tasks queue behind that, not this
    # a worker that died while parked (the OOM killer) breaks the pool once its manager thread
    # notices: a round trip through the pool makes it notice now, not in the middle of a run
    try:
        if getattr(pool, "_broken", False):
            raise BrokenProcessPool("broken while parked")
        pool.submit(os.getpid).result(timeout=_PROBE_SECONDS)
    except (BrokenProcessPool, TimeoutError, RuntimeError) as exc:
        log.debug("not reusing a parked pool: %s", exc)
        pool.shutdown(wait=False, cancel_futures=True)
        return None
    return pool


def _discard(entry: _Parked) -> None:
    """Shut a parked pool down without waiting; the workers of one never used are stopped (they
    may be in the middle of importing, which the interpreter's exit would otherwise wait for)."""
    entry.timer.cancel()
    workers = list((getattr(entry.pool, "_processes", None) or {}).values()) if entry.fresh else []
    entry.pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        with contextlib.suppress(Exception):
            proc.terminate()


def _expire(key: tuple[Any, ...], pool: ProcessPoolExecutor) -> None:
    with _PARKED_LOCK:
        entry = _PARKED.get(key)
        if entry is None or entry.pool is not pool:
            return
        del _PARKED[key]
    _discard(entry)


def release_idle_pools() -> None:
    """Shut down the pools kept for reuse (see :meth:`LocalExecutor.close`) or started ahead
    (:func:`prestart`) now."""
    with _PARKED_LOCK:
        entries = list(_PARKED.values())
        _PARKED.clear()
    for entry in entries:
        _discard(entry)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        max_workers=workers - 1,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads, os.getpid()),
    )


def _warm() -> int:
    """A prestarted worker's first task: import what every task imports."""
    import dataforge.stages  # noqa: F401

    return os.getpid()


def prestart(workers: int) -> None:
    """Start the worker processes of this process's next ``LocalExecutor(workers=workers)`` now.

    A spawned worker spends ~1 s importing Polars, Arrow, Numba and dataforge before its first
    task. The ``dataforge`` command calls this before it imports the library itself, so the
    workers import while it does (on the other cores) instead of after; the run's executor takes
    the pool as it takes a parked one (same worker count, directory and environment). A pool
    nobody takes is stopped after PRESTART_SECONDS, or by :func:`release_idle_pools`."""
    if workers <= 1:
        return
    key = _pool_key(workers)
    with _PARKED_LOCK:
        if key in _PARKED:
            return
    pool = _new_pool(workers)
    for _ in range(workers - 1):
        pool.submit(_warm)
    _park(key, pool, fresh=True)


def _call_shared(fn_file: str, item: Any) -> Any:
    fn = _SHARED.get(fn_file)
    if fn is None:
        with open(fn_file, "rb") as fh:
            fn = pickle.load(fh)
        _SHARED.clear()  # one map at a time: drop the previous map's job
        _SHARED[fn_file] = fn
    return fn(item)


@contextlib.contextmanager
def _thread_limits(threads: int) -> Any:
    """Limit BLAS/OpenMP threads of tasks run in this process while pool workers run too (as the
    workers' own environment does); a no-op when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        yield
        return
    with threadpool_limits(limits=threads):
        yield


class LocalExecutor:
    """Run tasks on this machine.

    Args:
        workers: 1 runs tasks one after another in this process; N > 1 runs them in this process
            and N - 1 spawned ones (each limited to ``cpu_count // N`` Polars threads; tasks this
            process runs are limited to as many BLAS/OpenMP threads).
    """

    name = "local"

    def __init__(self, *, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_key: tuple[Any, ...] = ()
        self._failed = False  # a map raised: pool tasks may still run

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool_key = _pool_key(self.workers)
            self._pool = _take_parked(self._pool_key)
        if self._pool is None:
            self._pool = _new_pool(self.workers)
        return self._pool

    def warm(self) -> bool:
        """True when a map would find its workers started and idle (this executor's pool, or a
        parked one it would take that has run tasks before): work too short to wait for a worker's
        start-up can then be spread over them."""
        if self.workers == 1 or self._pool is not None:
            return True
        with _PARKED_LOCK:
            entry = _PARKED.get(_pool_key(self.workers))
        return entry is not None and not entry.fresh

    def map(
        self, fn: Callable[[Any], Any], items: Sequence[Any], *, on_done: OnDone | None = None
    ) -> list[Any]:
        if self.workers == 1 or len(items) <= 1:
            results = []
            for i, item in enumerate(items):
                res = fn(item)
                results.append(res)
                if on_done:
                    on_done(i, res)
            return results
        pool = self._get_pool()
        with self._shared(fn) as (call, first):
            return self._run(pool, fn, call, first, items, on_done)

    def _run(
        self,
        pool: ProcessPoolExecutor,
        fn: Callable[[Any], Any],
        call: Callable[..., Any],
        first: tuple[Any, ...],
        items: Sequence[Any],
        on_done: OnDone | None,
    ) -> list[Any]:
        """Hand items out in order: a feeder thread keeps each pool worker busy with one task at
        a time while this thread runs tasks itself; results and errors come back through a queue,
        so ``on_done`` always runs in this thread."""
        n = len(items)
        lock = threading.Lock()
        state = {"next": 0, "stop": False}
        finished: queue.Queue[tuple[int, bool, Any]] = queue.Queue()

        def take() -> int | None:
            with lock:
                if state["stop"] or state["next"] >= n:
                    return None
                i = state["next"]
                state["next"] = i + 1
                return i

        in_flight: dict[Future, int] = {}  # guarded by ``lock``

        def submit_next() -> bool:
            i = take()
            if i is None:
                return False
            fut = pool.submit(call, *first, items[i])
            with lock:
                in_flight[fut] = i
            return True

        def feed() -> None:
            try:
                while True:
                    with lock:
                        pending = list(in_flight)
                    if not pending:
                        return
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        with lock:
                            i = in_flight.pop(fut)
                        if fut.cancelled():
                            continue
                        exc = fut.exception()
                        if exc is not None:
                            with lock:
                                state["stop"] = True
                            finished.put((i, False, exc))
                        else:
                            finished.put((i, True, fut.result()))
                            submit_next()
            except BaseException as exc:
                with lock:
                    state["stop"] = True
                finished.put((-1, False, exc))

        feeder = threading.Thread(target=feed, name="dataforge-feeder", daemon=True)
        results: list[Any] = [None] * n
        count = 0

        def drain(block: bool) -> None:
            nonlocal count
            while count < n:
                try:
                    i, ok, value = finished.get(block=block)
                except queue.Empty:
                    return
                if not ok:
                    raise value
                results[i] = value
                count += 1
                if on_done:
                    on_done(i, value)
                block = False

        for _ in range(self.workers - 1):  # the pool gets the first items: its workers start now
            if not submit_next():
                break
        feeder.start()
        try:
            with _thread_limits(max(1, (os.cpu_count() or 1) // self.workers)):
                while (i := take()) is not None:
                    res = fn(items[i])
                    results[i] = res
                    count += 1
                    if on_done:
                        on_done(i, res)
                    drain(block=False)
            while count < n:
                drain(block=True)
        except BaseException:
            self._failed = True
            with lock:
                state["stop"] = True
                pending = list(in_flight)
            for fut in pending:
                fut.cancel()
            raise
        feeder.join()
        return results

    @staticmethod
    @contextlib.contextmanager
    def _shared(fn: Callable[[Any], Any]) -> Any:
        """``(callable, leading args)`` to submit: ``fn`` itself when it pickles small, else
        :func:`_call_shared` with a temporary file holding ``fn`` (removed after the map)."""
        blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) <= SHARED_FN_BYTES:
            yield fn, ()
            return
        _remove_orphans()
        fd, path = tempfile.mkstemp(prefix=f"{_MAP_PREFIX}{os.getpid()}-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            yield _call_shared, (path,)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close(self) -> None:
        """Release the pool. After maps that finished, its workers are idle: the pool is parked
        for the next executor of this process with as many workers (see :func:`_park`), or told to
        exit and not waited for (a worker's interpreter takes ~0.4 s to shut down, which the run
        spends writing its reports instead; the interpreter joins them at exit). After a map that
        failed, tasks may still be running, so this waits for them."""
        if self._pool is not None:
            if self._failed or not _park(self._pool_key, self._pool):
                self._pool.shutdown(wait=self._failed, cancel_futures=True)
            self._pool = None
            self._failed = False
