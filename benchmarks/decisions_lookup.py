"""How a next-stage task finds its rows in a global step's decision table.

Builds a decision table like a near-dedup run's (``--rows`` rows over ``--tasks`` tasks, ids and
details as strings), writes it with ``GlobalContext.write_decisions`` (sorted, marked) and, as the
baseline, as a plain Arrow IPC file; then reads the rows of every ``--every``-th task both ways:
Polars ``scan_ipc(...).filter(_task == t)`` over the whole table (what each task did before) and
``stages.task_decisions`` (a binary search over the record batches). Checks that both give the
same rows and prints a table.

    .venv/bin/python benchmarks/decisions_lookup.py
    .venv/bin/python benchmarks/decisions_lookup.py --rows 10000000 --tasks 5000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import polars as pl

from dataforge.stages import task_decisions
from dataforge.step import GlobalContext


def table(rows: int, tasks: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    ords = np.arange(rows, dtype=np.int64)
    ids = pl.Series([f"doc-{i:09d}" for i in range(rows)])
    return pl.DataFrame(
        {
            "_task": np.sort(rng.integers(0, tasks, rows)).astype(np.int32),
            "_ord": ords,
            "reason": pl.Series(["near_duplicate"] * rows),
            "detail": "jaccard 0.9 with " + ids + " (cluster 5: 2 documents, keep=first)",
            "cluster_id": ords,
            "dup_of": ids,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--tasks", type=int, default=1_000)
    ap.add_argument("--every", type=int, default=10, help="read every N-th task")
    args = ap.parse_args()
    frame = table(args.rows, args.tasks)
    folder = tempfile.mkdtemp(prefix="decisions-")
    try:
        ctx = GlobalContext(work=folder, stage_dir=folder, n_tasks=args.tasks)
        ctx.write_decisions(frame.slice(s, 200_000) for s in range(0, frame.height, 200_000))
        plain = os.path.join(folder, "plain.arrow")
        frame.write_ipc(plain, compression="uncompressed")
        sample = range(0, args.tasks, args.every)
        t0 = time.perf_counter()
        old = [pl.scan_ipc(plain).filter(pl.col("_task") == t).collect().sort("_ord") for t in sample]
        t_old = (time.perf_counter() - t0) / len(sample)
        t0 = time.perf_counter()
        new = [task_decisions(ctx.decisions_path(), t) for t in sample]
        t_new = (time.perf_counter() - t0) / len(sample)
        assert all(a.equals(b) for a, b in zip(old, new, strict=True)), "different rows"
        size = os.path.getsize(ctx.decisions_path()) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"decision table: {args.rows:,} rows, {args.tasks:,} tasks, {size:,.0f} MB; {len(sample)} tasks read"
    )
    print()
    print("| read of one task's rows | ms per task | vs filter |")
    print("|---|---:|---:|")
    print(f"| Polars `scan_ipc` + filter on `_task` (baseline) | {t_old * 1000:.1f} | 1.0x |")
    print(f"| `task_decisions` (sorted table, binary search) | {t_new * 1000:.2f} | {t_old / t_new:.0f}x |")


if __name__ == "__main__":
    main()
