"""The FHIR and Synthea CSV readers agree on the same Synthea run.

``sample_data/ehr/synthea_fhir`` holds 3 patients' FHIR Bundles and ``sample_data/ehr/synthea_csv``
the CSV export of the same run (11 patients, same UUIDs). Restricted to those 3 patients, every
canonical table must hold the same facts. Each difference below is a documented property of the
two Synthea exporters, applied with a precise rule, never a general loosening:

* ``clean``: the CSV exporter replaces commas and line breaks in free text by spaces
  (``CSVExporter.clean``), so FHIR displays are compared after the same replacement.
* ``round1``: the CSV exporter writes numeric observation values with ``String.format("%.1f")``
  (``ExportHelper.getObservationValue``, Java rounds half up), FHIR keeps the full value.
* Encounter class: the FHIR exporter writes v3 ActCode ``AMB`` for Synthea's ambulatory, wellness,
  outpatient and urgentcare encounters; the CSV keeps the Synthea class.
* Dates: conditions (and patients' birth/death) are dates in the CSV, full timestamps in FHIR.
* Rows in one export only: the CSV's patient-level QALY/DALY/QOLS observations (no encounter, not
  exported to FHIR); FHIR MedicationAdministration (its CSV counterpart is the prescription row);
  FHIR DocumentReference notes (no CSV table).
* ``source_value`` of coded observation values: FHIR has the code, the CSV only the display.
* Columns in one export only are asserted null on the other side (so a reader that starts filling
  them makes this test fail and the comparison must be extended).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections import Counter
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import polars as pl
import pytest

from dataforge.records.ehr.fhir import read_fhir
from dataforge.records.ehr.synthea import read_synthea

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "ehr"
FHIR_DIR = SAMPLE / "synthea_fhir"
CSV_DIR = SAMPLE / "synthea_csv"

QOL_CODES = ("QALY", "DALY", "QOLS")
# Synthea EncounterType -> the class the FHIR reader produces from Synthea's v3 ActCode
FHIR_CLASS_OF_SYNTHEA = {
    "ambulatory": "ambulatory",
    "wellness": "ambulatory",
    "outpatient": "ambulatory",
    "urgentcare": "ambulatory",
    "emergency": "emergency",
    "inpatient": "inpatient",
}


def clean(text: str | None) -> str | None:
    """Synthea ``CSVExporter.clean``: commas and line breaks -> a space, then trim."""
    if text is None:
        return None
    return re.sub(r"\r\n|\r|\n|,", " ", text).strip()


def round1(raw: str | None) -> float | None:
    """A FHIR decimal as Synthea's CSV writes it (one decimal, half up)."""
    if raw is None:
        return None
    return float(Decimal(raw).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def same_number(fhir_raw: str, csv_value: float, csv_written: str) -> bool:
    """Can one true value produce both exports' numbers?

    Synthea's FHIR exporter writes ``new BigDecimal(v, new MathContext(5, HALF_UP))`` (5 significant
    digits, ``FhirR4.mapValueToFHIRType``); its CSV writes doubles with ``%.1f`` and integers
    exactly (``ExportHelper.getObservationValue``). The intervals of true values behind each must
    overlap.
    """
    f = Decimal(fhir_raw)
    half5 = Decimal(1).scaleb(f.adjusted() - 4) / 2 if f else Decimal(0)
    c = Decimal(csv_written)
    half_csv = Decimal("0.05") if "." in csv_written else Decimal(0)
    assert float(c) == csv_value
    return max(f - half5, c - half_csv) <= min(f + half5, c + half_csv)


def bundle_resources() -> list[dict]:
    out = []
    for path in sorted(FHIR_DIR.glob("*.json.gz")):
        out.extend(e["resource"] for e in json.loads(gzip.decompress(path.read_bytes()))["entry"])
    return out


def csv_rows(table: str) -> list[dict]:
    text = gzip.decompress((CSV_DIR / f"{table}.csv.gz").read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def resources() -> list[dict]:
    return bundle_resources()


@pytest.fixture(scope="module")
def patient_ids(resources) -> list[str]:
    return sorted(r["id"] for r in resources if r["resourceType"] == "Patient")


@pytest.fixture(scope="module")
def fhir():
    return read_fhir([FHIR_DIR], root=SAMPLE)


@pytest.fixture(scope="module")
def synthea(patient_ids):
    ex = read_synthea([CSV_DIR], root=SAMPLE)
    tables = {t: f.filter(pl.col("patient_id").is_in(patient_ids)) for t, f in ex.tables.items()}
    return ex, tables


def assert_same_rows(fhir_rows: list[tuple], csv_rows_: list[tuple], what: str) -> None:
    left, right = Counter(fhir_rows), Counter(csv_rows_)
    only_fhir = left - right
    only_csv = right - left
    assert not only_fhir and not only_csv, (
        f"{what}: {sum(only_fhir.values())} rows only from FHIR, {sum(only_csv.values())} only from CSV\n"
        f"FHIR only (first 5): {list(only_fhir)[:5]}\nCSV only (first 5): {list(only_csv)[:5]}"
    )
    assert len(fhir_rows) == len(csv_rows_)


def assert_null(frame: pl.DataFrame, columns: list[str], what: str) -> None:
    for c in columns:
        assert frame[c].null_count() == frame.height, f"{what}.{c} is expected to be null everywhere"


# --------------------------------------------------------------------------- sanity of the fixture


def test_the_three_fhir_patients_are_in_the_csv(patient_ids, synthea):
    assert len(patient_ids) == 3
    assert sorted(synthea[1]["patient"]["patient_id"].to_list()) == patient_ids


# --------------------------------------------------------------------------- per table


def test_patient_agrees(fhir, synthea):
    f = fhir.tables["patient"].sort("patient_id")
    c = synthea[1]["patient"].sort("patient_id")
    assert f["patient_id"].to_list() == c["patient_id"].to_list()
    exact = [
        "gender", "birth_date", "death_date", "deceased", "race", "ethnicity", "state", "zip",
        "family", "prefix", "suffix", "maiden", "address", "city", "ssn", "drivers", "passport",
        "lat", "lon",
    ]  # fmt: skip
    for col in exact:
        assert f[col].to_list() == c[col].to_list(), col
    # this CSV has no MIDDLE column: FHIR's given names hold first and middle name
    assert "MIDDLE" not in csv_rows("patients")[0]
    assert [g.split(" ")[0] for g in f["given"]] == c["given"].to_list()
    assert [n.split(" ")[0] + " " + fam for n, fam in zip(f["name"], f["family"])] == c["name"].to_list()
    assert [clean(b) for b in f["birthplace"]] == c["birthplace"].to_list()
    # Synthea's FHIR exporter writes maritalStatus S ("Never Married") when the person has none
    for fm, cm in zip(f["marital_status"], c["marital_status"]):
        assert fm == (cm if cm is not None else "S")
    assert_null(c, ["language", "country", "mrn", "phone", "email"], "csv patient")
    assert f["language"].to_list() == ["en-US"] * 3
    assert f["mrn"].to_list() == f["patient_id"].to_list()  # Synthea's MRN is the patient UUID
    assert f["phone"].null_count() == 0
    assert_null(f, ["county", "email"], "fhir patient")
    assert c["county"].null_count() == 0


def test_encounter_agrees(fhir, synthea):
    f = fhir.tables["encounter"]
    c = synthea[1]["encounter"]
    assert f["encounter_id"].n_unique() == f.height
    assert sorted(f["encounter_id"]) == sorted(c["encounter_id"])
    cols = ["encounter_id", "patient_id", "start_time", "end_time", "code", "code_system", "reason_code",
            "reason_system", "source_value"]  # fmt: skip
    fhir_rows = [
        (*(r[k] for k in cols), clean(r["display"]), clean(r["reason_display"]), r["class"])
        for r in f.iter_rows(named=True)
    ]
    csv_rows_ = [
        (*(r[k] for k in cols), r["display"], r["reason_display"], FHIR_CLASS_OF_SYNTHEA[r["class"]])
        for r in c.iter_rows(named=True)
    ]
    assert_same_rows(fhir_rows, csv_rows_, "encounter")
    # the CSV is finer than FHIR only where Synthea's FHIR exporter collapses classes to AMB
    finer = c.filter(pl.col("class") != pl.col("class").replace_strict(FHIR_CLASS_OF_SYNTHEA))
    assert set(finer["class"]) <= {"wellness", "outpatient", "urgentcare"}
    assert_null(c, ["status"], "csv encounter")
    assert set(f["status"]) == {"finished"}


def test_condition_agrees(fhir, synthea, resources):
    f = fhir.tables["condition"]
    c = synthea[1]["condition"]
    # The CSV writes condition START/STOP as the calendar date in the exporter's local time zone,
    # which is the offset Synthea writes in FHIR: compare with the date of the FHIR value as written
    # (and check that the reader's UTC timestamp is that same instant).
    raw = {r["id"]: r for r in resources if r["resourceType"] == "Condition"}

    def local_date(row: dict, canonical: str, element: str):
        value = raw[row["record_id"]].get(element)
        if value is None:
            assert row[canonical] is None
            return None
        assert row[canonical] == datetime.fromisoformat(value).astimezone(timezone.utc)
        return datetime.fromisoformat(value[:10]).replace(tzinfo=timezone.utc)

    cols = ["patient_id", "encounter_id", "code", "code_system", "source_value"]
    fhir_rows = [
        (*(r[k] for k in cols), local_date(r, "start_time", "onsetDateTime"),
         local_date(r, "end_time", "abatementDateTime"), clean(r["display"]))
        for r in f.iter_rows(named=True)
    ]  # fmt: skip
    csv_rows_ = [
        (*(r[k] for k in cols), r["start_time"], r["end_time"], r["display"]) for r in c.iter_rows(named=True)
    ]
    assert_same_rows(fhir_rows, csv_rows_, "condition")
    assert_null(c, ["category"], "csv condition")
    assert f["category"].null_count() == 0


def test_measurement_agrees(fhir, synthea):
    f = fhir.tables["measurement"]
    c = synthea[1]["measurement"]
    # CSV only: Synthea's patient-level quality-of-life scores, written by the CSV exporter alone
    qol = c.filter(pl.col("code").is_in(QOL_CODES))
    assert qol.height > 0
    assert qol["encounter_id"].null_count() == qol.height
    assert set(qol["code_system"]) == {"local"}
    assert c.filter(pl.col("encounter_id").is_null()).height == qol.height
    c = c.filter(~pl.col("code").is_in(QOL_CODES))
    cols = ["patient_id", "encounter_id", "time", "category", "code", "code_system", "source_unit",
            "source_unit_ucum"]  # fmt: skip
    fhir_rows = [
        (*(r[k] for k in cols), clean(r["display"]), clean(r["value_text"]), r["value"] is None)
        for r in f.iter_rows(named=True)
    ]
    csv_rows_ = [
        (*(r[k] for k in cols), r["display"], r["value_text"], r["value"] is None)
        for r in c.iter_rows(named=True)
    ]
    assert_same_rows(fhir_rows, csv_rows_, "measurement (all but the numeric value)")
    # numeric values: pair the rows of each key (sorted by value: both roundings are monotonic)
    fhir_values: dict[tuple, list[str]] = {}
    csv_values: dict[tuple, list[tuple[float, str]]] = {}
    for key, r in zip(fhir_rows, f.iter_rows(named=True)):
        if r["value"] is not None:
            fhir_values.setdefault(key, []).append(r["source_value"])
    for key, r in zip(csv_rows_, c.iter_rows(named=True)):
        if r["value"] is not None:
            csv_values.setdefault(key, []).append((r["value"], r["source_value"]))
    assert fhir_values.keys() == csv_values.keys()
    exact = 0
    for key, raws in fhir_values.items():
        pairs = zip(sorted(raws, key=Decimal), sorted(csv_values[key]), strict=True)
        for raw, (value, written) in pairs:
            assert same_number(raw, value, written), (key, raw, written)
            exact += round1(raw) == value
    # the plain "%.1f of the FHIR value" rule holds for almost every row (not for integers >= 1e5)
    assert exact >= 0.95 * sum(len(v) for v in fhir_values.values())
    # coded values: FHIR keeps the code in source_value, the CSV has only the display
    coded_f = f.filter(pl.col("value_text").is_not_null())
    coded_c = c.filter(pl.col("value_text").is_not_null())
    assert (coded_c["source_value"] == coded_c["value_text"]).all()
    # (the one valueString in these bundles is PRAPARE's "Address" answer, LOINC 56799-0)
    same = coded_f.filter(pl.col("source_value") == pl.col("value_text"))
    assert set(same["code"]) == {"56799-0"} and same.height < coded_f.height
    # components: one row per component in both exports, none for the panel itself
    assert f.filter(pl.col("code") == "85354-9").height == 0
    assert c.filter(pl.col("code") == "85354-9").height == 0
    assert f.filter(pl.col("code").is_in(["8480-6", "8462-4"])).height > 0


def test_medication_agrees(fhir, synthea):
    f = fhir.tables["medication"]
    c = synthea[1]["medication"]
    # FHIR only: MedicationAdministration, written next to the MedicationRequest of the same drug
    admin = f.filter(pl.col("category") == "administration")
    keys = ["patient_id", "encounter_id", "code", "start_time"]
    prescribed = f.filter(pl.col("category") == "prescription").select(keys)
    assert admin.height > 0
    assert admin.select(keys).join(prescribed, on=keys, how="anti").height == 0
    f = f.filter(pl.col("category") != "administration")
    cols = ["patient_id", "encounter_id", "category", "start_time", "code", "code_system", "status",
            "source_value"]  # fmt: skip
    fhir_rows = [(*(r[k] for k in cols), clean(r["display"])) for r in f.iter_rows(named=True)]
    csv_rows_ = [(*(r[k] for k in cols), r["display"]) for r in c.iter_rows(named=True)]
    assert_same_rows(fhir_rows, csv_rows_, "medication")
    # Synthea's FHIR MedicationRequest carries no stop time; the CSV has STOP; only FHIR has dosage
    assert_null(f, ["end_time"], "fhir medication")
    assert_null(c, ["dose_value", "dose_unit", "route"], "csv medication")
    assert f["dose_value"].null_count() < f.height
    assert (
        c.filter(pl.col("category") == "prescription")["end_time"].null_count()
        < c.filter(pl.col("category") == "prescription").height
    )


def test_procedure_agrees(fhir, synthea):
    f = fhir.tables["procedure"]
    c = synthea[1]["procedure"]
    cols = ["patient_id", "encounter_id", "start_time", "end_time", "code", "code_system", "reason_code",
            "reason_system", "source_value"]  # fmt: skip
    fhir_rows = [(*(r[k] for k in cols), clean(r["display"])) for r in f.iter_rows(named=True)]
    csv_rows_ = [(*(r[k] for k in cols), r["display"]) for r in c.iter_rows(named=True)]
    assert_same_rows(fhir_rows, csv_rows_, "procedure")
    # FHIR gives most reasons as a reasonReference to a Condition; they resolve to its code
    assert f["reason_code"].null_count() < f.height


def test_notes_are_fhir_only(fhir, synthea, resources):
    assert "note" not in synthea[0].tables
    docs = [r for r in resources if r["resourceType"] == "DocumentReference"]
    assert fhir.tables["note"].height == len(docs)


# --------------------------------------------------------------------------- counts against oracles


def test_counts_match_plain_readings_of_both_exports(fhir, synthea, resources, patient_ids):
    """Row counts per table from json/csv modules (independent of the readers)."""
    by_type = Counter(r["resourceType"] for r in resources)
    obs_rows = sum(len(r.get("component", [])) or 1 for r in resources if r["resourceType"] == "Observation")
    assert fhir.tables["encounter"].height == by_type["Encounter"]
    assert fhir.tables["condition"].height == by_type["Condition"]
    assert fhir.tables["measurement"].height == obs_rows
    assert fhir.tables["procedure"].height == by_type["Procedure"]
    assert fhir.tables["medication"].height == (
        by_type["MedicationRequest"] + by_type["Immunization"] + by_type["MedicationAdministration"]
    )

    def n(table: str) -> int:
        return sum(1 for r in csv_rows(table) if r["PATIENT"] in patient_ids)

    tables = synthea[1]
    assert tables["encounter"].height == n("encounters")
    assert tables["condition"].height == n("conditions")
    assert tables["measurement"].height == n("observations")
    assert tables["procedure"].height == n("procedures")
    assert tables["medication"].height == n("medications") + n("immunizations")
