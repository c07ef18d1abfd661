"""Fuzz ``dataforge.noise.data.load_labelled``: JSONL/CSV (plain, gzip, zstd, cut short), Parquet.

Property: ``rows_in == frame.height + rejects.height`` equals the records the test counts; every
generated record ends as expected (usable with its label, or rejected with the expected reason);
rejects name file and line; or a DataforgeError naming the file. Labels of any JSON type, NaN,
huge numbers and empty strings are covered.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.io.inputs import InputSpec
from dataforge.noise.data import NOISE_REJECT_REASONS, load_labelled

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(codec="utf-8"), max_size=20)

# label value -> expected outcome ("keep", str(label)) or ("reject", reason)
LABELS: list[tuple[Any, tuple[str, str]]] = [
    ("spam", ("keep", "spam")),
    (3, ("keep", "3")),
    (True, ("keep", "true")),
    (2.0, ("keep", "2")),
    (None, ("reject", "missing_label")),
    ("", ("reject", "missing_label")),
    (2.5, ("reject", "wrong_type")),
    (1e300, ("reject", "wrong_type")),
    (-(2**70), ("reject", "wrong_type")),
    ([1], ("reject", "wrong_type")),
    ({"a": 1}, ("reject", "wrong_type")),
]


@st.composite
def labelled_line(draw: st.DrawFn) -> tuple[bytes, tuple[str, Any]]:
    kind = draw(
        st.sampled_from(
            [
                "rec",
                "rec",
                "rec",
                "no_label",
                "text_bad",
                "blank",
                "bad_json",
                "bad_utf8",
                "deep",
                "array",
                "bom",
            ]
        )
    )
    label, want = draw(st.sampled_from(LABELS))
    text = draw(TEXT)
    rec: dict[str, Any] = {"text": text, "label": label}
    if draw(st.booleans()):
        rec["id"] = draw(st.one_of(st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=2)))
    if kind == "rec":
        return json.dumps(rec).encode(), want
    if kind == "bom":
        return b"\xef\xbb\xbf" + json.dumps(rec).encode(), ("any", None)
    if kind == "no_label":
        return json.dumps({"text": text}).encode(), ("reject", "missing_label")
    if kind == "text_bad":
        bad = draw(st.sampled_from([None, 1, [], {}]))
        return json.dumps({"text": bad, "label": "x"}).encode(), (
            "reject",
            "missing_text" if bad is None else "wrong_type",
        )
    if kind == "blank":
        return draw(st.sampled_from([b"", b"  ", b"\r"])), ("reject", "blank_line")
    if kind == "bad_json":
        return b'{"label": NaN, "text": "a"}', ("reject", "bad_json")
    if kind == "bad_utf8":
        return b'{"label": "a", "text": "\xff"}', ("reject", "bad_utf8")
    if kind == "deep":
        return b'{"label": "a", "text": "b", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", ("reject", "bad_json")
    return b"[1, 2]", ("reject", "not_object")


def _check(data, path: str) -> None:
    assert data.rows_in == data.frame.height + data.rejects.height
    for r in data.rejects.iter_rows(named=True):
        assert r["reason"] in NOISE_REJECT_REASONS, r
        assert path in r["error"], r
        if r["source_line"] is not None and r["reason"] != "truncated":
            assert f"{path}:{r['source_line']}" in r["error"], r


@SETTINGS
@given(
    lines=st.lists(labelled_line(), max_size=10),
    compression=st.sampled_from(["none", "gzip", "zstd"]),
    cut=st.one_of(st.none(), st.none(), st.floats(0, 1)),
)
def test_jsonl(fz, lines, compression: str, cut: float | None) -> None:
    raw = b"".join(b + b"\n" for b, _ in lines)
    blob = fz.compress(raw, compression)
    if cut is not None:
        blob = blob[: int(len(blob) * cut)]
    ext = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, f"train.jsonl{ext}")
        path.write_bytes(blob)
        data, error = fz.call(
            load_labelled, InputSpec(paths=(str(path),)), label_col="label", text_col="text"
        )
    if error is not None:  # only "no record has the label/text field"
        assert "no record has the" in str(error), error
        fz.expect_clean_error(error, str(path))
        return
    _check(data, str(path))
    if cut is not None and compression != "none":
        assert data.rows_in <= len(lines) + 1  # see test_fuzz_documents.test_jsonl
    else:
        decoded = fz.decoded_prefix(blob, compression)[0]
        # complete lines, plus a last line cut short (no newline): a bad_json record
        assert data.rows_in == decoded.count(b"\n") + (bool(decoded) and not decoded.endswith(b"\n"))
    if cut is None:
        got: dict[int, tuple[str, Any]] = {}
        for r in data.frame.iter_rows(named=True):
            got[r["source_line"]] = ("keep", str(r["label"]))
        for r in data.rejects.iter_rows(named=True):
            got[r["source_line"]] = ("reject", r["reason"])
        for i, (_, want) in enumerate(lines, start=1):
            if want[0] != "any":
                assert got[i] == want, (i, got[i], want, lines[i - 1][0][:80])


@st.composite
def labelled_csv(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, Any]]]:
    header = draw(st.sampled_from([["text", "label"], ["label", "text", "id"], ["id", "label", "text", "x"]]))
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    w.writerow(header)
    wants: list[tuple[str, Any]] = []
    out = (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + buf.getvalue().encode()
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["row", "row", "ragged", "no_label", "quoted", "bad_utf8"]))
        cells = {
            h: draw(
                st.text(st.characters(codec="utf-8", exclude_characters="\x00\r"), min_size=1, max_size=8)
            )
            for h in header
        }
        if kind == "no_label":
            cells["label"] = ""
        if kind == "quoted":
            cells["text"] = 'say "hi",\nthen\r\nleave'
        if kind == "bad_utf8":
            # the invalid byte goes in front of the row: its first field must not need quoting,
            # or the byte would put the opening quote mid-field and change how the row splits
            cells[header[0]] = "bad"
        row = [cells[h] for h in header] + (["extra"] if kind == "ragged" else [])
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\n").writerow(row)
        line = buf.getvalue().encode()
        if kind == "bad_utf8":
            line = b"\xff" + line
        out += line
        wants.append(
            {
                "ragged": ("reject", "ragged_row"),
                "no_label": ("reject", "missing_label"),
                "bad_utf8": ("reject", "bad_utf8"),
            }.get(kind, ("keep", cells["label"]))
        )
    return out, wants


@SETTINGS
@given(
    file=labelled_csv(),
    compression=st.sampled_from(["none", "gzip"]),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_csv(fz, file, compression: str, cut: float | None) -> None:
    content, wants = file
    blob = fz.compress(content, compression)
    if cut is not None:
        blob = blob[: int(len(blob) * cut)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "train.csv" + (".gz" if compression == "gzip" else ""))
        path.write_bytes(blob)
        data, error = fz.call(
            load_labelled, InputSpec(paths=(str(path),)), label_col="label", text_col="text"
        )
    if error is not None:
        fz.expect_clean_error(error, str(path))
        return
    _check(data, str(path))
    if cut is None:
        kept = data.frame.sort("source_row")
        assert data.rows_in == len(wants)
        got = {r["source_row"]: ("keep", str(r["label"])) for r in kept.iter_rows(named=True)}
        got |= {r["source_row"]: ("reject", r["reason"]) for r in data.rejects.iter_rows(named=True)}
        for i, want in enumerate(wants):
            assert got[i] == want, (i, got[i], want)


@pytest.mark.parametrize("label", [float("nan"), float("inf"), 1e300, None, 7.0])
def test_parquet_float_labels(tmp_path, fz, label: float | None) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame({"text": ["a", "b"], "label": [label, 1.0]}).write_parquet(path)
    data, error = fz.call(load_labelled, InputSpec(paths=(str(path),)), label_col="label", text_col="text")
    assert error is None, error
    _check(data, str(path))
    assert data.rows_in == 2


def test_feature_mode_wrong_types(tmp_path, fz) -> None:
    path = tmp_path / "f.jsonl"
    recs = [
        {"label": "a", "x": 1},
        {"label": "b", "x": "2.5"},
        {"label": "a", "x": [1]},
        {"label": "b", "x": None},
    ]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    data, error = fz.call(
        load_labelled, InputSpec(paths=(str(path),)), label_col="label", text_col=None, feature_cols=["x"]
    )
    assert error is None, error
    _check(data, str(path))
    assert data.rows_in == 4
