"""FHIR R4 reader: ledger on the real Synthea Bundles, mapping details, rejects, determinism."""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest
import zstandard
from polars.testing import assert_frame_equal

import dataforge
from dataforge.errors import InputError
from dataforge.io.shards import read_manifest, read_shard
from dataforge.records.ehr.columns import RAW_COLUMNS
from dataforge.records.ehr.fhir import parse_datetime, parse_when, read_fhir

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "ehr"
FHIR_DIR = SAMPLE / "synthea_fhir"
MAPPED = {
    "Patient", "Encounter", "Condition", "Observation", "MedicationRequest",
    "MedicationAdministration", "Immunization", "Procedure", "DocumentReference",
}  # fmt: skip


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def bundles() -> dict[str, dict]:
    return {p.name: json.loads(gzip.decompress(p.read_bytes())) for p in sorted(FHIR_DIR.glob("*.json.gz"))}


def all_rows(extract) -> pl.DataFrame:
    return pl.concat([t.select("source_file", "source_row", "source_ref") for t in extract.tables.values()])


@pytest.fixture(scope="module")
def real():
    return read_fhir([FHIR_DIR], root=SAMPLE)


# --------------------------------------------------------------------------- small resources

PID = "p-1"
EID = "e-1"


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1980-02-03", **extra}


def encounter(**extra) -> dict:
    return {
        "resourceType": "Encounter",
        "id": EID,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
        "subject": {"reference": f"Patient/{PID}"},
        "period": {"start": "2020-01-01T10:00:00-05:00", "end": "2020-01-01T11:30:00-05:00"},
        **extra,
    }


