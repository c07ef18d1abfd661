"""Financial Statement Data Sets reader, dedup across 10-Q/10-Q/A, and the accounting checks."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import zipfile
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest

from dataforge.records.finance import normalize_facts, read_fsds

FSDS_ZIP = Path(__file__).resolve().parents[3] / "sample_data" / "finance" / "fsds" / "2009q3_sample.zip"

D = decimal.Decimal


@pytest.fixture(scope="module")
def num_rows() -> list[dict]:
    """num.txt parsed independently of the reader (plain split on tabs)."""
    with zipfile.ZipFile(FSDS_ZIP) as zf:
        lines = zf.read("num.txt").decode().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]


def test_every_num_row_is_counted(fsds_raw, fsds_norm, num_rows, ledger_adds_up):
    assert fsds_raw.rows_in == len(num_rows) == 9925
    nil = sum(1 for r in num_rows if r["value"] == "")
    assert fsds_raw.ledger_counts() == {"rows_in": 9925, "kept": 9925 - nil, "dropped": nil, "rejected": 0}
    ledger_adds_up(fsds_raw)
    ledger_adds_up(fsds_norm)
    roles = {i["table"]: i["role"] for i in fsds_raw.inputs}
    assert roles == {
        "num": "records",
        "sub": "lookup",
        "tag": "lookup",
        "pre": "lookup",
        "readme.htm": "skipped",
    }


def test_periods_units_and_exact_values(fsds_raw, num_rows):
    raw = fsds_raw.tables["raw_fact"]
    inst = next(r for r in num_rows if r["qtrs"] == "0" and r["tag"] == "Assets" and not r["segments"])
    got = raw.filter(
        (pl.col("accession") == inst["adsh"])
        & (pl.col("concept") == "Assets")
        & (pl.col("end") == dt.datetime.strptime(inst["ddate"], "%Y%m%d").date())
        & pl.col("dimensions").is_null()
    )
    assert got.height == 1
    assert got["start"][0] is None and got["value"][0] == D(inst["value"])
    half = next(
        r for r in num_rows if r["qtrs"] == "2" and r["ddate"] == "20090630" and r["tag"] == "NetIncomeLoss"
    )
    got = raw.filter(
        (pl.col("accession") == half["adsh"])
        & (pl.col("concept") == "NetIncomeLoss")
        & (pl.col("end") == dt.date(2009, 6, 30))
        & (pl.col("start") == dt.date(2009, 1, 1))
    )
    assert got.height >= 1
    eps = next(
        r for r in num_rows if r["tag"] == "EarningsPerShareBasic" and r["uom"] == "USD" and "." in r["value"]
    )
    got = raw.filter(
        (pl.col("accession") == eps["adsh"])
        & (pl.col("concept") == "EarningsPerShareBasic")
        & (pl.col("value_text") == eps["value"])
    )
    assert got["unit"].unique().to_list() == ["USD/shares"]  # FSDS writes USD for per-share tags
    assert D(eps["value"]) in got["value"].to_list()


def test_coregistrant_rows_are_not_consolidated(fsds_raw, num_rows):
    coreg = [r for r in num_rows if r["coreg"]]
    assert coreg
    raw = fsds_raw.tables["raw_fact"]
    for r in coreg[:20]:
        hit = raw.filter(
            (pl.col("accession") == r["adsh"])
            & (pl.col("concept") == r["tag"])
            & (pl.col("value_text") == r["value"])
            & pl.col("dimensions").str.contains(f"LegalEntity={r['coreg']}")
        )
        assert hit.height >= 1


def test_amended_filing_supersedes_and_restatement_recorded(fsds_norm, num_rows):
    with zipfile.ZipFile(FSDS_ZIP) as zf:
        sub_lines = zf.read("sub.txt").decode().splitlines()
    sh = sub_lines[0].split("\t")
    sub = {r["adsh"]: r for r in (dict(zip(sh, ln.split("\t"))) for ln in sub_lines[1:])}
    by_key = defaultdict(list)
    for r in num_rows:
        if r["value"]:
            c = sub[r["adsh"]]
            by_key[
                (
                    c["cik"],
                    r["tag"],
                    r["version"].split("/")[0],
                    r["ddate"],
                    r["qtrs"],
                    r["uom"],
                    r["segments"],
                    r["coreg"],
                )
            ].append((c["filed"], r["adsh"], D(r["value"])))
    changed = {k: v for k, v in by_key.items() if len({x[2] for x in v}) > 1 and len({x[1] for x in v}) > 1}
    assert len(changed) == 1  # measured: one value restated across the two filings of one company
    ((key, reports),) = changed.items()
    latest = max(reports)
    old = min(reports)
    rest = fsds_norm.tables["restatement"].filter(pl.col("changed"))
    assert rest.height == 1
    r = rest.row(0, named=True)
    assert (r["old_accession"], r["new_accession"]) == (old[1], latest[1])
    assert (r["old_value"], r["new_value"]) == (old[2], latest[2])
    assert r["concept"] == key[1]
    kept = fsds_norm.tables["fact"].filter(pl.col("fact_id") == r["fact_id"])
    assert kept["value"].to_list() == [latest[2]] and kept["accession"].to_list() == [latest[1]]


def test_identity_check_passes_on_real_balance_sheets(fsds_norm, num_rows):
    check = fsds_norm.tables["check"].filter(pl.col("check") == "balance_sheet_identity")
    passed = check.filter(pl.col("status") == "pass")
    assert passed.height >= 30
    # recompute independently from num.txt for filings tagging exactly Assets, Liabilities, StockholdersEquity
    vals = defaultdict(dict)
    for r in num_rows:
        if r["qtrs"] == "0" and not r["segments"] and not r["coreg"] and r["value"]:
            vals[(r["adsh"], r["ddate"])][r["tag"]] = D(r["value"])
    simple = [
        (k, v)
        for k, v in vals.items()
        if {"Assets", "Liabilities", "StockholdersEquity"} <= set(v)
        and not {"MinorityInterest", "StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest"}
        & set(v)
        and not any(t.startswith("TemporaryEquity") or t.startswith("RedeemableNoncontrolling") for t in v)
    ]
    exact = [(k, v) for k, v in simple if v["Assets"] == v["Liabilities"] + v["StockholdersEquity"]]
    assert len(exact) >= 10
    for (adsh, ddate), v in exact:
        end = dt.datetime.strptime(ddate, "%Y%m%d").date()
        rows = check.filter((pl.col("end") == end) & (pl.col("lhs") == str(int(v["Assets"]))))
        assert rows.height >= 1 and set(rows["status"]) == {"pass"}, (adsh, ddate)


def test_negative_total_fails_with_reason(fsds_norm):
    total = fsds_norm.tables["check"].filter(
        (pl.col("check") == "balance_sheet_total") & (pl.col("status") == "fail")
    )
    assert total.height >= 1
    r = total.row(0, named=True)
    assert (
        r["rhs"].startswith("-")
        and f"Assets {r['lhs']} != LiabilitiesAndStockholdersEquity {r['rhs']}" in r["reason"]
    )


def test_planted_inconsistency_fails(fsds_raw, fsds_norm):
    passed = (
        fsds_norm.tables["check"]
        .filter(
            (pl.col("check") == "balance_sheet_identity")
            & (pl.col("status") == "pass")
            & pl.col("values").str.contains('"liabilities"')
        )
        .row(0, named=True)
    )
    liab_id = passed["fact_ids"][1]
    fact = fsds_norm.tables["fact"].filter(pl.col("fact_id") == liab_id).row(0, named=True)
    raw = fsds_raw.tables["raw_fact"]
    planted = raw.with_columns(
        pl.when(
            (pl.col("cik") == fact["cik"])
            & (pl.col("concept") == "Liabilities")
            & (pl.col("end") == fact["end"])
            & pl.col("dimensions").is_null()
        )
        .then(pl.col("value") + pl.lit(D("1000000000")).cast(pl.Decimal(38, 10)))
        .otherwise(pl.col("value"))
        .alias("value")
    )
    ex = type(fsds_raw)(fsds_raw.source, tables={"raw_fact": planted}, rows_in=fsds_raw.rows_in)
    check = normalize_facts(ex).tables["check"]
    row = check.filter(
        (pl.col("check") == "balance_sheet_identity")
        & (pl.col("cik") == fact["cik"])
        & (pl.col("end") == fact["end"])
    ).row(0, named=True)
    assert row["status"] == "fail"
    new_liab = str(int(fact["value"] + D("1000000000")))
    assert json.loads(row["values"])["liabilities"] == new_liab
    assert f"Assets {passed['lhs']} !=" in row["reason"] and "difference -1000000000" in row["reason"]


def test_eps_check_real_and_planted(fsds_raw, fsds_norm):
    eps = fsds_norm.tables["check"].filter(pl.col("check") == "eps_basic")
    passed = eps.filter(pl.col("status") == "pass")
    assert passed.height >= 50
    facts = {r["fact_id"]: r for r in fsds_norm.tables["fact"].iter_rows(named=True)}
    for r in passed.head(20).iter_rows(named=True):
        e, num, shares = (facts[i] for i in r["fact_ids"])
        assert abs(num["value"] / shares["value"] - e["value"]) <= D("0.005") + D("0.02") * abs(e["value"])
    target = passed.row(0, named=True)
    e = facts[target["fact_ids"][0]]
    planted = fsds_raw.tables["raw_fact"].with_columns(
        pl.when(
            (pl.col("cik") == e["cik"])
            & (pl.col("concept") == e["concept"])
            & (pl.col("end") == e["end"])
            & (pl.col("start") == e["start"])
            & pl.col("dimensions").is_null()
        )
        .then(pl.col("value") * 3 + 1)
        .otherwise(pl.col("value"))
        .cast(pl.Decimal(38, 10))
        .alias("value")
    )
    ex = type(fsds_raw)(fsds_raw.source, tables={"raw_fact": planted}, rows_in=fsds_raw.rows_in)
    out = (
        normalize_facts(ex)
        .tables["check"]
        .filter(pl.col("check_id") == target["check_id"])
        .row(0, named=True)
    )
    assert out["status"] == "fail" and "reported eps_basic" in out["reason"]


def test_unit_check_flags_per_share_tag_in_pure(fsds_norm):
    fails = fsds_norm.tables["check"].filter(
        (pl.col("check") == "unit_consistency") & (pl.col("status") == "fail")
    )
    assert fails.height >= 1
    assert fails["reason"].str.contains("expected per_share units, found pure").any()


def _write(folder, name, header, rows):
    (folder / name).write_text("\n".join(["\t".join(header), *("\t".join(r) for r in rows)]) + "\n")


def test_malformed_fsds_rows_rejected_naming_file_line_value(tmp_path, ledger_adds_up):
    _write(
        tmp_path,
        "sub.txt",
        ["adsh", "cik", "name", "form", "filed", "fye"],
        [["0000000001-09-000001", "123", "ACME", "10-Q", "20090801", "1231"]],
    )
    _write(
        tmp_path,
        "tag.txt",
        ["tag", "version", "datatype", "tlabel"],
        [["Assets", "us-gaap/2009", "monetary", "Assets"]],
    )
    hdr = ["adsh", "tag", "version", "ddate", "qtrs", "uom", "segments", "coreg", "value", "footnote"]
    a = "0000000001-09-000001"
    _write(
        tmp_path,
        "num.txt",
        hdr,
        [
            [a, "Assets", "us-gaap/2009", "20090630", "0", "USD", "", "", "100.0000", ""],
            [a, "Assets", "us-gaap/2009", "20091345", "0", "USD", "", "", "100.0000", ""],
            [a, "Assets", "us-gaap/2009", "20090630", "0", "USD", "", "", "12abc", ""],
            [a, "Assets", "us-gaap/2009", "20081231", "0", "", "", "", "5.0000", ""],
            [a, "Assets", "us-gaap/2009", "20081231", "x", "USD", "", "", "5.0000", ""],
            ["0000000009-09-000009", "Assets", "us-gaap/2009", "20081231", "0", "USD", "", "", "5.0000", ""],
            [a, "Assets", "us-gaap/2009", "20080630", "0", "USD", "", "", "", ""],
            [a, "Assets", "us-gaap/2009", "20080630"],
        ],
    )
    ex = read_fsds(tmp_path, root=tmp_path.parent)
    assert ex.rows_in == 8
    rej = ex.rejects.sort("source_row")
    assert rej["reason"].to_list() == [
        "bad_date",
        "bad_value",
        "missing_unit",
        "bad_qtrs",
        "unknown_submission",
        "ragged_row",
    ]
    err = rej["error"].to_list()
    name = f"{tmp_path.name}/num.txt"
    assert err[0] == f"{name} line 3: ddate '20091345' is not a yyyymmdd date"
    assert err[1] == f"{name} line 4: value '12abc' is not a decimal number (tag Assets)"
    assert "uom is empty" in err[2] and "value 5.0000" in err[2]
    assert "qtrs 'x'" in err[3] and "0000000009-09-000009 is not in sub.txt" in err[4]
    assert ex.dropped["reason"].to_list() == ["nil"]
    norm = normalize_facts(ex)
    assert norm.ledger_counts() == {"rows_in": 8, "kept": 1, "dropped": 1, "rejected": 6}
    ledger_adds_up(norm)


def test_fsds_values_out_of_range_too_precise_or_padded(tmp_path):
    # real rows of the sample (Qwest's 10-Q), with the value column replaced
    with zipfile.ZipFile(FSDS_ZIP) as zf:
        for m in ("sub.txt", "tag.txt"):
            (tmp_path / m).write_bytes(zf.read(m))
        lines = zf.read("num.txt").decode().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"), strict=True)) for ln in lines[1:]]
    base = [r for r in rows if r["adsh"] == "0001047469-09-006994" and not r["segments"]][:5]
    values = [
        "123456789012345678901234567890.5",
        "0.123456789012",
        "  42 ",
        "1.50000000000000",
        "1e3",
    ]
    _write(
        tmp_path,
        "num.txt",
        header,
        [[{**r, "value": v}[c] for c in header] for r, v in zip(base, values, strict=True)],
    )
    ex = read_fsds(tmp_path, root=tmp_path.parent)
    name = f"{tmp_path.name}/num.txt"
    assert ex.rejects["error"].to_list() == [
        f"{name} line 2: value '123456789012345678901234567890.5' is out of range: 30 integer digits, "
        f"Decimal(38,10) holds at most 28 (tag {base[0]['tag']})",
        f"{name} line 3: value '0.123456789012' has 12 fractional digits; Decimal(38,10) holds at most 10, "
        f"and values are never rounded (tag {base[1]['tag']})",
        f"{name} line 6: value '1e3' is not a decimal number (tag {base[4]['tag']})",
    ]
    raw = ex.tables["raw_fact"]
    assert raw["value_text"].to_list() == ["42", "1.50000000000000"]
    assert raw["value"].to_list() == [D(42), D("1.5")]


def test_folder_and_zip_give_the_same_facts(tmp_path, fsds_norm):
    with zipfile.ZipFile(FSDS_ZIP) as zf:
        zf.extractall(tmp_path)
    norm = normalize_facts(read_fsds(tmp_path))
    cols = ["fact_id", "value", "accession", "fiscal_year", "fiscal_period"]
    assert norm.tables["fact"].select(cols).equals(fsds_norm.tables["fact"].select(cols))
