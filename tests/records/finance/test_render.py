"""Rendered documents and instruction pairs: every number traces to a cited canonical fact."""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import itertools
import json
import re

import polars as pl
import pytest

from dataforge.records.finance import render_instruct, render_text

D = decimal.Decimal
MONTHS = "|".join(calendar.month_name[1:])


def _num(text: str) -> D:
    return D(text.replace(",", ""))


def explain(text: str, cited: list[dict]) -> str:
    """Remove every number of ``text`` that is explained by the cited facts; return what is left.

    Allowed: the facts' entity names and ids, accession numbers, forms (10-K), dates (period start/end, filing date), fiscal years,
    CIK; amounts equal to a fact's value (exact, or rounded to 2 decimals of billions/millions);
    the difference of two facts, the sum of the facts after the first (balance-sheet identity) and
    the first minus that sum; a percentage equal to the change of one fact over another or their ratio.
    """
    assert cited, "no facts cited"
    values = [r["value"] for r in cited]
    mags = {abs(v) for v in values}
    pairs = list(itertools.permutations(values, 2))
    derived = {abs(a - b) for a, b in pairs}
    if len(values) > 2:
        rest = sum(values[1:], D(0))
        derived |= {abs(rest), abs(values[0] - rest)}
    percents = set()
    for a, b in pairs:
        if b:
            percents.add(abs((a - b) / b * 100).quantize(D("0.1"), rounding=decimal.ROUND_HALF_UP))
            percents.add(abs(a / b * 100).quantize(D("0.1"), rounding=decimal.ROUND_HALF_UP))
    dates = {r[k] for r in cited for k in ("start", "end", "filed") if r.get(k)}

    def sub(pattern: str, ok, s: str) -> str:
        def repl(m: re.Match) -> str:
            assert ok(m), f"unexplained {m.group(0)!r} in: {text}"
            return " "

        return re.sub(pattern, repl, s)

    s = text
    for entity in {r["entity"] for r in cited if r["entity"]}:
        s = s.replace(entity, " ")  # names can hold digits (L 3 COMMUNICATIONS, 3M)
    s = sub(r"\[fact ([0-9a-f]{16})\]", lambda m: m.group(1) in {r["fact_id"] for r in cited}, s)
    s = sub(r"\b\d{10}-\d{2}-\d{6}\b", lambda m: m.group(0) in {r["accession"] for r in cited}, s)
    s = sub(r"\b\d{4}-\d{2}-\d{2}\b", lambda m: dt.date.fromisoformat(m.group(0)) in dates, s)
    s = sub(
        rf"\b({MONTHS}) (\d{{1,2}}), (\d{{4}})",
        lambda m: (
            dt.date(int(m.group(3)), list(calendar.month_name).index(m.group(1)), int(m.group(2))) in dates
        ),
        s,
    )
    s = sub(r"(?<![\w-])(\d+-[A-Z]+(?:/A)?)(?= filed)", lambda m: m.group(1) in {r["form"] for r in cited}, s)
    s = sub(r"CIK (\d+)", lambda m: int(m.group(1)) in {r["cik"] for r in cited}, s)
    s = sub(r"fiscal (?:year )?(\d{4})", lambda m: int(m.group(1)) in {r["fiscal_year"] for r in cited}, s)
    scale = {"billion": D(10) ** 9, "million": D(10) ** 6}
    s = sub(
        r"(?:\$|[A-Z]{3} )?([\d,]+\.\d\d) (billion|million)",
        lambda m: any(abs(v / scale[m.group(2)] - _num(m.group(1))) <= D("0.005") for v in mags),
        s,
    )
    s = sub(r"(\d+(?:\.\d)?)%", lambda m: D(m.group(1)) in percents, s)
    s = sub(r"(-?\d+(?:\.\d+)?) ([A-Z]{3}(?:/shares)?|shares|pure)\b", lambda m: D(m.group(1)) in values, s)
    s = sub(r"(?:\$|[A-Z]{3} )?(\d[\d,]*(?:\.\d+)?)", lambda m: _num(m.group(1)) in mags | derived, s)
    return s


@pytest.fixture(scope="module", params=["cf", "fsds", "xbrl"])
def normalized(request):
    return request.getfixturevalue(f"{request.param}_norm")


