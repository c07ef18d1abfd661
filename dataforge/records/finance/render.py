"""Render canonical facts as text: period summaries (stage 3) and grounded Q/A pairs (stage 2).

Every number in a rendered text comes from a canonical ``fact`` row listed in ``fact_ids``:

* amounts appear readable and exact: ``$2.81 billion ($2,806,489,000)``; the readable form is the
  exact value rounded half-up to two decimals of billions/millions; amounts under one million are
  written exactly. Per-share amounts and share counts are written exactly. A negative net or
  operating income is written as a loss of the absolute amount ("net loss was $836.10 million").
* computed numbers are simple functions of cited facts: a year-over-year change (``up 35.9%``,
  percentage of the earlier value, one decimal, only when both values are positive), a difference
  (``a change of $738,117,000``), a sum (liabilities + equity) or a ratio (net margin, one decimal).
* dates are the cited facts' period end (``January 31, 2024``) or filing date (ISO), years their
  fiscal years, ``CIK`` their cik, accession numbers their filing's.

Facts used: consolidated (``dimensions`` null), primary synonym, fiscal periods ``FY`` and
``Q1``-``Q4`` (including derived Q4, said so in the text), the balance sheet at the period end. When a
canonical name has several candidates for a period (two units), the entity's most used currency wins.

Determinism: output is sorted by id; ``render_instruct`` picks question wording with a hash of
``(seed, pair id)``, so a seed gives the same pairs in the same order on every run.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import hashlib
import json
import logging
from collections import defaultdict
from typing import Any

import polars as pl

from dataforge.records.finance.common import iso4217
from dataforge.records.finance.facts import load_concepts

log = logging.getLogger(__name__)

PERIODS = ("FY", "Q1", "Q2", "Q3", "Q4")
FLOW = [
    "revenue",
    "gross_profit",
    "operating_income",
    "net_income",
    "eps_basic",
    "eps_diluted",
    "operating_cash_flow",
]
STOCK = ["assets", "liabilities", "equity", "cash"]
LABELS = {
    "revenue": "revenue",
    "gross_profit": "gross profit",
    "operating_income": "operating income",
    "net_income": "net income",
    "eps_basic": "basic earnings per share",
    "eps_diluted": "diluted earnings per share",
    "operating_cash_flow": "net cash from operating activities",
    "assets": "total assets",
    "liabilities": "total liabilities",
    "equity": "stockholders' equity",
    "cash": "cash and cash equivalents",
}
LOSS_LABELS = {"net_income": "net loss", "operating_income": "operating loss"}
QUARTER_WORDS = {"Q1": "first", "Q2": "second", "Q3": "third", "Q4": "fourth"}
SYMBOLS = {"USD": "$"}
TEXT_COLUMNS = {"id": pl.Utf8, "text": pl.Utf8, "fact_ids": pl.List(pl.Utf8), "meta": pl.Utf8}
INSTRUCT_COLUMNS = {
    "id": pl.Utf8,
    "prompt": pl.Utf8,
    "response": pl.Utf8,
    "context": pl.Utf8,
    "fact_ids": pl.List(pl.Utf8),
    "meta": pl.Utf8,
}
D = decimal.Decimal


# --------------------------------------------------------------------------- number formatting


def exact(value: D, unit: str) -> str:
    """``$2,806,489,000`` / ``CAD 1,000.5`` / ``2.55`` style exact amount (no sign)."""
    v = abs(value)
    text = f"{int(v):,}" if v == v.to_integral_value() else f"{v.normalize():,f}"
    return _with_currency(text, unit)


def readable(value: D, unit: str) -> str:
    """``$2.81 billion`` (rounded half-up to 2 decimals) for |value| >= 1e6, else the exact amount."""
    v = abs(value)
    for scale, word in ((D(10) ** 9, "billion"), (D(10) ** 6, "million")):
        if v >= scale:
            q = (v / scale).quantize(D("0.01"), rounding=decimal.ROUND_HALF_UP)
            return _with_currency(f"{q:,f} {word}", unit)
    return exact(value, unit)


def money(value: D, unit: str) -> str:
    """Readable plus exact: ``$2.81 billion ($2,806,489,000)``; just exact under a million."""
    r, e = readable(value, unit), exact(value, unit)
    return r if r == e else f"{r} ({e})"


def _with_currency(text: str, unit: str) -> str:
    currency = unit.split("/")[0]
    if currency in SYMBOLS:
        return f"{SYMBOLS[currency]}{text}"
    if iso4217(currency):
        return f"{currency} {text}"
    return text


def pct(new: D, old: D) -> str:
    """Percentage change of ``new`` over ``old`` (> 0), one decimal, no sign."""
    change = (abs(new - old) / old * 100).quantize(D("0.1"), rounding=decimal.ROUND_HALF_UP)
    return f"{change}%"


def long_date(d: dt.date) -> str:
    return f"{calendar.month_name[d.month]} {d.day}, {d.year}"


def period_phrase(fy: int, fp: str, end: dt.date) -> str:
    if fp == "FY":
        return f"fiscal year {fy}, the twelve months ended {long_date(end)}"
    return f"the {QUARTER_WORDS[fp]} quarter of fiscal {fy}, the three months ended {long_date(end)}"


def short_period(fy: int, fp: str) -> str:
    return f"fiscal {fy}" if fp == "FY" else f"the {QUARTER_WORDS[fp]} quarter of fiscal {fy}"


# --------------------------------------------------------------------------- fact selection


def _periods(fact: pl.DataFrame) -> dict[tuple[int, int, str], dict[str, dict[str, Any]]]:
    """(cik, fiscal_year, fiscal_period) -> canonical -> fact row, for the facts rendering uses."""
    use = fact.filter(
        pl.col("dimensions").is_null()
        & pl.col("canonical_primary").fill_null(False)
        & pl.col("canonical").is_in(FLOW + STOCK)
        & pl.col("fiscal_period").is_in(PERIODS)
        & pl.col("fiscal_year").is_not_null()
    )
    flow = pl.col("canonical").is_in(FLOW)
    use = use.filter(
        pl.when(flow).then(pl.col("period_type") == "duration").otherwise(pl.col("period_type") == "instant")
    )
    main_currency = (
        fact.filter(pl.col("unit").str.contains(r"^[A-Z]{3}$"))
        .group_by("cik", "unit")
        .len()
        .sort(["cik", "len", "unit"], descending=[False, True, False])
        .group_by("cik", maintain_order=True)
        .first()
        .select("cik", pl.col("unit").alias("_cur"))
    )
    use = use.join(main_currency, on="cik", how="left").with_columns(
        (pl.col("unit").str.split("/").list.first() != pl.col("_cur")).fill_null(True).alias("_other")
    )
    use = use.sort(
        ["cik", "fiscal_year", "fiscal_period", "canonical", "_other", "end", "fact_id"],
        descending=[False, False, False, False, False, True, False],
    )
    out: dict[tuple[int, int, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in use.iter_rows(named=True):
        slot = out[(r["cik"], r["fiscal_year"], r["fiscal_period"])]
        slot.setdefault(r["canonical"], r)
    # a fourth quarter closes on the fiscal year end: its balance sheet is the FY one
    for (cik, fy, fp), slot in list(out.items()):
        if fp == "Q4" and any(k in slot for k in FLOW):
            for k, r in out.get((cik, fy, "FY"), {}).items():
                if k in STOCK:
                    slot.setdefault(k, r)
    # flows and the balance sheet must describe the same period end
    for slot in out.values():
        ends = [r["end"] for k, r in slot.items() if k in FLOW]
        if ends:
            end = max(set(ends), key=ends.count)
            for k in [k for k, r in slot.items() if r["end"] != end]:
                del slot[k]
    return out


def _end(slot: dict[str, dict[str, Any]]) -> dt.date:
    return next(iter(slot.values()))["end"]


def _amount_sentence(name: str, r: dict[str, Any]) -> str:
    v, unit = r["value"], r["unit"]
    if name in ("eps_basic", "eps_diluted"):
        kind = "basic" if name == "eps_basic" else "diluted"
        word = "loss" if v < 0 else "earnings"
        return f"{kind.capitalize()} {word} per share was {exact(v, unit)}"
    label = LOSS_LABELS[name] if v < 0 and name in LOSS_LABELS else LABELS[name]
    sign = "negative " if v < 0 and name not in LOSS_LABELS else ""
    return f"{label[0].upper()}{label[1:]} was {sign}{money(v, unit)}"


def _meta(**kw: Any) -> str:
    return json.dumps(kw, sort_keys=True, default=str)


# --------------------------------------------------------------------------- text documents


def render_text(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One document per company and fiscal period (FY, Q1-Q4) summarising its headline figures.

    Args:
        tables: the tables of :func:`normalize_facts` (``fact`` is required).

    Returns:
        Columns ``id`` (``fin:<cik>:<fiscal_year>:<period>``), ``text``, ``fact_ids``, ``meta`` (JSON).
    """
    fact = tables["fact"]
    periods = _periods(fact)
    rows = []
    for (cik, fy, fp), slot in sorted(periods.items()):
        if not any(k in slot for k in ("revenue", "net_income", "assets")):
            continue
        any_row = next(iter(slot.values()))
        entity = any_row["entity"] or f"CIK {cik}"
        end = _end(slot)
        used: list[str] = []
        parts = [f"{entity} (CIK {cik}): {period_phrase(fy, fp, end)}."]
        derived = [k for k in FLOW if k in slot and slot[k]["derived"]]
        for name in FLOW:
            r = slot.get(name)
            if r is None:
                continue
            sentence = _amount_sentence(name, r)
            used.append(r["fact_id"])
            prev = periods.get((cik, fy - 1, fp), {}).get(name)
            if prev is not None and prev["unit"] == r["unit"] and name not in ("eps_basic", "eps_diluted"):
                used.append(prev["fact_id"])
                if r["value"] > 0 and prev["value"] > 0 and r["value"] != prev["value"]:
                    direction = "up" if r["value"] > prev["value"] else "down"
                    sentence += (
                        f", {direction} {pct(r['value'], prev['value'])} from "
                        f"{readable(prev['value'], prev['unit'])} in {short_period(fy - 1, fp)}"
                    )
                else:
                    word = LOSS_LABELS.get(name, LABELS[name]) if prev["value"] < 0 else LABELS[name]
                    neg = "negative " if prev["value"] < 0 and name not in LOSS_LABELS else ""
                    sentence += f", compared with {word} of {neg}{readable(prev['value'], prev['unit'])} in {short_period(fy - 1, fp)}"
            parts.append(sentence + ".")
        stock = [n for n in STOCK if n in slot]
        if stock:
            items = []
            for n in stock:
                r = slot[n]
                used.append(r["fact_id"])
                neg = "negative " if r["value"] < 0 else ""
                items.append(f"{LABELS[n]} {neg}{money(r['value'], r['unit'])}")
            parts.append(f"At {long_date(slot[stock[0]]['end'])}: " + "; ".join(items) + ".")
        if derived:
            parts.append(
                "Fourth-quarter figures ("
                + ", ".join(LABELS[k] for k in derived)
                + ") are derived as the full fiscal year minus the first nine months."
            )
        filings = sorted(
            {(r["form"], r["filed"], r["accession"]) for r in slot.values() if r["accession"]},
            key=lambda t: (str(t[1]), str(t[2])),
        )
        if filings:
            form, filed, accn = filings[-1]
            parts.append(f"Source: {form or 'filing'} filed {filed} (accession {accn}).")
        rows.append(
            {
                "id": f"fin:{cik}:{fy}:{fp}",
                "text": " ".join(parts),
                "fact_ids": list(dict.fromkeys(used)),
                "meta": _meta(
                    cik=cik,
                    entity=entity,
                    fiscal_year=fy,
                    fiscal_period=fp,
                    period_end=end,
                    source=any_row["source"],
                    kind="period_summary",
                ),
            }
        )
    return (
        pl.DataFrame(rows, schema=TEXT_COLUMNS, orient="row") if rows else pl.DataFrame(schema=TEXT_COLUMNS)
    )


