"""Synthea CSV reader: ledger on the real export, mapping details, layouts, rejects, determinism."""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataforge.errors import InputError
from dataforge.records.ehr.columns import RAW_COLUMNS
from dataforge.records.ehr.deid import DeidConfig, deidentify
from dataforge.records.ehr.synthea import MAPPED_TABLES, read_synthea

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "ehr"
CSV_DIR = SAMPLE / "synthea_csv"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def plain(table: str) -> list[dict]:
    """A sample table read with the csv module (the independent oracle)."""
    text = gzip.decompress((CSV_DIR / f"{table}.csv.gz").read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text)))


def ledger_ok(extract) -> dict:
    counts = extract.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"], counts
    return counts


@pytest.fixture(scope="module")
def real():
    return read_synthea([CSV_DIR], root=SAMPLE)


# --------------------------------------------------------------------------- small exports

P1, P2 = "p-1", "p-2"
E1 = "e-1"
PATIENTS = [
    "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,LAST,SUFFIX,MAIDEN,MARITAL,RACE,ETHNICITY,GENDER,"
    "BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,ZIP,LAT,LON,HEALTHCARE_EXPENSES,HEALTHCARE_COVERAGE",
    f"{P1},1980-02-03,2020-05-06,999-11-2222,S1,X1,Ms.,Ann1,Smith2,,Jones3,M,asian,hispanic,F,"
    "Boston  Massachusetts  US,1 Main St,Boston,Massachusetts,Suffolk County,02110,42.1,-71.2,10.0,20.0",
    f"{P2},1990-01-01,,,,,,Bob4,Lee5,,,,white,nonhispanic,M,,,,Rhode Island,,,,,0,0",
]
ENCOUNTERS = [
    "Id,START,STOP,PATIENT,ORGANIZATION,PROVIDER,PAYER,ENCOUNTERCLASS,CODE,DESCRIPTION,BASE_ENCOUNTER_COST,"
    "TOTAL_CLAIM_COST,PAYER_COVERAGE,REASONCODE,REASONDESCRIPTION",
    f"{E1},2020-01-01T10:00:00Z,2020-01-01T10:15:00Z,{P1},o,p,y,wellness,162673000,General examination,1,1,0,,",
]
OBSERVATIONS = [
    "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE",
    f"2020-01-01T10:05:00Z,{P1},{E1},vital-signs,8302-2,Body Height,170.2,cm,numeric",
    f"2020-01-01T10:05:00Z,{P1},{E1},survey,72166-2,Tobacco smoking status,Never smoked tobacco (finding),,text",
    f"2020-01-01T10:05:00Z,{P1},{E1},survey,63586-2,Income,191395,/a,text",
    f"2020-01-01T00:00:00Z,{P1},,,QALY,QALY,39.5,a,numeric",
]


def write_csv(path: Path, lines: list[str], *, gz: bool = True) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def export(tmp_path: Path, **tables: list[str]) -> Path:
    """A Synthea folder with patients (and encounters) plus the given tables."""
    folder = tmp_path / "csv"
    folder.mkdir(exist_ok=True)
    tables.setdefault("patients", PATIENTS)
    tables.setdefault("encounters", ENCOUNTERS)
    for name, lines in tables.items():
        if lines is not None:
            write_csv(folder / f"{name}.csv", lines)
    return folder


# --------------------------------------------------------------------------- real export


def test_ledger_adds_up_on_the_real_export(real):
    files = sorted(p.name.removesuffix(".csv.gz") for p in CSV_DIR.glob("*.csv.gz"))
    rows = {t: len(plain(t)) for t in files}
    counts = ledger_ok(real)
    assert counts["rows_in"] == sum(rows.values())
    assert counts["rejected"] == 0
    assert counts["kept"] == sum(n for t, n in rows.items() if t in MAPPED_TABLES)
    dropped = real.dropped
    assert set(dropped["reason"]) == {"unmapped_table"}
    assert dict(Counter(dropped["table"])) == {t: n for t, n in rows.items() if t not in MAPPED_TABLES}
    assert {(Path(i["path"]).name, i["role"], i["table"], i["rows"]) for i in real.inputs} == {
        (f"{t}.csv.gz", "records", t, n) for t, n in rows.items()
    }


