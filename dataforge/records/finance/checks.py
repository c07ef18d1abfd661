"""Accounting checks on the canonical fact table: one row per check and period (table ``check``).

Checks read consolidated facts (``dimensions`` null) and, for canonical names, the primary synonym.
Arithmetic is exact (Decimal); ``values`` keeps the operands as exact strings in a JSON object.

* ``balance_sheet_total``: ``Assets = LiabilitiesAndStockholdersEquity`` at each balance-sheet date
  where both are tagged (both are filer-reported totals, so any difference is a tagging error).
* ``balance_sheet_identity``: ``Assets = Liabilities + equity``, equity being
  ``StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest`` when tagged, else
  ``StockholdersEquity + MinorityInterest`` (when tagged), plus temporary (mezzanine) equity when
  tagged. ``skipped`` when ``Liabilities`` or equity is not tagged (common: many filers only tag the
  ``LiabilitiesAndStockholdersEquity`` total). Relative tolerance ``identity_tolerance`` of |Assets|
  (default 0.001: values are rounded to thousands or millions, so an exact identity can miss by a few
  rounding units; anything larger is a missing or mis-tagged component, named in ``reason``).
* ``eps_basic`` / ``eps_diluted``: reported EPS vs ``numerator / weighted shares``, the numerator
  being ``NetIncomeLossAvailableToCommonStockholders{Basic,Diluted}`` when tagged, else the primary
  net income. Passes when ``|computed - reported| <= 0.005 + eps_tolerance * |reported|`` (EPS is
  reported rounded to the cent; the default relative tolerance 0.02 covers numerators and share
  counts rounded to thousands). Fails name both values;
  known legitimate causes (two-class method, preferred dividends) are mentioned in ``reason``.
* ``unit_consistency``: per (cik, concept), the units used must fit the concept's kind: monetary ->
  an ISO-4217 currency, a single one; per_share -> ``<currency>/shares``; shares -> ``shares``; pure
  -> ``pure``. The kind comes from ``data/concepts.csv``, else from FSDS ``tag.datatype``. Catalogued
  concepts get a pass or fail row; other concepts only a fail row (wrong kind for their datatype, or
  units of different kinds mixed).
"""

from __future__ import annotations

import decimal
import hashlib
import json
import logging
from collections import defaultdict
from typing import Any

import polars as pl

from dataforge.records.finance.common import iso4217

log = logging.getLogger(__name__)

DEFAULT_IDENTITY_TOLERANCE = 0.001
DEFAULT_EPS_TOLERANCE = 0.02
EPS_ROUNDING = decimal.Decimal("0.005")

CHECK_COLUMNS: dict[str, pl.DataType] = {
    "check_id": pl.Utf8(),
    "check": pl.Utf8(),
    "status": pl.Utf8(),
    "cik": pl.Int64(),
    "entity": pl.Utf8(),
    "unit": pl.Utf8(),
    "concept": pl.Utf8(),
    "period_type": pl.Utf8(),
    "start": pl.Date(),
    "end": pl.Date(),
    "fiscal_year": pl.Int32(),
    "fiscal_period": pl.Utf8(),
    "lhs": pl.Utf8(),
    "rhs": pl.Utf8(),
    "difference": pl.Utf8(),
    "rel_difference": pl.Float64(),
    "tolerance": pl.Float64(),
    "values": pl.Utf8(),
    "fact_ids": pl.List(pl.Utf8()),
    "reason": pl.Utf8(),
    "source_file": pl.Utf8(),
    "source_row": pl.Int64(),
    "source_ref": pl.Utf8(),
}

DATATYPE_KIND = {
    "monetary": "monetary",
    "perShare": "per_share",
    "shares": "shares",
    "pure": "pure",
    "percent": "pure",
}
BALANCE = [
    "assets",
    "liabilities",
    "equity",
    "equity_including_nci",
    "noncontrolling_interest",
    "temporary_equity",
    "liabilities_and_equity",
]


def empty_checks() -> pl.DataFrame:
    return pl.DataFrame(schema=CHECK_COLUMNS)


