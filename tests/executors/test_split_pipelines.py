"""Split inputs end to end: the same bytes whatever ``task_bytes``, worker count or executor, exact
provenance, a per-input ledger that adds up, and resume after SIGKILL with files split in pieces."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dataforge.config import ExecutorSpec, OutputSpec, Pipeline
from dataforge.io.inputs import InputSpec, discover
from dataforge.io.readers import read_batches
from dataforge.registry import build_step
from dataforge.runner import run_pipeline
from dataforge.stages import read_ipc, row_bytes

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "sample_data"
SMALL = 60_000  # task_bytes that splits big.jsonl (~1 MB) into ~17 pieces, the CSV and Parquet too
SHARD_BYTES = 150_000  # most data shards are cut by bytes (~200 rows), not by shard_rows (300)


def digests(out: Path) -> dict[str, str]:
    files = sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and p.parent.name in ("data", "dropped", "rejects", "clusters", "cluster_pairs")
    )
    files.append(out / "manifest.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """One big JSONL (with near and exact duplicates, defects, records without id), a splittable
    CSV, a Parquet file of many row groups, a gzip file and a run of tiny files."""
    d = tmp_path_factory.mktemp("split-in")
    with gzip.open(SAMPLE / "news" / "reuters.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    big = [json.dumps(r) for r in rows[:1000]]
    big[10:10] = [json.dumps(rows[500])]  # an exact duplicate inside the big file
    big[700:700] = ["", "{broken", json.dumps({"text": rows[3]["text"] + " extra words here"})]
    big.append(json.dumps({"text": rows[1]["text"]}))  # no id: id from the line number
    (d / "a-big.jsonl").write_text("\n".join(big) + "\n")
    flat = [
        {"id": r["id"], "text": r["text"].replace(",", " ").replace('"', " ").replace("\n", " ")}
        for r in rows[1000:1300]
    ]
    csv_lines = ["id,text"] + [f"{r['id']},{r['text']}" for r in flat] + ["", "ragged,row,here"]
    (d / "b-flat.csv").write_text("\n".join(csv_lines) + "\n")
    table = pa.table({"id": [r["id"] for r in rows[1300:1700]], "text": [r["text"] for r in rows[1300:1700]]})
    pq.write_table(table, d / "c-groups.parquet", row_group_size=40)
    gz = "".join(json.dumps(r) + "\n" for r in rows[1700:1900])
    (d / "d-packed.jsonl.gz").write_bytes(gzip.compress(gz.encode(), mtime=0))
    for i in range(12):  # tiny files (grouped), some duplicating the big file's documents
        r = rows[1900 + i] if i % 3 else {"id": f"copy{i}", "text": rows[20 + i]["text"]}
        (d / f"e-tiny-{i:02d}.jsonl").write_text(json.dumps(r) + "\n")
    return d


def pipeline(inputs: Path, out: Path, *, task_bytes: int | None = None, workers: int = 1) -> Pipeline:
    spec = InputSpec(paths=(str(inputs),), **({"task_bytes": task_bytes} if task_bytes else {}))
    return Pipeline(
        name="split-determinism",
        input=spec,
        output=OutputSpec(path=str(out), shard_rows=300, shard_bytes=SHARD_BYTES),
        steps=[
            build_step("normalize.text"),
            build_step("filter.gopher_quality"),
            build_step("pii.redact"),
            build_step("dedup.exact"),
            build_step("dedup.minhash", {"report_clusters": True, "band_partitions": 4}),
        ],
        executor=ExecutorSpec(workers=workers),
        max_reject_rate=None,
        batch_rows=128,
    )


def plan_of(out: Path) -> list[list[dict]]:
    (work,) = list((out / "_work").iterdir())
    return json.loads((work / "plan.json").read_text())["tasks"]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """Default task size: one task per file, the tiny files in one group."""
    out = tmp_path_factory.mktemp("split-ref") / "out"
    report = run_pipeline(pipeline(inputs, out), keep_work=True)
    plan = plan_of(out)
    assert all(p["kind"] == "whole" for t in plan for p in t)
    assert [len(t) for t in plan] == [1, 1, 1, 1, 12]
    return out, report


@pytest.fixture(scope="module")
def split_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("split-small") / "out"
    report = run_pipeline(pipeline(inputs, out, task_bytes=SMALL), keep_work=True)
    return out, report


def test_reference_exercises_every_outcome(reference):
    _, report = reference
    reasons = report.dropped_by_reason
    assert reasons.get("dedup.minhash:near_duplicate", 0) > 0
    assert sum(v for k, v in reasons.items() if k.startswith("dedup.exact")) > 0
    assert sum(v for k, v in reasons.items() if k.startswith("filter.gopher_quality")) > 0
    assert report.rejected >= 4


def test_shards_are_cut_by_rows_and_bytes_as_documented(reference):
    """Each shard holds at most shard_rows rows and SHARD_BYTES bytes (by ``row_bytes`` of the
    shard itself, or it is one row), and is full: the next shard's first row would not fit."""
    ref, _ = reference
    cut_by_bytes = 0
    for sub in ("data", "dropped"):
        sizes = [row_bytes(p) for p in sorted((ref / sub).glob("part-*.arrow"))]
        assert len(sizes) > 1
        for this, after in zip(sizes, [*sizes[1:], None], strict=True):
            assert len(this) <= 300
            assert this.sum() <= SHARD_BYTES or len(this) == 1
            if after is not None:
                assert len(this) == 300 or this.sum() + after[0] > SHARD_BYTES
                cut_by_bytes += len(this) < 300
    assert cut_by_bytes > 3


