"""Peak memory of one ``dataforge.dedup`` run (exact verification), in this fresh process.

Usage (inputs from ``benchmarks/make_corpus.py``; split a big file into parts with
``split -l 100000 -d --additional-suffix=.jsonl corpus-1000000.jsonl corpus-1000000-parts/part-``):

    .venv/bin/python benchmarks/dedup_memory.py benchmarks/_data/corpus-100000.jsonl
    .venv/bin/python benchmarks/dedup_memory.py benchmarks/_data/corpus-1000000-parts
    .venv/bin/python benchmarks/dedup_memory.py benchmarks/_data/corpus-1000000.jsonl

Prints one JSON line: seconds, rows, kept, peak RSS (ru_maxrss, MB) and the run's phase timings.
Measured 2026-11-28 (see benchmarks/README.md): 100k docs in one file 920-954 MB; 1M docs as 10
files of 100k 1,393 MB; 1M docs in one 2 GB file 4,848 MB. After inputs were split into tasks of at
most 64 MiB (issue 7): 1M docs in one 2 GB file 1,163 MB; as 10 files 1,157 MB. After shards were
written one record batch at a time (2026-11-29): 100k docs 698 MB; 1M docs in one 2 GB file 1,129 MB
(the peak is now in the MinHash finalize, which grows with the corpus).
After the kernel changes of 2026-11-29: 100k docs 741 MB; 1M docs in one file 1,133 MB in 80.9 s.
After thin last-stage live files and unsynced work files (2026-11-29, seventh session): 100k docs
609 MB; 1M docs in one file 608 MB in 51.9 s. With 64 MiB shards and the branchless word hash
(eighth session): 100k docs 529 MB; 1M docs in one file 558 MB in 48.0 s.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time

import dataforge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="file or folder of JSONL documents")
    ap.add_argument("--verify", default="exact", choices=("exact", "estimate", "none"))
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="dedup-memory-")
    try:
        t0 = time.perf_counter()
        r = dataforge.dedup([args.input], output=out, verify=args.verify, overwrite=True)
        row = {
            "input": args.input,
            "seconds": round(time.perf_counter() - t0, 1),
            "rows_in": r.rows_in,
            "kept": r.kept,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "phases": {k: round(v, 2) for k, v in r.timings.items()},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
