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
    order = list(phi)
    assert order.index("Temika453") < order.index("Temika")  # longest first
    assert phi["Temika453"] == "NAME" and phi["676 Kirlin Village Suite 22"] == "ADDRESS"
    assert phi["02081"] == "ZIP" and phi["999-33-2827"] == "SSN" and phi["Walpole"] == "LOCATION"


def _scrub(text: str, *, pid: str = "P1", mode: str = "safe-harbor") -> str:
    raw = raw_tables()
    raw["note"] = raw["note"].with_columns(pl.lit(text).alias("text"), pl.lit(pid).alias("patient_id"))
    cfg = DeidConfig(mode=mode, salt=b"test-salt-123")
    out, _ = deidentify(raw, source="fhir", cfg=cfg)
    return out["note"]["text"][0]


def test_note_identifiers_named_by_a_keyword_urls_zip_and_relatives():
    text = _scrub(
        "Account # 7712-99831. Medicare ID 1EG4-TE5-MK72. Driver licence S99912345. "
        "Device serial SN-A9937-ZZ. MRN: 00123456. Portal https://mychart.example.org/u/x9 ok. "
        "Lives at 1 Elm St, Hanover VT 05032-1234 with daughter Priya and son-in-law Tom Smith; "
        "Wife Gertrude55 came. ZIP 02081 on file."
    )
    for leak in (
        "7712-99831",
        "1EG4-TE5-MK72",
        "S99912345",
        "A9937",
        "00123456",
        "mychart",
        "05032",
        "Priya",
        "Tom",
        "Gertrude55",
        "02081",
    ):
        assert leak not in text, (leak, text)
    assert "Account # [ID]" in text and "Medicare ID [ID]" in text and "[URL]" in text
    assert "VT [ZIP]" in text and "daughter [NAME]" in text and "ZIP [ZIP]" in text  # P1's own ZIP


def test_note_ages_and_date_formats():
    text = _scrub(
        "age 93, aged 95, 91 y.o., 92yo. Seen 3/7/15, 03-Mar-2015, Mar-03-2015, 2015/03/07, "
        "07.03.2015 and 2015-Mar-07."
    )
    assert "93" not in text and "95" not in text and "91" not in text and "92" not in text
    assert text.count("90+") == 4
    assert "3/7/15" not in text and "[DATE]" in text
    assert "Mar" not in text and "03" not in text and "07" not in text
    assert text.count("2015") == 5  # every date with a 4-digit year keeps its year


def test_note_birth_year_of_a_patient_aged_90_plus_is_hidden():
    # P2 was born 1925-06-01 and is 90+ (last record 2020): the birth year tells the age
    text = _scrub("Born 1925, born on 1925-06-01; seen 2020-07-01.", pid="P2")
    assert "1925" not in text and "[YEAR]" in text and "[DATE]" in text
    assert "2020" in text
    shifted = _scrub("Born 1925, born on 1925-06-01.", pid="P2", mode="date-shift")
    assert "1925" not in shifted and "1924" not in shifted and "06-" not in shifted
    # P1 (born 2011, 4 years old) keeps the year
    assert "2011" in _scrub("Born 2011.")


def test_clinical_text_is_not_over_redacted():
    text = (
        "LDL 130 mg/dL 12345 units? no. BP 120/80, A1c 6.5, temp 98.6. Age 45. Record 2014 reviewed. "
        "Mother has diabetes; father Deceased. Plan: return in 2 weeks, 2 tablets twice daily."
    )
    assert _scrub(text) == text.replace("Record 2014", "Record 2014")


def test_reject_messages_lose_record_ids_and_relatives():
    from dataforge.records.ehr.deid import scrub_text

    msg = scrub_text(
        'b.json entry 3: Condition/cond-1 has no code ({"text": "Fall, per daughter Priya"}); '
        "Id '09fbd99b-6f3b-4f9c-8f0a-2d9b1a7c5e11' repeats an earlier row",
        phi={},
        mode="safe-harbor",
    )
    assert "cond-1" not in msg and "Priya" not in msg and "09fbd99b" not in msg
    assert "Condition/[ID]" in msg and "b.json entry 3" in msg


def _dated_tables() -> dict[str, pl.DataFrame]:
    """One patient born in "1950" (year only) with measurements written as
    2015-12-31T23:30:00-05:00 (2016 in UTC), 2015-07 (month), 2015 (year) and 2015-07-04 (day)."""
    patient = conform_raw(
        "patient",
        pl.DataFrame(
            {
                "source_file": ["p.json"],
                "source_row": [0],
                "patient_id": ["P1"],
                "birth_date": [ts(1950, 1, 1)],
                "birth_date_local": [dt.date(1950, 1, 1)],
                "birth_date_precision": ["year"],
            }
        ),
    )
    measurement = conform_raw(
        "measurement",
        pl.DataFrame(
            {
                "source_file": ["p.json"] * 4,
                "source_row": [1, 2, 3, 4],
                "patient_id": ["P1"] * 4,
                "record_id": ["M1", "M2", "M3", "M4"],
                "time": [ts(2016, 1, 1, 4, 30), ts(2015, 7, 1), ts(2015, 1, 1), ts(2015, 7, 4)],
                "time_local": [
                    dt.date(2015, 12, 31),
                    dt.date(2015, 7, 1),
                    dt.date(2015, 1, 1),
                    dt.date(2015, 7, 4),
                ],
                "time_precision": ["time", "month", "year", "day"],
            }
        ),
    )
    return {"patient": patient, "measurement": measurement}


