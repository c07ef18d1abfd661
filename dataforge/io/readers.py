"""Read JSONL, CSV, Parquet and Arrow IPC (plain, gzip, zstd) into batches of documents.

Every record ends up in exactly one place: a document row (with provenance ``_source``, ``_row``,
``_line``) or a reject (with file, row, line, reason, error and the raw bytes). A reader never skips a
record silently.

JSONL is read 8 MB at a time. A chunk whose every line is a record of the common shape
``{"<id field>": "...", "<text field>": "...", ...}`` (other fields holding strings without
escapes, integers, booleans or null) is parsed by a compiled kernel (``dataforge.io._jsonl``: no
Python object per line, ~1.6x faster); any other line sends its chunk through orjson, line by line
where needed, which is also where every reject and error message comes from. Both give the same
documents (tests compare them).

Reject reasons: ``bad_json``, ``bad_utf8``, ``not_object``, ``missing_text``, ``wrong_type``,
``blank_line``, ``ragged_row``, ``bad_csv``, ``truncated`` (compressed stream ends early),
``corrupt_file`` (a columnar file that fails mid-read).

Example:
    >>> from dataforge.io.inputs import InputSpec, discover  # doctest: +SKIP
    >>> spec = InputSpec(paths=("data.jsonl",))  # doctest: +SKIP
    >>> for batch in read_batches(discover(spec)[0], spec):  # doctest: +SKIP
    ...     print(batch.docs.height, batch.rejects.height)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import zstandard

from dataforge.errors import InputError
from dataforge.io.inputs import InputFile, InputSpec, Piece
from dataforge.io.views import string_views

log = logging.getLogger(__name__)

RAW_LIMIT = 1 << 20  # raw bytes kept per reject
_CHUNK = 8 << 20
_SIMPLE_JSONL = True  # the compiled path for {"id": "...", "text": "..."} lines (tests turn it off)

DOC_SCHEMA = {
    "id": pl.Utf8,
    "text": pl.Utf8,
    "meta": pl.Utf8,
    "_source": pl.Utf8,
    "_row": pl.Int64,
    "_line": pl.Int64,
}
REJECT_SCHEMA = {
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "source_line": pl.Int64,
    "reason": pl.Utf8,
    "error": pl.Utf8,
    "raw": pl.Binary,
}
REJECT_REASONS = (
    "bad_json",
    "bad_utf8",
    "not_object",
    "missing_text",
    "wrong_type",
    "blank_line",
    "ragged_row",
    "bad_csv",
    "truncated",
    "corrupt_file",
)
_BIG_INT = re.compile(rb"\d{19,}")
_BIG_INT_STR = re.compile(r"\d{19,}")
_EXP_FLOAT = re.compile(r"[0-9]e[+-]?[0-9]")


@dataclass
class ReadBatch:
    """One batch read from a file: documents and the records that could not be read."""

    docs: pl.DataFrame
    rejects: pl.DataFrame


class _Builder:
    """Accumulates documents and rejects of one file and cuts them into batches."""

    def __init__(self, source: str, batch_rows: int, batch_bytes: int) -> None:
        self.source = source
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self._reset()

    def _reset(self) -> None:
        self.frames: list[pl.DataFrame] = []  # documents built in bulk, before the lists below
        self.n_docs = 0
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.metas: list[str | None] = []
        self.rows: list[int] = []
        self.lines: list[int | None] = []
        self.rej: list[tuple] = []
        self.nbytes = 0

    def doc(self, id_: str, text: str, meta: str | None, row: int, line: int | None) -> None:
        self.n_docs += 1
        self.ids.append(id_)
        self.texts.append(text)
        self.metas.append(meta)
        self.rows.append(row)
        self.lines.append(line)
        self.nbytes += len(text)

    def docs_bulk(
        self, ids: list[str], texts: list[str], metas: list[str | None], rows: range, lines: range
    ) -> None:
        self.n_docs += len(ids)
        self.ids.extend(ids)
        self.texts.extend(texts)
        self.metas.extend(metas)
        self.rows.extend(rows)
        self.lines.extend(lines)
        self.nbytes += sum(map(len, texts))

    def docs_frame(self, frame: pl.DataFrame, chars: int) -> None:
        """Add documents already in a frame of DOC_SCHEMA (``chars``: code points of their texts)."""
        if self.ids:  # keep file order: the documents added one by one so far come first
            self.frames.append(self._list_frame())
            self._clear_lists()
        self.frames.append(frame)
        self.n_docs += frame.height
        self.nbytes += chars

    def reject(self, row: int | None, line: int | None, reason: str, error: str, raw: bytes | None) -> None:
        if raw is not None and len(raw) > RAW_LIMIT:
            error = f"{error} (raw record truncated to {RAW_LIMIT} of {len(raw)} bytes)"
            raw = raw[:RAW_LIMIT]
        self.rej.append((self.source, row, line, reason, error, raw))
        self.nbytes += len(raw or b"")

    def full(self) -> bool:
        return self.n_docs + len(self.rej) >= self.batch_rows or self.nbytes >= self.batch_bytes

    def _list_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "id": self.ids,
                "text": self.texts,
                "meta": self.metas,
                "_source": [self.source] * len(self.ids),
                "_row": self.rows,
                "_line": self.lines,
            },
            schema=DOC_SCHEMA,
        )

    def _clear_lists(self) -> None:
        self.ids, self.texts, self.metas, self.rows, self.lines = [], [], [], [], []

    def flush(self) -> ReadBatch:
        frames = [*self.frames, self._list_frame()] if self.ids or not self.frames else self.frames
        docs = frames[0] if len(frames) == 1 else pl.concat(frames, rechunk=True)
        rejects = pl.DataFrame(self.rej, schema=REJECT_SCHEMA, orient="row")
        self._reset()
        return ReadBatch(docs, rejects)

    def pending(self) -> bool:
        return bool(self.n_docs or self.rej)


def empty_docs() -> pl.DataFrame:
    return pl.DataFrame(schema=DOC_SCHEMA)


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_SCHEMA)


# --------------------------------------------------------------------------- streams


class _Decompressor(io.RawIOBase):
    """Incremental multi-member gzip/zstd decompression that delivers every byte it could decode
    and raises EOFError when the stream ends inside a member (a truncated file)."""

    def __init__(self, fh: IO[bytes], kind: str) -> None:
        self._fh = fh
        self._kind = kind
        self._obj = self._new()
        self._started = False
        self._buf = bytearray()
        self._eof = False

    def _new(self) -> Any:
        if self._kind == "gzip":
            return zlib.decompressobj(wbits=31)
        return zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def _feed(self, chunk: bytes) -> None:
        while chunk:
            self._started = True
            self._buf += self._obj.decompress(chunk)
            if not self._obj.eof:
                return
            chunk = self._obj.unused_data
            self._obj = self._new()
            self._started = False
            if chunk and not chunk.strip(b"\0"):
                return  # zero padding after the last member

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._buf) < size):
            chunk = self._fh.read(1 << 20)
            if not chunk:
                self._eof = True
                break
            self._feed(chunk)
        if size < 0 or len(self._buf) <= size:
            out = bytes(self._buf)
            self._buf.clear()
        else:
            out = bytes(self._buf[:size])
            del self._buf[:size]
        if not out and self._eof and self._started:
            self._started = False
            msg = f"{self._kind} stream ends in the middle of a member (file truncated?)"
            raise EOFError(msg)
        return out

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_binary(f: InputFile) -> IO[bytes]:
    """Open ``f`` for reading, decompressing gzip or zstd transparently."""
    fh = open(f.path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if f.compression in ("gzip", "zstd"):
        return _Decompressor(fh, f.compression)  # type: ignore[return-value]
    return fh


class _ByteRange(io.RawIOBase):
    """Bytes ``[start, end)`` of a file, as a stream that ends at ``end``."""

    def __init__(self, path: str, start: int, end: int) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._fh.seek(start)
        self._left = max(0, end - start)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buf)
        n = self._fh.readinto(view[: min(len(view), self._left)]) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_piece(f: InputFile, piece: Piece | None) -> IO[bytes]:
    """Open the bytes of ``piece`` (the whole file, decompressed, for None or a ``whole`` piece)."""
    if piece is None or piece.kind == "whole":
        return open_binary(f)
    if piece.kind != "bytes" or f.compression != "none":
        msg = f"{f.path}: a {piece.kind} piece of a {f.compression}-compressed {f.format} file cannot be read as bytes"
        raise InputError(msg)
    return io.BufferedReader(_ByteRange(f.path, piece.start, piece.end), buffer_size=1 << 20)  # type: ignore[return-value]


def _tail_piece(piece: Piece | None) -> bool:
    """True for a piece that starts after the beginning of its file."""
    return piece is not None and piece.kind != "whole" and (piece.start > 0 or piece.first_row > 0)


_STREAM_ERRORS = (EOFError, OSError, zlib.error, zstandard.ZstdError)


@dataclass(frozen=True)
class _LineChunk:
    """The complete lines of one read: ``head`` (the line that began in earlier reads; None when
    the read started on a line boundary) then the lines of ``data[start:end]``, each ending with a
    newline. Lines are split into ``bytes`` objects only when a parser needs them (:meth:`lines`);
    the compiled JSONL path reads the buffer as it is."""

    head: bytes | None
    data: bytes
    start: int
    end: int

    def lines(self) -> list[bytes]:
        """The lines, without their newlines."""
        body = self.data[self.start : self.end - 1].split(b"\n") if self.end > self.start else []
        return body if self.head is None else [self.head, *body]

    def __bool__(self) -> bool:
        return self.head is not None or self.end > self.start


_BOM = b"\xef\xbb\xbf"


def _iter_line_chunks(
    stream: IO[bytes], *, strip_bom: bool = False
) -> Iterator[tuple[_LineChunk, str | None, bytes]]:
    """Yield (lines, None, b"") per read chunk; on a broken stream, a last (lines, error, partial
    line) and stop. Lines exclude the newline. With ``strip_bom``, a UTF-8 byte order mark at the
    very start is dropped (editors on Windows write one)."""
    rest = b""  # the start of a line that continues in the next read
    while True:
        try:
            data = stream.read(_CHUNK)
            if strip_bom and data:
                while len(data) < len(_BOM) and _BOM.startswith(data):
                    more = stream.read(len(_BOM) - len(data))
                    if not more:
                        break
                    data += more
                data = data.removeprefix(_BOM)
                strip_bom = False
        except _STREAM_ERRORS as exc:
            yield _LineChunk(None, b"", 0, 0), f"compressed stream is truncated or corrupt: {exc}", rest
            return
        if not data:
            break
        first = data.find(b"\n")
        if first < 0:  # no line ends in this read
            rest += data
            continue
        last = data.rfind(b"\n")
        # the straddling line is joined on its own: not (rest + data), which would copy the chunk
        head = rest + data[:first] if rest else None
        yield _LineChunk(head, data, first + 1 if rest else 0, last + 1), None, b""
        rest = data[last + 1 :]
    if rest:
        yield _LineChunk(rest, b"", 0, 0), None, b""


# --------------------------------------------------------------------------- JSONL


def _loads(line: bytes) -> Any:
    return orjson.loads(line)


def _loads_exact(line: bytes) -> Any:
    """Parse keeping integers beyond 64 bits exact (orjson turns them into floats)."""
    return json.loads(line, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    msg = f"invalid JSON constant {name}"
    raise ValueError(msg)


def _dumps(obj: Any) -> str:
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value),
        "integer"
        if isinstance(value, int)
        else "number"
        if isinstance(value, float)
        else type(value).__name__,
    )


def _excerpt(value: Any, limit: int = 60) -> str:
    text = _dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "..."


def _read_jsonl(
    f: InputFile, spec: InputSpec, b: _Builder, piece: Piece | None = None
) -> Iterator[ReadBatch]:
    tf, idf = spec.text_field, spec.id_field
    # a piece numbers its records from its offsets in the file (see dataforge.io.inputs)
    row = piece.first_row - 1 if piece is not None else -1
    lineno = piece.first_line - 1 if piece is not None else 0
    simple = _simple_keys(tf, idf)
    with open_piece(f, piece) as stream:
        at_start = piece is None or piece.start == 0
        for chunk, stream_error, tail in _iter_line_chunks(stream, strip_bom=at_start):
            n = _simple_jsonl_chunk(f.path, chunk, lineno + 1, row + 1, simple, b) if chunk and simple else 0
            lines = chunk.lines() if not n else []
            if n:
                lineno += n
                row += n
            elif lines and _fast_jsonl_chunk(f.path, lines, lineno + 1, row + 1, tf, idf, b):
                lineno += len(lines)
                row += len(lines)
            else:
                for raw in lines:
                    lineno += 1
                    row += 1
                    line = raw[:-1] if raw.endswith(b"\r") else raw
                    if not line.strip():
                        b.reject(row, lineno, "blank_line", f"{f.path}:{lineno}: blank line", raw)
                    else:
                        _parse_json_line(f.path, row, lineno, line, raw, tf, idf, b)
            if stream_error is not None:
                lineno += 1
                if tail:
                    row += 1
                    b.reject(row, lineno, "truncated", f"{f.path}:{lineno}: {stream_error}", tail)
                else:
                    b.reject(
                        None, lineno, "truncated", f"{f.path}: {stream_error} (after line {lineno - 1})", None
                    )
                break
            if b.full():
                yield b.flush()


def _simple_keys(tf: str, idf: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The text and id field names as bytes for :func:`_simple_jsonl_chunk` (None: no fast path)."""
    if tf == idf or not _SIMPLE_JSONL:
        return None
    return np.frombuffer(tf.encode(), np.uint8), np.frombuffer(idf.encode(), np.uint8)