# --------------------------------------------------------------------------- instruction pairs

LOOKUP_TEMPLATES = (
    "What was {entity}'s {label} for {period}?",
    "How much {label} did {entity} report for {period}?",
    "According to its filings, what {label} did {entity} have for {period}?",
)
STOCK_TEMPLATES = (
    "What were {entity}'s {label} at {date}?",
    "How much {label} did {entity} report on its balance sheet at {date}?",
)
YOY_TEMPLATES = (
    "How did {entity}'s {label} change from {prev} to {cur}?",
    "By how much did {entity}'s {label} grow or shrink between {prev} and {cur}?",
)
IDENTITY_TEMPLATES = (
    "Does {entity}'s balance sheet at {date} satisfy total assets = total liabilities + equity?",
    "Check the accounting identity for {entity} at {date}: do assets equal liabilities plus equity?",
)
MARGIN_TEMPLATES = (
    "What was {entity}'s net margin (net income divided by revenue) for {period}?",
    "Compute {entity}'s net profit margin for {period}.",
)
CONTEXT_HEADER = "Facts from {entity}'s SEC filings:"


def _pick(templates: tuple[str, ...], seed: int, key: str) -> str:
    h = hashlib.sha1(f"{seed}|{key}".encode()).digest()
    return templates[int.from_bytes(h[:4], "big") % len(templates)]


