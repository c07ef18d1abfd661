"""De-identification of canonical EHR tables: HIPAA Safe Harbor, or a per-patient date shift.

Modes (``--deid``):

``safe-harbor`` (default)
    45 CFR 164.514(b)(2). Names, street addresses, cities, counties, phone numbers, e-mail
    addresses, SSNs, MRNs, licence and passport numbers and geolocations are never written (the
    canonical schemas have no column for them). Every date element except the year is removed:
    ``*_time`` and ``*_date`` columns are null, ``*_year`` columns stay. A year (and a date) is the
    one the record writes, before conversion to UTC (``2015-12-31T23:30:00-05:00`` is in 2015; the
    ``*_time`` columns hold UTC instants), and ``*_precision`` says whether the source gave a year,
    a month, a day or a time (a FHIR ``2015`` is year-level, never a day). Patients aged 90 or more get
    ``age_90_plus = true`` and no age, birth year or death year. ZIP codes keep their first three
    digits, or ``000`` for the 3-digit areas with 20,000 people or fewer (``data/zip3_restricted.csv``).
    Identifiers become salted pseudonyms; file names (Synthea names files after the patient) and
    source record keys are pseudonymized too. Free text (clinical notes, free-text columns) has the
    patient's own names, address, city, ZIP and identifiers and their relatives' and contacts' names
    replaced by typed placeholders (``[NAME]``, ``[ADDRESS]``, ``[LOCATION]``, ``[ZIP]``, ``[ID]``),
    plus e-mail addresses, phone numbers, SSNs, IP addresses and card numbers found by
    :class:`dataforge.text.pii.PiiRedact`; URLs; numbers a keyword names as identifiers (account,
    health plan / Medicare, licence, device serial, record numbers: ``Account # [ID]``); a ZIP after
    a state code; a capitalized name after a word for a relative (``daughter [NAME]``); ages of 90
    or more (``90+``); every date reduced to its year (a date with a two-digit year becomes
    ``[DATE]``), and for a patient aged 90 or more the birth year too (``[YEAR]``). Error messages
    of rejected records get the same, and lose record ids (UUIDs, ``Condition/<id>``).
``date-shift``
    Everything above, except that dates are kept but moved by a per-patient offset of 1 to 365 days
    into the past (derived from the salt and the patient, so every table of one patient moves
    together and intervals are preserved). A date known only to the month or the year keeps that
    precision: a month-level date moves its first day and is truncated to that month again; a
    year-level date keeps its year (no day is invented for it, and a shift of at most a year cannot be
    expressed in years). This is *not* Safe Harbor (it keeps day-level intervals):
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
from dataforge.records.ehr.columns import PHI_COLUMNS, TIME_COLUMNS

log = logging.getLogger(__name__)

DEID_MODES = ("safe-harbor", "date-shift", "off")
DEFAULT_SALT_ENV = "DATAFORGE_DEID_SALT"
MAX_SHIFT_DAYS = 365
TABLE_TIMES = TIME_COLUMNS
_YEAR_OF = {
    "start_time": "start_year",
    "end_time": "end_year",
    "time": "year",
    "birth_date": "birth_year",
    "death_date": "death_year",
}


def local_date(frame: pl.DataFrame, col: str) -> pl.Expr:
    """The calendar date of time column ``col`` as the record writes it (``<col>_local``; else the
    UTC date, which is the same for a source without UTC offsets)."""
    utc = pl.col(col).dt.date()
    return pl.coalesce(pl.col(f"{col}_local"), utc) if f"{col}_local" in frame.columns else utc


def _precision(frame: pl.DataFrame, col: str) -> pl.Expr:
    name = f"{col}_precision"
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=pl.Utf8)


def _shift_times(frame: pl.DataFrame, times: tuple[str, ...], days: pl.Expr) -> pl.DataFrame:
    """Move each time column ``days`` back, keeping its precision: a day or a time moves by the
    offset; a month-level date moves its first day and is truncated to the month again; a
    year-level date is not moved (a shift of at most a year cannot be expressed in years, and the
    year alone is not identifying). ``<col>_local`` moves with ``<col>``."""
    delta = pl.duration(days=days)
    out = []
    for c in times:
        local, precision = pl.col(f"{c}_local"), _precision(frame, c)
        moved = local - delta
        new_local = (
            pl.when(precision == "year")
            .then(local)
            .when(precision == "month")
            .then(moved.dt.truncate("1mo"))
            .otherwise(moved)
        )
        new_utc = (
            pl.when(precision == "year")
            .then(pl.col(c))
            .when(precision == "month")
            .then(new_local.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
            .otherwise(pl.col(c) - delta)
        )
        out += [new_local.alias(f"{c}_local"), new_utc.alias(c)]
    return frame.with_columns(out)


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
    """Age in whole years at each patient's last record (or death): ``patient_id, ref_date, age``.

    From the birth date when known (dates as the records write them; a birth date known only to
    the year or month counts from its first day, which gives the highest age it allows);
    otherwise from a source-given age at a given year (MIMIC ``anchor_age`` at ``anchor_year``)
    moved to the year of the last record.
    """
    times = []
    for table, cols in TABLE_TIMES.items():
        if table == "patient" or table not in raw or not raw[table].height:
            continue
        f = raw[table]
        for c in cols:
            times.append(f.select("patient_id", local_date(f, c).alias("t")))
    patients = raw.get("patient")
    if patients is None or not patients.height:
        return pl.DataFrame(schema={"patient_id": pl.Utf8, "ref_date": pl.Date, "age": pl.Int32})
    last = (
        pl.concat(times).group_by("patient_id").agg(pl.col("t").max().alias("last"))
        if times
        else pl.DataFrame(schema={"patient_id": pl.Utf8, "last": pl.Date})
    )
    p = patients.join(last, on="patient_id", how="left").with_columns(
        local_date(patients, "birth_date").alias("_born"), local_date(patients, "death_date").alias("_died")
    )
    ref = pl.coalesce(pl.col("_died"), pl.col("last"))
    born = pl.col("_born")
    by_birth = (
        ref.dt.year()
        - born.dt.year()
        - (
            (ref.dt.month() < born.dt.month())
            | ((ref.dt.month() == born.dt.month()) & (ref.dt.day() < born.dt.day()))
        ).cast(pl.Int32)
    )
    by_anchor = pl.col("age") + pl.when(ref.is_not_null() & pl.col("age_year").is_not_null()).then(
        ref.dt.year() - pl.col("age_year")
    ).otherwise(0)
    return p.select(
        "patient_id",
        ref.alias("ref_date"),
        pl.when(pl.col("birth_date").is_not_null())
        .then(by_birth)
        .otherwise(by_anchor)
        .cast(pl.Int32)
        .alias("age"),
    )


# --------------------------------------------------------------------------- free text

_MONTH_NAME = (
    r"(?P<mon>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_YEAR = r"(?P<y>(?:19|20|21)\d\d)"
#: dates in free text, each with how its parts are read: ``ymd`` / ``mdy`` / ``month`` (a month
#: name) give a date (shifted in ``date-shift``); ``year`` is a date whose day and month order is
#: not known (reduced to its year; ``[DATE]`` in ``date-shift``); ``none`` has no usable year
#: (``[DATE]`` in both modes)
_DATE_PATTERNS = [
    # ISO date with optional time: 2014-05-06, 2014-05-06T18:34:30Z; 2014/05/06
    (
        re.compile(
            rf"\b{_YEAR}(?P<s>[-/])(?P<m>[01]?\d)(?P=s)(?P<d>[0-3]?\d)"
            r"(?:[T ][0-2]\d:[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?\b"
        ),
        "ymd",
    ),
    # US style 05/06/2014, 5/6/2014
    (re.compile(rf"\b(?P<m>[01]?\d)/(?P<d>[0-3]?\d)/{_YEAR}\b"), "mdy"),
    # 06.05.2014, 6-5-2014: day or month first
    (re.compile(rf"\b[0-3]?\d(?P<s>[.-])[0-3]?\d(?P=s){_YEAR}\b"), "year"),
    # 6 May 2014, May 6, 2014, May 6th 2014, 06-May-2014, May-06-2014, March 2014
    (
        re.compile(
            rf"\b(?:(?P<d1>[0-3]?\d)(?:st|nd|rd|th)?[\s-]+)?{_MONTH_NAME}\.?"
            rf"(?:[\s-]+(?P<d2>[0-3]?\d)(?:st|nd|rd|th)?)?,?[\s-]+{_YEAR}\b",
            re.IGNORECASE,
        ),
        "month",
    ),
    # 2014-May-06
    (re.compile(rf"\b{_YEAR}-{_MONTH_NAME}-(?P<d2>[0-3]?\d)\b", re.IGNORECASE), "month"),
    # two-digit years: 3/7/15, 03/07/15
    (re.compile(r"\b[01]?\d/[0-3]?\d/\d\d\b"), "none"),
    # month and year: 05/2014, 5/2014, 2014-05 (a month is a date element too)
    (re.compile(rf"\b(?:0?[1-9]|1[0-2])/{_YEAR}\b"), "year"),
    (re.compile(rf"\b{_YEAR}-(?:0[1-9]|1[0-2])\b(?![-/]\d)"), "year"),
]
_AGE_90 = re.compile(
    r"\b(?P<age>9\d|1[0-4]\d)(?P<rest>[- ](?:year|yr)s?[- ]old|\s*(?:years?|yrs?|y/o|y\.o\.?|yo)(?![\w]))",
    re.IGNORECASE,
)
# "age 93", "aged 93", "age: 93", "age of 93"
_AGE_90_BEFORE = re.compile(r"\b(?P<pre>aged?\s*(?:of\s+|:\s*|=\s*)?)(?P<age>9\d|1[0-4]\d)\b", re.IGNORECASE)
_TOKEN = re.compile(r"[^\W\d_]{3,}|\d[\d-]{3,}\d", re.UNICODE)
# a ZIP code after a state code ("VT 05032", "MA, 02081-1234"); the patient's own ZIP is scrubbed
# wherever it stands (known PHI)
_STATE_ZIP = re.compile(
    r"\b(?P<st>A[KLRSZ]|C[AOT]|D[CE]|F[LM]|G[AU]|HI|I[ADLN]|K[SY]|LA|M[ADEHINOPST]|N[CDEHJMVY]|O[HKR]"
    r"|P[ARW]|RI|S[CD]|T[NX]|UT|V[AIT]|W[AIVY])(?P<sep>,?\s+)\d{5}(?:-\d{4})?\b"
    r"(?!\s*(?:units?|mg|ml|cells|copies|iu)\b)"
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
# a number that a keyword says is an identifier (Safe Harbor: account, health plan beneficiary,
# licence, vehicle, device and serial numbers, record numbers, "any other unique identifying
# number"): at least 5 letters or digits with a digit; digit groups may be space-separated. Strong
# keywords name an identifier by themselves ("Account 7712-99831"); weak ones (plan, device,
# record...) only with a marker ("Device # 12345", "record no. 12345"), so "Plan: 500mg" stays.
_ID_STRONG = (
    r"(?:account|acct|medicare|medicaid|beneficiary|subscriber|licen[cs]e|passport|serial|MRN"
    r"|(?-i:DL|SN|VIN)|plate|certificate|badge|employee)"
)
_ID_WEAK = r"(?:member|policy|insurance|plan|device|medical\s+record|record|chart|claim|case|patient)"
_ID_MARK = r"(?:#|no\.?|num(?:ber)?|id)"
_ID = re.compile(
    rf"\b(?P<kw>{_ID_STRONG}(?:[\s.:#-]+(?:{_ID_STRONG}|{_ID_WEAK}|id|no|num|number))*)"
    rf"(?P<sep>[\s.:#-]*(?:{_ID_MARK}[\s.:#-]*)?)(?P<id>[A-Z0-9][A-Z0-9-]*(?: [0-9][0-9-]*)*)\b"
    rf"|\b(?P<kw2>{_ID_WEAK}(?:[\s.:#-]+(?:{_ID_STRONG}|{_ID_WEAK}))*)"
    rf"(?P<sep2>[\s.:-]*{_ID_MARK}[\s.:#-]*)(?P<id2>[A-Z0-9][A-Z0-9-]*(?: [0-9][0-9-]*)*)\b",
    re.IGNORECASE,
)
# a dose or measurement is not an identifier: "500mg", "1000 mL", "20 units"
_QUANTITY = re.compile(
    r"\d+(?:\.\d+)?\s*(?:mg|mcg|µg|g|kg|ml|l|units?|iu|meq|mmol|mm|cm|%|bpm|mmhg)", re.IGNORECASE
)


def _id_sub(m: re.Match[str]) -> str:
    """``[ID]`` for the identifier of an ``_ID`` match, unless it is too short, has no digit, or
    is a quantity."""
    if m.group("kw") is not None:
        kw, sep, ident = m.group("kw"), m.group("sep"), m.group("id")
    else:
        kw, sep, ident = m.group("kw2"), m.group("sep2"), m.group("id2")
    alnum = re.sub(r"[^A-Za-z0-9]", "", ident)
    if len(alnum) < 5 or not any(c.isdigit() for c in alnum) or _QUANTITY.fullmatch(ident):
        return m.group(0)
    return f"{kw}{sep}[ID]"


# a capitalized name after a word for a relative or companion ("daughter Priya", "Wife Gertrude55")
_NOT_A_NAME = (
    r"(?i:has|had|is|was|were|with|without|and|or|but|also|who|which|that|the|at|in|on|of|to|here|home"
    r"|deceased|alive|died|passed|lives?|living|present|reports?|states?|denies|visiting|nurse|health"
    r"|history|hx|diabetes|hypertension|htn|dm|cad|mi|chf|copd|cancer|colon|breast|lung|prostate|heart"
    r"|stroke|asthma|alzheimer'?s?|dementia|depression|type|unknown|none)\b"
)
_RELATIVE = re.compile(
    r"\b(?P<rel>(?i:(?:(?:wife|husband|spouse|partner|daughter|son|mother|father|mom|dad|sister|brother"
    r"|aunt|uncle|niece|nephew|cousin|grand(?:mother|father|daughter|son|child)|friend|neighbou?r"
    r"|caregiver|guardian|fianc[eé]e?|girlfriend|boyfriend)(?:-in-law)?)))(?P<sep>,?\s+)"
    rf"(?!{_NOT_A_NAME})[A-Z][\w'’-]*(?:\s+(?!{_NOT_A_NAME})[A-Z][\w'’-]*)?\b"
)
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")

#: the placeholder each PHI column's values become in free text
PHI_LABELS = {
    **dict.fromkeys(("name", "given", "family", "maiden", "relatives", "prefix", "suffix"), "NAME"),
    "address": "ADDRESS",
    **dict.fromkeys(("city", "county", "birthplace"), "LOCATION"),
    "phone": "PHONE",
    "email": "EMAIL",
    "ssn": "SSN",
    **dict.fromkeys(("mrn", "drivers", "passport"), "ID"),
    "zip": "ZIP",
}


def known_phi(
    patients: pl.DataFrame, *, hide_years: dict[str, set[int]] | None = None
) -> dict[str, dict[str, str]]:
    """Per source patient id, the identifying strings to scrub from that patient's free text, each
    with its placeholder label (``NAME``, ``ADDRESS``, ``ZIP``...), longest first: every PHI column
    value (and the ZIP), its words, and Synthea-style names without their digit suffix; plus the
    years in ``hide_years`` (the birth year of a patient aged 90 or more) as ``YEAR``."""
    cols = [c for c in (*PHI_COLUMNS, "zip") if c in patients.columns and c not in ("lat", "lon")]
    out: dict[str, dict[str, str]] = {}
    for row in patients.select("patient_id", *cols).iter_rows(named=True):
        items: dict[str, str] = {}
        add = items.setdefault  # (value, label): the first column wins (names come first)
        for c in cols:
            v = row[c]
            if not v:
                continue
            v = str(v).strip()
            label = PHI_LABELS.get(c, "NAME")
            if c == "zip":
                digits = re.sub(r"\D", "", v)
                if len(digits) >= 5:
                    add(v, label)
                    add(digits[:5], label)
                continue
            if len(v) >= 3:
                add(v, label)
            for tok in _TOKEN.findall(v):
                add(tok, label)
                bare = re.sub(r"\d+$", "", tok)
                if len(bare) >= 3:
                    add(bare, label)
            for word in re.split(r"[\s,]+", v):
                if len(word) >= 3 and not word.isdigit():
                    add(word, label)
                bare = re.sub(r"\d+$", "", word)
                if len(bare) >= 3 and not bare.isdigit():
                    add(bare, label)
        for year in sorted((hide_years or {}).get(row["patient_id"], ())):
            add(str(year), "YEAR")
        # longest first so "Temika453" is replaced before "Temika"
        out[row["patient_id"]] = {k: items[k] for k in sorted(items, key=lambda s: (-len(s), s))}
    return out


@dataclass
class TextScrubber:
    """Redacts one patient's known PHI, identifier and date patterns from free text.

    In order: dates (reduced to the year, or shifted in ``date-shift``; a date in one of
    ``hide_years`` becomes ``[DATE]``), ages of 90 or more (``90+``), URLs, identifiers named by a
    keyword (``Account # 7712-99831`` -> ``Account # [ID]``), a ZIP after a state code, names after
    a word for a relative (``daughter [NAME]``), then the patient's known PHI strings (typed
    placeholders: ``[NAME]``, ``[ADDRESS]``, ``[ZIP]``, ``[ID]``, ``[YEAR]``...).
    """

    mode: str
    shift: int = 0
    hide_years: frozenset[int] = frozenset()

    def scrub(self, text: str, phi: dict[str, str] | list[str]) -> tuple[str, int]:
        n = 0
        for pat, kind in _DATE_PATTERNS:
            text, k = pat.subn(functools.partial(self._date, kind=kind), text)
            n += k
        text, k = _AGE_90.subn(lambda m: f"90+{m.group('rest')}", text)
        n += k
        text, k = _AGE_90_BEFORE.subn(lambda m: f"{m.group('pre')}90+", text)
        n += k
        text, k = _URL.subn("[URL]", text)
        n += k
        text, k = _ID.subn(_id_sub, text)
        n += k
        text, k = _STATE_ZIP.subn(lambda m: f"{m.group('st')}{m.group('sep')}[ZIP]", text)
        n += k
        text, k = _RELATIVE.subn(lambda m: f"{m.group('rel')}{m.group('sep')}[NAME]", text)
        n += k
        if phi:
            labels = phi if isinstance(phi, dict) else dict.fromkeys(phi, "NAME")
            lower = {p.lower(): label for p, label in reversed(labels.items())}
            pattern = re.compile(
                r"(?<![\w])(?:" + "|".join(re.escape(p) for p in labels) + r")(?![\w])", re.IGNORECASE
            )
            text, k = pattern.subn(lambda m: f"[{lower.get(m.group(0).lower(), 'NAME')}]", text)
            n += k
        return text, n

    def _date(self, m: re.Match[str], *, kind: str) -> str:
        if kind == "none":
            return "[DATE]"
        year = int(m.group("y"))
        if year in self.hide_years:
            return "[DATE]"
        if self.mode != "date-shift":
            return m.group("y")
        if kind == "year":
            return "[DATE]"
        import datetime as dt

        try:
            gd = m.groupdict()
            if kind == "month":
                month = _MONTHS[gd["mon"][:3].lower()]
                day = int(gd.get("d1") or gd.get("d2") or 1)
            else:
                month, day = int(gd["m"]), int(gd["d"])
            return (dt.date(year, month, day) - dt.timedelta(days=self.shift)).isoformat()
        except (ValueError, KeyError):
            return "[DATE]"


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
    hide = _hidden_years(patients, old, cfg) if cfg.mode != "off" else {}
    phi_by_patient = known_phi(patients, hide_years=hide) if cfg.mode != "off" and patients.height else {}
    for c in PHI_COLUMNS:
        if c in patients.columns:
            n = patients[c].drop_nulls().len()
            if n:
                counters[f"phi_removed:{c}"] = n
    out: dict[str, pl.DataFrame] = {}
    for table, frame in raw.items():
        f = frame
        times = TABLE_TIMES.get(table, ())
        # years and dates are those of the local calendar date the record writes, not of the UTC
        # instant (2015-12-31T23:30:00-05:00 is in 2015); times stay UTC instants
        f = f.with_columns([local_date(f, c).alias(f"{c}_local") for c in times])
        if cfg.mode == "date-shift" and times:
            days = pl.col("patient_id").replace_strict(shifts, default=0, return_dtype=pl.Int64)
            f = _shift_times(f, times, days)
        f = f.with_columns([pl.col(f"{c}_local").dt.year().cast(pl.Int32).alias(_YEAR_OF[c]) for c in times])
        if table == "encounter":
            hours = (pl.col("end_time") - pl.col("start_time")).dt.total_seconds() / 3600.0
            f = f.with_columns(hours.alias("duration_hours"))
        if table == "patient":
            f = f.with_columns(
                pl.col("birth_date_local").alias("birth_date"), pl.col("death_date_local").alias("death_date")
            )
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
            f = f.drop("_age")
        # the local dates have served: they would carry unshifted dates past safe-harbor
        f = f.drop([f"{c}_local" for c in times])
        if cfg.mode == "safe-harbor" and times:
            f = f.with_columns([pl.lit(None, dtype=f.schema[c]).alias(c) for c in times])
        if table == "note":
            f, k = _scrub_notes(f, phi_by_patient, cfg, shifts, hide)
            counters["note_redactions"] += k
        free = [c for c in FREE_TEXT_COLUMNS.get(table, ()) if c in f.columns]
        if free and cfg.mode != "off" and f.height:
            f, k = _scrub_columns(f, free, phi_by_patient, cfg, shifts, hide)
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


def _hidden_years(patients: pl.DataFrame, old: set[str], cfg: DeidConfig) -> dict[str, set[int]]:
    """Per patient aged 90 or more, the years to hide from their free text: the birth year (which
    tells the age), and in ``date-shift`` the year before (a shifted birth date can fall there)."""
    if not old or "birth_date" not in patients.columns:
        return {}
    out: dict[str, set[int]] = {}
    for pid, born in patients.select("patient_id", local_date(patients, "birth_date")).iter_rows():
        if pid in old and born is not None:
            out[pid] = {born.year, born.year - 1} if cfg.mode == "date-shift" else {born.year}
    return out


def _scrubber(cfg: DeidConfig, pid: str, shifts: dict[str, int], hide: dict[str, set[int]]) -> TextScrubber:
    return TextScrubber(cfg.mode, shifts.get(pid, 0), frozenset(hide.get(pid, ())))


def _scrub_columns(
    frame: pl.DataFrame,
    cols: list[str],
    phi: dict[str, dict[str, str]],
    cfg: DeidConfig,
    shifts: dict[str, int],
    hide: dict[str, set[int]],
) -> tuple[pl.DataFrame, int]:
    from dataforge.text.pii import PiiRedact

    total = 0
    pids = frame["patient_id"].to_list()
    for col in cols:
        # e-mail addresses, phone numbers, SSNs... first (as in notes), then the patient's own PHI
        redacted = PiiRedact().apply(frame.select(pl.col(col).fill_null("").alias("text"))).frame
        values = [
            None if old is None else new
            for old, new in zip(frame[col].to_list(), redacted["text"].to_list(), strict=True)
        ]
        total += int(redacted["pii_count"].sum())
        changed = int(redacted["pii_count"].sum()) > 0
        for i, v in enumerate(values):
            if not v or (v[0].isdigit() and _PLAIN_NUMBER.match(v)):
                continue
            new, k = _scrubber(cfg, pids[i], shifts, hide).scrub(v, phi.get(pids[i], {}))
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
    notes: pl.DataFrame,
    phi: dict[str, dict[str, str]],
    cfg: DeidConfig,
    shifts: dict[str, int],
    hide: dict[str, set[int]],
) -> tuple[pl.DataFrame, int]:
    if cfg.mode == "off" or not notes.height:
        return notes.with_columns(pl.lit(0, dtype=pl.Int32).alias("redactions")), 0
    from dataforge.text.pii import PiiRedact

    redacted = PiiRedact().apply(notes.select(pl.col("text").fill_null(""))).frame
    texts, counts = [], []
    for pid, text, k0 in zip(
        notes["patient_id"].to_list(),
        redacted["text"].to_list(),
        redacted["pii_count"].to_list(),
        strict=True,
    ):
        t, k = _scrubber(cfg, pid, shifts, hide).scrub(text, phi.get(pid, {}))
        texts.append(t)
        counts.append(k + k0)
    f = notes.with_columns(
        pl.Series("text", texts, dtype=pl.Utf8), pl.Series("redactions", counts, dtype=pl.Int32)
    )
    return f, sum(counts)


def scrub_text(text: str, *, phi: dict[str, str] | list[str], mode: str) -> str:
    """Scrub a free-text string (e.g. a reject's error message): known PHI, dates, identifiers named
    by a keyword, URLs, relatives' names, and record identifiers (UUIDs, ``Patient/<id>``
    references), which in a message could link it back to the source."""
    if mode == "off":
        return text
    text = TextScrubber(mode).scrub(text, phi)[0]
    text = _UUID.sub("[ID]", text)
    return _REFERENCE.sub(lambda m: f"{m.group('type')}/[ID]", text)


# a FHIR reference or resource name in a message: "Condition/cond-1"
_REFERENCE = re.compile(
    r"\b(?P<type>Patient|Encounter|Condition|Observation|Procedure|Medication(?:Request|Administration"
    r"|Statement|Dispense)?|Immunization|AllergyIntolerance|CarePlan|CareTeam|DiagnosticReport"
    r"|DocumentReference|Claim|ExplanationOfBenefit|Coverage|Device|ImagingStudy|Organization"
    r"|Practitioner(?:Role)?|Location|Provenance|SupplyDelivery|Goal|ServiceRequest|RelatedPerson"
    r"|Specimen|QuestionnaireResponse|Composition|Bundle)/(?P<id>[A-Za-z0-9\-.]{1,64})"
)


def all_phi(patients: pl.DataFrame) -> dict[str, str]:
    """Every known PHI string of every patient with its placeholder label (longest first)."""
    items: dict[str, str] = {}
    for v in known_phi(patients).values():
        for k, label in v.items():
            items.setdefault(k, label)
    return {k: items[k] for k in sorted(items, key=lambda s: (-len(s), s))}


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
