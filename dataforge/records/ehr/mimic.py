"""MIMIC-IV (hosp module) CSV tables -> canonical EHR tables.

``read_mimic(paths)`` takes folders or files named like MIMIC-IV tables (``patients.csv``,
``labevents.csv.gz``...; any case; ``.csv``, ``.csv.gz``, ``.csv.zst``) and returns an
:class:`~dataforge.records.model.Extract` with source ``"mimic"``. Dictionaries (``d_labitems``,
``d_items``, ``d_icd_diagnoses[_used]``, ``d_icd_procedures[_used]``, ``d_hcpcs``) are lookups:
they are listed in ``inputs`` with role ``lookup`` and are not counted; when files (not folders)
are given, dictionaries are also looked for next to them.

Mapping (every canonical row carries ``source_file``/``source_row`` of its CSV row):

=================  ===========  ==============================================================
MIMIC table        canonical    notes
=================  ===========  ==============================================================
patients           patient      gender F/M -> female/male (else unknown); ``age`` = anchor_age,
                                ``age_year`` = anchor_year (MIMIC has no birth date);
                                ``death_date`` = dod, ``deceased`` True when dod is given (null
                                otherwise: a missing dod does not prove the patient alive).
                                race, language, marital_status: the latest non-null value over
                                the patient's admissions (ordered by admittime, then hadm_id).
admissions         encounter    encounter_id = hadm_id; admittime/dischtime; ``class`` from
                                admission_type (table :data:`ADMISSION_CLASS`); display and
                                source_value = admission_type.
diagnoses_icd      condition    ICD9CM / ICD10CM from icd_version; ``source_value`` = icd_code as
                                given, ``code`` dotted (:func:`dot_icd`); display from
                                d_icd_diagnoses[_used]; start_time = admittime of the hadm_id
                                (null when the admission is not among the inputs).
procedures_icd     procedure    ICD9Proc (dot after 2 digits) / ICD10PCS (no dot); start_time =
                                chartdate; display from d_icd_procedures[_used].
labevents          measurement  category laboratory; itemids in ``data/mimic_lab_loinc.csv`` get
                                code_system LOINC / code = LOINC, others MIMIC-LAB / code =
                                itemid; ``source_value`` = itemid always; display = d_labitems
                                label; value = valuenum, value_text = value when valuenum is
                                null; source_unit = valueuom; ref_low/high = ref_range_lower/
                                upper; interpretation = flag.
prescriptions      medication   category prescription; NDC when ``ndc`` is 11 digits and not all
                                zeros, else MIMIC-DRUG with code = formulary_drug_cd (or drug);
                                display = drug; dose_value from dose_val_rx (see below);
                                dose_unit = dose_unit_rx; route as given.
omr                measurement  category vital-signs; result_name table :data:`OMR_ITEMS`:
                                "Blood Pressure*" "120/80" -> two rows 8480-6 / 8462-4
                                (record_id suffixed ``#8480-6``); unknown names -> MIMIC-OMR,
                                code = result_name, numeric value or value_text.
transfers, services, icustays, microbiologyevents, outputevents, other MIMIC tables
                   (dropped)    every row dropped with reason ``unmapped_table``.
=================  ===========  ==============================================================

``dose_val_rx`` is free text in MIMIC: ``"25,000"`` (thousands separator) -> 25000; a range
``"1-2"`` -> the lower bound 1 (the smallest dose the order allows; counted as
``dose_range_lower_bound``); anything else -> null dose (counted as ``dose_unparsed``), the
prescription itself is kept. Numeric columns (valuenum, ref ranges, anchor_age, omr values of known
vitals...) and times that do not parse reject the row naming file, line, column and value. Rows
whose ``subject_id`` is not in ``patients`` are rejected (``unknown_patient``) when a patients
table is among the inputs.

MIMIC shifts every date into the 2100s as part of its de-identification; that is by design and
not an error here (validation exempts source ``mimic`` from the future-date rule).

The helpers :func:`parse_checked`, :func:`ts_expr`, :func:`reject_unknown` and
:func:`collect_inputs` are shared with :mod:`dataforge.records.ehr.omop`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from dataforge.errors import InputError
from dataforge.records.ehr.columns import conform_raw, precision_of
from dataforge.records.model import Extract, display_name, read_csv_table

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.zst", ".csv.zstd", ".csv.bz2")

# ------------------------------------------------------------------------ shared helpers

TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)

KIND_WORDS = {"datetime": "date/time", "float": "number", "int": "integer"}
KIND_REASONS = {"datetime": "bad_date", "float": "bad_number", "int": "bad_number"}


def table_name(path: Path) -> str | None:
    """``labevents`` for ``labevents.csv.gz`` (lower case); None when not a CSV table."""
    name = path.name.lower()
    for suffix in sorted(CSV_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def collect_inputs(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files named by ``paths`` (folders are listed, not recursively), sorted, without repeats."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files.extend(sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            msg = f"input not found: {path}"
            raise InputError(msg)
    seen: set[Path] = set()
    out = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    if not out:
        msg = f"no input files in {[str(p) for p in paths]}"
        raise InputError(msg)
    return out


def ts_expr(col: str) -> pl.Expr:
    """Parse a string column of ISO-like dates / date-times into UTC ``timestamp[us]``.

    A date-only value is midnight UTC; a value that fits no format is null (the caller rejects
    non-null inputs that came out null)."""
    s = pl.col(col).str.strip_chars()
    return pl.coalesce(
        [s.str.strptime(pl.Datetime("us"), f, strict=False, exact=True) for f in TIME_FORMATS]
    ).dt.replace_time_zone("UTC")


def float_expr(col: str) -> pl.Expr:
    v = pl.col(col).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(v.is_finite()).then(v)


def int_expr(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().cast(pl.Int64, strict=False)


_PARSERS = {"datetime": ts_expr, "float": float_expr, "int": int_expr}


def _raw_expr(columns: Sequence[str]) -> pl.Expr:
    return pl.concat_str([pl.col(c).fill_null("") for c in columns], separator=",").cast(pl.Binary)


def parse_checked(
    frame: pl.DataFrame,
    extract: Extract,
    *,
    name: str,
    table: str,
    parse: dict[str, str] | None = None,
    required: Sequence[str] = (),
) -> pl.DataFrame:
    """Parse typed columns of a :func:`read_csv_table` frame; reject rows that fail.

    ``parse`` maps column -> ``datetime`` | ``float`` | ``int``: each present column is replaced
    by its parsed value; a row where a non-null input does not parse is rejected
    (``bad_date`` / ``bad_number``) with an error naming the file, line, column and value.
    ``required`` columns must be non-null (``missing_value``). Returns the surviving rows; each
    ``datetime`` column ``c`` also gets ``__prec_<c>``, the precision of the value as written
    (``day`` or ``time``, see :func:`~dataforge.records.ehr.columns.precision_of`; :func:`prec`).
    """
    parse = {c: k for c, k in (parse or {}).items() if c in frame.columns}
    source_cols = [c for c in frame.columns if not c.startswith("_")]
    errors: list[pl.Expr] = []
    reasons: list[pl.Expr] = []
    parsed = frame.with_columns(
        [_PARSERS[k](c).alias(f"__p_{c}") for c, k in parse.items()]
        + [precision_of(pl.col(c)).alias(f"__prec_{c}") for c, k in parse.items() if k == "datetime"]
    )
    for c in required:
        if c not in frame.columns:
            continue
        bad = pl.col(c).is_null()
        errors.append(pl.when(bad).then(pl.lit(f"column {c} is empty")))
        reasons.append(pl.when(bad).then(pl.lit("missing_value")))
    for c, kind in parse.items():
        bad = pl.col(c).is_not_null() & pl.col(f"__p_{c}").is_null()
        errors.append(
            pl.when(bad).then(
                pl.format("column {} value '{}' is not a {}", pl.lit(c), pl.col(c), pl.lit(KIND_WORDS[kind]))
            )
        )
        reasons.append(pl.when(bad).then(pl.lit(KIND_REASONS[kind])))
    if errors:
        parsed = parsed.with_columns(
            pl.concat_str(errors, separator="; ", ignore_nulls=True).alias("__err"),
            pl.coalesce(reasons).alias("__reason"),
        )
        bad_rows = parsed.filter(pl.col("__reason").is_not_null())
        if bad_rows.height:
            extract.reject_frame(
                bad_rows.select(
                    pl.lit(name).alias("source_file"),
                    pl.col("_row").alias("source_row"),
                    pl.col("_line").alias("source_line"),
                    pl.lit(table).alias("table"),
                    pl.col("__reason").alias("reason"),
                    pl.format("{} line {}: {}", pl.lit(name), pl.col("_line"), pl.col("__err")).alias(
                        "error"
                    ),
                    _raw_expr(source_cols).alias("raw"),
                )
            )
        parsed = parsed.filter(pl.col("__reason").is_null()).drop("__err", "__reason")
    return parsed.with_columns([pl.col(f"__p_{c}").alias(c) for c in parse]).drop([f"__p_{c}" for c in parse])


def prec(frame: pl.DataFrame, col: str) -> pl.Expr:
    """The precision :func:`parse_checked` recorded for datetime column ``col`` (null when absent)."""
    name = f"__prec_{col}"
    return pl.col(name) if name in frame.columns else pl.lit(None, pl.Utf8)


def reject_unknown(
    frame: pl.DataFrame,
    extract: Extract,
    *,
    name: str,
    table: str,
    column: str,
    known: pl.Series | None,
    known_in: str,
    reason: str = "unknown_patient",
) -> pl.DataFrame:
    """Reject rows whose ``column`` is not in ``known`` (no check when ``known`` is None)."""
    if known is None or column not in frame.columns:
        return frame
    ok = pl.col(column).is_in(known.implode())
    bad = frame.filter(~ok)
    if bad.height:
        source_cols = [c for c in frame.columns if not c.startswith("_")]
        extract.reject_frame(
            bad.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                pl.col("_line").alias("source_line"),
                pl.lit(table).alias("table"),
                pl.lit(reason).alias("reason"),
                pl.format(
                    "{} line {}: column {} value '{}' is not in {}",
                    pl.lit(name),
                    pl.col("_line"),
                    pl.lit(column),
                    pl.col(column).cast(pl.Utf8),
                    pl.lit(known_in),
                ).alias("error"),
                _raw_expr([c for c in source_cols if frame.schema[c] == pl.Utf8]).alias("raw"),
            )
        )
    return frame.filter(ok)


def drop_all(
    frame: pl.DataFrame, extract: Extract, *, name: str, table: str, reason: str, detail: str
) -> None:
    """Every row of ``frame`` into ``dropped``."""
    extract.drop_frame(
        frame.select(
            pl.lit(name).alias("source_file"),
            pl.col("_row").alias("source_row"),
            pl.format("{}:row={}", pl.lit(table), pl.col("_row")).alias("source_ref"),
            pl.lit(table).alias("table"),
            pl.lit(reason).alias("reason"),
            pl.lit(detail).alias("detail"),
        )
    )


def drop_duplicates(
    frame: pl.DataFrame, extract: Extract, *, name: str, table: str, keys: Sequence[str]
) -> pl.DataFrame:
    """Keep the first row (by ``_row``) of each key; later repeats are dropped (``duplicate_record``)."""
    frame = frame.sort("_row")
    first = frame.select(pl.struct(keys).is_first_distinct()).to_series()
    dup = frame.filter(~first)
    if dup.height:
        extract.drop_frame(
            dup.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                pl.format(
                    "{}:{}",
                    pl.lit(table),
                    pl.concat_str([pl.col(k).cast(pl.Utf8) for k in keys], separator=","),
                ).alias("source_ref"),
                pl.lit(table).alias("table"),
                pl.lit("duplicate_record").alias("reason"),
                pl.format("same {} as an earlier row", pl.lit("/".join(keys))).alias("detail"),
            )
        )
    return frame.filter(first)


def unique_ids(col: str = "record_id") -> pl.Expr:
    """``record_id`` made unique: repeats get ``#r<source_row>`` appended."""
    return (
        pl.when(pl.col(col).is_duplicated())
        .then(pl.format("{}#r{}", pl.col(col), pl.col("source_row")))
        .otherwise(pl.col(col))
        .alias(col)
    )