def test_split_plan_cuts_every_splittable_file(split_run):
    out, _ = split_run
    kinds: dict[str, set[str]] = {}
    for task in plan_of(out):
        for p in task:
            kinds.setdefault(str(p["file"]), set()).add(str(p["kind"]))
    by_kind = sorted(k for ks in kinds.values() for k in ks)
    assert by_kind.count("bytes") == 2  # the JSONL and the CSV
    assert "row_groups" in by_kind and "whole" in by_kind
    assert len(plan_of(out)) > 25


def test_output_does_not_depend_on_task_bytes(inputs, reference, split_run, tmp_path):
    ref, ref_report = reference
    out, report = split_run
    assert digests(out) == digests(ref)
    assert report.per_input == ref_report.per_input
    other = tmp_path / "other"
    run_pipeline(pipeline(inputs, other, task_bytes=23_456))
    assert digests(other) == digests(ref)


def test_per_input_ledger_adds_up_over_pieces(reference, split_run):
    _, report = split_run
    files = {e["path"]: e for e in report.per_input}
    assert len(files) == 16
    for e in files.values():
        assert e["rows_in"] == e["kept"] + e["dropped"] + e["rejected"]
    assert sum(e["rows_in"] for e in files.values()) == report.rows_in
    assert sum(e["kept"] for e in files.values()) == report.kept
    big = next(e for p, e in files.items() if p.endswith("a-big.jsonl"))
    assert big["rows_in"] == 1005 and big["rejected"] == 2


def test_provenance_is_that_of_a_whole_file_read(inputs, split_run):
    """Every kept or dropped row points at the record it came from (read without splitting)."""
    out, _ = split_run
    spec = InputSpec(paths=(str(inputs),))
    whole = {}
    for f in discover(spec):
        for b in read_batches(f, spec):
            for r in b.docs.select("id", "_source", "_row", "_line").iter_rows():
                whole[(r[1], r[2])] = (r[0], r[3])
    rows = pl.concat(
        [
            pl.DataFrame(pl.from_arrow(read_ipc(p))).select("id", "source_file", "source_row", "source_line")
            for sub in ("data", "dropped")
            for p in sorted((out / sub).glob("part-*"))
        ]
    )
    assert rows.height == len(whole)
    for id_, src, row, line in rows.iter_rows():
        assert whole[(src, row)] == (id_, line)


