"""Rows/s and MB/s of the training loader against plain pyarrow reading the same shards.

Builds (once, cached) a curriculum output of real text per ``docs/curriculum.md``: stage 1 holds
the Reuters-21578 stories (``../shared/data/near_dup``) and the public-domain prose
(``../shared/data/pretraining_text``, books cut into ~4 KB documents), repeated until the text
reaches ``--target-mb``; shards of ``--shard-rows`` rows written with ``write_shard`` (zstd).
Or pass ``--path OUT`` to measure an existing curriculum output. Then, in the same process:

* ``pyarrow``: the baseline. Every shard with ``pa.memory_map`` + ``pa.ipc.open_file``, every
  record batch, touching the text column (its data buffer) - no shuffle, no checks;
* ``loader``: ``ShardDataset(shuffle=True, verify=False)`` in this process, same touch;
* ``loader+verify``: the same with ``verify=True`` (sha256 of every shard on first open);
* ``DataLoader x2``: ``TorchIterableDataset`` through ``torch.utils.data.DataLoader(num_workers=2)``
  (workers yield Arrow batches: ``format="arrow"``, sent through shared memory), in token mode
  (``seq_len=2048``: LongTensor batches, MB = text bytes that are targets) and with the default
  tensor/list conversion (``format="torch"``: the text column becomes Python lists).

MB are the uncompressed text bytes delivered. Usage::

    .venv/bin/python benchmarks/loader_bench.py                  # ~200 MB of text, best of 3
    .venv/bin/python benchmarks/loader_bench.py --target-mb 50 --repeat 1
    .venv/bin/python benchmarks/loader_bench.py --path OUT --stage 1

Prints a Markdown table; figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from dataforge.io.shards import read_manifest, write_json_atomic, write_shard
from dataforge.train import ByteTokenizer, ShardDataset
from dataforge.train import loader as loader_mod
from dataforge.train.tokenizer import tokenizer_spec

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "benchmarks" / "_data" / "loader_curriculum"

SCHEMA = pa.schema(
    [
        pa.field("id", pa.large_string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("meta", pa.large_string()),
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("source_line", pa.int64()),
        pa.field("stage", pa.int32(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("tokens", pa.int64(), nullable=False),
    ]
)


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def real_documents() -> list[tuple[str, str, str]]:
    """(source, source_file, text) of the shared real text (or sample_data when it is absent)."""
    docs: list[tuple[str, str, str]] = []
    reuters = SHARED / "near_dup" / "reuters21578_reut2-000_to_010.jsonl.gz"
    prose = SHARED / "pretraining_text" / "public_domain_prose.jsonl.gz"
    if reuters.is_file() and prose.is_file():
        for r in _jsonl(reuters):
            text = "\n".join(x for x in (r.get("title"), r.get("body")) if x)
            if text:
                docs.append(("reuters", reuters.name, text))
        for r in _jsonl(prose):
            chunk: list[str] = []
            size = 0
            for para in r["text"].split("\n\n"):
                chunk.append(para)
                size += len(para)
                if size >= 4000:
                    docs.append(("prose", prose.name, "\n\n".join(chunk)))
                    chunk, size = [], 0
            if chunk:
                docs.append(("prose", prose.name, "\n\n".join(chunk)))
    else:
        for name in ("news/reuters.jsonl.gz", "pretraining/prose.jsonl.gz"):
            for r in _jsonl(ROOT / "sample_data" / name):
                docs.append((name.split("/")[0], name, r["text"]))
    return docs


def build(out: Path, *, target_mb: float, shard_rows: int) -> Path:
    """A one-stage curriculum output of real text, repeated to ``target_mb`` MB."""
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        m = json.loads(manifest_path.read_text())
        if m.get("bench") == {"target_mb": target_mb, "shard_rows": shard_rows}:
            return out
    docs = real_documents()
    tok = ByteTokenizer()
    rows: list[tuple[str, str, str]] = []
    size = 0
    while size < target_mb * 1e6:
        for d in docs:
            rows.append(d)
            size += len(d[2].encode())
            if size >= target_mb * 1e6:
                break
    shards, first, tokens = [], 0, 0
    for j, start in enumerate(range(0, len(rows), shard_rows)):
        part = rows[start : start + shard_rows]
        n = len(part)
        texts = [p[2] for p in part]
        counts = tok.count(texts)
        table = pa.table(
            {
                "id": [f"bench-{start + i}" for i in range(n)],
                "text": texts,
                "meta": ["{}"] * n,
                "source_file": [p[1] for p in part],
                "source_row": list(range(start, start + n)),
                "source_line": [None] * n,
                "stage": [1] * n,
                "source": [p[0] for p in part],
                "tokens": counts,
            },
            schema=SCHEMA,
        )
        info = write_shard(table, out / "stage-1" / f"part-{j:05d}.arrow", relative_to=out)
        shards.append({**info.to_dict(), "tokens": sum(counts), "first_row": first})
        first += n
        tokens += sum(counts)
    stage = {
        "stage": 1,
        "name": "pretraining",
        "schema": {"name": "stage_document.v1", "fields": []},
        "rows": first,
        "tokens": tokens,
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
    }
    manifest = {
        "manifest_version": 1,
        "kind": "curriculum",
        "name": "loader-bench",
        "seed": 0,
        "tokenizer": tokenizer_spec(tok),
        "format": "arrow",
        "compression": "zstd",
        "stages": [stage],
        "shards": shards,
        "counts": {"rows": first, "tokens": tokens},
        "bench": {"target_mb": target_mb, "shard_rows": shard_rows},
    }
    write_json_atomic(manifest_path, manifest)
    return out


def _text_bytes(batch: pa.RecordBatch) -> int:
    """Touch the text column: the UTF-8 bytes of its values (reads the offsets buffer)."""
    return int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)


def plain_pyarrow(out: Path, stage: int) -> tuple[int, int]:
    manifest = read_manifest(out)
    entry = next(s for s in manifest["stages"] if int(s["stage"]) == stage)
    rows = nbytes = 0
    for shard in entry["shards"]:
        with pa.memory_map(str(out / shard["path"])) as src:
            reader = ipc.open_file(src)
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                rows += batch.num_rows
                nbytes += _text_bytes(batch)
    return rows, nbytes


def loader_single(out: Path, stage: int, *, verify: bool, batch_size: int) -> tuple[int, int]:
    loader_mod._VERIFIED.clear()
    ds = ShardDataset(out, stage=stage, seed=0, shuffle=True, batch_size=batch_size, verify=verify)
    rows = nbytes = 0
    for batch in ds:
        rows += batch.num_rows
        nbytes += _text_bytes(batch)
    return rows, nbytes


def loader_torch(out: Path, stage: int, *, format: str, batch_size: int) -> tuple[int, int]:
    from torch.utils.data import DataLoader

    from dataforge.train.torch import TorchIterableDataset

    ds = TorchIterableDataset(out, stage=stage, seed=0, batch_size=batch_size, verify=False, format=format)
    rows = nbytes = 0
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        if isinstance(batch, pa.RecordBatch):
            rows += batch.num_rows
            nbytes += _text_bytes(batch)
        else:
            texts = batch["text"]
            rows += len(texts)
            nbytes += sum(len(t.encode()) for t in texts)
    return rows, nbytes


def loader_torch_tokens(out: Path, stage: int, *, seq_len: int, batch_size: int) -> tuple[int, int]:
    from torch.utils.data import DataLoader

    from dataforge.train.torch import TorchIterableDataset

    ds = TorchIterableDataset(out, stage=stage, seed=0, batch_size=batch_size, verify=False, seq_len=seq_len)
    tokens = rows = 0
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        rows += batch.shape[0]
        tokens += int((batch[:, 1:] < 256).sum())  # text bytes as targets (not EOS, not padding)
    return rows, tokens


def best_of(fn: Callable[[], tuple[int, int]], repeat: int) -> tuple[float, int, int]:
    best = float("inf")
    rows = nbytes = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows, nbytes = fn()
        best = min(best, time.perf_counter() - t0)
    return best, rows, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, help="an existing curriculum output (default: build one)")
    ap.add_argument("--stage", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to build the benchmark output")
    ap.add_argument("--target-mb", type=float, default=200.0)
    ap.add_argument("--shard-rows", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()

    out = args.path or build(args.out, target_mb=args.target_mb, shard_rows=args.shard_rows)
    m = read_manifest(out)
    entry = next(s for s in m["stages"] if int(s["stage"]) == args.stage)
    print(
        f"{out}: stage {args.stage}, {entry['rows']:,} rows in {len(entry['shards'])} shards, "
        f"{sum(s['bytes'] for s in entry['shards']) / 1e6:.1f} MB on disk (zstd); best of {args.repeat}\n"
    )
    runs: list[tuple[str, Callable[[], tuple[int, int]]]] = [
        ("pyarrow (memory-mapped IPC, sequential)", lambda: plain_pyarrow(out, args.stage)),
        (
            "loader, shuffle, 1 process",
            lambda: loader_single(out, args.stage, verify=False, batch_size=args.batch_size),
        ),
        (
            "loader, shuffle, 1 process, verify sha256",
            lambda: loader_single(out, args.stage, verify=True, batch_size=args.batch_size),
        ),
    ]
    if not args.no_torch:
        runs += [
            (
                "DataLoader(num_workers=2), arrow batches",
                lambda: loader_torch(out, args.stage, format="arrow", batch_size=args.batch_size),
            ),
            (
                "DataLoader(num_workers=2), token batches LongTensor[16, 2049] (rows = sequences)",
                lambda: loader_torch_tokens(out, args.stage, seq_len=2048, batch_size=16),
            ),
            (
                "DataLoader(num_workers=2), tensors + lists",
                lambda: loader_torch(out, args.stage, format="torch", batch_size=args.batch_size),
            ),
        ]
    results = []
    for name, fn in runs:
        seconds, rows, nbytes = best_of(fn, args.repeat)
        results.append((name, seconds, rows, nbytes))
    base = results[0][1]
    print("| reader | rows | text MB | seconds | rows/s | MB/s | vs pyarrow |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, seconds, rows, nbytes in results:
        print(
            f"| {name} | {rows:,} | {nbytes / 1e6:,.1f} | {seconds:.2f} | {rows / seconds:,.0f} | "
            f"{nbytes / 1e6 / seconds:,.0f} | {base / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
