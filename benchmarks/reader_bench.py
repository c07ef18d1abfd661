"""JSONL reading: dataforge's checked reader against plain pyarrow and Polars, in one process.

dataforge's reader (``dataforge.io.readers.read_batches``) accounts for every line (a document
with file, row and line, or a reject naming them) and decodes exactly what a JSON parser decodes.
Lines of the common shape ``{"id": "...", "text": "..."}`` go through a compiled parser
(``dataforge.io._jsonl``); any other line sends its 8 MB chunk through orjson, line by line checks
included (the general path). This script times, on the same file:

- ``dataforge`` (as shipped) and ``dataforge, general path`` (the compiled path switched off:
  the previous reader);
- ``pyarrow.json.read_json`` and ``polars.read_ndjson`` as baselines: they read the same
  documents but keep no provenance, and reject the whole file on one bad line;
- and checks that both dataforge paths give the same documents, and pyarrow the same texts.

Usage::

    .venv/bin/python benchmarks/reader_bench.py benchmarks/_data/corpus-100000.jsonl --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.json as pj

import dataforge.io.readers as readers
from dataforge.io.inputs import InputSpec, discover


def dataforge_read(path: str, *, simple: bool) -> pl.DataFrame:
    readers._SIMPLE_JSONL = simple
    spec = InputSpec(paths=(path,))
    frames = [b.docs for f in discover(spec) for b in readers.read_batches(f, spec)]
    return pl.concat(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="a JSONL file of {id, text} records (benchmarks/make_corpus.py)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per method, alternating (default 5)")
    args = ap.parse_args()
    size = Path(args.path).stat().st_size
    methods: dict[str, Callable[[], Any]] = {
        "dataforge": lambda: dataforge_read(args.path, simple=True),
        "dataforge, general path (orjson per line)": lambda: dataforge_read(args.path, simple=False),
        "pyarrow.json.read_json": lambda: pj.read_json(args.path),
        "polars.read_ndjson": lambda: pl.read_ndjson(args.path),
    }
    results = {name: fn() for name, fn in methods.items()}  # warm-up (compiles the parser once)
    fast, general = results["dataforge"], results["dataforge, general path (orjson per line)"]
    same = fast.equals(general)
    same_texts = fast["text"].to_list() == results["pyarrow.json.read_json"].column("text").to_pylist()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeat):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = min(times["dataforge, general path (orjson per line)"])
    print(f"{args.path}: {fast.height:,} documents, {size / 1e6:.0f} MB; {args.repeat} alternating runs")
    print(f"dataforge paths give the same documents: {same}; same texts as pyarrow: {same_texts}\n")
    print("| reader | best s | median s | MB/s (best) | vs dataforge general path |")
    print("|---|---:|---:|---:|---:|")
    for name, ts in times.items():
        best = min(ts)
        print(
            f"| {name} | {best:.3f} | {statistics.median(ts):.3f} | {size / 1e6 / best:,.0f} | "
            f"{base / best:.2f}x |"
        )


if __name__ == "__main__":
    main()
