"""`dataforge normalize finance` end to end: ledger against the written files, schemas, stages,
determinism, the pipeline file and the CLI."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

import dataforge
from dataforge.cli import cli
from dataforge.io.shards import read_manifest, read_shard, verify_shards

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "finance"


def _read(out: Path, shards: list[dict]) -> pl.DataFrame:
    parts = [pl.from_arrow(read_shard(out / s["path"])) for s in shards]
    return pl.concat(parts) if parts else pl.DataFrame()


@pytest.mark.parametrize("source", ["companyfacts", "fsds", "xbrl"])
def test_each_source_end_to_end(tmp_path, source):
    out = tmp_path / "out"
    report = dataforge.normalize_finance([SAMPLE / source], output=out, source=source, render="text,instruct")
    man = read_manifest(out)
    c = man["counts"]
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"] == report.rows_in
    assert verify_shards(out) == []
    facts = _read(out, man["tables"]["fact"]["shards"])
    assert man["tables"]["fact"]["schema"]["name"] == "fin.fact.v1"
    # kept input records = facts that came from a record (derived Q4 rows have no source row)
    kept = facts.filter(pl.col("source_row").is_not_null()).select("source_file", "source_row").unique()
    assert kept.height == c["kept"]
    dropped = _read(out, man.get("dropped", []))
    assert dropped.height == c["dropped"]
    if c["dropped"]:
        assert set(dropped["reason"].unique().to_list()) <= {
            "superseded",
            "duplicate",
            "conflict",
            "nil",
            "non_numeric",
            "dimensional",
        }
    # one fact per key
    key = ["cik", "taxonomy", "concept", "unit", "start", "end", "dimensions"]
    assert facts.select(key).unique().height == facts.height
    assert isinstance(facts["value"][0], Decimal)
    # stages for the curriculum
    assert man["stages"]["text"]["stage"] == 3 and man["stages"]["instruct"]["stage"] == 2
    text = _read(out, man["stages"]["text"]["shards"])
    ids = set(facts["fact_id"].to_list())
    assert text.height > 0 and all(set(f) <= ids for f in text["fact_ids"].to_list())


def test_deterministic_bytes(tmp_path):
    for name in ("a", "b"):
        dataforge.normalize_finance([SAMPLE / "companyfacts"], output=tmp_path / name, source="companyfacts",
                                    render="text,instruct", seed=3)  # fmt: skip
    sha = [[s["sha256"] for s in read_manifest(tmp_path / n)["shards"]] for n in ("a", "b")]
    assert sha[0] == sha[1] and len(sha[0]) >= 5


def test_pipeline_file_and_cli(tmp_path, cli_runner):
    out = tmp_path / "fin"
    res = cli_runner.invoke(cli, ["run", str(ROOT / "pipelines" / "finance.yaml"), "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert "tables: " in res.output and "fact" in res.output and "rendered:" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["name"] == "normalize-finance" and rep["config"]["source"] == "companyfacts"
    res = cli_runner.invoke(cli, ["inspect", str(out), "--verify", "--rows", "1"])
    assert res.exit_code == 0, res.output
    assert "fin.fact.v1" in res.output and "instruction.v1" in res.output and "all shards match" in res.output
    info = dataforge.inspect_output(out)
    assert info["tables"]["fact"]["rows"] == rep["reports"]["tables"][1]["rows"]
    res = cli_runner.invoke(
        cli, ["normalize", "finance", str(SAMPLE / "fsds"), "-o", str(tmp_path / "x"), "--source", "edgar"]
    )
    assert res.exit_code == 2 and "companyfacts" in res.output
    res = cli_runner.invoke(
        cli, ["normalize", "finance", str(tmp_path / "nope"), "-o", str(tmp_path / "y"), "--source", "fsds"]
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "y").exists()
