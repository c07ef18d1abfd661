"""read_csv_table: the pyarrow fast path gives exactly the frame of the careful path, and every
file the fast path cannot take (ragged rows, bad UTF-8, quoted newlines, blank lines) still reads.
Extract.concat: the parts of a parallel read joined as one reader call records them."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataforge.records import model
from dataforge.records.model import Extract, read_csv_table

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "ehr"


def _both(path: Path, monkeypatch, **kw):
    fast_ex, slow_ex = Extract.empty("t"), Extract.empty("t")
    fast = read_csv_table(path, fast_ex, table="t", **kw)
    with monkeypatch.context() as m:
        m.setattr(model, "_fast_csv", lambda *a, **k: None)
        slow = read_csv_table(path, slow_ex, table="t", **kw)
    return fast, fast_ex, slow, slow_ex


@pytest.mark.parametrize("folder", ["synthea_csv", "mimic_iv_demo", "omop"])
def test_fast_path_equals_careful_path_on_real_files(folder, monkeypatch):
    files = sorted((SAMPLE / folder).glob("*.csv.gz"))
    assert files
    used_fast = 0
    for f in files:
        data = gzip.decompress(f.read_bytes())
        used_fast += model._fast_csv(data, delimiter=",", quoting=True) is not None
        fast, fex, slow, sex = _both(f, monkeypatch)
        assert fast.header == slow.header, f
        assert fast.frame.equals(slow.frame), f
        assert fex.rows_in == sex.rows_in == fast.frame.height
    assert used_fast == len(files)  # real exports take the fast path


@pytest.mark.parametrize(
    ("content", "rows", "rejects", "lines"),
    [
        (b"a,b\n1,2\n3,4,5\n6,7\n", 2, ["ragged_row"], [2, 4]),
        (b"a,b\n1,2\n3,\xff\n", 1, ["bad_utf8"], [2]),
        (b'a,b\n1,"two\nlines"\n3,4\n', 2, [], [2, 4]),
        (b"a,b\n1,2\n\n3,4\n", 2, [], [2, 4]),
    ],
)
def test_files_the_fast_path_declines(tmp_path, monkeypatch, content, rows, rejects, lines):
    p = tmp_path / "t.csv"
    p.write_bytes(content)
    assert model._fast_csv(content, delimiter=",", quoting=True) is None
    ex = Extract.empty("t")
    t = read_csv_table(p, ex, table="t")
    assert t.frame.height == rows
    assert ex.rejects["reason"].to_list() == rejects
    assert ex.rows_in == rows + len(rejects)
    # line numbers count physical lines (the quoted newline and the blank line shift them)
    assert t.frame["_line"].to_list() == lines


def _part(
    name: str, values: list[int], *, rejects: int = 0, frame_rejects: int = 0, counter: str = "c"
) -> Extract:
    ex = Extract.empty("t")
    ex.tables["fact"] = pl.DataFrame(
        {"v": values, "source_file": [name] * len(values), "source_row": list(range(len(values)))},
        schema={"v": pl.Int64, "source_file": pl.Utf8, "source_row": pl.Int64},
    )
    for i in range(rejects):
        ex.reject(name, 10 + i, line=11 + i, reason="bad", error=f"{name} line {11 + i}: bad")
    if frame_rejects:
        ex.reject_frame(
            pl.DataFrame({"source_file": [name] * frame_rejects, "reason": ["framed"] * frame_rejects,
                          "error": [f"{name}: framed"] * frame_rejects})
        )  # fmt: skip
    ex.drop(name, 0, reason="skip")
    ex.rows_in = len(values) + rejects + frame_rejects + 1
    ex.inputs.append({"path": name, "role": "records", "table": "t", "rows": ex.rows_in})
    ex.counters[counter] += len(values)
    return ex


def test_extract_concat_joins_parts_in_order():
    a = _part("a", [1, 2], rejects=1, frame_rejects=1)
    b = _part("b", [3], rejects=2, frame_rejects=1, counter="d")
    b.tables["extra"] = pl.DataFrame({"source_file": ["b"], "source_row": [5]})
    out = Extract.concat([Extract.empty("t"), a, b])
    assert list(out.tables) == ["fact", "extra"]
    assert out.tables["fact"]["v"].to_list() == [1, 2, 3]
    assert out.tables["fact"].n_chunks() == 1
    assert_frame_equal(out.tables["extra"], b.tables["extra"])
    assert out.rows_in == a.rows_in + b.rows_in
    assert [i["path"] for i in out.inputs] == ["a", "b"]
    assert dict(out.counters) == {"c": 2, "d": 1}
    # as one reader records them: rejects added one at a time over all parts, then the frames
    assert out.rejects.select("source_file", "reason", "source_line").rows() == [
        ("a", "bad", 11), ("b", "bad", 11), ("b", "bad", 12), ("a", "framed", None), ("b", "framed", None),
    ]  # fmt: skip
    assert out.dropped["source_file"].to_list() == ["a", "b"]
    assert out.ledger_counts() == {"rows_in": 10, "kept": 4, "dropped": 2, "rejected": 5}
    # the parts are not changed
    assert a.rejects.height == 2 and a.tables["fact"].height == 2


def test_extract_concat_refuses_no_parts_and_mixed_sources():
    with pytest.raises(ValueError, match="at least one part"):
        Extract.concat([])
    with pytest.raises(ValueError, match="different sources"):
        Extract.concat([Extract.empty("fhir"), Extract.empty("omop")])
