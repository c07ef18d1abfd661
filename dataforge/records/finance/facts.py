"""The common pipeline after every finance reader: raw facts -> canonical ``fact`` table.

:func:`normalize_facts` takes a reader's Extract (table ``raw_fact``) and returns a new Extract with
tables ``fact``, ``restatement`` and ``check`` (schemas ``fin.fact.v1``, ``fin.restatement.v1``,
``fin.check.v1``), carrying the reader's rejects and drops forward and adding its own drops, so the
ledger still adds up: ``rows_in == kept + dropped + rejected`` with kept = input records behind
``fact`` rows.

Decisions:

* **Key and id.** One fact per ``(cik, taxonomy, concept, unit, start, end, dimensions)``;
  ``fact_id`` = the first 16 hex digits of SHA-1 over that key (``|``-joined, null = empty), so it is
  stable across runs and sources and does not depend on the value or filing.
* **Dimensions.** Kept by default (``dimensions="keep"``): facts with segments/axes stay, with
  ``dimensions`` in the key (``Axis=Member;...`` sorted); consolidated facts have
  ``dimensions = null``. Checks and rendering use consolidated facts only. ``dimensions="drop"``
  drops dimensional records with reason ``dimensional`` instead.
* **Latest value, credited to the filing that first reported it.** A fact is reported by its
  original filing, by amendments and again as a comparative in later filings. Within one filing
  (same accession; without one, same file) the most precise record (``decimals``: INF first, then
  ``source_file``, ``source_row``) speaks for the filing; another record of that filing is dropped
  as ``duplicate`` of it (same value, or its value rounded to the record's XBRL ``decimals``: Apple
  tags 19,454 million once more as 19.5 billion with ``decimals=-8``) or ``conflict`` (a different
  value), and is not a restatement. The filings are then put in filing order (``filed``, then
  ``accession``; undated first) and split into runs of consecutive equal values. The fact keeps
  the first record of the last run: the value of the latest filing, with the accession, form and
  date of the first filing that reported it (an amendment that changed a value keeps the credit
  when the next annual report repeats the value; the SEC's ``frame``, which it puts on the latest
  data point, is carried over from the run). The first record of an earlier run is dropped as
  ``superseded``: its value was changed by the filing that starts the next run. A later filing
  repeating its run's value is dropped as ``duplicate`` of the filing that first reported it. Both
  are rows of ``restatement``: ``old_*`` is the dropped record, ``new_*`` and ``source_*`` the
  record that accounts for it (for ``changed`` rows the filing that made the change; otherwise the
  earlier filing whose value it repeats). ``restated`` on a fact = some filing reported another
  value; ``n_reports`` = distinct filings.
* **Fiscal year end** is inferred per CIK from its annual duration facts (350-380 days): the most
  common month of their end dates, where an end in the first 7 days of a month counts for the
  previous month (52/53-week years ending "the Saturday nearest January 31" can end on Feb 3).
  Without annual facts the reader's hint is used (FSDS ``sub.fye``, XBRL
  ``dei:CurrentFiscalYearEndDate``), else December (counter ``fye:assumed_december``).
* **Fiscal year and period from dates**, never from the filing's ``fy``/``fp``. A date's fiscal year
  is the calendar year in which its fiscal year ends (Snowflake: Feb 2023 - Jan 31 2024 = fiscal
  2024). Its position is its month relative to the fiscal year end month (again with the 7-day
  rule), so quarter ends are months FYE+3, +6, +9, +12; a date is a quarter end if it falls in such
  a month on day >= 21 or in the next month on day <= 7. Durations: ``q = round(days / 91.3125)``
  with ``|days - 91.3125 q| <= 14`` (52/53-week quarters of 91 or 98 days, 53-week years of 371
  days). Labels: ``Q1``-``Q4`` (one quarter), ``H1`` (2 quarters to Q2), ``9M`` (3 to Q3), ``FY`` (4 to
  Q4), ``H2`` (2 to Q4), ``TTM`` (4 quarters ending elsewhere), ``<n>Q`` otherwise; null when the
  duration is not a whole number of quarters or does not end at a quarter end. Instants get the
  period they close (``FY`` at the fiscal year end, ``Q1``-``Q3`` at quarter ends, else null).
* **Q4 derivation.** For currency-valued duration facts only (flows are additive; EPS and weighted
  share counts are not), where a ``FY`` fact and a ``9M`` fact share key fields and start date and no
  ``Q4`` fact ends on the FY end: ``Q4 = FY - 9M`` exactly, start = day after the 9M end. Derived
  rows have ``derived = True``, ``derived_from = [FY id, 9M id]``, the FY fact's filing, and null
  ``source_file``/``source_row``: they are not input records and not counted as kept.
* **Canonical names** come from ``data/concepts.csv`` (canonical, taxonomy, concept, priority, kind,
  label). ``canonical_primary`` marks, per (cik, canonical, unit, period, dimensions), the synonym with
  the best (lowest) priority present; checks and rendering read primary facts.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import logging
from pathlib import Path
from typing import Literal

import polars as pl

from dataforge.errors import ConfigError
from dataforge.records.finance.common import DECIMAL, RAW_SCHEMA, fit_raw
from dataforge.records.model import Extract

log = logging.getLogger(__name__)

KEY = ["cik", "taxonomy", "concept", "unit", "start", "end", "dimensions"]
CONCEPTS_CSV = Path(__file__).resolve().parent / "data" / "concepts.csv"
QUARTER_DAYS = 91.3125
QUARTER_SLACK = 14
ANNUAL_DAYS = (350, 380)
# annual durations in quarterly reports are often trailing-twelve-month figures (Amazon's free cash
# flow): only annual reports tell the fiscal year end
ANNUAL_FORMS = r"^(10-K|20-F|40-F)(/A)?$"

FACT_COLUMNS: dict[str, pl.DataType] = {
    "fact_id": pl.Utf8(),
    "cik": pl.Int64(),
    "entity": pl.Utf8(),
    "taxonomy": pl.Utf8(),
    "concept": pl.Utf8(),
    "canonical": pl.Utf8(),
    "canonical_primary": pl.Boolean(),
    "label": pl.Utf8(),
    "unit": pl.Utf8(),
    "datatype": pl.Utf8(),
    "value": DECIMAL,
    "value_text": pl.Utf8(),
    "decimals": pl.Utf8(),
    "period_type": pl.Utf8(),
    "start": pl.Date(),
    "end": pl.Date(),
    "duration_days": pl.Int32(),
    "fiscal_year": pl.Int32(),
    "fiscal_period": pl.Utf8(),
    "fye_month": pl.Int32(),
    "dimensions": pl.Utf8(),
    "statement": pl.Utf8(),
    "form": pl.Utf8(),
    "filed": pl.Date(),
    "accession": pl.Utf8(),
    "filing_fy": pl.Int32(),
    "filing_fp": pl.Utf8(),
    "frame": pl.Utf8(),
    "n_reports": pl.Int32(),
    "restated": pl.Boolean(),
    "derived": pl.Boolean(),
    "derived_from": pl.List(pl.Utf8()),
    "source": pl.Utf8(),
    "source_file": pl.Utf8(),
    "source_row": pl.Int64(),
    "source_ref": pl.Utf8(),
}

RESTATEMENT_COLUMNS: dict[str, pl.DataType] = {
    "fact_id": pl.Utf8(),
    "cik": pl.Int64(),
    "entity": pl.Utf8(),
    "taxonomy": pl.Utf8(),
    "concept": pl.Utf8(),
    "unit": pl.Utf8(),
    "period_type": pl.Utf8(),
    "start": pl.Date(),
    "end": pl.Date(),
    "dimensions": pl.Utf8(),
    "fiscal_year": pl.Int32(),
    "fiscal_period": pl.Utf8(),
    "old_value": DECIMAL,
    "old_value_text": pl.Utf8(),
    "new_value": DECIMAL,
    "new_value_text": pl.Utf8(),
    "changed": pl.Boolean(),
    "difference": DECIMAL,
    "old_accession": pl.Utf8(),
    "old_form": pl.Utf8(),
    "old_filed": pl.Date(),
    "new_accession": pl.Utf8(),
    "new_form": pl.Utf8(),
    "new_filed": pl.Date(),
    "old_source_file": pl.Utf8(),
    "old_source_row": pl.Int64(),
    "old_source_ref": pl.Utf8(),
    "source_file": pl.Utf8(),
    "source_row": pl.Int64(),
    "source_ref": pl.Utf8(),
}


@functools.cache
def load_concepts(path: str | None = None) -> pl.DataFrame:
    """The synonyms table (``data/concepts.csv`` unless ``path``): canonical, taxonomy, concept,
    priority, kind (monetary | per_share | shares | pure), label. A concept maps to one canonical."""
    file = Path(path) if path else CONCEPTS_CSV
    frame = pl.read_csv(file, schema_overrides={"priority": pl.Int32})
    dup = frame.group_by(["taxonomy", "concept"]).len().filter(pl.col("len") > 1)
    if dup.height:
        msg = f"{file}: concept(s) mapped to more than one canonical name: {dup.rows()[:5]}"
        raise ConfigError(msg)
    return frame


def fact_ids(frame: pl.DataFrame) -> pl.Series:
    """Stable fact ids for the key columns of ``frame`` (see the module docstring)."""
    key = pl.concat_str([pl.col(c).cast(pl.Utf8).fill_null("") for c in KEY], separator="|")
    keys = frame.select(key.alias("k"))["k"]
    uniq = keys.unique()
    mapping = {k: hashlib.sha1(k.encode("utf-8")).hexdigest()[:16] for k in uniq.to_list()}
    return keys.replace_strict(mapping, return_dtype=pl.Utf8).alias("fact_id")


def _rounds_to(precise: decimal.Decimal | None, decimals: str | None, coarse: decimal.Decimal | None) -> bool:
    """True when ``precise`` rounded to XBRL ``decimals`` equals ``coarse`` (consistent duplicates in
    the sense of XBRL 2.1: a fact repeated with less precision)."""
    if precise is None or coarse is None or decimals in (None, "INF"):
        return False
    try:
        places = int(decimals)
    except ValueError:
        return False
    step = decimal.Decimal(1).scaleb(-places)
    return precise.quantize(step, rounding=decimal.ROUND_HALF_UP) == coarse


def plain(value: decimal.Decimal | None) -> str | None:
    """A Decimal as plain text without exponent or trailing zeros (``12.5000`` -> ``12.5``)."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


