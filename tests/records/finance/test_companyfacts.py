"""companyfacts reader and the common pipeline on Snowflake's companyfacts JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import itertools
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


def _runs(points: list[dict]) -> list[list[dict]]:
    """The reports of one key in filing order, split where the value changes (independent of
    facts.py): the fact is the first report of the last run."""
    runs: list[list[dict]] = []
    for p in sorted(points, key=lambda p: (p["filed"], p["accn"])):
        if runs and D(runs[-1][0]["val"]) == D(p["val"]):
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


@pytest.fixture(scope="module")
def cf_by_key(cf_points) -> dict[tuple, list[dict]]:
    by_key = defaultdict(list)
    for p in cf_points:
        by_key[_key(p)].append(p)
    return by_key


def test_one_fact_per_key_latest_value_from_first_filing_reporting_it(cf_norm, cf_by_key, ledger_adds_up):
    fact = cf_norm.tables["fact"].filter(~pl.col("derived"))
    assert fact.height == len(cf_by_key)
    kept = {_fact_key(r): r for r in fact.iter_rows(named=True)}
    assert set(kept) == set(cf_by_key)
    for key, points in cf_by_key.items():
        latest = max(points, key=lambda p: (p["filed"], p["accn"]))
        first = _runs(points)[-1][0]
        assert kept[key]["value"] == D(latest["val"])
        assert (kept[key]["accession"], str(kept[key]["filed"])) == (first["accn"], first["filed"]), key
        assert kept[key]["n_reports"] == len({p["accn"] for p in points})
    # measured: 2,109 keys whose latest report repeats a value an earlier filing reported first
    assert sum(len(_runs(ps)[-1]) > 1 for ps in cf_by_key.values()) == 2109
    # Snowflake's fiscal 2023 revenue: in the 10-Ks of 2023, 2024 and 2025; credited to the first
    rev = kept[
        ("us-gaap", "RevenueFromContractWithCustomerExcludingAssessedTax", "USD", "2022-02-01", "2023-01-31")
    ]
    assert (rev["accession"], rev["value"], rev["frame"]) == ("0001640147-23-000030", D(2065659000), "CY2022")
    # ledger: every other data point was dropped as superseded or duplicate
    ledger_adds_up(cf_norm)
    reasons = cf_norm.dropped["reason"].value_counts()
    assert set(reasons["reason"]) == {"duplicate", "superseded"}
    assert cf_norm.ledger_counts()["dropped"] == sum(len(ps) for ps in cf_by_key.values()) - len(cf_by_key)


def test_dedup_agrees_with_companyfacts_frames(cf_norm, cf_points, cf_by_key):
    """The SEC puts ``frame`` on the one data point per calendar period that it considers the last
    filed; our kept value for that key must be the framed value, and the frame is carried to the
    fact. Measured: 3,874 framed points, all agree; each is the latest report of its key, and the
    fact names the first filing of the same value (the framed filing itself in 2,238 cases)."""
    kept = {_fact_key(r): r for r in cf_norm.tables["fact"].filter(~pl.col("derived")).iter_rows(named=True)}
    framed = [p for p in cf_points if "frame" in p]
    assert len(framed) == 3874
    disagree = [p for p in framed if kept[_key(p)]["value"] != D(p["val"])]
    assert disagree == []
    assert all(kept[_key(p)]["frame"] == p["frame"] for p in framed)
    for p in framed:
        run = _runs(cf_by_key[_key(p)])[-1]
        assert p is run[-1] and kept[_key(p)]["accession"] == run[0]["accn"]
    assert sum(kept[_key(p)]["accession"] == p["accn"] for p in framed) == 2238


def test_restatements_credit_the_filing_that_changed_the_value(cf_norm, cf_by_key):
    restated = {k: ps for k, ps in cf_by_key.items() if len(_runs(ps)) > 1}
    assert len(restated) == 55, "Snowflake's file has restated values"
    assert any(len(_runs(ps)) == 3 for ps in restated.values()), "one value changed twice"
    rest = cf_norm.tables["restatement"]
    changed = rest.filter(pl.col("changed"))
    n_changes = sum(len(_runs(ps)) - 1 for ps in restated.values())
    assert changed.height == n_changes == 56
    assert cf_norm.dropped.filter(pl.col("reason") == "superseded").height == n_changes
    for key, ps in restated.items():
        runs = _runs(ps)
        for before, after in itertools.pairwise(runs):
            old, new = before[0], after[0]
            row = changed.filter(
                (pl.col("concept") == key[1])
                & (pl.col("unit") == key[2])
                & (pl.col("end") == dt.date.fromisoformat(key[4]))
                & (
                    pl.col("start").is_null()
                    if key[3] is None
                    else pl.col("start") == dt.date.fromisoformat(key[3])
                )
                & (pl.col("old_accession") == old["accn"])
            )
            assert row.height == 1, (key, old["accn"])
            r = row.row(0, named=True)
            assert (r["old_value"], r["new_value"]) == (D(old["val"]), D(new["val"]))
            assert (r["new_accession"], str(r["new_filed"]), r["new_form"]) == (
                new["accn"],
                new["filed"],
                new["form"],
            )
            assert r["difference"] == D(new["val"]) - D(old["val"]) and str(r["old_filed"]) == old["filed"]
            fact = cf_norm.tables["fact"].filter(pl.col("fact_id") == r["fact_id"]).row(0, named=True)
            assert fact["restated"] and fact["value"] == D(runs[-1][0]["val"])
    # the other rows are later filings repeating a value: resolved against its first filing
    repeats = rest.filter(~pl.col("changed"))
    assert repeats.height == cf_norm.dropped.filter(pl.col("reason") == "duplicate").height
    assert (repeats["old_value"] == repeats["new_value"]).all()
    assert (repeats["new_filed"] <= repeats["old_filed"]).all()


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


def test_value_rejects_say_what_is_wrong_and_spaces_are_stripped(tmp_path, cf_points):
    # a real Snowflake data point (fiscal 2024 assets), then the same point with a damaged val
    (good,) = [p for p in cf_points if p["concept"] == "Assets" and p["end"] == "2024-01-31"][-1:]
    point = {k: v for k, v in good.items() if k not in ("taxonomy", "concept", "unit")}
    no_val = {k: v for k, v in point.items() if k != "val"}
    no_end = {k: v for k, v in point.items() if k != "end"}
    points = [
        no_val,
        {**point, "val": None},
        no_end,
        {**point, "val": 123456789012345678901234567890},
        {**point, "val": "  42 "},
        {**point, "val": " 7.50000000000000 "},
    ]
    doc = {
        "cik": 1640147,
        "entityName": "SNOWFLAKE INC.",
        "facts": {"us-gaap": {"Assets": {"units": {"USD": points}}}},
    }
    (tmp_path / "s.json").write_text(json.dumps(doc))
    ex = read_companyfacts(tmp_path / "s.json", root=tmp_path)
    errors = dict(zip(ex.rejects["source_row"].to_list(), ex.rejects["error"].to_list(), strict=True))
    assert errors == {
        0: "s.json us-gaap:Assets/USD[0]: val is missing",
        1: "s.json us-gaap:Assets/USD[1]: val is null",
        2: "s.json us-gaap:Assets/USD[2]: end is missing",
        3: "s.json us-gaap:Assets/USD[3]: value '123456789012345678901234567890' is out of range: "
        "30 integer digits, Decimal(38,10) holds at most 28",
    }
    raw = ex.tables["raw_fact"]
    assert raw["value_text"].to_list() == ["42", "7.50000000000000"]
    assert raw["value"].to_list() == [D(42), D("7.5")]


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
    assert ex.rejects["error"][0].endswith(
        "c.json us-gaap:Ratio/pure[0]: value '0.123456789012' has 12 fractional digits; "
        "Decimal(38,10) holds at most 10, and values are never rounded"
    )
    assert ex.tables["raw_fact"]["value"].to_list() == [D("0.123456789")]


@pytest.mark.parametrize("option", ["drop"])
def test_dimensions_drop_option_is_counted(option, fsds_raw, ledger_adds_up):
    norm = normalize_facts(fsds_raw, dimensions=option)
    assert norm.tables["fact"]["dimensions"].null_count() == norm.tables["fact"].height
    n_dim = fsds_raw.tables["raw_fact"]["dimensions"].is_not_null().sum()
    assert norm.dropped.filter(pl.col("reason") == "dimensional").height == n_dim
    ledger_adds_up(norm)
