"""`curriculum` reads its sources on an executor: scan tasks (one per source shard, or one per part
whose ``where`` is not a row condition) merge into exactly the arrays one read of each part gives,
take tasks return the chosen rows, and the output folder is byte-identical for 1 and 2 local
workers, a local Ray and a two-node Ray cluster (report.json apart from the executor, workers,
timings and output path). CLI and pipeline-file options, and their errors."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import yaml

import dataforge
from dataforge import curriculum as cur
from dataforge.cli import cli
from dataforge.config import ExecutorSpec
from dataforge.errors import ConfigError, DataError
from dataforge.io.shards import read_manifest, read_shard, write_json_atomic, write_shard

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
# report.json fields that record how and when the run went, not what it wrote
VOLATILE = ("output", "executor", "workers", "timings", "started_at", "finished_at", "peak_rss_mb")
# a condition on the whole part: evaluated shard by shard it would keep other rows
AGGREGATE = "LENGTH(text) > AVG(LENGTH(text))"
SHARD_ROWS = 64


class PickledSerial:
    """An executor running tasks one after another in this process, each function, task and result
    through pickle as between processes; records the items of every map."""

    name = "serial"
    workers = 2

    def __init__(self) -> None:
        self.maps: list[list[Any]] = []

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, on_done: Any = None) -> list[Any]:
        fn = pickle.loads(pickle.dumps(fn))
        items = [pickle.loads(pickle.dumps(i)) for i in items]
        self.maps.append(items)
        return [pickle.loads(pickle.dumps(fn(i))) for i in items]

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- sources and config


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Real dataforge outputs in several shards: ``clean`` of the news sample (13 shards of 100
    rows) and ``normalize finance`` of the companyfacts sample (instruct: 4 shards, text: 1)."""
    base = tmp_path_factory.mktemp("cur-exec-sources")
    dataforge.clean([SAMPLE / "news"], output=base / "news", shard_rows=100)
    dataforge.normalize_finance(
        [SAMPLE / "finance" / "companyfacts"],
        output=base / "fin",
        source="companyfacts",
        render="text,instruct",
        shard_rows=100,
    )
    return {"news": base / "news", "fin": base / "fin"}


def config(sources: dict[str, Path], d: Path, *, output: Path | None = None) -> Path:
    """Three stages: a token budget over a row condition and an aggregate one on the same part; a
    row budget with repeats across shards and a shortfall; no budget, with a source (and filter)
    that stage 1 reads too. Output shards of 64 rows."""
    news, fin = str(sources["news"]), str(sources["fin"])
    data = {
        "name": "exec-curriculum",
        "seed": 3,
        "output": {"path": str(output or d / "out"), "shard_rows": SHARD_ROWS},
        "stages": [
            {
                "stage": 1,
                "name": "pretraining",
                "budget": {"tokens": 400_000},
                "sources": [
                    {"name": "news_unique", "path": news, "weight": 3, "where": "exact_dups = 1",
                     "require_steps": ["dedup.exact"]},
                    {"name": "news_long", "path": news, "weight": 1, "where": AGGREGATE},
                ],
            },
            {
                "stage": 2,
                "name": "instructions",
                "budget": {"rows": 700},
                "sources": [
                    {"name": "fin_qa", "path": fin, "part": "instruct", "weight": 0.7, "repeat": True},
                    {"name": "fin_qa_long", "path": fin, "part": "instruct", "weight": 0.3,
                     "where": "LENGTH(response) > 120"},
                ],
            },
            {
                "stage": 3,
                "name": "domain",
                "sources": [
                    {"name": "fin_text", "path": fin, "part": "text", "weight": 1},
                    {"name": "news_again", "path": news, "weight": 2, "where": "exact_dups = 1"},
                ],
            },
        ],
    }  # fmt: skip
    d.mkdir(parents=True, exist_ok=True)
    path = d / "cur.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ref(sources, tmp_path_factory) -> Path:
    """The output of one local worker (everything in this process)."""
    d = tmp_path_factory.mktemp("cur-exec-ref")
    report = dataforge.build_curriculum(config(sources, d))
    assert (report.executor, report.workers) == ("local", 1)
    return d / "out"


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _stable_report(out: Path) -> str:
    rep = json.loads((out / "report.json").read_text())
    for key in VOLATILE:
        rep.pop(key)
    for step in rep["ledger"]["steps"]:
        step.pop("seconds")
    return json.dumps(rep)


