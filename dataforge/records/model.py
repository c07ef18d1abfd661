"""What every records reader returns, and the small helpers readers share.

A reader (FHIR, Synthea CSV, MIMIC-IV, OMOP, companyfacts, FSDS, XBRL) turns input files into an
:class:`Extract`: canonical tables as Polars frames, plus an account of every input record that did
not become a canonical row. The unit of the ledger is the **input record** (a CSV data row, a FHIR
resource, an NDJSON line, a companyfacts data point, an FSDS ``num`` row, an XBRL fact):

* ``rows_in`` counts every input record the reader looked at;
* a record that produced one or more canonical rows is *kept*: every canonical row carries the
  record's ``source_file`` and ``source_row`` (0-based record index in that file), so
  ``kept == number of distinct (source_file, source_row) over all tables``;
* a record deliberately not mapped (a FHIR ``Claim``, a superseded financial fact) is in
  ``dropped`` with a reason;
* a malformed or impossible record is in ``rejects`` with a reason and an error naming the value.

Lookup files (dictionaries such as MIMIC ``d_labitems`` or the OMOP ``CONCEPT`` table) are inputs
but not records; they are listed in ``inputs`` with ``role="lookup"`` and are not counted.

Example:
    >>> ex = Extract.empty("synthea")
    >>> ex.reject("patients.csv", 3, line=5, reason="bad_date", error="BIRTHDATE '2011-13-45' is not a date")
    >>> ex.rows_in = 1
    >>> ex.ledger_counts()
    {'rows_in': 1, 'kept': 0, 'dropped': 0, 'rejected': 1}
"""

from __future__ import annotations

import csv
import io
import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import zstandard

from dataforge.errors import InputError

log = logging.getLogger(__name__)

REJECT_COLUMNS = {
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "source_line": pl.Int64,
    "table": pl.Utf8,
    "reason": pl.Utf8,
    "error": pl.Utf8,
    "raw": pl.Binary,
}
DROPPED_COLUMNS = {
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "source_ref": pl.Utf8,
    "table": pl.Utf8,
    "reason": pl.Utf8,
    "detail": pl.Utf8,
}
RAW_LIMIT = 64 << 10
# Tables that describe other rows rather than hold input records (superseded values, check
# results): their rows are not counted as kept input records.
AUX_TABLES = frozenset({"restatement", "check"})


