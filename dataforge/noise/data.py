"""Load a labelled dataset for label-noise analysis: every record is either a row or a reject.

Unlike the document readers, noise analysis needs the whole dataset at once (cross-validation
sees every row), a label column, and either a text column or numeric/categorical feature columns.
Records that cannot be used go to ``rejects`` with file, line (or row) and the reason, exactly like
the document readers' rejects, so the run's ledger adds up:

- ``bad_utf8`` (JSONL, CSV), ``bad_json``, ``not_object``, ``blank_line`` (JSONL), ``ragged_row``,
  ``bad_csv`` (CSV),
  ``corrupt_file``, ``truncated``: the record cannot be read;
- ``missing_label``: the label is absent, null, NaN or an empty string;
- ``missing_text``: the text field is absent or null (text mode);
- ``wrong_type``: the label is not a string, boolean or integer within 64 bits (a float label
  counts when it is a whole number below 2**53), or the text is not a string.

Example:
    >>> data = load_labelled(InputSpec(paths=("train.jsonl",)), label_col="label", text_col="text")  # doctest: +SKIP
    >>> data.frame.columns  # doctest: +SKIP
    ['id', 'label', 'text', 'meta', 'source_file', 'source_row', 'source_line']
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from dataforge.errors import ConfigError, InputError
from dataforge.io.inputs import InputFile, InputSpec, discover
from dataforge.io.readers import (
    _STREAM_ERRORS,
    REJECT_SCHEMA,
    _dumps,
    _excerpt,
    _iter_line_chunks,
    _type_name,
    columnar_schema,
    open_binary,
)

log = logging.getLogger(__name__)

# an integer label must fit the Int64 label column; a float label counts as an integer only while
# every integer up to it is exact in a double (2**53); larger ones are wrong_type rejects
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_FLOAT_INT = 2**53
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\udc80-\udcff]")

NOISE_REJECT_REASONS = (
    "bad_json",
    "bad_utf8",
    "not_object",
    "blank_line",
    "ragged_row",
    "bad_csv",
    "truncated",
    "corrupt_file",
    "missing_label",
    "missing_text",
    "wrong_type",
)


@dataclass
class LabelledData:
    """The usable rows (in input order) and the rejected records of a labelled dataset.

    ``frame`` columns: ``id``, ``label`` (the given label as a string or integer), then ``text`` or
    the feature columns, ``meta`` (the record's other fields as JSON), ``source_file``,
    ``source_row`` (0-based record index in the file) and ``source_line`` (1-based, JSONL/CSV).
    ``input_index`` (column ``_input``) is the record's position over all input records, so
    precomputed probabilities aligned with the raw input can be matched to the rows.
    """

    frame: pl.DataFrame
    rejects: pl.DataFrame
    files: list[InputFile]
    rows_in: int
    label_col: str
    text_col: str | None
    feature_cols: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Collector:
    def __init__(self, *, label_col: str, text_col: str | None, feature_cols: list[str], id_col: str) -> None:
        self.label_col, self.text_col, self.feature_cols, self.id_col = (
            label_col,
            text_col,
            feature_cols,
            id_col,
        )
        self.used = {label_col, id_col, *([text_col] if text_col else []), *feature_cols}
        self.ids: list[str] = []
        self.labels: list[Any] = []
        self.texts: list[str] = []
        self.features: dict[str, list[Any]] = {c: [] for c in feature_cols}
        self.metas: list[str | None] = []
        self.sources: list[str] = []
        self.rows: list[int] = []
        self.lines: list[int | None] = []
        self.inputs: list[int] = []
        self.rejects: list[tuple[str, int | None, int | None, str, str, bytes | None]] = []
        self.seen_label = False
        self.seen_text = False
        self.n = 0

    def reject(
        self, path: str, row: int | None, line: int | None, reason: str, error: str, raw: bytes | None
    ) -> None:
        self.rejects.append((path, row, line, reason, error, raw[: 1 << 20] if raw else raw))
        self.n += 1

    def record(self, path: str, row: int, line: int | None, rec: dict[str, Any], raw: bytes | None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}: row {row}"
        lc = self.label_col
        if lc in rec:
            self.seen_label = True
        label = rec.get(lc)
        if label is None or (isinstance(label, float) and math.isnan(label)) or label == "":
            if lc not in rec:
                what = "is missing"
            elif label is None:
                what = "is null"
            else:
                what = "is an empty string" if label == "" else "is NaN"
            self.reject(path, row, line, "missing_label", f"{where}: label field {lc!r} {what}", raw)
            return
        if isinstance(label, float) and label.is_integer() and abs(label) <= _EXACT_FLOAT_INT:
            label = int(label)
        if not isinstance(label, str | int) or (
            isinstance(label, int) and not isinstance(label, bool) and not _INT64_MIN <= label <= _INT64_MAX
        ):
            self.reject(
                path,
                row,
                line,
                "wrong_type",
                f"{where}: label field {lc!r} must be a string, boolean or integer within 64 bits, got {_type_name(label)} {_excerpt(label)}",
                raw,
            )
            return
        if isinstance(label, bool):
            label = str(label).lower()
        if self.text_col:
            tc = self.text_col
            if tc in rec:
                self.seen_text = True
            text = rec.get(tc)
            if text is None:
                what = "is null" if tc in rec else "is missing"
                self.reject(path, row, line, "missing_text", f"{where}: text field {tc!r} {what}", raw)
                return
            if not isinstance(text, str):
                self.reject(
                    path,
                    row,
                    line,
                    "wrong_type",
                    f"{where}: text field {tc!r} must be a string, got {_type_name(text)} {_excerpt(text)}",
                    raw,
                )
                return
            self.texts.append(text)
        for c in self.feature_cols:
            self.features[c].append(rec.get(c))
        id_value = rec.get(self.id_col)
        self.ids.append(
            str(id_value)
            if id_value is not None and not isinstance(id_value, dict | list)
            else where.replace(": row ", "#row")
        )
        self.labels.append(label)
        others = {k: v for k, v in rec.items() if k not in self.used}
        self.metas.append(_dumps(others) if others else None)
        self.sources.append(path)
        self.rows.append(row)
        self.lines.append(line)
        self.inputs.append(self.n)
        self.n += 1


def _read_jsonl(f: InputFile, c: _Collector) -> None:
    row = -1
    lineno = 0
    with open_binary(f) as stream:
        for chunk, stream_error, tail in _iter_line_chunks(stream):
            for line in chunk.lines():
                lineno += 1
                row += 1
                raw = line
                line = line.rstrip(b"\r")
                if lineno == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]  # a byte order mark is not part of the first record
                where = f"{f.path}:{lineno}"
                if not line.strip():
                    c.reject(f.path, row, lineno, "blank_line", f"{where}: blank line", raw)
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError as uexc:
                        bad = line[uexc.start : uexc.start + 4]
                        c.reject(
                            f.path,
                            row,
                            lineno,
                            "bad_utf8",
                            f"{where}: invalid UTF-8 byte(s) {bad!r} at byte {uexc.start}",
                            raw,
                        )
                        continue
                    c.reject(f.path, row, lineno, "bad_json", f"{where}: invalid JSON: {exc}", raw)
                    continue
                if not isinstance(rec, dict):
                    c.reject(
                        f.path,
                        row,
                        lineno,
                        "not_object",
                        f"{where}: expected a JSON object, got {_type_name(rec)}",
                        raw,
                    )
                    continue
                c.record(f.path, row, lineno, rec, raw)
            if stream_error:
                c.reject(
                    f.path,
                    row + 1 if tail else None,
                    lineno + 1,
                    "truncated",
                    f"{f.path}:{lineno + 1}: {stream_error}",
                    tail or None,
                )
                return


def _read_csv(f: InputFile, c: _Collector) -> None:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open_binary(f) as stream:
            # utf-8-sig: a byte order mark is not part of the first column's name; invalid UTF-8
            # is kept as surrogates so that its row (not the whole file) is rejected as bad_utf8
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(text, delimiter=f.delimiter)
            try:
                header = next(reader)
            except StopIteration:
                return
            if any(_SURROGATE.search(h) for h in header):
                msg = f"{f.path}:1: invalid UTF-8 in the CSV header {header!r}; re-encode the file as UTF-8"
                raise InputError(msg)
            _check_columns(f, header, c)
            width = len(header)
            row = -1
            line_end = reader.line_num
            while True:
                start = line_end + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    row += 1
                    line_end = reader.line_num
                    c.reject(f.path, row, start, "bad_csv", f"{f.path}:{start}: {exc}", None)
                    continue
                row += 1
                line_end = reader.line_num
                if len(fields) != width:
                    raw = f.delimiter.join(fields).encode("utf-8", "surrogateescape")
                    c.reject(
                        f.path,
                        row,
                        start,
                        "blank_line" if not fields else "ragged_row",
                        f"{f.path}:{start}: expected {width} fields (header), got {len(fields)}",
                        raw,
                    )
                    continue
                bad = next((i for i, v in enumerate(fields) if _SURROGATE.search(v)), None)
                if bad is not None:
                    c.reject(
                        f.path,
                        row,
                        start,
                        "bad_utf8",
                        f"{f.path}:{start}: invalid UTF-8 in column {header[bad]!r}",
                        f.delimiter.join(fields).encode("utf-8", "surrogateescape"),
                    )
                    continue
                rec = {h: (v if v != "" else None) for h, v in zip(header, fields, strict=True)}
                c.record(f.path, row, start, rec, f.delimiter.join(fields).encode())
    except _STREAM_ERRORS as exc:
        c.reject(
            f.path,
            None,
            None,
            "truncated",
            f"{f.path}: compressed stream is truncated or corrupt: {exc}",
            None,
        )


def _read_columnar(f: InputFile, c: _Collector) -> None:
    schema = columnar_schema(f)
    _check_columns(f, schema.names, c)
    try:
        df = pl.read_parquet(f.path) if f.format == "parquet" else pl.from_arrow(_read_ipc(f))
    except (pa.ArrowInvalid, OSError, pl.exceptions.PolarsError) as exc:
        c.reject(f.path, None, None, "corrupt_file", f"{f.path}: unreadable: {exc}", None)
        return
    assert isinstance(df, pl.DataFrame)
    for row, rec in enumerate(df.iter_rows(named=True)):
        c.record(f.path, row, None, rec, None)


def _read_ipc(f: InputFile) -> pa.Table:
    import pyarrow.ipc as ipc

    with pa.memory_map(f.path) as src:
        try:
            return ipc.open_file(src).read_all()
        except pa.ArrowInvalid:
            src.seek(0)
            return ipc.open_stream(src).read_all()


def _check_columns(f: InputFile, names: list[str], c: _Collector) -> None:
    needed = [c.label_col, *([c.text_col] if c.text_col else []), *c.feature_cols]
    missing = [n for n in needed if n not in names]
    if missing:
        msg = f"{f.path}: no column(s) {', '.join(map(repr, missing))}; columns: {', '.join(names)}"
        raise InputError(msg)


def _feature_frame(values: dict[str, list[Any]]) -> tuple[dict[str, pl.Series], list[str]]:
    """Numeric columns as Float64 (null = missing); any other column as categorical strings."""
    out: dict[str, pl.Series] = {}
    categorical: list[str] = []
    for name, vals in values.items():
        nums: list[float | None] = []
        numeric = True
        for v in vals:
            if v is None:
                nums.append(None)
            elif isinstance(v, bool | int | float):
                nums.append(float(v))
            elif isinstance(v, str):
                try:
                    nums.append(float(v))
                except ValueError:
                    numeric = False
                    break
            else:
                numeric = False
                break
        if numeric:
            out[name] = pl.Series(name, nums, dtype=pl.Float64).fill_nan(None)
        else:
            categorical.append(name)
            out[name] = pl.Series(
                name,
                [None if v is None else (v if isinstance(v, str) else _dumps(v)) for v in vals],
                dtype=pl.Utf8,
            )
    return out, categorical


def load_labelled(
    spec: InputSpec,
    *,
    label_col: str = "label",
    text_col: str | None = "text",
    feature_cols: list[str] | tuple[str, ...] = (),
) -> LabelledData:
    """Read every input file into one labelled frame plus rejects.

    Args:
        spec: inputs (``spec.id_field`` names the id column; ``spec.text_field`` is ignored).
        label_col: column holding the given label.
        text_col: column holding the text (text mode), or None for feature mode.
        feature_cols: numeric or categorical feature columns (feature mode).

    Raises:
        InputError: a path is missing, a file lacks a needed column, or the label column is never present.
        ConfigError: neither or both of text_col and feature_cols.
    """
    feature_cols = list(feature_cols)
    if bool(text_col) == bool(feature_cols):
        msg = (
            "give either a text column (--text-col) or feature columns (--feature-cols), not both or neither"
        )
        raise ConfigError(msg)
    if label_col in feature_cols or label_col == text_col:
        msg = f"the label column {label_col!r} cannot also be a text or feature column"
        raise ConfigError(msg)
    files = discover(spec)
    c = _Collector(label_col=label_col, text_col=text_col, feature_cols=feature_cols, id_col=spec.id_field)
    for f in files:
        if f.format == "jsonl":
            _read_jsonl(f, c)
        elif f.format == "csv":
            _read_csv(f, c)
        else:
            _read_columnar(f, c)
    if c.n and not c.seen_label:
        msg = (
            f"no record has the label field {label_col!r} (read {c.n} records from "
            f"{', '.join(f.path for f in files)}); pass --label-col"
        )
        raise InputError(msg)
    if text_col and c.n and not c.seen_text:
        msg = (
            f"no record has the text field {text_col!r} (read {c.n} records from "
            f"{', '.join(f.path for f in files)}); pass --text-col or --feature-cols"
        )
        raise InputError(msg)
    warnings: list[str] = []
    kinds = {type(v) for v in c.labels}
    if kinds == {int}:
        labels = pl.Series("label", c.labels, dtype=pl.Int64)
    else:
        if len(kinds) > 1:
            warnings.append("labels mix strings and integers; all are compared as strings")
        labels = pl.Series("label", [str(v) for v in c.labels], dtype=pl.Utf8)
    cols: dict[str, pl.Series] = {"id": pl.Series("id", c.ids, dtype=pl.Utf8), "label": labels}
    categorical: list[str] = []
    if text_col:
        cols["text"] = pl.Series("text", c.texts, dtype=pl.Utf8)
    else:
        feats, categorical = _feature_frame(c.features)
        cols.update(feats)
    cols["meta"] = pl.Series("meta", c.metas, dtype=pl.Utf8)
    cols["source_file"] = pl.Series("source_file", c.sources, dtype=pl.Utf8)
    cols["source_row"] = pl.Series("source_row", c.rows, dtype=pl.Int64)
    cols["source_line"] = pl.Series("source_line", c.lines, dtype=pl.Int64)
    cols["_input"] = pl.Series("_input", c.inputs, dtype=pl.Int64)
    frame = pl.DataFrame(cols)
    rejects = pl.DataFrame(
        [list(col) for col in zip(*c.rejects, strict=True)] if c.rejects else None,
        schema=REJECT_SCHEMA,
        orient="col",
    )
    log.info("read %d records: %d usable, %d rejected", c.n, frame.height, rejects.height)
    return LabelledData(
        frame=frame,
        rejects=rejects,
        files=files,
        rows_in=c.n,
        label_col=label_col,
        text_col=text_col,
        feature_cols=feature_cols,
        categorical=categorical,
        warnings=warnings,
    )
