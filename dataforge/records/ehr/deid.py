"""De-identification of canonical EHR tables: HIPAA Safe Harbor, or a per-patient date shift.

Modes (``--deid``):

``safe-harbor`` (default)
    45 CFR 164.514(b)(2). Names, street addresses, cities, counties, phone numbers, e-mail
    addresses, SSNs, MRNs, licence and passport numbers and geolocations are never written (the
    canonical schemas have no column for them). Every date element except the year is removed:
    ``*_time`` and ``*_date`` columns are null, ``*_year`` columns stay. Patients aged 90 or more get
    ``age_90_plus = true`` and no age, birth year or death year. ZIP codes keep their first three
    digits, or ``000`` for the 3-digit areas with 20,000 people or fewer (``data/zip3_restricted.csv``).
    Identifiers become salted pseudonyms; file names (Synthea names files after the patient) and
    source record keys are pseudonymized too. Free text (clinical notes) has the patient's own names,
    address, city, identifiers and relatives' names replaced, plus e-mail addresses, phone numbers,
    SSNs, IP addresses and card numbers found by :class:`dataforge.text.pii.PiiRedact`, and every
    date reduced to its year.
``date-shift``
    Everything above, except that dates are kept but moved by a per-patient offset of 1 to 365 days
    into the past (derived from the salt and the patient, so every table of one patient moves
    together and intervals are preserved). This is *not* Safe Harbor (it keeps day-level intervals):
    it is the usual limited-data-set / expert-determination technique, and the manifest says so.
``off``
    No de-identification, for data that is already de-identified upstream (MIMIC): identifiers and
    dates are written as given; the full ZIP is kept. Names and other direct identifiers are still
    not part of the canonical schemas.

Pseudonyms are keyed BLAKE2b (a MAC) of ``<kind>:<source id>`` under the salt, 20 hex characters:
stable across runs and tables for one salt, and not reversible without it. The salt comes from an
environment variable (``--salt-env``, default ``DATAFORGE_DEID_SALT``) and is never written anywhere.

Example:
    >>> cfg = DeidConfig(mode="safe-harbor", salt=b"k")
    >>> pseudonym(cfg, "patient", "b37f7960") == pseudonym(cfg, "patient", "b37f7960")
    True
"""

from __future__ import annotations

import csv
import functools
import hashlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Any

import polars as pl

from dataforge.errors import ConfigError, choices
from dataforge.records.ehr.columns import PHI_COLUMNS

log = logging.getLogger(__name__)

DEID_MODES = ("safe-harbor", "date-shift", "off")
DEFAULT_SALT_ENV = "DATAFORGE_DEID_SALT"
MAX_SHIFT_DAYS = 365
TABLE_TIMES = {
    "patient": ("birth_date", "death_date"),
    "encounter": ("start_time", "end_time"),
    "condition": ("start_time", "end_time"),
    "measurement": ("time",),
    "medication": ("start_time", "end_time"),
    "procedure": ("start_time", "end_time"),
    "note": ("time",),
}
_YEAR_OF = {
    "start_time": "start_year",
    "end_time": "end_year",
    "time": "year",
    "birth_date": "birth_year",
    "death_date": "death_year",
}


@dataclass(frozen=True, kw_only=True)
class DeidConfig:
    """How to de-identify: ``mode`` (one of :data:`DEID_MODES`) and the secret ``salt``."""

    mode: str = "safe-harbor"
    salt: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in DEID_MODES:
            msg = f"unknown de-identification mode {self.mode!r}; valid: {choices(DEID_MODES)}"
            raise ConfigError(msg)
        if self.mode != "off" and not self.salt:
            msg = f"de-identification mode {self.mode!r} needs a salt"
            raise ConfigError(msg)

    @classmethod
    def from_env(cls, mode: str, *, salt_env: str | None = None) -> DeidConfig:
        """Read the salt from environment variable ``salt_env`` (default ``DATAFORGE_DEID_SALT``)."""
        if mode not in DEID_MODES:
            msg = f"unknown de-identification mode {mode!r}; valid: {choices(DEID_MODES)}"
            raise ConfigError(msg)
        if mode == "off":
            return cls(mode=mode)
        var = salt_env or DEFAULT_SALT_ENV
        value = os.environ.get(var, "")
        if len(value) < 8:
            state = "is not set" if not value else "is shorter than 8 characters"
            msg = (
                f"--deid {mode} needs a secret salt: environment variable {var} {state}. "
                f"Set it (e.g. `export {var}=$(openssl rand -hex 32)`) and keep it: the same salt "
                f"gives the same pseudonyms in every run. Or pass --deid off for data that is "
                f"already de-identified."
            )
            raise ConfigError(msg)
        return cls(mode=mode, salt=value.encode())


