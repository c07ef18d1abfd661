"""Polars strings to flat Arrow strings in place: same values as the copying conversion, and no
copy where the layout allows it."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dataforge.io.views import (
    flat_runs,
    frame_to_arrow,
    series_to_arrow,
    string_views,
    table_to_polars,
)
from dataforge.schemas import conform


def _values(rng: random.Random, n: int) -> list[str | None]:
    out: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append(None)
        elif r < 0.1:
            out.append("")
        elif r < 0.35:  # short: inlined in the view
            out.append("ab" * rng.randint(1, 6))
        else:
            out.append("lorem ü ipsum " * rng.randint(1, 30))
    return out


def _address(arr: pa.Array | pa.ChunkedArray) -> set[int]:
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    return {c.buffers()[2].address for c in chunks if c.buffers()[2] is not None}


def _flat(values: list[str | None]) -> pa.Array:
    return pa.array(values, pa.large_string())


def test_a_flat_column_comes_back_without_a_copy() -> None:
    values = _values(random.Random(1), 500)
    src = _flat(values)
    series = pl.Series("t", string_views(src))
    out = series_to_arrow(series)
    assert out.type == pa.large_string()
    assert out.to_pylist() == values
    assert _address(out) == {src.buffers()[2].address}  # the reader's buffer, not a copy
    (run,) = flat_runs(series.to_arrow(compat_level=pl.CompatLevel.newest()))  # type: ignore[misc]
    data, offsets = run.data, run.offsets
    assert data.ctypes.data == src.buffers()[2].address
    assert [bytes(data[offsets[i] : offsets[i + 1]]).decode() for i in range(3)] == [
        v or "" for v in values[:3]
    ]


def test_concatenated_parts_give_one_chunk_per_part_in_place() -> None:
    rng = random.Random(2)
    parts = [_values(rng, n) for n in (40, 1, 0, 300, 7)]
    srcs = [_flat(p) for p in parts]
    series = pl.concat([pl.Series("t", string_views(s)) for s in srcs], rechunk=True)
    out = series_to_arrow(series)
    assert out.to_pylist() == [v for p in parts for v in p]
    assert _address(out) <= {s.buffers()[2].address for s in srcs if s.buffers()[2] is not None}


@pytest.mark.parametrize("seed", range(40))
def test_any_slice_filter_or_rewrite_gives_the_same_values(seed: int) -> None:
    rng = random.Random(seed)
    parts = [_values(rng, rng.randint(0, 60)) for _ in range(rng.randint(1, 5))]
    series = pl.concat([pl.Series("t", string_views(_flat(p)), dtype=pl.String) for p in parts], rechunk=True)
    values = [v for p in parts for v in p]
    a, b = sorted(rng.randint(0, len(values)) for _ in range(2))
    cases = [(series.slice(a, b - a), values[a:b])]
    keep = [rng.random() < 0.6 for _ in values]
    cases.append((series.filter(pl.Series(keep)), [v for v, k in zip(values, keep, strict=True) if k]))
    cases.append((series.str.to_uppercase(), [None if v is None else v.upper() for v in values]))
    cases.append((pl.Series("t", values, dtype=pl.String), values))  # built by Polars itself
    for s, expected in cases:
        out = series_to_arrow(s)
        assert out.to_pylist() == expected
        assert out.type == pa.large_string()


def test_a_view_that_does_not_match_its_buffer_is_copied() -> None:
    # short values are inlined: if the buffer's bytes at their place differ, the layout is not flat
    src = _flat(["x" * 20, "abc", "y" * 20])
    views = src.cast(pa.string_view())
    raw = bytearray(views.buffers()[2].to_pybytes())
    raw[20:23] = b"zzz"  # where "abc" would sit
    forged = pa.Array.from_buffers(pa.string_view(), 3, [None, views.buffers()[1], pa.py_buffer(bytes(raw))])
    assert flat_runs(forged) is None
    assert series_to_arrow(pl.Series("t", forged)).to_pylist() == ["x" * 20, "abc", "y" * 20]


def test_repeated_values_and_all_inline_columns_fall_back() -> None:
    repeated = pl.repeat("some/long/path/to/a/file.jsonl", 1000, eager=True)
    assert flat_runs(repeated.to_arrow(compat_level=pl.CompatLevel.newest())) is None
    assert series_to_arrow(repeated).to_pylist() == ["some/long/path/to/a/file.jsonl"] * 1000
    short = pl.Series("t", string_views(_flat(["a", "bb", None, ""])))
    assert flat_runs(short.to_arrow(compat_level=pl.CompatLevel.newest())) is None
    assert series_to_arrow(short).to_pylist() == ["a", "bb", None, ""]


def test_binary_and_frames_round_trip() -> None:
    blobs = [b"\x00\x01" * 9, None, b"", b"\xff" * 3] * 50
    frame = pl.DataFrame(
        {
            "n": np.arange(200),
            "b": pl.Series("b", string_views(pa.array(blobs, pa.large_binary()))),
            "t": pl.Series("t", string_views(_flat(_values(random.Random(5), 200)))),
            "l": [["x" * 15, None]] * 200,
        }
    )
    table = frame_to_arrow(frame)
    assert table.column_names == ["n", "b", "t", "l"]
    assert table.equals(frame.to_arrow())
    schema = pa.schema([("t", pa.large_string()), ("n", pa.int64()), ("b", pa.large_binary())])
    assert conform(frame, schema).equals(conform(frame.to_arrow(), schema))
    back = table_to_polars(table)
    assert back.equals(frame)


def test_field_metadata_survives_both_ways() -> None:
    """Polars keeps an Enum's categories in the Arrow field's metadata: a rebuilt table must too."""
    frame = pl.DataFrame({"e": pl.Series(["a", "b"], dtype=pl.Enum(["a", "b"])), "t": ["x" * 20, "y" * 20]})
    plain = frame.to_arrow()
    ours = frame_to_arrow(frame)
    assert ours.schema.field("e").metadata == plain.schema.field("e").metadata
    assert ours.equals(plain)
    back = table_to_polars(plain)
    assert back.schema == frame.schema
    assert back.equals(frame)
