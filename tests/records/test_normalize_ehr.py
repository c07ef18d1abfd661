"""`dataforge normalize ehr` end to end on the committed real slices: ledger, shards, PHI scan,
traceability of rendered text, determinism, CLI errors."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import dataforge
from dataforge.cli import cli
from dataforge.io.shards import read_manifest, read_shard, verify_shards
from dataforge.records.ehr.render import fmt_value

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "ehr"
SALT = "unit-test-salt-0123456789"


@pytest.fixture
def salt(monkeypatch):
    monkeypatch.setenv("DATAFORGE_DEID_SALT", SALT)
    return SALT


def _tables(out: Path) -> dict[str, pl.DataFrame]:
    man = read_manifest(out)
    frames = {}
    for name, info in man["tables"].items():
        parts = [pl.from_arrow(read_shard(out / s["path"])) for s in info["shards"]]
        frames[name] = pl.concat(parts) if parts else pl.DataFrame()
    return frames


def _group(out: Path, key: str) -> pl.DataFrame:
    man = read_manifest(out)
    shards = man["stages"][key]["shards"] if key in ("text", "instruct") else man.get(key, [])
    parts = [pl.from_arrow(read_shard(out / s["path"])) for s in shards]
    return pl.concat(parts) if parts else pl.DataFrame()


def _check_ledger(out: Path, report) -> None:
    rep = json.loads((out / "report.json").read_text())
    c = rep["counts"]
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"]
    assert c["rows_in"] > 0 and c["kept"] > 0
    # the files hold exactly what the report counts
    assert _group(out, "rejects").height == c["rejected"]
    assert _group(out, "dropped").height == c["dropped"]
    tables = _tables(out)
    kept_keys = pl.concat(
        [t.select("source_file", "source_row") for t in tables.values() if t.height]
    ).unique()
    assert kept_keys.height == c["kept"]
    # no record is both kept and dropped/rejected
    for key in ("rejects", "dropped"):
        g = _group(out, key)
        if g.height:
            both = g.select("source_file", "source_row").join(
                kept_keys, on=["source_file", "source_row"], how="semi"
            )
            assert both.height == 0, key
    assert verify_shards(out) == []
    assert report.rows_in == c["rows_in"]


@pytest.mark.parametrize(
    ("source", "folder"),
    [("fhir", "synthea_fhir"), ("synthea", "synthea_csv"), ("mimic", "mimic_iv_demo"), ("omop", "omop")],
)
def test_normalize_each_source(tmp_path, salt, source, folder):
    out = tmp_path / "out"
    report = dataforge.normalize_ehr([SAMPLE / folder], output=out, source=source, render="text,instruct")
    _check_ledger(out, report)
    tables = _tables(out)
    assert {"patient", "encounter", "measurement"} <= set(tables)
    # the declared schemas, with provenance on every row
    man = read_manifest(out)
    for name, info in man["tables"].items():
        assert info["schema"]["name"] == f"ehr.{name}.v1"
        t = tables[name]
        assert t["source"].unique().to_list() == [source]
        assert t["source_file"].null_count() == 0
    # every clinical row points at a patient that exists
    pids = set(tables["patient"]["patient_id"].to_list())
    for name, t in tables.items():
        if name != "patient":
            assert set(t["patient_id"].to_list()) <= pids, name
    # units: every measurement with a canonical unit says how it got there
    m = tables["measurement"]
    assert set(m["unit_status"].unique().to_list()) <= {"canonical", "converted", "unknown", "none"}
    assert m.filter(pl.col("unit_status") == "converted")["conversion"].null_count() == 0
    text = _group(out, "text")
    assert text.height >= tables["patient"].height
    assert set(text["stage"].unique().to_list()) == {3}
    inst = _group(out, "instruct")
    assert inst.height > 0 and set(inst["stage"].unique().to_list()) == {2}


# --------------------------------------------------------------------------- PHI scan


def _synthea_phi() -> tuple[set[str], set[str]]:
    """Names, addresses, SSNs, licences, passports, phone numbers and MRNs read straight from the
    inputs with the csv/json modules (not with dataforge), and every full date in them."""
    words: set[str] = set()
    dates: set[str] = set()
    with gzip.open(SAMPLE / "synthea_csv" / "patients.csv.gz", "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            for col in ("ADDRESS", "CITY", "SSN", "DRIVERS", "PASSPORT", "Id"):
                if (r.get(col) or "").strip():
                    words.add(r[col].strip())  # identifiers and addresses: the whole value
            for col in ("FIRST", "MIDDLE", "LAST", "MAIDEN"):
                v = (r.get(col) or "").strip()
                if v:
                    words.add(v)
                    for tok in v.split():  # names: each name, with and without Synthea's digits
                        words.add(tok)
                        bare = re.sub(r"\d+$", "", tok)
                        if len(bare) >= 4:
                            words.add(bare)
            for col in ("BIRTHDATE", "DEATHDATE"):
                if r.get(col):
                    dates.add(r[col][:10])
    for f in sorted((SAMPLE / "synthea_fhir").glob("*.json.gz")):
        bundle = json.loads(gzip.decompress(f.read_bytes()))
        for e in bundle["entry"]:
            res = e["resource"]
            if res["resourceType"] == "Patient":
                for t in res.get("telecom", []):
                    words.add(t["value"])
                for ident in res.get("identifier", []):
                    words.add(ident["value"])
                for n in res.get("name", []):
                    for part in [n.get("family", ""), *n.get("given", [])]:
                        if part:
                            words.add(part)
                            words.add(re.sub(r"\d+$", "", part))
                for ext in res.get("extension", []):
                    if ext.get("url", "").endswith("mothersMaidenName"):
                        for tok in ext["valueString"].split():
                            words.add(tok)
                            words.add(re.sub(r"\d+$", "", tok))
                dates.add(res.get("birthDate", ""))
            for key in ("start", "end"):
                v = res.get("period", {}).get(key)
                if v:
                    dates.add(v[:10])
    return {w for w in words if len(w) >= 4}, {d for d in dates if d}


def _strings_of(out: Path) -> list[tuple[str, str]]:
    """(where, value) for every string in every output file: shards, manifest, reports."""
    found: list[tuple[str, str]] = []
    man = read_manifest(out)
    paths = (
        [s["path"] for s in man["shards"]]
        + [s["path"] for s in man.get("rejects", [])]
        + [s["path"] for s in man.get("dropped", [])]
    )
    for p in paths:
        t = read_shard(out / p)
        for name in t.column_names:
            col = t.column(name)
            if pa.types.is_large_string(col.type) or pa.types.is_string(col.type):
                found += [(f"{p}:{name}", v) for v in col.to_pylist() if v]
            elif pa.types.is_large_list(col.type) or pa.types.is_list(col.type):
                found += [(f"{p}:{name}", v) for vs in col.to_pylist() for v in (vs or []) if v]
            elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                found += [(f"{p}:{name}", v.decode("utf-8", "replace")) for v in col.to_pylist() if v]
    for f in ("manifest.json", "report.json", "report.md"):
        found.append((f, (out / f).read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize(("source", "folder"), [("fhir", "synthea_fhir"), ("synthea", "synthea_csv")])
def test_phi_scan_finds_nothing(tmp_path, salt, source, folder):
    out = tmp_path / "out"
    dataforge.normalize_ehr([SAMPLE / folder], output=out, source=source, render="text,instruct")
    words, dates = _synthea_phi()
    assert len(words) > 30 and len(dates) > 20  # the oracle itself found real identifiers
    pattern = re.compile(
        r"(?<![\w])(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")(?![\w])",
        re.IGNORECASE,
    )
    full_date = re.compile(r"\b(?:19|20|21)\d\d-[01]\d-[0-3]\d\b")
    leaks = []
    for where, value in _strings_of(out):
        for m in pattern.finditer(value):
            leaks.append((where, m.group(0)))
        if not where.endswith(".json") and not where.endswith(".md"):
            for m in full_date.finditer(value):
                leaks.append((where, m.group(0)))
        for d in dates:
            if d in value:
                leaks.append((where, d))
    assert not leaks, leaks[:20]
    # safe-harbor: every date/time column is empty
    for name, t in _tables(out).items():
        for col, dtype in t.schema.items():
            if dtype in (pl.Date,) or isinstance(dtype, pl.Datetime):
                assert t[col].null_count() == t.height, (name, col)


# --------------------------------------------------------------------------- traceability

_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


def _row_values(tables: dict[str, pl.DataFrame]) -> dict[str, set[str]]:
    """id -> the strings a rendered text may print for that row."""
    out: dict[str, set[str]] = {}
    id_cols = {"patient": "patient_id", "encounter": "encounter_id"}
    for name, t in tables.items():
        idc = id_cols.get(name, "record_id")
        for row in t.iter_rows(named=True):
            vals = set()
            for k, v in row.items():
                if v is None or k in ("source_row",):
                    continue
                if isinstance(v, float):
                    vals.add(fmt_value(v))
                elif isinstance(v, int) and not isinstance(v, bool):
                    vals.add(str(v))
                elif isinstance(v, str):
                    vals.update(_NUM.findall(v))
            out.setdefault(row[idc], set()).update(vals)
    return out


@pytest.mark.parametrize(("source", "folder"), [("synthea", "synthea_csv"), ("mimic", "mimic_iv_demo")])
def test_rendered_numbers_trace_to_rows(tmp_path, salt, source, folder):
    out = tmp_path / "out"
    dataforge.normalize_ehr([SAMPLE / folder], output=out, source=source, render="text,instruct")
    values = _row_values(_tables(out))
    checked = 0
    for frame, cols in ((_group(out, "text"), ("text",)), (_group(out, "instruct"), ("response", "context"))):
        for row in frame.iter_rows(named=True):
            allowed = set().union(*(values.get(i, set()) for i in row["fact_ids"]))
            assert row["fact_ids"], row["id"]
            for col in cols:
                text = row[col] or ""
                for label in ("ICD-9-CM", "ICD-10-CM", "ICD-9 procedure", "ICD-10-PCS"):
                    text = text.replace(label, "ICD")  # code system names, not numbers
                for num in _NUM.findall(text):
                    if num == "90" and "90 or older" in text:
                        continue  # the Safe Harbor age bucket, from age_90_plus
                    assert num in allowed, (row["id"], col, num)
                    checked += 1
    assert checked > 100


# --------------------------------------------------------------------------- determinism and errors


def test_byte_identical_reruns(tmp_path, salt):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        dataforge.normalize_ehr(
            [SAMPLE / "synthea_csv"], output=out, source="synthea", deid="date-shift", render="text,instruct"
        )
    ma, mb = read_manifest(a), read_manifest(b)
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    assert ma["tables"].keys() == mb["tables"].keys()


def test_salt_changes_pseudonyms_not_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFORGE_DEID_SALT", "first-salt-123456")
    dataforge.normalize_ehr([SAMPLE / "synthea_fhir"], output=tmp_path / "a", source="fhir")
    monkeypatch.setenv("DATAFORGE_DEID_SALT", "second-salt-123456")
    dataforge.normalize_ehr([SAMPLE / "synthea_fhir"], output=tmp_path / "b", source="fhir")
    pa_, pb = _tables(tmp_path / "a")["patient"], _tables(tmp_path / "b")["patient"]
    assert pa_.height == pb.height
    assert not set(pa_["patient_id"].to_list()) & set(pb["patient_id"].to_list())
    # the salt is never written
    for where, value in _strings_of(tmp_path / "a"):
        assert "first-salt-123456" not in value, where


def test_cli_normalize_and_errors(tmp_path, cli_runner, monkeypatch):
    monkeypatch.delenv("DATAFORGE_DEID_SALT", raising=False)
    out = tmp_path / "out"
    res = cli_runner.invoke(
        cli, ["normalize", "ehr", str(SAMPLE / "synthea_fhir"), "-o", str(out), "--source", "fhir"]
    )
    assert res.exit_code == 2, res.output
    assert "DATAFORGE_DEID_SALT" in res.output
    assert not out.exists()  # nothing half-written
    monkeypatch.setenv("MY_SALT", SALT)
    res = cli_runner.invoke(
        cli,
        [
            "normalize",
            "ehr",
            str(SAMPLE / "synthea_fhir"),
            "-o",
            str(out),
            "--source",
            "fhir",
            "--salt-env",
            "MY_SALT",
            "--render",
            "text",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "tables: " in res.output and "patient" in res.output
    man = read_manifest(out)
    assert man["deid"]["mode"] == "safe-harbor" and "Safe Harbor" in man["deid"]["method"]
    assert list(man["stages"]) == ["text"]
    # a second run into the same folder needs --overwrite
    res = cli_runner.invoke(
        cli,
        [
            "normalize",
            "ehr",
            str(SAMPLE / "synthea_fhir"),
            "-o",
            str(out),
            "--source",
            "fhir",
            "--salt-env",
            "MY_SALT",
        ],
    )
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = cli_runner.invoke(
        cli,
        [
            "normalize",
            "ehr",
            str(SAMPLE / "synthea_fhir"),
            "-o",
            str(tmp_path / "x"),
            "--source",
            "fhir",
            "--salt-env",
            "MY_SALT",
            "--render",
            "poem",
        ],
    )
    assert res.exit_code == 2 and "poem" in res.output and "instruct" in res.output
    assert not list(tmp_path.glob(".*partial*"))


def test_bad_input_is_rejected_with_file_and_line(tmp_path, salt):
    folder = tmp_path / "in"
    folder.mkdir()
    src = gzip.decompress((SAMPLE / "synthea_csv" / "patients.csv.gz").read_bytes()).decode().splitlines()
    header = src[0].split(",")
    bad = src[1].split(",")
    bad[header.index("BIRTHDATE")] = "2011-13-45"
    (folder / "patients.csv").write_text("\n".join([src[0], ",".join(bad), *src[2:]]) + "\n")
    out = tmp_path / "out"
    report = dataforge.normalize_ehr([folder], output=out, source="synthea", deid="off", max_reject_rate=None)
    rej = _group(out, "rejects")
    assert rej.height == 1
    err = rej["error"][0]
    assert "2011-13-45" in err and "BIRTHDATE" in err and ("line 2" in err or "row 0" in err)
    assert report.rejected == 1


def test_reject_rate_exit_code(tmp_path, cli_runner, monkeypatch):
    monkeypatch.setenv("DATAFORGE_DEID_SALT", SALT)
    folder = tmp_path / "in"
    folder.mkdir()
    lines = gzip.decompress((SAMPLE / "synthea_csv" / "patients.csv.gz").read_bytes()).decode().splitlines()
    header = lines[0].split(",")
    i = header.index("BIRTHDATE")
    rows = []
    for n, line in enumerate(lines[1:]):
        cells = line.split(",")
        if n < 3:
            cells[i] = "not-a-date"
        rows.append(",".join(cells))
    (folder / "patients.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    out = tmp_path / "out"
    res = cli_runner.invoke(cli, ["normalize", "ehr", str(folder), "-o", str(out), "--source", "synthea"])
    assert res.exit_code == 1, res.output
    assert "max_reject_rate" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "reject_rate_exceeded"
    assert rep["counts"]["rejected"] == 3 and rep["counts"]["kept"] == len(rows) - 3
    # the error messages name the value but carry no raw bytes under de-identification
    rej = _group(out, "rejects")
    assert all("not-a-date" in e for e in rej["error"].to_list())
    assert rej["raw"].null_count() == rej.height
    res = cli_runner.invoke(
        cli,
        [
            "normalize",
            "ehr",
            str(folder),
            "-o",
            str(out),
            "--source",
            "synthea",
            "--max-reject-rate",
            "0.5",
            "--overwrite",
        ],
    )
    assert res.exit_code == 0, res.output


def test_reference_range_flags_match_an_independent_count(tmp_path, salt):
    n_out = 0
    with gzip.open(SAMPLE / "mimic_iv_demo" / "labevents.csv.gz", "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            try:
                v, lo, hi = float(r["valuenum"]), float(r["ref_range_lower"]), float(r["ref_range_upper"])
            except ValueError:
                continue
            n_out += v < lo or v > hi
    assert n_out > 100
    out = tmp_path / "out"
    dataforge.normalize_ehr([SAMPLE / "mimic_iv_demo"], output=out, source="mimic")
    m = _tables(out)["measurement"].filter(pl.col("category") == "laboratory")
    assert m.filter(pl.col("flags") == "outside_reference_range").height == n_out