@dataclass
class Extract:
    """Canonical tables read from one source, and where every other input record went.

    Attributes:
        source: reader name (``fhir``, ``synthea``, ``mimic``, ``omop``, ``companyfacts``, ``fsds``,
            ``xbrl``).
        tables: canonical table name -> frame. Every frame has ``source_file`` (str),
            ``source_row`` (int64) and ``source_ref`` (str: resource id or ``table:key=value``).
        rows_in: input records looked at.
        inputs: one dict per input file: ``path``, ``role`` (``records`` | ``lookup`` | ``skipped``),
            ``table`` (source table or resource family), ``rows`` and, for skipped files, ``reason``.
        counters: free-form counts for the report (``unit_converted``, ``unknown_unit:mg``...).
    """

    source: str
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    rows_in: int = 0
    inputs: list[dict[str, Any]] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    _rejects: list[tuple] = field(default_factory=list, repr=False)
    _reject_frames: list[pl.DataFrame] = field(default_factory=list, repr=False)
    _dropped: list[tuple] = field(default_factory=list, repr=False)
    _dropped_frames: list[pl.DataFrame] = field(default_factory=list, repr=False)

    @classmethod
    def empty(cls, source: str) -> Extract:
        return cls(source)

    @classmethod
    def concat(cls, parts: Sequence[Extract]) -> Extract:
        """The extracts of independent read tasks as one, in the order given.

        This is what one reader call over all the parts' inputs returns when each part read a
        disjoint slice of the inputs, in input order, and nothing a reader does spans parts (no
        numbering, de-duplication or reference resolution across them): tables are concatenated
        (in order of first appearance), ``rows_in`` and counters summed, ``inputs`` listed in order.
        Rejects and dropped records keep the order a single reader gives them: first every record
        added one at a time (:meth:`reject`, :meth:`drop`) over all parts, then every frame
        (:meth:`reject_frame`, :meth:`drop_frame`).

        Raises:
            ValueError: no parts, or parts of different sources.

        Example:
            >>> a, b = Extract.empty("companyfacts"), Extract.empty("companyfacts")
            >>> a.rows_in, b.rows_in = 2, 1
            >>> b.reject("b.json", None, reason="bad_json", error="b.json: not valid JSON")
            >>> Extract.concat([a, b]).ledger_counts()
            {'rows_in': 3, 'kept': 0, 'dropped': 0, 'rejected': 1}
        """
        if not parts:
            msg = "Extract.concat needs at least one part"
            raise ValueError(msg)
        sources = {p.source for p in parts}
        if len(sources) != 1:
            msg = f"Extract.concat: parts of different sources {sorted(sources)}"
            raise ValueError(msg)
        out = cls(parts[0].source)
        names = list(dict.fromkeys(name for p in parts for name in p.tables))
        out.tables = {
            name: pl.concat([p.tables[name] for p in parts if name in p.tables], how="vertical", rechunk=True)
            for name in names
        }
        for p in parts:
            out.rows_in += p.rows_in
            out.inputs.extend(p.inputs)
            out.counters.update(p.counters)
            out._rejects.extend(p._rejects)
            out._reject_frames.extend(p._reject_frames)
            out._dropped.extend(p._dropped)
            out._dropped_frames.extend(p._dropped_frames)
        return out

    # -- accounting ----------------------------------------------------------------------------

    def reject(
        self,
        source_file: str,
        source_row: int | None,
        *,
        line: int | None = None,
        table: str | None = None,
        reason: str,
        error: str,
        raw: bytes | None = None,
    ) -> None:
        """Record one malformed or impossible input record. ``error`` names the field and value."""
        if raw is not None and len(raw) > RAW_LIMIT:
            raw = raw[:RAW_LIMIT]
        self._rejects.append((source_file, source_row, line, table, reason, error, raw))

    def reject_frame(self, frame: pl.DataFrame) -> None:
        """Record many rejects at once (a frame with some of :data:`REJECT_COLUMNS`)."""
        if frame.height:
            self._reject_frames.append(_fit(frame, REJECT_COLUMNS))

    def drop(
        self,
        source_file: str,
        source_row: int | None,
        *,
        source_ref: str | None = None,
        table: str | None = None,
        reason: str,
        detail: str | None = None,
    ) -> None:
        """Record one input record deliberately not mapped to a canonical table."""
        self._dropped.append((source_file, source_row, source_ref, table, reason, detail))

    def drop_frame(self, frame: pl.DataFrame) -> None:
        """Record many dropped records at once (a frame with some of :data:`DROPPED_COLUMNS`)."""
        if frame.height:
            self._dropped_frames.append(_fit(frame, DROPPED_COLUMNS))

    @property
    def rejects(self) -> pl.DataFrame:
        frames = [pl.DataFrame(self._rejects, schema=REJECT_COLUMNS, orient="row"), *self._reject_frames]
        return pl.concat(frames, how="vertical")

    @property
    def dropped(self) -> pl.DataFrame:
        frames = [pl.DataFrame(self._dropped, schema=DROPPED_COLUMNS, orient="row"), *self._dropped_frames]
        return pl.concat(frames, how="vertical")

    def kept_records(self) -> int:
        """Distinct input records behind the canonical rows (derived rows without a source_row are
        not input records, and :data:`AUX_TABLES` do not hold records: neither is counted)."""
        keys = [
            t.select("source_file", "source_row").filter(pl.col("source_row").is_not_null())
            for name, t in self.tables.items()
            if t.height and name not in AUX_TABLES
        ]
        if not keys:
            return 0
        return pl.concat(keys).unique().height

    def ledger_counts(self) -> dict[str, int]:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept_records(),
            "dropped": self.dropped.height,
            "rejected": self.rejects.height,
        }


def _fit(frame: pl.DataFrame, columns: dict[str, Any]) -> pl.DataFrame:
    return frame.select(
        [
            (pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t)).alias(c)
            for c, t in columns.items()
        ]
    )


# --------------------------------------------------------------------------- file reading


