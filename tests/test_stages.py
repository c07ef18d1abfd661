"""Shard planning (``plan_pieces``) and the row sizes it cuts by (``row_bytes``)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from dataforge.errors import OutputError
from dataforge.stages import SRC_ROW, THIN_BASE, THIN_COLUMNS, plan_pieces, row_bytes


def greedy_reference(sizes: list[int], shard_rows: int, shard_bytes: int | None) -> list[int]:
    """Shard lengths, one row at a time: a row joins the open shard if the shard has fewer than
    ``shard_rows`` rows and either is empty or stays within ``shard_bytes`` with it."""
    lengths: list[int] = []
    rows = used = 0
    for size in sizes:
        fits = rows < shard_rows and (shard_bytes is None or rows == 0 or used + size <= shard_bytes)
        if not fits:
            lengths.append(rows)
            rows = used = 0
        rows += 1
        used += size
    if rows:
        lengths.append(rows)
    return lengths


def shard_lengths(pieces: list[list[tuple[str, int, int]]]) -> list[int]:
    return [sum(n for _, _, n in shard) for shard in pieces]


def split_into_files(sizes: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    k = min(int(rng.integers(0, 6)), sizes.shape[0] - 1)
    cuts = np.sort(rng.choice(np.arange(1, sizes.shape[0]), size=k, replace=False))
    return {f"f{i}": part for i, part in enumerate(np.split(sizes, cuts))}


@pytest.mark.parametrize("seed", range(40))
def test_plan_equals_row_by_row_greedy_for_any_file_split(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    sizes = rng.integers(0, 200, n)
    sizes[rng.random(n) < 0.03] = 5_000  # rows bigger than any shard_bytes below
    shard_rows = int(rng.integers(1, 60))
    shard_bytes = int(rng.integers(1, 3_000))
    files = split_into_files(sizes, rng)
    counts = [(name, part.shape[0]) for name, part in files.items()]
    pieces = plan_pieces(counts, shard_rows, shard_bytes=shard_bytes, sizes=files.__getitem__)
    assert shard_lengths(pieces) == greedy_reference(sizes.tolist(), shard_rows, shard_bytes)
    # every row once, in order, and each piece within its file
    flat = [(name, off + k) for shard in pieces for name, off, take in shard for k in range(take)]
    assert flat == [(name, k) for name, part in files.items() for k in range(part.shape[0])]
    for shard in pieces:
        total = sum(int(files[name][off : off + take].sum()) for name, off, take in shard)
        assert total <= shard_bytes or shard_lengths([shard]) == [1]


def test_plan_without_shard_bytes_cuts_exact_row_counts():
    counts = [("a", 250), ("b", 0), ("c", 130), ("d", 20)]
    pieces = plan_pieces([c for c in counts if c[1]], 100)
    assert shard_lengths(pieces) == [100, 100, 100, 100]
    assert pieces[2] == [("a", 200, 50), ("c", 0, 50)]


def test_plan_puts_an_oversized_row_alone_and_keeps_going():
    sizes = {"a": np.array([10, 10, 500, 10, 10, 10])}
    pieces = plan_pieces([("a", 6)], 100, shard_bytes=25, sizes=sizes.__getitem__)
    assert pieces == [[("a", 0, 2)], [("a", 2, 1)], [("a", 3, 2)], [("a", 5, 1)]]


def test_plan_refuses_sizes_that_do_not_match_the_rows():
    with pytest.raises(OutputError, match="3 row sizes for 4 rows"):
        plan_pieces([("a", 4)], 10, shard_bytes=5, sizes=lambda _: np.ones(3, np.int64))


# --------------------------------------------------------------------------- row sizes


def write(path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_row_bytes_counts_values_of_every_column_type(tmp_path):
    table = pa.table(
        {
            "text": pa.array(["héllo", None, "", "abc"], pa.large_string()),
            "raw": pa.array([b"\x00\x01", b"", None, b"xyz"], pa.binary()),
            "n": pa.array([1, None, 3, 4], pa.int64()),
            "score": pa.array([0.5, 1.0, None, 2.0], pa.float32()),
            "flag": pa.array([True, False, None, True]),
            "tags": pa.array([["ab", "c"], None, [], ["defg"]], pa.list_(pa.string())),
            "pair": pa.array(
                [{"k": "xy", "v": 1}, {"k": None, "v": 2}, None, {"k": "z", "v": 3}],
                pa.struct([("k", pa.string()), ("v", pa.int16())]),
            ),
        }
    )
    path = tmp_path / "t.arrow"
    write(path, table)
    # text + raw + n (8) + score (4) + flag (0) + tags + pair (k bytes + 2)
    expected = [
        6 + 2 + 8 + 4 + 0 + 3 + 4,
        0 + 0 + 8 + 4 + 0 + 0 + 2,
        0 + 0 + 8 + 4 + 0 + 0 + 2,
        3 + 3 + 8 + 4 + 4 + 3,
    ]
    assert row_bytes(path).tolist() == expected
    # as a shard of another schema: its widths, and its columns the file lacks
    shard = pa.schema(
        [("text", pa.large_string()), ("tags", pa.list_(pa.string())), ("n", pa.int32()), ("x", pa.int16())]
    )
    assert row_bytes(path, schema=shard).tolist() == [9 + 6, 0 + 6, 0 + 6, 7 + 6]
    # a null slot that still spans bytes (a value masked out: Arrow allows it) counts 0
    masked = pa.LargeStringArray.from_buffers(
        3,
        pa.py_buffer(np.array([0, 4, 9, 12], np.int64).tobytes()),
        pa.py_buffer(b"abcdefghijkl"),
        pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes()),
    )
    assert masked.to_pylist() == ["abcd", None, "jkl"]
    write(tmp_path / "masked.arrow", pa.table({"dup_of": masked}))
    assert row_bytes(tmp_path / "masked.arrow").tolist() == [4, 0, 3]
    # sliced and multi-chunk columns count only their own rows
    write(path, pa.concat_tables([table.slice(1, 2), table.slice(0, 1), table.slice(3)]))
    assert row_bytes(path).tolist() == [expected[1], expected[2], expected[0], expected[3]]


def test_row_bytes_of_a_thin_file_adds_the_previous_stage_columns(tmp_path):
    base = pa.table({"text": pa.array(["a" * 10, "b" * 20, "c" * 30, "d" * 40], pa.large_string())})
    write(tmp_path / "base.arrow", base)
    thin = pa.table({SRC_ROW: pa.array([1, 3], pa.int64()), "cluster_id": pa.array([7, 9], pa.int64())})
    thin = thin.replace_schema_metadata(
        {THIN_BASE: "base.arrow", THIN_COLUMNS: json.dumps(["text", "cluster_id"])}
    )
    write(tmp_path / "thin.arrow", thin)
    assert row_bytes(tmp_path / "thin.arrow").tolist() == [20 + 8, 40 + 8]
    assert row_bytes(tmp_path / "thin.arrow", schema=pa.schema([("text", pa.string())])).tolist() == [20, 40]
    # output names are those of OUTPUT_RENAME
    write(tmp_path / "src.arrow", pa.table({"_source": ["a.jsonl", "bb.jsonl"], "_row": [0, 1]}))
    out = pa.schema([("source_file", pa.large_string()), ("source_row", pa.int64())])
    assert row_bytes(tmp_path / "src.arrow", schema=out).tolist() == [7 + 8, 8 + 8]
