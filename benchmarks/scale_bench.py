"""Scaling of clean (gopher preset) + near-dedup over 1, 2 and 4 workers, local and Ray.

Each configuration runs in a fresh child process (``--one``) while this process polls ``/proc``
every 0.2 s for the RSS of the child and of every process below it (pool workers, Ray's raylet,
GCS and workers), so the table shows the driver's peak and the largest worker's peak. The
pipeline is ``dataforge clean --preset gopher`` (normalize, Gopher quality + repetition, PII
redaction, exact dedup) followed by ``dedup.minhash`` (exact verification), on documents from
``benchmarks/make_corpus.py`` (real text from ``/work/shared/data`` re-packed into 1-3 KB
documents, 10 % injected near-duplicates) in ONE JSONL file, so the work is spread by the task
planner (``input.task_bytes``, default 64 MiB) and not by the file layout.

Usage (from the repository root)::

    .venv/bin/python benchmarks/make_corpus.py --docs 1000000        # once (~2 GB, git-ignored)
    .venv/bin/python benchmarks/scale_bench.py --docs 1000000 --configs local:1,local:2
    .venv/bin/python benchmarks/scale_bench.py --docs 200000            # all six configurations
    .venv/bin/python benchmarks/scale_bench.py --docs 200000 --json benchmarks/_data/scale-200k.json

``--docs N`` below 1M takes the first N lines of ``corpus-1000000.jsonl`` (written once as
``benchmarks/_data/scale-N.jsonl``). Prints a Markdown table; ``--json`` also stores the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
CONFIGS = ("local:1", "local:2", "local:4", "ray:1", "ray:2", "ray:4")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --------------------------------------------------------------------------- corpus


def corpus(docs: int) -> Path:
    full = DATA / "corpus-1000000.jsonl"
    exact = DATA / f"corpus-{docs}.jsonl"
    if exact.exists():
        return exact
    if not full.exists():
        sys.exit(f"{full} is missing: run `.venv/bin/python benchmarks/make_corpus.py --docs 1000000` first")
    if docs >= 1_000_000:
        return full
    out = DATA / f"scale-{docs}.jsonl"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        with full.open("rb") as src, tmp.open("wb") as dst:
            for i, line in enumerate(src):
                if i >= docs:
                    break
                dst.write(line)
        tmp.replace(out)
    return out


# --------------------------------------------------------------------------- one run (child)


def run_one(kind: str, workers: int, path: str, out: str, task_bytes: int | None) -> dict:
    import dataforge
    from dataforge.api import clean_steps
    from dataforge.config import ExecutorSpec, OutputSpec, Pipeline
    from dataforge.io.inputs import InputSpec
    from dataforge.registry import build_step
    from dataforge.runner import run_pipeline

    steps = [*clean_steps(preset="gopher"), build_step("dedup.minhash", {"verify": "exact"})]
    spec = InputSpec(paths=(path,), **({"task_bytes": task_bytes} if task_bytes else {}))
    pipeline = Pipeline(
        name="scale",
        input=spec,
        output=OutputSpec(path=out),
        steps=steps,
        executor=ExecutorSpec(kind=kind, workers=workers),
        max_reject_rate=None,
    )
    t0 = time.perf_counter()
    report = run_pipeline(pipeline, overwrite=True)
    seconds = time.perf_counter() - t0
    return {
        "dataforge": dataforge.__version__,
        "rows_in": report.rows_in,
        "kept": report.kept,
        "seconds": seconds,
        "timings": {k: round(v, 2) for k, v in report.timings.items()},
        "driver_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "shards": len(report.shards),
        "global_info": _small(report.global_info),
    }


def _small(info: dict) -> dict:
    """The counts of the global steps' phases (lists of per-item results summed)."""
    out: dict = {}
    for step, phases in info.items():
        for phase, res in phases.items():
            items = res if isinstance(res, list) else [res]
            for item in items:
                for k, v in item.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        key = f"{step}:{phase}:{k}"
                        out[key] = round(out.get(key, 0) + v, 2)
    return out


# --------------------------------------------------------------------------- monitor (parent)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_KB
    except (OSError, ValueError, IndexError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _role(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "driver"
    if "ray::" in cmd or "default_worker.py" in cmd:
        return "worker"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "worker"
    if "ray" in cmd or "gcs_server" in cmd or "raylet" in cmd:
        return "ray-infra"
    return "other"


def measure(kind: str, workers: int, path: Path, task_bytes: int | None) -> dict:
    out = tempfile.mkdtemp(prefix="scale-bench-", dir=str(DATA))
    res_file = Path(out + ".json")
    cmd = [sys.executable, __file__, "--one", f"{kind}:{workers}", "--input", str(path), "--out", out]
    cmd += ["--result", str(res_file)] + (["--task-bytes", str(task_bytes)] if task_bytes else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak: dict[int, int] = {}
    roles: dict[int, str] = {}
    total_peak = 0
    while proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            rss = _rss_kb(pid)
            total += rss
            if rss > peak.get(pid, 0):
                peak[pid] = rss
            if pid not in roles:
                roles[pid] = _role(pid, proc.pid, _cmdline(pid))
        total_peak = max(total_peak, total)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        sys.exit(f"{kind}:{workers} failed with exit code {proc.returncode}")
    row = json.loads(res_file.read_text())
    res_file.unlink()
    workers_peak = [peak[p] for p in peak if roles.get(p) == "worker"]
    infra_peak = [peak[p] for p in peak if roles.get(p) == "ray-infra"]
    row.update(
        {
            "config": f"{kind}:{workers}",
            "executor": kind,
            "workers": workers,
            "wall_seconds": wall,
            "docs_per_s": row["rows_in"] / row["seconds"],
            "driver_peak_mb": max(peak.get(proc.pid, 0) / 1024, row["driver_maxrss_mb"]),
            "worker_peak_mb": max(workers_peak) / 1024 if workers_peak else None,
            "n_workers_seen": len(workers_peak),
            "ray_infra_peak_mb": sum(infra_peak) / 1024 if infra_peak else None,
            "tree_peak_mb": total_peak / 1024,
        }
    )
    return row


def table(rows: list[dict]) -> str:
    base = {r["rows_in"]: r["docs_per_s"] for r in rows if r["workers"] == 1 and r["executor"] == "local"}
    lines = [
        "| executor | workers | docs | seconds | docs/s | speed-up vs local:1 | driver peak MB | "
        "largest worker peak MB | sum of peaks (tree) MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = base.get(r["rows_in"])
        speedup = f"{r['docs_per_s'] / b:.2f}x" if b else "-"
        wpk = f"{r['worker_peak_mb']:,.0f}" if r["worker_peak_mb"] else "(in driver)"
        lines.append(
            f"| {r['executor']} | {r['workers']} | {r['rows_in']:,} | {r['seconds']:,.1f} | "
            f"{r['docs_per_s']:,.0f} | {speedup} | {r['driver_peak_mb']:,.0f} | {wpk} | {r['tree_peak_mb']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated executor:workers")
    ap.add_argument("--task-bytes", type=int, default=None, help="input.task_bytes (default: dataforge's)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--input", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, n = args.one.split(":")
        row = run_one(kind, int(n), args.input, args.out, args.task_bytes)
        Path(args.result).write_text(json.dumps(row))
        return
    path = corpus(args.docs)
    rows = []
    for config in args.configs.split(","):
        kind, n = config.split(":")
        print(f"running {config} on {path.name} ...", file=sys.stderr, flush=True)
        row = measure(kind, int(n), path, args.task_bytes)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
