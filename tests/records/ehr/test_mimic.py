"""MIMIC-IV reader: ledger, counts against the source files, real values, ICD dotting, rejects."""

from __future__ import annotations

import csv
import gzip
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from dataforge.records.ehr.columns import RAW_COLUMNS
from dataforge.records.ehr.mimic import dot_icd, read_mimic

ROOT = Path(__file__).resolve().parents[3]
MIMIC = ROOT / "sample_data" / "ehr" / "mimic_iv_demo"
UNMAPPED = ("transfers", "services", "icustays", "microbiologyevents", "outputevents")


def rows(table: str) -> list[dict[str, str]]:
    with gzip.open(MIMIC / f"{table}.csv.gz", "rt", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ex():
    return read_mimic(MIMIC, root=MIMIC.parent)


def test_ledger_adds_up_on_sample(ex):
    counts = ex.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"]
    record_tables = (
        "patients",
        "admissions",
        "diagnoses_icd",
        "procedures_icd",
        "labevents",
        "prescriptions",
        "omr",
        *UNMAPPED,
    )
    assert counts["rows_in"] == sum(len(rows(t)) for t in record_tables)
    assert counts["rejected"] == 0
    assert counts["dropped"] == sum(len(rows(t)) for t in UNMAPPED)
    assert set(ex.dropped["reason"].unique()) == {"unmapped_table"}


def test_inputs_roles(ex):
    roles = {Path(i["path"]).name: i["role"] for i in ex.inputs}
    assert roles["d_labitems.csv.gz"] == "lookup"
    assert roles["d_icd_diagnoses_used.csv.gz"] == "lookup"
    assert roles["labevents.csv.gz"] == "records"
    assert roles["transfers.csv.gz"] == "records"
    assert roles["LICENSE_ODbL.txt"] == "skipped"
    lab = next(i for i in ex.inputs if i["path"].endswith("labevents.csv.gz"))
    assert lab["rows"] == len(rows("labevents"))


def test_rows_per_canonical_table(ex):
    bp = [r for r in rows("omr") if r["result_name"].startswith("Blood Pressure")]
    assert ex.tables["patient"].height == len(rows("patients"))
    assert ex.tables["encounter"].height == len(rows("admissions"))
    assert ex.tables["condition"].height == len(rows("diagnoses_icd"))
    assert ex.tables["procedure"].height == len(rows("procedures_icd"))
    assert ex.tables["medication"].height == len(rows("prescriptions"))
    assert ex.tables["measurement"].height == len(rows("labevents")) + len(rows("omr")) + len(bp)
    for name, frame in ex.tables.items():
        assert frame.columns == list(RAW_COLUMNS[name])
        if "record_id" in frame.columns:
            assert frame["record_id"].n_unique() == frame.height


def test_lab_value_and_unit_survive(ex):
    src = next(r for r in rows("labevents") if r["valuenum"] and r["valueuom"] and r["ref_range_lower"])
    m = ex.tables["measurement"].filter(pl.col("record_id") == f"labevents:{src['labevent_id']}")
    assert m.height == 1
    row = m.row(0, named=True)
    assert row["value"] == float(src["valuenum"])
    assert row["source_unit"] == src["valueuom"]
    assert row["source_value"] == src["itemid"]
    assert row["ref_low"] == float(src["ref_range_lower"])
    assert row["patient_id"] == src["subject_id"]
    assert row["time"] == datetime.strptime(src["charttime"], "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=timezone.utc
    )
    assert row["category"] == "laboratory"


def test_lab_loinc_mapping(ex):
    m = ex.tables["measurement"]
    glucose = m.filter(pl.col("source_value") == "50931")
    n_src = sum(1 for r in rows("labevents") if r["itemid"] == "50931")
    assert n_src > 0 and glucose.height == n_src
    assert set(glucose["code"]) == {"2345-7"} and set(glucose["code_system"]) == {"LOINC"}
    # an itemid not in the LOINC table stays MIMIC-LAB with code = itemid (51498: specific gravity)
    other = m.filter(pl.col("source_value") == "51498")
    if other.height:
        assert set(other["code_system"]) == {"MIMIC-LAB"} and set(other["code"]) == {"51498"}
    text_only = m.filter(pl.col("code_system").is_in(["LOINC", "MIMIC-LAB"]) & pl.col("value").is_null())
    assert text_only.filter(pl.col("value_text").is_not_null()).height > 0


def test_omr_blood_pressure_splits(ex):
    src = next(r for r in rows("omr") if r["result_name"] == "Blood Pressure")
    systolic, diastolic = (float(x) for x in src["result_value"].split("/"))
    m = ex.tables["measurement"].filter(
        (pl.col("patient_id") == src["subject_id"])
        & (pl.col("time") == datetime.strptime(src["chartdate"], "%Y-%m-%d").replace(tzinfo=timezone.utc))
        & pl.col("source_ref").str.contains(f"seq_num={src['seq_num']},result_name=Blood Pressure$")
    )
    got = dict(zip(m["code"], m["value"], strict=True))
    assert got == {"8480-6": systolic, "8462-4": diastolic}
    assert m["source_row"].n_unique() == 1  # both rows come from one input record
    weight = next(r for r in rows("omr") if r["result_name"] == "Weight (Lbs)")
    w = ex.tables["measurement"].filter(
        (pl.col("patient_id") == weight["subject_id"])
        & (pl.col("code") == "29463-7")
        & (pl.col("value") == float(weight["result_value"]))
    )
    assert w.height >= 1 and set(w["source_unit"]) == {"lb"}


@pytest.mark.parametrize(
    ("code", "system", "dotted"),
    [
        ("4139", "ICD9CM", "413.9"),
        ("V707", "ICD9CM", "V70.7"),
        ("E8791", "ICD9CM", "E879.1"),
        ("41401", "ICD9CM", "414.01"),
        ("042", "ICD9CM", "042"),
        ("I2510", "ICD10CM", "I25.10"),
        ("E119", "ICD10CM", "E11.9"),
        ("3897", "ICD9Proc", "38.97"),
        ("02H633Z", "ICD10PCS", "02H633Z"),
    ],
)
def test_dot_icd(code, system, dotted):
    out = pl.select(dot_icd(pl.lit(code), pl.lit(system))).item()
    assert out == dotted


def test_conditions_keep_source_code_and_display(ex):
    c = ex.tables["condition"]
    assert (c["code"].str.replace(".", "", literal=True) == c["source_value"]).all()
    assert set(c["code_system"]) <= {"ICD9CM", "ICD10CM"}
    src = rows("diagnoses_icd")[0]
    row = c.filter(pl.col("record_id") == f"diagnoses_icd:{src['hadm_id']}:{src['seq_num']}").row(
        0, named=True
    )
    titles = {(r["icd_code"], r["icd_version"]): r["long_title"] for r in rows("d_icd_diagnoses_used")}
    assert row["display"] == titles[(src["icd_code"], src["icd_version"])]
    adm = next(r for r in rows("admissions") if r["hadm_id"] == src["hadm_id"])
    assert row["start_time"] == datetime.strptime(adm["admittime"], "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=timezone.utc
    )


def test_patient_fields(ex):
    p = ex.tables["patient"]
    for src in rows("patients"):
        row = p.filter(pl.col("patient_id") == src["subject_id"]).row(0, named=True)
        assert row["gender"] == {"F": "female", "M": "male"}[src["gender"]]
        assert row["age"] == int(src["anchor_age"]) and row["age_year"] == int(src["anchor_year"])
        assert row["birth_date"] is None
        assert (row["death_date"] is None) == (src["dod"] == "")
    # race comes from the latest admission
    adm = rows("admissions")
    sid = adm[0]["subject_id"]
    latest = max((r for r in adm if r["subject_id"] == sid), key=lambda r: (r["admittime"], r["hadm_id"]))
    assert p.filter(pl.col("patient_id") == sid)["race"].item() == latest["race"]


def test_deterministic():
    a = read_mimic(MIMIC, root=MIMIC.parent)
    b = read_mimic(MIMIC, root=MIMIC.parent)
    assert a.ledger_counts() == b.ledger_counts()
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_malformed_rows_are_rejected(tmp_path):
    _write(
        tmp_path / "patients.csv",
        "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n1,F,40,2150,2011 - 2013,\n2,M,abc,2150,2011 - 2013,\n",
    )
    _write(
        tmp_path / "labevents.csv",
        "labevent_id,subject_id,hadm_id,itemid,charttime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag\n"
        "1,1,,50931,2150-01-01 10:00:00,99,99,mg/dL,70,100,\n"
        "2,1,,50931,2150-13-45 10:00:00,99,99,mg/dL,70,100,\n"
        "3,1,,50931,2150-01-01 10:00:00,9x9,9x9,mg/dL,70,100,\n"
        "4,1,,50931,2150-01-01 10:00:00,99\n"
        "5,777,,50931,2150-01-01 10:00:00,99,99,mg/dL,70,100,\n",
    )
    ex = read_mimic(tmp_path, root=tmp_path)
    counts = ex.ledger_counts()
    assert counts == {"rows_in": 7, "kept": 2, "dropped": 0, "rejected": 5}
    reasons = sorted(ex.rejects["reason"].to_list())
    assert reasons == ["bad_date", "bad_number", "bad_number", "ragged_row", "unknown_patient"]
    errors = ex.rejects.sort("source_file", "source_line")["error"].to_list()
    text = "\n".join(errors)
    assert "patients.csv line 3" in text and "anchor_age value 'abc'" in text
    assert "labevents.csv line 3" in text and "'2150-13-45 10:00:00'" in text
    assert "labevents.csv line 4" in text and "valuenum value '9x9'" in text
    assert "labevents.csv line 5" in text
    assert "labevents.csv line 6" in text and "subject_id value '777'" in text
    m = ex.tables["measurement"]
    assert m.height == 1 and m["value"].item() == 99.0


def test_prescription_codes_and_doses(tmp_path):
    _write(tmp_path / "patients.csv", "subject_id,gender,anchor_age,anchor_year,dod\n1,M,50,2150,\n")
    _write(
        tmp_path / "prescriptions.csv",
        "subject_id,hadm_id,pharmacy_id,starttime,stoptime,drug,formulary_drug_cd,ndc,dose_val_rx,dose_unit_rx,route\n"
        '1,10,100,2150-01-01 08:00:00,,Heparin,HEPA5I,63323026201,"25,000",UNIT,SC\n'
        "1,10,101,2150-01-01 08:00:00,,Acetaminophen,ACET325,0,325-650,mg,PO\n"
        "1,10,102,2150-01-01 08:00:00,,Mystery,,,as directed,,PO\n",
    )
    ex = read_mimic(tmp_path / "prescriptions.csv")
    med = ex.tables["medication"].sort("source_row")
    assert med["code_system"].to_list() == ["NDC", "MIMIC-DRUG", "MIMIC-DRUG"]
    assert med["code"].to_list() == ["63323026201", "ACET325", "Mystery"]
    assert med["dose_value"].to_list() == [25000.0, 325.0, None]
    assert ex.counters["dose_range_lower_bound"] == 1 and ex.counters["dose_unparsed"] == 1
    # patients.csv is next to the given file but is a record table, not a dictionary: not read
    assert [i["table"] for i in ex.inputs] == ["prescriptions"]


def test_time_precision_follows_the_values(ex):
    # MIMIC writes dates (dod, chartdate) and date-times (charttime, admittime, starttime)
    p = ex.tables["patient"]
    assert p["death_date_precision"].to_list() == ["day" if d is not None else None for d in p["death_date"]]
    assert p.filter(pl.col("death_date").is_not_null()).height > 0
    labs = ex.tables["measurement"].filter(pl.col("category") == "laboratory")
    assert set(labs["time_precision"].to_list()) == {"time"}
    omr = ex.tables["measurement"].filter(pl.col("source_file").str.contains("omr"))
    assert set(omr["time_precision"].to_list()) == {"day"}
    assert set(ex.tables["procedure"]["start_time_precision"].to_list()) == {"day"}
    enc = ex.tables["encounter"]
    assert set(enc["start_time_precision"].to_list()) == {"time"}
    cond = ex.tables["condition"]  # the admission time
    assert set(cond["start_time_precision"].drop_nulls().to_list()) == {"time"}
    assert cond["start_time_precision"].null_count() == cond["start_time"].null_count()
    rx = ex.tables["medication"]
    assert set(rx["start_time_precision"].drop_nulls().to_list()) == {"time"}
    assert rx["start_time_precision"].null_count() == rx["start_time"].null_count()
