"""Unit normalization: UCUM aliases, analyte and dimension conversions, unknowns kept and counted."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dataforge.records.ehr.mimic import read_mimic
from dataforge.records.ehr.units import normalize_units

ROOT = Path(__file__).resolve().parents[3]
MIMIC = ROOT / "sample_data" / "ehr" / "mimic_iv_demo"

# Independent constants (definitions, not the code's tables):
LB_KG = 0.45359237  # international avoirdupois pound, exact by definition (1959)
IN_CM = 2.54  # international inch, exact by definition
GLUCOSE_G_PER_MOL = 180.156  # C6H12O6


def frame(*rows: tuple) -> pl.DataFrame:
    """rows of (code_system, code, value, source_unit, source_unit_ucum)."""
    return pl.DataFrame(
        rows,
        schema={
            "code_system": pl.Utf8,
            "code": pl.Utf8,
            "value": pl.Float64,
            "source_unit": pl.Utf8,
            "source_unit_ucum": pl.Utf8,
        },
        orient="row",
    )


def one(code_system, code, value, unit, ucum=None):
    out, counter = normalize_units(frame((code_system, code, value, unit, ucum)))
    return out.row(0, named=True), counter


def test_glucose_round_trip():
    mmol = 5.5
    row, counter = one("LOINC", "2345-7", mmol, "mmol/L")
    # mmol/L -> mg/dL: x M(g/mol) / 10
    assert row["value"] == pytest.approx(mmol * GLUCOSE_G_PER_MOL / 10, rel=1e-12)
    assert (row["unit"], row["unit_status"]) == ("mg/dL", "converted")
    assert counter["unit_converted:mmol/L->mg/dL"] == 1
    back, _ = one("LOINC", "2345-7", row["value"], "mg/dL")
    assert back["unit_status"] == "canonical" and back["value"] == row["value"]
    assert back["value"] * 10 / GLUCOSE_G_PER_MOL == pytest.approx(mmol, rel=1e-12)
    # umol/L reaches mg/dL through a same-dimension step
    micro, _ = one("LOINC", "2339-0", 5500.0, "umol/L")
    assert micro["value"] == pytest.approx(row["value"], rel=1e-12)


def test_pound_to_kilogram():
    row, counter = one("LOINC", "29463-7", 150.0, "lb")
    assert row["value"] == pytest.approx(150 * LB_KG, rel=1e-15, abs=0)
    assert row["unit"] == "kg" and row["conversion"] == "[lb_av] -> kg x 0.45359237"
    assert counter == {"unit_converted:[lb_av]->kg": 1}
    # the same for a code without a table row (generic customary -> metric)
    row, _ = one("MIMIC-OMR", "Weight", 200.0, "lbs")
    assert row["unit"] == "kg" and row["value"] == pytest.approx(200 * LB_KG, rel=1e-15)


def test_inch_to_centimetre():
    row, _ = one("LOINC", "8302-2", 70.0, "in")
    assert row["unit"] == "cm" and row["value"] == pytest.approx(70 * IN_CM, rel=1e-15)


@pytest.mark.parametrize(
    ("fahrenheit", "celsius"), [(212.0, 100.0), (32.0, 0.0), (-40.0, -40.0), (98.6, 37.0)]
)
def test_fahrenheit_to_celsius(fahrenheit, celsius):
    row, _ = one("LOINC", "8310-5", fahrenheit, "deg F")
    assert row["unit"] == "Cel" and row["unit_status"] == "converted"
    assert row["value"] == pytest.approx(celsius, abs=1e-12)
    assert row["conversion"] == "[degF] -> Cel (x - 32) x 5/9"


def test_gram_per_litre_to_gram_per_decilitre():
    row, _ = one("LOINC", "718-7", 135.0, "g/L")
    assert (row["unit"], row["value"]) == ("g/dL", pytest.approx(13.5, rel=1e-12))


def test_mimic_aliases():
    out, counter = normalize_units(
        frame(
            ("LOINC", "2823-3", 4.1, "mEq/L", None),
            ("LOINC", "777-3", 250.0, "K/uL", None),
            ("LOINC", "1742-6", 30.0, "IU/L", None),
            ("MIMIC-LAB", "51516", 3.0, "#/hpf", None),
        )
    )
    assert out["unit"].to_list() == ["mmol/L", "10*3/uL", "U/L", "/[HPF]"]
    assert out["value"].to_list() == [4.1, 250.0, 30.0, 3.0]
    assert out["unit_status"].to_list() == ["converted", "canonical", "converted", "canonical"]


def test_unknown_unit_kept_and_counted():
    row, counter = one("LOINC", "2345-7", 7.0, "furlongs/fortnight")
    assert row["unit"] is None and row["unit_status"] == "unknown" and row["value"] == 7.0
    assert row["source_unit"] == "furlongs/fortnight"
    assert counter == {"unit_unknown:furlongs/fortnight": 1}


def test_mass_and_molar_not_converted_without_analyte():
    # albumin has a canonical g/dL but no molar mass in the table: mmol/L cannot be converted
    row, counter = one("LOINC", "1751-7", 0.6, "mmol/L")
    assert row["unit"] is None and row["unit_status"] == "unknown" and row["value"] == 0.6
    assert counter == {"unit_incompatible:mmol/L->g/dL": 1}
    # a code without a row keeps its molar unit as is
    row, _ = one("MIMIC-LAB", "99999", 0.6, "mmol/L")
    assert (row["unit"], row["unit_status"], row["value"]) == ("mmol/L", "canonical", 0.6)
    # meq/L is not mmol/L unless the analyte says so
    row, _ = one("MIMIC-LAB", "99999", 2.0, "mEq/L")
    assert (row["unit"], row["value"]) == ("meq/L", 2.0)


def test_no_unit_and_declared_ucum():
    out, counter = normalize_units(
        frame(
            ("LOINC", "2345-7", 1.0, None, None),
            ("LOINC", "2345-7", 2.0, "N/A", None),
            ("LOINC", "29463-7", 3.0, "pounds (display text)", "[lb_av]"),
        )
    )
    assert out["unit_status"].to_list() == ["none", "none", "converted"]
    assert out["value"][2] == pytest.approx(3 * LB_KG, rel=1e-15)
    assert counter["unit_none"] == 2


def test_reference_range_converted_with_value():
    f = frame(("LOINC", "2345-7", 5.0, "mmol/L", None)).with_columns(
        pl.lit(3.9).alias("ref_low"), pl.lit(5.6).alias("ref_high")
    )
    out, _ = normalize_units(f)
    factor = GLUCOSE_G_PER_MOL / 10
    assert out["ref_low"][0] == pytest.approx(3.9 * factor, rel=1e-12)
    assert out["ref_high"][0] == pytest.approx(5.6 * factor, rel=1e-12)


def test_mimic_labevents_sample():
    ex = read_mimic(MIMIC)
    m = ex.tables["measurement"].filter(pl.col("source_file").str.ends_with("labevents.csv.gz"))
    out, counter = normalize_units(m)
    assert out.height == m.height
    assert out["record_id"].to_list() == m["record_id"].to_list()  # same rows, same order
    assert set(out["unit_status"].unique()) <= {"canonical", "converted", "unknown", "none"}
    assert sum(counter.values()) == m.height
    converted = out.filter(pl.col("unit_status") == "converted").height
    assert converted == sum(v for k, v in counter.items() if k.startswith("unit_converted:"))
    # potassium in mEq/L comes out as the same number in mmol/L
    k = out.filter((pl.col("code") == "2823-3") & pl.col("value").is_not_null())
    assert k.height > 0 and set(k["unit"]) == {"mmol/L"}
    assert (
        k["value"].to_list()
        == m.filter((pl.col("code") == "2823-3") & pl.col("value").is_not_null())["value"].to_list()
    )
    # unknown units keep their value
    unknown = out.filter(pl.col("unit_status") == "unknown")
    before = m.filter(pl.col("record_id").is_in(unknown["record_id"].implode()))
    assert unknown.sort("record_id")["value"].equals(before.sort("record_id")["value"])
