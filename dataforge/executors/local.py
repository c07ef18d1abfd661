"""Local executor: in-process for one worker, a spawn-based process pool for more.

The function of a ``map`` (a stage's job: steps, schema and the plan of every task) is pickled once
into a temporary file that each worker loads once, not with every task: a plan of 15,000 tasks
(1 TB at 64 MiB) would otherwise be pickled 15,000 times.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from typing import Any

from dataforge.executors.base import OnDone

log = logging.getLogger(__name__)


_THREAD_VARS = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(threads: int) -> None:
    # Polars, OpenMP (scikit-learn's HistGradientBoosting) and BLAS read these when first imported
    # in the freshly spawned worker: N workers x all-core thread pools oversubscribe the machine,
    # and OpenMP's spin-waiting then slows small parallel regions down by an order of magnitude.
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)


#: Functions that pickle to more than this go to the workers through a file, once.
SHARED_FN_BYTES = 64 << 10

_SHARED: dict[str, Callable[[Any], Any]] = {}  # in a worker: the function of the current map


def _call_shared(fn_file: str, item: Any) -> Any:
    fn = _SHARED.get(fn_file)
    if fn is None:
        with open(fn_file, "rb") as fh:
            fn = pickle.load(fh)
        _SHARED.clear()  # one map at a time: drop the previous map's job
        _SHARED[fn_file] = fn
    return fn(item)


class LocalExecutor:
    """Run tasks on this machine.

    Args:
        workers: 1 runs tasks one after another in this process; N > 1 runs them in N spawned
            processes (each limited to ``cpu_count // N`` Polars threads).
    """

    name = "local"

    def __init__(self, *, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads,),
            )
        return self._pool

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
            futures: dict[Future, int] = {pool.submit(call, *first, item): i for i, item in enumerate(items)}
            return self._collect(futures, len(items), on_done)

    @staticmethod
    @contextlib.contextmanager
    def _shared(fn: Callable[[Any], Any]) -> Any:
        """``(callable, leading args)`` to submit: ``fn`` itself when it pickles small, else
        :func:`_call_shared` with a temporary file holding ``fn`` (removed after the map)."""
        blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) <= SHARED_FN_BYTES:
            yield fn, ()
            return
        fd, path = tempfile.mkstemp(prefix="dataforge-map-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            yield _call_shared, (path,)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    @staticmethod
    def _collect(futures: dict[Future, int], n: int, on_done: OnDone | None) -> list[Any]:
        results: list[Any] = [None] * n
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    for other in pending:
                        other.cancel()
                    raise exc
                i = futures[fut]
                results[i] = fut.result()
                if on_done:
                    on_done(i, results[i])
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
