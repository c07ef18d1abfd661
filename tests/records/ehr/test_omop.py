"""OMOP CDM reader: ledger, counts against the source files, CONCEPT coding, death, rejects."""

from __future__ import annotations

import csv
import gzip
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from dataforge.records.ehr.columns import RAW_COLUMNS
from dataforge.records.ehr.omop import read_omop

ROOT = Path(__file__).resolve().parents[3]
OMOP = ROOT / "sample_data" / "ehr" / "omop"
UNMAPPED = ("VISIT_DETAIL", "CONDITION_ERA", "OBSERVATION_PERIOD", "DEVICE_EXPOSURE")
MAPPED = (
    "PERSON",
    "VISIT_OCCURRENCE",
    "CONDITION_OCCURRENCE",
    "PROCEDURE_OCCURRENCE",
    "DRUG_EXPOSURE",
    "MEASUREMENT",
    "OBSERVATION",
)


def rows(table: str) -> list[dict[str, str]]:
    with gzip.open(OMOP / f"{table}.csv.gz", "rt", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ex():
    return read_omop(OMOP, root=OMOP.parent)


@pytest.fixture(scope="module")
def concepts():
    return {r["concept_id"]: r for r in rows("CONCEPT")}


def test_ledger_adds_up_on_sample(ex):
    counts = ex.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"]
    assert counts["rows_in"] == sum(len(rows(t)) for t in (*MAPPED, *UNMAPPED, "DEATH"))
    assert counts["rejected"] == 0
    reasons = ex.dropped.group_by("reason").len().sort("reason").rows()
    assert reasons == [
        ("merged_into_patient", len(rows("DEATH"))),
        ("unmapped_table", sum(len(rows(t)) for t in UNMAPPED)),
    ]
    roles = {Path(i["path"]).name: i["role"] for i in ex.inputs}
    assert roles["CONCEPT.csv.gz"] == "lookup" and roles["MEASUREMENT.csv.gz"] == "records"


def test_rows_per_canonical_table(ex):
    assert ex.tables["patient"].height == len(rows("PERSON"))
    assert ex.tables["encounter"].height == len(rows("VISIT_OCCURRENCE"))
    assert ex.tables["condition"].height == len(rows("CONDITION_OCCURRENCE"))
    assert ex.tables["procedure"].height == len(rows("PROCEDURE_OCCURRENCE"))
    assert ex.tables["medication"].height == len(rows("DRUG_EXPOSURE"))
    assert ex.tables["measurement"].height == len(rows("MEASUREMENT")) + len(rows("OBSERVATION"))
    for name, frame in ex.tables.items():
        assert frame.columns == list(RAW_COLUMNS[name])


def test_person_fields_and_death(ex):
    p = ex.tables["patient"]
    deaths = {r["person_id"]: r["death_date"] for r in rows("DEATH")}
    for src in rows("PERSON"):
        row = p.filter(pl.col("patient_id") == src["person_id"]).row(0, named=True)
        assert row["gender"] == {"8507": "male", "8532": "female"}[src["gender_concept_id"]]
        born = datetime(
            int(src["year_of_birth"]),
            int(src["month_of_birth"]),
            int(src["day_of_birth"]),
            tzinfo=timezone.utc,
        )
        assert row["birth_date"] == born
        if src["person_id"] in deaths:
            assert row["death_date"] == datetime.strptime(deaths[src["person_id"]], "%Y-%m-%d").replace(
                tzinfo=timezone.utc
            )
            assert row["deceased"] is True
        else:
            assert row["death_date"] is None
        assert row["race"] is not None and row["race"].lower().startswith(
            src["race_source_value"][:3].lower()
        )


def test_measurement_coded_from_concept(ex, concepts):
    src = next(
        r for r in rows("MEASUREMENT") if r["value_as_number"] and r["unit_concept_id"] not in ("", "0")
    )
    row = (
        ex.tables["measurement"]
        .filter(pl.col("record_id") == f"MEASUREMENT:{src['measurement_id']}")
        .row(0, named=True)
    )
    concept = concepts[src["measurement_concept_id"]]
    assert row["code"] == concept["concept_code"]
    assert row["code_system"] == concept["vocabulary_id"]  # LOINC / SNOMED keep their names
    assert row["display"] == concept["concept_name"]
    assert row["value"] == float(src["value_as_number"])
    assert row["source_unit"] == src["unit_source_value"]
    assert row["source_unit_ucum"] == concepts[src["unit_concept_id"]]["concept_code"]
    assert row["source_value"] == src["measurement_source_value"]


def test_visit_class(ex):
    e = ex.tables["encounter"]
    by_id = {r["visit_occurrence_id"]: r["visit_concept_id"] for r in rows("VISIT_OCCURRENCE")}
    expected = {"9201": "inpatient", "9202": "outpatient", "9203": "emergency"}
    for enc_id, cls in e.select("encounter_id", "class").iter_rows():
        assert cls == expected[by_id[enc_id]]


def test_deterministic():
    a = read_omop(OMOP)
    b = read_omop(OMOP)
    assert a.ledger_counts() == b.ledger_counts()
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name


PERSON = (
    "person_id,gender_concept_id,year_of_birth,month_of_birth,day_of_birth,birth_datetime,race_concept_id,ethnicity_concept_id,"
    "gender_source_value,race_source_value,ethnicity_source_value\n"
    "1,0,1980,,,,0,0,F,white,hispanic\n"
)
MEAS_HEADER = (
    "measurement_id,person_id,measurement_concept_id,measurement_date,measurement_datetime,value_as_number,unit_concept_id,"
    "measurement_source_value,measurement_source_concept_id,unit_source_value,value_source_value\n"
)


def test_unknown_concept_falls_back_to_source_value(tmp_path):
    (tmp_path / "person.csv").write_text(PERSON)
    (tmp_path / "concept.csv").write_text(
        "concept_id,concept_name,domain_id,vocabulary_id,concept_class_id,standard_concept,concept_code\n"
        "3004410,Hemoglobin A1c/Hemoglobin.total in Blood,Measurement,LOINC,Lab Test,S,4548-4\n"
    )
    (tmp_path / "measurement.csv").write_text(
        MEAS_HEADER
        + "1,1,0,2020-01-01,,5.1,0,LOCAL-A1C,0,%,5.1\n"
        + "2,1,0,2020-01-01,,5.2,0,LOCAL-A1C,3004410,%,5.2\n"
        + "3,1,999,2020-01-01,,5.3,0,LOCAL-A1C,0,%,5.3\n"
    )
    ex = read_omop(tmp_path)
    m = ex.tables["measurement"].sort("source_row")
    assert m.select("code", "code_system").rows() == [
        ("LOCAL-A1C", "local"),
        ("4548-4", "LOINC"),
        ("999", "OMOP"),
    ]
    assert m["source_value"].to_list() == ["LOCAL-A1C"] * 3
    p = ex.tables["patient"].row(0, named=True)
    assert p["gender"] == "female" and p["birth_date"] == datetime(1980, 1, 1, tzinfo=timezone.utc)
    assert ex.counters["birth_date_partial"] == 1


def test_malformed_rows_are_rejected(tmp_path):
    (tmp_path / "PERSON.csv").write_text(PERSON)
    (tmp_path / "MEASUREMENT.csv").write_text(
        MEAS_HEADER
        + "1,1,0,2020-01-01,,5.1,0,X,0,%,\n"
        + "2,1,0,2020-02-31,,5.1,0,X,0,%,\n"
        + "3,1,0,2020-01-01,,five,0,X,0,%,\n"
        + "4,42,0,2020-01-01,,5.1,0,X,0,%,\n"
        + "5,1,0,2020-01-01\n"
        + "6,1,0,,,5.1,0,X,0,%,\n"
    )
    ex = read_omop(tmp_path, root=tmp_path)
    assert ex.ledger_counts() == {"rows_in": 7, "kept": 2, "dropped": 0, "rejected": 5}
    assert sorted(ex.rejects["reason"].to_list()) == [
        "bad_date",
        "bad_number",
        "missing_value",
        "ragged_row",
        "unknown_patient",
    ]
    text = "\n".join(ex.rejects["error"].to_list())
    assert "MEASUREMENT.csv line 3: column measurement_date value '2020-02-31'" in text
    assert "MEASUREMENT.csv line 4: column value_as_number value 'five'" in text
    assert "MEASUREMENT.csv line 5: column person_id value '42' is not in PERSON.csv" in text
    assert "MEASUREMENT.csv line 6" in text
    assert "MEASUREMENT.csv line 7" in text


def test_time_precision(ex, tmp_path):
    # the sample: dates with and without a time of day
    m = ex.tables["measurement"]
    assert set(m["time_precision"].unique().to_list()) <= {"day", "time"}
    assert m["time_precision"].null_count() == 0
    for table in ("MEASUREMENT", "OBSERVATION"):
        prefix = table.lower()
        with_time = sum(1 for r in rows(table) if r[f"{prefix}_datetime"])
        mine = m.filter(pl.col("source_file").str.contains(table))
        assert (mine["time_precision"] == "time").sum() == with_time, table
        assert (mine["time_precision"] == "day").sum() == mine.height - with_time, table
    # a birth known to the year or to the month is not a day
    (tmp_path / "person.csv").write_text(
        PERSON  # person 1: year of birth only
        + "2,0,1981,7,,,0,0,M,white,hispanic\n"
        + "3,0,1982,7,4,,0,0,M,white,hispanic\n"
        + "4,0,1983,7,4,1983-07-04 10:30:00,0,0,M,white,hispanic\n"
    )
    p = read_omop(tmp_path).tables["patient"].sort("patient_id")
    assert p["birth_date_precision"].to_list() == ["year", "month", "day", "time"]