def _simple_jsonl_chunk(
    path: str,
    chunk: _LineChunk,
    first_line: int,
    first_row: int,
    keys: tuple[np.ndarray, np.ndarray],
    b: _Builder,
) -> int:
    """Add a chunk whose every line is a simple record (``{"<id>": "...", "<text>": "...", ...}``
    with plain values in the other fields, see ``dataforge.io._jsonl``) in bulk, without a Python
    object per line; return its lines, or 0 (nothing added) to parse it the general way. The
    documents are the same as orjson's."""
    from dataforge.io._jsonl import simple_records

    parts = []
    if chunk.head is not None:
        parts.append((np.frombuffer(chunk.head + b"\n", np.uint8), 0, len(chunk.head) + 1))
    if chunk.end > chunk.start:
        parts.append((np.frombuffer(chunk.data, np.uint8), chunk.start, chunk.end))
    decoded = []
    for buf, lo, hi in parts:
        res = simple_records(buf, lo, hi, *keys)
        if not res[0]:
            return 0
        decoded.append(res)
    line, row = first_line, first_row
    for _, texts, t_off, ids, i_off, has_id, metas, m_off, chars in decoded:
        n = has_id.shape[0]
        lines = np.arange(line, line + n, dtype=np.int64)
        id_col = pl.Series("id", _large_strings(ids, i_off))
        given = has_id & (np.diff(i_off) > 0)  # an empty id is no id, as in CSV
        if not given.all():  # the generated id of a record without one: <file>:<line>
            generated = pl.Series("id", [f"{path}:{x}" for x in lines[~given].tolist()], dtype=pl.Utf8)
            id_col = id_col.scatter(np.flatnonzero(~given), generated)
        frame = pl.DataFrame(
            {
                "id": id_col,
                "text": pl.Series("text", string_views(_large_strings(texts, t_off))),
                "meta": _metas(metas, m_off),
                "_source": pl.repeat(path, n, dtype=pl.Utf8, eager=True),
                "_row": np.arange(row, row + n, dtype=np.int64),
                "_line": lines,
            },
            schema=DOC_SCHEMA,
        )
        b.docs_frame(frame, int(chars))
        line += n
        row += n
    return line - first_line