# --------------------------------------------------------------------------- fiscal calendar


def _adj_month(date: pl.Expr) -> pl.Expr:
    """Months since year 0 of ``date``, where days 1-7 count for the previous month."""
    return (
        date.dt.year().cast(pl.Int64) * 12
        + date.dt.month().cast(pl.Int64)
        - 1
        - (date.dt.day() <= 7).cast(pl.Int64)
    )


def infer_fye(facts: pl.DataFrame) -> pl.DataFrame:
    """Fiscal year end month per CIK: columns ``cik``, ``fye_month`` (1-12), ``fye_source``."""
    days = (pl.col("end") - pl.col("start")).dt.total_days() + 1
    annual_form = pl.col("form").is_null() | pl.col("form").str.contains(ANNUAL_FORMS)
    annual = (
        facts.filter(pl.col("start").is_not_null() & days.is_between(*ANNUAL_DAYS) & annual_form)
        .select("cik", "end", (_adj_month(pl.col("end")) % 12 + 1).alias("m"))
        .group_by(["cik", "m"])
        .agg(pl.len().alias("n"), pl.col("end").max().alias("last"))
        .sort(["cik", "n", "last"], descending=[False, True, True])
        .group_by("cik", maintain_order=True)
        .first()
        .select(
            "cik", pl.col("m").cast(pl.Int32).alias("fye_month"), pl.lit("annual_facts").alias("fye_source")
        )
    )
    hint_day = pl.col("fye_hint").str.slice(2, 2).cast(pl.Int32, strict=False)
    hint_month = pl.col("fye_hint").str.slice(0, 2).cast(pl.Int32, strict=False)
    hints = (
        facts.filter(pl.col("fye_hint").str.contains(r"^\d{4}$"))
        .select(
            "cik",
            pl.when(hint_day <= 7).then((hint_month + 10) % 12 + 1).otherwise(hint_month).alias("fye_month"),
        )
        .filter(pl.col("fye_month").is_between(1, 12))
        .group_by("cik")
        .agg(pl.col("fye_month").mode().first())
        .select("cik", pl.col("fye_month").cast(pl.Int32), pl.lit("filing_hint").alias("fye_source"))
    )
    everyone = facts.select("cik").unique()
    out = everyone.join(annual, on="cik", how="left", nulls_equal=True)
    out = out.join(
        hints.rename({"fye_month": "h", "fye_source": "hs"}), on="cik", how="left", nulls_equal=True
    )
    return out.select(
        "cik",
        pl.coalesce("fye_month", "h", pl.lit(12, dtype=pl.Int32)).alias("fye_month"),
        pl.coalesce("fye_source", "hs", pl.lit("assumed_december")).alias("fye_source"),
    )