def test_two_workers_give_identical_bytes(inputs, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "w2"
    run_pipeline(pipeline(inputs, out, task_bytes=SMALL, workers=2))
    assert digests(out) == digests(ref)


@pytest.mark.ray
def test_local_ray_with_split_inputs_is_byte_identical(inputs, reference, tmp_path):
    pytest.importorskip("ray")
    from dataforge.executors.ray import RayExecutor

    ref, _ = reference
    out = tmp_path / "ray"
    ex = RayExecutor(workers=2)
    try:
        report = run_pipeline(pipeline(inputs, out, task_bytes=SMALL), executor=ex)
    finally:
        ex.close()
    assert report.executor == "ray"
    assert digests(out) == digests(ref)


@pytest.mark.ray
def test_two_node_cluster_with_split_inputs_is_byte_identical(inputs, reference, tmp_path):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from dataforge.executors.ray import RayExecutor

    ref, _ = reference
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        ex = RayExecutor(address=cluster.address)
        out = tmp_path / "cluster"
        run_pipeline(pipeline(inputs, out, task_bytes=SMALL), executor=ex)
        ex.close()
        assert digests(out) == digests(ref)
    finally:
        ray.shutdown()
        cluster.shutdown()


# ----------------------------------------------------------------------------- resume


def _yaml(inputs: Path, out: Path, path: Path) -> Path:
    data = {
        "name": "split-determinism",  # the manifest holds the name
        "input": {"paths": [str(inputs)], "task_bytes": SMALL},
        "output": {"path": str(out), "shard_rows": 300, "shard_bytes": SHARD_BYTES},
        "max_reject_rate": None,
        "batch_rows": 128,
        "steps": [
            {"normalize.text": {}},
            {"filter.gopher_quality": {}},
            {"pii.redact": {}},
            {"dedup.exact": {}},
            {"dedup.minhash": {"report_clusters": True, "band_partitions": 4}},
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_markers", [5, 40])
def test_sigkill_with_split_inputs_then_rerun_gives_identical_bytes(
    inputs, reference, tmp_path, kill_after_markers
):
    ref, _ = reference
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dataforge", "-q", "run", str(_yaml(inputs, out, tmp_path / "p.yaml"))]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        markers = list((out / "_work").rglob("*.done.json")) if (out / "_work").exists() else []
        if len(markers) >= kill_after_markers:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.wait()
    if not killed:
        pytest.fail(f"the run finished before {kill_after_markers} markers appeared")
    assert not (out / "manifest.json").exists()
    (work,) = list((out / "_work").iterdir())
    assert (work / "plan.json").exists()  # the rerun reuses the stored plan
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(ref)
    assert [p for p in out.rglob("*") if ".tmp-" in p.name] == []


def test_small_inputs_count_lines_in_this_process_on_the_local_executor(inputs, tmp_path, monkeypatch):
    """Splitting needs the line count of every byte piece: on the local executor, up to
    LOCAL_COUNT_BYTES of them are counted in this process (a spawned worker's imports take longer
    than counting), above it on the workers; the plan is the same either way."""
    import dataforge.runner as runner
    from dataforge.executors.local import LocalExecutor

    mapped: list[str] = []

    class Spy(LocalExecutor):
        def map(self, fn, items, *, on_done=None):
            mapped.append(getattr(fn, "__name__", type(fn).__name__))
            return super().map(fn, items, on_done=on_done)

    plans = []
    for limit in (runner.LOCAL_COUNT_BYTES, 0):
        monkeypatch.setattr(runner, "LOCAL_COUNT_BYTES", limit)
        mapped.clear()
        out = tmp_path / f"limit{limit}"
        ex = Spy(workers=2)
        try:
            run_pipeline(pipeline(inputs, out, task_bytes=SMALL), executor=ex, keep_work=True)
        finally:
            ex.close()
        assert ("count_newlines" in mapped) == (limit == 0)
        plans.append(plan_of(out))
    assert plans[0] == plans[1]