def assert_same_output(out: Path, ref: Path, *, stages: tuple[int, ...] = (1, 2, 3)) -> None:
    """Every shard and manifest.json byte for byte (report.md and report.html hold timings),
    report.json apart from :data:`VOLATILE`; each of ``stages`` has several shards."""
    files = _files(ref)
    assert _files(out) == files
    for stage in stages:
        assert sum(f.startswith(f"stage-{stage}/") for f in files) > 1, stage
    for rel in files:
        if rel not in ("report.json", "report.md", "report.html"):
            assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert _stable_report(out) == _stable_report(ref)


def _report(out: Path) -> tuple[str, int]:
    rep = json.loads((out / "report.json").read_text())
    return rep["executor"], rep["workers"]


# --------------------------------------------------------------------------- the reference itself


def test_reference_exercises_every_case(ref, sources):
    """The reference is worth comparing against: several shards per stage, rows of every source
    shard, repeats, a shortfall, and an aggregate ``where`` that gives other rows shard by shard."""
    manifest = read_manifest(ref)
    st1, st2, st3 = manifest["stages"]
    news_long = st1["sources"][1]
    assert (
        st1["tokens"] <= 400_000 and st1["sources"][0]["realized_rows"] < st1["sources"][0]["filtered_rows"]
    )
    fin_qa, fin_qa_long = st2["sources"]
    assert fin_qa["repeated_rows"] > 0 and fin_qa_long["realized_rows"] < fin_qa_long["target_rows"]
    assert st3["sources"][1]["realized_rows"] == 2 * st3["sources"][0]["realized_rows"] == 60
    # the aggregate over the whole part, not shard by shard
    shards = [read_shard(sources["news"] / s["path"]) for s in read_manifest(sources["news"])["shards"]]
    assert len(shards) == 13
    expr = pl.sql_expr(AGGREGATE)
    whole = pl.concat([pl.from_arrow(t.select(["text"])) for t in shards]).select(expr).to_series().sum()
    by_shard = sum(pl.from_arrow(t.select(["text"])).select(expr).to_series().sum() for t in shards)
    assert news_long["filtered_rows"] == whole != by_shard
    # stage 2 takes rows of all four instruct shards
    ids = {i for s in st2["shards"] for i in read_shard(ref / s["path"]).column("id").to_pylist()}
    fin = read_manifest(sources["fin"])["stages"]["instruct"]["shards"]
    assert len(fin) == 4
    for s in fin:
        assert ids & set(read_shard(sources["fin"] / s["path"]).column("id").to_pylist()), s["path"]


@pytest.mark.parametrize(
    ("where", "row"),
    [
        (None, True),
        ("cluster_size = 1", True),
        ("label_issue = false", True),
        ("exact_dups = 1 AND LENGTH(text) > 1500", True),
        ("lang IN ('en', 'de') OR lang IS NULL", True),
        ("LOWER(t) LIKE 'a%' AND NOT flag", True),
        ("CASE WHEN score > 1 THEN TRUE ELSE FALSE END", True),
        ("COALESCE(score, 0) % 2 = 0", True),
        (AGGREGATE, False),
        ("score = MAX(score)", False),
        ("COUNT(*) > 1", False),
        ("ROW_NUMBER() OVER () > 2", False),
        ("score > SUM(score) OVER (PARTITION BY t)", False),
        ("score IN (1, 2) AND FIRST(score) = 1", False),
    ],
)
def test_is_row_condition(where, row):
    assert cur.is_row_condition(where) is row


# --------------------------------------------------------------------------- tasks merge into one read


def test_tasks_merge_into_the_same_output(sources, ref, tmp_path, monkeypatch):
    """Scan tasks: one per source shard for row conditions, shared by the sources with the same
    filter (news_unique and news_again) and read once for all filters of a shard (fin_qa and
    fin_qa_long); one for the part with the aggregate ``where``. Take tasks: one per source shard
    with chosen rows, per stage. Tasks and results through pickle; the output is the reference's."""
    ex = PickledSerial()
    monkeypatch.setattr(cur, "make_executor", lambda kind, **kw: ex)
    report = dataforge.build_curriculum(config(sources, tmp_path))
    assert (report.executor, report.workers) == ("serial", 2)
    assert_same_output(tmp_path / "out", ref)

    scans, *takes = ex.maps
    assert len(takes) == 3
    shape = sorted(
        (Path(t.folder).name, len(t.shards), tuple(sorted(s.name for s in t.sources))) for t in scans
    )
    assert shape == sorted(
        [("news", 1, ("news_unique",))] * 13
        + [("news", 13, ("news_long",))]
        + [("fin", 1, ("fin_qa", "fin_qa_long"))] * 4
        + [("fin", 1, ("fin_text",))]
    )
    for stage, items in zip(read_manifest(ref)["stages"], takes, strict=True):
        names = [t.source.name for t in items]
        assert set(names) == {s["name"] for s in stage["sources"]}
        for s in stage["sources"]:
            # a task per source shard holding chosen rows (the aggregate's part is one task)
            n = names.count(s["name"])
            assert n == 1 if s["name"] in ("news_long", "fin_text") else n > 1, s["name"]
        assert sum(t.rows.size for t in items) == stage["rows"]