def loinc(code: str, display: str | None = None) -> dict:
    coding = {"system": "http://loinc.org", "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def observation(oid: str = "o-1", **extra) -> dict:
    res = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": loinc("8302-2", "Body Height"),
        "subject": {"reference": f"Patient/{PID}"},
        "encounter": {"reference": f"Encounter/{EID}"},
        "effectiveDateTime": "2020-01-01T10:15:00-05:00",
        "valueQuantity": {"value": 170.2, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
    }
    res.update(extra)
    return {k: v for k, v in res.items() if v is not None}


def bundle(*resources: dict, kind: str = "collection", urls: bool = False) -> dict:
    entries = []
    for r in resources:
        entry = {"resource": r}
        if urls:
            entry["fullUrl"] = f"urn:uuid:{r['id']}"
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def write_json(path: Path, doc, *, compress: str = "none") -> Path:
    data = json.dumps(doc).encode()
    if compress == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compress == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def write_ndjson(path: Path, lines: list, *, compress: str = "none") -> Path:
    data = b"\n".join(x if isinstance(x, bytes) else json.dumps(x).encode() for x in lines) + b"\n"
    if compress == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compress == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def ledger_ok(extract) -> dict:
    counts = extract.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"], counts
    return counts


# --------------------------------------------------------------------------- real Synthea Bundles


def test_ledger_adds_up_on_the_real_bundles(real):
    docs = bundles()
    entries = [e for b in docs.values() for e in b["entry"]]
    types = Counter(e["resource"]["resourceType"] for e in entries)
    counts = ledger_ok(real)
    assert counts["rows_in"] == len(entries)
    assert counts["rejected"] == 0
    assert counts["kept"] == sum(n for t, n in types.items() if t in MAPPED)
    dropped = real.dropped
    assert set(dropped["reason"]) == {"unmapped_resource"}
    assert dict(Counter(dropped["table"])) == {t: n for t, n in types.items() if t not in MAPPED}
    assert [i["rows"] for i in real.inputs] == [len(b["entry"]) for b in docs.values()]
    assert {i["role"] for i in real.inputs} == {"records"} and {i["table"] for i in real.inputs} == {"Bundle"}


def test_every_row_points_back_to_its_entry(real):
    docs = bundles()
    rows = all_rows(real)
    assert rows["source_row"].null_count() == 0
    for file, row, ref in rows.iter_rows():
        resource = docs[Path(file).name]["entry"][row]["resource"]
        assert ref == f"{resource['resourceType']}/{resource['id']}"
    for name in ("condition", "measurement", "medication", "procedure", "note"):
        t = real.tables[name]
        assert t["record_id"].n_unique() == t.height, name
        ids = t["record_id"].str.split("#").list.first()
        assert (ids == t["source_ref"].str.split("/").list.last()).all(), name


def test_tables_have_exactly_the_raw_columns(real):
    for name, frame in real.tables.items():
        assert dict(frame.schema) == RAW_COLUMNS[name], name


def test_real_patient_mapping(real):
    docs = bundles()
    p = (
        real.tables["patient"]
        .filter(pl.col("patient_id") == "515991e2-40dd-22c1-c377-e0b71ad973b9")
        .row(0, named=True)
    )
    raw = next(
        e["resource"] for b in docs.values() for e in b["entry"] if e["resource"]["id"] == p["patient_id"]
    )
    assert p["gender"] == raw["gender"] == "female"
    assert p["birth_date"] == utc(1987, 4, 27)
    assert (p["race"], p["ethnicity"], p["marital_status"], p["language"]) == (
        "white",
        "nonhispanic",
        "M",
        "en-US",
    )
    assert (p["family"], p["given"], p["prefix"], p["maiden"]) == (
        "Cormier289",
        "Margorie48 Graciela518",
        "Mrs.",
        "Okuneva707",
    )
    assert (p["ssn"], p["drivers"], p["passport"], p["mrn"]) == (
        "999-66-2214",
        "S99992337",
        "X33401017X",
        p["patient_id"],
    )
    assert (p["state"], p["zip"], p["country"], p["city"]) == ("MA", "01810", "US", "Andover")
    assert p["birthplace"] == "Weymouth, Massachusetts, US"
    assert p["phone"] == raw["telecom"][0]["value"]
    assert p["lat"] == pytest.approx(42.621206705980875)
    assert p["deceased"] is None and p["death_date"] is None


def test_real_timestamps_are_utc(real):
    enc = real.tables["encounter"].filter(pl.col("encounter_id") == "8dda2382-8e9f-d1dc-e332-fc9c41b431d6")
    # "period": {"start": "1995-09-12T14:14:25-04:00", "end": "1995-09-12T15:14:25-04:00"}
    assert enc["start_time"].to_list() == [utc(1995, 9, 12, 18, 14, 25)]
    assert enc["end_time"].to_list() == [utc(1995, 9, 12, 19, 14, 25)]
    assert enc["class"].to_list() == ["ambulatory"]
    assert enc["reason_code"].to_list() == ["192127007"]


def test_real_components_and_notes(real):
    docs = bundles()
    m = real.tables["measurement"]
    for b in docs.values():
        for e in b["entry"]:
            r = e["resource"]
            if r["resourceType"] == "Observation" and "component" in r:
                got = m.filter(pl.col("source_ref") == f"Observation/{r['id']}")
                codes = [c["code"]["coding"][0]["code"] for c in r["component"]]
                assert got["record_id"].to_list() == [f"{r['id']}#{c}" for c in codes]
    bp = m.filter(pl.col("code") == "8480-6")
    assert bp.height > 0 and set(bp["source_unit_ucum"]) == {"mm[Hg]"}
    notes = real.tables["note"]
    doc = next(
        e["resource"]
        for b in docs.values()
        for e in b["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )
    row = notes.filter(pl.col("record_id") == doc["id"]).row(0, named=True)
    assert row["text"] == base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")
    assert row["note_type"] == doc["type"]["coding"][0]["display"]
    # procedures give their reason as a reasonReference to a Condition: resolved to its code
    proc = next(
        e["resource"] for b in docs.values() for e in b["entry"]
        if e["resource"]["resourceType"] == "Procedure" and "reasonReference" in e["resource"]
    )  # fmt: skip
    cond_url = proc["reasonReference"][0]["reference"]
    cond = next(e["resource"] for b in docs.values() for e in b["entry"] if e.get("fullUrl") == cond_url)
    got = real.tables["procedure"].filter(pl.col("record_id") == proc["id"])
    assert got["reason_code"].to_list() == [cond["code"]["coding"][0]["code"]]
    # the Mirena MedicationRequest names its drug through a referenced Medication resource
    med = real.tables["medication"].filter(pl.col("code") == "807283")
    assert set(med["category"]) == {"prescription", "administration"}


def test_deterministic(tmp_path):
    a = read_fhir([FHIR_DIR], root=SAMPLE)
    files = sorted(FHIR_DIR.glob("*.json.gz"), reverse=True)
    b = read_fhir(files, root=SAMPLE)
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        assert_frame_equal(a.tables[name], b.tables[name])
    assert_frame_equal(a.dropped, b.dropped)
    assert a.ledger_counts() == b.ledger_counts()


# --------------------------------------------------------------------------- mapping details


def test_references_of_every_form_resolve(tmp_path):
    pat = patient(identifier=[{"system": "https://example.org/mrn", "value": "A-7"}])
    med = {
        "resourceType": "Medication",
        "id": "m-1",
        "code": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "197361",
                    "display": "Amlodipine",
                }
            ]
        },
    }
    rx_conditional = {
        "resourceType": "MedicationRequest",
        "id": "rx-1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient?identifier=https://example.org/mrn|A-7"},
        "encounter": {"reference": f"urn:uuid:{EID}"},
        "medicationReference": {"reference": "urn:uuid:m-1"},
        "authoredOn": "2020-01-01",
    }
    rx_contained = {
        "resourceType": "MedicationRequest",
        "id": "rx-2",
        "status": "active",
        "intent": "order",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "inner",
                "code": {
                    "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "310965"}]
                },
            }
        ],
        "medicationReference": {"reference": "#inner"},
        "subject": {"reference": f"http://server/fhir/Patient/{PID}/_history/2"},
    }
    write_json(tmp_path / "b.json", bundle(pat, encounter(), med, rx_conditional, rx_contained, urls=True))
    ex = read_fhir([tmp_path])
    ledger_ok(ex)
    meds = ex.tables["medication"].sort("record_id")
    assert meds["patient_id"].to_list() == [PID, PID]
    assert meds["encounter_id"].to_list() == [EID, None]
    assert meds["code"].to_list() == ["197361", "310965"]
    assert meds["code_system"].to_list() == ["RxNorm", "RxNorm"]
    assert meds["start_time"].to_list() == [utc(2020, 1, 1), None]
    assert ex.dropped.filter(pl.col("table") == "Medication")["reason"].to_list() == ["unmapped_resource"]