def fiscal_columns(date: str = "end") -> list[pl.Expr]:
    """``fiscal_year``, ``_qpos`` (1-4 at a quarter end, else null) for ``date`` given ``fye_month``."""
    am = _adj_month(pl.col(date))
    fye0 = pl.col("fye_month").cast(pl.Int64) - 1
    fiscal_year = (am // 12 + (am % 12 > fye0).cast(pl.Int64)).cast(pl.Int32)
    mpos = (am % 12 - fye0) % 12
    day = pl.col(date).dt.day()
    near_end = (day >= 21) | (day <= 7)
    qpos = (
        pl.when(near_end & (mpos % 3 == 0))
        .then(pl.when(mpos == 0).then(4).otherwise(mpos // 3))
        .otherwise(None)
        .cast(pl.Int32)
    )
    return [fiscal_year.alias("fiscal_year"), qpos.alias("_qpos")]


def fiscal_period_expr() -> pl.Expr:
    """The fiscal period label from ``duration_days`` and ``_qpos`` (see the module docstring)."""
    days = pl.col("duration_days")
    q = (days.cast(pl.Float64) / QUARTER_DAYS).round(0).cast(pl.Int32)
    whole = (q >= 1) & ((days.cast(pl.Float64) - q.cast(pl.Float64) * QUARTER_DAYS).abs() <= QUARTER_SLACK)
    k = pl.col("_qpos")
    instant = pl.when(k == 4).then(pl.lit("FY")).otherwise(pl.format("Q{}", k))
    duration = (
        pl.when(~whole)
        .then(None)
        .when((q == 4) & (k == 4))
        .then(pl.lit("FY"))
        .when(q == 1)
        .then(pl.format("Q{}", k))
        .when((q == 2) & (k == 2))
        .then(pl.lit("H1"))
        .when((q == 3) & (k == 3))
        .then(pl.lit("9M"))
        .when((q == 2) & (k == 4))
        .then(pl.lit("H2"))
        .when(q == 4)
        .then(pl.lit("TTM"))
        .otherwise(pl.format("{}Q", q))
    )
    return (
        pl.when(k.is_null())
        .then(None)
        .when(pl.col("start").is_null())
        .then(instant)
        .otherwise(duration)
        .alias("fiscal_period")
    )


def add_fiscal(facts: pl.DataFrame, fye: pl.DataFrame) -> pl.DataFrame:
    """``facts`` with period_type, duration_days, fye_month, fiscal_year, fiscal_period."""
    out = facts.drop([c for c in ("fye_month",) if c in facts.columns]).join(
        fye.select("cik", "fye_month"), on="cik", how="left", nulls_equal=True
    )
    out = out.with_columns(
        pl.when(pl.col("start").is_null())
        .then(pl.lit("instant"))
        .otherwise(pl.lit("duration"))
        .alias("period_type"),
        ((pl.col("end") - pl.col("start")).dt.total_days() + 1).cast(pl.Int32).alias("duration_days"),
        *fiscal_columns("end"),
    )
    return out.with_columns(fiscal_period_expr()).drop("_qpos")


# --------------------------------------------------------------------------- reports of one fact

# the columns of the record another one is resolved against (see resolve_reports)
_REF_COLUMNS = {
    "value": "new_value",
    "value_text": "new_value_text",
    "accession": "new_accession",
    "form": "new_form",
    "filed": "new_filed",
    "source_file": "k_file",
    "source_row": "k_row",
    "source_ref": "k_ref",
}


def resolve_reports(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep one record per fact and resolve every other one against the record that accounts for it.

    Within a filing (same accession; without one, same file) the most precise record speaks for
    the filing. The filings' values in filing order (``filed``, then accession; undated first) form
    runs of equal values; each run starts with the filing that first reported that value. The fact
    keeps the first record of the last run: the latest value, from the first filing that reported
    it. The first record of an earlier run is ``superseded`` by the first record of the next run
    (that filing made the change); a later filing repeating its run's value is a ``duplicate`` of
    the run's first record; a record repeated within one filing is a ``duplicate`` (or, with another
    value, a ``conflict``) of the filing's own record.

    Args:
        raw: raw facts with ``fact_id``.

    Returns:
        ``(kept, rest)``: one row per ``fact_id`` (with ``frame`` taken from any filing of the
        kept value when the kept record has none), and every other record with ``_reason``,
        ``_same`` (resolved within its own filing, so not a restatement), ``changed`` and the
        record it is resolved against as ``new_value``, ``new_value_text``, ``new_accession``,
        ``new_form``, ``new_filed``, ``k_file``, ``k_row``, ``k_ref``.
    """
    precision = (
        pl.when(pl.col("decimals") == "INF")
        .then(1000)
        .otherwise(pl.col("decimals").cast(pl.Int32, strict=False))
        .fill_null(-1000)
    )
    filing = pl.coalesce(pl.col("accession"), pl.lit("\x00file:") + pl.col("source_file").fill_null(""))
    ranked = (
        raw.with_columns(filing.alias("_filing"), precision.alias("_precision"))
        .sort(
            ["fact_id", "_filing", "_precision", "source_file", "source_row"],
            descending=[False, False, True, False, False],
            nulls_last=True,
        )
        .with_columns(pl.int_range(pl.len()).over(["fact_id", "_filing"]).alias("_in_filing"))
    )
    # one record per filing, in filing order; a run starts where the value differs from the
    # previous filing's
    reps = ranked.filter(pl.col("_in_filing") == 0).sort(
        ["fact_id", "filed", "accession", "source_file", "source_row"], nulls_last=False
    )
    previous = pl.col("value").shift(1).over("fact_id")
    reps = reps.with_columns((previous.is_null() | (pl.col("value") != previous)).alias("_head"))
    reps = reps.with_columns(pl.col("_head").cast(pl.Int32).cum_sum().over("fact_id").alias("_run"))
    reps = reps.with_columns((pl.col("_run") == pl.col("_run").max().over("fact_id")).alias("_last"))
    refs = [pl.col(c).alias(a) for c, a in _REF_COLUMNS.items()]
    heads = reps.filter(pl.col("_head")).select("fact_id", "_run", *refs)

    kept = reps.filter(pl.col("_head") & pl.col("_last"))
    # the SEC frames the latest data point of a period, usually a repeat of the kept value
    frames = (
        reps.filter(pl.col("_last") & pl.col("frame").is_not_null())
        .group_by("fact_id")
        .agg(pl.col("frame").last().alias("_run_frame"))
    )
    kept = kept.join(frames, on="fact_id", how="left").with_columns(
        pl.coalesce("frame", "_run_frame").alias("frame")
    )
    superseded = (
        reps.filter(pl.col("_head") & ~pl.col("_last"))
        .join(heads.with_columns(pl.col("_run") - 1), on=["fact_id", "_run"], how="left")
        .with_columns(pl.lit(False).alias("_same"), pl.lit("superseded").alias("_reason"))
    )
    repeats = (
        reps.filter(~pl.col("_head"))
        .join(heads, on=["fact_id", "_run"], how="left")
        .with_columns(pl.lit(False).alias("_same"), pl.lit("duplicate").alias("_reason"))
    )
    echoes = ranked.filter(pl.col("_in_filing") > 0).join(
        reps.select("fact_id", "_filing", *refs), on=["fact_id", "_filing"], how="left"
    )
    rounded_equal = pl.struct("value", "decimals", "new_value").map_elements(
        lambda r: _rounds_to(r["new_value"], r["decimals"], r["value"]), return_dtype=pl.Boolean
    )
    differs = pl.col("value") != pl.col("new_value")
    echoes = echoes.with_columns(
        pl.lit(True).alias("_same"),
        pl.when(differs).then(rounded_equal).otherwise(False).alias("_coarse"),
    ).with_columns(
        pl.when(differs & ~pl.col("_coarse"))
        .then(pl.lit("conflict"))
        .otherwise(pl.lit("duplicate"))
        .alias("_reason")
    )
    columns = [*raw.columns, "_same", "_reason", "_coarse", *_REF_COLUMNS.values()]
    rest = pl.concat(
        [
            frame.with_columns(pl.lit(False).alias("_coarse")) if "_coarse" not in frame.columns else frame
            for frame in (superseded, repeats, echoes)
        ],
        how="diagonal_relaxed",
    ).select(columns)
    rest = rest.with_columns((pl.col("value") != pl.col("new_value")).alias("changed"))
    return kept.select(raw.columns), rest.sort(["source_file", "source_row"], nulls_last=True)


def _filing_text(form: str, accession: str, filed: str) -> pl.Expr:
    """``10-K/A 0000999001-23-000020 filed 2023-06-15`` from the named columns (missing parts left
    out; ``a filing without accession or date`` when all are missing)."""
    text = pl.concat_str(
        [pl.col(form), pl.col(accession), pl.lit("filed ") + pl.col(filed).cast(pl.Utf8)],
        separator=" ",
        ignore_nulls=True,
    )
    return pl.when(text == "").then(pl.lit("a filing without accession or date")).otherwise(text)


def _drop_detail() -> pl.Expr:
    """The ``detail`` of a record :func:`resolve_reports` did not keep, naming the record and filing
    it is resolved against."""
    old = _filing_text("form", "accession", "filed")
    new = _filing_text("new_form", "new_accession", "new_filed")
    value = pl.col("value_text").fill_null("")
    new_value = pl.col("new_value_text").fill_null("")
    ref = pl.col("k_ref").fill_null("")
    return (
        pl.when(pl.col("_reason") == "superseded")
        .then(
            pl.format(
                "value {} ({}) restated as {} by {} ({}); fact {}",
                value,
                old,
                new_value,
                new,
                ref,
                pl.col("fact_id"),
            )
        )
        .when(~pl.col("_same"))
        .then(
            pl.format(
                "value {} ({}) repeats the value first reported by {} ({}); fact {}",
                value,
                old,
                new,
                ref,
                pl.col("fact_id"),
            )
        )
        .when(pl.col("_reason") == "conflict")
        .then(pl.format("value {} differs from {} ({}) in the same filing ({})", value, new_value, ref, old))
        .when(pl.col("_coarse"))
        .then(
            pl.format(
                "value {} (decimals {}) is {} ({}) rounded: a less precise duplicate in the same filing",
                value,
                pl.col("decimals").fill_null(""),
                new_value,
                ref,
            )
        )
        .otherwise(
            pl.format("same value as {} in the same filing ({}); fact {}", ref, old, pl.col("fact_id"))
        )
    )


# --------------------------------------------------------------------------- pipeline


def normalize_facts(
    extract: Extract,
    *,
    dimensions: Literal["keep", "drop"] = "keep",
    derive_q4: bool = True,
    checks: bool = True,
    concepts: str | Path | None = None,
    identity_tolerance: float | None = None,
    eps_tolerance: float | None = None,
) -> Extract:
    """De-duplicate, label and check the raw facts of a finance reader.

    Args:
        extract: what :func:`read_companyfacts`, :func:`read_fsds` or :func:`read_xbrl` returned
            (table ``raw_fact``; several merged extracts are fine).
        dimensions: ``keep`` dimensional facts (``dimensions`` in the key) or ``drop`` them
            (reason ``dimensional``).
        derive_q4: add ``Q4 = FY - 9M`` rows where Q4 is missing.
        checks: run :func:`dataforge.records.finance.checks.run_checks` (table ``check``).
        concepts: a synonyms CSV replacing ``data/concepts.csv``.
        identity_tolerance: relative tolerance of the balance-sheet checks (default in checks.py).
        eps_tolerance: tolerance of the EPS check (default in checks.py).

    Returns:
        A new Extract (same source, rows_in, inputs, rejects; drops extended) with tables ``fact``,
        ``restatement`` and ``check``.
    """
    from dataforge.records.finance import checks as checks_mod

    if dimensions not in ("keep", "drop"):
        msg = f"dimensions must be 'keep' or 'drop', not {dimensions!r}"
        raise ConfigError(msg)
    out = Extract.empty(extract.source)
    out.rows_in = extract.rows_in
    out.inputs = list(extract.inputs)
    out.counters.update(extract.counters)
    out.reject_frame(extract.rejects)
    out.drop_frame(extract.dropped)

    raw = extract.tables.get("raw_fact")
    raw = fit_raw(raw) if raw is not None else fit_raw(pl.DataFrame(schema=RAW_SCHEMA))
    if dimensions == "drop":
        dim = raw.filter(pl.col("dimensions").is_not_null())
        out.drop_frame(
            dim.select(
                "source_file",
                "source_row",
                "source_ref",
                pl.lit("fact").alias("table"),
                pl.lit("dimensional").alias("reason"),
                pl.format("dimensions {}", pl.col("dimensions")).alias("detail"),
            )
        )
        raw = raw.filter(pl.col("dimensions").is_null())

    raw = raw.with_columns(fact_ids(raw))
    fye = infer_fye(raw)
    for source, n in fye.group_by("fye_source").len().iter_rows():
        out.counters[f"fye:{source}"] += n
    raw = add_fiscal(raw, fye)

    kept, rest = resolve_reports(raw)
    out.drop_frame(
        rest.select(
            "source_file",
            "source_row",
            "source_ref",
            pl.lit("fact").alias("table"),
            pl.col("_reason").alias("reason"),
            _drop_detail().alias("detail"),
        )
    )
    for reason, n in rest.group_by("_reason").len().iter_rows():
        out.counters[f"dedup:{reason}"] += n

    restatement = rest.filter(~pl.col("_same")).select(
        "fact_id",
        "cik",
        "entity",
        "taxonomy",
        "concept",
        "unit",
        "period_type",
        "start",
        "end",
        "dimensions",
        "fiscal_year",
        "fiscal_period",
        pl.col("value").alias("old_value"),
        pl.col("value_text").alias("old_value_text"),
        "new_value",
        "new_value_text",
        "changed",
        (pl.col("new_value") - pl.col("value")).alias("difference"),
        pl.col("accession").alias("old_accession"),
        pl.col("form").alias("old_form"),
        pl.col("filed").alias("old_filed"),
        "new_accession",
        "new_form",
        "new_filed",
        pl.col("source_file").alias("old_source_file"),
        pl.col("source_row").alias("old_source_row"),
        pl.col("source_ref").alias("old_source_ref"),
        pl.col("k_file").alias("source_file"),
        pl.col("k_row").alias("source_row"),
        pl.col("k_ref").alias("source_ref"),
    )
    restated_ids = restatement.filter(pl.col("changed")).select("fact_id").unique()
    stats = raw.group_by("fact_id").agg(pl.col("accession").n_unique().cast(pl.Int32).alias("n_reports"))
    stats = stats.with_columns(pl.col("fact_id").is_in(restated_ids["fact_id"].implode()).alias("restated"))
    fact = kept.join(stats, on="fact_id", how="left").with_columns(
        pl.lit(False).alias("derived"), pl.lit(None, dtype=pl.List(pl.Utf8)).alias("derived_from")
    )
    if derive_q4:
        q4 = derive_q4_facts(fact)
        out.counters["q4_derived"] += q4.height
        fact = pl.concat([fact, q4.select(fact.columns)], how="vertical_relaxed")
    fact = add_canonical(fact, load_concepts(str(concepts) if concepts else None))
    fact = fact.select(
        [
            pl.col(c).cast(t) if c in fact.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in FACT_COLUMNS.items()
        ]
    )
    fact = fact.sort(["cik", "taxonomy", "concept", "unit", "dimensions", "end", "start"], nulls_last=False)
    out.tables["fact"] = fact
    out.tables["restatement"] = restatement.select(
        [pl.col(c).cast(t) for c, t in RESTATEMENT_COLUMNS.items()]
    ).sort(["fact_id", "old_filed", "old_accession", "old_source_row"], nulls_last=True)
    if checks:
        kwargs = {}
        if identity_tolerance is not None:
            kwargs["identity_tolerance"] = identity_tolerance
        if eps_tolerance is not None:
            kwargs["eps_tolerance"] = eps_tolerance
        out.tables["check"] = checks_mod.run_checks(fact, **kwargs)
    else:
        out.tables["check"] = checks_mod.empty_checks()
    log.info(
        "%s: %d records -> %d facts (%d restatement rows, %d Q4 derived)",
        extract.source,
        out.rows_in,
        fact.height,
        restatement.height,
        out.counters["q4_derived"],
    )
    return out


def derive_q4_facts(fact: pl.DataFrame) -> pl.DataFrame:
    """Q4 = FY - 9M rows for currency duration facts without a reported Q4 (same columns as ``fact``)."""
    group = ["cik", "taxonomy", "concept", "unit", "dimensions", "start"]
    money = pl.col("unit").str.contains(r"^[A-Z]{3}$")
    fy = fact.filter((pl.col("fiscal_period") == "FY") & (pl.col("period_type") == "duration") & money)
    nine = fact.filter((pl.col("fiscal_period") == "9M") & money).select(
        *group,
        pl.col("end").alias("nm_end"),
        pl.col("value").alias("nm_value"),
        pl.col("fact_id").alias("nm_id"),
        pl.col("fiscal_year").alias("nm_fy"),
    )
    pairs = fy.join(nine, on=group, how="inner", nulls_equal=True).filter(
        (pl.col("nm_end") < pl.col("end")) & (pl.col("nm_fy") == pl.col("fiscal_year"))
    )
    reported = (
        fact.filter(pl.col("fiscal_period") == "Q4")
        .select("cik", "taxonomy", "concept", "unit", "dimensions", "end")
        .unique()
    )
    pairs = pairs.join(
        reported, on=["cik", "taxonomy", "concept", "unit", "dimensions", "end"], how="anti", nulls_equal=True
    )
    if pairs.height == 0:
        return fact.clear()
    q4 = pairs.with_columns(
        (pl.col("value") - pl.col("nm_value")).cast(DECIMAL).alias("value"),
        (pl.col("nm_end") + pl.duration(days=1)).alias("start"),
        pl.concat_list(pl.col("fact_id"), pl.col("nm_id")).alias("derived_from"),
        pl.format("derived:Q4=FY({})-9M({})", pl.col("fact_id"), pl.col("nm_id")).alias("source_ref"),
    ).with_columns(
        ((pl.col("end") - pl.col("start")).dt.total_days() + 1).cast(pl.Int32).alias("duration_days"),
        pl.lit("Q4").alias("fiscal_period"),
        pl.lit(True).alias("derived"),
        pl.lit(None, dtype=pl.Utf8).alias("value_text"),
        pl.lit(None, dtype=pl.Utf8).alias("decimals"),
        pl.lit(None, dtype=pl.Utf8).alias("frame"),
        pl.lit(None, dtype=pl.Utf8).alias("source_file"),
        pl.lit(None, dtype=pl.Int64).alias("source_row"),
        pl.lit(1, dtype=pl.Int32).alias("n_reports"),
        pl.lit(False).alias("restated"),
    )
    q4 = q4.with_columns(
        fact_ids(q4),
        pl.col("value").map_elements(plain, return_dtype=pl.Utf8).alias("value_text"),
    )
    return q4.select(fact.columns)


def add_canonical(fact: pl.DataFrame, concepts: pl.DataFrame) -> pl.DataFrame:
    """Join canonical names and mark the primary synonym per (cik, canonical, unit, period, dims)."""
    fact = fact.drop([c for c in ("canonical", "canonical_primary", "_prio") if c in fact.columns])
    syn = concepts.select("taxonomy", "concept", "canonical", pl.col("priority").alias("_prio"))
    fact = fact.join(syn, on=["taxonomy", "concept"], how="left")
    group = ["cik", "canonical", "unit", "start", "end", "dimensions"]
    best = pl.col("_prio").min().over(group, mapping_strategy="group_to_rows")
    return fact.with_columns(
        pl.when(pl.col("canonical").is_null())
        .then(None)
        .otherwise(pl.col("_prio") == best)
        .alias("canonical_primary")
    ).drop("_prio")