def provenance(name: str, ref: pl.Expr) -> list[pl.Expr]:
    return [pl.lit(name).alias("source_file"), pl.col("_row").alias("source_row"), ref.alias("source_ref")]


def concat_table(table: str, frames: list[pl.DataFrame]) -> pl.DataFrame:
    conformed = [conform_raw(table, f) for f in frames]
    return pl.concat(conformed, how="vertical") if conformed else conform_raw(table, pl.DataFrame())


# ------------------------------------------------------------------------ MIMIC tables

MAPPED = ("patients", "admissions", "diagnoses_icd", "procedures_icd", "labevents", "prescriptions", "omr")
LOOKUPS = (
    "d_labitems",
    "d_items",
    "d_icd_diagnoses",
    "d_icd_diagnoses_used",
    "d_icd_procedures",
    "d_icd_procedures_used",
    "d_hcpcs",
    "caregiver",
    "provider",
)
# other MIMIC-IV hosp/icu tables: read, counted, dropped (``unmapped_table``)
UNMAPPED = (
    "transfers",
    "services",
    "icustays",
    "microbiologyevents",
    "outputevents",
    "inputevents",
    "ingredientevents",
    "chartevents",
    "datetimeevents",
    "procedureevents",
    "emar",
    "emar_detail",
    "pharmacy",
    "poe",
    "poe_detail",
    "hcpcsevents",
    "drgcodes",
)