def test_patient_details_and_missing_optionals(tmp_path):
    full = patient(
        id="p-2",
        deceasedDateTime="2021-05-06T23:30:00-02:00",
        extension=[
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
             "extension": [{"url": "ombCategory", "valueCoding": {"code": "2054-5"}}]},
            {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
             "extension": [{"url": "text", "valueString": "Declined"}]},
        ],
        name=[{"use": "official", "given": ["Ann", "B"], "family": "Smith", "suffix": ["Jr."]}],
        address=[{"use": "old", "state": "Texas"}, {"use": "home", "state": "New York", "postalCode": "10001"}],
        telecom=[{"system": "email", "value": "a@example.org"}],
        identifier=[{"type": {"coding": [{"code": "PPN"}]}, "value": "X1"},
                    {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}],
        contact=[{"relationship": [{"text": "daughter"}], "name": {"given": ["Priya"], "family": "Rao"}},
                 {"name": {"text": "Tom Jones"}}, {"telecom": []}],
    )  # fmt: skip
    full["extension"].append(
        {
            "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
            "valueString": "Gertrude55",
        }
    )
    bare = {"resourceType": "Patient", "id": "p-3"}
    write_json(tmp_path / "b.json", bundle(full, bare))
    ex = read_fhir([tmp_path / "b.json"])
    ledger_ok(ex)
    p = {r["patient_id"]: r for r in ex.tables["patient"].iter_rows(named=True)}
    a = p["p-2"]
    assert a["death_date"] == utc(2021, 5, 7, 1, 30) and a["deceased"] is True
    assert (a["race"], a["ethnicity"]) == ("black", "declined")
    assert (a["name"], a["given"], a["suffix"]) == ("Ann B Smith", "Ann B", "Jr.")
    assert (a["state"], a["zip"], a["email"], a["passport"], a["ssn"]) == (
        "NY",
        "10001",
        "a@example.org",
        "X1",
        "999-12-3456",
    )
    # relatives' and contacts' names are PHI (scrubbed from free text)
    assert a["relatives"] == "Gertrude55 Priya Rao Tom Jones"
    b = p["p-3"]
    assert all(
        v is None for k, v in b.items() if k not in ("patient_id", "source_file", "source_row", "source_ref")
    )