def _label(canonical: str | None, concept: str) -> str:
    if canonical in LABELS:
        return LABELS[canonical]
    if canonical:
        labels = dict(load_concepts().select("canonical", "label").unique("canonical").iter_rows())
        return labels.get(canonical, canonical.replace("_", " "))
    return concept


def _context(entity: str, facts: list[dict[str, Any]]) -> str:
    lines = [CONTEXT_HEADER.format(entity=entity)]
    for r in facts:
        label = _label(r["canonical"], r["concept"])
        period = f"{r['start']} to {r['end']}" if r["start"] else f"at {r['end']}"
        lines.append(f"- {label}, {period}: {_plain(r['value'])} {r['unit']} [fact {r['fact_id']}]")
    return "\n".join(lines)


def _plain(v: D) -> str:
    return str(int(v)) if v == v.to_integral_value() else format(v.normalize(), "f")


def render_instruct(tables: dict[str, pl.DataFrame], *, seed: int = 0, context: bool = True) -> pl.DataFrame:
    """Grounded question/answer pairs from canonical facts and checks.

    Kinds: ``lookup`` (one figure of a fiscal period), ``yoy`` (change of revenue / net income vs the
    same period a year earlier: exact difference, and percentage when both are positive),
    ``margin`` (net income / revenue), ``identity`` (balance-sheet identity from the ``check`` table,
    pass or fail, with the sum). ``context`` lists the cited facts (exact values, fact ids) unless
    ``context=False`` (closed-book pairs, context null).

    Returns:
        Columns ``id``, ``prompt``, ``response``, ``context``, ``fact_ids``, ``meta`` (JSON with kind,
        cik, fiscal year/period), sorted by id.
    """
    fact = tables["fact"]
    periods = _periods(fact)
    by_id = {
        r["fact_id"]: r
        for r in fact.select(
            "fact_id", "cik", "entity", "canonical", "concept", "unit", "value", "start", "end"
        ).iter_rows(named=True)
    }
    rows: list[dict[str, Any]] = []

    def add(
        pid: str, prompt: str, response: str, facts: list[dict[str, Any]], entity: str, **meta: Any
    ) -> None:
        rows.append(
            {
                "id": pid,
                "prompt": prompt,
                "response": response,
                "context": _context(entity, facts) if context else None,
                "fact_ids": [r["fact_id"] for r in facts],
                "meta": _meta(seed=seed, **meta),
            }
        )

    for (cik, fy, fp), slot in sorted(periods.items()):
        entity = next(iter(slot.values()))["entity"] or f"CIK {cik}"
        end = _end(slot)
        period = short_period(fy, fp)
        base = {"cik": cik, "fiscal_year": fy, "fiscal_period": fp}
        for name in FLOW + STOCK:
            r = slot.get(name)
            if r is None:
                continue
            pid = f"fin:{cik}:{fy}:{fp}:lookup:{name}"
            label = LABELS[name]
            if name in STOCK:
                prompt = _pick(STOCK_TEMPLATES, seed, pid).format(
                    entity=entity, label=label, date=long_date(r["end"])
                )
                neg = "negative " if r["value"] < 0 else ""
                response = f"{entity} reported {label} of {neg}{money(r['value'], r['unit'])} at {long_date(r['end'])}."
            else:
                prompt = _pick(LOOKUP_TEMPLATES, seed, pid).format(entity=entity, label=label, period=period)
                response = f"{_amount_sentence(name, r)} for {period_phrase(fy, fp, end)}."
                if r["derived"]:
                    response += " This fourth-quarter figure is derived as the full fiscal year minus the first nine months."
            add(pid, prompt, response, [r], entity, kind="lookup", canonical=name, **base)
        for name in ("revenue", "net_income"):
            cur = slot.get(name)
            prev = periods.get((cik, fy - 1, fp), {}).get(name)
            if cur is None or prev is None or prev["unit"] != cur["unit"]:
                continue
            pid = f"fin:{cik}:{fy}:{fp}:yoy:{name}"
            prev_p, cur_p = short_period(fy - 1, fp), short_period(fy, fp)
            prompt = _pick(YOY_TEMPLATES, seed, pid).format(
                entity=entity, label=LABELS[name], prev=prev_p, cur=cur_p
            )
            diff = cur["value"] - prev["value"]
            direction = "increased" if diff > 0 else "decreased" if diff < 0 else "was unchanged"
            response = (
                f"{LABELS[name].capitalize()} was {'negative ' if prev['value'] < 0 else ''}{exact(prev['value'], prev['unit'])} "
                f"in {prev_p} and {'negative ' if cur['value'] < 0 else ''}{exact(cur['value'], cur['unit'])} in {cur_p}"
            )
            if diff:
                response += f", so it {direction} by {exact(diff, cur['unit'])}"
                if cur["value"] > 0 and prev["value"] > 0:
                    response += f" ({pct(cur['value'], prev['value'])})"
            else:
                response += f", so it {direction}"
            add(pid, prompt, response + ".", [prev, cur], entity, kind="yoy", canonical=name, **base)
        rev, ni = slot.get("revenue"), slot.get("net_income")
        if rev is not None and ni is not None and rev["value"] > 0 and rev["unit"] == ni["unit"]:
            pid = f"fin:{cik}:{fy}:{fp}:margin"
            margin = (ni["value"] / rev["value"] * 100).quantize(D("0.1"), rounding=decimal.ROUND_HALF_UP)
            word = "net loss" if ni["value"] < 0 else "net income"
            response = (
                f"{word.capitalize()} of {exact(ni['value'], ni['unit'])} on revenue of "
                f"{exact(rev['value'], rev['unit'])} gives a net margin of {'negative ' if margin < 0 else ''}{abs(margin)}%."
            )
            prompt = _pick(MARGIN_TEMPLATES, seed, pid).format(entity=entity, period=period)
            add(pid, prompt, response, [ni, rev], entity, kind="margin", **base)

    check = tables.get("check")
    if check is not None and check.height:
        ident = check.filter(
            (pl.col("check") == "balance_sheet_identity") & pl.col("status").is_in(["pass", "fail"])
        )
        for c in ident.iter_rows(named=True):
            facts = [by_id[f] for f in c["fact_ids"] if f in by_id]
            if len(facts) != len(c["fact_ids"]) or not facts:
                continue
            assets, others = facts[0], facts[1:]
            entity = assets["entity"] or f"CIK {c['cik']}"
            total = sum((r["value"] for r in others), D(0))
            diff = assets["value"] - total
            pid = f"fin:{c['cik']}:{c['end']}:identity"
            terms = " plus ".join(
                f"{_label(r['canonical'], r['concept'])} of "
                f"{'negative ' if r['value'] < 0 else ''}{exact(r['value'], r['unit'])}"
                for r in others
            )
            verdict = "Yes" if c["status"] == "pass" else "No"
            response = (
                f"{verdict}. Total assets were {exact(assets['value'], assets['unit'])}; {terms} "
                f"sum to {exact(total, assets['unit'])}"
            )
            if diff:
                response += f", a difference of {exact(diff, assets['unit'])}"
                response += (
                    " (within rounding)."
                    if c["status"] == "pass"
                    else ", so the identity does not hold as tagged."
                )
            else:
                response += ", so the identity holds exactly."
            prompt = _pick(IDENTITY_TEMPLATES, seed, pid).format(entity=entity, date=long_date(c["end"]))
            add(
                pid,
                prompt,
                response,
                facts,
                entity,
                kind="identity",
                cik=c["cik"],
                fiscal_year=c["fiscal_year"],
                fiscal_period=c["fiscal_period"],
                status=c["status"],
            )
    if not rows:
        return pl.DataFrame(schema=INSTRUCT_COLUMNS)
    return pl.DataFrame(rows, schema=INSTRUCT_COLUMNS, orient="row").sort("id")