def test_scan_merge_matches_one_read(sources, ref):
    """The merged arrays of the scan tasks are those of one read of each part in this process."""
    spec = cur.load_curriculum(Path(ref).parent / "cur.yaml")
    merged = cur._scan_pools(spec, cur.ByteTokenizer(), PickledSerial())
    for stage in spec.stages:
        local = cur._read_pools(stage, cur.ByteTokenizer(), set())
        for got, want in zip(merged[stage.stage], local, strict=True):
            assert got.available == want.available > 0
            np.testing.assert_array_equal(got.eligible, want.eligible)
            np.testing.assert_array_equal(got.tokens, want.tokens)
            assert got.eligible.dtype == want.eligible.dtype and got.tokens.dtype == want.tokens.dtype


def test_empty_shards_between_full_ones(tmp_path, monkeypatch):
    """A part whose shards hold 0, 10, 0 and 7 rows: each row is taken from the shard it is in
    (the rows of a shard are numbered after those of the shards before it)."""
    table = pa.Table.from_pylist(
        [
            {"id": f"r-{i}", "text": "w " * (i + 1), "meta": None, "source_file": "r.jsonl",
             "source_row": i, "source_line": i + 1, "score": i}
            for i in range(17)
        ]
    )  # fmt: skip
    folder = tmp_path / "src"
    shards = []
    for i, (start, n) in enumerate([(0, 0), (0, 10), (10, 0), (10, 7)]):
        info = write_shard(table.slice(start, n), folder / "data" / f"part-{i:05d}.arrow", relative_to=folder)
        shards.append(info.to_dict())
    manifest = {"manifest_version": 1, "kind": "documents", "name": "src", "config": {}, "shards": shards}
    write_json_atomic(folder / "manifest.json", manifest)
    data = {
        "name": "empty-shards",
        "stages": [
            {"stage": 1, "sources": [{"name": "a", "path": str(folder), "where": "score % 3 > 0"},
                                     {"name": "b", "path": str(folder), "repeat": True}]},
        ],
    }  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    dataforge.build_curriculum(cfg, output=tmp_path / "one", shard_rows=5)
    ex = PickledSerial()
    monkeypatch.setattr(cur, "make_executor", lambda kind, **kw: ex)
    dataforge.build_curriculum(cfg, output=tmp_path / "tasks", shard_rows=5)
    assert [len(m) for m in ex.maps] == [4, 4]  # a scan per shard; a take per (source, full shard)
    st = read_manifest(tmp_path / "one")["stages"][0]
    assert [s["realized_rows"] for s in st["sources"]] == [11, 11] and len(st["shards"]) == 5
    assert_same_output(tmp_path / "tasks", tmp_path / "one", stages=(1,))


def test_corrupted_shard_fails_in_its_scan_task(sources, tmp_path, monkeypatch):
    """A source shard that does not match its manifest is a DataError naming it, raised by the
    task that reads it; nothing is left behind."""
    copy = Path(shutil.copytree(sources["fin"], tmp_path / "fin"))
    shard = copy / read_manifest(copy)["stages"]["instruct"]["shards"][2]["path"]
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF
    shard.write_bytes(bytes(data))
    ex = PickledSerial()
    monkeypatch.setattr(cur, "make_executor", lambda kind, **kw: ex)
    cfg = config({"news": sources["news"], "fin": copy}, tmp_path / "c")
    with pytest.raises(DataError, match=rf"source 'fin_qa': shard {re.escape(str(shard))} does not match"):
        dataforge.build_curriculum(cfg)
    assert len(ex.maps) == 1  # the scan map: nothing was taken or written
    assert not (tmp_path / "c" / "out").exists()
    assert not list((tmp_path / "c").glob(".out.partial-*"))


# --------------------------------------------------------------------------- local workers, CLI, run