def _plain(v: decimal.Decimal) -> str:
    if v == v.to_integral_value():
        return str(int(v))
    return format(v.normalize(), "f")


def _row(check: str, status: str, base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    row = {c: None for c in CHECK_COLUMNS}
    row.update(base)
    row.update(kw)
    row["check"] = check
    row["status"] = status
    ident = "|".join(str(row.get(k) or "") for k in ("check", "cik", "unit", "concept", "start", "end"))
    row["check_id"] = hashlib.sha1(ident.encode()).hexdigest()[:16]
    row["source_ref"] = f"check:{check}"
    return row


def run_checks(
    fact: pl.DataFrame,
    *,
    identity_tolerance: float = DEFAULT_IDENTITY_TOLERANCE,
    eps_tolerance: float = DEFAULT_EPS_TOLERANCE,
) -> pl.DataFrame:
    """All checks over a canonical ``fact`` frame (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    cons = fact.filter(pl.col("dimensions").is_null())
    rows += balance_sheet_checks(cons, tolerance=identity_tolerance)
    rows += eps_checks(cons, tolerance=eps_tolerance)
    rows += unit_checks(fact)
    if not rows:
        return empty_checks()
    frame = pl.DataFrame({c: pl.Series(c, [r[c] for r in rows], dtype=t) for c, t in CHECK_COLUMNS.items()})
    return frame.sort(["check", "cik", "end", "start", "unit", "concept"], nulls_last=False)


def _by_period(frame: pl.DataFrame, names: list[str]) -> dict[tuple, dict[str, dict[str, Any]]]:
    """(cik, start, end) -> canonical/concept name -> fact row (primary synonyms only)."""
    out: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    sub = frame.filter(pl.col("canonical").is_in(names) & pl.col("canonical_primary"))
    for r in sub.iter_rows(named=True):
        out[(r["cik"], r["start"], r["end"])][r["canonical"]] = r
    return out


def balance_sheet_checks(cons: pl.DataFrame, *, tolerance: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    instants = cons.filter(pl.col("period_type") == "instant")
    tol = decimal.Decimal(str(tolerance))
    for (cik, _start, end), got in sorted(_by_period(instants, BALANCE).items(), key=lambda kv: str(kv[0])):
        a = got.get("assets")
        if a is None:
            continue
        unit = a["unit"]
        same = {k: v for k, v in got.items() if v["unit"] == unit}
        base = {
            "cik": cik,
            "entity": a["entity"],
            "unit": unit,
            "period_type": "instant",
            "end": end,
            "fiscal_year": a["fiscal_year"],
            "fiscal_period": a["fiscal_period"],
            "tolerance": tolerance,
        }
        assets = a["value"]
        # balance_sheet_total
        lse = same.get("liabilities_and_equity")
        if lse is None:
            rows.append(
                _row(
                    "balance_sheet_total",
                    "skipped",
                    base,
                    fact_ids=[a["fact_id"]],
                    values=json.dumps({"assets": _plain(assets)}),
                    reason="LiabilitiesAndStockholdersEquity not tagged at this date",
                )
            )
        else:
            rows.append(
                _compare(
                    "balance_sheet_total",
                    base,
                    assets,
                    lse["value"],
                    tol,
                    {"assets": a, "liabilities_and_equity": lse},
                    "Assets {lhs} != LiabilitiesAndStockholdersEquity {rhs}",
                )
            )
        # balance_sheet_identity
        liab = same.get("liabilities")
        eq_total = same.get("equity_including_nci")
        eq = same.get("equity")
        missing = []
        if liab is None:
            missing.append("Liabilities")
        if eq_total is None and eq is None:
            missing.append("StockholdersEquity")
        if missing:
            rows.append(
                _row(
                    "balance_sheet_identity",
                    "skipped",
                    base,
                    fact_ids=[a["fact_id"]],
                    values=json.dumps({"assets": _plain(assets)}),
                    reason=f"{' and '.join(missing)} not tagged at this date",
                )
            )
            continue
        parts = {"assets": a, "liabilities": liab}
        if eq_total is not None:
            parts["equity_including_nci"] = eq_total
        else:
            parts["equity"] = eq
            if "noncontrolling_interest" in same:
                parts["noncontrolling_interest"] = same["noncontrolling_interest"]
        if "temporary_equity" in same:
            parts["temporary_equity"] = same["temporary_equity"]
        rhs = sum((v["value"] for k, v in parts.items() if k != "assets"), decimal.Decimal(0))
        terms = " + ".join(k for k in parts if k != "assets")
        row = _compare(
            "balance_sheet_identity", base, assets, rhs, tol, parts, "Assets {lhs} != " + terms + " = {rhs}"
        )
        if row["status"] == "fail":
            untagged = [
                n
                for n in ("noncontrolling_interest", "temporary_equity")
                if n not in parts and eq_total is None
            ]
            if untagged:
                row["reason"] += f"; not tagged at this date: {', '.join(untagged)}"
        rows.append(row)
    return rows


def _compare(
    check: str,
    base: dict[str, Any],
    lhs: decimal.Decimal,
    rhs: decimal.Decimal,
    tol: decimal.Decimal,
    parts: dict[str, dict[str, Any]],
    template: str,
) -> dict[str, Any]:
    diff = lhs - rhs
    rel = abs(diff) / abs(lhs) if lhs else (decimal.Decimal(0) if diff == 0 else decimal.Decimal(1))
    ok = rel <= tol
    reason = None
    if not ok:
        reason = template.format(lhs=_plain(lhs), rhs=_plain(rhs)) + (
            f" (difference {_plain(diff)}, {float(rel):.4%} of assets, tolerance {float(tol):.4%})"
        )
    return _row(
        check,
        "pass" if ok else "fail",
        base,
        lhs=_plain(lhs),
        rhs=_plain(rhs),
        difference=_plain(diff),
        rel_difference=float(rel),
        values=json.dumps({k: _plain(v["value"]) for k, v in parts.items()}),
        fact_ids=[v["fact_id"] for v in parts.values()],
        reason=reason,
    )


def eps_checks(cons: pl.DataFrame, *, tolerance: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    durations = cons.filter(pl.col("period_type") == "duration")
    by = _by_period(durations, ["eps_basic", "eps_diluted", "net_income", "shares_basic", "shares_diluted"])
    special: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in durations.filter(
        pl.col("concept").is_in(
            [
                "NetIncomeLossAvailableToCommonStockholdersBasic",
                "NetIncomeLossAvailableToCommonStockholdersDiluted",
            ]
        )
    ).iter_rows(named=True):
        special[(r["cik"], r["start"], r["end"])][r["concept"]] = r
    rel_tol = decimal.Decimal(str(tolerance))
    for key, got in sorted(by.items(), key=lambda kv: str(kv[0])):
        cik, start, end = key
        for kind, shares_name, common in (
            ("eps_basic", "shares_basic", "NetIncomeLossAvailableToCommonStockholdersBasic"),
            ("eps_diluted", "shares_diluted", "NetIncomeLossAvailableToCommonStockholdersDiluted"),
        ):
            eps = got.get(kind)
            if eps is None:
                continue
            currency = eps["unit"].split("/")[0]
            base = {
                "cik": cik,
                "entity": eps["entity"],
                "unit": eps["unit"],
                "period_type": "duration",
                "start": start,
                "end": end,
                "fiscal_year": eps["fiscal_year"],
                "fiscal_period": eps["fiscal_period"],
                "tolerance": tolerance,
            }
            num = special[key].get(common) or special[key].get(
                "NetIncomeLossAvailableToCommonStockholdersBasic"
            )
            if num is None or num["unit"] != currency:
                num = got.get("net_income")
            shares = got.get(shares_name)
            if num is None or num["unit"] != currency or shares is None or shares["unit"] != "shares":
                missing = []
                if num is None or num["unit"] != currency:
                    missing.append(f"net income in {currency}")
                if shares is None or shares["unit"] != "shares":
                    missing.append(shares_name.replace("_", " ") + " weighted shares")
                rows.append(
                    _row(
                        kind,
                        "skipped",
                        base,
                        fact_ids=[eps["fact_id"]],
                        values=json.dumps({kind: _plain(eps["value"])}),
                        reason=f"{' and '.join(missing)} not tagged for this period",
                    )
                )
                continue
            if shares["value"] == 0:
                rows.append(
                    _row(
                        kind,
                        "skipped",
                        base,
                        fact_ids=[eps["fact_id"], shares["fact_id"]],
                        reason="weighted shares are zero",
                    )
                )
                continue
            computed = num["value"] / shares["value"]
            reported = eps["value"]
            diff = computed - reported
            allowed = EPS_ROUNDING + rel_tol * abs(reported)
            ok = abs(diff) <= allowed
            computed_q = computed.quantize(decimal.Decimal("0.0001"))
            parts = {kind: eps, "numerator": num, "shares": shares}
            reason = None
            if not ok:
                reason = (
                    f"reported {kind} {_plain(reported)} vs {num['concept']} {_plain(num['value'])} / "
                    f"{shares['concept']} {_plain(shares['value'])} = {computed_q} (difference "
                    f"{_plain(diff.quantize(decimal.Decimal('0.0001')))}, allowed {_plain(allowed)}); "
                    "two-class EPS, preferred dividends or per-class share counts can explain this"
                )
            rows.append(
                _row(
                    kind,
                    "pass" if ok else "fail",
                    base,
                    lhs=_plain(reported),
                    rhs=str(computed_q),
                    difference=_plain(diff.quantize(decimal.Decimal("0.0001"))),
                    rel_difference=float(abs(diff) / abs(reported)) if reported else None,
                    values=json.dumps({k: _plain(v["value"]) for k, v in parts.items()}),
                    fact_ids=[v["fact_id"] for v in parts.values()],
                    reason=reason,
                )
            )
    return rows


def _unit_kind(unit: str) -> str:
    if iso4217(unit):
        return "monetary"
    if unit == "shares":
        return "shares"
    if unit == "pure":
        return "pure"
    num, sep, den = unit.partition("/")
    if sep and iso4217(num) and den == "shares":
        return "per_share"
    return "other"


def unit_checks(fact: pl.DataFrame) -> list[dict[str, Any]]:
    from dataforge.records.finance.facts import load_concepts

    kinds = load_concepts().select("taxonomy", "concept", "kind")
    groups = (
        fact.filter(~pl.col("derived"))
        .join(kinds, on=["taxonomy", "concept"], how="left")
        .group_by(["cik", "taxonomy", "concept"])
        .agg(
            pl.col("entity").first(),
            pl.col("kind").first(),
            pl.col("datatype").drop_nulls().first()
            if "datatype" in fact.columns
            else pl.lit(None).alias("datatype"),
            pl.col("unit").value_counts(sort=True).alias("units"),
            pl.col("fact_id").head(20).alias("ids"),
        )
        .sort(["cik", "taxonomy", "concept"])
    )
    rows: list[dict[str, Any]] = []
    for g in groups.iter_rows(named=True):
        units = {u["unit"]: u["count"] for u in g["units"]}
        catalogued = g["kind"] is not None
        expected = g["kind"] or DATATYPE_KIND.get(g["datatype"] or "")
        got = {_unit_kind(u) for u in units}
        problems = []
        if expected:
            wrong = [u for u in units if _unit_kind(u) != expected]
            if wrong:
                problems.append(f"expected {expected} units, found {', '.join(sorted(wrong))}")
            if expected == "monetary" and len([u for u in units if iso4217(u)]) > 1:
                problems.append(f"mixed currencies {', '.join(sorted(units))}")
        elif len(got - {"other"}) > 1:
            problems.append(f"units of different kinds: {', '.join(sorted(units))}")
        if not catalogued and not problems:
            continue
        base = {
            "cik": g["cik"],
            "entity": g["entity"],
            "concept": f"{g['taxonomy']}:{g['concept']}",
            "unit": ",".join(sorted(units)),
        }
        rows.append(
            _row(
                "unit_consistency",
                "fail" if problems else "pass",
                base,
                values=json.dumps({"expected_kind": expected, "units": units}),
                fact_ids=g["ids"],
                reason="; ".join(problems) or None,
            )
        )
    return rows
