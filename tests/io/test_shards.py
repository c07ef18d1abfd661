"""Shard writer: atomic, deterministic, checksummed; manifest verification."""

from __future__ import annotations

import json
import os

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
