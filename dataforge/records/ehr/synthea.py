"""Read a Synthea CSV export into the canonical EHR tables (source name ``synthea``).

Input: CSV files (``patients.csv``, ``encounters.csv.gz``...) or folders holding them (not
recursive; ``.gz``/``.zst`` compression by magic bytes). Files are read as strings with
:func:`~dataforge.records.model.read_csv_table`; parsing is vectorized Polars. Column layouts of
older and newer exporters are accepted: ``conditions``/``procedures`` with or without ``SYSTEM``,
``patients`` with or without ``MIDDLE``/``FIPS``/``INCOME``, ``procedures`` with ``DATE`` (before
Synthea 2.5) or ``START``/``STOP``, ``observations`` with or without ``CATEGORY``/``TYPE``.

Mapping (each CSV data row is one input record; ``record_id`` of tables without an ``Id`` column is
``<table>:<0-based data row>``, ``source_ref`` is ``<table>:Id=<Id>`` or ``<table>:row=<n>``):

* ``patients`` -> ``patient``: ``GENDER`` ``M``/``F`` -> ``male``/``female``; ``RACE``/``ETHNICITY``
  kept as Synthea writes them (``white``, ``black``, ``asian``, ``native``, ``hawaiian``, ``other``;
  ``hispanic``/``nonhispanic``), the FHIR reader maps the US Core OMB codes to the same words;
  ``MARITAL`` is the HL7 v3 MaritalStatus code (``M``, ``S``, ``D``, ``W``), as in FHIR; ``STATE``
  (a full name in Synthea) -> USPS code (``MA``) as FHIR ``address.state``; ``deceased`` is true
  when ``DEATHDATE`` is set, null otherwise (the CSV never says "alive"); ``given`` is ``FIRST``
  plus ``MIDDLE`` when the exporter writes it; ``name`` is ``given`` + ``LAST``. PHI columns are
  read as they are (de-identification comes later).
* ``encounters`` -> ``encounter``: ``ENCOUNTERCLASS`` is kept (``ambulatory``, ``wellness``,
  ``outpatient``, ``urgentcare``, ``emergency``, ``inpatient``...). Synthea's FHIR exporter maps
  several of these to one v3 ActCode (wellness/outpatient/urgentcare/ambulatory -> ``AMB``), so FHIR
  input can only say ``ambulatory`` where the CSV is more precise. ``CODE`` and ``REASONCODE`` are
  SNOMED CT. ``status`` is null (not in the CSV).
* ``conditions`` -> ``condition``: ``START``/``STOP`` are dates (midnight UTC); ``SYSTEM`` when
  present, else SNOMED.
* times: Synthea writes UTC (``...Z``); a timestamp with another offset becomes UTC, and keeps the
  date it was written with in ``<col>_local`` (its year is the canonical year). Precision ``day``
  for a date, ``time`` for a timestamp.
* ``observations`` -> ``measurement``: Synthea writes one CSV row per component of a multi-component
  observation (blood pressure, PRAPARE) and no row for the panel itself, which is what the FHIR
  reader produces from ``Observation.component``. ``TYPE == numeric`` -> ``value`` (float; the CSV
  rounds to one decimal), and so does a ``text`` VALUE that is a plain number with ``UNITS`` (Synthea
  types Integer values as text, e.g. household income ``191395`` ``/a``); other values ->
  ``value_text``. ``VALUE`` is kept in ``source_value``;
  ``UNITS`` (UCUM in Synthea) -> ``source_unit`` and ``source_unit_ucum``. LOINC-shaped codes are
  ``LOINC``; the patient-level quality-of-life scores (``QALY``, ``DALY``, ``QOLS``, no encounter,
  Synthea's own "GBD" codes) are ``local``.
* ``medications`` -> ``medication`` (``category = prescription``, RxNorm); ``status`` follows
  Synthea's FHIR exporter: ``stopped`` when ``STOP`` is set, else ``active``.
* ``immunizations`` -> ``medication`` (``category = immunization``, CVX, ``status = completed``:
  the file lists administered vaccines only).
* ``procedures`` -> ``procedure`` (``SYSTEM`` or SNOMED; ``REASONCODE`` SNOMED).
* Known tables that are not mapped (claims, claims_transactions, payers, payer_transitions,
  organizations, providers, careplans, devices, supplies, imaging_studies, allergies,
  patient_expenses): every row is dropped with reason ``unmapped_table``.
* A CSV whose name is not a Synthea table is skipped (``role = skipped`` in ``inputs``, a warning
  in the log) so that a newer exporter's extra file does not stop the run; its rows are not records.

A column the mapping reads but does not require (``DESCRIPTION``, ``STOP``, ``ENCOUNTER``...,
:data:`EXPECTED_COLUMNS`) may be absent: the file is read with that canonical column null, and the
run says so (a warning naming the file and the columns, counter
``missing_column:<table>:<COLUMN>`` with the rows affected, ``missing_columns`` in the file's
``inputs`` entry).

Rejects (each error names the file, the line, the column and the value): ``missing_value`` (an
empty ``Id``/``PATIENT``/``CODE``/start date), ``bad_date``, ``bad_number``, ``duplicate_id``,
``unknown_patient`` (``PATIENT`` not among the accepted ``patients.csv`` rows), and
``unknown_encounter`` (``ENCOUNTER`` not among the accepted ``encounters.csv`` rows, checked when
``encounters.csv`` is an input). ``patients.csv`` is required: without it no row can be checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from dataforge.errors import InputError
from dataforge.records.ehr.columns import SYSTEM_URIS, TS, conform_raw, empty_raw, local_date_of, precision_of
from dataforge.records.model import Extract, display_name, read_csv_table

log = logging.getLogger(__name__)

MAPPED_TABLES = (
    "patients",
    "encounters",
    "conditions",
    "observations",
    "medications",
    "immunizations",
    "procedures",
)
UNMAPPED_TABLES = (
    "allergies",
    "careplans",
    "claims",
    "claims_transactions",
    "devices",
    "imaging_studies",
    "organizations",
    "patient_expenses",
    "payer_transitions",
    "payers",
    "providers",
    "supplies",
)
KNOWN_TABLES = MAPPED_TABLES + UNMAPPED_TABLES

# Synthea's code-system names (``SYSTEM`` columns), upper-cased -> canonical names
SYNTHEA_SYSTEMS = {
    "SNOMED-CT": "SNOMED",
    "SNOMED": "SNOMED",
    "SNOMEDCT": "SNOMED",
    "SCT": "SNOMED",
    "LOINC": "LOINC",
    "RXNORM": "RxNorm",
    "CVX": "CVX",
    "NDC": "NDC",
    "ICD-9-CM": "ICD9CM",
    "ICD9CM": "ICD9CM",
    "ICD-10-CM": "ICD10CM",
    "ICD10CM": "ICD10CM",
    "ICD-10": "ICD10CM",
    "ICD-10-PCS": "ICD10PCS",
    "CPT": "CPT4",
    "CPT4": "CPT4",
    "HCPCS": "HCPCS",
    **{uri.upper(): name for uri, name in SYSTEM_URIS.items()},
}

US_STATE_CODES = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "district of columbia": "DC",
    "florida": "FL", "georgia": "GA", "hawaii": "HI", "idaho": "ID", "illinois": "IL",
    "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY", "louisiana": "LA",
    "maine": "ME", "maryland": "MD", "massachusetts": "MA", "michigan": "MI", "minnesota": "MN",
    "mississippi": "MS", "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV",
    "new hampshire": "NH", "new jersey": "NJ", "new mexico": "NM", "new york": "NY",
    "north carolina": "NC", "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR",
    "pennsylvania": "PA", "rhode island": "RI", "south carolina": "SC", "south dakota": "SD",
    "tennessee": "TN", "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA",
    "washington": "WA", "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY",
    "puerto rico": "PR", "guam": "GU", "american samoa": "AS", "u.s. virgin islands": "VI",
    "northern mariana islands": "MP",
}  # fmt: skip

# Columns every Synthea exporter writes that the mapping reads but does not require: a file without
# one is still read (the canonical column is null in every row), with a warning, a counter
# ``missing_column:<table>:<COLUMN>`` (rows affected) and ``missing_columns`` on its ``inputs`` entry.
EXPECTED_COLUMNS = {
    "patients": ("DEATHDATE", "FIRST", "LAST", "MARITAL", "RACE", "ETHNICITY", "GENDER", "STATE", "ZIP"),
    "encounters": ("STOP", "ENCOUNTERCLASS", "CODE", "DESCRIPTION", "REASONCODE", "REASONDESCRIPTION"),
    "conditions": ("STOP", "ENCOUNTER", "DESCRIPTION"),
    "observations": ("ENCOUNTER", "DESCRIPTION", "UNITS"),
    "medications": ("STOP", "ENCOUNTER", "DESCRIPTION"),
    "immunizations": ("ENCOUNTER", "DESCRIPTION"),
    "procedures": ("ENCOUNTER", "DESCRIPTION", "REASONCODE"),
}
GENDERS = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
LOINC_CODE = r"^\d{1,7}-\d$"
NUMBER = r"^[+-]?\d+(\.\d+)?$"
_SUFFIXES = (".gz", ".zst", ".zstd")
_DATE_HINT = "expected YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ"


def read_synthea(paths: Sequence[str | Path], *, root: str | Path | None = None) -> Extract:
    """Read Synthea CSV files (or folders of them) into canonical EHR tables.

    Args:
        paths: CSV files and/or folders holding them.
        root: names in provenance (``source_file``) are relative to this folder when given.

    Returns:
        An :class:`Extract` with tables ``patient``, ``encounter``, ``condition``,
        ``measurement``, ``medication``, ``procedure`` (those the inputs feed).

    Raises:
        InputError: a path does not exist, no CSV file is found, a table appears twice,
            ``patients.csv`` is missing, or a file lacks a required column.
    """
    files, skipped = _collect(paths)
    extract = Extract.empty("synthea")
    for path in skipped:
        name = display_name(path, root)
        log.warning(
            "synthea: skipping %s: not a Synthea table name (known: %s)", name, ", ".join(KNOWN_TABLES)
        )
        extract.inputs.append(
            {
                "path": name,
                "role": "skipped",
                "table": None,
                "rows": 0,
                "reason": f"not a Synthea table name (known: {', '.join(KNOWN_TABLES)})",
            }
        )
    if "patients" not in files:
        msg = (
            f"synthea: no patients.csv among the inputs ({', '.join(str(p) for p in paths)}); "
            "it is needed to check every row's PATIENT"
        )
        raise InputError(msg)
    reader = _Reader(extract, root)
    out: dict[str, list[pl.DataFrame]] = {}
    for table in MAPPED_TABLES:
        if table in files:
            canon, frame = reader.read(table, files[table])
            out.setdefault(canon, []).append(frame)
    for table in sorted(t for t in files if t not in MAPPED_TABLES):
        reader.drop_all(table, files[table])
    extract.tables = {
        t: (pl.concat(frames, how="vertical") if frames else empty_raw(t)) for t, frames in out.items()
    }
    return extract


# --------------------------------------------------------------------------- inputs


def table_name(path: str | Path) -> str:
    """``observations`` for ``.../observations.csv.gz``; '' when the name is not ``*.csv[.gz|.zst]``."""
    name = Path(path).name.lower()
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name[:-4] if name.endswith(".csv") else ""


def _collect(paths: Sequence[str | Path]) -> tuple[dict[str, Path], list[Path]]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    candidates: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and table_name(f))
            if not found:
                msg = f"synthea: no *.csv[.gz|.zst] files in folder {path}"
                raise InputError(msg)
            candidates.extend(found)
        elif path.is_file():
            candidates.append(path)
        else:
            msg = f"synthea: input {path} does not exist"
            raise InputError(msg)
    if not candidates:
        msg = "synthea: no input files given"
        raise InputError(msg)
    files: dict[str, Path] = {}
    skipped: list[Path] = []
    for path in candidates:
        table = table_name(path)
        if table not in KNOWN_TABLES:
            skipped.append(path)
            continue
        if table in files and files[table].resolve() != path.resolve():
            msg = f"synthea: table {table!r} given twice: {files[table]} and {path}"
            raise InputError(msg)
        files[table] = path
    return files, skipped


# --------------------------------------------------------------------------- expressions


def _ts(col: str) -> pl.Expr:
    """A Synthea timestamp (``2014-05-06T08:34:30Z``, with optional fraction or offset) or date
    (``2014-05-06``, midnight UTC) as UTC; null when it does not parse."""
    s = pl.col(col).str.strip_chars()
    naive = pl.Datetime("us")
    return pl.coalesce(
        s.str.strptime(naive, "%Y-%m-%dT%H:%M:%S%.fZ", strict=False).dt.replace_time_zone("UTC"),
        s.str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%S%.f%z", strict=False),
        s.str.strptime(pl.Date, "%Y-%m-%d", strict=False).cast(naive).dt.replace_time_zone("UTC"),
    )


def _times(col: str, target: str, frame: pl.DataFrame) -> list[pl.Expr]:
    """``target`` (UTC), ``<target>_local`` (the date as written) and ``<target>_precision`` from
    Synthea column ``col``; nothing when the file has no such column (the raw columns are then null)."""
    if col not in frame.columns:
        return []
    return [
        _ts(col).alias(target),
        local_date_of(pl.col(col)).alias(f"{target}_local"),
        precision_of(pl.col(col)).alias(f"{target}_precision"),
    ]


def _float(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().cast(pl.Float64, strict=False)


def _system(col: str | None, default: str) -> pl.Expr:
    """Canonical code system from a Synthea ``SYSTEM`` column (or ``default`` when absent/empty)."""
    if col is None:
        return pl.lit(default)
    upper = pl.col(col).str.strip_chars().str.to_uppercase()
    return (
        pl.when(pl.col(col).is_null())
        .then(pl.lit(default))
        .otherwise(upper.replace_strict(SYNTHEA_SYSTEMS, default="local"))
    )


# --------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, extract: Extract, root: str | Path | None) -> None:
        self.extract = extract
        self.root = root
        self.patients: pl.Series | None = None
        self.encounters: pl.Series | None = None

    # -- helpers -------------------------------------------------------------------------------

    def _load(self, table: str, path: Path, required: tuple[str, ...]) -> tuple[str, pl.DataFrame, list[str]]:
        name = display_name(path, self.root)
        before = self.extract.rows_in
        csv = read_csv_table(path, self.extract, table=table, required=required, name=name)
        rows = self.extract.rows_in - before
        entry: dict[str, object] = {"path": name, "role": "records", "table": table, "rows": rows}
        missing = [c for c in EXPECTED_COLUMNS.get(table, ()) if c not in csv.header]
        if missing:
            log.warning(
                "synthea: %s has no column %s: read with %s empty in all %d row(s)",
                name, ", ".join(missing), "it" if len(missing) == 1 else "them", rows,
            )  # fmt: skip
            entry["missing_columns"] = missing
            for c in missing:
                self.extract.counters[f"missing_column:{table}:{c}"] += rows
        self.extract.inputs.append(entry)
        frame = csv.frame.with_columns(
            pl.concat_str([pl.col(c).fill_null("") for c in csv.frame.columns if not c.startswith("_")],
                          separator=",").alias("_raw")
        )  # fmt: skip
        return name, frame, csv.header

    def _reject(self, frame: pl.DataFrame, mask: pl.Expr, *, name: str, table: str, reason: str,
                error: pl.Expr) -> pl.DataFrame:  # fmt: skip
        """Move the rows where ``mask`` holds into the rejects; return the others."""
        mask = mask.fill_null(False)
        bad = frame.filter(mask)
        if bad.height:
            self.extract.reject_frame(
                bad.select(
                    pl.lit(name).alias("source_file"),
                    pl.col("_row").alias("source_row"),
                    pl.col("_line").alias("source_line"),
                    pl.lit(table).alias("table"),
                    pl.lit(reason).alias("reason"),
                    error.alias("error"),
                    pl.col("_raw").cast(pl.Binary).alias("raw"),
                )
            )
            self.extract.counters[f"rejected:{table}:{reason}"] += bad.height
        return frame.filter(~mask)

    def _where(self, name: str, col: str) -> pl.Expr:
        return pl.format("{} line {}: {}", pl.lit(name), pl.col("_line"), pl.lit(col))

    def _check_present(self, frame: pl.DataFrame, name: str, table: str, cols: Sequence[str]) -> pl.DataFrame:
        for col in cols:
            frame = self._reject(
                frame, pl.col(col).is_null(), name=name, table=table, reason="missing_value",
                error=pl.format("{} is empty", self._where(name, col)),
            )  # fmt: skip
        return frame

    def _check_dates(self, frame: pl.DataFrame, name: str, table: str, cols: Sequence[str]) -> pl.DataFrame:
        for col in cols:
            frame = self._reject(
                frame, pl.col(col).is_not_null() & _ts(col).is_null(), name=name, table=table,
                reason="bad_date",
                error=pl.format("{} '{}' is not a date ({})", self._where(name, col), pl.col(col),
                                pl.lit(_DATE_HINT)),
            )  # fmt: skip
        return frame

    def _check_numbers(self, frame: pl.DataFrame, name: str, table: str, cols: Sequence[str],
                       when: pl.Expr | None = None) -> pl.DataFrame:  # fmt: skip
        for col in cols:
            bad = pl.col(col).is_not_null() & _float(col).is_null()
            if when is not None:
                bad = bad & when
            frame = self._reject(
                frame, bad, name=name, table=table, reason="bad_number",
                error=pl.format("{} '{}' is not a number", self._where(name, col), pl.col(col)),
            )  # fmt: skip
        return frame

    def _check_refs(self, frame: pl.DataFrame, name: str, table: str) -> pl.DataFrame:
        assert self.patients is not None
        frame = self._reject(
            frame, ~pl.col("PATIENT").is_in(self.patients.implode()), name=name, table=table,
            reason="unknown_patient",
            error=pl.format("{} '{}' is not a patient in patients.csv", self._where(name, "PATIENT"),
                            pl.col("PATIENT")),
        )  # fmt: skip
        if self.encounters is not None and "ENCOUNTER" in frame.columns:
            frame = self._reject(
                frame,
                pl.col("ENCOUNTER").is_not_null() & ~pl.col("ENCOUNTER").is_in(self.encounters.implode()),
                name=name, table=table, reason="unknown_encounter",
                error=pl.format("{} '{}' is not an encounter in encounters.csv",
                                self._where(name, "ENCOUNTER"), pl.col("ENCOUNTER")),
            )  # fmt: skip
        return frame

    def _check_unique(self, frame: pl.DataFrame, name: str, table: str, col: str) -> pl.DataFrame:
        return self._reject(
            frame, pl.col(col).is_duplicated() & ~pl.col(col).is_first_distinct(), name=name, table=table,
            reason="duplicate_id",
            error=pl.format("{} '{}' repeats an earlier row", self._where(name, col), pl.col(col)),
        )  # fmt: skip

    @staticmethod
    def _prov(name: str, table: str, key: str | None = None) -> list[pl.Expr]:
        ref = (
            pl.format(f"{table}:{key}={{}}", pl.col(key))
            if key
            else pl.format(f"{table}:row={{}}", pl.col("_row"))
        )
        return [
            pl.lit(name).alias("source_file"),
            pl.col("_row").alias("source_row"),
            ref.alias("source_ref"),
        ]

    @staticmethod
    def _opt(frame: pl.DataFrame, col: str) -> pl.Expr:
        return pl.col(col) if col in frame.columns else pl.lit(None, dtype=pl.Utf8)

    # -- tables --------------------------------------------------------------------------------

    def read(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        return getattr(self, f"_{table}")(table, path)

    def drop_all(self, table: str, path: Path) -> None:
        name, frame, _ = self._load(table, path, ())
        if frame.height:
            self.extract.drop_frame(
                frame.select(
                    pl.lit(name).alias("source_file"),
                    pl.col("_row").alias("source_row"),
                    pl.lit(table).alias("table"),
                    pl.lit("unmapped_table").alias("reason"),
                    pl.lit(f"Synthea {table}.csv has no canonical EHR table").alias("detail"),
                )
            )
        self.extract.counters[f"dropped:{table}:unmapped_table"] += frame.height

    def _patients(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, _ = self._load(table, path, ("Id", "BIRTHDATE"))
        f = self._check_present(f, name, table, ["Id", "BIRTHDATE"])
        f = self._check_unique(f, name, table, "Id")
        f = self._check_dates(
            f, name, table, ["BIRTHDATE", *(["DEATHDATE"] if "DEATHDATE" in f.columns else [])]
        )
        f = self._check_numbers(f, name, table, [c for c in ("LAT", "LON") if c in f.columns])
        opt = lambda c: self._opt(f, c)  # noqa: E731
        given = pl.concat_str([opt("FIRST"), opt("MIDDLE")], separator=" ", ignore_nulls=True)
        given = pl.when(given == "").then(None).otherwise(given)
        full = pl.concat_str([given, opt("LAST")], separator=" ", ignore_nulls=True)
        state = opt("STATE")
        death = _ts("DEATHDATE") if "DEATHDATE" in f.columns else pl.lit(None, dtype=TS)
        out = f.select(
            *self._prov(name, table, "Id"),
            pl.col("Id").alias("patient_id"),
            opt("GENDER").str.to_uppercase().replace_strict(GENDERS, default=opt("GENDER").str.to_lowercase())
            .alias("gender"),
            *_times("BIRTHDATE", "birth_date", f),
            *_times("DEATHDATE", "death_date", f),
            pl.when(death.is_not_null()).then(True).otherwise(None).alias("deceased"),
            opt("RACE").str.to_lowercase().alias("race"),
            opt("ETHNICITY").str.to_lowercase().alias("ethnicity"),
            opt("MARITAL").alias("marital_status"),
            state.str.to_lowercase().replace_strict(US_STATE_CODES, default=state).alias("state"),
            opt("ZIP").alias("zip"),
            pl.when(full == "").then(None).otherwise(full).alias("name"),
            given.alias("given"),
            opt("LAST").alias("family"),
            opt("MAIDEN").alias("maiden"),
            opt("PREFIX").alias("prefix"),
            opt("SUFFIX").alias("suffix"),
            opt("ADDRESS").alias("address"),
            opt("CITY").alias("city"),
            opt("COUNTY").alias("county"),
            opt("BIRTHPLACE").alias("birthplace"),
            opt("SSN").alias("ssn"),
            opt("DRIVERS").alias("drivers"),
            opt("PASSPORT").alias("passport"),
            (_float("LAT") if "LAT" in f.columns else pl.lit(None, dtype=pl.Float64)).alias("lat"),
            (_float("LON") if "LON" in f.columns else pl.lit(None, dtype=pl.Float64)).alias("lon"),
        )  # fmt: skip
        self.patients = out["patient_id"]
        return "patient", conform_raw("patient", out)

    def _encounters(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, _ = self._load(table, path, ("Id", "START", "PATIENT"))
        f = self._check_present(f, name, table, ["Id", "START", "PATIENT"])
        f = self._check_unique(f, name, table, "Id")
        f = self._check_dates(f, name, table, [c for c in ("START", "STOP") if c in f.columns])
        f = self._check_refs(f, name, table)
        opt = lambda c: self._opt(f, c)  # noqa: E731
        out = f.select(
            *self._prov(name, table, "Id"),
            pl.col("PATIENT").alias("patient_id"),
            pl.col("Id").alias("encounter_id"),
            *_times("START", "start_time", f),
            *_times("STOP", "end_time", f),
            opt("ENCOUNTERCLASS").str.to_lowercase().alias("class"),
            opt("CODE").alias("code"),
            pl.when(opt("CODE").is_not_null()).then(pl.lit("SNOMED")).alias("code_system"),
            opt("DESCRIPTION").alias("display"),
            opt("REASONCODE").alias("reason_code"),
            pl.when(opt("REASONCODE").is_not_null()).then(pl.lit("SNOMED")).alias("reason_system"),
            opt("REASONDESCRIPTION").alias("reason_display"),
            opt("CODE").alias("source_value"),
        )  # fmt: skip
        self.encounters = out["encounter_id"]
        return "encounter", conform_raw("encounter", out)

    def _conditions(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, _ = self._load(table, path, ("START", "PATIENT", "CODE"))
        f = self._check_present(f, name, table, ["START", "PATIENT", "CODE"])
        f = self._check_dates(f, name, table, [c for c in ("START", "STOP") if c in f.columns])
        f = self._check_refs(f, name, table)
        opt = lambda c: self._opt(f, c)  # noqa: E731
        out = f.select(
            *self._prov(name, table),
            pl.col("PATIENT").alias("patient_id"),
            pl.format(f"{table}:{{}}", pl.col("_row")).alias("record_id"),
            opt("ENCOUNTER").alias("encounter_id"),
            *_times("START", "start_time", f),
            *_times("STOP", "end_time", f),
            pl.col("CODE").alias("code"),
            _system("SYSTEM" if "SYSTEM" in f.columns else None, "SNOMED").alias("code_system"),
            opt("DESCRIPTION").alias("display"),
            pl.col("CODE").alias("source_value"),
        )  # fmt: skip
        return "condition", conform_raw("condition", out)

    def _observations(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, _ = self._load(table, path, ("DATE", "PATIENT", "CODE", "VALUE"))
        f = self._check_present(f, name, table, ["DATE", "PATIENT", "CODE"])
        f = self._check_dates(f, name, table, ["DATE"])
        if "TYPE" in f.columns:
            typed = pl.col("TYPE").str.to_lowercase() == "numeric"
            f = self._check_numbers(f, name, table, ["VALUE"], when=typed)
            # Synthea types Integer values (e.g. LOINC 63586-2 household income, unit /a) as "text"
            quantity = pl.col("UNITS").is_not_null() if "UNITS" in f.columns else pl.lit(False)
            integer_text = ~typed & quantity & pl.col("VALUE").str.contains(NUMBER)
            self.extract.counters["synthea_number_typed_text"] += f.filter(
                integer_text.fill_null(False)
            ).height
            numeric = typed | integer_text
        else:  # older exporters: no TYPE column; a VALUE that parses as a number is numeric
            numeric = _float("VALUE").is_not_null()
        f = self._check_refs(f, name, table)
        f = f.with_columns(numeric.fill_null(False).alias("_numeric"))
        opt = lambda c: self._opt(f, c)  # noqa: E731
        out = f.select(
            *self._prov(name, table),
            pl.col("PATIENT").alias("patient_id"),
            pl.format(f"{table}:{{}}", pl.col("_row")).alias("record_id"),
            opt("ENCOUNTER").alias("encounter_id"),
            *_times("DATE", "time", f),
            opt("CATEGORY").alias("category"),
            pl.col("CODE").alias("code"),
            pl.when(pl.col("CODE").str.contains(LOINC_CODE)).then(pl.lit("LOINC")).otherwise(pl.lit("local"))
            .alias("code_system"),
            opt("DESCRIPTION").alias("display"),
            pl.when(pl.col("_numeric")).then(_float("VALUE")).alias("value"),
            pl.when(~pl.col("_numeric")).then(pl.col("VALUE")).alias("value_text"),
            pl.col("VALUE").alias("source_value"),
            opt("UNITS").alias("source_unit"),
            opt("UNITS").alias("source_unit_ucum"),
        )  # fmt: skip
        return "measurement", conform_raw("measurement", out)

    def _medications(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, _ = self._load(table, path, ("START", "PATIENT", "CODE"))
        f = self._check_present(f, name, table, ["START", "PATIENT", "CODE"])
        f = self._check_dates(f, name, table, [c for c in ("START", "STOP") if c in f.columns])
        f = self._check_refs(f, name, table)
        opt = lambda c: self._opt(f, c)  # noqa: E731
        stop = _ts("STOP") if "STOP" in f.columns else pl.lit(None, dtype=TS)
        out = f.select(
            *self._prov(name, table),
            pl.col("PATIENT").alias("patient_id"),
            pl.format(f"{table}:{{}}", pl.col("_row")).alias("record_id"),
            opt("ENCOUNTER").alias("encounter_id"),
            *_times("START", "start_time", f),
            *_times("STOP", "end_time", f),
            pl.lit("prescription").alias("category"),
            pl.when(stop.is_not_null()).then(pl.lit("stopped")).otherwise(pl.lit("active")).alias("status"),
            pl.col("CODE").alias("code"),
            _system("SYSTEM" if "SYSTEM" in f.columns else None, "RxNorm").alias("code_system"),
            opt("DESCRIPTION").alias("display"),
            pl.col("CODE").alias("source_value"),
        )  # fmt: skip
        return "medication", conform_raw("medication", out)

    def _immunizations(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, _ = self._load(table, path, ("DATE", "PATIENT", "CODE"))
        f = self._check_present(f, name, table, ["DATE", "PATIENT", "CODE"])
        f = self._check_dates(f, name, table, ["DATE"])
        f = self._check_refs(f, name, table)
        opt = lambda c: self._opt(f, c)  # noqa: E731
        out = f.select(
            *self._prov(name, table),
            pl.col("PATIENT").alias("patient_id"),
            pl.format(f"{table}:{{}}", pl.col("_row")).alias("record_id"),
            opt("ENCOUNTER").alias("encounter_id"),
            *_times("DATE", "start_time", f),
            pl.lit("immunization").alias("category"),
            pl.lit("completed").alias("status"),
            pl.col("CODE").alias("code"),
            _system("SYSTEM" if "SYSTEM" in f.columns else None, "CVX").alias("code_system"),
            opt("DESCRIPTION").alias("display"),
            pl.col("CODE").alias("source_value"),
        )  # fmt: skip
        return "medication", conform_raw("medication", out)

    def _procedures(self, table: str, path: Path) -> tuple[str, pl.DataFrame]:
        name, f, header = self._load(table, path, ("PATIENT", "CODE"))
        start = "START" if "START" in header else "DATE"
        if start not in header:
            msg = f"{name}: missing column 'START' (or 'DATE' of older exporters); the header has {header}"
            raise InputError(msg)
        f = self._check_present(f, name, table, [start, "PATIENT", "CODE"])
        f = self._check_dates(f, name, table, [c for c in (start, "STOP") if c in f.columns])
        f = self._check_refs(f, name, table)
        opt = lambda c: self._opt(f, c)  # noqa: E731
        out = f.select(
            *self._prov(name, table),
            pl.col("PATIENT").alias("patient_id"),
            pl.format(f"{table}:{{}}", pl.col("_row")).alias("record_id"),
            opt("ENCOUNTER").alias("encounter_id"),
            *_times(start, "start_time", f),
            *_times("STOP", "end_time", f),
            pl.col("CODE").alias("code"),
            _system("SYSTEM" if "SYSTEM" in f.columns else None, "SNOMED").alias("code_system"),
            opt("DESCRIPTION").alias("display"),
            opt("REASONCODE").alias("reason_code"),
            pl.when(opt("REASONCODE").is_not_null()).then(pl.lit("SNOMED")).alias("reason_system"),
            pl.col("CODE").alias("source_value"),
        )  # fmt: skip
        return "procedure", conform_raw("procedure", out)
