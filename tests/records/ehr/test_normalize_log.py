"""`normalize ehr` on the console: rejected files are named by their real path there, next to the
pseudonym that rejects/ and the reports give them (which must never hold the real name)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl

import dataforge
from dataforge.cli import cli
from dataforge.io.shards import read_manifest, read_shard

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "ehr"
BUNDLE = "Temika453_Wuckert783_b37f7960-7e9e-f3f7-f891-79ae4f632406.json.gz"
SALT = "unit-test-salt-0123456789"


def _inputs(tmp_path: Path) -> Path:
    """A real Synthea bundle (named after its patient) and an NDJSON file with a broken line and a
    resource without resourceType."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / BUNDLE).write_bytes((SAMPLE / "synthea_fhir" / BUNDLE).read_bytes())
    (folder / "extra.ndjson").write_text(
        '{"resourceType": "Observation", "id": "broken\n'
        + json.dumps({"id": "no-type", "status": "final"})
        + "\n"
    )
    return folder


def _rejects(out: Path) -> pl.DataFrame:
    return pl.concat([pl.from_arrow(read_shard(out / s["path"])) for s in read_manifest(out)["rejects"]])


def test_rejected_files_are_named_on_the_console_not_in_the_output(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DATAFORGE_DEID_SALT", SALT)
    folder = _inputs(tmp_path)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="dataforge.records.normalize"):
        dataforge.normalize_ehr([folder], output=out, source="fhir", max_reject_rate=None)
    rejects = _rejects(out)
    assert sorted(rejects["reason"]) == ["bad_json", "wrong_type"]
    (pseudonym,) = set(rejects["source_file"])
    assert pseudonym.startswith("file-") and "extra" not in pseudonym
    # the log maps the pseudonym back to the file
    lines = [r.getMessage() for r in caplog.records if pseudonym in r.getMessage()]
    assert len(lines) == 1, caplog.records
    assert str(folder / "extra.ndjson") in lines[0]  # a path that opens the file, not just its name
    assert "2 record(s)" in lines[0] and "bad_json 1" in lines[0] and "wrong_type 1" in lines[0]
    # the output still names no file
    for name in ("report.json", "report.md", "manifest.json"):
        assert "extra.ndjson" not in (out / name).read_text(), name
    assert "extra.ndjson" not in " ".join(rejects["error"])


def test_cli_prints_the_real_path_of_a_rejected_file(tmp_path, cli_runner, monkeypatch):
    monkeypatch.setenv("DATAFORGE_DEID_SALT", SALT)
    folder = _inputs(tmp_path)
    out = tmp_path / "out"
    res = cli_runner.invoke(
        cli, ["normalize", "ehr", str(folder), "-o", str(out), "--source", "fhir", "--max-reject-rate", "1"]
    )
    assert res.exit_code == 0, res.output
    (pseudonym,) = set(_rejects(out)["source_file"])
    # the summary quotes the rejects by pseudonym; the console also says which file that is
    assert f"rejected (bad_json): {pseudonym}" in res.output
    mapping = [
        line for line in res.output.splitlines() if pseudonym in line and str(folder / "extra.ndjson") in line
    ]
    assert mapping, res.output


def test_the_json_log_file_never_holds_the_real_name(tmp_path, cli_runner, monkeypatch):
    """--log-json writes a file that outlives the run: the terminal-only mapping is not in it."""
    monkeypatch.setenv("DATAFORGE_DEID_SALT", SALT)
    folder = _inputs(tmp_path)
    log_file = tmp_path / "logs" / "run.jsonl"
    res = cli_runner.invoke(
        cli,
        ["--log-json", str(log_file), "normalize", "ehr", str(folder), "-o", str(tmp_path / "out"),
         "--source", "fhir", "--max-reject-rate", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "extra.ndjson" in res.output  # the terminal has it
    logged = log_file.read_text()
    assert logged.strip() and "extra.ndjson" not in logged and "Temika" not in logged


def test_off_mode_logs_no_mapping(tmp_path, caplog):
    folder = _inputs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dataforge.records.normalize"):
        dataforge.normalize_ehr(
            [folder], output=tmp_path / "out", source="fhir", deid="off", max_reject_rate=None
        )
    assert not [r for r in caplog.records if "name the file" in r.getMessage()]
    assert set(_rejects(tmp_path / "out")["source_file"]) == {"extra.ndjson"}


def test_a_truncated_input_file_fails_the_run(tmp_path, monkeypatch):
    """An NDJSON file cut short lost an unknown number of resources: the run ends with status
    input_truncated (exit 1) after writing its outputs, unless max_reject_rate is null."""
    import gzip

    import pytest

    from dataforge.runner import RejectRateError

    monkeypatch.setenv("DATAFORGE_DEID_SALT", SALT)
    bundle = json.loads(gzip.decompress((SAMPLE / "synthea_fhir" / BUNDLE).read_bytes()))
    lines = [json.dumps(e["resource"]).encode() for e in bundle["entry"]]
    data = gzip.compress(b"\n".join(lines) + b"\n", mtime=0)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "cut.ndjson.gz").write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(RejectRateError, match=r"1 input file\(s\) end early") as info:
        # a high limit: references into the lost tail are rejected too, the cut itself must fail it
        dataforge.normalize_ehr([folder], output=tmp_path / "out", source="fhir", max_reject_rate=0.99)
    assert info.value.report.status == "input_truncated"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["status"] == "input_truncated"
    ok = dataforge.normalize_ehr([folder], output=tmp_path / "ok", source="fhir", max_reject_rate=None)
    assert ok.status == "ok" and ok.rejected_by_reason.get("truncated") == 1
