"""OMOP CDM (v5.3/v5.4) CSV tables -> canonical EHR tables.

``read_omop(paths)`` takes folders or files named like CDM tables (``PERSON.csv``,
``measurement.csv.gz``...; upper or lower case) and returns an
:class:`~dataforge.records.model.Extract` with source ``"omop"``.

Codes come from the ``CONCEPT`` table: for a fact's ``*_concept_id`` found in CONCEPT, ``code`` is
the concept_code and ``code_system`` the vocabulary mapped by :data:`VOCABULARIES` (SNOMED, LOINC,
RxNorm, CVX, ICD10CM...; a vocabulary we have no name for -> ``OMOP`` with code = concept_id).
When the concept id is 0 or missing from CONCEPT, the ``*_source_concept_id`` is tried the same way,
then a non-zero unknown concept id gives ``OMOP``/concept_id, else ``*_source_value`` gives
``local``/source value. ``source_value`` always keeps ``*_source_value``.

=====================  ===========  =========================================================
CDM table              canonical    notes
=====================  ===========  =========================================================
PERSON                 patient      gender 8507/8532 -> male/female (8521 other, 8551
                                    unknown; else gender_source_value M/F); birth_datetime,
                                    else year/month/day (a missing month or day -> 1, counted
                                    ``birth_date_partial``, with ``birth_date_precision``
                                    ``year`` or ``month``); race/ethnicity: concept name
                                    (CONCEPT, then the standard OMOP race concepts), else the
                                    source value; address fields from LOCATION.
DEATH                  (dropped)    death_date / deceased are copied onto the patient; the DEATH
                                    row itself is dropped with reason ``merged_into_patient``.
VISIT_OCCURRENCE       encounter    class from visit_concept_id (:data:`VISIT_CLASS`).
CONDITION_OCCURRENCE   condition
PROCEDURE_OCCURRENCE   procedure
DRUG_EXPOSURE          medication   category immunization for CVX concepts, else prescription;
                                    route from route_concept_id name or route_source_value;
                                    dose_unit = dose_unit_source_value (CDM has no dose value;
                                    ``quantity`` is the dispensed amount and is not a dose).
MEASUREMENT            measurement  value = value_as_number (if null and value_source_value is a
                                    number, that number: the Synthea ETL leaves some negative
                                    numbers only there; counted ``value_from_source_value``);
                                    value_text = value_source_value or the value concept name;
                                    source_unit = unit_source_value; source_unit_ucum = UCUM
                                    concept_code of unit_concept_id; ref_low/high = range_low/
                                    high; category vital-signs for the vital-sign LOINC codes,
                                    survey for LOINC Survey-class concepts, else laboratory.
OBSERVATION            measurement  OMOP puts surveys, social history, allergies and histories
                                    here; kept as measurement rows (the fact happened even when,
                                    as in the Synthea ETL, no value was carried) with category
                                    ``survey`` (LOINC Survey class) or ``observation`` (the OMOP
                                    domain; outside the FHIR category list); value_text =
                                    value_as_string or value concept name or value_source_value.
NOTE                   note         note_type = note_title or the note type concept name.
CONDITION_ERA, DRUG_ERA, DOSE_ERA, VISIT_DETAIL, OBSERVATION_PERIOD, DEVICE_EXPOSURE, SPECIMEN,
PAYER_PLAN_PERIOD, COST, NOTE_NLP, EPISODE, EPISODE_EVENT, FACT_RELATIONSHIP, COHORT
                       (dropped)    ``unmapped_table`` (derived eras, duplicate visit detail,
                                    administrative rows).
CONCEPT, VOCABULARY, DOMAIN, CONCEPT_CLASS, CONCEPT_RELATIONSHIP, RELATIONSHIP, CONCEPT_SYNONYM,
CONCEPT_ANCESTOR, SOURCE_TO_CONCEPT_MAP, DRUG_STRENGTH, COHORT_DEFINITION, CDM_SOURCE, METADATA,
LOCATION, CARE_SITE, PROVIDER
                       (lookup)     not patient records; not counted.
=====================  ===========  =========================================================

Times: ``*_datetime`` when given (precision ``time``), else ``*_date`` (midnight UTC, precision
``day``); OMOP times carry no UTC offset, so the date as written is the UTC date. A start date/time
that does not parse, or a missing one, rejects the row; rows whose ``person_id`` is not in PERSON
are rejected (``unknown_patient``) when PERSON is among the inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from dataforge.records.ehr.mimic import (
    collect_inputs,
    concat_table,
    drop_all,
    drop_duplicates,
    parse_checked,
    prec,
    provenance,
    reject_unknown,
    table_name,
    unique_ids,
)
from dataforge.records.model import Extract, display_name, read_csv_table

log = logging.getLogger(__name__)

VOCABULARIES = {
    "SNOMED": "SNOMED",
    "LOINC": "LOINC",
    "RxNorm": "RxNorm",
    "CVX": "CVX",
    "ICD10CM": "ICD10CM",
    "ICD9CM": "ICD9CM",
    "ICD9Proc": "ICD9Proc",
    "ICD10PCS": "ICD10PCS",
    "NDC": "NDC",
    "CPT4": "CPT4",
    "HCPCS": "HCPCS",
    "UCUM": "UCUM",
}

VISIT_CLASS = {
    "9201": "inpatient",
    "9202": "outpatient",
    "9203": "emergency",
    "262": "inpatient",  # Emergency Room and Inpatient Visit: an admission through the ER
    "8717": "inpatient",  # Inpatient Hospital (CMS place of service)
    "8756": "outpatient",  # Outpatient Hospital
    "8870": "emergency",  # Emergency Room - Hospital
    "581476": "home",  # Home Visit
    "581477": "outpatient",  # Office Visit
    "5083": "virtual",  # Telehealth
    "581478": "ambulatory",  # Ambulance Visit
    "32036": "outpatient",  # Laboratory Visit
    "581458": "outpatient",  # Pharmacy visit
    "42898160": "outpatient",  # Non-hospital institution Visit
}

GENDER = {"8507": "male", "8532": "female", "8521": "other", "8551": "unknown", "8570": "other"}
# standard OMOP Race concepts (vocabulary "Race"), used when CONCEPT lacks them
RACE_NAMES = {
    "8527": "White",
    "8516": "Black or African American",
    "8515": "Asian",
    "8657": "American Indian or Alaska Native",
    "8557": "Native Hawaiian or Other Pacific Islander",
    "8552": "Unknown",
}
VITAL_LOINC = (
    "8480-6",
    "8462-4",
    "85354-9",
    "29463-7",
    "8302-2",
    "8306-3",
    "39156-5",
    "59576-9",
    "8867-4",
    "9279-1",
    "8310-5",
    "59408-5",
    "2708-6",
    "8287-5",
    "9843-4",
    "77606-2",
)

MAPPED = (
    "person",
    "death",
    "visit_occurrence",
    "condition_occurrence",
    "procedure_occurrence",
    "drug_exposure",
    "measurement",
    "observation",
    "note",
)
LOOKUPS = (
    "concept",
    "vocabulary",
    "domain",
    "concept_class",
    "concept_relationship",
    "relationship",
    "concept_synonym",
    "concept_ancestor",
    "source_to_concept_map",
    "drug_strength",
    "cohort_definition",
    "cdm_source",
    "metadata",
    "location",
    "care_site",
    "provider",
)
UNMAPPED = (
    "condition_era",
    "drug_era",
    "dose_era",
    "visit_detail",
    "observation_period",
    "device_exposure",
    "specimen",
    "payer_plan_period",
    "cost",
    "note_nlp",
    "episode",
    "episode_event",
    "fact_relationship",
    "cohort",
)

TS_NULL = pl.lit(None, pl.Datetime("us", "UTC"))


def _col(f: pl.DataFrame, c: str, dtype: pl.DataType = pl.Utf8) -> pl.Expr:
    return pl.col(c) if c in f.columns else pl.lit(None, dtype).alias(c)


class _Concepts:
    """CONCEPT lookups as joins."""

    def __init__(self, concept: pl.DataFrame | None) -> None:
        cols = (
            "concept_id",
            "concept_name",
            "vocabulary_id",
            "concept_code",
            "concept_class_id",
            "domain_id",
        )
        if concept is None:
            concept = pl.DataFrame(schema={c: pl.Utf8 for c in cols})
        for c in cols:
            if c not in concept.columns:
                concept = concept.with_columns(pl.lit(None, pl.Utf8).alias(c))
        self.table = concept.select(
            pl.col("concept_id").str.strip_chars(),
            *[pl.col(c) for c in cols[1:]],
        ).unique("concept_id", keep="first")

    def attach(self, f: pl.DataFrame, id_col: str, prefix: str) -> pl.DataFrame:
        """Join concept fields of ``id_col`` as ``<prefix>_name``, ``_system``, ``_code``, ``_class``."""
        t = self.table.select(
            pl.col("concept_id").alias("__cid"),
            pl.col("concept_name").alias(f"{prefix}_name"),
            pl.col("vocabulary_id").alias(f"{prefix}_vocab"),
            pl.col("concept_code").alias(f"{prefix}_code"),
            pl.col("concept_class_id").alias(f"{prefix}_class"),
        )
        key = pl.col(id_col).str.strip_chars() if id_col in f.columns else pl.lit(None, pl.Utf8)
        return f.with_columns(key.alias("__cid")).join(t, on="__cid", how="left").drop("__cid")

    def coded(
        self, f: pl.DataFrame, concept_col: str, source_concept_col: str, source_value_col: str
    ) -> pl.DataFrame:
        """Add ``code``, ``code_system``, ``display``, ``__class`` (see the module docstring)."""
        f = self.attach(f, concept_col, "__c").pipe(self.attach, source_concept_col, "__s")

        def system(p: str) -> pl.Expr:
            return pl.col(f"{p}_vocab").replace_strict(VOCABULARIES, default="OMOP", return_dtype=pl.Utf8)

        def code(p: str, id_col: str) -> pl.Expr:
            return (
                pl.when(system(p) == "OMOP")
                .then(pl.col(id_col).str.strip_chars())
                .otherwise(pl.col(f"{p}_code"))
            )

        cid = _col(f, concept_col).str.strip_chars()
        sid = _col(f, source_concept_col).str.strip_chars()
        sv = _col(f, source_value_col)
        has_c = pl.col("__c_vocab").is_not_null()
        has_s = pl.col("__s_vocab").is_not_null()
        nonzero_c = cid.is_not_null() & (cid != "0")
        nonzero_s = sid.is_not_null() & (sid != "0")
        return f.with_columns(
            pl.when(has_c)
            .then(code("__c", concept_col) if concept_col in f.columns else None)
            .when(has_s)
            .then(code("__s", source_concept_col) if source_concept_col in f.columns else None)
            .when(nonzero_c)
            .then(cid)
            .when(nonzero_s)
            .then(sid)
            .otherwise(sv)
            .alias("code"),
            pl.when(has_c)
            .then(system("__c"))
            .when(has_s)
            .then(system("__s"))
            .when(nonzero_c | nonzero_s)
            .then(pl.lit("OMOP"))
            .when(sv.is_not_null())
            .then(pl.lit("local"))
            .alias("code_system"),
            pl.coalesce(pl.col("__c_name"), pl.col("__s_name")).alias("display"),
            pl.coalesce(pl.col("__c_class"), pl.col("__s_class")).alias("__class"),
        ).drop([c for c in f.columns if c.startswith(("__c_", "__s_"))])


def _when_time(f: pl.DataFrame, datetime_col: str, date_col: str) -> pl.Expr:
    return pl.coalesce(
        _col(f, datetime_col, pl.Datetime("us", "UTC")), _col(f, date_col, pl.Datetime("us", "UTC"))
    )


def _when_precision(f: pl.DataFrame, datetime_col: str, date_col: str) -> pl.Expr:
    """The precision of :func:`_when_time`'s value as written (``time``, ``day``)."""
    return (
        pl.when(_col(f, datetime_col, pl.Datetime("us", "UTC")).is_not_null())
        .then(prec(f, datetime_col))
        .otherwise(prec(f, date_col))
    )


