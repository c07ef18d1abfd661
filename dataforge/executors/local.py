"""Local executor: in-process for one worker, a spawn-based process pool for more."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
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
        futures: dict[Future, int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
        results: list[Any] = [None] * len(items)
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
