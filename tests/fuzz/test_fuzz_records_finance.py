"""Fuzz the finance record readers: companyfacts JSON, FSDS (sub/num .txt), XBRL instances.

Generated inputs mix valid facts with unexpected units (``EUR``, ``foo/bar``, empty), values of
every JSON type (non-numeric, NaN, huge), missing/invalid dates and ``start`` after ``end``, wrong
types for ``cik``/``fy``/``form``/``label``, broken structure (a concept or unit list that is not
an object/list); FSDS rows with bad ``ddate``/``qtrs``/``value``/``uom`` and unknown ``adsh``; XBRL
facts with unknown ``contextRef``/``unitRef``, nil facts, bad values and malformed or cut XML.

Property: ``rows_in == kept + dropped + rejected`` and ``rows_in`` equals the records the test
counts (data points / num rows / fact elements); every reject names the file; or a DataforgeError
naming the file.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.records.finance import read_companyfacts, read_fsds, read_xbrl

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALS = st.one_of(
    st.integers(-(10**30), 10**30), st.sampled_from(["12.5", "abc", "", "1e5", "NaN", "Infinity", "1.50000000000000"]),
    st.booleans(), st.none(), st.just([1]), st.just({"v": 1}), st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
DATES = st.one_of(
    st.sampled_from(["2023-03-31", "2022-12-31", "2023-02-30", "31/03/2023", "", "0001-01-01"]),
    st.integers(),
    st.none(),
)
ODD = st.one_of(st.integers(-(10**25), 10**25), st.text(max_size=5), st.none(), st.booleans(), st.just([1]))


@st.composite
def data_point(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.integers(), st.text(max_size=4), st.none(), st.just([])))
    p: dict[str, Any] = {
        "end": "2023-03-31",
        "val": 100,
        "accn": "0001-23-000001",
        "fy": 2023,
        "fp": "Q1",
        "form": "10-Q",
        "filed": "2023-05-01",
    }
    for key in draw(
        st.sets(
            st.sampled_from(["end", "val", "start", "filed", "fy", "fp", "form", "accn", "frame"]), max_size=3
        )
    ):
        if draw(st.booleans()):
            p.pop(key, None)
        elif key in ("end", "start", "filed"):
            p[key] = draw(DATES)
        elif key == "val":
            p[key] = draw(VALS)
        else:
            p[key] = draw(ODD)
    return p


@st.composite
def companyfacts_doc(draw: st.DrawFn) -> tuple[Any, int]:
    """(document, number of input records): data points, plus one per broken container."""
    n = 0
    facts: dict[str, Any] = {}
    for tax in draw(st.lists(st.sampled_from(["us-gaap", "dei", "ifrs-full", "x"]), max_size=2, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            facts[tax] = draw(st.one_of(st.integers(), st.just([]), st.text(max_size=3), st.none()))
            n += 1
            continue
        concepts: dict[str, Any] = {}
        for concept in draw(
            st.lists(st.sampled_from(["Revenues", "Assets", "EPS", "Shares"]), max_size=3, unique=True)
        ):
            shape = draw(st.integers(0, 12))
            if shape == 0:
                concepts[concept] = draw(st.one_of(st.integers(), st.just([]), st.none()))
                n += 1
                continue
            body: dict[str, Any] = {"label": draw(st.one_of(st.text(max_size=6), ODD)), "description": "d"}
            if shape == 1:
                body["units"] = draw(st.one_of(st.just([]), st.integers(), st.none()))
                n += 1
            elif shape == 2:
                n += 1  # no "units" at all
            else:
                units: dict[str, Any] = {}
                for unit in draw(
                    st.lists(
                        st.sampled_from(["USD", "EUR", "foo/bar", "", " ", "USD/shares", "shares"]),
                        max_size=3,
                        unique=True,
                    )
                ):
                    if draw(st.integers(0, 9)) == 0:
                        units[unit] = draw(
                            st.one_of(st.integers(), st.just({}), st.none(), st.text(max_size=3))
                        )
                        n += 1
                    else:
                        units[unit] = draw(st.lists(data_point(), max_size=4))
                        n += len(units[unit])
                body["units"] = units
            concepts[concept] = body
        facts[tax] = concepts
    doc = {
        "cik": draw(st.one_of(st.just(320193), st.just("0000320193"), ODD)),
        "entityName": draw(st.one_of(st.just("Apple"), ODD)),
        "facts": facts,
    }
    return doc, n


def _check_extract(ex, name: str, n_records: int | None) -> None:
    counts = ex.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"], counts
    if n_records is not None:
        assert counts["rows_in"] == n_records, counts
    for r in ex.rejects.iter_rows(named=True):
        assert name in r["error"], r
        assert r["reason"], r


@SETTINGS
@given(doc=companyfacts_doc(), cut=st.one_of(st.none(), st.none(), st.floats(0, 1)), gz=st.booleans())
def test_companyfacts(fz, doc: tuple[Any, int], cut: float | None, gz: bool) -> None:
    body, n = doc
    blob = fz.compress(json.dumps(body).encode(), "gzip" if gz else "none")
    if cut is not None:
        blob = blob[: int(len(blob) * cut)]
        n = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "CIK0000320193.json" + (".gz" if gz else ""))
        path.write_bytes(blob)
        ex, error = fz.call(read_companyfacts, [path], root=tmp)
    if error is not None:
        fz.expect_clean_error(error, path.name)
        return
    _check_extract(ex, path.name, n)


@pytest.mark.parametrize(
    "content",
    [b"", b"[]", b"{}", b'{"facts": []}', b'{"facts": {}}', b"[" * 10_000 + b"]" * 10_000, b"\xff\xfe",
     b'{"facts": {"us-gaap": {"A": {"units": {"USD": [{"end": "2023-01-01", "val": NaN}]}}}}}'],
)  # fmt: skip
def test_companyfacts_odd_files(tmp_path, fz, content: bytes) -> None:
    path = tmp_path / "cf.json"
    path.write_bytes(content)
    ex, error = fz.call(read_companyfacts, [path], root=tmp_path)
    if error is not None:
        fz.expect_clean_error(error, "cf.json")
        return
    _check_extract(ex, "cf.json", None)


# --------------------------------------------------------------------------- FSDS

SUB = "adsh\tcik\tname\tsic\tform\tperiod\tfy\tfp\tfiled\tfye\n0000001-23-000001\t320193\tApple\t3571\t10-K\t20230930\t2023\tFY\t20231103\t0930\n"
NUM_HEADER = ["adsh", "tag", "version", "coreg", "ddate", "qtrs", "uom", "value", "footnote"]
GOOD_NUM = ["0000001-23-000001", "Revenues", "us-gaap/2023", "", "20230930", "4", "USD", "383285000000", ""]
NUM_ODD = {
    "adsh": st.sampled_from(["0000009-99-999999", ""]),
    "ddate": st.sampled_from(["20230931", "2023", "abcdefgh", "", "00010131", "99991231"]),
    "qtrs": st.sampled_from(["-1", "x", "", "1.5", "100000000", "99999999999999999999", "400000"]),
    "uom": st.sampled_from(["", " ", "EUR", "foo/bar"]),
    "value": st.sampled_from(["", "abc", "1e5", "NaN", "1" * 40, "-0.00000000001", " 12 "]),
    "version": st.sampled_from(["", "0000001-23-000001", "a/b/c"]),
}


@st.composite
def num_txt(draw: st.DrawFn) -> tuple[bytes, int]:
    lines = ["\t".join(NUM_HEADER)]
    n = 0
    for _ in range(draw(st.integers(0, 8))):
        row = list(GOOD_NUM)
        kind = draw(st.sampled_from(["good", "odd", "odd", "ragged", "blank", "bad_utf8"]))
        if kind == "blank":
            lines.append("")
            continue
        if kind == "odd":
            col = draw(st.sampled_from(sorted(NUM_ODD)))
            row[NUM_HEADER.index(col)] = draw(NUM_ODD[col])
        if kind == "ragged":
            row = row[:-2]
        line = "\t".join(row)
        lines.append(line + ("\udcff" if kind == "bad_utf8" else ""))
        n += 1
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"), n


@SETTINGS
@given(num=num_txt())
def test_fsds(fz, num: tuple[bytes, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "2023q4")
        folder.mkdir()
        (folder / "sub.txt").write_text(SUB)
        (folder / "num.txt").write_bytes(num[0])
        ex, error = fz.call(read_fsds, [folder], root=tmp)
    if error is not None:
        fz.expect_clean_error(error, "num.txt")
        return
    _check_extract(ex, "num.txt", num[1])


def test_fsds_corrupt_zip(tmp_path, fz) -> None:
    """A zip whose member is damaged is an InputError naming the archive, not a BadZipFile crash."""
    import zipfile

    path = tmp_path / "2023q4.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("sub.txt", SUB)
        zf.writestr("num.txt", "\t".join(NUM_HEADER) + "\n" + "\t".join(GOOD_NUM) * 50 + "\n")
    blob = bytearray(path.read_bytes())
    blob[60:70] = b"\x00" * 10  # inside the first member's compressed data
    path.write_bytes(bytes(blob))
    ex, error = fz.call(read_fsds, [path], root=tmp_path)
    assert error is not None
    fz.expect_clean_error(error, "2023q4.zip")


# --------------------------------------------------------------------------- XBRL

XBRL_HEAD = """<?xml version="1.0" encoding="utf-8"?>
<xbrli:xbrl xmlns:xbrli="http://www.xbrl.org/2003/instance" xmlns:us-gaap="http://fasb.org/us-gaap/2023"
  xmlns:dei="http://xbrl.sec.gov/dei/2023" xmlns:iso4217="http://www.xbrl.org/2003/iso4217"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xbrldi="http://xbrl.org/2006/xbrldi">
 <xbrli:context id="c1"><xbrli:entity><xbrli:identifier scheme="http://www.sec.gov/CIK">{cik}</xbrli:identifier></xbrli:entity>
  <xbrli:period><xbrli:startDate>{start}</xbrli:startDate><xbrli:endDate>2023-09-30</xbrli:endDate></xbrli:period></xbrli:context>
 <xbrli:context id="c2"><xbrli:entity><xbrli:identifier scheme="http://www.sec.gov/CIK">320193</xbrli:identifier></xbrli:entity>
  <xbrli:period><xbrli:instant>2023-09-30</xbrli:instant></xbrli:period></xbrli:context>
 <xbrli:unit id="usd"><xbrli:measure>iso4217:USD</xbrli:measure></xbrli:unit>
 <xbrli:unit id="eps"><xbrli:divide><xbrli:unitNumerator><xbrli:measure>iso4217:USD</xbrli:measure></xbrli:unitNumerator>
  <xbrli:unitDenominator><xbrli:measure>xbrli:shares</xbrli:measure></xbrli:unitDenominator></xbrli:divide></xbrli:unit>
 <dei:DocumentFiscalYearFocus contextRef="c1">{fy}</dei:DocumentFiscalYearFocus>
