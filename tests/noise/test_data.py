"""Loading labelled data: every record is a row or a reject with file, line and reason."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from dataforge.errors import ConfigError, InputError
from dataforge.io.inputs import InputSpec
from dataforge.noise.data import load_labelled

from ..conftest import SAMPLE, write_jsonl


def _spec(*paths, **kw):
    return InputSpec(paths=tuple(str(p) for p in paths), **kw)


def test_sample_slice_loads_every_row():
    data = load_labelled(_spec(SAMPLE / "labels" / "20news.jsonl.gz"), label_col="label", text_col="text")
    flips = json.loads((SAMPLE / "labels" / "flips.json").read_text())["20news.jsonl.gz"]
    assert data.rows_in == flips["rows"] == data.frame.height
    assert data.rejects.height == 0
    assert data.frame["label"].dtype == pl.Utf8
    assert data.frame["label"].n_unique() == 6
    assert data.frame["id"][0].startswith("20news-test-")
    # the record's other fields are kept as JSON
    assert "newsgroup_file" in json.loads(data.frame["meta"][0])
    assert data.frame["source_line"].to_list() == list(range(1, data.rows_in + 1))


def test_malformed_records_are_rejected_with_line_and_reason(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "fine", "label": "a"},
            b'{"text": "broken json", "label": ',
            {"text": "no label"},
            {"text": "null label", "label": None},
            {"text": "empty label", "label": ""},
            {"text": "list label", "label": ["a"]},
            {"text": 12, "label": "b"},
            {"label": "b"},
            b"[1, 2]",
            b"   ",
            {"text": "int-valued float label", "label": 2.0},
            {"text": "fine too", "label": "b"},
        ],
    )
    data = load_labelled(_spec(path), label_col="label", text_col="text")
    assert data.rows_in == 12
    assert data.frame.height + data.rejects.height == 12
    reasons = dict(zip(data.rejects["source_line"].to_list(), data.rejects["reason"].to_list(), strict=True))
    assert reasons == {
        2: "bad_json",
        3: "missing_label",
        4: "missing_label",
        5: "missing_label",
        6: "wrong_type",
        7: "wrong_type",
        8: "missing_text",
        9: "not_object",
        10: "blank_line",
    }
    errors = data.rejects["error"].to_list()
    assert all(e.startswith(f"{path}:") for e in errors)
    assert any("label field 'label' is missing" in e for e in errors)
    assert any("must be a string, got integer 12" in e for e in errors)
    # mixed int/str labels are compared as strings, with a warning
    assert data.frame["label"].to_list() == ["a", "2", "b"]
    assert data.warnings and "mix strings and integers" in data.warnings[0]
    # raw bytes of the bad line are kept
    assert (
        data.rejects.filter(pl.col("reason") == "bad_json")["raw"][0] == b'{"text": "broken json", "label": '
    )


def test_csv_features_numeric_and_categorical(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,x,colour,y\nr1,1.5,red,a\nr2,,blue,b\nr3,2,red,\nr4,3e2,green,a\nr5,1,red\n")
    data = load_labelled(_spec(path), label_col="y", text_col=None, feature_cols=["x", "colour"])
    assert data.rows_in == 5
    assert data.frame["id"].to_list() == ["r1", "r2", "r4"]
    assert data.frame["x"].to_list() == [1.5, None, 300.0]
    assert data.categorical == ["colour"]
    rej = dict(zip(data.rejects["source_line"].to_list(), data.rejects["reason"].to_list(), strict=True))
    assert rej == {4: "missing_label", 6: "ragged_row"}


def test_parquet_input_and_gzip(tmp_path):
    df = pl.DataFrame({"text": ["a b", "c d", None], "label": [0, 1, 1], "extra": [1, 2, 3]})
    df.write_parquet(tmp_path / "t.parquet")
    data = load_labelled(_spec(tmp_path / "t.parquet"), label_col="label", text_col="text")
    assert data.frame["label"].dtype == pl.Int64
    assert data.frame["label"].to_list() == [0, 1]
    assert data.rejects["reason"].to_list() == ["missing_text"]
    assert data.rejects["source_row"].to_list() == [2]
    assert data.frame["id"].to_list()[0].endswith("t.parquet#row0")
    gz = tmp_path / "g.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "x", "label": "a"}\n{"text": "y", "label": "b"}\n'))
    assert load_labelled(_spec(gz), label_col="label", text_col="text").frame.height == 2


def test_missing_label_column_is_an_error_naming_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "category": "x"}] * 3)
    with pytest.raises(InputError, match="no record has the label field 'label'"):
        load_labelled(_spec(path), label_col="label", text_col="text")
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("text,category\na,x\n")
    with pytest.raises(InputError, match=r"no column\(s\) 'label'; columns: text, category"):
        load_labelled(_spec(csv_path), label_col="label", text_col="text")


def test_text_and_features_are_exclusive(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(ConfigError, match="not both or neither"):
        load_labelled(_spec(path), label_col="label", text_col="text", feature_cols=["f"])
    with pytest.raises(ConfigError, match="cannot also be"):
        load_labelled(_spec(path), label_col="text", text_col="text")