def test_two_local_workers_give_the_same_bytes(sources, ref, tmp_path, cli_runner):
    """``dataforge curriculum CONFIG --workers 2``: a process pool."""
    out = tmp_path / "out"
    res = cli_runner.invoke(cli, ["-q", "curriculum", str(config(sources, tmp_path)), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert _report(out) == ("local", 2)
    assert_same_output(out, ref)


def test_run_pipeline_file_with_two_workers(sources, ref, tmp_path, cli_runner):
    """``dataforge run cur.yaml --workers 2`` passes the option on to the curriculum build."""
    res = cli_runner.invoke(cli, ["-q", "run", str(config(sources, tmp_path)), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert _report(tmp_path / "out") == ("local", 2)
    assert_same_output(tmp_path / "out", ref)


def _with_executor(cfg: Path, section: object) -> Path:
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["executor"] = section
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg


def test_executor_section_of_the_file_and_its_override(sources, ref, tmp_path, cli_runner):
    """A curriculum file's ``executor:`` section is used when no option is given (cron runs the
    file as is); command-line options override it; the manifest does not record it."""
    cfg = _with_executor(config(sources, tmp_path), {"kind": "local", "workers": 2})
    assert cur.load_curriculum(cfg).executor == ExecutorSpec(kind="local", workers=2)
    res = cli_runner.invoke(cli, ["-q", "run", str(cfg)])
    assert res.exit_code == 0, res.output
    assert _report(tmp_path / "out") == ("local", 2)
    assert_same_output(tmp_path / "out", ref)
    res = cli_runner.invoke(cli, ["-q", "curriculum", str(cfg), "--workers", "1", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert _report(tmp_path / "out") == ("local", 1)
    assert_same_output(tmp_path / "out", ref)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"kind": "dask"}, "unknown executor 'dask'; valid: local, ray"),
        ({"workers": 0}, "workers must be a positive integer, got 0"),
        ({"threads": 2}, "threads"),
        ("ray", "executor must be a mapping"),
    ],
)
def test_bad_executor_section(sources, tmp_path, cli_runner, section, message):
    cfg = _with_executor(config(sources, tmp_path), section)
    res = cli_runner.invoke(cli, ["curriculum", str(cfg)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "out").exists()


def test_bad_executor_options(sources, tmp_path, cli_runner):
    cfg = str(config(sources, tmp_path))
    res = cli_runner.invoke(cli, ["curriculum", cfg, "--executor", "nope"])
    assert res.exit_code == 2
    assert "'nope' is not one of 'local', 'ray'" in res.output
    res = cli_runner.invoke(cli, ["curriculum", cfg, "--workers", "0"])
    assert res.exit_code == 2 and "--workers" in res.output
    res = cli_runner.invoke(cli, ["curriculum", cfg, "--ray-address", "127.0.0.1:6379"])
    assert res.exit_code == 2 and "needs --executor ray" in res.output
    res = cli_runner.invoke(cli, ["run", cfg, "--executor", "nope"])
    assert res.exit_code == 2 and "'nope' is not one of 'local', 'ray'" in res.output
    with pytest.raises(ConfigError, match=r"unknown executor 'nope'; valid: .*local.*ray"):
        dataforge.build_curriculum(cfg, executor="nope")
    with pytest.raises(ConfigError, match="workers must be a positive integer, got 0"):
        dataforge.run(cfg, workers=0)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


# --------------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_local_ray_gives_the_same_bytes(sources, ref, tmp_path, cli_runner):
    """On a real local Ray (started once): ``curriculum --executor ray --workers 2`` and
    ``run cur.yaml --executor ray --workers 2``."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = str(config(sources, tmp_path))
        res = cli_runner.invoke(cli, ["-q", "curriculum", cfg, "-o", str(tmp_path / "cli"), "--executor", "ray",
                                      "--workers", "2"])  # fmt: skip
        assert res.exit_code == 0, res.output
        res = cli_runner.invoke(cli, ["-q", "run", cfg, "--executor", "ray", "--workers", "2"])
        assert res.exit_code == 0, res.output
    finally:
        ray.shutdown()
    for out in (tmp_path / "cli", tmp_path / "out"):
        assert _report(out) == ("ray", 2)
        assert_same_output(out, ref)


@pytest.mark.ray
def test_two_node_cluster_gives_the_same_bytes(sources, ref, tmp_path, cli_runner, two_node_cluster):
    """On ``ray.cluster_utils.Cluster`` (head + one node, one CPU each), joined by address from the
    API and from ``dataforge curriculum --ray-address``."""
    cfg = config(sources, tmp_path)
    report = dataforge.build_curriculum(cfg, executor="ray", ray_address=two_node_cluster)
    assert (report.executor, report.workers) == ("ray", 2)  # the cluster's CPUs
    out = tmp_path / "cli"
    res = cli_runner.invoke(cli, ["-q", "curriculum", str(cfg), "-o", str(out), "--executor", "ray",
                                  "--ray-address", two_node_cluster])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert _report(out) == ("ray", 2)
    assert_same_output(tmp_path / "out", ref)
    assert_same_output(out, ref)