@pytest.mark.parametrize("mode", ["off", "safe-harbor", "date-shift"])
def test_years_are_those_of_the_local_date(mode):
    cfg = DeidConfig(mode=mode, salt=b"test-salt-123" if mode != "off" else None)
    out, _ = deidentify(_dated_tables(), source="fhir", cfg=cfg)
    m = out["measurement"].sort("source_row")
    shift = dt.timedelta(days=shift_days(cfg, "P1")) if mode == "date-shift" else dt.timedelta(0)
    assert m["year"][0] == (dt.date(2015, 12, 31) - shift).year  # not the year of the UTC instant
    assert m["time_precision"].to_list() == ["time", "month", "year", "day"]
    # the local dates are used, not written: under safe-harbor they would be full dates
    for f in out.values():
        assert not [c for c in f.columns if c.endswith("_local")]
    if mode == "safe-harbor":
        assert m["year"].to_list() == [2015] * 4 and m["time"].null_count() == 4
    if mode == "off":
        assert m["time"][0] == ts(2016, 1, 1, 4, 30)  # times stay UTC instants


def test_date_shift_keeps_partial_dates_partial():
    cfg = DeidConfig(mode="date-shift", salt=b"test-salt-123")
    shift = dt.timedelta(days=shift_days(cfg, "P1"))
    out, _ = deidentify(_dated_tables(), source="fhir", cfg=cfg)
    m = out["measurement"].sort("source_row")
    # a time and a day move by the offset
    assert m["time"][0] == ts(2016, 1, 1, 4, 30) - shift
    assert m["time"][3] == ts(2015, 7, 4) - shift
    # a month moves with its first day and is a month again; a year is not moved
    first = dt.date(2015, 7, 1) - shift
    assert (m["time"][1], m["year"][1]) == (ts(first.year, first.month, 1), first.year)
    assert (m["time"][2], m["year"][2]) == (ts(2015, 1, 1), 2015)
    # a birth year is not made into a day
    p = out["patient"].row(0, named=True)
    assert (p["birth_date"], p["birth_year"], p["birth_date_precision"]) == (
        dt.date(1950, 1, 1),
        1950,
        "year",
    )
    # the age counts from the first day of the birth year (the highest age it allows)
    assert p["age"] == 65


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("daughter McKenzie called", "daughter [NAME] called"),  # the whole name, not [NAME]Kenzie
        ("wife O'Brien called", "wife [NAME] called"),
        ("DAUGHTER MARY visited", "DAUGHTER [NAME] visited"),
        ("mrn 123456 on file", "mrn [ID] on file"),
        ("Account # 7712 99831.", "Account # [ID]."),  # space-grouped digits
        ("Seen 05/2014 and 2014-05.", "Seen 2014 and 2014."),  # month and year
        ("Device # 12345 and record no. 778899", "Device # [ID] and record no. [ID]"),
        # clinical text left alone
        ("Family history: mother Diabetes, father Hypertension, brother Colon cancer", None),
        ("sister Type 2 DM; partner Denies drugs; caregiver Visiting Nurse Service", None),
        ("Plan: 500mg metformin BID. Plan - 1000mL NS bolus. Device: 12345 not found.", None),
        ("CT 20000 units given; 2014-2015 season; BP 120/80", None),
    ],
)
def test_note_patterns_whole_names_and_no_clinical_over_redaction(text, scrubbed):
    from dataforge.records.ehr.deid import TextScrubber

    assert TextScrubber("safe-harbor").scrub(text, {})[0] == (text if scrubbed is None else scrubbed)


def test_free_text_columns_lose_emails_and_phones_too():
    """A FHIR valueString answering 'how can we reach your daughter?' goes through the same PII
    redaction as notes."""
    raw = raw_tables()
    raw["measurement"] = conform_raw(
        "measurement",
        pl.DataFrame(
            {
                "source_file": ["m.json"],
                "source_row": [0],
                "source_ref": ["M1"],
                "patient_id": ["P1"],
                "record_id": ["M1"],
                "value_text": ["call her at 617-555-0142 or amy.lee@example.org"],
            }
        ),
    )
    out, _ = deidentify(raw, source="fhir", cfg=SH)
    value = out["measurement"]["value_text"][0]
    assert "617-555-0142" not in value and "amy.lee@example.org" not in value
