"""Validation rules: impossible values are rejected with a reason, the ledger still adds up."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from dataforge.records.ehr.columns import conform_raw
from dataforge.records.ehr.validate import code_ok, loinc_ok, snomed_ok, validate, verhoeff_ok
from dataforge.records.model import Extract

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)


def ts(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("2345-7", True),
        ("8302-2", True),
        ("29463-7", True),
        ("8302-3", False),
        ("2345", False),
        ("ABC-1", False),
    ],
)
def test_loinc_check_digit(code, ok):
    assert loinc_ok(code) is ok


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("195662009", True),  # acute viral pharyngitis
        ("38341003", True),  # hypertension
        ("195662008", False),  # wrong check digit
        ("195662019", False),  # partition 01 is valid but the check digit is not
        ("12345", False),  # too short
        ("I10", False),  # an ICD-10 code in the SNOMED system
    ],
)
def test_snomed_verhoeff(code, ok):
    assert snomed_ok(code) is ok


def test_verhoeff_known_vector():
    # the classic example: 236 has check digit 3 -> 2363 valid
    assert verhoeff_ok("2363") and not verhoeff_ok("2364")


def test_code_systems():
    assert code_ok("ICD10CM", "I25.10") and code_ok("ICD10CM", "I2510")
    assert not code_ok("ICD10CM", "4139")  # an ICD-9 code declared ICD-10
    assert code_ok("ICD9CM", "413.9") and code_ok("ICD9CM", "V70.7") and code_ok("ICD9CM", "E879.1")
    assert not code_ok("ICD9CM", "I25.10")
    assert code_ok("RxNorm", "308192") and not code_ok("RxNorm", "A308")
    assert code_ok("local", "anything")  # no rule for local codes


def _extract() -> Extract:
    ex = Extract.empty("synthea")
    ex.tables["patient"] = conform_raw(
        "patient",
        pl.DataFrame(
            {
                "source_file": ["patients.csv"] * 3,
                "source_row": [0, 1, 2],
                "source_ref": ["P1", "P2", "P3"],
                "patient_id": ["P1", "P2", "P3"],
                "birth_date": [ts(1980, 1, 1), ts(2030, 1, 1), ts(1990, 1, 1)],
                "death_date": [None, None, ts(1989, 1, 1)],
            }
        ),
    )
    ex.tables["measurement"] = conform_raw(
        "measurement",
        pl.DataFrame(
            {
                "source_file": ["obs.csv"] * 5,
                "source_row": [0, 1, 2, 3, 3],  # row 3 made two rows (a blood pressure panel)
                "source_ref": ["M0", "M1", "M2", "M3", "M3"],
                "patient_id": ["P1", "P1", "P1", "P1", "P1"],
                "record_id": ["M0", "M1", "M2", "M3#8480-6", "M3#8462-4"],
                "time": [ts(2020, 1, 1)] * 5,
                "code": ["29463-7", "29463-7", "8302-3", "8480-6", "8462-4"],
                "code_system": ["LOINC"] * 5,
                "value": [70.0, 7000.0, 170.0, 120.0, 900.0],
                "source_value": ["70", "7000", "170", "120", "900"],
                "ref_low": [None, None, None, 90.0, None],
                "ref_high": [None, None, None, 110.0, None],
            }
        ),
    ).with_columns(pl.Series("unit", ["kg", "kg", "cm", "mm[Hg]", "mm[Hg]"]))
    ex.tables["encounter"] = conform_raw(
        "encounter",
        pl.DataFrame(
            {
                "source_file": ["enc.csv"] * 2,
                "source_row": [0, 1],
                "source_ref": ["E1", "E2"],
                "patient_id": ["P1", "P2"],
                "encounter_id": ["E1", "E2"],
                "start_time": [ts(2020, 1, 2), ts(2021, 1, 1)],
                "end_time": [ts(2019, 1, 1), ts(2021, 1, 2)],
            }
        ),
    )
    ex.rows_in = 3 + 4 + 2
    return ex


def test_rules_and_ledger():
    ex = _extract()
    counts = validate(ex, now=NOW)
    rej = ex.rejects.sort("source_file", "source_row")
    got = {(r["source_file"], r["source_row"]): r["reason"] for r in rej.iter_rows(named=True)}
    assert got == {
        ("patients.csv", 1): "future_date",
        ("patients.csv", 2): "death_before_birth",
        ("obs.csv", 1): "implausible_value",
        ("obs.csv", 2): "code_system_mismatch",
        ("obs.csv", 3): "implausible_value",  # the diastolic 900 rejects the whole panel record
        ("enc.csv", 0): "end_before_start",
    }
    # each error names the field and the value
    errors = dict(zip(rej["reason"], rej["error"], strict=False))
    assert "7000" in errors["implausible_value"] or "900" in errors["implausible_value"]
    assert "8302-3" in errors["code_system_mismatch"]
    assert "2030-01-01" in errors["future_date"]
    # the encounter of the future-born patient P2 is dropped with its patient
    assert ex.dropped["reason"].to_list() == ["patient_rejected"]
    assert ex.dropped["source_row"].to_list() == [1]
    assert counts["patient_rejected"] == 1
    # no row of a rejected record is left in any table
    assert ex.tables["measurement"]["record_id"].to_list() == ["M0"]
    c = ex.ledger_counts()
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"]
    assert c == {"rows_in": 9, "kept": 2, "dropped": 1, "rejected": 6}


def test_reference_range_is_a_flag_not_a_reject():
    ex = Extract.empty("synthea")
    ex.tables["measurement"] = conform_raw(
        "measurement",
        pl.DataFrame(
            {
                "source_file": ["o.csv"],
                "source_row": [0],
                "patient_id": ["P"],
                "record_id": ["R"],
                "code": ["2345-7"],
                "code_system": ["LOINC"],
                "value": [250.0],
                "source_value": ["250"],
                "ref_low": [70.0],
                "ref_high": [100.0],
            }
        ),
    ).with_columns(pl.lit("mg/dL").alias("unit"))
    ex.rows_in = 1
    validate(ex, now=NOW)
    assert ex.rejects.height == 0
    assert ex.tables["measurement"]["flags"][0] == "outside_reference_range"


def test_mimic_future_dates_exempt():
    ex = Extract.empty("mimic")
    ex.tables["encounter"] = conform_raw(
        "encounter",
        pl.DataFrame(
            {
                "source_file": ["admissions.csv"],
                "source_row": [0],
                "patient_id": ["10014729"],
                "encounter_id": ["2"],
                "start_time": [ts(2134, 8, 18)],
            }
        ),
    )
    ex.rows_in = 1
    validate(ex, now=NOW)
    assert ex.rejects.height == 0


def test_a_partial_date_stands_for_its_whole_year_or_month():
    ex = Extract.empty("fhir")
    ex.tables["patient"] = conform_raw(
        "patient",
        pl.DataFrame(
            {
                "source_file": ["b.json"] * 3,
                "source_row": [0, 1, 2],
                "patient_id": ["P1", "P2", "P3"],
                "birth_date": [ts(1950, 4, 1)] * 3,
                # died "1950" (possible), "1950-04" (possible), "1950-03" (before the birth)
                "death_date": [ts(1950, 1, 1), ts(1950, 4, 1), ts(1950, 3, 1)],
                "death_date_precision": ["year", "month", "month"],
            }
        ),
    )
    ex.tables["encounter"] = conform_raw(
        "encounter",
        pl.DataFrame(
            {
                "source_file": ["b.json"] * 2,
                "source_row": [3, 4],
                "patient_id": ["P1", "P2"],
                "encounter_id": ["E1", "E2"],
                "start_time": [ts(2015, 7, 4, 10), ts(2015, 7, 4, 10)],
                # ended "2015" (possible), ended on 2015-01-01 (a day: more than a day early)
                "end_time": [ts(2015, 1, 1), ts(2015, 1, 1)],
                "end_time_precision": ["year", "day"],
            }
        ),
    )
    ex.rows_in = 5
    validate(ex, now=NOW)
    got = {r["source_row"]: r["reason"] for r in ex.rejects.iter_rows(named=True)}
    assert got == {2: "death_before_birth", 4: "end_before_start"}
