"""Fuzz the EHR record readers: FHIR (Bundle JSON, NDJSON, gzip cut short) and Synthea CSV.

FHIR inputs start from real Synthea resources (``sample_data/ehr/synthea_fhir``) and are mutated:
required elements removed (Observation code/status/subject, Encounter class, Patient id), any
element replaced by a value of another JSON type (null, number, string, array, object, NaN), deep
nesting, dangling references, wrong ``resourceType``, entries without ``resource``. Synthea CSV
files get ragged rows, quotes, bad UTF-8, bad dates/numbers, blank lines and truncation.

Property: ``rows_in == kept + dropped + rejected`` and ``rows_in`` equals the records the test
counts (Bundle entries / NDJSON lines / CSV data rows); every reject names the file and the
entry/line; or the reader raises a DataforgeError naming the file.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.records.ehr.fhir import read_fhir
from dataforge.records.ehr.synthea import read_synthea

ROOT = Path(__file__).resolve().parents[2]
FHIR_SAMPLE = sorted((ROOT / "sample_data" / "ehr" / "synthea_fhir").glob("*.json*"))[0]
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_resources() -> list[dict[str, Any]]:
    """One or two real resources of every type in the sample bundle."""
    doc = json.loads(gzip.decompress(FHIR_SAMPLE.read_bytes()))
    per_type: dict[str, list[dict[str, Any]]] = {}
    for e in doc["entry"]:
        r = e["resource"]
        bucket = per_type.setdefault(r["resourceType"], [])
        if len(bucket) < 2 or (r["resourceType"] == "Observation" and "component" in r and len(bucket) < 4):
            bucket.append(e)
    return [e for entries in per_type.values() for e in entries]


SEEDS = _seed_resources()
ODD_VALUES = st.one_of(
    st.none(), st.integers(-(10**20), 10**20), st.text(max_size=6), st.booleans(),
    st.just([]), st.just({}), st.just([None]), st.just("NaN"), st.just(1e308),
    st.sampled_from(["2023-02-30", "not-a-date", "Patient/nope", "urn:uuid:missing", "#nothing"]),
)  # fmt: skip


def _paths(obj: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    out: list[tuple] = []
    if depth > 4:
        return out
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(_paths(v, (*prefix, k), depth + 1))
    return out


@st.composite
def mutated_entry(draw: st.DrawFn) -> dict[str, Any]:
    entry = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    res = entry["resource"]
    kind = draw(
        st.sampled_from(["none", "set", "set", "delete", "required", "no_resource", "resource_type", "deep"])
    )
    if kind in ("set", "delete"):
        paths = _paths(res)
        rnd = random.Random(draw(st.integers(0, 2**32)))
        for _ in range(draw(st.integers(1, 3))):
            path = rnd.choice(paths)
            parent: Any = res
            try:
                for k in path[:-1]:
                    parent = parent[k]
                if kind == "set":
                    parent[path[-1]] = copy.deepcopy(draw(ODD_VALUES))  # st.just([]) is one shared object
                elif isinstance(parent, dict):
                    del parent[path[-1]]
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation changed the shape
    elif kind == "required":
        for key in ("code", "status", "subject", "class", "id", "patient", "content", "period"):
            if key in res and draw(st.booleans()):
                del res[key]
    elif kind == "no_resource":
        entry = draw(
            st.sampled_from([{"fullUrl": entry.get("fullUrl")}, {"request": {"method": "DELETE"}}, {}])
        )
    elif kind == "resource_type":
        res["resourceType"] = draw(
            st.one_of(st.none(), st.integers(), st.sampled_from(["Foo", "", "Bundle", "patient"]))
        )
    elif kind == "deep":
        res["extension"] = json.loads("[" * 900 + "]" * 900)
    return entry


def _check_extract(ex, name: str, n_records: int | None) -> None:
    counts = ex.ledger_counts()
    assert counts["rows_in"] == counts["kept"] + counts["dropped"] + counts["rejected"], counts
    if n_records is not None:
        assert counts["rows_in"] == n_records, counts
    for r in ex.rejects.iter_rows(named=True):
        assert name in r["error"], r
        assert r["reason"], r
    for r in ex.dropped.iter_rows(named=True):
        assert r["reason"], r


@SETTINGS
@given(
    entries=st.lists(mutated_entry(), max_size=14),
    layout=st.sampled_from(["bundle", "ndjson", "array", "gzip_cut"]),
    cut=st.floats(0, 1),
)
def test_fhir(fz, entries: list[dict[str, Any]], layout: str, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if layout == "ndjson":
            path = Path(tmp, "res.ndjson")
            lines = [json.dumps(e["resource"]) if "resource" in e else "" for e in entries]
            path.write_text("\n".join(lines) + "\n")
            n_records = sum(1 for line in lines if line.strip())
        elif layout == "array":
            path = Path(tmp, "res.json")
            path.write_text(json.dumps([e.get("resource") for e in entries]))
            n_records = len(entries)
        else:
            path = Path(tmp, "bundle.json" + (".gz" if layout == "gzip_cut" else ""))
            blob = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()
            if layout == "gzip_cut":
                blob = gzip.compress(blob)
                blob = blob[: int(len(blob) * cut)]
            path.write_bytes(blob)
            n_records = max(len(entries), 1) if layout == "bundle" else None  # an empty Bundle is one record
        ex, error = fz.call(read_fhir, [path], root=tmp)
    if error is not None:
        fz.expect_clean_error(error, path.name)
        return
    _check_extract(ex, path.name, n_records)


@pytest.mark.parametrize(
    "content",
    [b"", b"null", b"[]", b"42", b'"x"', b"{", b"[" * 10_000 + b"]" * 10_000, b'{"resourceType": "Bundle", "entry": 5}',
     b'{"resourceType": "Bundle", "entry": [1, null, {"resource": 2}]}', b"\xef\xbb\xbf{\"resourceType\": \"Patient\", \"id\": \"p\"}",
     b'{"resourceType": "Patient", "id": "p", "birthDate": NaN}', b'{"resourceType": "Patient", "id": "\xff"}'],
)  # fmt: skip
def test_fhir_odd_files(tmp_path, fz, content: bytes) -> None:
    """Empty, non-object, cut-off, 10k-deep, wrong-typed Bundle.entry, BOM, NaN, bad UTF-8."""
    for name in ("x.json", "x.ndjson"):
        path = tmp_path / name
        path.write_bytes(content)
        ex, error = fz.call(read_fhir, [path], root=tmp_path)
        if error is not None:
            fz.expect_clean_error(error, name)
            continue
        _check_extract(ex, name, None)


# --------------------------------------------------------------------------- Synthea CSV


PATIENTS_HEADER = ["Id", "BIRTHDATE", "DEATHDATE", "GENDER", "RACE", "ETHNICITY", "FIRST", "LAST", "STATE"]
OBS_HEADER = ["DATE", "PATIENT", "ENCOUNTER", "CATEGORY", "CODE", "DESCRIPTION", "VALUE", "UNITS", "TYPE"]
ODD_CELL = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n"), max_size=8),
    st.sampled_from(["", "2011-13-45", "1e999", "NaN", "-0", '"quoted, "" field"', "p1", "p2", "2020-01-01"]),
)


@st.composite
def synthea_csv(draw: st.DrawFn, header: list[str], good: list[str]) -> tuple[bytes, int]:
    """(file bytes, data records): rows mixing a good row, odd cells, ragged rows, bad UTF-8."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    w.writerow(header)
    out = buf.getvalue().encode()
    n = 0
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["good", "odd", "ragged", "bad_utf8", "blank"]))
        if kind == "blank":
            out += b"\n"
            continue
        row = list(good)
        if kind == "odd":
            row[draw(st.integers(0, len(row) - 1))] = draw(ODD_CELL)
        if kind == "ragged":
            row = row[: draw(st.integers(1, len(row) - 1))] if draw(st.booleans()) else [*row, "x"]
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\n").writerow(row)
        line = buf.getvalue().encode()
        out += (b"\xff" + line) if kind == "bad_utf8" else line
        n += 1
    return out, n


@SETTINGS
@given(
    patients=synthea_csv(
        PATIENTS_HEADER, ["p1", "1980-01-01", "", "F", "white", "hispanic", "A", "B", "Massachusetts"]
    ),
    observations=synthea_csv(
        OBS_HEADER,
        ["2020-01-01T00:00:00Z", "p1", "", "vital-signs", "8302-2", "Height", "170.1", "cm", "numeric"],
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_synthea(fz, patients: tuple[bytes, int], observations: tuple[bytes, int], cut: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "patients.csv").write_bytes(patients[0])
        obs = fz.compress(observations[0], "gzip")
        if cut is not None:
            obs = obs[: int(len(obs) * cut)]
        (Path(tmp) / "observations.csv.gz").write_bytes(obs)
        ex, error = fz.call(read_synthea, [tmp], root=tmp)
    if error is not None:
        fz.expect_clean_error(error, "csv")
        return
    _check_extract(ex, ".csv", patients[1] + observations[1] if cut is None else None)
