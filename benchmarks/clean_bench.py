"""Benchmark dataforge's quality filters against datatrove's on real text, in one process.

For each preset (gopher = quality + repetition, c4, fineweb) both implementations see the same
documents: Reuters-21578 bodies, 20 Newsgroups test posts and public-domain prose cut into
chunks of a few KB. dataforge runs its steps on Polars frames of ``--batch-size`` rows;
datatrove runs ``filter(Document(...))`` per document. The script prints throughput, the
keep/drop agreement and the disagreements grouped by (dataforge reason, datatrove reason).

Run from the repository root with the bench venv (``make bench`` installs it)::

    .venv-bench/bin/python benchmarks/clean_bench.py --show-diff 5
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from dataforge.registry import build_step
from dataforge.text.quality import PRESETS

DATATROVE_PREFIX = {"gopher": "", "gopher_rep": "gopher_rep_", "c4": "c4_", "fineweb": "fineweb_"}


# --- documents ----------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _chunks(text: str, target: int) -> Iterator[str]:
    """Cut a book into groups of whole paragraphs of about ``target`` characters."""
    group: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        if not para.strip():
            continue
        group.append(para)
        size += len(para) + 2
        if size >= target:
            yield "\n\n".join(group)
            group, size = [], 0
    if group:
        yield "\n\n".join(group)


def load_documents(data: Path, limit: int | None, chunk_chars: int) -> list[tuple[str, str]]:
    """(id, text) pairs from the three sources, at most ``limit`` per source."""
    sources: dict[str, list[tuple[str, str]]] = {"reuters": [], "20news": [], "prose": []}
    for i, rec in enumerate(_jsonl(data / "near_dup/reuters21578_reut2-000_to_010.jsonl.gz")):
        if rec.get("body") is not None:
            sources["reuters"].append((f"reuters:{rec.get('newid', i)}", rec["body"]))
    for i, rec in enumerate(_jsonl(data / "label_noise/20news_test.jsonl.gz")):
        if rec.get("text") is not None:
            sources["20news"].append((f"20news:{rec.get('idx', i)}", rec["text"]))
    for rec in _jsonl(data / "pretraining_text/public_domain_prose.jsonl.gz"):
        for j, chunk in enumerate(_chunks(rec["text"], chunk_chars)):
            sources["prose"].append((f"prose:{rec['id']}#{j}", chunk))
    docs: list[tuple[str, str]] = []
    for rows in sources.values():
        docs.extend(rows[:limit] if limit else rows)
    return docs


# --- the two implementations ----------------------------------------------------------------


def run_dataforge(preset: str, frame: pl.DataFrame, batch_size: int) -> tuple[list, list, list]:
    """Reason, detail and output text per document (the second step sees only survivors)."""
    steps = [build_step(name, opts) for name, opts in PRESETS[preset]]
    reasons: list = []
    details: list = []
    texts: list = []
    for start in range(0, frame.height, batch_size):
        batch = frame.slice(start, batch_size)
        reason = pl.Series("reason", [None] * batch.height, pl.Utf8)
        detail = pl.Series("detail", [None] * batch.height, pl.Utf8)
        text = batch["text"]
        for step in steps:
            alive = reason.is_null()
            idx = alive.arg_true()
            out = step.apply(batch.with_columns(text=text).filter(alive))
            if out.reason is not None:
                reason = reason.scatter(idx, out.reason)
                detail = detail.scatter(idx, out.detail)
            text = text.scatter(idx, out.frame["text"])
        reasons += reason.to_list()
        details += detail.to_list()
        texts += text.to_list()
    return reasons, details, texts


def datatrove_filters(preset: str) -> list[tuple[str, object]]:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher": [("gopher", GopherQualityFilter()), ("gopher_rep", GopherRepetitionFilter())],
        "c4": [("c4", C4QualityFilter())],
        "fineweb": [("fineweb", FineWebQualityFilter())],
    }[preset]


def run_datatrove(preset: str, docs: list[tuple[str, str]]) -> tuple[list, list]:
    """Reason (prefixed like dataforge's) and output text per document."""
    from datatrove.data import Document

    filters = datatrove_filters(preset)
    reasons: list = []
    texts: list = []
    for doc_id, text in docs:
        doc = Document(text=text, id=doc_id)
        reason = None
        for family, filt in filters:
            try:
                result = filt.filter(doc)
            except Exception as exc:  # datatrove divides by zero on some degenerate documents
                reason = f"error:{type(exc).__name__}"
                break
            keep, why = result if isinstance(result, tuple) else (result, None)
            if not keep:
                reason = DATATROVE_PREFIX[family] + (why or "dropped")
                break
        reasons.append(reason)
        texts.append(doc.text)
    return reasons, texts


# --- reporting ----------------------------------------------------------------------------------


@dataclass
class Result:
    preset: str
    docs: int
    mb: float
    df_seconds: float
    dt_seconds: float
    agree: int
    same_reason: int
    pairs: collections.Counter = field(default_factory=collections.Counter)
    by_source: collections.Counter = field(default_factory=collections.Counter)
    source_docs: collections.Counter = field(default_factory=collections.Counter)
    text_same: int = 0
    text_both_kept: int = 0
    examples: list = field(default_factory=list)


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def compare(preset: str, docs: list[tuple[str, str]], args: argparse.Namespace) -> Result:
    frame = pl.DataFrame({"id": [d[0] for d in docs], "text": [d[1] for d in docs]})
    mb = sum(len(t.encode("utf-8")) for _, t in docs) / 1e6
    run_dataforge(preset, frame.head(100), args.batch_size)  # warm-up (regex compilation)
    df_s, (df_reason, df_detail, df_text) = best_of(
        args.repeat, lambda: run_dataforge(preset, frame, args.batch_size)
    )
    run_datatrove(preset, docs[:20])  # warm-up (spaCy load)
    dt_s, (dt_reason, dt_text) = best_of(args.datatrove_repeat, lambda: run_datatrove(preset, docs))
    res = Result(preset, len(docs), mb, df_s, dt_s, 0, 0)
    for i, (doc_id, text) in enumerate(docs):
        a, b = df_reason[i], dt_reason[i]
        source = doc_id.split(":", 1)[0]
        res.source_docs[source] += 1
        res.by_source[source] += (a is None) != (b is None)
        res.agree += (a is None) == (b is None)
        res.same_reason += a == b
        if a != b:
            res.pairs[(a, b)] += 1
            if len(res.examples) < args.show_diff and (a is None) != (b is None):
                res.examples.append((doc_id, a, df_detail[i], b, text))
        if a is None and b is None:
            res.text_both_kept += 1
            res.text_same += df_text[i] == dt_text[i]
    return res


def print_report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"# clean filters: dataforge vs datatrove ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"python {platform.python_version()}, polars {pl.__version__})")  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"cpus: {os.cpu_count()}, load average before the run: {args.load_before}, after: {load}")
    print()
    print("| preset | docs | MB | dataforge docs/s | dataforge MB/s | datatrove docs/s | datatrove MB/s "
          "| speed-up | keep/drop agree | same reason |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.preset} | {r.docs} | {r.mb:.1f} | {r.docs / r.df_seconds:,.0f} | {r.mb / r.df_seconds:.2f} "
            f"| {r.docs / r.dt_seconds:,.0f} | {r.mb / r.dt_seconds:.2f} | {r.dt_seconds / r.df_seconds:.1f}x "
            f"| {100 * r.agree / r.docs:.2f} % | {100 * r.same_reason / r.docs:.2f} % |"
        )
    for r in results:
        print()
        print(
            f"## {r.preset}: {r.docs - r.agree} keep/drop disagreements, {r.docs - r.same_reason} reason differences"
        )
        per_source = ", ".join(f"{src} {r.by_source[src]} of {n}" for src, n in r.source_docs.items())
        print(f"keep/drop disagreements by source: {per_source}")
        if r.preset == "c4":
            print(f"rewritten text identical for {r.text_same} of {r.text_both_kept} documents kept by both")
        print()
        print("| dataforge reason | datatrove reason | docs |")
        print("|---|---|---:|")
        for (a, b), count in r.pairs.most_common(args.top_pairs):
            print(f"| {a or 'keep'} | {b or 'keep'} | {count} |")
        for doc_id, a, detail, b, text in r.examples:
            excerpt = text[: args.excerpt_chars].replace("\n", "\\n")
            print(f"\n- {doc_id}: dataforge={a or 'keep'} ({detail or '-'}), datatrove={b or 'keep'}")
            print(f"  {excerpt!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path("/work/shared/data"), help="folder of the data sets"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many documents per source")
    parser.add_argument("--repeat", type=int, default=3, help="time dataforge this many times, keep the best")
    parser.add_argument("--datatrove-repeat", type=int, default=1, help="the same for datatrove (slow)")
    parser.add_argument("--presets", default="gopher,c4,fineweb", help="comma-separated presets to run")
    parser.add_argument("--batch-size", type=int, default=20_000, help="dataforge rows per batch")
    parser.add_argument("--chunk-chars", type=int, default=4000, help="target size of a prose chunk")
    parser.add_argument(
        "--show-diff", type=int, default=0, metavar="N", help="print N keep/drop disagreements per preset"
    )
    parser.add_argument("--excerpt-chars", type=int, default=240, help="characters of each example to print")
    parser.add_argument("--top-pairs", type=int, default=15, help="reason pairs to list per preset")
    args = parser.parse_args(argv)

    args.load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    docs = load_documents(args.data, args.limit, args.chunk_chars)
    results = []
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        if preset not in PRESETS or not PRESETS[preset]:
            parser.error(f"unknown preset {preset!r}; valid: gopher, c4, fineweb")
        results.append(compare(preset, docs, args))
    print_report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
