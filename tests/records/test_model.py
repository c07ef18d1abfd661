"""read_csv_table: the pyarrow fast path gives exactly the frame of the careful path, and every
file the fast path cannot take (ragged rows, bad UTF-8, quoted newlines, blank lines) still reads."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

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
