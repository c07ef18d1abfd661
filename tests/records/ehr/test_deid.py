"""De-identification on hand-built raw tables: Safe Harbor dates/ages/ZIPs, date shift, pseudonyms, notes."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from dataforge.errors import ConfigError
from dataforge.records.ehr.columns import conform_raw
from dataforge.records.ehr.deid import (
    DeidConfig,
    deidentify,
    known_phi,
    pseudonym,
    restricted_zip3,
    shift_days,
)

UTC = dt.timezone.utc


def ts(*a: int) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def raw_tables() -> dict[str, pl.DataFrame]:
    patient = conform_raw(
        "patient",
        pl.DataFrame(
            {
                "source_file": ["p.csv", "p.csv", "p.csv"],
                "source_row": [0, 1, 2],
                "source_ref": ["P1", "P2", "P3"],
                "patient_id": ["P1", "P2", "P3"],
                "gender": ["female", "male", "female"],
                "birth_date": [ts(2011, 3, 18), ts(1925, 6, 1), ts(1980, 1, 2)],
                "zip": ["02081", "03601", "8"],
                "state": ["MA", "NH", "MA"],
                "given": ["Temika453", "Rodrigo242", "Ann"],
                "family": ["Wuckert783", "Grady603", "Lee"],
                "address": ["676 Kirlin Village Suite 22", "1 Main St", None],
                "city": ["Walpole", "Keene", None],
                "ssn": ["999-33-2827", "999-11-2222", None],
                "phone": ["555-320-8883", None, None],
            }
        ),
    )
    encounter = conform_raw(
        "encounter",
        pl.DataFrame(
            {
                "source_file": ["e.csv"] * 3,
                "source_row": [0, 1, 2],
                "source_ref": ["E1", "E2", "E3"],
                "patient_id": ["P1", "P1", "P2"],
                "encounter_id": ["E1", "E2", "E3"],
                "start_time": [ts(2014, 5, 6, 8, 34), ts(2016, 2, 26, 18, 0), ts(2020, 7, 1, 9, 0)],
                "end_time": [ts(2014, 5, 6, 8, 49), ts(2016, 2, 27, 18, 0), ts(2020, 7, 3, 9, 0)],
                "class": ["ambulatory", "inpatient", "inpatient"],
            }
        ),
    )
    note = conform_raw(
        "note",
        pl.DataFrame(
            {
                "source_file": ["n.json"],
                "source_row": [0],
                "source_ref": ["N1"],
                "patient_id": ["P1"],
                "record_id": ["N1"],
                "encounter_id": ["E1"],
                "time": [ts(2014, 5, 6)],
                "text": [
                    "2014-05-06\nTemika453 Wuckert783 is a 3 year-old female from Walpole. "
                    "Call 555-320-8883 or mail temika@example.com. Seen on May 6, 2014 and 05/07/2014."
                ],
            }
        ),
    )
    return {"patient": patient, "encounter": encounter, "note": note}


SH = DeidConfig(mode="safe-harbor", salt=b"test-salt-123")


def test_safe_harbor_dates_ages_zip():
    out, counts = deidentify(raw_tables(), source="synthea", cfg=SH)
    p = out["patient"].sort("source_row")
    # dates reduced to the year; times are null
    assert p["birth_date"].null_count() == 3
    assert p["birth_year"].to_list() == [2011, None, 1980]  # P2 is 90+ (born 1925, last record 2020)
    assert p["age_90_plus"].to_list() == [False, True, False]
    assert p["age"][0] == 4  # born 2011-03-18, last record 2016-02-27: 4 years old
    assert p["age"][1] is None
    # ZIP3, small-area rule (036 is a restricted area), too short -> null
    assert "036" in restricted_zip3()
    assert p["zip3"].to_list() == ["020", "000", None]
    e = out["encounter"].sort("start_year")
    assert e["start_time"].null_count() == 3 and e["end_time"].null_count() == 3
    assert e["start_year"].to_list() == [2014, 2016, 2020]
    # the length of stay is an interval, kept
    assert e["duration_hours"].to_list() == pytest.approx([0.25, 24.0, 48.0])
    assert counts["patients_90_plus"] == 1
    assert counts["phi_removed:ssn"] == 2


def test_pseudonyms_consistent_and_salted():
    out, _ = deidentify(raw_tables(), source="synthea", cfg=SH)
    pid = pseudonym(SH, "patient", "P1")
    assert pid in out["patient"]["patient_id"].to_list()
    assert (
        out["encounter"].filter(pl.col("encounter_id") == pseudonym(SH, "encounter", "E1"))["patient_id"][0]
        == pid
    )
    assert out["note"]["patient_id"][0] == pid
    other = DeidConfig(mode="safe-harbor", salt=b"another-salt")
    assert pseudonym(other, "patient", "P1") != pid
    # no raw id and no raw file name survive
    for f in out.values():
        for col in ("patient_id", "encounter_id", "record_id", "source_ref"):
            if col in f.columns:
                assert not set(f[col].drop_nulls().to_list()) & {"P1", "P2", "P3", "E1", "E2", "E3", "N1"}
        assert all(s.startswith("file-") for s in f["source_file"].to_list())


def test_note_scrubbed():
    out, counts = deidentify(raw_tables(), source="synthea", cfg=SH)
    text = out["note"]["text"][0]
    for phi in (
        "Temika",
        "Wuckert",
        "Walpole",
        "555-320-8883",
        "temika@example.com",
        "05-06",
        "05/07",
        "May 6",
    ):
        assert phi not in text, (phi, text)
    assert "2014" in text  # the year stays
    assert out["note"]["redactions"][0] >= 7
    assert counts["note_redactions"] == out["note"]["redactions"][0]


def test_date_shift_keeps_intervals():
    cfg = DeidConfig(mode="date-shift", salt=b"test-salt-123")
    raw = raw_tables()
    out, _ = deidentify(raw, source="synthea", cfg=cfg)
    e = out["encounter"].sort("duration_hours")
    shift = shift_days(cfg, "P1")
    assert 1 <= shift <= 365
    assert e["start_time"][0] == ts(2014, 5, 6, 8, 34) - dt.timedelta(days=shift)
    # intervals between a patient's dates are unchanged
    p1 = out["encounter"].filter(pl.col("patient_id") == pseudonym(cfg, "patient", "P1")).sort("start_time")
    assert (p1["start_time"][1] - p1["start_time"][0]) == (ts(2016, 2, 26, 18, 0) - ts(2014, 5, 6, 8, 34))
    # the birth date moves by the same offset; 90+ patients lose it
    p = out["patient"].sort("source_row")
    assert p["birth_date"][0] == (ts(2011, 3, 18) - dt.timedelta(days=shift)).date()
    assert p["birth_date"][1] is None
    # dates in notes are shifted by the same offset, not just reduced to the year
    text = out["note"]["text"][0]
    assert (dt.date(2014, 5, 6) - dt.timedelta(days=shift)).isoformat() in text


def test_off_keeps_everything_given():
    out, _ = deidentify(raw_tables(), source="mimic", cfg=DeidConfig(mode="off"))
    p = out["patient"].sort("source_row")
    assert p["patient_id"].to_list() == ["P1", "P2", "P3"]
    assert p["zip3"].to_list() == ["02081", "03601", "8"]
    assert out["encounter"]["start_time"].null_count() == 0


def test_salt_required(monkeypatch):
    monkeypatch.delenv("DATAFORGE_DEID_SALT", raising=False)
    with pytest.raises(ConfigError, match="DATAFORGE_DEID_SALT"):
        DeidConfig.from_env("safe-harbor")
    monkeypatch.setenv("MY_SALT", "short")
    with pytest.raises(ConfigError, match="shorter than 8"):
        DeidConfig.from_env("date-shift", salt_env="MY_SALT")
    with pytest.raises(ConfigError, match="valid: "):
        DeidConfig.from_env("hash-everything")
    assert DeidConfig.from_env("off").salt is None


def test_known_phi_variants():
    phi = known_phi(raw_tables()["patient"])["P1"]
    assert "Temika453" in phi and "Temika" in phi and "676 Kirlin Village Suite 22" in phi
    assert phi.index("Temika453") < phi.index("Temika")  # longest first