def test_every_row_points_back_to_its_csv_row(real):
    for name, frame in real.tables.items():
        assert dict(frame.schema) == RAW_COLUMNS[name], name
        for file in frame["source_file"].unique():
            source = plain(Path(file).name.removesuffix(".csv.gz"))
            part = frame.filter(pl.col("source_file") == file)
            key = "Id" if "Id" in source[0] and name in ("patient", "encounter") else "PATIENT"
            col = "encounter_id" if name == "encounter" else "patient_id"
            assert [source[i][key] for i in part["source_row"]] == part[col].to_list(), file
        if "record_id" in frame.columns:
            assert frame["record_id"].n_unique() == frame.height


def test_real_mapping_against_the_csv(real):
    pats = {r["Id"]: r for r in plain("patients")}
    p = real.tables["patient"]
    assert p["gender"].to_list() == [{"F": "female", "M": "male"}[pats[i]["GENDER"]] for i in p["patient_id"]]
    assert set(p["state"]) == {"MA"}
    dead = p.filter(pl.col("death_date").is_not_null())
    assert dead["patient_id"].to_list() == [i for i, r in pats.items() if r["DEATHDATE"]]
    assert dead["deceased"].to_list() == [True] and p["deceased"].null_count() == p.height - 1

    obs = plain("observations")
    m = real.tables["measurement"]
    assert m.height == len(obs)
    numeric = [r for r in obs if r["TYPE"] == "numeric"]
    nums = m.filter(pl.col("value").is_not_null() & pl.col("source_value").str.contains(r"\."))
    assert sorted(nums["value"]) == sorted(float(r["VALUE"]) for r in numeric)
    texts = m.filter(pl.col("value_text").is_not_null())
    income = [
        r for r in obs if r["TYPE"] == "text" and r["UNITS"] == "/a"
    ]  # integers typed "text" by Synthea
    assert texts.height == sum(r["TYPE"] == "text" for r in obs) - len(income) > 0
    assert real.counters["synthea_number_typed_text"] == len(income) > 0
    qol = m.filter(pl.col("code").is_in(["QALY", "DALY", "QOLS"]))
    assert set(qol["code_system"]) == {"local"} and qol["encounter_id"].null_count() == qol.height
    assert set(m.filter(~pl.col("code").is_in(["QALY", "DALY", "QOLS"]))["code_system"]) == {"LOINC"}

    meds = real.tables["medication"]
    assert Counter(meds["category"]) == {
        "prescription": len(plain("medications")),
        "immunization": len(plain("immunizations")),
    }
    rx = meds.filter(pl.col("category") == "prescription")
    assert (rx["status"] == "stopped").sum() == sum(1 for r in plain("medications") if r["STOP"])
    cond = real.tables["condition"]
    assert cond["start_time"].dt.hour().max() == 0 and set(cond["code_system"]) == {"SNOMED"}


def test_deterministic():
    a = read_synthea([CSV_DIR], root=SAMPLE)
    b = read_synthea(sorted(CSV_DIR.glob("*.csv.gz"), reverse=True), root=SAMPLE)
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        assert_frame_equal(a.tables[name], b.tables[name])
    assert_frame_equal(a.dropped, b.dropped)
    assert a.ledger_counts() == b.ledger_counts()


# --------------------------------------------------------------------------- mapping details


