"""MinHash normalization: the byte kernel's transcoding against Polars' Unicode path.

``dataforge.dedup.minhash.normalized_buffers`` normalizes ASCII documents with one byte table.
Documents with non-ASCII characters used to go, all of them, through Polars' Unicode functions
(lowercase, NFKD, accents removed, lowercase, Unicode punctuation -> space) and then the byte
table; now the byte kernel transcodes every code point whose normalization does not depend on its
neighbours (``CodePoints``), and only documents holding another character take the Polars path.

This script measures both on the same documents, in one process:

- ``byte path``: ``normalized_buffers`` as it is;
- ``Polars path`` (the baseline, the previous code): every non-ASCII document through
  ``_unicode_fix``, then the byte table;

on three variants of the real benchmark corpus (``benchmarks/make_corpus.py``): as it is (1 % of
documents hold non-ASCII text), with typographic quotes and dashes in half the documents, and with
accented letters (``e`` -> ``é`` three times per document, and a few other Latin-1 letters) in
every document. It also times ``signatures`` (normalize + shingle + hash + permute) on each, and
checks that both paths give the same bytes.

Usage::

    .venv/bin/python benchmarks/normalize_bench.py benchmarks/_data/corpus-100000.jsonl --docs 40000
"""

from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np
import polars as pl

from dataforge.dedup import _kernels as K
from dataforge.dedup import minhash as M


def polars_path(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The previous ``normalized_buffers``: every non-ASCII document through Polars."""
    data, offsets = M._buffers(texts)
    non_ascii = K.non_ascii_rows(data, offsets)
    if non_ascii.any():
        idx = np.flatnonzero(non_ascii)
        fixed = M._unicode_fix(texts.gather(idx))
        data, offsets = M._buffers(texts.clone().scatter(idx, fixed))
    return M.canonical_bytes(data, offsets, M._TABLE)


def variants(texts: list[str]) -> dict[str, list[str]]:
    curly = [
        t.replace("'", "\u2019").replace(' "', " \u201c").replace('" ', "\u201d ").replace(" - ", " \u2014 ")
        if i % 2
        else t
        for i, t in enumerate(texts)
    ]
    accented = [t.replace("e", "é", 3).replace("a", "à", 1).replace("c", "ç", 1) for t in texts]
    return {"as is": texts, "curly quotes (half)": curly, "accented (all)": accented}


def best(fn, chunks: list[pl.Series], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for c in chunks:
            fn(c)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", help="JSONL with a text field (benchmarks/make_corpus.py)")
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--chunk", type=int, default=4_000, help="documents per call (signatures uses ~8 MB)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    texts = pl.read_ndjson(args.corpus).head(args.docs)["text"].to_list()
    params = M.MinHashParams()
    rows = []
    for name, docs in variants(texts).items():
        series = pl.Series(docs, dtype=pl.Utf8)
        chunks = [series.slice(s, args.chunk) for s in range(0, len(series), args.chunk)]
        mb = sum(len(t.encode()) for t in docs) / 1e6
        non_ascii = sum(not t.isascii() for t in docs)
        # same bytes from both paths (and warm-up: kernels, code point pages)
        ours = hashlib.sha256()
        theirs = hashlib.sha256()
        for c in chunks:
            for h, (d, o) in ((ours, M.normalized_buffers(c)), (theirs, polars_path(c))):
                h.update(d.tobytes())
                h.update(o.tobytes())
        same = ours.digest() == theirs.digest()
        M.signatures(chunks[0], params)
        t_byte = best(M.normalized_buffers, chunks, args.repeat)
        t_polars = best(polars_path, chunks, args.repeat)
        t_sig = best(lambda c: M.signatures(c, params), chunks, args.repeat)
        rows.append((name, len(docs), mb, non_ascii, t_polars, t_byte, t_sig, same))
    print(f"{args.docs:,} documents of {args.corpus}, chunks of {args.chunk:,}, best of {args.repeat}\n")
    print(
        "| corpus | docs | MB | non-ASCII docs | Polars path s (baseline) | byte path s | speed-up"
        " | signatures s (docs/s) | same bytes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, n, mb, na, tp, tb, ts, same in rows:
        print(
            f"| {name} | {n:,} | {mb:.1f} | {na:,} | {tp:.3f} | {tb:.3f} | {tp / tb:.1f}x"
            f" | {ts:.3f} ({n / ts:,.0f}) | {'yes' if same else 'NO'} |"
        )


if __name__ == "__main__":
    main()
