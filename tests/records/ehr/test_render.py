"""Rendering EHR tables as text and Q/A: phrasing of the patient, codes without a display, and
medication lists (one name each, no IV diluents or containers, capped) on the real MIMIC slice."""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

import polars as pl
import pytest

from dataforge.records.ehr.deid import DeidConfig, deidentify
from dataforge.records.ehr.mimic import read_mimic
from dataforge.records.ehr.render import MAX_LISTED, is_drug, render_instruct, render_text
from dataforge.records.ehr.synthea import read_synthea

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "ehr"
OFF = DeidConfig(mode="off")


def _patients(genders: list[str | None]) -> pl.DataFrame:
    n = len(genders)
    return pl.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "gender": genders,
            "age": [40 + i for i in range(n)],
            "age_90_plus": [False] * n,
            "birth_year": [1980 - i for i in range(n)],
        },
        schema_overrides={"gender": pl.Utf8},
    )


def test_patient_phrasing():
    genders = ["female", "male", "unknown", None, "other"]
    text = render_text({"patient": _patients(genders)})
    firsts = [t.splitlines()[0] for t in text.sort("id")["text"]]
    assert firsts == [
        "A female patient aged 40 at the last record, born in 1980.",
        "A male patient aged 41 at the last record, born in 1979.",
        "A patient of unknown sex aged 42 at the last record, born in 1978.",
        "A patient of unknown sex aged 43 at the last record, born in 1977.",
        "A patient of other gender aged 44 at the last record, born in 1976.",
    ]
    old = _patients(["unknown"]).with_columns(pl.lit(True).alias("age_90_plus"), pl.lit(None).alias("age"))
    assert render_text({"patient": old})["text"][0] == "A patient of unknown sex aged 90 or older."
    for t in firsts:
        assert not re.search(r"\bA (?:unknown|other|[aeiou])", t), t


def test_a_code_without_display_is_named_by_its_system():
    patient = _patients(["female"])
    measurement = pl.DataFrame(
        {
            "patient_id": ["P0", "P0"],
            "record_id": ["M1", "M2"],
            "year": [2015, 2016],
            "code": ["29463-7", "8302-2"],
            "code_system": ["LOINC", "LOINC"],
            "display": [None, "Body Height"],
            "value": [68.0, 170.2],
            "unit": ["kg", "cm"],
        },
        schema_overrides={"display": pl.Utf8},
    )
    tables = {"patient": patient, "measurement": measurement}
    text = render_text(tables)["text"][0]
    assert "2015: LOINC 29463-7 = 68 kg." in text
    assert "2016: Body Height (LOINC 8302-2) = 170.2 cm." in text
    assert "29463-7 (LOINC" not in text
    qa = render_instruct(tables, seed=0).filter(pl.col("id").str.contains("last_measurement"))
    prompts = " ".join(qa["prompt"]) + " " + " ".join(qa["response"])
    assert "29463-7 (LOINC" not in prompts and "8302-2 (LOINC" not in prompts
    assert "most recent LOINC 29463-7" in prompts or "most recent Body Height (LOINC 8302-2)" in prompts


def test_synthea_conditions_without_description_read_sensibly(tmp_path):
    """The real Synthea export with DESCRIPTION removed from conditions.csv."""
    folder = tmp_path / "csv"
    folder.mkdir()
    for f in (SAMPLE / "synthea_csv").glob("*.csv.gz"):
        (folder / f.name).write_bytes(f.read_bytes())
    rows = list(
        csv.DictReader(io.StringIO(gzip.decompress((folder / "conditions.csv.gz").read_bytes()).decode()))
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [c for c in rows[0] if c != "DESCRIPTION"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "conditions.csv.gz").write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
    tables, _ = deidentify(read_synthea([folder]).tables, source="synthea", cfg=OFF)
    text = "\n".join(render_text(tables)["text"])
    lines = [line for line in text.splitlines() if ": diagnosis " in line]
    assert lines and all(re.fullmatch(r"\d{4}: diagnosis SNOMED CT \d+\.", line) for line in lines), lines[:3]
    assert {line.split()[-1].rstrip(".") for line in lines} == {r["CODE"] for r in rows}


@pytest.fixture(scope="module")
def mimic() -> dict[str, pl.DataFrame]:
    tables, _ = deidentify(read_mimic(SAMPLE / "mimic_iv_demo").tables, source="mimic", cfg=OFF)
    return tables


@pytest.mark.parametrize(
    "name", ["Bag", "SW", "NS", "D5W", "Syringe", "0.9% Sodium Chloride (Mini Bag Plus)"]
)
def test_diluents_and_containers_are_not_drugs(name):
    assert not is_drug(name)


@pytest.mark.parametrize(
    "name", ["Insulin", "Dextrose 50%", "Heparin Flush (10 units/ml)", "23.4% Sodium Chloride"]
)
def test_drugs_are_drugs(name):
    assert is_drug(name)


def _items(response: str) -> list[str]:
    """The drug names of a medications answer ``In 2153: A (NDC 1); B (MIMIC-DRUG B); and others.``"""
    listing = response.split(": ", 1)[1].removesuffix(".")
    items = [i for i in listing.split("; ") if i != "and others"]
    return [re.sub(r" \((?:NDC|MIMIC-DRUG|RxNorm|CVX) [^()]*\)$", "", i) for i in items]


def test_mimic_medication_answers(mimic):
    qa = render_instruct(mimic, seed=0).filter(pl.col("id").str.contains("medications_in_year"))
    assert qa.height >= 3
    capped = 0
    for response in qa["response"]:
        items = _items(response)
        assert 0 < len(items) <= MAX_LISTED, response
        assert all(is_drug(i) for i in items), response
        assert not {"Bag", "SW", "NS", "D5W"} & set(items), response
        names = [re.sub(r"\s+", " ", i).lower() for i in items]
        assert len(names) == len(set(names)), response
        capped += response.endswith("; and others.")
    assert capped > 0  # the real slice has years with more than MAX_LISTED drugs
    # the rows of the answer are its facts; the context lists no diluent either
    for context in qa["context"]:
        assert not re.search(r": medication (?:Bag|SW|NS|D5W) ", context), context


def test_mimic_timeline_lists_each_drug_once(mimic):
    text = render_text(mimic)
    keys = []  # (patient, year, drug name) of every medication line
    for doc_id, doc in zip(text["id"], text["text"], strict=True):
        patient = doc_id.split(":")[1]
        for line in doc.splitlines():
            if ": medication " in line:
                year, rest = line.split(": medication ", 1)
                keys.append((patient, year, re.sub(r" \([^()]*\)\.$", "", rest).lower()))
    assert len(keys) > 100
    assert len(keys) == len(set(keys))
    assert all(is_drug(name) for *_, name in keys)