def test_observation_values(tmp_path):
    resources = [
        patient(), encounter(),
        observation("q", valueQuantity={"value": 7.25, "unit": "mmol/l", "system": "http://unitsofmeasure.org", "code": "mmol/L"}),
        observation("c", valueQuantity=None, valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "266919005", "display": "Never smoked"}]}),
        observation("s", valueQuantity=None, valueString="positive"),
        observation("i", valueQuantity=None, valueInteger=3),
        observation("r", valueQuantity=None, valueRange={"low": {"value": 1}, "high": {"value": 2}}),
        observation("bp", valueQuantity=None, code=loinc("85354-9"), component=[
            {"code": loinc("8480-6"), "valueQuantity": {"value": 120, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": loinc("8462-4"), "valueQuantity": {"value": 80, "unit": "mmHg"}},
        ]),
        observation("ref", referenceRange=[{"low": {"value": 3.5}, "high": {"value": 5.1}}],
                    interpretation=[{"coding": [{"code": "H"}]}]),
        observation("panel", valueQuantity=None, hasMember=[{"reference": "Observation/q"}]),
        observation("none", valueQuantity=None, encounter=None, effectiveDateTime=None),
    ]  # fmt: skip
    write_json(tmp_path / "b.json", bundle(*resources))
    ex = read_fhir([tmp_path])
    ledger_ok(ex)
    m = {r["record_id"]: r for r in ex.tables["measurement"].iter_rows(named=True)}
    assert (m["q"]["value"], m["q"]["source_value"], m["q"]["source_unit"], m["q"]["source_unit_ucum"]) == (
        7.25, "7.25", "mmol/l", "mmol/L")  # fmt: skip
    assert m["q"]["time"] == utc(2020, 1, 1, 15, 15) and m["q"]["code_system"] == "LOINC"
    assert (m["c"]["value"], m["c"]["value_text"], m["c"]["source_value"]) == (
        None,
        "Never smoked",
        "266919005",
    )
    assert m["s"]["value_text"] == "positive" and m["i"]["value"] == 3.0 and m["r"]["value_text"] == "1-2"
    assert "bp" not in m
    assert (m["bp#8480-6"]["value"], m["bp#8480-6"]["source_unit_ucum"]) == (120.0, "mm[Hg]")
    assert (m["bp#8462-4"]["value"], m["bp#8462-4"]["source_unit"], m["bp#8462-4"]["source_unit_ucum"]) == (
        80.0,
        "mmHg",
        None,
    )
    assert m["bp#8480-6"]["source_row"] == m["bp#8462-4"]["source_row"]
    assert (m["ref"]["ref_low"], m["ref"]["ref_high"], m["ref"]["interpretation"]) == (3.5, 5.1, "H")
    assert (m["none"]["value"], m["none"]["time"], m["none"]["encounter_id"]) == (None, None, None)
    assert ex.dropped["reason"].to_list() == ["panel_without_value"]


def test_other_resources(tmp_path):
    text = "Patient Ann, 44 years old.\nPlan: rest."
    resources = [
        patient(), encounter(),
        {"resourceType": "Condition", "id": "c", "subject": {"reference": f"Patient/{PID}"},
         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J20.9"}], "text": "Acute bronchitis"},
         "category": [{"coding": [{"code": "problem-list-item"}]}],
         "onsetPeriod": {"start": "2020-01-01"}, "abatementDateTime": "2020-02"},
        {"resourceType": "Immunization", "id": "i", "status": "completed", "patient": {"reference": f"Patient/{PID}"},
         "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
         "occurrenceDateTime": "2020-01-01T10:00:00Z"},
        {"resourceType": "MedicationAdministration", "id": "ma", "status": "completed",
         "subject": {"reference": f"Patient/{PID}"}, "context": {"reference": f"Encounter/{EID}"},
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}]},
         "effectivePeriod": {"start": "2020-01-01T10:00:00Z", "end": "2020-01-01T10:05:00Z"},
         "dosage": {"dose": {"value": 5, "unit": "mg"}, "route": {"coding": [{"display": "Oral"}]}}},
        {"resourceType": "Procedure", "id": "pr", "status": "completed", "subject": {"reference": f"Patient/{PID}"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
         "performedDateTime": "2020-01-01T10:00:00+01:00", "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}]},
        {"resourceType": "DocumentReference", "id": "d", "status": "current", "subject": {"reference": f"Patient/{PID}"},
         "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}], "text": "Progress note"},
         "context": {"encounter": [{"reference": f"Encounter/{EID}"}], "period": {"start": "2020-01-01T10:00:00Z"}},
         "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": base64.b64encode(text.encode()).decode()}}]},
        {"resourceType": "Procedure", "id": "gone", "status": "entered-in-error", "subject": {"reference": f"Patient/{PID}"},
         "code": {"coding": [{"code": "x"}]}},
        {"resourceType": "AllergyIntolerance", "id": "al", "patient": {"reference": f"Patient/{PID}"}},
    ]  # fmt: skip
    write_json(tmp_path / "b.json", bundle(*resources))
    ex = read_fhir([tmp_path])
    counts = ledger_ok(ex)
    assert counts == {"rows_in": 9, "kept": 7, "dropped": 2, "rejected": 0}
    c = ex.tables["condition"].row(0, named=True)
    assert (c["code_system"], c["display"], c["category"]) == (
        "ICD10CM",
        "Acute bronchitis",
        "problem-list-item",
    )
    assert (c["start_time"], c["end_time"]) == (utc(2020, 1, 1), utc(2020, 2, 1))
    meds = {r["record_id"]: r for r in ex.tables["medication"].iter_rows(named=True)}
    assert (meds["i"]["category"], meds["i"]["code_system"], meds["i"]["status"]) == (
        "immunization",
        "CVX",
        "completed",
    )
    ma = meds["ma"]
    assert (ma["category"], ma["encounter_id"], ma["dose_value"], ma["dose_unit"], ma["route"]) == (
        "administration", EID, 5.0, "mg", "Oral")  # fmt: skip
    assert ma["end_time"] == utc(2020, 1, 1, 10, 5)
    pr = ex.tables["procedure"].row(0, named=True)
    assert (pr["start_time"], pr["reason_code"], pr["reason_system"]) == (utc(2020, 1, 1, 9), "1", "SNOMED")
    note = ex.tables["note"].row(0, named=True)
    assert (note["text"], note["note_type"], note["encounter_id"], note["time"]) == (
        text, "Progress note", EID, utc(2020, 1, 1, 10))  # fmt: skip
    assert sorted(ex.dropped["reason"]) == ["entered_in_error", "unmapped_resource"]
    e = ex.tables["encounter"].row(0, named=True)
    assert (e["class"], e["status"], e["start_time"]) == ("emergency", "finished", utc(2020, 1, 1, 15))


