"""Fuzz the document readers (``dataforge.io.readers.read_batches``): JSONL and CSV/TSV, plain,
gzip or zstd, cut short at any byte; Parquet/Arrow files cut short.

Property: the concatenated batches hold every input record exactly once (``docs + rejects`` equals
the records counted by the test), each generated line ends as the test expects (kept with its text,
or rejected with the expected reason), every reject names the file and its line, or the reader
raises a DataforgeError naming the file. Nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.io.inputs import InputSpec, discover
from dataforge.io.readers import REJECT_REASONS, empty_docs, empty_rejects, read_batches

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=30)
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
WRONG = st.one_of(
    st.integers(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip

# A generated JSONL line: (bytes, expectation); expectation is ("keep", text) or ("reject", reason)
Line = tuple[bytes, tuple[str, Any]]


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


@st.composite
def jsonl_line(draw: st.DrawFn) -> Line:
    kind = draw(
        st.sampled_from(
            ["valid", "valid", "valid", "crlf", "bigint", "text_wrong", "text_null", "text_missing",
             "id_wrong", "nan", "bad_utf8", "blank", "not_object", "deep", "cut_json", "quotes"]
        )
    )  # fmt: skip
    text = draw(ANY_TEXT)
    rec: dict[str, Any] = {"text": text}
    if draw(st.booleans()):
        rec["id"] = draw(st.one_of(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1)))
    if draw(st.booleans()):
        rec["meta"] = draw(st.one_of(TEXT, st.integers(), st.none()))
    if kind == "valid":
        return _dump(rec), ("keep", text)
    if kind == "crlf":
        return _dump(rec) + b"\r", ("keep", text)
    if kind == "bigint":
        return _dump({**rec, "n": 10**30 + draw(st.integers(0, 99))}), ("keep", text)
    if kind == "quotes":
        t = f'"{text}" \\ "'
        return _dump({"text": t}), ("keep", t)
    if kind == "text_wrong":
        return _dump({**rec, "text": draw(WRONG)}), ("reject", "wrong_type")
    if kind == "text_null":
        return _dump({**rec, "text": None}), ("reject", "missing_text")
    if kind == "text_missing":
        return _dump({k: v for k, v in rec.items() if k != "text"}), ("reject", "missing_text")
    if kind == "id_wrong":
        # (infinities are not JSON: the "nan" kind expects bad_json for them)
        bad = draw(
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False),
                st.booleans(),
                st.lists(st.integers(), max_size=2),
            )
        )
        return _dump({**rec, "id": bad}), ("reject", "wrong_type")
    if kind == "nan":
        lit = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        return f'{{"text": "a", "x": {lit}}}'.encode(), ("reject", "bad_json")
    if kind == "bad_utf8":
        body = _dump(rec)
        at = draw(st.integers(1, max(1, len(body) - 2)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
        return body[:at] + bad + body[at:], ("reject", ("bad_utf8", "bad_json"))
    if kind == "blank":
        return draw(st.sampled_from([b"", b"   ", b"\t", b" \r"])), ("reject", "blank_line")
    if kind == "not_object":
        return _dump(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), TEXT))), (
            "reject",
            "not_object",
        )
    if kind == "deep":
        depth = draw(st.sampled_from([1100, 10_000]))
        inner = b"[" * depth + b"]" * depth
        return b'{"text": "a", "deep": ' + inner + b"}", ("reject", "bad_json")
    # cut_json
    body = _dump(rec)
    return body[: draw(st.integers(0, max(0, len(body) - 1)))] or b"{", ("reject", ("bad_json", "bad_utf8"))


def _read_all(path: Path, **spec_kw: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    spec = InputSpec(paths=(str(path),), **spec_kw)
    (f,) = discover(spec)
    docs, rejects = [empty_docs()], [empty_rejects()]
    for b in read_batches(f, spec, batch_rows=7):
        docs.append(b.docs)
        rejects.append(b.rejects)
    return pl.concat(docs), pl.concat(rejects)


def _check_rejects(rejects: pl.DataFrame, path: str) -> None:
    for r in rejects.iter_rows(named=True):
        assert r["reason"] in REJECT_REASONS, r
        assert r["source_file"] == path
        assert path in r["error"], r["error"]
        if r["source_line"] is not None and r["reason"] != "truncated":
            assert f"{path}:{r['source_line']}" in r["error"], r["error"]


@SETTINGS
@given(
    lines=st.lists(jsonl_line(), max_size=12),
    trailing_newline=st.booleans(),
    compression=st.sampled_from(["none", "gzip", "zstd"]),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_jsonl(fz, lines: list[Line], trailing_newline: bool, compression: str, cut: float | None) -> None:
    raw = b"\n".join(b for b, _ in lines) + (b"\n" if trailing_newline and lines else b"")
    blob = fz.compress(raw, compression)
    if cut is not None:
        blob = blob[: int(len(blob) * cut)]
    ext = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"docs.jsonl{ext}")
        path.write_bytes(blob)
        docs, rejects = _read_all(path)
    _check_rejects(rejects, str(path))
    assert (rejects["reason"] == "truncated").sum() <= 1
    if cut is not None and compression != "none":
        # what survives a cut compressed stream depends on the codec's block layout (and a cut
        # inside the magic bytes makes the file plain): only bound the count
        assert docs.height + rejects.height <= len(lines) + 1
    else:
        decoded = fz.decoded_prefix(blob, compression)[0]
        pieces = decoded.split(b"\n")
        n_records = len(pieces) - (1 if decoded.endswith(b"\n") or not decoded else 0)
        assert docs.height + rejects.height == n_records
    assert docs["_line"].n_unique() == docs.height
    if cut is None and raw:
        # untouched input: each generated line ends exactly as expected, in order
        outcome: dict[int, tuple[str, Any]] = {}
        for d in docs.iter_rows(named=True):
            outcome[d["_line"]] = ("keep", d["text"])
        for r in rejects.iter_rows(named=True):
            assert r["source_line"] not in outcome
            outcome[r["source_line"]] = ("reject", r["reason"])
        # an empty last line without a newline after it is not a line of the file
        for i, (_, want) in enumerate(lines[: docs.height + rejects.height], start=1):
            got = outcome[i]
            if want[0] == "reject" and isinstance(want[1], tuple):
                assert got[0] == "reject" and got[1] in want[1], (i, got, want)
            else:
                assert got == want, (i, got, want)


# --------------------------------------------------------------------------- CSV


CELL = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@st.composite
def csv_file(draw: st.DrawFn) -> tuple[bytes, str]:
    """(file bytes, delimiter): a header then rows that are regular, ragged, quoted or bad UTF-8."""
    delim = draw(st.sampled_from([",", "\t"]))
    extra = draw(st.lists(st.sampled_from(["a", "b", "id", "text", "c"]), max_size=3))
    header = ["text", *extra] if draw(st.booleans()) else [*extra, "text"]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delim, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    w.writerow(header)
    out = buf.getvalue().encode()
    if draw(st.booleans()):
        out = b"\xef\xbb\xbf" + out
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["row", "row", "ragged", "bad_utf8", "blank"]))
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter=delim, lineterminator="\n")
        width = len(header) + (draw(st.sampled_from([-1, 1, 2])) if kind == "ragged" else 0)
        w.writerow([draw(CELL) for _ in range(max(width, 0))])
        row = buf.getvalue().encode()
        if kind == "bad_utf8":
            row = b"\xff" + row
        if kind == "blank":
            row = b"\n"
        out += row
    return out, delim


def _csv_records(data: bytes, delim: str) -> int:
    """Data records as Python's csv module sees them (blank lines included)."""
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delim))
    return max(len(rows) - 1, 0)