def read_bytes(path: str | Path) -> tuple[bytes, str | None]:
    """The decompressed content of ``path`` (gzip, zstd or plain, by magic bytes).

    Returns ``(data, error)``: ``error`` is None, or says the compressed stream is truncated or
    corrupt, in which case ``data`` holds every byte that could be decoded before the damage.
    Raises InputError when the file cannot be opened.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise InputError(msg) from None
    if raw[:2] == b"\x1f\x8b":
        return _gunzip(raw)
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        out = bytearray()
        try:
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out += dobj.decompress(raw)
            if not dobj.eof:
                return bytes(out), "zstd stream ends in the middle of a frame (file truncated?)"
        except zstandard.ZstdError as exc:
            return bytes(out), f"zstd stream is corrupt: {exc}"
        return bytes(out), None
    return raw, None


def _gunzip(raw: bytes) -> tuple[bytes, str | None]:
    out = bytearray()
    rest = raw
    while rest:
        dobj = zlib.decompressobj(wbits=31)
        try:
            out += dobj.decompress(rest)
        except zlib.error as exc:
            return bytes(out), f"gzip stream is corrupt: {exc}"
        if not dobj.eof:
            return bytes(out), "gzip stream ends in the middle of a member (file truncated?)"
        rest = dobj.unused_data
        if rest and not rest.strip(b"\0"):
            break
    return bytes(out), None


@dataclass
class CsvTable:
    """A delimited file read as strings: ``frame`` has the file's columns (all Utf8) plus ``_row``
    (0-based data row) and ``_line`` (1-based line where the row starts)."""

    path: str
    frame: pl.DataFrame
    header: list[str]


def read_csv_table(
    path: str | Path,
    extract: Extract,
    *,
    table: str,
    delimiter: str = ",",
    quoting: bool = True,
    required: tuple[str, ...] = (),
    name: str | None = None,
) -> CsvTable:
    """Read a (compressed) CSV/TSV file as strings; bad rows become rejects in ``extract``.

    Every data row either appears in the returned frame or is rejected (``ragged_row``,
    ``bad_utf8``, ``truncated``). Empty strings are nulls. A missing ``required`` column is an
    InputError naming the file, the column and the columns present.

    Args:
        path: the file.
        extract: where rejects go (and whose ``rows_in`` grows by the number of data rows).
        table: source table name, recorded with each reject.
        delimiter: field separator (``\\t`` for FSDS).
        quoting: honour ``"`` quoting (False for FSDS, which has none).
        required: columns that must be in the header.
        name: how the file is named in rejects and provenance (default: the path as given).
    """
    name = name or str(path)
    data, error = read_bytes(path)
    if error:
        # keep every complete line before the damage
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    fast = None if error else _fast_csv(data, delimiter=delimiter, quoting=quoting)
    if fast is not None:
        header, frame = fast
        _check_required(name, header, required)
        extract.rows_in += frame.height
        return CsvTable(name, frame, header)
    text_ok = True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text_ok = False
        text = data.decode("utf-8", errors="surrogateescape")
    rows: list[list[str]] = []
    lines: list[int] = []
    row_ids: list[int] = []
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE,
        strict=False,
    )
    header: list[str] | None = None
    start_line = 1
    row_index = 0
    try:
        for rec in reader:
            line_no = start_line
            start_line = reader.line_num + 1
            if header is None:
                header = [h.strip() for h in rec]
                continue
            if not rec or rec == [""]:
                continue
            raw = delimiter.join(rec).encode("utf-8", errors="surrogateescape")
            if not text_ok and any(_has_surrogate(v) for v in rec):
                extract.reject(
                    name,
                    row_index,
                    line=line_no,
                    table=table,
                    reason="bad_utf8",
                    error=f"{name} line {line_no}: invalid UTF-8 bytes",
                    raw=raw,
                )
            elif len(rec) != len(header):
                extract.reject(
                    name,
                    row_index,
                    line=line_no,
                    table=table,
                    reason="ragged_row",
                    error=f"{name} line {line_no}: {len(rec)} fields, header has {len(header)}",
                    raw=raw,
                )
            else:
                rows.append(rec)
                lines.append(line_no)
                row_ids.append(row_index)
            row_index += 1
    except csv.Error as exc:
        msg = f"{name} line {start_line}: cannot parse CSV: {exc}"
        raise InputError(msg) from None
    extract.rows_in += row_index
    if error:
        extract.rows_in += 1
        extract.reject(name, None, table=table, reason="truncated", error=f"{name}: {error}")
    if header is None:
        msg = f"{name}: empty file (no header row)"
        raise InputError(msg)
    _check_required(name, header, required)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    frame = pl.DataFrame(
        {h: pl.Series(h, list(c), dtype=pl.Utf8) for h, c in zip(_dedupe(header), cols, strict=True)}
    )
    frame = frame.with_columns(
        [pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in frame.columns]
    ).with_columns(
        pl.Series("_row", row_ids, dtype=pl.Int64),
        pl.Series("_line", lines, dtype=pl.Int64),
    )
    return CsvTable(name, frame, header)


def _check_required(name: str, header: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        msg = f"{name}: missing column(s) {missing}; the header has {header}"
        raise InputError(msg)


def _fast_csv(data: bytes, *, delimiter: str, quoting: bool) -> tuple[list[str], pl.DataFrame] | None:
    """The common case with pyarrow's parser: valid UTF-8, one record per line, no ragged rows.

    Returns None whenever the file needs the careful path (any parse error, invalid UTF-8, a quoted
    newline or a blank line, which would shift line numbers, duplicate header names), which then
    produces the same frame plus per-row rejects.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not first:
        return None
    try:
        header_text = first.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields = next(
        csv.reader(
            [header_text], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE
        )
    )
    header = [h.strip() for h in fields]
    if len(set(header)) != len(header) or not all(header):
        return None
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, use_threads=True),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, quote_char='"' if quoting else False, newlines_in_values=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    n = table.num_rows
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if lines != n + 1:  # a quoted newline or a blank line: line numbers need the careful path
        return None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        pl.int_range(n, dtype=pl.Int64).alias("_row"),
        (pl.int_range(n, dtype=pl.Int64) + 2).alias("_line"),
    )
    return header, frame


def _has_surrogate(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _dedupe(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        out.append(n if not seen[n] else f"{n}_{seen[n]}")
        seen[n] += 1
    return out


def display_name(path: str | Path, root: str | Path | None = None) -> str:
    """How a file is named in provenance: relative to ``root`` when given, else as given."""
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return str(path)