def test_file_shapes_single_array_searchset_ndjson_zstd(tmp_path):
    (tmp_path / "sub").mkdir()
    write_json(tmp_path / "a_patient.json", patient())
    write_json(tmp_path / "b_array.json", [encounter()], compress="gzip")
    write_json(tmp_path / "sub" / "c_search.json", bundle(observation("o1"), kind="searchset"))
    write_ndjson(
        tmp_path / "sub" / "d.ndjson.zst", [observation("o2"), bundle(observation("o3"))], compress="zstd"
    )
    (tmp_path / "notes.txt").write_text("not fhir")
    ex = read_fhir([tmp_path], root=tmp_path)
    ledger_ok(ex)
    assert [(i["path"], i["table"], i["rows"]) for i in ex.inputs] == [
        ("a_patient.json", "Patient", 1),
        ("b_array.json", "Encounter", 1),
        ("sub/c_search.json", "Bundle", 1),
        ("sub/d.ndjson.zst", "Bundle", 2),
    ]
    m = ex.tables["measurement"]
    assert m["record_id"].to_list() == ["o1", "o2", "o3"]
    assert m.filter(pl.col("source_file") == "sub/d.ndjson.zst")["source_row"].to_list() == [0, 1]


def test_parse_datetime_forms():
    assert parse_datetime("2020", "w", "x") == utc(2020, 1, 1)
    assert parse_datetime("2020-03", "w", "x") == utc(2020, 3, 1)
    assert parse_datetime("2020-03-04T05:06:07.5+05:30", "w", "x") == utc(2020, 3, 3, 23, 36, 7, 500000)
    assert parse_datetime("2020-03-04T05:06:07Z", "w", "x") == utc(2020, 3, 4, 5, 6, 7)
    assert parse_datetime(None, "w", "x") is None