def test_small_export_mapping(tmp_path):
    ex = read_synthea([export(tmp_path, observations=OBSERVATIONS)])
    assert ledger_ok(ex) == {"rows_in": 7, "kept": 7, "dropped": 0, "rejected": 0}
    p = {r["patient_id"]: r for r in ex.tables["patient"].iter_rows(named=True)}
    a, b = p[P1], p[P2]
    assert (a["gender"], a["race"], a["ethnicity"], a["marital_status"], a["state"], a["zip"]) == (
        "female", "asian", "hispanic", "M", "MA", "02110")  # fmt: skip
    assert (a["birth_date"], a["death_date"], a["deceased"]) == (utc(1980, 2, 3), utc(2020, 5, 6), True)
    assert (a["name"], a["given"], a["family"], a["maiden"], a["prefix"]) == (
        "Ann1 Smith2",
        "Ann1",
        "Smith2",
        "Jones3",
        "Ms.",
    )
    assert (a["ssn"], a["drivers"], a["passport"], a["county"], a["lat"], a["lon"]) == (
        "999-11-2222", "S1", "X1", "Suffolk County", 42.1, -71.2)  # fmt: skip
    assert (b["gender"], b["state"], b["deceased"], b["death_date"], b["ssn"], b["lat"]) == (
        "male",
        "RI",
        None,
        None,
        None,
        None,
    )
    e = ex.tables["encounter"].row(0, named=True)
    assert (e["class"], e["code_system"], e["start_time"], e["end_time"], e["reason_code"]) == (
        "wellness", "SNOMED", utc(2020, 1, 1, 10), utc(2020, 1, 1, 10, 15), None)  # fmt: skip
    m = ex.tables["measurement"]
    assert m["value"].to_list() == [170.2, None, 191395.0, 39.5]
    assert m["value_text"].to_list() == [None, "Never smoked tobacco (finding)", None, None]
    assert m["source_unit_ucum"].to_list() == ["cm", None, "/a", "a"]
    assert m["code_system"].to_list() == ["LOINC", "LOINC", "LOINC", "local"]
    assert m["record_id"].to_list() == [f"observations:{i}" for i in range(4)]


def test_older_and_newer_layouts(tmp_path):
    patients = [
        "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,MIDDLE,LAST,SUFFIX,MAIDEN,MARITAL,RACE,"
        "ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,FIPS,ZIP,LAT,LON,HEALTHCARE_EXPENSES,"
        "HEALTHCARE_COVERAGE,INCOME",
        f"{P1},1980-02-03,,,,,,Ann1,Beth2,Smith3,,,,white,nonhispanic,F,,,,Massachusetts,,25025,,,,0,0,50000",
    ]
    conditions = [
        "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION",
        f"2020-01-01,,{P1},{E1},SNOMED-CT,444814009,Viral sinusitis",
        f"2020-01-01,,{P1},{E1},ICD-10-CM,J01.90,Acute sinusitis",
        f"2020-01-01,,{P1},{E1},,1234,No system",
    ]
    procedures = [  # Synthea < 2.5: DATE instead of START/STOP
        "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,BASE_COST,REASONCODE,REASONDESCRIPTION",
        f"2020-01-01T10:05:00Z,{P1},{E1},430193006,Medication Reconciliation,10,,",
    ]
    observations = [  # no CATEGORY, no TYPE
        "DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS",
        f"2020-01-01,{P1},{E1},8302-2,Body Height,170.2,cm",
        f"2020-01-01,{P1},{E1},72166-2,Tobacco smoking status,Never smoker,",
    ]
    ex = read_synthea([export(tmp_path, patients=patients, conditions=conditions, procedures=procedures,
                              observations=observations)])  # fmt: skip
    ledger_ok(ex)
    p = ex.tables["patient"].row(0, named=True)
    assert (p["given"], p["name"], p["state"]) == ("Ann1 Beth2", "Ann1 Beth2 Smith3", "MA")
    assert ex.tables["condition"]["code_system"].to_list() == ["SNOMED", "ICD10CM", "SNOMED"]
    pr = ex.tables["procedure"].row(0, named=True)
    assert (pr["start_time"], pr["end_time"], pr["code_system"]) == (utc(2020, 1, 1, 10, 5), None, "SNOMED")
    m = ex.tables["measurement"]
    assert m["value"].to_list() == [170.2, None] and m["value_text"].to_list() == [None, "Never smoker"]
    assert m["category"].null_count() == 2


def test_times_keep_the_date_as_written(tmp_path):
    observations = [
        "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE",
        f"2015-12-31T23:30:00-05:00,{P1},{E1},vital-signs,8302-2,Body Height,170.2,cm,numeric",
        f"2015-07-04,{P1},{E1},vital-signs,8302-2,Body Height,170.4,cm,numeric",
    ]
    ex = read_synthea([export(tmp_path, observations=observations)])
    m = ex.tables["measurement"]
    assert m["time"].to_list() == [utc(2016, 1, 1, 4, 30), utc(2015, 7, 4)]
    assert m["time_local"].to_list() == [date(2015, 12, 31), date(2015, 7, 4)]
    assert m["time_precision"].to_list() == ["time", "day"]
    p = ex.tables["patient"].sort("patient_id")
    assert p["birth_date_precision"].to_list() == ["day", "day"]
    assert p["death_date_precision"].to_list() == ["day", None]
    out, _ = deidentify(ex.tables, source="synthea", cfg=DeidConfig(mode="off"))
    assert out["measurement"]["year"].to_list() == [2015, 2015]  # not 2016, the year of the UTC instant


