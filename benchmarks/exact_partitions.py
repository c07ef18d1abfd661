"""``dedup.exact``: time and memory of its global phases by ``hash_partitions``.

The key table (two hash halves, the id and the row's position per document) is split by hash into
partitions; ``decide`` holds one partition at a time and ``finalize`` merges the partitions'
sorted decisions a few tasks at a time. This runs the same exact-dedup pipeline (1 worker) with
each partition count, in a fresh process each (so one run's memory does not hide the next's), and
samples the process's resident memory every 5 ms during the global phases.

Usage (inputs from ``benchmarks/make_corpus.py``)::

    .venv/bin/python benchmarks/exact_partitions.py benchmarks/_data/corpus-1000000.jsonl

Prints a table: partitions, seconds of the global phases (decide + finalize), peak RSS during
them above the RSS when they started, and the decision rows; the shards' sha256 must agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _one(path: str, parts: int) -> dict:
    """Run in this process; measure the global phases."""
    from dataforge.config import OutputSpec, Pipeline
    from dataforge.dedup import exact
    from dataforge.io.inputs import InputSpec
    from dataforge.registry import build_step
    from dataforge.runner import run_pipeline

    state = {"on": False, "base": 0.0, "peak": 0.0, "t": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            if state["on"]:
                state["peak"] = max(state["peak"], _rss_mb())

    def timed(fn, last: bool):
        def wrapper(self, ctx, item):
            if not state["on"]:
                state["base"] = state["peak"] = _rss_mb()
                state["on"] = True
            t0 = time.perf_counter()
            try:
                return fn(self, ctx, item)
            finally:
                state["t"] += time.perf_counter() - t0
                state["peak"] = max(state["peak"], _rss_mb())
                state["on"] = not last

        return wrapper

    exact.ExactDedup.decide = timed(exact.ExactDedup.decide, last=False)
    exact.ExactDedup.finalize = timed(exact.ExactDedup.finalize, last=True)
    threading.Thread(target=sample, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="exact-parts-") as tmp:
        pipe = Pipeline(
            name="exact-partitions",
            input=InputSpec(paths=(path,)),
            output=OutputSpec(path=tmp, keep_dropped=False),
            steps=[build_step("dedup.exact", {"hash_partitions": parts})],
            max_reject_rate=None,
        )
        t0 = time.perf_counter()
        report = run_pipeline(pipe, overwrite=True)
        total = time.perf_counter() - t0
        stop.set()
        digest = hashlib.sha256()
        for p in sorted(Path(tmp, "data").glob("*.arrow")):
            digest.update(p.read_bytes())
    fin = report.global_info["dedup.exact"]["finalize"]
    return {
        "partitions": parts,
        "global_s": round(state["t"], 2),
        "run_s": round(total, 1),
        "peak_above_mb": round(state["peak"] - state["base"]),
        "rows_in": report.rows_in,
        "decision_rows": fin["rows"],
        "dropped": fin["dropped"],
        "data_sha256": digest.hexdigest()[:12],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="JSONL file or folder")
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one count here
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(_one(args.input, args.one)))
        return
    rows = []
    for parts in args.partitions:
        res = subprocess.run(
            [sys.executable, __file__, args.input, "--one", str(parts)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"input: {args.input}, {base['rows_in']:,} documents, 1 worker\n")
    print(
        "| hash_partitions | decide + finalize s | peak RSS above start, MB | vs first | decision rows | dropped | data sha256 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ratio = r["peak_above_mb"] / base["peak_above_mb"] if base["peak_above_mb"] else float("nan")
        print(
            f"| {r['partitions']} | {r['global_s']:.2f} | {r['peak_above_mb']:,} | {ratio:.2f}x | "
            f"{r['decision_rows']:,} | {r['dropped']:,} | {r['data_sha256']} |"
        )
    if len({r["data_sha256"] for r in rows}) != 1:
        sys.exit("the shards differ between partition counts")


if __name__ == "__main__":
    main()