def test_parse_when_keeps_the_date_as_written_and_the_precision():
    w = parse_when("2015-12-31T23:30:00-05:00", "w", "x")
    assert (w.utc, w.local, w.precision) == (utc(2016, 1, 1, 4, 30), date(2015, 12, 31), "time")
    w = parse_when("2015-07-04T23:30:00+14:00", "w", "x")
    assert (w.utc, w.local) == (utc(2015, 7, 4, 9, 30), date(2015, 7, 4))
    forms = {"2015": "year", "2015-07": "month", "2015-07-04": "day", "2015-07-04T10:00:00Z": "time"}
    assert {v: parse_when(v, "w", "x").precision for v in forms} == forms
    assert parse_when("2015-07", "w", "x").local == date(2015, 7, 1)
    assert parse_when(None, "w", "x") is None


def test_rows_carry_the_local_date_and_the_precision(tmp_path):
    obs = [
        observation("o-1", effectiveDateTime="2015"),
        observation("o-2", effectiveDateTime="2015-07"),
        observation("o-3", effectiveDateTime="2015-07-04"),
        observation("o-4", effectiveDateTime="2015-12-31T23:30:00-05:00"),
    ]
    path = write_json(tmp_path / "b.json", bundle(patient(birthDate="1950"), encounter(), *obs))
    ex = read_fhir([path])
    m = ex.tables["measurement"].sort("record_id")
    assert m["time_precision"].to_list() == ["year", "month", "day", "time"]
    assert m["time_local"].to_list() == [
        date(2015, 1, 1),
        date(2015, 7, 1),
        date(2015, 7, 4),
        date(2015, 12, 31),
    ]
    assert m["time"][3] == utc(2016, 1, 1, 4, 30)
    p = ex.tables["patient"].row(0, named=True)
    assert (p["birth_date_local"], p["birth_date_precision"]) == (date(1950, 1, 1), "year")
    e = ex.tables["encounter"].row(0, named=True)
    assert (e["start_time_precision"], e["end_time_precision"]) == ("time", "time")


def _real_bundle_with_dates(tmp_path: Path) -> tuple[Path, list[int]]:
    """Temika's real bundle with a year-only birth date and four Observations dated ``2015``,
    ``2015-07``, ``2015-07-04`` and ``2015-12-31T23:30:00-05:00`` (2016 in UTC); returns the folder
    and the entry indexes (``source_row``) of those Observations."""
    name = "Temika453_Wuckert783_b37f7960-7e9e-f3f7-f891-79ae4f632406.json.gz"
    doc = bundles()[name]
    assert doc["entry"][0]["resource"]["resourceType"] == "Patient"
    doc["entry"][0]["resource"]["birthDate"] = "2011"
    rows = [
        i
        for i, e in enumerate(doc["entry"])
        if e["resource"]["resourceType"] == "Observation" and "valueQuantity" in e["resource"]
    ][:4]
    for i, when in zip(rows, ("2015", "2015-07", "2015-07-04", "2015-12-31T23:30:00-05:00"), strict=True):
        doc["entry"][i]["resource"]["effectiveDateTime"] = when
    folder = tmp_path / "in"
    folder.mkdir()
    write_json(folder / "bundle.json", doc)
    return folder, rows


