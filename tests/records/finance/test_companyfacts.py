"""companyfacts reader and the common pipeline on Snowflake's companyfacts JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
from collections import defaultdict

import polars as pl
import pytest

from dataforge.records.finance import normalize_facts, read_companyfacts

D = decimal.Decimal


def _key(p: dict) -> tuple:
    return (p["taxonomy"], p["concept"], p["unit"], p.get("start"), p["end"])


def _fact_key(r: dict) -> tuple:
    return (r["taxonomy"], r["concept"], r["unit"], r["start"] and str(r["start"]), str(r["end"]))


def test_every_data_point_is_counted(cf_raw, cf_points, ledger_adds_up):
    # README of the shared data: 8,163 data points; counted here from the JSON itself
    assert len(cf_points) == 8163
    assert cf_raw.rows_in == len(cf_points)
    assert cf_raw.ledger_counts() == {"rows_in": 8163, "kept": 8163, "dropped": 0, "rejected": 0}
    ledger_adds_up(cf_raw)
    assert cf_raw.inputs[0]["role"] == "records"


def test_values_are_exact_decimals(cf_raw, cf_points):
    raw = cf_raw.tables["raw_fact"]
    assert raw.schema["value"] == pl.Decimal(38, 10)
    fractional = [
        p for p in cf_points if isinstance(p["val"], D) and p["val"] != p["val"].to_integral_value()
    ]
    assert fractional, "the file has fractional values (EPS)"
    for p in fractional[:50] + cf_points[:50]:
        hit = raw.filter(
            (pl.col("concept") == p["concept"])
            & (pl.col("unit") == p["unit"])
            & (pl.col("accession") == p["accn"])
            & (pl.col("end") == dt.date.fromisoformat(p["end"]))
            & (
                pl.col("start").is_null()
                if "start" not in p
                else pl.col("start") == dt.date.fromisoformat(p["start"])
            )
        )
        assert hit.height >= 1
        assert D(p["val"]) in hit["value"].to_list()
        assert str(p["val"]) in hit["value_text"].to_list()


def test_one_fact_per_key_keeping_latest_filing(cf_norm, cf_points, ledger_adds_up):
    by_key = defaultdict(list)
    for p in cf_points:
        by_key[_key(p)].append(p)
    fact = cf_norm.tables["fact"].filter(~pl.col("derived"))
    assert fact.height == len(by_key)
    kept = {_fact_key(r): r for r in fact.iter_rows(named=True)}
    assert set(kept) == set(by_key)
    for key, points in by_key.items():
        latest = max(points, key=lambda p: (p["filed"], p["accn"]))
        assert kept[key]["accession"] == latest["accn"], key
        assert kept[key]["value"] == D(latest["val"])
        assert kept[key]["n_reports"] == len({p["accn"] for p in points})
    # ledger: every other data point was dropped as superseded or duplicate
    ledger_adds_up(cf_norm)
    reasons = cf_norm.dropped["reason"].value_counts()
    assert set(reasons["reason"]) == {"duplicate", "superseded"}
    assert cf_norm.ledger_counts()["dropped"] == len(cf_points) - len(by_key)


def test_dedup_agrees_with_companyfacts_frames(cf_norm, cf_points):
    """The SEC puts ``frame`` on the one data point per calendar period that it considers the last
    filed; our kept value for that key must be the framed value. Measured: 3,874 framed points, all
    agree (value and accession), so nothing needs explaining in this file."""
    kept = {_fact_key(r): r for r in cf_norm.tables["fact"].filter(~pl.col("derived")).iter_rows(named=True)}
    framed = [p for p in cf_points if "frame" in p]
    assert len(framed) == 3874
    disagree = [p for p in framed if kept[_key(p)]["value"] != D(p["val"])]
    assert disagree == []
    assert all(kept[_key(p)]["accession"] == p["accn"] for p in framed)
    assert all(kept[_key(p)]["frame"] == p["frame"] for p in framed)


def test_restatements_keep_old_value_and_both_filings(cf_norm, cf_points):
    by_key = defaultdict(list)
    for p in cf_points:
        by_key[_key(p)].append(p)
    restated = {k: ps for k, ps in by_key.items() if len({D(p["val"]) for p in ps}) > 1}
    assert restated, "Snowflake's file has restated values"
    rest = cf_norm.tables["restatement"]
    changed = rest.filter(pl.col("changed"))
    n_superseded = sum(
        sum(1 for p in ps if D(p["val"]) != D(max(ps, key=lambda q: (q["filed"], q["accn"]))["val"]))
        for ps in restated.values()
    )
    assert changed.height == n_superseded
    assert cf_norm.dropped.filter(pl.col("reason") == "superseded").height == n_superseded
    key, ps = sorted(restated.items())[0]
    latest = max(ps, key=lambda q: (q["filed"], q["accn"]))
    old = next(p for p in ps if D(p["val"]) != D(latest["val"]))
    row = changed.filter(
        (pl.col("concept") == key[1])
        & (pl.col("old_accession") == old["accn"])
        & (pl.col("end") == dt.date.fromisoformat(key[4]))
    )
    assert row.height == 1
    r = row.row(0, named=True)
    assert r["old_value"] == D(old["val"]) and r["new_value"] == D(latest["val"])
    assert r["new_accession"] == latest["accn"] and str(r["old_filed"]) == old["filed"]
    assert r["difference"] == D(latest["val"]) - D(old["val"])
    fact = cf_norm.tables["fact"].filter(pl.col("fact_id") == r["fact_id"]).row(0, named=True)
    assert fact["restated"] and fact["value"] == D(latest["val"])


def test_fiscal_periods_from_dates_snowflake_january_year_end(cf_norm):
    fact = cf_norm.tables["fact"]
    rev = fact.filter(
        (pl.col("concept") == "RevenueFromContractWithCustomerExcludingAssessedTax")
        & pl.col("dimensions").is_null()
    )

    def period(start: str | None, end: str) -> tuple:
        row = rev.filter(
            (pl.col("end") == dt.date.fromisoformat(end))
            & (
                pl.col("start").is_null()
                if start is None
                else pl.col("start") == dt.date.fromisoformat(start)
            )
        )
        assert row.height == 1, (start, end)
        return row["fiscal_year"][0], row["fiscal_period"][0]

    assert set(fact["fye_month"].unique()) == {1}
    # Snowflake's fiscal 2024 ran Feb 1, 2023 - Jan 31, 2024 (its 10-K calls it fiscal 2024)
    assert period("2023-02-01", "2024-01-31") == (2024, "FY")
    assert period("2023-02-01", "2023-04-30") == (2024, "Q1")
    assert period("2023-05-01", "2023-07-31") == (2024, "Q2")
    assert period("2023-02-01", "2023-07-31") == (2024, "H1")
    assert period("2023-02-01", "2023-10-31") == (2024, "9M")
    # a 10-Q filed 2022-06-03 says fy=2023, fp="FY" for this quarter: the dates say Q1 of fiscal 2023
    assert period("2022-02-01", "2022-04-30") == (2023, "Q1")
    assets = fact.filter((pl.col("concept") == "Assets") & (pl.col("end") == dt.date(2024, 1, 31)))
    assert assets.select("period_type", "fiscal_year", "fiscal_period").row(0) == ("instant", 2024, "FY")
    assets = fact.filter((pl.col("concept") == "Assets") & (pl.col("end") == dt.date(2023, 10, 31)))
    assert assets.select("fiscal_year", "fiscal_period").row(0) == (2024, "Q3")


def test_q4_derived_as_fy_minus_nine_months(cf_norm, cf_points):
    fact = cf_norm.tables["fact"]
    derived = fact.filter(pl.col("derived"))
    assert derived.height > 0
    assert derived["source_row"].null_count() == derived.height
    by_id = {r["fact_id"]: r for r in fact.iter_rows(named=True)}
    for r in derived.iter_rows(named=True):
        fy, nine = (by_id[i] for i in r["derived_from"])
        assert (fy["fiscal_period"], nine["fiscal_period"]) == ("FY", "9M")
        assert r["value"] == fy["value"] - nine["value"]
        assert r["start"] == nine["end"] + dt.timedelta(days=1) and r["end"] == fy["end"]
        assert r["fiscal_period"] == "Q4" and r["unit"] == "USD"
    # independent: fiscal 2024 revenue from the JSON, FY minus 9M
    pts = [
        p
        for p in cf_points
        if p["concept"] == "RevenueFromContractWithCustomerExcludingAssessedTax" and p["unit"] == "USD"
    ]
    fy = next(p for p in pts if p.get("start") == "2023-02-01" and p["end"] == "2024-01-31")
    nine = next(p for p in pts if p.get("start") == "2023-02-01" and p["end"] == "2023-10-31")
    q4 = derived.filter(
        (pl.col("concept") == "RevenueFromContractWithCustomerExcludingAssessedTax")
        & (pl.col("end") == dt.date(2024, 1, 31))
    )
    assert q4["value"].to_list() == [D(fy["val"]) - D(nine["val"])]
    # only where Q4 is missing: no derived row shares its concept/unit/end with a reported Q4
    reported = fact.filter(~pl.col("derived") & (pl.col("fiscal_period") == "Q4"))
    clash = derived.join(
        reported, on=["cik", "taxonomy", "concept", "unit", "end"], how="inner", nulls_equal=True
    )
    assert clash.height == 0
    # derived rows are not input records: the ledger counts are unchanged by them
    assert cf_norm.ledger_counts()["kept"] == fact.filter(~pl.col("derived")).height


def test_per_share_and_share_counts_are_never_derived(cf_norm):
    derived = cf_norm.tables["fact"].filter(pl.col("derived"))
    assert not derived["unit"].is_in(["USD/shares", "shares", "pure"]).any()


def test_checks_on_snowflake(cf_norm):
    check = cf_norm.tables["check"]
    ident = check.filter(pl.col("check") == "balance_sheet_identity")
    assert ident.height > 0 and set(ident["status"]) == {"pass"}
    eps = check.filter(pl.col("check") == "eps_basic")
    assert (eps["status"] == "pass").sum() > 0 and (eps["status"] == "fail").sum() == 0


def _write_gz(path, obj_or_bytes) -> None:
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    path.write_bytes(gzip.compress(data, mtime=0))


def test_malformed_companyfacts_rejected_with_file_and_value(tmp_path, ledger_adds_up):
    good = {
        "end": "2024-01-31",
        "val": 5,
        "accn": "a-1",
        "fy": 2024,
        "fp": "FY",
        "form": "10-K",
        "filed": "2024-03-01",
    }
    doc = {
        "cik": 1,
        "entityName": "X",
        "facts": {
            "us-gaap": {
                "Assets": {
                    "label": "Assets",
                    "units": {
                        "USD": [
                            good,
                            {**good, "val": "abc"},
                            {**good, "end": "2024-13-45"},
                            {**good, "filed": "soon"},
                            "junk",
                        ],
                        "": [{**good, "val": 7}],
                    },
                },
                "Revenues": {"units": {"USD": [{**good, "start": "2024-02-01", "end": "2024-01-31"}]}},
            }
        },
    }
    _write_gz(tmp_path / "a.json.gz", doc)
    (tmp_path / "b.json").write_text("{not json")
    ex = read_companyfacts(tmp_path, root=tmp_path)
    assert ex.rows_in == 7 + 1  # seven data points + one unreadable file
    rej = ex.rejects
    assert sorted(rej["reason"].to_list()) == sorted(
        ["bad_value", "bad_date", "bad_date", "bad_record", "missing_unit", "bad_date", "bad_json"]
    )
    errors = " | ".join(rej["error"].to_list())
    assert "a.json.gz us-gaap:Assets/USD[1]: value 'abc' is not a number" in errors
    assert "'2024-13-45'" in errors and "'soon'" in errors and "b.json: not valid companyfacts JSON" in errors
    assert "start 2024-02-01 is after end 2024-01-31" in errors
    assert "val 7" in errors
    assert rej.filter(pl.col("reason") == "bad_value")["source_row"].to_list() == [1]
    norm = normalize_facts(ex)
    assert norm.ledger_counts() == {"rows_in": 8, "kept": 1, "dropped": 0, "rejected": 7}
    ledger_adds_up(norm)


def test_value_too_precise_is_rejected_not_rounded(tmp_path):
    doc = {
        "cik": 1,
        "entityName": "X",
        "facts": {
            "us-gaap": {
                "Ratio": {
                    "units": {
                        "pure": [
                            {
                                "end": "2024-01-31",
                                "val": decimal.Decimal("0.123456789012"),
                                "accn": "a",
                                "filed": "2024-03-01",
                            },
                            {
                                "end": "2023-01-31",
                                "val": decimal.Decimal("0.1234567890000"),
                                "accn": "a",
                                "filed": "2024-03-01",
                            },
                        ]
                    }
                }
            }
        },
    }
    (tmp_path / "c.json").write_text(
        json.dumps(doc, default=str).replace('"0.1', "0.1").replace('0",', "0,").replace('2",', "2,")
    )
    ex = read_companyfacts(tmp_path / "c.json")
    assert ex.rejects["reason"].to_list() == ["bad_value"]
    assert "0.123456789012" in ex.rejects["error"][0]
    assert ex.tables["raw_fact"]["value"].to_list() == [D("0.123456789")]


@pytest.mark.parametrize("option", ["drop"])
def test_dimensions_drop_option_is_counted(option, fsds_raw, ledger_adds_up):
    norm = normalize_facts(fsds_raw, dimensions=option)
    assert norm.tables["fact"]["dimensions"].null_count() == norm.tables["fact"].height
    n_dim = fsds_raw.tables["raw_fact"]["dimensions"].is_not_null().sum()
    assert norm.dropped.filter(pl.col("reason") == "dimensional").height == n_dim
    ledger_adds_up(norm)