def pseudonym(cfg: DeidConfig, kind: str, value: str) -> str:
    """The salted pseudonym of ``value`` (an identifier of ``kind``)."""
    assert cfg.salt is not None
    return hashlib.blake2b(f"{kind}:{value}".encode(), key=cfg.salt[:64], digest_size=10).hexdigest()


def _pseudo_col(cfg: DeidConfig, frame: pl.DataFrame, col: str, kind: str) -> pl.Series:
    s = frame[col]
    if cfg.mode == "off":
        return s
    uniq = s.drop_nulls().unique().to_list()
    mapping = {v: pseudonym(cfg, kind, v) for v in uniq}
    return s.replace_strict(mapping, default=None, return_dtype=pl.Utf8).alias(col)


def shift_days(cfg: DeidConfig, patient_id: str) -> int:
    """Days (1..365) a patient's dates move back under ``date-shift``."""
    assert cfg.salt is not None
    h = hashlib.blake2b(f"shift:{patient_id}".encode(), key=cfg.salt[:64], digest_size=8).digest()
    return 1 + int.from_bytes(h, "big") % MAX_SHIFT_DAYS


@functools.cache
def restricted_zip3() -> frozenset[str]:
    """3-digit ZIP areas with 20,000 people or fewer (HHS Safe Harbor guidance, 2000 Census)."""
    text = (resources.files("dataforge.records.ehr") / "data" / "zip3_restricted.csv").read_text("utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return frozenset(r["zip3"] for r in rows)


# --------------------------------------------------------------------------- ages


def patient_ages(raw: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Age in whole years at each patient's last record (or death): ``patient_id, ref_time, age``.

    From the birth date when known; otherwise from a source-given age at a given year (MIMIC
    ``anchor_age`` at ``anchor_year``) moved to the year of the last record.
    """
    times = []
    for table, cols in TABLE_TIMES.items():
        if table == "patient" or table not in raw or not raw[table].height:
            continue
        f = raw[table]
        for c in cols:
            times.append(f.select("patient_id", pl.col(c).alias("t")))
    patients = raw.get("patient")
    if patients is None or not patients.height:
        return pl.DataFrame(
            schema={"patient_id": pl.Utf8, "ref_time": pl.Datetime("us", "UTC"), "age": pl.Int32}
        )
    last = (
        pl.concat(times).group_by("patient_id").agg(pl.col("t").max().alias("last"))
        if times
        else pl.DataFrame(schema={"patient_id": pl.Utf8, "last": pl.Datetime("us", "UTC")})
    )
    p = patients.join(last, on="patient_id", how="left")
    ref = pl.coalesce(pl.col("death_date"), pl.col("last"))
    by_birth = (
        ref.dt.year()
        - pl.col("birth_date").dt.year()
        - (
            (ref.dt.month() < pl.col("birth_date").dt.month())
            | (
                (ref.dt.month() == pl.col("birth_date").dt.month())
                & (ref.dt.day() < pl.col("birth_date").dt.day())
            )
        ).cast(pl.Int32)
    )
    by_anchor = pl.col("age") + pl.when(ref.is_not_null() & pl.col("age_year").is_not_null()).then(
        ref.dt.year() - pl.col("age_year")
    ).otherwise(0)
    return p.select(
        "patient_id",
        ref.alias("ref_time"),
        pl.when(pl.col("birth_date").is_not_null())
        .then(by_birth)
        .otherwise(by_anchor)
        .cast(pl.Int32)
        .alias("age"),
    )


# --------------------------------------------------------------------------- free text

_DATE_PATTERNS = [
    # ISO date with optional time: 2014-05-06, 2014-05-06T18:34:30Z
    re.compile(
        r"\b(?P<y>(?:19|20|21)\d\d)-(?P<m>[01]\d)-(?P<d>[0-3]\d)(?:[T ][0-2]\d:[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?\b"
    ),
    # US style 05/06/2014, 5/6/2014
    re.compile(r"\b(?P<m>[01]?\d)/(?P<d>[0-3]?\d)/(?P<y>(?:19|20|21)\d\d)\b"),
    # 6 May 2014, May 6, 2014, May 6th 2014
    re.compile(
        r"\b(?:(?P<d1>[0-3]?\d)(?:st|nd|rd|th)?\s+)?(?P<mon>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?(?:\s+(?P<d2>[0-3]?\d)(?:st|nd|rd|th)?)?,?\s+(?P<y>(?:19|20|21)\d\d)\b",
        re.IGNORECASE,
    ),
]
_AGE_90 = re.compile(
    r"\b(?P<age>9\d|1[0-4]\d)(?P<rest>[- ](?:year|yr)s?[- ]old|\s*(?:years?|yrs?|y/o|yo)\b)", re.IGNORECASE
)
_TOKEN = re.compile(r"[^\W\d_]{3,}|\d[\d-]{3,}\d", re.UNICODE)


def known_phi(patients: pl.DataFrame) -> dict[str, list[str]]:
    """Per source patient id, the identifying strings to scrub from that patient's free text:
    every PHI column value, its words, and Synthea-style names without their digit suffix."""
    cols = [c for c in PHI_COLUMNS if c in patients.columns and c not in ("lat", "lon")]
    out: dict[str, list[str]] = {}
    for row in patients.select("patient_id", *cols).iter_rows(named=True):
        items: set[str] = set()
        for c in cols:
            v = row[c]
            if not v:
                continue
            v = str(v).strip()
            if len(v) >= 3:
                items.add(v)
            for tok in _TOKEN.findall(v):
                items.add(tok)
                bare = re.sub(r"\d+$", "", tok)
                if len(bare) >= 3:
                    items.add(bare)
            for word in re.split(r"[\s,]+", v):
                if len(word) >= 3 and not word.isdigit():
                    items.add(word)
                bare = re.sub(r"\d+$", "", word)
                if len(bare) >= 3 and not bare.isdigit():
                    items.add(bare)
        # longest first so "Temika453" is replaced before "Temika"
        out[row["patient_id"]] = sorted(items, key=lambda s: (-len(s), s))
    return out


@dataclass
class TextScrubber:
    """Redacts one patient's known PHI, PII patterns and dates from free text."""

    mode: str
    shift: int = 0

    def scrub(self, text: str, phi: list[str]) -> tuple[str, int]:
        n = 0
        if phi:
            pattern = re.compile(
                r"(?<![\w])(?:" + "|".join(re.escape(p) for p in phi) + r")(?![\w])", re.IGNORECASE
            )
            text, k = pattern.subn("[NAME]", text)
            n += k
        for pat in _DATE_PATTERNS:
            text, k = pat.subn(self._date, text)
            n += k
        text, k = _AGE_90.subn(lambda m: f"90+{m.group('rest')}", text)
        n += k
        return text, n

    def _date(self, m: re.Match[str]) -> str:
        if self.mode == "date-shift":
            import datetime as dt

            try:
                year = int(m.group("y"))
                gd = m.groupdict()
                if gd.get("mon"):
                    month = _MONTHS[gd["mon"][:3].lower()]
                    day = int(gd.get("d1") or gd.get("d2") or 1)
                else:
                    month, day = int(gd["m"]), int(gd["d"])
                return (dt.date(year, month, day) - dt.timedelta(days=self.shift)).isoformat()
            except (ValueError, KeyError):
                return "[DATE]"
        return m.group("y")


_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}


# --------------------------------------------------------------------------- tables


def deidentify(
    raw: dict[str, pl.DataFrame], *, source: str, cfg: DeidConfig
) -> tuple[dict[str, pl.DataFrame], Counter[str]]:
    """Final canonical tables (``ehr.<table>.v1`` columns, not yet cast) from raw reader tables.

    Returns the tables and counters for the report (``phi_removed:<column>``,
    ``note_redactions``, ``patients_90_plus``...).
    """
    counters: Counter[str] = Counter()
    patients = raw.get("patient", pl.DataFrame(schema={"patient_id": pl.Utf8}))
    ages = patient_ages(raw)
    old = set(ages.filter(pl.col("age") >= 90)["patient_id"].to_list())
    counters["patients_90_plus"] = len(old)
    shifts: dict[str, int] = {}
    if cfg.mode == "date-shift":
        ids = set()
        for f in raw.values():
            if "patient_id" in f.columns:
                ids.update(f["patient_id"].drop_nulls().unique().to_list())
        shifts = {p: shift_days(cfg, p) for p in ids}
    phi_by_patient = known_phi(patients) if cfg.mode != "off" and patients.height else {}
    for c in PHI_COLUMNS:
        if c in patients.columns:
            n = patients[c].drop_nulls().len()
            if n:
                counters[f"phi_removed:{c}"] = n
    out: dict[str, pl.DataFrame] = {}
    for table, frame in raw.items():
        f = frame
        times = TABLE_TIMES.get(table, ())
        if cfg.mode == "date-shift" and times:
            delta = pl.duration(
                days=pl.col("patient_id").replace_strict(shifts, default=0, return_dtype=pl.Int64)
            )
            f = f.with_columns([(pl.col(c) - delta).alias(c) for c in times])
        f = f.with_columns([pl.col(c).dt.year().cast(pl.Int32).alias(_YEAR_OF[c]) for c in times])
        if table == "encounter":
            hours = (pl.col("end_time") - pl.col("start_time")).dt.total_seconds() / 3600.0
            f = f.with_columns(hours.alias("duration_hours"))
        if table == "patient":
            f = f.join(ages.select("patient_id", pl.col("age").alias("_age")), on="patient_id", how="left")
            is_old = pl.col("_age").fill_null(0) >= 90
            f = f.with_columns(
                is_old.alias("age_90_plus"),
                pl.when(is_old).then(None).otherwise(pl.col("_age")).cast(pl.Int32).alias("age"),
                pl.when(is_old).then(None).otherwise(pl.col("birth_year")).alias("birth_year"),
                pl.when(is_old).then(None).otherwise(pl.col("death_year")).alias("death_year"),
                pl.when(is_old & pl.lit(cfg.mode != "off"))
                .then(None)
                .otherwise(pl.col("birth_date"))
                .alias("birth_date"),
                pl.when(is_old & pl.lit(cfg.mode != "off"))
                .then(None)
                .otherwise(pl.col("death_date"))
                .alias("death_date"),
                _zip3(cfg).alias("zip3"),
            )
            if cfg.mode == "off":
                # nothing is removed; the age bucket still says who is 90+
                f = f.with_columns(pl.col("_age").alias("age"))
            f = f.with_columns(pl.col("birth_date").dt.date(), pl.col("death_date").dt.date())
            f = f.drop("_age")
        if cfg.mode == "safe-harbor" and times:
            f = f.with_columns([pl.lit(None, dtype=f.schema[c]).alias(c) for c in times])
        if table == "note":
            f, k = _scrub_notes(f, raw, cfg, shifts)
            counters["note_redactions"] += k
        free = [c for c in FREE_TEXT_COLUMNS.get(table, ()) if c in f.columns]
        if free and cfg.mode != "off" and f.height:
            f, k = _scrub_columns(f, free, phi_by_patient, cfg, shifts)
            if k:
                counters[f"free_text_redactions:{table}"] += k
        for col, kind in (("patient_id", "patient"), ("encounter_id", "encounter"), ("record_id", "record")):
            if col in f.columns:
                f = f.with_columns(_pseudo_col(cfg, f, col, kind))
        if cfg.mode != "off":
            f = f.with_columns(
                _pseudo_col(cfg, f, "source_file", "file").map_elements(
                    lambda s: f"file-{s}", return_dtype=pl.Utf8
                ),
                _pseudo_col(cfg, f, "source_ref", "ref"),
            )
        f = f.with_columns(pl.lit(source).alias("source"))
        out[table] = f
    return out, counters


# Structured columns that can hold free text typed by people (a FHIR valueString answering
# "What is your address?", a comment): scrubbed like notes. Code displays are not: they come from
# terminologies.
FREE_TEXT_COLUMNS = {
    "measurement": ("value_text", "source_value"),
    "condition": ("source_value",),
    "procedure": ("source_value",),
    "medication": ("source_value",),
}


def _scrub_columns(
    frame: pl.DataFrame, cols: list[str], phi: dict[str, list[str]], cfg: DeidConfig, shifts: dict[str, int]
) -> tuple[pl.DataFrame, int]:
    total = 0
    pids = frame["patient_id"].to_list()
    for col in cols:
        values = frame[col].to_list()
        changed = False
        for i, v in enumerate(values):
            if not v or (v[0].isdigit() and _PLAIN_NUMBER.match(v)):
                continue
            new, k = TextScrubber(cfg.mode, shifts.get(pids[i], 0)).scrub(v, phi.get(pids[i], []))
            if k:
                values[i] = new
                total += k
                changed = True
        if changed:
            frame = frame.with_columns(pl.Series(col, values, dtype=pl.Utf8))
    return frame, total


_PLAIN_NUMBER = re.compile(r"^[0-9.,<>=+-]+$")


def _zip3(cfg: DeidConfig) -> pl.Expr:
    digits = pl.col("zip").str.replace_all(r"[^0-9]", "")
    if cfg.mode == "off":
        return pl.col("zip")
    z3 = digits.str.slice(0, 3)
    restricted = list(restricted_zip3())
    return (
        pl.when(digits.str.len_chars() < 3)
        .then(None)
        .when(z3.is_in(restricted))
        .then(pl.lit("000"))
        .otherwise(z3)
    )


def _scrub_notes(
    notes: pl.DataFrame, raw: dict[str, pl.DataFrame], cfg: DeidConfig, shifts: dict[str, int]
) -> tuple[pl.DataFrame, int]:
    if cfg.mode == "off" or not notes.height:
        return notes.with_columns(pl.lit(0, dtype=pl.Int32).alias("redactions")), 0
    from dataforge.text.pii import PiiRedact

    phi = known_phi(raw.get("patient", pl.DataFrame(schema={"patient_id": pl.Utf8})))
    redacted = PiiRedact().apply(notes.select(pl.col("text").fill_null(""))).frame
    texts, counts = [], []
    for pid, text, k0 in zip(
        notes["patient_id"].to_list(),
        redacted["text"].to_list(),
        redacted["pii_count"].to_list(),
        strict=True,
    ):
        t, k = TextScrubber(cfg.mode, shifts.get(pid, 0)).scrub(text, phi.get(pid, []))
        texts.append(t)
        counts.append(k + k0)
    f = notes.with_columns(
        pl.Series("text", texts, dtype=pl.Utf8), pl.Series("redactions", counts, dtype=pl.Int32)
    )
    return f, sum(counts)


def scrub_text(text: str, *, phi: list[str], mode: str) -> str:
    """Scrub a free-text string (e.g. a reject's error message) of known PHI and dates."""
    if mode == "off":
        return text
    return TextScrubber(mode).scrub(text, phi)[0]


def all_phi(patients: pl.DataFrame) -> list[str]:
    """Every known PHI string of every patient (longest first)."""
    items: set[str] = set()
    for v in known_phi(patients).values():
        items.update(v)
    return sorted(items, key=lambda s: (-len(s), s))


def describe(cfg: DeidConfig) -> dict[str, Any]:
    """What the manifest says about de-identification (never the salt)."""
    return {
        "mode": cfg.mode,
        "method": {
            "safe-harbor": "HIPAA Safe Harbor, 45 CFR 164.514(b)(2)",
            "date-shift": "per-patient date shift (1-365 days back) with Safe Harbor identifiers removed; "
            "not Safe Harbor: intervals between dates are kept (expert determination / limited data set)",
            "off": "none: identifiers and dates written as given",
        }[cfg.mode],
        "pseudonyms": "keyed BLAKE2b-80 of the source id under a secret salt"
        if cfg.mode != "off"
        else "source ids",
    }
