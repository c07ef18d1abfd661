"""Polars string columns to flat Arrow strings without copying the text, where the layout allows.

Polars holds strings as views (Arrow ``string_view``: 16 bytes per value, with the length and
either the bytes of a short value inline or a buffer index and offset). ``Series.to_arrow()``
rebuilds a flat ``large_string`` column from them, a copy of every byte of text (about 1 GB/s
here: 0.2 s per 100k documents of 2 KB, paid again at each conversion). A column Polars made from
a flat Arrow column (what the readers produce) still points into that one buffer, in order; then
the flat offsets follow from the views and the buffer itself serves the result.

:func:`flat_runs` checks that layout run by run (a concatenation of flat columns has one run
per part, each in its own buffer): every long value at the offset the lengths before it imply,
every short, inlined value equal to the buffer's bytes at its offset. It returns ``None`` when the
layout does not hold (values built by a string operation, a filtered or gathered column, one value
repeated): callers then fall back to the copying conversion. The result is the same either way,
only where its bytes live differs (a column read in place keeps the buffer it lies in alive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

_INLINE = 12  # a view holds values of up to 12 bytes itself


@dataclass(frozen=True)
class FlatRun:
    """Rows ``start:stop`` of a view array lie in order in one buffer: row ``start + i`` is
    ``data[offsets[i]:offsets[i + 1]]`` (a null as an empty value); ``buffer`` is that buffer."""

    start: int
    stop: int
    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, absolute into data, stop - start + 1 of them
    buffer: pa.Buffer


_MAX_RUNS = 64  # more runs than this: copy instead
_GAP_TRIES = 64  # short values between two runs: how many ways of splitting them are tried


def flat_runs(arr: pa.Array) -> list[FlatRun] | None:
    """The ``string_view``/``binary_view`` array ``arr`` as runs of rows that each lie in order in
    one of its buffers (a Polars concatenation of flat columns has one run per part), or ``None``
    when its values are not laid out so (then copy).

    A long value (over 12 bytes) names its buffer and offset; a run is a stretch of rows whose
    long values sit where the lengths before them put them. Short values are inlined in the view
    and sit in the buffer too when the column came from a flat one: their bytes are compared with
    the buffer's, and short values between two runs go to whichever split of them matches.
    """
    if not (pa.types.is_string_view(arr.type) or pa.types.is_binary_view(arr.type)):
        return None
    bufs = arr.buffers()
    n = len(arr)
    if n == 0 or len(bufs) < 3 or bufs[1] is None or any(b is None for b in bufs[2:]):
        return None
    views = np.frombuffer(bufs[1], dtype=np.uint32).reshape(-1, 4)[arr.offset : arr.offset + n]
    lens = views[:, 0].astype(np.int64)
    if arr.null_count:
        lens[~valid_mask(arr)] = 0
    long = np.flatnonzero(lens > _INLINE)
    if long.size == 0:
        return None  # every value inline: no buffer holds them
    pos = np.cumsum(lens) - lens  # where each value starts if all lay in one run
    which = views[long, 2].astype(np.int64)
    base = views[long, 3].astype(np.int64) - pos[long]  # constant along a run
    cut = np.flatnonzero((np.diff(which) != 0) | (np.diff(base) != 0)) + 1
    if cut.size >= _MAX_RUNS:
        return None  # e.g. one value repeated (every view at the same bytes): copying is cheaper
    firsts = np.concatenate(([0], cut))  # index into long of each run's first long value
    lasts = np.concatenate((cut - 1, [long.size - 1]))
    datas = [np.frombuffer(b, dtype=np.uint8) for b in bufs[2:]]
    starts = [0]
    for r in range(1, firsts.size):  # split the rows between run r - 1 and run r
        lo, hi = int(long[lasts[r - 1]]) + 1, int(long[firsts[r]])
        for k in range(lo, min(hi, lo + _GAP_TRIES) + 1):
            a = _fits(datas[which[lasts[r - 1]]], views, lens, pos, base[lasts[r - 1]], lo, k)
            if a and _fits(datas[which[firsts[r]]], views, lens, pos, base[firsts[r]], k, hi):
                starts.append(k)
                break
        else:
            return None
    starts.append(n)
    runs = []
    for r in range(firsts.size):
        b = int(which[firsts[r]])
        offsets = base[firsts[r]] + np.append(
            pos[starts[r] : starts[r + 1]], pos[starts[r + 1] - 1] + lens[starts[r + 1] - 1]
        )
        data = datas[b]
        if offsets[0] < 0 or offsets[-1] > data.shape[0]:
            return None
        if not _fits(data, views, lens, pos, base[firsts[r]], starts[r], starts[r + 1]):
            return None
        runs.append(FlatRun(starts[r], starts[r + 1], data, offsets, bufs[2 + b]))
    return runs


def _fits(
    data: np.ndarray, views: np.ndarray, lens: np.ndarray, pos: np.ndarray, base: int, lo: int, hi: int
) -> bool:
    """Do the short values of rows lo:hi sit at ``base + pos`` in ``data``? (Long ones are checked
    by the run cut.)"""
    if hi <= lo:
        return True
    if base + pos[lo] < 0 or base + pos[hi - 1] + lens[hi - 1] > data.shape[0]:
        return False
    sl = lens[lo:hi]
    short = np.flatnonzero((sl > 0) & (sl <= _INLINE))
    if short.size == 0:
        return True
    slens = sl[short]
    # byte j of short value k: base + pos[k] + j in the buffer, byte 4 + j of its view
    rel = np.arange(int(slens.sum()), dtype=np.int64) - np.repeat(np.cumsum(slens) - slens, slens)
    in_buffer = data[np.repeat(base + pos[lo + short], slens) + rel]
    inline = views.view(np.uint8).reshape(-1, 16)[np.repeat(lo + short, slens), 4 + rel]
    return bool(np.array_equal(in_buffer, inline))


def valid_mask(arr: pa.Array) -> np.ndarray:
    """Boolean NumPy mask of the valid slots of ``arr`` (from its bitmap; all True without one;
    ``Array.is_valid().to_numpy()`` would first import pandas)."""
    if arr.buffers()[0] is None:
        return np.ones(len(arr), dtype=bool)
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little", count=arr.offset + len(arr))[arr.offset :].astype(bool)


def _flat_chunks(arr: pa.Array, runs: list[FlatRun], typ: pa.DataType) -> pa.ChunkedArray:
    chunks = []
    valid = valid_mask(arr) if arr.null_count else None
    for run in runs:
        # the bitmap of the run's rows, re-cut to start at bit 0
        validity = (
            None
            if valid is None
            else pa.py_buffer(np.packbits(valid[run.start : run.stop], bitorder="little"))
        )
        nulls = -1 if validity is not None else 0
        chunks.append(
            pa.Array.from_buffers(
                typ, run.stop - run.start, [validity, pa.py_buffer(run.offsets), run.buffer], null_count=nulls
            )
        )
    return pa.chunked_array(chunks, type=typ)


def series_runs(series: pl.Series) -> tuple[pa.Array, list[FlatRun]] | None:
    """A String or Binary series as its view array and :func:`flat_runs`, or ``None`` when its
    text must be copied (or it is empty, or of another type)."""
    if series.dtype not in (pl.String, pl.Binary) or not len(series):
        return None
    views = series.to_arrow(compat_level=pl.CompatLevel.newest())
    runs = flat_runs(views) if isinstance(views, pa.Array) else None
    return (views, runs) if runs is not None else None


def series_to_arrow(series: pl.Series) -> pa.Array | pa.ChunkedArray:
    """``series.to_arrow()``, without copying the text of a flat String or Binary column."""
    found = series_runs(series)
    if found is None:
        return series.to_arrow()
    views, runs = found
    typ = pa.large_string() if series.dtype == pl.String else pa.large_binary()
    chunked = _flat_chunks(views, runs, typ)
    return chunked.chunk(0) if chunked.num_chunks == 1 else chunked


def frame_to_arrow(frame: pl.DataFrame) -> pa.Table:
    """``frame.to_arrow()``, without copying the text of flat String and Binary columns."""
    if not any(dt in (pl.String, pl.Binary) for dt in frame.dtypes) or frame.height == 0:
        return frame.to_arrow()
    others = [c for c, dt in frame.schema.items() if dt not in (pl.String, pl.Binary)]
    rest = frame.select(others).to_arrow() if others else None
    columns = []
    fields = []
    for name, dt in frame.schema.items():
        if dt in (pl.String, pl.Binary):
            col = series_to_arrow(frame.get_column(name))
            columns.append(col)
            fields.append(pa.field(name, col.type))
        else:  # with the field as Polars exports it (metadata such as an Enum's categories)
            columns.append(rest.column(name))  # type: ignore[union-attr]
            fields.append(rest.schema.field(name))  # type: ignore[union-attr]
    return pa.Table.from_arrays(
        columns, schema=pa.schema(fields, metadata=rest.schema.metadata if rest else None)
    )


_VIEW_LIMIT = (1 << 31) - 1  # a view addresses its buffer with a signed 32-bit offset


def string_views(arr: pa.Array) -> pa.Array:
    """A flat string or binary array as views over the same buffer (Arrow's cast does not copy the
    text), for ``pl.Series``/``pl.from_arrow``: Polars imports views as they are, but converts a
    flat column holding any value of 12 bytes or less by copying all of it. Other arrays, and
    buffers too big for 32-bit view offsets, are returned unchanged."""
    t = arr.type
    if pa.types.is_large_string(t) or pa.types.is_string(t):
        target = pa.string_view()
    elif pa.types.is_large_binary(t) or pa.types.is_binary(t):
        target = pa.binary_view()
    else:
        return arr
    data = arr.buffers()[2]
    if data is None or data.size > _VIEW_LIMIT:
        return arr
    return arr.cast(target)


def table_to_polars(table: pa.Table) -> pl.DataFrame:
    """``pl.from_arrow(table)`` without copying the text of its flat string and binary columns."""
    columns = []
    for col in table.columns:
        if col.num_chunks == 1 and (pa.types.is_large_string(col.type) or pa.types.is_large_binary(col.type)):
            columns.append(string_views(col.chunk(0)))
        else:
            columns.append(col)
    # the fields keep their metadata (Polars reads an Enum's categories from it)
    schema = pa.schema(
        [f.with_type(c.type) for f, c in zip(table.schema, columns, strict=True)],
        metadata=table.schema.metadata,
    )
    return pl.DataFrame(pl.from_arrow(pa.Table.from_arrays(columns, schema=schema)))
