"""``dedup.exact``: groups decided per hash partition, merged into one sorted decision table."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataforge.config import OutputSpec, Pipeline
from dataforge.dedup import exact
from dataforge.errors import ConfigError
from dataforge.io.inputs import InputSpec
from dataforge.registry import build_step
from dataforge.runner import run_pipeline

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "sample_data"


def _digests(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*.arrow") if p.parent.name in ("data", "dropped"))
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, int]:
    """Real Reuters stories in 3 files with exact copies (changed case and spacing, which the
    default normalization ignores) within and across files, and a reference file holding copies
    of a few stories. Returns (input folder, reference file, copies planted)."""
    d = tmp_path_factory.mktemp("exact-in")
    with gzip.open(SAMPLE / "news" / "reuters.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh][:600]
    copies = []
    for i in range(0, 600, 7):
        src = rows[(i * 13) % 600]
        copies.append({"id": f"copy{i}", "text": "  " + src["text"].upper().replace(" ", "   ")})
    docs = rows + copies
    order = np.random.default_rng(5).permutation(len(docs))
    docs = [docs[i] for i in order]
    for k in range(3):
        part = docs[k::3]
        (d / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    ref = tmp_path_factory.mktemp("exact-ref") / "release.jsonl"
    ref.write_text(
        "".join(json.dumps({"id": f"old{i}", "text": rows[i]["text"]}) + "\n" for i in (4, 40, 400))
    )
    return d, ref, len(copies)


def _run(inputs: Path, out: Path, **options):
    pipe = Pipeline(
        name="exact",
        input=InputSpec(paths=(str(inputs),), task_bytes=150_000),
        output=OutputSpec(path=str(out), shard_rows=250),
        steps=[build_step("dedup.exact", options)],
        max_reject_rate=None,
        batch_rows=64,
    )
    return run_pipeline(pipe, force=True)


@pytest.mark.parametrize("keep", ["first", "last"])
def test_hash_partitions_change_no_byte(corpus, tmp_path, monkeypatch, keep):
    """1, 5 and 64 partitions give the same shards; finalize merges in small pieces (MERGE_ROWS=5)
    that straddle tasks, and the ledger adds up."""
    inputs, ref, _ = corpus
    monkeypatch.setattr(exact, "MERGE_ROWS", 5)
    runs = {}
    for parts in (1, 5, 64):
        out = tmp_path / f"p{parts}"
        report = _run(inputs, out, hash_partitions=parts, keep=keep, against=[str(ref)])
        info = report.global_info["dedup.exact"]
        decide = info["decide"] if parts > 1 else [info["decide"]]
        assert len(decide) == parts
        assert info["finalize"]["dropped"] == sum(d["dropped"] for d in decide)
        assert info["finalize"]["rows"] == sum(d["rows"] for d in decide)
        counts = {k: v for k, v in info["finalize"].items() if k != "seconds"}
        runs[parts] = (_digests(out), counts, report.dropped, report.kept)
        assert report.kept + report.dropped + report.rejected == report.rows_in
    assert len(runs[1][0]) > 3
    assert runs[1] == runs[5] == runs[64]
    assert runs[1][1]["reference_duplicates"] >= 3


def test_every_copy_is_dropped_and_points_at_its_kept_row(corpus, tmp_path):
    inputs, _, planted = corpus
    _run(inputs, tmp_path / "out", hash_partitions=7)
    data = pl.read_ipc(tmp_path / "out" / "data" / "*.arrow")
    dropped = pl.read_ipc(tmp_path / "out" / "dropped" / "*.arrow")
    norm = pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars().str.to_lowercase()
    assert data.select(norm).is_unique().all()  # no two kept rows share normalized content
    assert dropped["drop_reason"].unique().to_list() == ["exact_duplicate"]
    # the planted copies, plus originals that the sampling picked twice
    assert dropped.height >= planted * 0.8
    kept = dict(zip(data.select(norm).to_series().to_list(), data["id"].to_list()))
    assert dropped.select(norm).to_series().map_elements(kept.get, return_dtype=pl.Utf8).to_list() == (
        dropped["dup_of"].to_list()
    )


def _sorted_files(tmp_path: Path, n_files: int, rows: int, seed: int) -> tuple[list[str], pl.DataFrame]:
    rng = np.random.default_rng(seed)
    task = np.sort(rng.integers(0, 40, rows)).astype(np.int32)
    ords = np.arange(rows, dtype=np.int64)  # unique
    frame = pl.DataFrame({"_task": task, "_ord": ords, "v": rng.integers(0, 1000, rows)})
    frame = frame.sort("_task", "_ord")
    which = rng.integers(0, n_files, rows)
    files = []
    for k in range(n_files):
        path = str(tmp_path / f"d{k}.arrow")
        part = frame.filter(pl.Series(which == k))
        table = part.to_arrow()
        with pa.ipc.new_file(path, table.schema) as w:
            for batch in table.to_batches(max_chunksize=int(rng.integers(1, 30))):
                w.write_batch(batch)
        files.append(path)
    return files, frame


@pytest.mark.parametrize("seed", range(4))
def test_merge_sorted_gives_every_row_once_in_order_in_bounded_pieces(tmp_path, monkeypatch, seed):
    monkeypatch.setattr(exact, "MERGE_ROWS", 40)
    files, frame = _sorted_files(tmp_path, 1 + seed * 3, 2_000, seed)
    pieces = list(exact._merge_sorted(files))
    assert len(pieces) > 5
    assert pl.concat(pieces).equals(frame)
    # a piece holds whole tasks (a task is never split across two pieces)
    seen: set[int] = set()
    for p in pieces:
        tasks = set(p["_task"].unique().to_list())
        assert not tasks & seen
        seen |= tasks


def test_merge_sorted_of_empty_partitions_gives_one_empty_frame(tmp_path):
    schema = pa.schema([("_task", pa.int32()), ("_ord", pa.int64())])
    files = []
    for k in range(3):
        path = str(tmp_path / f"e{k}.arrow")
        with pa.ipc.new_file(path, schema):
            pass
        files.append(path)
    (piece,) = list(exact._merge_sorted(files))
    assert piece.height == 0 and piece.columns == ["_task", "_ord"]


@pytest.mark.parametrize("bad", [0, 257, "8", True])
def test_bad_hash_partitions_name_the_option(bad):
    with pytest.raises(ConfigError, match="hash_partitions"):
        build_step("dedup.exact", {"hash_partitions": bad})


WHITESPACE = [
    *"\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000",
    *(chr(c) for c in range(0x2000, 0x200B)),
]
NOT_WHITESPACE = ["\u200b", "\ufeff", "\u180e", "\x1c", "\x1f", "a", "É", "ß", "İ", "x y"]


def test_whitespace_runs_collapse_exactly_like_the_plain_regex():
    """Content hashes are kept in outputs and compared across releases (``against``), so the
    normalization must never change: the faster pattern gives exactly what ``\\s+`` gives, on
    every Unicode whitespace character, look-alikes that are not whitespace, and real text."""
    import random

    rng = random.Random(7)
    samples = [
        "".join(
            rng.choice(NOT_WHITESPACE) + "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(0, 3)))
            for _ in range(rng.randint(0, 12))
        )
        for _ in range(20_000)
    ]
    with gzip.open(SAMPLE / "news" / "reuters.jsonl.gz", "rt") as fh:
        samples += [json.loads(line)["text"] for line in fh][:2_000]
    frame = pl.DataFrame({"text": samples})
    plain = pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars()
    for mode, expected in (("whitespace", plain), ("lower", plain.str.to_lowercase())):
        got = frame.select(exact._normalized(pl.col("text"), mode)).to_series()
        assert got.equals(frame.select(expected).to_series())
    # and the hash of a known text is pinned (xxh3-128 of "a b c", after "lower")
    h = exact.content_hashes(pl.DataFrame({"text": ["  A\u3000b\n\t c \u00a0"]}), "lower")
    import xxhash

    assert h["content_hash"][0] == f"{xxhash.xxh3_128_intdigest(b'a b c'):032x}"
