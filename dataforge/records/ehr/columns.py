"""The columns every EHR reader produces, before validation, unit normalization and de-identification.

Readers (``fhir``, ``synthea``, ``mimic``, ``omop``) return an :class:`~dataforge.records.model.Extract`
whose ``tables`` hold these frames with **source identifiers and full timestamps** (de-identification
happens later, in :mod:`dataforge.records.ehr.deid`, and is the only place that knows the salt).
:func:`conform_raw` selects and casts a reader's frame to exactly these columns (missing ones become
null), so readers only fill what their source has.

Conventions:

* ``patient_id``, ``encounter_id``, ``record_id``: the source's own identifiers (FHIR resource id,
  Synthea UUID, MIMIC ``subject_id``/``hadm_id``, OMOP ``person_id``...). ``record_id`` is unique
  per canonical row: suffix it when one record yields several rows (``<obs id>#8480-6``).
* times are UTC ``timestamp[us]``; a date-only source value is midnight UTC, a partial one
  (FHIR ``2015``, ``2015-07``) midnight UTC of its first day. Every time column ``<col>`` (see
  :data:`TIME_COLUMNS`) has two companions: ``<col>_precision`` (:data:`PRECISIONS`: ``year``,
  ``month``, ``day``, or ``time`` when a time of day is given), so that a partial date is never
  mistaken for a day, and ``<col>_local`` (date), the calendar date as the record writes it, before
  any conversion to UTC (``2015-12-31T23:30:00-05:00`` is 2015-12-31 there and 2016-01-01T04:30Z
  in ``<col>``). Years and dates of the canonical tables come from ``<col>_local`` (which is not
  written itself); a reader whose times carry no UTC offset may leave it null (the UTC date is then
  the local date). Use
  :func:`precision_of` and :func:`local_date_of` on ISO 8601 strings.
* ``code_system`` uses the names in :data:`CODE_SYSTEMS`; ``source_value`` keeps the raw code or
  value exactly as the source wrote it.
* measurement ``value`` is the number as given (before unit conversion), ``source_unit`` the unit
  string as given, ``source_unit_ucum`` the UCUM code when the source declares one (FHIR
  ``valueQuantity.code`` with system ``http://unitsofmeasure.org``, Synthea ``UNITS``); the units
  step fills the canonical ``unit``.
* patient PHI columns (``name`` ... ``passport``) are read so de-identification can remove them and
  redact them from free text; they never reach the output.
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us", "UTC")

CODE_SYSTEMS = (
    "SNOMED",
    "LOINC",
    "RxNorm",
    "ICD9CM",
    "ICD10CM",
    "ICD9Proc",
    "ICD10PCS",
    "CVX",
    "NDC",
    "CPT4",
    "HCPCS",
    "UCUM",
    "MIMIC-LAB",
    "MIMIC-OMR",
    "MIMIC-DRUG",
    "OMOP",
    "local",
)

# FHIR / URI systems -> canonical names
SYSTEM_URIS = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10CM",
    "http://www.cms.gov/Medicare/Coding/ICD10": "ICD10PCS",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://www.ama-assn.org/go/cpt": "CPT4",
    "http://unitsofmeasure.org": "UCUM",
}

COMMON = {
    "source_file": pl.Utf8,
    "source_row": pl.Int64,
    "source_ref": pl.Utf8,
    "patient_id": pl.Utf8,
}

PHI_COLUMNS = (
    "name",
    "given",
    "family",
    "maiden",
    "relatives",  # names of relatives and contacts (FHIR mother's maiden name, Patient.contact)
    "prefix",
    "suffix",
    "address",
    "city",
    "county",
    "birthplace",
    "phone",
    "email",
    "ssn",
    "mrn",
    "drivers",
    "passport",
    "lat",
    "lon",
)

_BASE_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "patient": {
        **COMMON,
        "gender": pl.Utf8,  # male | female | other | unknown
        "birth_date": TS,
        "death_date": TS,
        "deceased": pl.Boolean,
        "age": pl.Int32,  # age in years when the source gives an age, not a birth date (MIMIC)
        "age_year": pl.Int32,  # calendar year at which ``age`` holds (MIMIC anchor_year)
        "race": pl.Utf8,
        "ethnicity": pl.Utf8,
        "marital_status": pl.Utf8,
        "language": pl.Utf8,
        "state": pl.Utf8,
        "zip": pl.Utf8,
        "country": pl.Utf8,
        **{c: (pl.Float64 if c in ("lat", "lon") else pl.Utf8) for c in PHI_COLUMNS},
    },
    "encounter": {
        **COMMON,
        "encounter_id": pl.Utf8,
        "start_time": TS,
        "end_time": TS,
        "status": pl.Utf8,
        "class": pl.Utf8,  # ambulatory | emergency | inpatient | outpatient | wellness | urgentcare | ...
        "code": pl.Utf8,
        "code_system": pl.Utf8,
        "display": pl.Utf8,
        "reason_code": pl.Utf8,
        "reason_system": pl.Utf8,
        "reason_display": pl.Utf8,
        "source_value": pl.Utf8,
    },
    "condition": {
        **COMMON,
        "record_id": pl.Utf8,
        "encounter_id": pl.Utf8,
        "start_time": TS,  # onset
        "end_time": TS,  # abatement
        "category": pl.Utf8,
        "code": pl.Utf8,
        "code_system": pl.Utf8,
        "display": pl.Utf8,
        "source_value": pl.Utf8,
    },
    "measurement": {
        **COMMON,
        "record_id": pl.Utf8,
        "encounter_id": pl.Utf8,
        "time": TS,
        "category": pl.Utf8,  # vital-signs | laboratory | survey | social-history | exam | ...
        "code": pl.Utf8,
        "code_system": pl.Utf8,
        "display": pl.Utf8,
        "value": pl.Float64,
        "value_text": pl.Utf8,  # non-numeric result (coded or free text)
        "source_value": pl.Utf8,
        "source_unit": pl.Utf8,
        "source_unit_ucum": pl.Utf8,
        "ref_low": pl.Float64,
        "ref_high": pl.Float64,
        "interpretation": pl.Utf8,
    },
    "medication": {
        **COMMON,
        "record_id": pl.Utf8,
        "encounter_id": pl.Utf8,
        "start_time": TS,
        "end_time": TS,
        "category": pl.Utf8,  # prescription | immunization | administration
        "status": pl.Utf8,
        "code": pl.Utf8,
        "code_system": pl.Utf8,
        "display": pl.Utf8,
        "dose_value": pl.Float64,
        "dose_unit": pl.Utf8,
        "route": pl.Utf8,
        "source_value": pl.Utf8,
    },
    "procedure": {
        **COMMON,
        "record_id": pl.Utf8,
        "encounter_id": pl.Utf8,
        "start_time": TS,
        "end_time": TS,
        "code": pl.Utf8,
        "code_system": pl.Utf8,
        "display": pl.Utf8,
        "reason_code": pl.Utf8,
        "reason_system": pl.Utf8,
        "source_value": pl.Utf8,
    },
    "note": {
        **COMMON,
        "record_id": pl.Utf8,
        "encounter_id": pl.Utf8,
        "time": TS,
        "note_type": pl.Utf8,
        "text": pl.Utf8,
    },
}

#: the time columns of each raw table (each with ``<col>_local`` and ``<col>_precision``)
TIME_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient": ("birth_date", "death_date"),
    "encounter": ("start_time", "end_time"),
    "condition": ("start_time", "end_time"),
    "measurement": ("time",),
    "medication": ("start_time", "end_time"),
    "procedure": ("start_time", "end_time"),
    "note": ("time",),
}
#: what a time column's source value gives, coarsest first
PRECISIONS = ("year", "month", "day", "time")

RAW_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    table: {
        **cols,
        **{f"{c}_local": pl.Date for c in TIME_COLUMNS[table]},
        **{f"{c}_precision": pl.Utf8 for c in TIME_COLUMNS[table]},
    }
    for table, cols in _BASE_COLUMNS.items()
}

TABLES = tuple(RAW_COLUMNS)


def precision_of(text: pl.Expr) -> pl.Expr:
    """The precision of ISO 8601 date strings: ``year`` (``2015``), ``month`` (``2015-07``), ``day``
    (``2015-07-04``), else ``time``; null for null."""
    s = text.str.strip_chars()
    return (
        pl.when(s.str.contains(r"^\d{4}$"))
        .then(pl.lit("year"))
        .when(s.str.contains(r"^\d{4}-\d{2}$"))
        .then(pl.lit("month"))
        .when(s.str.contains(r"^\d{4}-\d{2}-\d{2}$"))
        .then(pl.lit("day"))
        .when(s.is_not_null())
        .then(pl.lit("time"))
    )


def local_date_of(text: pl.Expr) -> pl.Expr:
    """The calendar date written at the start of ISO 8601 date-time strings (``2015-12-31`` of
    ``2015-12-31T23:30:00-05:00``), whatever the offset; null when there is none."""
    return text.str.strip_chars().str.slice(0, 10).str.strptime(pl.Date, "%Y-%m-%d", strict=False)


def conform_raw(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly the raw columns of ``table``, in order; missing columns are null.

    Raises KeyError for an unknown table and polars errors for values that do not cast (readers
    parse values themselves and reject what does not parse, so a failed cast here is a bug).
    """
    cols = RAW_COLUMNS[table]
    return frame.select(
        [
            (pl.col(c).cast(t, strict=True) if c in frame.columns else pl.lit(None, dtype=t)).alias(c)
            for c, t in cols.items()
        ]
    )


def empty_raw(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_COLUMNS[table])