def read_omop(paths: str | Path | Iterable[str | Path], *, root: str | Path | None = None) -> Extract:
    """Read OMOP CDM tables (see the module docstring for the mapping) into an :class:`Extract`.

    Args:
        paths: folders and/or files.
        root: provenance names are relative to this folder when given.

    Raises:
        InputError: a path does not exist, or a mapped table lacks a column the mapping needs.
    """
    given = collect_inputs(paths)
    ex = Extract.empty("omop")
    files: dict[str, list[Path]] = {}
    for f in given:
        t = table_name(f)
        if t is None:
            ex.inputs.append(
                {
                    "path": display_name(f, root),
                    "role": "skipped",
                    "table": None,
                    "rows": 0,
                    "reason": "not a CSV table",
                }
            )
            continue
        files.setdefault(t, []).append(f)

    def read(path: Path, table: str, role: str, required: tuple[str, ...] = ()) -> tuple[str, pl.DataFrame]:
        name = display_name(path, root)
        target = ex if role == "records" else Extract.empty("omop")
        before = target.rows_in
        t = read_csv_table(path, target, table=table.upper(), required=required, name=name)
        ex.inputs.append(
            {"path": name, "role": role, "table": table.upper(), "rows": target.rows_in - before}
        )
        return name, t.frame

    lookups: dict[str, pl.DataFrame] = {}
    for table in LOOKUPS:
        for path in files.get(table, []):
            _, fr = read(path, table, "lookup")
            lookups[table] = (
                pl.concat([lookups[table], fr], how="diagonal_relaxed") if table in lookups else fr
            )
    concepts = _Concepts(lookups.get("concept"))
    out: dict[str, list[pl.DataFrame]] = {}

    def emit(table: str, frame: pl.DataFrame) -> None:
        out.setdefault(table, []).append(frame)

    # PERSON first: known person ids
    known: pl.Series | None = None
    person_name = "PERSON"
    persons: list[tuple[str, pl.DataFrame]] = []
    for path in files.get("person", []):
        name, fr = read(path, "person", "records", required=("person_id",))
        f = parse_checked(
            fr,
            ex,
            name=name,
            table="PERSON",
            parse={
                "birth_datetime": "datetime",
                "year_of_birth": "int",
                "month_of_birth": "int",
                "day_of_birth": "int",
            },
            required=("person_id",),
        )
        f = f.with_columns(pl.col("person_id").str.strip_chars())
        f = drop_duplicates(f, ex, name=name, table="PERSON", keys=["person_id"])
        persons.append((name, f))
        person_name = name
    if persons:
        known = pl.concat([f.select("person_id") for _, f in persons]).to_series().unique()

    def check(
        frame: pl.DataFrame, name: str, table: str, parse: dict[str, str], required: tuple[str, ...]
    ) -> pl.DataFrame:
        f = parse_checked(frame, ex, name=name, table=table, parse=parse, required=required)
        f = f.with_columns(pl.col("person_id").str.strip_chars())
        return reject_unknown(
            f, ex, name=name, table=table, column="person_id", known=known, known_in=person_name
        )

    # DEATH -> patient fields
    deaths: list[pl.DataFrame] = []
    for path in files.get("death", []):
        name, fr = read(path, "death", "records", required=("person_id",))
        f = check(fr, name, "DEATH", {"death_date": "datetime", "death_datetime": "datetime"}, ("person_id",))
        f = f.with_columns(
            _when_time(f, "death_datetime", "death_date").alias("__death"),
            _when_precision(f, "death_datetime", "death_date").alias("__death_prec"),
        )
        deaths.append(f.select("person_id", "__death", "__death_prec"))
        drop_all(
            f,
            ex,
            name=name,
            table="DEATH",
            reason="merged_into_patient",
            detail="death date copied to the patient row",
        )
    death = (
        pl.concat(deaths)
        .group_by("person_id")
        .agg(pl.col("__death").min(), pl.col("__death_prec").sort_by("__death", nulls_last=True).first())
        if deaths
        else None
    )

    # PERSON -> patient
    for name, f in persons:
        loc = lookups.get("location")
        if loc is not None and "location_id" in f.columns and "location_id" in loc.columns:
            loc_cols = {
                "address_1": "__a1",
                "address_2": "__a2",
                "city": "city",
                "state": "state",
                "zip": "zip",
                "county": "county",
                "country_source_value": "country",
                "latitude": "lat",
                "longitude": "lon",
            }
            sel = [pl.col(c).alias(a) for c, a in loc_cols.items() if c in loc.columns]
            ltab = loc.select(pl.col("location_id").str.strip_chars(), *sel).unique(
                "location_id", keep="first"
            )
            f = f.with_columns(pl.col("location_id").str.strip_chars()).join(
                ltab, on="location_id", how="left"
            )
        if death is not None:
            f = f.join(death, on="person_id", how="left")
        f = concepts.attach(f, "race_concept_id", "__race").pipe(
            concepts.attach, "ethnicity_concept_id", "__eth"
        )
        g = _col(f, "gender_concept_id").str.strip_chars()
        gsv = _col(f, "gender_source_value").str.strip_chars().str.to_uppercase()
        year, month, day = (
            _col(f, "year_of_birth", pl.Int64),
            _col(f, "month_of_birth", pl.Int64),
            _col(f, "day_of_birth", pl.Int64),
        )
        ymd = pl.datetime(year, month.fill_null(1), day.fill_null(1), time_zone="UTC")
        partial = (
            year.is_not_null()
            & (month.is_null() | day.is_null())
            & _col(f, "birth_datetime", pl.Datetime("us", "UTC")).is_null()
        )
        ex.counters["birth_date_partial"] += f.filter(partial).height
        race_id = _col(f, "race_concept_id").str.strip_chars()
        lat = [pl.col(c).cast(pl.Float64, strict=False) for c in ("lat", "lon") if c in f.columns]
        addr = [c for c in ("__a1", "__a2") if c in f.columns]
        emit(
            "patient",
            f.select(
                *provenance(name, pl.format("PERSON:person_id={}", pl.col("person_id"))),
                pl.col("person_id").alias("patient_id"),
                g.replace_strict(GENDER, default=None, return_dtype=pl.Utf8)
                .fill_null(
                    gsv.replace_strict({"M": "male", "F": "female"}, default="unknown", return_dtype=pl.Utf8)
                )
                .alias("gender"),
                pl.coalesce(_col(f, "birth_datetime", pl.Datetime("us", "UTC")), ymd).alias("birth_date"),
                pl.when(_col(f, "birth_datetime", pl.Datetime("us", "UTC")).is_not_null())
                .then(prec(f, "birth_datetime"))
                .when(year.is_not_null() & month.is_not_null() & day.is_not_null())
                .then(pl.lit("day"))
                .when(year.is_not_null() & month.is_not_null())
                .then(pl.lit("month"))
                .when(year.is_not_null())
                .then(pl.lit("year"))
                .alias("birth_date_precision"),
                (pl.col("__death") if "__death" in f.columns else TS_NULL).alias("death_date"),
                (pl.col("__death_prec") if "__death" in f.columns else pl.lit(None, pl.Utf8)).alias(
                    "death_date_precision"
                ),
                pl.when(pl.col("__death").is_not_null() if "__death" in f.columns else pl.lit(False))
                .then(pl.lit(True))
                .alias("deceased"),
                pl.coalesce(
                    pl.col("__race_name"),
                    race_id.replace_strict(RACE_NAMES, default=None, return_dtype=pl.Utf8),
                    _col(f, "race_source_value"),
                ).alias("race"),
                pl.coalesce(pl.col("__eth_name"), _col(f, "ethnicity_source_value")).alias("ethnicity"),
                *[c for c in ("city", "state", "zip", "county", "country") if c in f.columns],
                *(
                    [
                        pl.concat_str([pl.col(c) for c in addr], separator=" ", ignore_nulls=True)
                        .replace("", None)
                        .alias("address")
                    ]
                    if addr
                    else []
                ),
                *lat,
            ),
        )

    # VISIT_OCCURRENCE -> encounter
    for path in files.get("visit_occurrence", []):
        name, fr = read(path, "visit_occurrence", "records", required=("visit_occurrence_id", "person_id"))
        f = check(
            fr,
            name,
            "VISIT_OCCURRENCE",
            {
                "visit_start_date": "datetime",
                "visit_start_datetime": "datetime",
                "visit_end_date": "datetime",
                "visit_end_datetime": "datetime",
            },
            ("visit_occurrence_id", "person_id"),
        )
        f = _require_time(f, ex, name, "VISIT_OCCURRENCE", "visit_start_datetime", "visit_start_date")
        f = concepts.coded(f, "visit_concept_id", "visit_source_concept_id", "__none")
        emit(
            "encounter",
            f.select(
                *provenance(
                    name, pl.format("VISIT_OCCURRENCE:visit_occurrence_id={}", pl.col("visit_occurrence_id"))
                ),
                pl.col("person_id").alias("patient_id"),
                pl.col("visit_occurrence_id").str.strip_chars().alias("encounter_id"),
                _when_time(f, "visit_start_datetime", "visit_start_date").alias("start_time"),
                _when_precision(f, "visit_start_datetime", "visit_start_date").alias("start_time_precision"),
                _when_time(f, "visit_end_datetime", "visit_end_date").alias("end_time"),
                _when_precision(f, "visit_end_datetime", "visit_end_date").alias("end_time_precision"),
                _col(f, "visit_concept_id")
                .str.strip_chars()
                .replace_strict(VISIT_CLASS, default=None, return_dtype=pl.Utf8)
                .alias("class"),
                "code",
                "code_system",
                "display",
                _col(f, "visit_source_value").alias("source_value"),
            ),
        )

    # CONDITION_OCCURRENCE -> condition
    for path in files.get("condition_occurrence", []):
        name, fr = read(
            path, "condition_occurrence", "records", required=("condition_occurrence_id", "person_id")
        )
        f = check(
            fr,
            name,
            "CONDITION_OCCURRENCE",
            {
                "condition_start_date": "datetime",
                "condition_start_datetime": "datetime",
                "condition_end_date": "datetime",
                "condition_end_datetime": "datetime",
            },
            ("condition_occurrence_id", "person_id"),
        )
        f = _require_time(
            f, ex, name, "CONDITION_OCCURRENCE", "condition_start_datetime", "condition_start_date"
        )
        f = concepts.coded(f, "condition_concept_id", "condition_source_concept_id", "condition_source_value")
        emit(
            "condition",
            f.select(
                *provenance(
                    name,
                    pl.format(
                        "CONDITION_OCCURRENCE:condition_occurrence_id={}", pl.col("condition_occurrence_id")
                    ),
                ),
                pl.col("person_id").alias("patient_id"),
                pl.format(
                    "CONDITION_OCCURRENCE:{}", pl.col("condition_occurrence_id").str.strip_chars()
                ).alias("record_id"),
                _col(f, "visit_occurrence_id").alias("encounter_id"),
                _when_time(f, "condition_start_datetime", "condition_start_date").alias("start_time"),
                _when_precision(f, "condition_start_datetime", "condition_start_date").alias(
                    "start_time_precision"
                ),
                _when_time(f, "condition_end_datetime", "condition_end_date").alias("end_time"),
                _when_precision(f, "condition_end_datetime", "condition_end_date").alias(
                    "end_time_precision"
                ),
                "code",
                "code_system",
                "display",
                _col(f, "condition_source_value").alias("source_value"),
            ).with_columns(unique_ids()),
        )

    # PROCEDURE_OCCURRENCE -> procedure
    for path in files.get("procedure_occurrence", []):
        name, fr = read(
            path, "procedure_occurrence", "records", required=("procedure_occurrence_id", "person_id")
        )
        f = check(
            fr,
            name,
            "PROCEDURE_OCCURRENCE",
            {
                "procedure_date": "datetime",
                "procedure_datetime": "datetime",
                "procedure_end_date": "datetime",
                "procedure_end_datetime": "datetime",
            },
            ("procedure_occurrence_id", "person_id"),
        )
        f = _require_time(f, ex, name, "PROCEDURE_OCCURRENCE", "procedure_datetime", "procedure_date")
        f = concepts.coded(f, "procedure_concept_id", "procedure_source_concept_id", "procedure_source_value")
        emit(
            "procedure",
            f.select(
                *provenance(
                    name,
                    pl.format(
                        "PROCEDURE_OCCURRENCE:procedure_occurrence_id={}", pl.col("procedure_occurrence_id")
                    ),
                ),
                pl.col("person_id").alias("patient_id"),
                pl.format(
                    "PROCEDURE_OCCURRENCE:{}", pl.col("procedure_occurrence_id").str.strip_chars()
                ).alias("record_id"),
                _col(f, "visit_occurrence_id").alias("encounter_id"),
                _when_time(f, "procedure_datetime", "procedure_date").alias("start_time"),
                _when_precision(f, "procedure_datetime", "procedure_date").alias("start_time_precision"),
                _when_time(f, "procedure_end_datetime", "procedure_end_date").alias("end_time"),
                _when_precision(f, "procedure_end_datetime", "procedure_end_date").alias(
                    "end_time_precision"
                ),
                "code",
                "code_system",
                "display",
                _col(f, "procedure_source_value").alias("source_value"),
            ).with_columns(unique_ids()),
        )

    # DRUG_EXPOSURE -> medication
    for path in files.get("drug_exposure", []):
        name, fr = read(path, "drug_exposure", "records", required=("drug_exposure_id", "person_id"))
        f = check(
            fr,
            name,
            "DRUG_EXPOSURE",
            {
                "drug_exposure_start_date": "datetime",
                "drug_exposure_start_datetime": "datetime",
                "drug_exposure_end_date": "datetime",
                "drug_exposure_end_datetime": "datetime",
            },
            ("drug_exposure_id", "person_id"),
        )
        f = _require_time(
            f, ex, name, "DRUG_EXPOSURE", "drug_exposure_start_datetime", "drug_exposure_start_date"
        )
        f = concepts.coded(f, "drug_concept_id", "drug_source_concept_id", "drug_source_value")
        f = concepts.attach(f, "route_concept_id", "__route")
        emit(
            "medication",
            f.select(
                *provenance(name, pl.format("DRUG_EXPOSURE:drug_exposure_id={}", pl.col("drug_exposure_id"))),
                pl.col("person_id").alias("patient_id"),
                pl.format("DRUG_EXPOSURE:{}", pl.col("drug_exposure_id").str.strip_chars()).alias(
                    "record_id"
                ),
                _col(f, "visit_occurrence_id").alias("encounter_id"),
                _when_time(f, "drug_exposure_start_datetime", "drug_exposure_start_date").alias("start_time"),
                _when_precision(f, "drug_exposure_start_datetime", "drug_exposure_start_date").alias(
                    "start_time_precision"
                ),
                _when_time(f, "drug_exposure_end_datetime", "drug_exposure_end_date").alias("end_time"),
                _when_precision(f, "drug_exposure_end_datetime", "drug_exposure_end_date").alias(
                    "end_time_precision"
                ),
                pl.when(pl.col("code_system") == "CVX")
                .then(pl.lit("immunization"))
                .otherwise(pl.lit("prescription"))
                .alias("category"),
                "code",
                "code_system",
                "display",
                _col(f, "dose_unit_source_value").alias("dose_unit"),
                pl.coalesce(pl.col("__route_name"), _col(f, "route_source_value")).alias("route"),
                _col(f, "drug_source_value").alias("source_value"),
            ).with_columns(unique_ids()),
        )

    # MEASUREMENT / OBSERVATION -> measurement
    for table, id_col, prefix in (
        ("measurement", "measurement_id", "measurement"),
        ("observation", "observation_id", "observation"),
    ):
        for path in files.get(table, []):
            name, fr = read(path, table, "records", required=(id_col, "person_id"))
            upper = table.upper()
            f = check(
                fr,
                name,
                upper,
                {
                    f"{prefix}_date": "datetime",
                    f"{prefix}_datetime": "datetime",
                    "value_as_number": "float",
                    "range_low": "float",
                    "range_high": "float",
                },
                (id_col, "person_id"),
            )
            f = _require_time(f, ex, name, upper, f"{prefix}_datetime", f"{prefix}_date")
            f = concepts.coded(
                f, f"{prefix}_concept_id", f"{prefix}_source_concept_id", f"{prefix}_source_value"
            )
            f = concepts.attach(f, "unit_concept_id", "__unit").pipe(
                concepts.attach, "value_as_concept_id", "__val"
            )
            vsv = _col(f, "value_source_value")
            recovered = vsv.str.strip_chars().cast(pl.Float64, strict=False)
            van = _col(f, "value_as_number", pl.Float64)
            f = f.with_columns(
                pl.when(van.is_null()).then(recovered).otherwise(van).alias("__value"),
                (van.is_null() & recovered.is_not_null()).alias("__recovered"),
            )
            ex.counters["value_from_source_value"] += f.filter(pl.col("__recovered")).height
            if table == "measurement":
                category = (
                    pl.when((pl.col("code_system") == "LOINC") & pl.col("code").is_in(list(VITAL_LOINC)))
                    .then(pl.lit("vital-signs"))
                    .when(pl.col("__class") == "Survey")
                    .then(pl.lit("survey"))
                    .otherwise(pl.lit("laboratory"))
                )
                value_text = pl.when(pl.col("__value").is_null()).then(pl.coalesce(vsv, pl.col("__val_name")))
            else:
                category = (
                    pl.when(pl.col("__class") == "Survey")
                    .then(pl.lit("survey"))
                    .otherwise(pl.lit("observation"))
                )
                value_text = pl.when(pl.col("__value").is_null()).then(
                    pl.coalesce(_col(f, "value_as_string"), pl.col("__val_name"), vsv)
                )
            emit(
                "measurement",
                f.select(
                    *provenance(name, pl.format("{}:{}={}", pl.lit(upper), pl.lit(id_col), pl.col(id_col))),
                    pl.col("person_id").alias("patient_id"),
                    pl.format("{}:{}", pl.lit(upper), pl.col(id_col).str.strip_chars()).alias("record_id"),
                    _col(f, "visit_occurrence_id").alias("encounter_id"),
                    _when_time(f, f"{prefix}_datetime", f"{prefix}_date").alias("time"),
                    _when_precision(f, f"{prefix}_datetime", f"{prefix}_date").alias("time_precision"),
                    category.alias("category"),
                    "code",
                    "code_system",
                    "display",
                    pl.col("__value").alias("value"),
                    value_text.alias("value_text"),
                    _col(f, f"{prefix}_source_value").alias("source_value"),
                    _col(f, "unit_source_value").alias("source_unit"),
                    pl.when(pl.col("__unit_vocab") == "UCUM")
                    .then(pl.col("__unit_code"))
                    .alias("source_unit_ucum"),
                    _col(f, "range_low", pl.Float64).alias("ref_low"),
                    _col(f, "range_high", pl.Float64).alias("ref_high"),
                ).with_columns(unique_ids()),
            )

    # NOTE -> note
    for path in files.get("note", []):
        name, fr = read(path, "note", "records", required=("note_id", "person_id"))
        f = check(
            fr, name, "NOTE", {"note_date": "datetime", "note_datetime": "datetime"}, ("note_id", "person_id")
        )
        f = concepts.attach(f, "note_type_concept_id", "__nt")
        emit(
            "note",
            f.select(
                *provenance(name, pl.format("NOTE:note_id={}", pl.col("note_id"))),
                pl.col("person_id").alias("patient_id"),
                pl.format("NOTE:{}", pl.col("note_id").str.strip_chars()).alias("record_id"),
                _col(f, "visit_occurrence_id").alias("encounter_id"),
                _when_time(f, "note_datetime", "note_date").alias("time"),
                _when_precision(f, "note_datetime", "note_date").alias("time_precision"),
                pl.coalesce(_col(f, "note_title"), pl.col("__nt_name")).alias("note_type"),
                _col(f, "note_text").alias("text"),
            ).with_columns(unique_ids()),
        )

    for table in sorted(files):
        if table in MAPPED or table in LOOKUPS:
            continue
        for path in files[table]:
            if table in UNMAPPED:
                name, fr = read(path, table, "records")
                drop_all(
                    fr,
                    ex,
                    name=name,
                    table=table.upper(),
                    reason="unmapped_table",
                    detail=f"OMOP {table.upper()} is not mapped to a canonical table",
                )
            else:
                name = display_name(path, root)
                ex.inputs.append(
                    {
                        "path": name,
                        "role": "skipped",
                        "table": table.upper(),
                        "rows": 0,
                        "reason": "not an OMOP CDM table this reader knows",
                    }
                )
                log.warning("%s: skipped (not an OMOP CDM table this reader knows)", name)

    for table, frames in out.items():
        ex.tables[table] = concat_table(table, frames)
    log.info("omop: %s", ex.ledger_counts())
    return ex


def _require_time(
    f: pl.DataFrame, ex: Extract, name: str, table: str, datetime_col: str, date_col: str
) -> pl.DataFrame:
    """Reject rows with neither a start datetime nor a start date (both are CDM-required)."""
    t = _when_time(f, datetime_col, date_col)
    bad = f.filter(t.is_null())
    if bad.height:
        ex.reject_frame(
            bad.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                pl.col("_line").alias("source_line"),
                pl.lit(table).alias("table"),
                pl.lit("missing_value").alias("reason"),
                pl.format(
                    "{} line {}: columns {} and {} are both empty",
                    pl.lit(name),
                    pl.col("_line"),
                    pl.lit(date_col),
                    pl.lit(datetime_col),
                ).alias("error"),
            )
        )
    return f.filter(t.is_not_null())