def _metas(data: np.ndarray, offsets: np.ndarray) -> pl.Series:
    """The meta column: each record's other fields as JSON, null for a record without any."""
    n = len(offsets) - 1
    if not data.size:
        return pl.Series("meta", [None] * n, dtype=pl.Utf8)
    col = pl.Series("meta", _large_strings(data, offsets))
    empty = np.diff(offsets) == 0
    return col.scatter(np.flatnonzero(empty), None) if empty.any() else col


def _large_strings(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def _fast_jsonl_chunk(
    path: str, lines: list[bytes], first_line: int, first_row: int, tf: str, idf: str, b: _Builder
) -> bool:
    """Add a chunk of lines in bulk if every line is a well-formed record; False to go line by line.

    The result is the same as the line-by-line path; this one just avoids its per-line overhead
    on clean input (the common case).
    """
    try:
        recs = [orjson.loads(line) for line in lines]
    except orjson.JSONDecodeError:
        return False
    texts = [r.get(tf) if type(r) is dict else None for r in recs]
    if not all(type(t) is str for t in texts):
        return False
    raw_ids = [r.get(idf) for r in recs]
    if not all(v is None or type(v) is str or type(v) is int for v in raw_ids):
        return False
    metas = [
        _dumps({k: v for k, v in r.items() if k != tf and k != idf})
        if len(r) > (tf in r) + (idf in r)
        else None
        for r in recs
    ]
    if any(m is not None and _EXP_FLOAT.search(m) for m in metas):
        return False  # possibly an integer beyond 64 bits: the line-by-line path keeps it exact
    ids = [
        v if type(v) is str and v else (f"{path}:{first_line + i}" if v is None or v == "" else str(v))
        for i, v in enumerate(raw_ids)
    ]
    b.docs_bulk(
        ids,
        texts,
        metas,
        range(first_row, first_row + len(lines)),
        range(first_line, first_line + len(lines)),
    )
    return True


def _parse_json_line(
    path: str, row: int, lineno: int, line: bytes, raw: bytes, tf: str, idf: str, b: _Builder
) -> None:
    where = f"{path}:{lineno}"
    try:
        rec = _loads(line)
    except ValueError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as uexc:
            bad = line[uexc.start : uexc.start + 4]
            b.reject(
                row, lineno, "bad_utf8", f"{where}: invalid UTF-8 byte(s) {bad!r} at byte {uexc.start}", raw
            )
            return
        b.reject(row, lineno, "bad_json", f"{where}: invalid JSON: {exc}", raw)
        return
    if not isinstance(rec, dict):
        b.reject(row, lineno, "not_object", f"{where}: expected a JSON object, got {_type_name(rec)}", raw)
        return
    text = rec.get(tf)
    if text is None:
        what = "is null" if tf in rec else "is missing"
        b.reject(row, lineno, "missing_text", f"{where}: text field {tf!r} {what}", raw)
        return
    if not isinstance(text, str):
        b.reject(
            row,
            lineno,
            "wrong_type",
            f"{where}: text field {tf!r} must be a string, got {_type_name(text)} {_excerpt(text)}",
            raw,
        )
        return
    id_value = rec.get(idf)
    others = {k: v for k, v in rec.items() if k != tf and k != idf}
    meta = _dumps(others) if others else None
    if (isinstance(id_value, float) or (meta is not None and _EXP_FLOAT.search(meta))) and _BIG_INT.search(
        line
    ):
        # orjson read an integer beyond 64 bits as a float: parse the line again exactly
        rec = _loads_exact(line)
        id_value = rec.get(idf)
        others = {k: v for k, v in rec.items() if k != tf and k != idf}
        meta = _dumps(others) if others else None
    if id_value is None or id_value == "":
        id_ = f"{path}:{lineno}"
    elif isinstance(id_value, str):
        id_ = id_value
    elif isinstance(id_value, int) and not isinstance(id_value, bool):
        id_ = str(id_value)
    else:
        b.reject(
            row,
            lineno,
            "wrong_type",
            f"{where}: id field {idf!r} must be a string or integer, got {_type_name(id_value)} {_excerpt(id_value)}",
            raw,
        )
        return
    b.doc(id_, text, meta, row, lineno)


# --------------------------------------------------------------------------- CSV


class _LineTap:
    """Feeds text lines to csv.reader and remembers the raw lines of the current record."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.taken: list[str] = []
        self.error: str | None = None
        self.pending: list[str] = []  # lines given back to be read again (see _read_csv)

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        if self.pending:
            line = self.pending.pop(0)
            self.taken.append(line)
            return line
        try:
            line = self._text.readline()
        except _STREAM_ERRORS as exc:
            self.error = f"compressed stream is truncated or corrupt: {exc}"
            raise StopIteration from None
        if not line:
            raise StopIteration
        self.taken.append(line)
        return line


_SURROGATE = re.compile("[\udc80-\udcff]")


def _csv_header(f: InputFile) -> list[str]:
    with open_binary(f) as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            return next(csv.reader(text, delimiter=f.delimiter))
        except StopIteration:
            return []
        except (csv.Error, *_STREAM_ERRORS) as exc:
            msg = f"{f.path}: cannot read the CSV header: {exc}"
            raise InputError(msg) from None


def _columns_hint(header: list[str], delimiter: str) -> str:
    """The header's columns for an error message (at most 20, each cut to 40 characters), and a
    hint when the file seems to use another delimiter than ``delimiter``."""
    shown = [h if len(h) <= 40 else h[:37] + "..." for h in header[:20]]
    text = ", ".join(repr(h) for h in shown) + (f" ... ({len(header)} in all)" if len(header) > 20 else "")
    if len(header) == 1:
        other = next((d for d in (";", "\t", "|", ",") if d != delimiter and d in header[0]), None)
        if other is not None:
            text += f" (one column: is the delimiter {other!r}? use --csv-delimiter / input.csv_delimiter)"
    return text


def _read_csv(f: InputFile, spec: InputSpec, b: _Builder, piece: Piece | None = None) -> Iterator[ReadBatch]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    tf, idf = spec.text_field, spec.id_field
    tail = _tail_piece(piece)
    with open_piece(f, piece) as stream:
        # a BOM is only stripped at the start of the file
        encoding = "utf-8" if tail else "utf-8-sig"
        text = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")
        tap = _LineTap(text)
        # strict: a quote that does not close where a field ends (an unclosed quote swallowing the
        # next records, text after a closing quote) is a bad_csv reject, not a merged record
        reader = csv.reader(tap, delimiter=f.delimiter, strict=True)
        if tail:
            # a later piece of a split CSV (no quotes: one line per record, one-line header)
            assert piece is not None
            header = _csv_header(f)
            line0, first_row = piece.first_line - 1, piece.first_row
        else:
            try:
                header = next(reader)
            except StopIteration:
                return
            line0, first_row = 0, 0
        if tf not in header:
            msg = f"{f.path}: CSV header has no text column {tf!r}; columns: {_columns_hint(header, f.delimiter)}"
            raise InputError(msg)
        dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if dup is not None:  # a second column of the same name would overwrite the first in meta
            msg = f"{f.path}: CSV header repeats column {dup!r}; columns: {', '.join(header)}"
            raise InputError(msg)
        ti = header.index(tf)
        ii = header.index(idf) if idf in header else None
        others = [(i, h) for i, h in enumerate(header) if i != ti and i != ii]
        width = len(header)
        row = first_row - 1
        line_end = line0 + reader.line_num
        while True:
            tap.taken = []
            start = line_end + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # the record's first line is rejected; the lines the parser took after it (an
                # unclosed quote runs on to the next quote or the end of the file) are read again
                # as records of their own by a fresh parser
                row += 1
                bad, tap.pending = tap.taken[0], tap.taken[1:] + tap.pending
                raw = bad.encode("utf-8", "surrogateescape")
                b.reject(row, start, "bad_csv", f"{f.path}:{start}: {exc}", raw)
                reader = csv.reader(tap, delimiter=f.delimiter, strict=True)
                line0 = line_end = start
                continue
            row += 1
            line_end = line0 + reader.line_num
            raw_text = "".join(tap.taken)
            where = f"{f.path}:{start}"
            if _SURROGATE.search(raw_text):
                raw = raw_text.encode("utf-8", "surrogateescape")
                pos = _SURROGATE.search(raw_text).start()  # type: ignore[union-attr]
                b.reject(row, start, "bad_utf8", f"{where}: invalid UTF-8 near character {pos}", raw)
            elif len(fields) != width:
                raw = raw_text.encode("utf-8")
                b.reject(
                    row,
                    start,
                    "blank_line" if not fields else "ragged_row",
                    f"{where}: expected {width} fields (header), got {len(fields)}",
                    raw,
                )
            else:
                id_ = fields[ii] if ii is not None and fields[ii] != "" else f"{f.path}:{start}"
                meta = _dumps({h: fields[i] for i, h in others}) if others else None
                b.doc(id_, fields[ti], meta, row, start)
            if b.full():
                yield b.flush()
        if tap.error:
            tail = "".join(tap.taken).encode("utf-8", "surrogateescape")
            b.reject(
                row + 1 if tail else None,
                line_end + 1,
                "truncated",
                f"{f.path}:{line_end + 1}: {tap.error}",
                tail or None,
            )


# --------------------------------------------------------------------------- Parquet / Arrow


def _columnar_source(f: InputFile) -> Any:
    if f.compression == "none":
        return f.path
    with open_binary(f) as stream:
        try:
            return pa.BufferReader(stream.read())
        except _STREAM_ERRORS as exc:
            msg = f"{f.path}: compressed stream is truncated or corrupt: {exc}"
            raise InputError(msg) from None


def columnar_schema(f: InputFile) -> pa.Schema:
    """Read the schema of a Parquet/Arrow file; InputError if it is not a valid file."""
    try:
        src = _columnar_source(f)
        if f.format == "parquet":
            return pq.read_schema(src)
        return _open_ipc(src).schema
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"{f.path}: not a readable {f.format} file: {exc}"
        raise InputError(msg) from None


def _open_ipc(src: Any) -> Any:
    try:
        return ipc.open_file(src)
    except pa.ArrowInvalid:
        if isinstance(src, pa.BufferReader):
            src.seek(0)
        return ipc.open_stream(src)


def _iter_columnar(f: InputFile, batch_rows: int, piece: Piece | None = None) -> Iterator[pa.RecordBatch]:
    src = _columnar_source(f)
    ranged = piece is not None and piece.kind in ("row_groups", "batches")
    if f.format == "parquet":
        pf = pq.ParquetFile(src)
        groups = list(range(piece.start, piece.end)) if ranged and piece is not None else None
        yield from pf.iter_batches(batch_size=batch_rows, row_groups=groups)
        return
    reader = _open_ipc(src)
    if isinstance(reader, ipc.RecordBatchFileReader):
        lo, hi = (piece.start, piece.end) if ranged and piece is not None else (0, reader.num_record_batches)
        for i in range(lo, hi):
            yield reader.get_batch(i)
    else:
        yield from reader


def _read_columnar(
    f: InputFile, spec: InputSpec, b: _Builder, batch_rows: int, piece: Piece | None = None
) -> Iterator[ReadBatch]:
    tf, idf = spec.text_field, spec.id_field
    schema = columnar_schema(f)
    if tf not in schema.names:
        msg = f"{f.path}: no text column {tf!r}; columns: {', '.join(schema.names)}"
        raise InputError(msg)
    offset = piece.first_row if piece is not None else 0  # row numbers stay those of the file
    it = _iter_columnar(f, batch_rows, piece)
    while True:
        try:
            rb = next(it)
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError) as exc:
            b.reject(None, None, "corrupt_file", f"{f.path}: unreadable after row {offset}: {exc}", None)
            break
        yield from _columnar_batch(f.path, rb, offset, tf, idf, b)
        offset += rb.num_rows
    if b.pending():
        yield b.flush()


def _columnar_batch(
    path: str, rb: pa.RecordBatch, offset: int, tf: str, idf: str, b: _Builder
) -> Iterator[ReadBatch]:
    if b.pending():
        yield b.flush()
    n = rb.num_rows
    df = pl.DataFrame(pl.from_arrow(pa.Table.from_batches([rb], schema=rb.schema)))
    rows = pl.int_range(offset, offset + n, eager=True, dtype=pl.Int64)
    text_col = df[tf]
    reasons: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    if text_col.dtype == pl.Binary:
        decoded = []
        for i, v in enumerate(text_col.to_list()):
            if v is None:
                decoded.append(None)
                continue
            try:
                decoded.append(v.decode("utf-8"))
            except UnicodeDecodeError as exc:
                decoded.append(None)
                reasons[i] = "bad_utf8"
                errors[i] = f"{path}: row {offset + i}: invalid UTF-8 at byte {exc.start} of column {tf!r}"
        text_col = pl.Series(tf, decoded, pl.Utf8)
    elif text_col.dtype not in (pl.Utf8, pl.Categorical, pl.Enum):
        kind = str(rb.schema.field(tf).type)
        for i in range(n):
            reasons[i] = "wrong_type"
            errors[i] = f"{path}: row {offset + i}: text column {tf!r} has type {kind}, expected string"
    else:
        text_col = text_col.cast(pl.Utf8)
    nulls = text_col.is_null().to_list() if text_col.dtype == pl.Utf8 else [False] * n
    for i, isnull in enumerate(nulls):
        if isnull and reasons[i] is None:
            reasons[i] = "missing_text"
            errors[i] = f"{path}: row {offset + i}: text column {tf!r} is null"
    if idf in df.columns and df[idf].dtype in (
        pl.Utf8,
        pl.Int64,
        pl.Int32,
        pl.UInt64,
        pl.UInt32,
        pl.Int16,
        pl.Int8,
    ):
        ids = df[idf].cast(pl.Utf8)
    elif idf in df.columns:
        kind = str(rb.schema.field(idf).type)
        for i in range(n):
            if reasons[i] is None:
                reasons[i] = "wrong_type"
                errors[i] = (
                    f"{path}: row {offset + i}: id column {idf!r} has type {kind}, expected string or integer"
                )
        ids = pl.Series(idf, [None] * n, pl.Utf8)
    else:
        ids = pl.Series(idf, [None] * n, pl.Utf8)
    ids = ids.replace("", None)  # an empty id is no id
    ids = pl.select(pl.coalesce(ids, pl.lit(f"{path}#row") + rows.cast(pl.Utf8))).to_series()
    others = [c for c in df.columns if c not in (tf, idf)]
    if "meta" in others and df["meta"].dtype == pl.Utf8:
        # a dataforge output read again: its meta stays one object, not a string inside a new one
        rest = [c for c in others if c != "meta"]
        meta = _merge_meta(df["meta"], _meta_json(df.select(rest)) if rest else None)
    else:
        meta = _meta_json(df.select(others)) if others else pl.Series("meta", [None] * n, pl.Utf8)
    bad = pl.Series(reasons, dtype=pl.Utf8).is_not_null()
    docs = pl.DataFrame(
        {
            "id": ids,
            "text": text_col if text_col.dtype == pl.Utf8 else pl.Series([None] * n, dtype=pl.Utf8),
            "meta": meta,
            "_source": pl.Series([path] * n, dtype=pl.Utf8),
            "_row": rows,
            "_line": pl.Series([None] * n, dtype=pl.Int64),
        },
        schema=DOC_SCHEMA,
    )
    if bad.any():
        idx = [i for i, r in enumerate(reasons) if r is not None]
        raws = _raw_rows(df, idx)
        for j, i in enumerate(idx):
            b.reject(offset + i, None, reasons[i], errors[i], raws[j])  # type: ignore[arg-type]
        docs = docs.filter(~bad)
        rejects = b.flush().rejects
    else:
        rejects = empty_rejects()
    yield ReadBatch(docs, rejects)


def _meta_json(frame: pl.DataFrame) -> pl.Series:
    safe = frame.with_columns(pl.col(pl.Binary).bin.encode("base64"))
    try:
        return safe.select(pl.struct(pl.all()).struct.json_encode().alias("meta")).to_series()
    except pl.exceptions.PolarsError:
        return safe.select(pl.struct(pl.all().cast(pl.Utf8)).struct.json_encode().alias("meta")).to_series()


def _merge_meta(meta: pl.Series, rest: pl.Series | None) -> pl.Series:
    """The ``meta`` column of a columnar input (a JSON object per row, as dataforge writes it) with
    the other columns' fields added where it has no field of that name. A row whose meta is not a
    JSON object keeps it as a field ``meta`` (as any other column)."""
    out: list[str | None] = []
    extra = rest.to_list() if rest is not None else [None] * meta.len()
    for m, r in zip(meta.to_list(), extra, strict=True):
        obj: Any = None
        if m is not None:
            try:  # integers beyond 64 bits stay exact, as on the JSONL path
                obj = _loads_exact(m) if _BIG_INT_STR.search(m) else orjson.loads(m)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                obj = {"meta": m}
        fields = orjson.loads(r) if r is not None else {}
        merged = dict(obj or {})
        for k, v in fields.items():
            merged.setdefault(k, v)
        out.append(_dumps(merged) if merged else None)
    return pl.Series("meta", out, dtype=pl.Utf8)


def _raw_rows(df: pl.DataFrame, idx: list[int]) -> list[bytes]:
    sub = df[idx].with_columns(pl.col(pl.Binary).bin.encode("base64"))
    try:
        return [
            s.encode() for s in sub.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_list()
        ]
    except pl.exceptions.PolarsError:
        return [repr(r).encode() for r in sub.rows()]


# --------------------------------------------------------------------------- entry points


def check_file(f: InputFile, spec: InputSpec) -> None:
    """Cheap up-front checks of one file (columnar schema, CSV header); InputError on failure."""
    if f.format in ("parquet", "arrow"):
        schema = columnar_schema(f)
        if spec.text_field not in schema.names:
            msg = f"{f.path}: no text column {spec.text_field!r}; columns: {', '.join(schema.names)}"
            raise InputError(msg)
    elif f.format == "csv":
        header = _csv_header(f)
        if header and spec.text_field not in header:
            msg = (
                f"{f.path}: CSV header has no text column {spec.text_field!r}; "
                f"columns: {_columns_hint(header, f.delimiter)}"
            )
            raise InputError(msg)
        dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if dup is not None:
            msg = f"{f.path}: CSV header repeats column {dup!r}; columns: {', '.join(header)}"
            raise InputError(msg)
    elif f.format == "jsonl":
        _check_jsonl_field(f, spec)


#: a JSONL file whose first this-many records are all objects without the text field is refused up
#: front (a wrong ``--text-field``), instead of rejecting every line; fewer go the per-line way
JSONL_FIELD_CHECK_RECORDS = 20


def _check_jsonl_field(f: InputFile, spec: InputSpec) -> None:
    """Refuse a JSONL file whose first records all lack the text field, naming the fields seen."""
    seen: Counter[str] = Counter()
    n = 0
    try:
        with open_binary(f) as stream:
            head = stream.read(1 << 20)
    except _STREAM_ERRORS:
        return  # read errors are the reader's to report, line by line
    for line in head.split(b"\n")[:-1] if len(head) == 1 << 20 else head.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line.removeprefix(_BOM) if n == 0 else line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        if spec.text_field in rec:
            return
        seen.update(rec.keys())
        n += 1
        if n >= JSONL_FIELD_CHECK_RECORDS:
            fields = ", ".join(repr(k) for k, _ in seen.most_common(12))
            msg = (
                f"{f.path}: none of the first {n} records has the text field {spec.text_field!r} "
                f"(fields seen: {fields}); set --text-field (input.text_field)"
            )
            raise InputError(msg)


def read_batches(
    f: InputFile,
    spec: InputSpec,
    *,
    batch_rows: int = 10_000,
    batch_bytes: int = 64 << 20,
    piece: Piece | None = None,
) -> Iterator[ReadBatch]:
    """Read ``f`` (or one piece of it) as batches of documents and rejects, in file order.

    Args:
        f: the file (from ``discover``).
        spec: text and id fields.
        batch_rows: cut a batch after this many records.
        batch_bytes: or after this many bytes of text.
        piece: read only this piece of ``f`` (from ``dataforge.io.inputs.plan_tasks``); rows,
            lines, generated ids and rejects are numbered as in the whole file.

    Returns:
        An iterator of ReadBatch; concatenated, ``docs`` and ``rejects`` hold every record once.
    """
    b = _Builder(f.path, batch_rows, batch_bytes)
    if f.format == "jsonl":
        gen = _read_jsonl(f, spec, b, piece)
    elif f.format == "csv":
        gen = _read_csv(f, spec, b, piece)
    elif f.format in ("parquet", "arrow"):
        yield from _read_columnar(f, spec, b, batch_rows, piece)
        return
    else:  # pragma: no cover - discover() only yields known formats
        msg = f"unknown format {f.format!r}"
        raise InputError(msg)
    yield from gen
    if b.pending():
        yield b.flush()


def read_piece(
    piece: Piece, spec: InputSpec, *, batch_rows: int = 10_000, batch_bytes: int = 64 << 20
) -> Iterator[ReadBatch]:
    """Read one piece of a file (see :func:`read_batches`)."""
    return read_batches(piece.file, spec, batch_rows=batch_rows, batch_bytes=batch_bytes, piece=piece)