ADMISSION_CLASS = {
    "EW EMER.": "emergency",  # emergency ward admission
    "DIRECT EMER.": "emergency",
    "URGENT": "emergency",
    "EU OBSERVATION": "emergency",  # observation in the emergency unit
    "ELECTIVE": "inpatient",
    "SURGICAL SAME DAY ADMISSION": "inpatient",
    "OBSERVATION ADMIT": "observation",
    "DIRECT OBSERVATION": "observation",
    "AMBULATORY OBSERVATION": "ambulatory",
}

# result_name -> (code_system, code, display, unit as MIMIC writes it in the name)
OMR_ITEMS: dict[str, tuple[str, str, str, str | None]] = {
    "Weight (Lbs)": ("LOINC", "29463-7", "Body weight", "lb"),
    "Height (Inches)": ("LOINC", "8302-2", "Body height", "in"),
    "BMI (kg/m2)": ("LOINC", "39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
    # the un-suffixed names (full MIMIC-IV) carry no unit: coded, unit left null
    "Weight": ("LOINC", "29463-7", "Body weight", None),
    "Height": ("LOINC", "8302-2", "Body height", None),
    "BMI": ("LOINC", "39156-5", "Body mass index (BMI) [Ratio]", None),
}
BP_SYSTOLIC = ("LOINC", "8480-6", "Systolic blood pressure", "mm[Hg]")
BP_DIASTOLIC = ("LOINC", "8462-4", "Diastolic blood pressure", "mm[Hg]")
BP_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$"


def dot_icd(code: pl.Expr, system: pl.Expr) -> pl.Expr:
    """Insert the decimal point MIMIC leaves out, per code system.

    ICD-9-CM: after 3 characters (``4139`` -> ``413.9``, ``V707`` -> ``V70.7``), after 4 for E
    codes (``E8791`` -> ``E879.1``); ICD-10-CM after 3 (``I2510`` -> ``I25.10``); ICD-9 procedures
    after 2 (``3897`` -> ``38.97``); ICD-10-PCS has no point. Codes too short keep no point.
    """
    c = code.str.strip_chars().str.to_uppercase()
    n = c.str.len_chars()

    def at(k: int) -> pl.Expr:
        return pl.concat_str([c.str.slice(0, k), pl.lit("."), c.str.slice(k)])

    return (
        pl.when((system == "ICD9CM") & c.str.starts_with("E") & (n > 4))
        .then(at(4))
        .when((system == "ICD9CM") & ~c.str.starts_with("E") & (n > 3))
        .then(at(3))
        .when((system == "ICD10CM") & (n > 3))
        .then(at(3))
        .when((system == "ICD9Proc") & (n > 2))
        .then(at(2))
        .otherwise(c)
    )


def load_lab_loinc() -> pl.DataFrame:
    """The repo table ``data/mimic_lab_loinc.csv`` (itemid -> LOINC code and display)."""
    return pl.read_csv(DATA_DIR / "mimic_lab_loinc.csv", infer_schema_length=0, comment_prefix="# ").select(
        pl.col("itemid").str.strip_chars(),
        pl.col("loinc").str.strip_chars().alias("__loinc"),
        pl.col("loinc_display").alias("__loinc_display"),
    )


class _Reader:
    def __init__(self, root: str | Path | None) -> None:
        self.root = root
        self.extract = Extract.empty("mimic")
        self.frames: dict[str, list[pl.DataFrame]] = {
            t: [] for t in ("patient", "encounter", "condition", "measurement", "medication", "procedure")
        }

    def name(self, path: Path) -> str:
        return display_name(path, self.root)

    def read(self, path: Path, table: str, role: str, required: tuple[str, ...] = ()):
        before = self.extract.rows_in
        probe = Extract.empty("mimic") if role == "lookup" else self.extract
        csv_table = read_csv_table(path, probe, table=table, required=required, name=self.name(path))
        rows = probe.rows_in - (before if probe is self.extract else 0)
        self.extract.inputs.append({"path": self.name(path), "role": role, "table": table, "rows": rows})
        return csv_table


def _lookup_frames(reader: _Reader, files: dict[str, list[Path]]) -> dict[str, pl.DataFrame]:
    out: dict[str, pl.DataFrame] = {}
    for table in LOOKUPS:
        for path in files.get(table, []):
            t = reader.read(path, table, "lookup")
            key = table.removesuffix("_used")
            out[key] = pl.concat([out[key], t.frame], how="diagonal_relaxed") if key in out else t.frame
    return out


def read_mimic(paths: str | Path | Iterable[str | Path], *, root: str | Path | None = None) -> Extract:
    """Read MIMIC-IV tables (see the module docstring for the mapping) into an :class:`Extract`.

    Args:
        paths: folders and/or files; dictionaries next to given files are found automatically.
        root: provenance names are relative to this folder when given.

    Raises:
        InputError: a path does not exist, or a mapped table lacks a column the mapping needs.
    """
    given = collect_inputs(paths)
    files: dict[str, list[Path]] = {}
    reader = _Reader(root)
    ex = reader.extract
    candidates = list(given)
    for parent in sorted({f.parent for f in given}):
        for f in sorted(parent.iterdir()):
            if f.is_file() and (table_name(f) or "") in LOOKUPS and f not in candidates:
                candidates.append(f)
    for f in candidates:
        t = table_name(f)
        if t is None:
            if f in given:
                ex.inputs.append(
                    {
                        "path": reader.name(f),
                        "role": "skipped",
                        "table": None,
                        "rows": 0,
                        "reason": "not a CSV table",
                    }
                )
            continue
        files.setdefault(t, []).append(f)

    lookups = _lookup_frames(reader, files)

    # patients first: they define the known subject_ids
    known: pl.Series | None = None
    patients_name = "patients"
    pat_frames = []
    for path in files.get("patients", []):
        name = reader.name(path)
        t = reader.read(
            path, "patients", "records", required=("subject_id", "gender", "anchor_age", "anchor_year")
        )
        f = parse_checked(
            t.frame,
            ex,
            name=name,
            table="patients",
            parse={"anchor_age": "int", "anchor_year": "int", "dod": "datetime"},
            required=("subject_id",),
        )
        f = f.with_columns(pl.col("subject_id").str.strip_chars())
        f = drop_duplicates(f, ex, name=name, table="patients", keys=["subject_id"])
        pat_frames.append((name, f))
        patients_name = name
    if pat_frames:
        known = pl.concat([f.select("subject_id") for _, f in pat_frames]).to_series().unique()

    # admissions
    adm_all: list[pl.DataFrame] = []
    for path in files.get("admissions", []):
        name = reader.name(path)
        t = reader.read(path, "admissions", "records", required=("subject_id", "hadm_id", "admittime"))
        f = parse_checked(
            t.frame,
            ex,
            name=name,
            table="admissions",
            parse={"admittime": "datetime", "dischtime": "datetime", "deathtime": "datetime"},
            required=("subject_id", "hadm_id", "admittime"),
        )
        f = f.with_columns(pl.col("subject_id").str.strip_chars(), pl.col("hadm_id").str.strip_chars())
        f = reject_unknown(
            f, ex, name=name, table="admissions", column="subject_id", known=known, known_in=patients_name
        )
        f = drop_duplicates(f, ex, name=name, table="admissions", keys=["hadm_id"])
        adm_all.append(f)
        atype = (
            pl.col("admission_type").str.strip_chars()
            if "admission_type" in f.columns
            else pl.lit(None, pl.Utf8)
        )
        reader.frames["encounter"].append(
            f.select(
                *provenance(name, pl.format("admissions:hadm_id={}", pl.col("hadm_id"))),
                pl.col("subject_id").alias("patient_id"),
                pl.col("hadm_id").alias("encounter_id"),
                pl.col("admittime").alias("start_time"),
                prec(f, "admittime").alias("start_time_precision"),
                pl.col("dischtime").alias("end_time")
                if "dischtime" in f.columns
                else pl.lit(None).alias("end_time"),
                prec(f, "dischtime").alias("end_time_precision"),
                pl.when(pl.col("dischtime").is_not_null()).then(pl.lit("finished")).alias("status")
                if "dischtime" in f.columns
                else pl.lit(None, pl.Utf8).alias("status"),
                atype.replace_strict(ADMISSION_CLASS, default=None, return_dtype=pl.Utf8).alias("class"),
                atype.alias("display"),
                atype.alias("source_value"),
            )
        )
    admissions = pl.concat(adm_all, how="diagonal_relaxed") if adm_all else None
    if admissions is not None:
        unknown_types = (
            admissions.filter(
                pl.col("admission_type").is_not_null()
                & ~pl.col("admission_type").str.strip_chars().is_in(list(ADMISSION_CLASS))
            ).height
            if "admission_type" in admissions.columns
            else 0
        )
        if unknown_types:
            ex.counters["admission_type_unmapped"] += unknown_types

    # patients -> patient (with demographics from admissions)
    for name, f in pat_frames:
        demo_cols = [
            c
            for c in ("race", "language", "marital_status")
            if admissions is not None and c in admissions.columns
        ]
        if demo_cols:
            demo = (
                admissions.sort("admittime", "hadm_id")
                .group_by("subject_id")
                .agg([pl.col(c).drop_nulls().last().alias(c) for c in demo_cols])
            )
            f = f.join(demo, on="subject_id", how="left")
        gender = pl.col("gender").str.strip_chars().str.to_uppercase()
        dod = pl.col("dod") if "dod" in f.columns else pl.lit(None, pl.Datetime("us", "UTC"))
        reader.frames["patient"].append(
            f.select(
                *provenance(name, pl.format("patients:subject_id={}", pl.col("subject_id"))),
                pl.col("subject_id").alias("patient_id"),
                gender.replace_strict(
                    {"F": "female", "M": "male"}, default="unknown", return_dtype=pl.Utf8
                ).alias("gender"),
                pl.col("anchor_age").cast(pl.Int32).alias("age"),
                pl.col("anchor_year").cast(pl.Int32).alias("age_year"),
                dod.alias("death_date"),
                prec(f, "dod").alias("death_date_precision"),
                pl.when(dod.is_not_null()).then(pl.lit(True)).alias("deceased"),
                *[pl.col(c) for c in demo_cols],
            )
        )

    adm_time = (
        admissions.select(
            "hadm_id",
            pl.col("admittime").alias("__admittime"),
            prec(admissions, "admittime").alias("__adm_prec"),
        )
        if admissions is not None
        else None
    )

    # diagnoses_icd -> condition
    d_dx = lookups.get("d_icd_diagnoses")
    for path in files.get("diagnoses_icd", []):
        name = reader.name(path)
        t = reader.read(path, "diagnoses_icd", "records", required=("subject_id", "icd_code", "icd_version"))
        f = _icd_rows(
            t.frame,
            ex,
            name=name,
            table="diagnoses_icd",
            known=known,
            known_in=patients_name,
            systems={"9": "ICD9CM", "10": "ICD10CM"},
            dictionary=d_dx,
        )
        if "seq_num" not in f.columns:
            f = f.with_columns(pl.lit(None, pl.Utf8).alias("seq_num"))
        if adm_time is not None and "hadm_id" in f.columns:
            f = f.join(adm_time, on="hadm_id", how="left")
        else:
            f = f.with_columns(
                pl.lit(None, pl.Datetime("us", "UTC")).alias("__admittime"),
                pl.lit(None, pl.Utf8).alias("__adm_prec"),
            )
        ex.counters["diagnosis_without_admission_time"] += f.filter(pl.col("__admittime").is_null()).height
        reader.frames["condition"].append(
            f.sort("_row")
            .select(
                *provenance(
                    name,
                    pl.format("diagnoses_icd:hadm_id={},seq_num={}", pl.col("hadm_id"), pl.col("seq_num")),
                ),
                pl.col("subject_id").alias("patient_id"),
                pl.format("diagnoses_icd:{}:{}", pl.col("hadm_id"), pl.col("seq_num")).alias("record_id"),
                pl.col("hadm_id").alias("encounter_id"),
                pl.col("__admittime").alias("start_time"),
                pl.col("__adm_prec").alias("start_time_precision"),
                pl.lit("encounter-diagnosis").alias("category"),
                "code",
                "code_system",
                "display",
                "source_value",
            )
            .with_columns(unique_ids())
        )

    # procedures_icd -> procedure
    d_px = lookups.get("d_icd_procedures")
    for path in files.get("procedures_icd", []):
        name = reader.name(path)
        t = reader.read(path, "procedures_icd", "records", required=("subject_id", "icd_code", "icd_version"))
        fr = parse_checked(t.frame, ex, name=name, table="procedures_icd", parse={"chartdate": "datetime"})
        f = _icd_rows(
            fr,
            ex,
            name=name,
            table="procedures_icd",
            known=known,
            known_in=patients_name,
            systems={"9": "ICD9Proc", "10": "ICD10PCS"},
            dictionary=d_px,
        )
        for c in ("seq_num", "chartdate"):
            if c not in f.columns:
                f = f.with_columns(pl.lit(None).alias(c))
        reader.frames["procedure"].append(
            f.sort("_row")
            .select(
                *provenance(
                    name,
                    pl.format("procedures_icd:hadm_id={},seq_num={}", pl.col("hadm_id"), pl.col("seq_num")),
                ),
                pl.col("subject_id").alias("patient_id"),
                pl.format("procedures_icd:{}:{}", pl.col("hadm_id"), pl.col("seq_num")).alias("record_id"),
                pl.col("hadm_id").alias("encounter_id"),
                pl.col("chartdate").alias("start_time"),
                prec(f, "chartdate").alias("start_time_precision"),
                "code",
                "code_system",
                "display",
                "source_value",
            )
            .with_columns(unique_ids())
        )

    # labevents -> measurement
    lab_loinc = load_lab_loinc()
    d_lab = lookups.get("d_labitems")
    for path in files.get("labevents", []):
        name = reader.name(path)
        t = reader.read(path, "labevents", "records", required=("subject_id", "itemid", "charttime"))
        f = parse_checked(
            t.frame,
            ex,
            name=name,
            table="labevents",
            parse={
                "charttime": "datetime",
                "valuenum": "float",
                "ref_range_lower": "float",
                "ref_range_upper": "float",
            },
            required=("subject_id", "itemid", "charttime"),
        )
        f = f.with_columns(pl.col("subject_id").str.strip_chars(), pl.col("itemid").str.strip_chars())
        f = reject_unknown(
            f, ex, name=name, table="labevents", column="subject_id", known=known, known_in=patients_name
        )
        for c in (
            "labevent_id",
            "hadm_id",
            "value",
            "valuenum",
            "valueuom",
            "ref_range_lower",
            "ref_range_upper",
            "flag",
        ):
            if c not in f.columns:
                f = f.with_columns(
                    pl.lit(
                        None,
                        pl.Float64 if c in ("valuenum", "ref_range_lower", "ref_range_upper") else pl.Utf8,
                    ).alias(c)
                )
        if d_lab is not None:
            f = f.join(
                d_lab.select(pl.col("itemid").str.strip_chars(), pl.col("label").alias("__label")).unique(
                    "itemid", keep="first"
                ),
                on="itemid",
                how="left",
            )
        else:
            f = f.with_columns(pl.lit(None, pl.Utf8).alias("__label"))
        f = f.join(lab_loinc, on="itemid", how="left")
        mapped = pl.col("__loinc").is_not_null()
        ex.counters["lab_loinc_mapped"] += f.filter(mapped).height
        rid = (
            pl.when(pl.col("labevent_id").is_not_null())
            .then(pl.format("labevents:{}", pl.col("labevent_id")))
            .otherwise(pl.format("labevents:r{}", pl.col("_row")))
        )
        reader.frames["measurement"].append(
            f.sort("_row")
            .select(
                *provenance(
                    name,
                    pl.format(
                        "labevents:labevent_id={}",
                        pl.col("labevent_id").fill_null(pl.format("r{}", pl.col("_row"))),
                    ),
                ),
                pl.col("subject_id").alias("patient_id"),
                rid.alias("record_id"),
                pl.col("hadm_id").alias("encounter_id"),
                pl.col("charttime").alias("time"),
                prec(f, "charttime").alias("time_precision"),
                pl.lit("laboratory").alias("category"),
                pl.when(mapped).then(pl.col("__loinc")).otherwise(pl.col("itemid")).alias("code"),
                pl.when(mapped).then(pl.lit("LOINC")).otherwise(pl.lit("MIMIC-LAB")).alias("code_system"),
                pl.coalesce(pl.col("__loinc_display"), pl.col("__label")).alias("display"),
                pl.col("valuenum").alias("value"),
                pl.when(pl.col("valuenum").is_null()).then(pl.col("value")).alias("value_text"),
                pl.col("itemid").alias("source_value"),
                pl.col("valueuom").alias("source_unit"),
                pl.col("ref_range_lower").alias("ref_low"),
                pl.col("ref_range_upper").alias("ref_high"),
                pl.col("flag").alias("interpretation"),
            )
            .with_columns(unique_ids())
        )

    # prescriptions -> medication
    for path in files.get("prescriptions", []):
        name = reader.name(path)
        t = reader.read(path, "prescriptions", "records", required=("subject_id", "drug"))
        f = parse_checked(
            t.frame,
            ex,
            name=name,
            table="prescriptions",
            parse={"starttime": "datetime", "stoptime": "datetime"},
            required=("subject_id",),
        )
        f = f.with_columns(pl.col("subject_id").str.strip_chars())
        f = reject_unknown(
            f, ex, name=name, table="prescriptions", column="subject_id", known=known, known_in=patients_name
        )
        for c in (
            "hadm_id",
            "pharmacy_id",
            "formulary_drug_cd",
            "ndc",
            "dose_val_rx",
            "dose_unit_rx",
            "route",
            "starttime",
            "stoptime",
        ):
            if c not in f.columns:
                f = f.with_columns(
                    pl.lit(None, pl.Datetime("us", "UTC") if c.endswith("time") else pl.Utf8).alias(c)
                )
        ndc = pl.col("ndc").str.strip_chars()
        is_ndc = ndc.str.contains(r"^\d{11}$") & (ndc != "00000000000")
        local = pl.coalesce(pl.col("formulary_drug_cd"), pl.col("drug"))
        dose = pl.col("dose_val_rx").str.strip_chars().str.replace_all(r"(\d),(\d{3})", "$1$2")
        single = dose.cast(pl.Float64, strict=False)
        lower = dose.str.extract(r"^(\d*\.?\d+)\s*-\s*\d*\.?\d+$", 1).cast(pl.Float64, strict=False)
        f = f.with_columns(pl.coalesce(single, lower).alias("__dose"), lower.is_not_null().alias("__range"))
        ex.counters["dose_range_lower_bound"] += f.filter(
            pl.col("__range") & pl.col("__dose").is_not_null()
        ).height
        ex.counters["dose_unparsed"] += f.filter(
            pl.col("dose_val_rx").is_not_null() & pl.col("__dose").is_null()
        ).height
        ex.counters["medication_ndc"] += f.filter(is_ndc).height
        reader.frames["medication"].append(
            f.sort("_row")
            .select(
                *provenance(name, pl.format("prescriptions:pharmacy_id={}", pl.col("pharmacy_id"))),
                pl.col("subject_id").alias("patient_id"),
                pl.format("prescriptions:{}:{}", pl.col("pharmacy_id"), pl.col("drug")).alias("record_id"),
                pl.col("hadm_id").alias("encounter_id"),
                pl.col("starttime").alias("start_time"),
                prec(f, "starttime").alias("start_time_precision"),
                pl.col("stoptime").alias("end_time"),
                prec(f, "stoptime").alias("end_time_precision"),
                pl.lit("prescription").alias("category"),
                pl.when(is_ndc).then(ndc).otherwise(local).alias("code"),
                pl.when(is_ndc).then(pl.lit("NDC")).otherwise(pl.lit("MIMIC-DRUG")).alias("code_system"),
                pl.col("drug").alias("display"),
                pl.col("__dose").alias("dose_value"),
                pl.col("dose_unit_rx").alias("dose_unit"),
                pl.col("route"),
                pl.when(is_ndc).then(pl.col("ndc")).otherwise(local).alias("source_value"),
            )
            .with_columns(unique_ids())
        )

    # omr -> measurement
    for path in files.get("omr", []):
        name = reader.name(path)
        t = reader.read(
            path, "omr", "records", required=("subject_id", "chartdate", "result_name", "result_value")
        )
        f = parse_checked(
            t.frame,
            ex,
            name=name,
            table="omr",
            parse={"chartdate": "datetime"},
            required=("subject_id", "chartdate", "result_name"),
        )
        f = f.with_columns(pl.col("subject_id").str.strip_chars())
        f = reject_unknown(
            f, ex, name=name, table="omr", column="subject_id", known=known, known_in=patients_name
        )
        reader.frames["measurement"].append(_omr_rows(f, ex, name=name))

    # everything else
    for table in sorted(files):
        if table in MAPPED or table in LOOKUPS:
            continue
        for path in files[table]:
            name = reader.name(path)
            if table in UNMAPPED:
                t = reader.read(path, table, "records")
                drop_all(
                    t.frame,
                    ex,
                    name=name,
                    table=table,
                    reason="unmapped_table",
                    detail=f"MIMIC-IV {table} is not mapped to a canonical table",
                )
            else:
                ex.inputs.append(
                    {
                        "path": name,
                        "role": "skipped",
                        "table": table,
                        "rows": 0,
                        "reason": "not a MIMIC-IV table this reader knows",
                    }
                )
                log.warning("%s: skipped (not a MIMIC-IV table this reader knows)", name)

    for table, frames in reader.frames.items():
        if frames:
            ex.tables[table] = concat_table(table, frames)
    log.info("mimic: %s", ex.ledger_counts())
    return ex


def _icd_rows(
    frame: pl.DataFrame,
    ex: Extract,
    *,
    name: str,
    table: str,
    known: pl.Series | None,
    known_in: str,
    systems: dict[str, str],
    dictionary: pl.DataFrame | None,
) -> pl.DataFrame:
    """Common part of diagnoses_icd / procedures_icd: checks, code system, dotted code, display."""
    f = parse_checked(frame, ex, name=name, table=table, required=("subject_id", "icd_code", "icd_version"))
    f = f.with_columns(
        pl.col("subject_id").str.strip_chars(),
        pl.col("icd_version").str.strip_chars(),
        *(
            [pl.col("hadm_id").str.strip_chars()]
            if "hadm_id" in f.columns
            else [pl.lit(None, pl.Utf8).alias("hadm_id")]
        ),
    )
    bad = f.filter(~pl.col("icd_version").is_in(list(systems)))
    if bad.height:
        ex.reject_frame(
            bad.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                pl.col("_line").alias("source_line"),
                pl.lit(table).alias("table"),
                pl.lit("bad_code").alias("reason"),
                pl.format(
                    "{} line {}: column icd_version value '{}' is not 9 or 10",
                    pl.lit(name),
                    pl.col("_line"),
                    pl.col("icd_version"),
                ).alias("error"),
            )
        )
        f = f.filter(pl.col("icd_version").is_in(list(systems)))
    f = reject_unknown(f, ex, name=name, table=table, column="subject_id", known=known, known_in=known_in)
    system = pl.col("icd_version").replace_strict(systems, return_dtype=pl.Utf8)
    f = f.with_columns(system.alias("code_system"), pl.col("icd_code").alias("source_value"))
    f = f.with_columns(dot_icd(pl.col("icd_code"), pl.col("code_system")).alias("code"))
    if dictionary is not None and {"icd_code", "icd_version", "long_title"} <= set(dictionary.columns):
        d = dictionary.select(
            pl.col("icd_code").str.strip_chars().str.to_uppercase().alias("__icd"),
            pl.col("icd_version").str.strip_chars(),
            pl.col("long_title").alias("display"),
        ).unique(["__icd", "icd_version"], keep="first")
        f = f.with_columns(pl.col("icd_code").str.strip_chars().str.to_uppercase().alias("__icd")).join(
            d, on=["__icd", "icd_version"], how="left"
        )
    else:
        f = f.with_columns(pl.lit(None, pl.Utf8).alias("display"))
    return f