def _facts(norm) -> dict[str, dict]:
    return {r["fact_id"]: r for r in norm.tables["fact"].iter_rows(named=True)}


def test_every_number_in_documents_traces_to_cited_facts(normalized):
    docs = render_text(normalized.tables)
    assert docs.height > 0
    facts = _facts(normalized)
    for row in docs.iter_rows(named=True):
        cited = [facts[i] for i in row["fact_ids"]]
        left = explain(row["text"], cited)
        assert not re.search(r"\d", left), (left, row["text"])
        meta = json.loads(row["meta"])
        assert {meta["fiscal_year"]} <= {r["fiscal_year"] for r in cited}


def test_every_number_in_instruction_pairs_traces(normalized):
    pairs = render_instruct(normalized.tables, seed=3)
    assert pairs.height > 0
    facts = _facts(normalized)
    for row in pairs.iter_rows(named=True):
        cited = [facts[i] for i in row["fact_ids"]]
        for field in ("prompt", "response", "context"):
            left = explain(row[field], cited)
            assert not re.search(r"\d", left), (field, left, row[field])


def test_explain_catches_an_untraceable_number(cf_norm):
    docs = render_text(cf_norm.tables)
    row = docs.row(0, named=True)
    cited = [_facts(cf_norm)[i] for i in row["fact_ids"]]
    with pytest.raises(AssertionError, match="unexplained"):
        explain(row["text"] + " Revenue was $123,456,789.", cited)
    m = re.search(r"\$([\d,]+\.\d\d) (billion|million)", row["text"])
    off = f"${_num(m.group(1)) + D('0.03')} {m.group(2)}"  # a readable amount off by 3 in the last digit
    with pytest.raises(AssertionError, match="unexplained"):
        explain(row["text"].replace(m.group(0), off, 1), cited)
    with pytest.raises(AssertionError, match="unexplained"):
        explain(row["text"].replace("fiscal year 2019", "fiscal year 2018", 1), cited)


def test_snowflake_document_content(cf_norm):
    docs = render_text(cf_norm.tables)
    fy24 = docs.filter(pl.col("id") == "fin:1640147:2024:FY").row(0, named=True)
    text = fy24["text"]
    assert "fiscal year 2024, the twelve months ended January 31, 2024" in text
    assert "Revenue was $2.81 billion ($2,806,489,000)" in text  # 10-K for fiscal 2024
    assert "Net loss was $836.10 million" in text  # a loss is worded as such
    assert "Basic loss per share was $2.55" in text
    q4 = docs.filter(pl.col("id") == "fin:1640147:2024:Q4")["text"][0]
    assert "derived as the full fiscal year minus the first nine months" in q4


def test_instruction_kinds_and_identity_answers(cf_norm, xbrl_norm):
    pairs = render_instruct(xbrl_norm.tables)
    kinds = {json.loads(m)["kind"] for m in pairs["meta"]}
    assert kinds == {"lookup", "yoy", "margin", "identity"}
    ident = pairs.filter(pl.col("id") == "fin:320193:2023-09-30:identity").row(0, named=True)
    assert ident["response"].startswith("Yes. Total assets were $352,583,000,000")
    assert "sum to $352,583,000,000" in ident["response"]
    yoy = pairs.filter(pl.col("id") == "fin:320193:2023:FY:yoy:revenue")["response"][0]
    # 383,285 - 394,328 = -11,043 (millions); -2.8% of 394,328
    assert "decreased by $11,043,000,000 (2.8%)" in yoy
    closed = render_instruct(cf_norm.tables, context=False)
    assert closed["context"].null_count() == closed.height


def test_rendering_is_deterministic_per_seed(cf_norm):
    a = render_instruct(cf_norm.tables, seed=7)
    b = render_instruct(cf_norm.tables, seed=7)
    c = render_instruct(cf_norm.tables, seed=8)
    assert a.equals(b)
    assert a["id"].to_list() == c["id"].to_list()
    assert a["fact_ids"].to_list() == c["fact_ids"].to_list()
    assert (a["prompt"] != c["prompt"]).any()
    assert render_text(cf_norm.tables).equals(render_text(cf_norm.tables))
