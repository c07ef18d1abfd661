"""Validation of canonical EHR rows: impossible values go to rejects with a reason.

Rules (each names the field and the value in the reject's error):

``future_date``
    a date after the run's reference time (``now`` unless given). Sources whose dates are shifted
    into the future by design (MIMIC-IV: 2100-2200) are exempt.
``death_before_birth``, ``negative_age``, ``implausible_age``
    a death date before the birth date; a source-given negative age; an age over 125.
``end_before_start``
    a period whose end is more than a day before its start.

    In these two rules a death or end date known only to the year or month (``<col>_precision``)
    stands for its whole year or month: an end in ``2015`` is not before a start on 2015-07-04.
``implausible_value``
    a measurement outside the physiologically possible range of its code, checked in the canonical
    unit after unit normalization (``data/physiological_ranges.csv``; e.g. body weight 0.2-700 kg,
    temperature 15-46 Cel). Values outside the *reference* range are normal clinical findings and are
    not rejected; they get the ``outside_reference_range`` flag.
``code_system_mismatch``
    a code that cannot belong to its declared system: a LOINC code whose mod-10 check digit is wrong,
    a SNOMED CT identifier failing its Verhoeff check digit or partition, an ICD-10-CM code in ICD-9
    shape and the reverse, a non-numeric RxNorm/CVX code, an NDC that is not 10-11 digits.

The ledger unit is the input record: when any canonical row made from a record is invalid, every
row of that record is removed and the record is rejected once (the first failing rule). Rows of a
patient whose patient record was rejected are dropped with reason ``patient_rejected``.

Example:
    >>> loinc_ok("2345-7"), loinc_ok("2345-8"), snomed_ok("195662009"), snomed_ok("195662008")
    (True, False, True, False)
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import logging
import re
from collections import Counter
from importlib import resources

import polars as pl

from dataforge.records.model import Extract

log = logging.getLogger(__name__)

FUTURE_EXEMPT_SOURCES = frozenset({"mimic"})
MAX_AGE = 125

# --------------------------------------------------------------------------- code checks

_LOINC = re.compile(r"^(\d{1,7})-(\d)$")
_ICD10CM = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?$")
_ICD9CM = re.compile(r"^(?:\d{3}(?:\.?\d{1,2})?|V\d{2}(?:\.?\d{1,2})?|E\d{3}(?:\.?\d)?)$")
_ICD9PROC = re.compile(r"^\d{2}(?:\.?\d{1,2})?$")
_ICD10PCS = re.compile(r"^[0-9A-HJ-NP-Z]{7}$")
_DIGITS = re.compile(r"^\d+$")
_NDC = re.compile(r"^(?:\d{10,11}|\d{4,5}-\d{3,4}-\d{1,2})$")

_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def verhoeff_ok(number: str) -> bool:
    """Verhoeff check digit (the last digit) of a digit string."""
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[i % 8][int(ch)]]
    return c == 0


def snomed_ok(code: str) -> bool:
    """SNOMED CT identifier: 6-18 digits, no leading zero, a valid partition, Verhoeff check digit."""
    if not _DIGITS.match(code) or not 6 <= len(code) <= 18 or code[0] == "0":
        return False
    partition = code[-3:-1]
    if partition not in {"00", "01", "02", "03", "04", "05", "10", "11", "12", "13", "14", "15"}:
        return False
    return verhoeff_ok(code)


def loinc_ok(code: str) -> bool:
    """LOINC code ``NNNNN-C`` whose check digit C is the mod-10 (Luhn-style) digit of NNNNN."""
    m = _LOINC.match(code)
    if not m:
        return False
    body = m.group(1)
    total = 0
    # LOINC: double every second digit starting from the rightmost of the body
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == int(m.group(2))


_CHECKS = {
    "LOINC": loinc_ok,
    "SNOMED": snomed_ok,
    "ICD10CM": lambda c: bool(_ICD10CM.match(c)),
    "ICD9CM": lambda c: bool(_ICD9CM.match(c)),
    "ICD9Proc": lambda c: bool(_ICD9PROC.match(c)),
    "ICD10PCS": lambda c: bool(_ICD10PCS.match(c)),
    "RxNorm": lambda c: bool(_DIGITS.match(c)) and len(c) <= 8,
    "CVX": lambda c: bool(_DIGITS.match(c)) and len(c) <= 3,
    "NDC": lambda c: bool(_NDC.match(c)),
}


def code_ok(system: str | None, code: str | None) -> bool:
    """Whether ``code`` can belong to ``system`` (systems without a rule always pass)."""
    if not system or not code:
        return True
    check = _CHECKS.get(system)
    return True if check is None else check(code)


@functools.cache
def physiological_ranges() -> pl.DataFrame:
    """``code, unit, low, high, what`` from ``data/physiological_ranges.csv``."""
    text = (resources.files("dataforge.records.ehr") / "data" / "physiological_ranges.csv").read_text("utf-8")
    rows = list(csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")))
    return pl.DataFrame(
        {
            "code": [r["loinc"] for r in rows],
            "unit": [r["unit"] for r in rows],
            "_low": [float(r["low"]) for r in rows],
            "_high": [float(r["high"]) for r in rows],
        }
    )


# --------------------------------------------------------------------------- rules


def _latest(frame: pl.DataFrame, col: str) -> pl.Expr:
    """The last instant a time column's value can stand for: a year- or month-level date (stored as
    its first day) covers the whole year or month."""
    name = f"{col}_precision"
    if name not in frame.columns:
        return pl.col(col)
    p, t = pl.col(name), pl.col(col)
    last = pl.duration(microseconds=1)
    return (
        pl.when(p == "year")
        .then(t.dt.offset_by("1y") - last)
        .when(p == "month")
        .then(t.dt.offset_by("1mo") - last)
        .otherwise(t)
    )


def _row_problems(table: str, frame: pl.DataFrame, *, now: dt.datetime, source: str) -> pl.DataFrame:
    """``source_file, source_row, reason, error`` for every invalid row of one raw table."""
    checks: list[tuple[str, pl.Expr, pl.Expr]] = []
    now_lit = pl.lit(now).dt.replace_time_zone("UTC") if now.tzinfo is None else pl.lit(now)
    time_cols = [
        c for c in ("birth_date", "death_date", "start_time", "end_time", "time") if c in frame.columns
    ]
    if source not in FUTURE_EXEMPT_SOURCES:
        for c in time_cols:
            checks.append(
                (
                    "future_date",
                    pl.col(c) > now_lit,
                    pl.format(f"{table}.{c} = {{}} is after the run time", pl.col(c).dt.strftime("%Y-%m-%d")),
                )
            )
    if table == "patient":
        checks += [
            (
                "death_before_birth",
                _latest(frame, "death_date") < pl.col("birth_date"),
                pl.format(
                    "patient.death_date {} is before birth_date {}",
                    pl.col("death_date").dt.strftime("%Y-%m-%d"),
                    pl.col("birth_date").dt.strftime("%Y-%m-%d"),
                ),
            ),
            ("negative_age", pl.col("age") < 0, pl.format("patient.age = {} is negative", pl.col("age"))),
            (
                "implausible_age",
                (pl.col("age") > MAX_AGE)
                | ((now_lit.dt.year() - pl.col("birth_date").dt.year()) > MAX_AGE)
                & pl.col("death_date").is_null()
                & pl.lit(source not in FUTURE_EXEMPT_SOURCES),
                pl.format(
                    "patient age over {} (age {}, birth year {})",
                    pl.lit(MAX_AGE),
                    pl.col("age"),
                    pl.col("birth_date").dt.year(),
                ),
            ),
        ]
    if "start_time" in frame.columns and "end_time" in frame.columns:
        checks.append(
            (
                "end_before_start",
                _latest(frame, "end_time") < pl.col("start_time") - pl.duration(days=1),
                pl.format(
                    f"{table}.end_time {{}} is before start_time {{}}",
                    pl.col("end_time").dt.strftime("%Y-%m-%d"),
                    pl.col("start_time").dt.strftime("%Y-%m-%d"),
                ),
            )
        )
    if "code" in frame.columns and "code_system" in frame.columns and frame.height:
        pairs = frame.select("code_system", "code").unique().drop_nulls()
        bad = [(s, c) for s, c in pairs.iter_rows() if not code_ok(s, c)]
        if bad:
            bad_frame = pl.DataFrame(bad, schema={"code_system": pl.Utf8, "code": pl.Utf8}, orient="row")
            bad_key = pl.concat_str([pl.col("code_system"), pl.col("code")], separator="\x00")
            bad_keys = bad_frame.select(bad_key.alias("k"))["k"]
            checks.append(
                (
                    "code_system_mismatch",
                    bad_key.is_in(bad_keys.implode()),
                    pl.format(
                        f"{table}.code {{}} is not a valid {{}} code", pl.col("code"), pl.col("code_system")
                    ),
                )
            )
    if table == "measurement" and frame.height and "unit" in frame.columns:
        ranges = physiological_ranges()
        f = frame.with_row_index("_i").join(ranges, on=["code", "unit"], how="left")
        out_of = (pl.col("value") < pl.col("_low")) | (pl.col("value") > pl.col("_high"))
        f = f.sort("_i")
        frame = frame.with_columns(f["_low"], f["_high"])
        checks.append(
            (
                "implausible_value",
                out_of,
                pl.format(
                    "measurement {} ({}) = {} {} is outside the possible range {}-{}",
                    pl.col("code"),
                    pl.col("display").fill_null(""),
                    pl.col("value"),
                    pl.col("unit"),
                    pl.col("_low"),
                    pl.col("_high"),
                ),
            )
        )
    if not checks:
        return pl.DataFrame(
            schema={"source_file": pl.Utf8, "source_row": pl.Int64, "reason": pl.Utf8, "error": pl.Utf8}
        )
    reason = pl.when(checks[0][1].fill_null(False)).then(pl.lit(checks[0][0]))
    error = pl.when(checks[0][1].fill_null(False)).then(checks[0][2])
    for name, cond, msg in checks[1:]:
        reason = reason.when(cond.fill_null(False)).then(pl.lit(name))
        error = error.when(cond.fill_null(False)).then(msg)
    return (
        frame.with_columns(reason.otherwise(None).alias("reason"), error.otherwise(None).alias("error"))
        .filter(pl.col("reason").is_not_null())
        .select("source_file", "source_row", "reason", "error")
    )


def validate(extract: Extract, *, now: dt.datetime | None = None) -> Counter[str]:
    """Apply the rules to ``extract.tables`` in place: invalid records leave every table and go to
    the extract's rejects; rows of rejected patients are dropped. Returns counts per rule.

    Measurement rows must already have their canonical ``unit`` (run the units step first).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    counts: Counter[str] = Counter()
    problems = []
    for table, frame in extract.tables.items():
        p = _row_problems(table, frame, now=now, source=extract.source)
        if p.height:
            problems.append(p.with_columns(pl.lit(table).alias("table")))
    if problems:
        allp = pl.concat(problems).sort("source_file", "source_row", "table")
        first = allp.unique(["source_file", "source_row"], keep="first", maintain_order=True)
        counts.update(first["reason"].to_list())
        rejected_patients = set()
        if "patient" in extract.tables:
            bad_pat = extract.tables["patient"].join(
                first.filter(pl.col("table") == "patient"), on=["source_file", "source_row"], how="semi"
            )
            rejected_patients = set(bad_pat["patient_id"].to_list())
        for table, frame in list(extract.tables.items()):
            extract.tables[table] = frame.join(first, on=["source_file", "source_row"], how="anti")
        extract.reject_frame(
            first.select(
                "source_file",
                "source_row",
                "table",
                "reason",
                pl.format(
                    "{} row {}: {}", pl.col("source_file"), pl.col("source_row"), pl.col("error")
                ).alias("error"),
            )
        )
        if rejected_patients:
            orphan_keys = []
            for table, frame in list(extract.tables.items()):
                if table == "patient" or "patient_id" not in frame.columns:
                    continue
                hit = frame.filter(pl.col("patient_id").is_in(list(rejected_patients)))
                if hit.height:
                    orphan_keys.append(
                        hit.select("source_file", "source_row", "source_ref", pl.lit(table).alias("table"))
                    )
            if orphan_keys:
                orphans = pl.concat(orphan_keys).unique(
                    ["source_file", "source_row"], keep="first", maintain_order=True
                )
                for table, frame in list(extract.tables.items()):
                    extract.tables[table] = frame.join(orphans, on=["source_file", "source_row"], how="anti")
                extract.drop_frame(
                    orphans.with_columns(
                        pl.lit("patient_rejected").alias("reason"),
                        pl.lit("the patient's own record was rejected").alias("detail"),
                    )
                )
                counts["patient_rejected"] += orphans.height
    # soft flag: outside the reference range (the units step converts value and range together)
    if "measurement" in extract.tables and extract.tables["measurement"].height:
        m = extract.tables["measurement"]
        outside = (pl.col("value") < pl.col("ref_low")) | (pl.col("value") > pl.col("ref_high"))
        m = m.with_columns(
            pl.when(outside.fill_null(False))
            .then(pl.lit("outside_reference_range"))
            .otherwise(None)
            .alias("flags")
        )
        counts["flag:outside_reference_range"] = int(m["flags"].is_not_null().sum())
        extract.tables["measurement"] = m
    log.info("validate: %s", dict(counts))
    return counts
