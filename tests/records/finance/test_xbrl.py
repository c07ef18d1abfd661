"""XBRL instance reader on Apple's FY2023 10-K instance."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import re
from pathlib import Path

import polars as pl

from dataforge.records.finance import normalize_facts, read_xbrl

D = decimal.Decimal
XBRL_DIR = Path(__file__).resolve().parents[3] / "sample_data" / "finance" / "xbrl" / "aapl_10k_fy2023"
TEXT = gzip.decompress((XBRL_DIR / "aapl-20230930_htm.xml.gz").read_bytes()).decode()


def test_every_fact_element_is_counted(xbrl_raw, xbrl_norm, ledger_adds_up):
    # every fact carries contextRef; contexts and units do not
    n_facts = len(re.findall(r"\scontextRef=", TEXT))
    nil_tags = re.findall(r'<[^<>]*xsi:nil="true"[^<>]*>', TEXT)
    n_nil = len(nil_tags)
    n_nil_text = sum(1 for t in nil_tags if "unitRef" not in t)  # a nil non-numeric fact
    n_numeric = len(re.findall(r"\sunitRef=", TEXT))
    assert xbrl_raw.rows_in == n_facts == 1164
    c = xbrl_raw.dropped["reason"].value_counts()
    assert dict(c.iter_rows()) == {"nil": n_nil, "non_numeric": n_facts - n_numeric - n_nil_text}
    assert xbrl_raw.ledger_counts()["kept"] == n_numeric - (n_nil - n_nil_text)
    ledger_adds_up(xbrl_raw)
    ledger_adds_up(xbrl_norm)


def test_contexts_units_and_metadata_resolved(xbrl_raw):
    raw = xbrl_raw.tables["raw_fact"]
    assets = raw.filter(pl.col("source_ref") == "fact:id=f-172").row(0, named=True)
    assert (assets["concept"], assets["unit"], assets["value"]) == ("Assets", "USD", D("352583000000"))
    assert assets["start"] is None and assets["end"] == dt.date(2023, 9, 30)  # context c-22: instant
    assert (assets["cik"], assets["entity"], assets["form"]) == (320193, "Apple Inc.", "10-K")
    assert (assets["accession"], assets["filed"]) == ("0000320193-23-000106", dt.date(2023, 11, 3))
    assert assets["decimals"] == "-6" and assets["fye_hint"] == "0930"
    ni = raw.filter(pl.col("source_ref") == "fact:id=f-105").row(0, named=True)
    assert (ni["start"], ni["end"]) == (dt.date(2022, 9, 25), dt.date(2023, 9, 30))  # context c-1
    eps = raw.filter(pl.col("concept") == "EarningsPerShareBasic")
    assert set(eps["unit"]) == {"USD/shares"}  # divide: iso4217:USD / shares
    assert D("6.16") in eps["value"].to_list()
    dims = raw.filter(pl.col("dimensions").is_not_null())
    assert dims.height > 0
    parts = dims["dimensions"].str.split(";").explode()
    assert parts.str.contains(r"^[\w-]+:\w+Axis=\S+$").all()
    # explicit members are QNames; typed members carry their value (a date here)
    assert (parts == "srt:StatementGeographicalAxis=aapl:AmericasSegmentMember").any() or parts.str.contains(
        r"Axis=[\w-]+:\w+Member$"
    ).any()
    assert (
        parts
        == "us-gaap:RevenueRemainingPerformanceObligationExpectedTimingOfSatisfactionStartDateAxis=2023-10-01"
    ).any()


def test_fiscal_year_53_weeks(xbrl_norm):
    fact = (
        xbrl_norm.tables["fact"]
        .filter((pl.col("concept") == "NetIncomeLoss") & pl.col("dimensions").is_null())
        .sort("end")
    )
    got = fact.select("start", "end", "duration_days", "fiscal_year", "fiscal_period").rows()
    assert got == [
        (dt.date(2020, 9, 27), dt.date(2021, 9, 25), 364, 2021, "FY"),
        (dt.date(2021, 9, 26), dt.date(2022, 9, 24), 364, 2022, "FY"),
        (dt.date(2022, 9, 25), dt.date(2023, 9, 30), 371, 2023, "FY"),
    ]
    assert fact["value"].to_list() == [D("94680000000"), D("99803000000"), D("96995000000")]


def test_repeated_facts_in_one_filing_are_duplicates(xbrl_norm):
    dropped = xbrl_norm.dropped
    dup = dropped.filter(pl.col("reason") == "duplicate")
    assert "fact:id=f-120" in dup["source_ref"].to_list()  # NetIncomeLoss c-1 again (f-105 kept)
    coarse = dup.filter(pl.col("detail").str.contains("less precise"))
    assert coarse.height == 3 and coarse["detail"].str.contains("19500000000").any()
    assert xbrl_norm.tables["restatement"].height == 0  # one filing: nothing is a restatement


def test_identity_and_eps_on_apple(xbrl_norm):
    check = xbrl_norm.tables["check"]
    ident = check.filter(pl.col("check") == "balance_sheet_identity").sort("end")
    assert ident["status"].to_list() == ["pass", "pass"]
    # from the 10-K balance sheet: 352,583 = 290,437 + 62,146 (millions)
    assert ident.filter(pl.col("end") == dt.date(2023, 9, 30))["values"][0] == (
        '{"assets": "352583000000", "liabilities": "290437000000", "equity": "62146000000"}'
    )
    eps = check.filter(pl.col("check") == "eps_basic")
    assert set(eps["status"]) == {"pass"} and eps.height == 3


def test_malformed_instance_rejected(tmp_path, ledger_adds_up):
    doc = """<?xml version="1.0"?>