def _table(out: Path, name: str) -> pl.DataFrame:
    shards = read_manifest(out)["tables"][name]["shards"]
    return pl.concat([pl.from_arrow(read_shard(out / s["path"])) for s in shards])


def test_years_are_the_local_years_and_partial_dates_keep_their_precision(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFORGE_DEID_SALT", "unit-test-salt-0123456789")
    folder, rows = _real_bundle_with_dates(tmp_path)
    got, born = {}, {}
    for mode in ("off", "date-shift", "safe-harbor"):
        dataforge.normalize_ehr([folder], output=tmp_path / mode, source="fhir", deid=mode)
        by_row = {r["source_row"]: r for r in _table(tmp_path / mode, "measurement").iter_rows(named=True)}
        got[mode] = [by_row[i] for i in rows]
        born[mode] = _table(tmp_path / mode, "patient").row(0, named=True)

    def cols(r: dict) -> tuple:
        return r["year"], r["time"], r["time_precision"]

    year, month, day, late = got["off"]
    # 23:30 on 31 December at UTC-5 is in 2015, though its UTC instant is in 2016
    assert cols(late) == (2015, utc(2016, 1, 1, 4, 30), "time")
    # a partial date is stored as its first day, flagged with its precision
    assert cols(year) == (2015, utc(2015, 1, 1), "year")
    assert cols(month) == (2015, utc(2015, 7, 1), "month")
    assert cols(day) == (2015, utc(2015, 7, 4), "day")
    p = born["off"]
    assert (p["birth_date"], p["birth_year"], p["birth_date_precision"]) == (date(2011, 1, 1), 2011, "year")

    # date-shift: days and times move by the patient's offset, a month stays a month, a year stays
    year, month, day, late = got["date-shift"]
    delta = utc(2016, 1, 1, 4, 30) - late["time"]
    assert 1 <= delta.days <= 365 and delta.seconds == 0
    assert late["year"] == (date(2015, 12, 31) - delta).year
    assert cols(day) == ((utc(2015, 7, 4) - delta).year, utc(2015, 7, 4) - delta, "day")
    first = date(2015, 7, 1) - delta
    assert cols(month) == (first.year, utc(first.year, first.month, 1), "month")
    assert cols(year) == (2015, utc(2015, 1, 1), "year")
    p = born["date-shift"]
    assert (p["birth_date"], p["birth_year"], p["birth_date_precision"]) == (date(2011, 1, 1), 2011, "year")

    # safe-harbor: the local year and the precision remain
    assert [cols(r) for r in got["safe-harbor"]] == [
        (2015, None, "year"),
        (2015, None, "month"),
        (2015, None, "day"),
        (2015, None, "time"),
    ]


# --------------------------------------------------------------------------- rejects


def _only_reject(ex) -> dict:
    ledger_ok(ex)
    rejects = ex.rejects
    assert rejects.height == 1, rejects
    return rejects.row(0, named=True)


def test_truncated_gzip_bundle_is_one_rejected_record(tmp_path):
    data = gzip.compress(json.dumps(bundle(patient(), encounter())).encode(), mtime=0)
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    ex = read_fhir([path])
    r = _only_reject(ex)
    assert r["reason"] == "truncated" and str(path) in r["error"] and "truncated" in r["error"]
    assert ex.rows_in == 1 and not ex.tables


def test_truncated_ndjson_keeps_the_complete_lines(tmp_path):
    lines = [patient(), encounter()] + [observation(f"o{i}") for i in range(400)]
    data = gzip.compress(b"\n".join(json.dumps(x).encode() for x in lines) + b"\n", mtime=0)
    path = tmp_path / "cut.ndjson.gz"
    path.write_bytes(data[: int(len(data) * 0.6)])
    ex = read_fhir([path])
    r = _only_reject(ex)
    assert r["reason"] == "truncated" and str(path) in r["error"]
    kept = ex.tables["measurement"].height
    assert 0 < kept < 400
    assert ex.rows_in == 2 + kept + 1


def test_bad_json_line_in_ndjson(tmp_path):
    lines = [patient(), encounter(), b'{"resourceType": "Observation", "id": ', b"", observation()]
    path = write_ndjson(tmp_path / "x.ndjson", lines)
    ex = read_fhir([path])
    r = _only_reject(ex)
    assert (r["reason"], r["source_line"], r["source_row"]) == ("bad_json", 3, 2)
    assert f"{path} line 3" in r["error"] and '"resourceType": "Observation"' in r["error"]
    assert ex.tables["measurement"]["source_row"].to_list() == [3]  # the blank line is not a record


def test_not_json_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("<Bundle/>")
    r = _only_reject(read_fhir([path]))
    assert r["reason"] == "bad_json" and str(path) in r["error"]


@pytest.mark.parametrize(
    ("bad", "reason", "needle"),
    [
        (observation(code=None), "missing_code", "has no code"),
        (observation(code={"text": "height"}), "missing_code", "height"),
        (observation(subject=None), "missing_subject", "has no subject"),
        (observation(subject={"reference": "Patient/nobody"}), "unknown_patient", "Patient/nobody"),
        (observation(encounter={"reference": "urn:uuid:void"}), "dangling_reference", "urn:uuid:void"),
        (observation(effectiveDateTime="2020-13-45T10:00:00Z"), "bad_date", "2020-13-45T10:00:00Z"),
        (observation(effectiveDateTime="yesterday"), "bad_date", "'yesterday'"),
        (observation(valueQuantity={"value": "12,5", "unit": "cm"}), "bad_number", "'12,5'"),
        (observation(valueQuantity={"value": True}), "wrong_type", "True"),
        (observation(code="8302-2"), "wrong_type", "code is str"),
        (observation(component=[{"valueQuantity": {"value": 1}}], valueQuantity=None), "missing_code", "component[0]"),
        ({"resourceType": "Patient", "gender": "male"}, "missing_id", "Patient has no id"),
        ({"resourceType": "Encounter", "id": "e-9", "subject": {"reference": f"Patient/{PID}"},
          "period": {"start": "2020-02-30"}}, "bad_date", "period.start '2020-02-30'"),
        ({"resourceType": "MedicationRequest", "id": "rx", "subject": {"reference": f"Patient/{PID}"}},
         "missing_code", "no medication[x]"),
        ({"resourceType": "DocumentReference", "id": "d", "subject": {"reference": f"Patient/{PID}"},
          "content": [{"attachment": {"data": "!!!notbase64"}}]}, "bad_attachment", "content[0].attachment"),
        ("just a string", "wrong_type", "expected a FHIR resource"),
    ],
)  # fmt: skip
def test_malformed_resource_is_rejected_with_file_line_element_value(tmp_path, bad, reason, needle):
    path = write_ndjson(tmp_path / "r.ndjson", [patient(), encounter(), bad])
    ex = read_fhir([path])
    r = _only_reject(ex)
    assert r["reason"] == reason, r["error"]
    assert r["error"].startswith(f"{path} line 3"), r["error"]
    assert needle in r["error"], r["error"]
    assert (r["source_row"], r["source_line"]) == (2, 3)
    assert r["raw"] is not None


def test_reference_to_a_rejected_patient_is_rejected(tmp_path):
    bad_patient = patient(birthDate="1980-02-31")
    path = write_json(tmp_path / "b.json", bundle(bad_patient, encounter(), observation()))
    ex = read_fhir([path])
    ledger_ok(ex)
    assert ex.rejects["reason"].to_list() == ["bad_date", "unknown_patient", "unknown_patient"]
    assert ex.rejects["source_row"].to_list() == [0, 1, 2]
    assert all(e.startswith(f"{path} entry ") for e in ex.rejects["error"])


def test_bundle_entry_without_resource_is_dropped(tmp_path):
    doc = bundle(patient())
    doc["entry"].append({"request": {"method": "DELETE", "url": "Patient/x"}})
    ex = read_fhir([write_json(tmp_path / "b.json", doc)])
    assert ledger_ok(ex) == {"rows_in": 2, "kept": 1, "dropped": 1, "rejected": 0}
    assert ex.dropped["reason"].to_list() == ["no_resource"]


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_fhir([tmp_path / "missing.json"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no \\*.json"):
        read_fhir([tmp_path / "empty"])