@SETTINGS
@given(
    file=csv_file(),
    compression=st.sampled_from(["none", "gzip", "zstd"]),
    cut=st.one_of(st.none(), st.none(), st.floats(0, 1)),
)
def test_csv(fz, file: tuple[bytes, str], compression: str, cut: float | None) -> None:
    data, delim = file
    blob = fz.compress(data, compression)
    if cut is not None:
        blob = blob[: int(len(blob) * cut)]
    ext = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"docs.{'csv' if delim == ',' else 'tsv'}{ext}")
        path.write_bytes(blob)
        try:
            docs, rejects = _read_all(path)
        except Exception as exc:
            fz.expect_clean_error(exc, str(path))
            return
    _check_rejects(rejects, str(path))
    assert (rejects["reason"] == "truncated").sum() <= 1
    if cut is None:
        assert docs.height + rejects.height == _csv_records(data, delim)
        assert "truncated" not in rejects["reason"].to_list()
    if cut is None:
        # the BOM is not part of the first column's name: the text column is always found
        assert not any(c.startswith("\ufeff") for d in docs["meta"].drop_nulls() for c in json.loads(d))


@pytest.mark.parametrize(
    "content",
    [b"", b"text\n", b"text,id\r\n", b"\xef\xbb\xbftext\n", b"id,text,id\n1,a,2\n", b"a,text,a\n1,x,2\n"],
)
def test_csv_edge_files(tmp_path, fz, content: bytes) -> None:
    """Empty file, header only, CRLF header, BOM, duplicate header names: every value is kept
    somewhere (a duplicate column name is an InputError naming it), rows add up."""
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    docs, error = fz.call(_read_all, path)
    if error is not None:
        dup = "'id'" if content.startswith(b"id") else "'a'"
        fz.expect_clean_error(error, str(path), value=f"repeats column {dup}")
        return
    docs, rejects = docs
    assert docs.height + rejects.height == _csv_records(content, ",")
    header = next(csv.reader(io.StringIO(content.decode("utf-8-sig"))), [])
    for meta in docs["meta"]:
        assert len(json.loads(meta or "{}")) == len([h for h in header if h != "text"]) - ("id" in header)