def _omr_rows(f: pl.DataFrame, ex: Extract, *, name: str) -> pl.DataFrame:
    """omr rows -> measurement rows (blood pressure split in two); bad values rejected."""
    rn = pl.col("result_name").str.strip_chars()
    rv = pl.col("result_value").str.strip_chars()
    f = f.with_columns(rn.alias("__name"), rv.alias("__rv"))
    is_bp = pl.col("__name").str.starts_with("Blood Pressure")
    known_num = pl.col("__name").is_in(list(OMR_ITEMS))
    num = pl.col("__rv").cast(pl.Float64, strict=False)
    sys_ = pl.col("__rv").str.extract(BP_PATTERN, 1).cast(pl.Float64, strict=False)
    dia = pl.col("__rv").str.extract(BP_PATTERN, 2).cast(pl.Float64, strict=False)
    f = f.with_columns(num.alias("__num"), sys_.alias("__sys"), dia.alias("__dia"))
    bad_bp = is_bp & (pl.col("__sys").is_null() | pl.col("__dia").is_null())
    bad_num = known_num & pl.col("__rv").is_not_null() & pl.col("__num").is_null()
    bad = f.filter(bad_bp | bad_num)
    if bad.height:
        ex.reject_frame(
            bad.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                pl.col("_line").alias("source_line"),
                pl.lit("omr").alias("table"),
                pl.lit("bad_number").alias("reason"),
                pl.format(
                    "{} line {}: column result_value value '{}' is not {} for '{}'",
                    pl.lit(name),
                    pl.col("_line"),
                    pl.col("result_value"),
                    pl.when(is_bp).then(pl.lit("a systolic/diastolic pair")).otherwise(pl.lit("a number")),
                    pl.col("result_name"),
                ).alias("error"),
                _raw_expr(["subject_id", "result_name", "result_value"]).alias("raw"),
            )
        )
        f = f.filter(~(bad_bp | bad_num))
    seq = pl.col("seq_num") if "seq_num" in f.columns else pl.lit("")
    base_id = pl.format(
        "omr:{}:{}:{}:{}",
        pl.col("subject_id"),
        pl.col("chartdate").dt.strftime("%Y-%m-%d"),
        seq,
        pl.col("__name"),
    )
    ref = pl.format(
        "omr:subject_id={},chartdate={},seq_num={},result_name={}",
        pl.col("subject_id"),
        pl.col("chartdate").dt.strftime("%Y-%m-%d"),
        seq,
        pl.col("__name"),
    )
    common = [
        *provenance(name, ref),
        pl.col("subject_id").alias("patient_id"),
        pl.col("chartdate").alias("time"),
        prec(f, "chartdate").alias("time_precision"),
    ]
    bp = f.filter(is_bp)
    parts = []
    for (system, code, display, unit), col in ((BP_SYSTOLIC, "__sys"), (BP_DIASTOLIC, "__dia")):
        parts.append(
            bp.select(
                *common,
                pl.format("{}#{}", base_id, pl.lit(code)).alias("record_id"),
                pl.lit("vital-signs").alias("category"),
                pl.lit(code).alias("code"),
                pl.lit(system).alias("code_system"),
                pl.lit(display).alias("display"),
                pl.col(col).alias("value"),
                pl.col("result_name").alias("source_value"),
                pl.lit(unit).alias("source_unit"),
            )
        )
    other = f.filter(~is_bp)
    item = pl.col("__name")
    lookup = dict(OMR_ITEMS)

    def get(i: int) -> pl.Expr:
        return item.replace_strict({k: v[i] for k, v in lookup.items()}, default=None, return_dtype=pl.Utf8)

    mapped = item.is_in(list(lookup))
    parts.append(
        other.select(
            *common,
            base_id.alias("record_id"),
            pl.when(item.str.to_lowercase().str.contains("egfr"))
            .then(pl.lit("laboratory"))
            .otherwise(pl.lit("vital-signs"))
            .alias("category"),
            pl.when(mapped).then(get(1)).otherwise(item).alias("code"),
            pl.when(mapped).then(get(0)).otherwise(pl.lit("MIMIC-OMR")).alias("code_system"),
            pl.when(mapped).then(get(2)).otherwise(item).alias("display"),
            pl.col("__num").alias("value"),
            pl.when(pl.col("__num").is_null()).then(pl.col("result_value")).alias("value_text"),
            pl.col("result_name").alias("source_value"),
            get(3).alias("source_unit"),
        )
    )
    ex.counters["omr_blood_pressure_split"] += bp.height
    out = pl.concat(parts, how="diagonal_relaxed").sort("source_row", "record_id")
    return out.with_columns(unique_ids())