def test_missing_optional_column_is_reported(tmp_path, caplog):
    """A conditions.csv without DESCRIPTION (real rows): read, but with a warning naming the file
    and the column, a counter and the column on the file's inputs entry."""
    folder = tmp_path / "csv"
    folder.mkdir()
    for f in CSV_DIR.glob("*.csv.gz"):
        (folder / f.name).write_bytes(f.read_bytes())
    rows = plain("conditions")
    cols = [c for c in rows[0] if c != "DESCRIPTION"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "conditions.csv.gz").write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
    with caplog.at_level(logging.WARNING, logger="dataforge.records.ehr.synthea"):
        ex = read_synthea([folder], root=tmp_path)
    ledger_ok(ex)
    warned = [r.getMessage() for r in caplog.records if "DESCRIPTION" in r.getMessage()]
    assert len(warned) == 1 and "csv/conditions.csv.gz" in warned[0], warned
    assert ex.counters["missing_column:conditions:DESCRIPTION"] == len(rows)
    entry = next(i for i in ex.inputs if i["table"] == "conditions")
    assert entry["missing_columns"] == ["DESCRIPTION"]
    assert all("missing_columns" not in i for i in ex.inputs if i["table"] != "conditions")
    assert ex.tables["condition"]["display"].null_count() == len(rows)