"""
FACT_ATTRS = st.fixed_dictionaries(
    {
        "contextRef": st.sampled_from(["c1", "c2", "nope", None]),
        "unitRef": st.sampled_from(["usd", "eps", "EUR", None]),
        "decimals": st.sampled_from(["-6", "INF", None]),
        "nil": st.sampled_from([False, False, True]),
        "value": st.sampled_from(["383285000000", "6.16", "", "abc", "1e5", "NaN", "1" * 40, "-0"]),
    }
)


@st.composite
def xbrl_doc(draw: st.DrawFn) -> tuple[bytes, int | None]:
    head = XBRL_HEAD.format(
        cik=draw(st.sampled_from(["320193", "9" * 30, "abc", ""])),
        start=draw(st.sampled_from(["2022-09-25", "2024-01-01", "2023-02-30", ""])),
        fy=draw(st.sampled_from(["2023", "99999999999", "x", ""])),
    )
    facts = [""]  # the dei fact in the head
    for i in range(draw(st.integers(0, 8))):
        a = draw(FACT_ATTRS)
        attrs = "".join(f' {k}="{a[k]}"' for k in ("contextRef", "unitRef", "decimals") if a[k] is not None)
        if a["nil"]:
            attrs += ' xsi:nil="true"'
        facts.append(
            f' <us-gaap:Fact{i} id="f{i}"{attrs}>{a["value"] if not a["nil"] else ""}</us-gaap:Fact{i}>\n'
        )
    doc = (head + "".join(facts) + "</xbrli:xbrl>\n").encode()
    if draw(st.integers(0, 5)) == 0:
        return doc[: draw(st.integers(0, len(doc) - 1))], None  # malformed XML (cut short)
    return doc, len(facts)


@SETTINGS
@given(doc=xbrl_doc())
def test_xbrl(fz, doc: tuple[bytes, int | None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "x-20230930_htm.xml")
        path.write_bytes(doc[0])
        ex, error = fz.call(read_xbrl, [path], root=tmp)
    if error is not None:
        fz.expect_clean_error(error, path.name)
        return
    _check_extract(ex, path.name, doc[1])


@pytest.mark.parametrize(
    "meta", [{"company": 5, "form": ["10-K"], "accession_no": {"a": 1}, "filing_date": 20231103}, [1, 2], "x"]
)
def test_xbrl_sidecar_wrong_types(tmp_path, fz, meta: Any) -> None:
    doc = XBRL_HEAD.format(cik="320193", start="2022-09-25", fy="2023") + "</xbrli:xbrl>\n"
    (tmp_path / "x-20230930_htm.xml").write_text(doc)
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    ex, error = fz.call(read_xbrl, [tmp_path], root=tmp_path)
    assert error is None, error
    _check_extract(ex, "x-20230930_htm.xml", 1)
