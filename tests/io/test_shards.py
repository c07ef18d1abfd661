"""Shard writer: atomic, deterministic, checksummed; manifest verification."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pyarrow as pa
import pytest

from dataforge.errors import ConfigError, DataError, OutputError
from dataforge.io.shards import (
    atomic_path,
    read_manifest,
    read_shard,
    sha256_file,
    verify_shards,
    write_json_atomic,
    write_shard,
)


def table(n: int = 10) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(n)], "text": [f"text {i} " * 50 for i in range(n)]})


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_roundtrip_and_checksum(tmp_path, fmt, compression):
    if fmt == "parquet" and compression == "lz4":
        compression = "zstd"
    path = tmp_path / f"part-00000.{fmt}"
    info = write_shard(table(), path, format=fmt, compression=compression, relative_to=tmp_path)
    assert info.path == f"part-00000.{fmt}"
    assert info.rows == 10
    assert info.bytes == path.stat().st_size
    assert info.sha256 == sha256_file(path)
    assert read_shard(path).equals(table())


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_same_rows_same_bytes_regardless_of_chunking(tmp_path, fmt):
    t = table(9000)
    chunked = pa.concat_tables([t.slice(0, 1), t.slice(1, 4000), t.slice(4001)])
    a = write_shard(t, tmp_path / f"a.{fmt}", format=fmt)
    b = write_shard(chunked, tmp_path / f"b.{fmt}", format=fmt)
    assert a.sha256 == b.sha256


def test_compressed_arrow_is_smaller(tmp_path):
    a = write_shard(table(2000), tmp_path / "z.arrow", compression="zstd")
    b = write_shard(table(2000), tmp_path / "n.arrow", compression="none")
    assert a.bytes < b.bytes / 3


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="unknown output format 'csv'"):
        write_shard(table(), tmp_path / "x", format="csv")
    with pytest.raises(ConfigError, match="unknown compression 'gzip'"):
        write_shard(table(), tmp_path / "x", compression="gzip")


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")  # fails for root too, unlike chmod
    target = blocker / "x.arrow"
    with pytest.raises(OutputError, match="cannot write shard"):
        write_shard(table(), target)


def test_verify_detects_corruption_truncation_and_missing(tmp_path):
    infos = [
        write_shard(table(), tmp_path / f"data/part-{i:05d}.arrow", relative_to=tmp_path) for i in range(3)
    ]
    write_json_atomic(tmp_path / "manifest.json", {"shards": [i.to_dict() for i in infos]})
    assert verify_shards(tmp_path) == []
    p0 = tmp_path / infos[0].path
    data = bytearray(p0.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p0.write_bytes(bytes(data))
    p1 = tmp_path / infos[1].path
    p1.write_bytes(p1.read_bytes()[:-10])
    (tmp_path / infos[2].path).unlink()
    problems = verify_shards(tmp_path)
    assert len(problems) == 3
    assert "sha256" in problems[0]
    assert "bytes" in problems[1]
    assert "missing" in problems[2]


def test_manifest_missing_or_corrupt(tmp_path):
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{truncated")
    with pytest.raises(DataError, match="manifest is corrupt"):
        read_manifest(tmp_path)


def test_json_is_stable(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    write_json_atomic(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": [1, 2], "b": 1}


def _columns(rng: random.Random, n: int) -> dict[str, pa.Array]:
    """``n`` random rows of every kind of column a shard holds."""
    words = ["a", "bb", "ccc", "dddd", "été", "字", "🙂", ""]

    def text() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 9)))

    strings = [text() for _ in range(n)]
    masked = [text() for _ in range(n)]
    valid = [rng.random() < 0.7 for _ in range(n)]
    # a string column whose null slots still span bytes (as a masked ``if_else`` leaves them)
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = np.cumsum([len(s.encode()) for s in masked])
    data = "".join(masked).encode()
    bitmap = pa.array(valid, pa.bool_()).buffers()[1]
    null_slots = pa.Array.from_buffers(
        pa.large_string(),
        n,
        [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)],
        null_count=valid.count(False),
    )
    return {
        "s": pa.array(strings, pa.string()),
        "ls": pa.array(strings, pa.large_string()),
        "lb": pa.array([s.encode() for s in strings], pa.large_binary()),
        "sv": pa.array(strings, pa.string_view()),
        "nullable": pa.array([s if v else None for s, v in zip(strings, valid)], pa.large_string()),
        "null_slots": null_slots,
        "i64": pa.array([rng.randint(-(2**40), 2**40) for _ in range(n)], pa.int64()),
        "i16": pa.array([rng.randint(-100, 100) for _ in range(n)], pa.int16()),
        "f32": pa.array([rng.random() for _ in range(n)], pa.float32()),
        "f64n": pa.array([rng.random() if v else None for v in valid], pa.float64()),
        "b": pa.array([rng.random() < 0.5 for _ in range(n)], pa.bool_()),
        "lst": pa.array([[rng.randint(0, 9)] * rng.randint(0, 3) for _ in range(n)], pa.list_(pa.int32())),
    }


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("seed", range(6))
def test_shard_bytes_depend_only_on_the_rows(tmp_path, seed, compression):
    """The rows cut out of differently sized and filled source arrays, in different chunkings, give
    the bytes of the same rows built fresh (the writer would otherwise pick up bytes after a slice's
    end, of null slots, or of shared view buffers)."""
    rng = random.Random(seed)
    n = rng.randint(1, 300)
    rows = pa.table(_columns(rng, n))
    fresh = pa.table(
        {c: pa.array(rows.column(c).to_pylist(), rows.schema.field(c).type) for c in rows.column_names}
    )
    assert fresh.to_pylist() == rows.to_pylist()
    digests = {write_shard(fresh, tmp_path / "fresh.arrow", compression=compression).sha256}
    for k in range(3):
        before, after = (
            pa.table(_columns(rng, rng.randint(0, 40))),
            pa.table(_columns(rng, rng.randint(1, 40))),
        )
        source = pa.concat_tables([before, rows, after]).combine_chunks()
        cut = source.slice(before.num_rows, n)
        if k == 2 and n > 2:  # several chunks, split inside the rows
            at = rng.randint(1, n - 1)
            cut = pa.concat_tables(
                [source.slice(before.num_rows, at), source.slice(before.num_rows + at, n - at)]
            )
        assert cut.to_pylist() == rows.to_pylist()
        digests.add(write_shard(cut, tmp_path / f"cut{k}.arrow", compression=compression).sha256)
    assert len(digests) == 1
    assert read_shard(tmp_path / "cut0.arrow").equals(fresh)
