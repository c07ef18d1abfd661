"""Fixtures for the finance tests: sample paths and normalized extracts (built once per session)."""

from __future__ import annotations

import decimal
import gzip
import json
from pathlib import Path

import polars as pl
import pytest

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "finance"
CF_FILE = SAMPLE / "companyfacts" / "CIK0001640147_snowflake.json.gz"
FSDS_ZIP = SAMPLE / "fsds" / "2009q3_sample.zip"
XBRL_DIR = SAMPLE / "xbrl" / "aapl_10k_fy2023"
XBRL_FILE = XBRL_DIR / "aapl-20230930_htm.xml.gz"


@pytest.fixture(scope="session")
def cf_json() -> dict:
    return json.loads(gzip.decompress(CF_FILE.read_bytes()), parse_float=decimal.Decimal)


@pytest.fixture(scope="session")
def cf_points(cf_json) -> list[dict]:
    """Every companyfacts data point, flattened independently of the reader."""
    out = []
    for tax, concepts in cf_json["facts"].items():
        for concept, body in concepts.items():
            for unit, points in body["units"].items():
                for p in points:
                    out.append({"taxonomy": tax, "concept": concept, "unit": unit, **p})
    return out


@pytest.fixture(scope="session")
def cf_raw():
    from dataforge.records.finance import read_companyfacts

    return read_companyfacts(CF_FILE, root=SAMPLE)


@pytest.fixture(scope="session")
def cf_norm(cf_raw):
    from dataforge.records.finance import normalize_facts

    return normalize_facts(cf_raw)


@pytest.fixture(scope="session")
def fsds_raw():
    from dataforge.records.finance import read_fsds

    return read_fsds(FSDS_ZIP, root=SAMPLE)


@pytest.fixture(scope="session")
def fsds_norm(fsds_raw):
    from dataforge.records.finance import normalize_facts

    return normalize_facts(fsds_raw)


@pytest.fixture(scope="session")
def xbrl_raw():
    from dataforge.records.finance import read_xbrl

    return read_xbrl(XBRL_DIR, root=SAMPLE)


@pytest.fixture(scope="session")
def xbrl_norm(xbrl_raw):
    from dataforge.records.finance import normalize_facts

    return normalize_facts(xbrl_raw)


def _ledger_adds_up(extract) -> None:
    counts = extract.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"], counts
    # every input record ends in exactly one place
    dropped = extract.dropped.select("source_file", "source_row")
    rejected = extract.rejects.select("source_file", "source_row").drop_nulls()
    kept = (
        extract.tables.get("fact", extract.tables.get("raw_fact"))
        .select("source_file", "source_row")
        .drop_nulls()
    )
    allrows = pl.concat([kept, dropped, rejected])
    assert allrows.height == allrows.unique().height, "an input record is counted twice"


@pytest.fixture
def ledger_adds_up():
    """Assert ``rows_in == kept + dropped + rejected`` and that no record is in two places."""
    return _ledger_adds_up