def test_unknown_file_is_skipped_with_a_warning(tmp_path, caplog):
    folder = export(tmp_path)
    write_csv(folder / "patient_notes.csv", ["A,B", "1,2"])
    (folder / "run_metadata.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="dataforge.records.ehr.synthea"):
        ex = read_synthea([folder], root=folder)
    assert any(
        "patient_notes.csv.gz" in r.getMessage() and "patients" in r.getMessage() for r in caplog.records
    )
    skipped = [i for i in ex.inputs if i["role"] == "skipped"]
    assert [(i["path"], i["rows"]) for i in skipped] == [("patient_notes.csv.gz", 0)]
    assert "known:" in skipped[0]["reason"]
    assert ledger_ok(ex)["rows_in"] == 3  # the skipped file's row is not an input record
    assert "run_metadata.json" not in {i["path"] for i in ex.inputs}


def test_unmapped_tables_are_dropped(tmp_path):
    folder = export(
        tmp_path,
        claims=["Id,PATIENTID", "c1,p-1", "c2,p-2"],
        allergies=["START,PATIENT,CODE", f"2020-01-01,{P1},1"],
    )
    ex = read_synthea([folder])
    assert ledger_ok(ex) == {"rows_in": 6, "kept": 3, "dropped": 3, "rejected": 0}
    assert sorted(ex.dropped.select("table", "reason").rows()) == [
        ("allergies", "unmapped_table"), ("claims", "unmapped_table"), ("claims", "unmapped_table")]  # fmt: skip


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_synthea([tmp_path / "nothing"])
    only_obs = tmp_path / "obs"
    only_obs.mkdir()
    write_csv(only_obs / "observations.csv", OBSERVATIONS)
    with pytest.raises(InputError, match="no patients.csv"):
        read_synthea([only_obs])
    folder = export(tmp_path)
    with pytest.raises(InputError, match="given twice"):
        read_synthea([folder, write_csv(tmp_path / "patients.csv", PATIENTS, gz=False)])
    other = tmp_path / "other"
    other.mkdir()
    bad = export(other, encounters=["Id,STOP,PATIENT", "e,,p"])
    with pytest.raises(InputError, match=r"missing column\(s\) \['START'\]"):
        read_synthea([bad])


# --------------------------------------------------------------------------- rejects


def _reject(ex, reason: str) -> dict:
    ledger_ok(ex)
    rows = ex.rejects.filter(pl.col("reason") == reason)
    assert rows.height == 1, ex.rejects
    return rows.row(0, named=True)


@pytest.mark.parametrize(
    ("table", "lines", "reason", "line", "needle"),
    [
        ("observations", [OBSERVATIONS[0], f"2020-13-45T10:05:00Z,{P1},{E1},vital-signs,8302-2,H,1.0,cm,numeric"],
         "bad_date", 2, "DATE '2020-13-45T10:05:00Z' is not a date"),
        ("observations", [OBSERVATIONS[0], f"2020-01-01T10:05:00Z,{P1},{E1},vital-signs,8302-2,H,1.0.1,cm,numeric"],
         "bad_number", 2, "VALUE '1.0.1' is not a number"),
        ("observations", [OBSERVATIONS[0], f"2020-01-01T10:05:00Z,ghost,{E1},vital-signs,8302-2,H,1.0,cm,numeric"],
         "unknown_patient", 2, "PATIENT 'ghost' is not a patient"),
        ("observations", [OBSERVATIONS[0], f"2020-01-01T10:05:00Z,{P1},e-404,vital-signs,8302-2,H,1.0,cm,numeric"],
         "unknown_encounter", 2, "ENCOUNTER 'e-404' is not an encounter"),
        ("observations", [OBSERVATIONS[0], f"2020-01-01T10:05:00Z,{P1},{E1},vital-signs,8302-2,H,1.0,cm"],
         "ragged_row", 2, "8 fields, header has 9"),
        ("conditions", ["START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION", f"2020-01-01,,{P1},{E1},,Nothing"],
         "missing_value", 2, "CODE is empty"),
        ("conditions", ["START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION", f"2020-01-01,01/02/2020,{P1},{E1},1,X"],
         "bad_date", 2, "STOP '01/02/2020'"),
        ("medications", ["START,STOP,PATIENT,ENCOUNTER,CODE,DESCRIPTION", f'"2020-01-01T10:00:00Z",,"{P1}",{E1},1,"Multi\nline"',
                         f"2020-01-01T10:00:00Z,never,{P1},{E1},2,Y"],
         "bad_date", 4, "STOP 'never'"),
        ("patients", [*PATIENTS, PATIENTS[2]], "duplicate_id", 4, f"Id '{P2}' repeats"),
    ],
)  # fmt: skip
def test_bad_rows_are_rejected_naming_file_line_column_value(tmp_path, table, lines, reason, line, needle):
    folder = export(tmp_path, **{table: lines})
    ex = read_synthea([folder], root=tmp_path)
    r = _reject(ex, reason)
    assert r["source_file"] == f"csv/{table}.csv.gz"
    assert r["source_line"] == line
    assert r["error"].startswith(f"csv/{table}.csv.gz line {line}"), r["error"]
    assert needle in r["error"], r["error"]
    assert r["raw"] is not None


def test_rejected_encounter_cascades_to_its_rows(tmp_path):
    encounters = [ENCOUNTERS[0], ENCOUNTERS[1].replace("2020-01-01T10:00:00Z", "2020-01-01 10h")]
    ex = read_synthea([export(tmp_path, encounters=encounters, observations=OBSERVATIONS[:2])])
    ledger_ok(ex)
    assert ex.rejects["reason"].to_list() == ["bad_date", "unknown_encounter"]


def test_truncated_gzip_keeps_complete_rows(tmp_path):
    folder = export(tmp_path)
    rows = [OBSERVATIONS[0]] + [
        f"2020-01-01T10:05:{i % 60:02d}Z,{P1},{E1},vital-signs,8302-2,Body Height {i},{i}.5,cm,numeric"
        for i in range(3000)
    ]
    data = gzip.compress(("\n".join(rows) + "\n").encode(), mtime=0)
    (folder / "observations.csv.gz").write_bytes(data[: len(data) // 2])
    ex = read_synthea([folder], root=tmp_path)
    r = _reject(ex, "truncated")
    assert r["error"].startswith("csv/observations.csv.gz: ") and "truncated" in r["error"]
    kept = ex.tables["measurement"].height
    assert 0 < kept < 3000
    assert ex.rows_in == 3 + kept + 1