<xbrl xmlns="http://www.xbrl.org/2003/instance" xmlns:us-gaap="http://fasb.org/us-gaap/2023"
      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:dei="http://xbrl.sec.gov/dei/2023">
  <context id="c1"><entity><identifier scheme="http://www.sec.gov/CIK">0000000042</identifier></entity>
    <period><instant>2023-12-31</instant></period></context>
  <context id="c2"><entity><identifier scheme="http://www.sec.gov/CIK">0000000042</identifier></entity>
    <period><startDate>2023-01-01</startDate><endDate>2023-02-30</endDate></period></context>
  <unit id="usd"><measure>iso4217:USD</measure></unit>
  <dei:EntityRegistrantName contextRef="c1">Test Co</dei:EntityRegistrantName>
  <us-gaap:Assets contextRef="c1" unitRef="usd" decimals="0">100</us-gaap:Assets>
  <us-gaap:Assets contextRef="c9" unitRef="usd" decimals="0">101</us-gaap:Assets>
  <us-gaap:Revenues contextRef="c2" unitRef="usd" decimals="0">5</us-gaap:Revenues>
  <us-gaap:Liabilities contextRef="c1" unitRef="eur" decimals="0">7</us-gaap:Liabilities>
  <us-gaap:Liabilities contextRef="c1" decimals="0">8</us-gaap:Liabilities>
  <us-gaap:StockholdersEquity contextRef="c1" unitRef="usd" decimals="0">1,000</us-gaap:StockholdersEquity>
  <us-gaap:Goodwill contextRef="c1" unitRef="usd" xsi:nil="true"/>
</xbrl>"""
    (tmp_path / "t.xml").write_text(doc)
    (tmp_path / "bad.xml").write_text("<xbrl><unclosed></xbrl>")
    ex = read_xbrl(
        [tmp_path / "t.xml", tmp_path / "bad.xml"],
        root=tmp_path,
        accession="0000000042-24-000001",
        filed="2024-02-01",
    )
    assert ex.rows_in == 8 + 1
    rej = ex.rejects
    assert rej["reason"].to_list() == [
        "unknown_context",
        "unknown_context",
        "unknown_unit",
        "missing_unit",
        "bad_value",
        "bad_xml",
    ]
    err = rej["error"].to_list()
    assert err[0].startswith("t.xml fact 2 (us-gaap:Assets): contextRef 'c9'")
    assert "context 'c2' is unusable" in err[1]
    assert "unitRef 'eur'" in err[2] and "value '7'" in err[2]
    assert "has no unitRef; value '8'" in err[3]
    assert "'1,000' is not a number" in err[4]
    assert err[5].startswith("bad.xml: not an XBRL instance")
    assert sorted(ex.dropped["reason"].to_list()) == ["nil", "non_numeric"]
    raw = ex.tables["raw_fact"].row(0, named=True)
    assert (raw["cik"], raw["entity"], raw["accession"], raw["value"]) == (
        42,
        "Test Co",
        "0000000042-24-000001",
        D(100),
    )
    ledger_adds_up(normalize_facts(ex))