# --------------------------------------------------------------------------- columnar


@SETTINGS
@given(fmt=st.sampled_from(["parquet", "arrow"]), cut=st.floats(0, 0.999), n=st.integers(0, 50))
def test_columnar_cut_short(fz, fmt: str, cut: float, n: int) -> None:
    frame = pl.DataFrame({"text": [f"doc {i}" for i in range(n)], "id": list(range(n))})
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp, f"full.{fmt}")
        frame.write_parquet(full) if fmt == "parquet" else frame.write_ipc(full)
        blob = full.read_bytes()
        os.remove(full)
        path = Path(tmp, f"cut.{fmt}")
        path.write_bytes(blob[: int(len(blob) * cut)])
        try:
            docs, rejects = _read_all(path)
        except Exception as exc:
            fz.expect_clean_error(exc, str(path))
            return
    _check_rejects(rejects, str(path))
    assert docs.height <= n


@pytest.mark.parametrize("dtype", [pl.Int64, pl.Float64, pl.Boolean, pl.List(pl.Int64)])
def test_columnar_wrong_text_type(tmp_path, dtype) -> None:
    values = {pl.Int64: [1, 2], pl.Float64: [float("nan"), float("inf")], pl.Boolean: [True, None]}
    frame = pl.DataFrame({"text": pl.Series(values.get(dtype, [[1], []]), dtype=dtype)})
    path = tmp_path / "x.parquet"
    frame.write_parquet(path)
    docs, rejects = _read_all(path)
    assert docs.height == 0 and rejects.height == 2
    assert set(rejects["reason"]) == {"wrong_type"}
    assert all(str(path) in e for e in rejects["error"])


def test_jsonl_huge_line(tmp_path) -> None:
    """A 50 MB line is one document (or one reject), never a crash or a split record."""
    path = tmp_path / "big.jsonl"
    big = "x" * (50 << 20)
    path.write_bytes(b'{"text": "a"}\n' + _dump({"text": big}) + b"\n" + b'{"text": "' + big.encode() + b"\n")
    docs, rejects = _read_all(path)
    assert docs.height == 2 and docs["text"][1] == big
    assert rejects.height == 1 and rejects["reason"][0] == "bad_json"
    assert "truncated to" in rejects["error"][0]
