"""End-to-end runs: exact counts on planted defects, ledger, determinism, resume, output safety."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import dataforge
from dataforge.config import ExecutorSpec, OutputSpec, Pipeline
from dataforge.dedup.exact import DEFAULT_PARTITIONS
from dataforge.errors import InputError, OutputError
from dataforge.executors.local import LocalExecutor
from dataforge.io.inputs import InputSpec
from dataforge.io.shards import read_manifest, read_shard, verify_shards
from dataforge.registry import build_step
from dataforge.report import RunReport
from dataforge.runner import RejectRateError, run_pipeline
from dataforge.schemas import load_schema
from dataforge.stages import shard_name

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
DEFECTS = SAMPLE / "defects" / "planted.jsonl"
EXPECTED = json.loads((SAMPLE / "defects" / "expected.json").read_text())


def read_dir(out: Path, sub: str) -> pl.DataFrame:
    files = sorted((out / sub).glob("part-*"))
    if not files:
        return pl.DataFrame()
    return pl.concat([pl.DataFrame(pl.from_arrow(read_shard(f))) for f in files])


def digests(out: Path) -> dict[str, str]:
    """sha256 of every shard and of the manifest."""
    files = sorted(
        p for p in out.rglob("*") if p.is_file() and p.parent.name in ("data", "dropped", "rejects")
    )
    files.append(out / "manifest.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ----------------------------------------------------------------------------- planted defects


@pytest.fixture(scope="module")
def defects_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("defects") / "out"
    report = dataforge.clean([str(DEFECTS)], output=out, max_reject_rate=None)
    return out, report


def test_planted_defects_counts_exactly(defects_run):
    out, report = defects_run
    assert report.rows_in == EXPECTED["rows_in"]
    assert report.kept == EXPECTED["kept"]
    assert report.rejected_by_reason == EXPECTED["rejected_by_reason"]
    assert report.dropped_by_reason == EXPECTED["dropped_by_reason"]
    pii = next(s for s in report.ledger.steps if s.step == "pii.redact")
    assert {k: v for k, v in pii.counters.items() if v} == EXPECTED["pii_redacted"]


def test_ledger_adds_up_in_files(defects_run):
    out, report = defects_run
    stored = json.loads((out / "report.json").read_text())
    c = stored["counts"]
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"]
    manifest = read_manifest(out)
    assert manifest["counts"] == c
    assert sum(s["rows"] for s in manifest["shards"]) == c["kept"]
    assert sum(s["rows"] for s in manifest["dropped"]) == c["dropped"]
    assert sum(s["rows"] for s in manifest["rejects"]) == c["rejected"]
    per_input = stored["per_input"]
    assert sum(p["rows_in"] for p in per_input) == c["rows_in"]
    # every line of the input file is in exactly one place
    lines = (
        read_dir(out, "data")["source_line"].to_list()
        + read_dir(out, "dropped")["source_line"].to_list()
        + read_dir(out, "rejects")["source_line"].to_list()
    )
    assert sorted(lines) == list(range(1, EXPECTED["rows_in"] + 1))


def test_rejects_name_file_line_and_keep_raw(defects_run):
    out, _ = defects_run
    rejects = read_dir(out, "rejects")
    raw_lines = DEFECTS.read_bytes().split(b"\n")
    for row in rejects.iter_rows(named=True):
        assert row["source_file"] == str(DEFECTS)
        assert f"{DEFECTS}:{row['source_line']}" in row["error"]
        assert row["raw"] == raw_lines[row["source_line"] - 1]


def test_dropped_rows_keep_reason_and_detail(defects_run):
    out, _ = defects_run
    dropped = read_dir(out, "dropped")
    by_id = {r["id"]: r for r in dropped.iter_rows(named=True)}
    assert by_id["junk-short"]["drop_reason"] == "gopher_short_doc"
    assert by_id["junk-short"]["drop_step"] == "filter.gopher_quality"
    assert "50" in by_id["junk-short"]["drop_detail"]  # the threshold is named
    dups = dropped.filter(pl.col("drop_reason") == "exact_duplicate")
    data = read_dir(out, "data")
    kept_line = dict(zip(data["id"].to_list(), data["source_line"].to_list()))
    assert dups.height == 6
    for row in dups.iter_rows(named=True):
        base = lambda i: i.split("-of-")[-1]
        assert base(row["dup_of"]) == base(row["id"])  # same story
        assert kept_line[row["dup_of"]] < row["source_line"]  # the first in input order is kept
        assert row["dup_of"] in row["drop_detail"]
    assert set(dropped.columns) >= {"drop_step", "drop_reason", "drop_detail", "source_file", "source_line"}


def test_pii_redacted_and_near_misses_left(defects_run):
    out, _ = defects_run
    data = read_dir(out, "data")
    texts = dict(zip(data["id"].to_list(), data["text"].to_list()))
    assert "<EMAIL>" in texts["pii-0-email"] and "press.office@" not in texts["pii-0-email"]
    assert "<CREDIT_CARD>" in texts["pii-4-credit_card"]
    assert "<SSN>" in texts["pii-6-ssn"]
    assert "<IBAN>" in texts["pii-8-iban"]
    assert "4111 1111 1111 1112" in texts["pii-5-none"]
    assert "000-12-3456" in texts["pii-7-none"]
    assert "GB82 WEST 1234 5698 7654 33" in texts["pii-9-none"]
    assert data.filter(pl.col("id").is_in(EXPECTED["pii_not_redacted_ids"]))["pii_count"].to_list() == [
        0,
        0,
        0,
    ]


def test_text_is_normalized_to_nfc(defects_run):
    import unicodedata

    out, _ = defects_run
    data = read_dir(out, "data")
    text = data.filter(pl.col("id") == EXPECTED["nfd_id"])["text"][0]
    assert "Café society in Zürich" in text
    assert unicodedata.is_normalized("NFC", text)


def test_output_schema_is_declared(defects_run):
    out, _ = defects_run
    manifest = read_manifest(out)
    base = load_schema("document.v1")
    table = read_shard(out / manifest["shards"][0]["path"])
    assert table.schema.names[: len(base)] == base.names
    assert [f["name"] for f in manifest["schema"]["fields"]] == table.schema.names
    assert table.schema.field("pii_count").type == pa.int32()
    assert table.schema.metadata[b"dataforge.schema"] == b"document.v1"
    assert verify_shards(out) == []


def test_no_temporary_files_left(defects_run):
    out, _ = defects_run
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name or p.name == "_work"]
    assert leftovers == []


# ----------------------------------------------------------------------------- determinism


@pytest.fixture(scope="module")
def multi_input(tmp_path_factory):
    """The news sample split into 5 files of mixed formats, plus the defects file."""
    d = tmp_path_factory.mktemp("multi")
    with gzip.open(SAMPLE / "news" / "reuters.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    rows = rows[:1000]
    for i in range(4):
        part = rows[i * 250 : (i + 1) * 250]
        text = "".join(json.dumps(r) + "\n" for r in part)
        if i == 0:
            (d / "p0.jsonl").write_text(text)
        elif i == 1:
            (d / "p1.jsonl.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
        elif i == 2:
            flat = pl.DataFrame([{k: v for k, v in r.items() if k in ("id", "text", "title")} for r in part])
            flat.write_parquet(d / "p2.parquet")
        else:
            flat = pl.DataFrame([{k: v for k, v in r.items() if k in ("id", "text", "title")} for r in part])
            flat.write_csv(d / "p3.csv")
    shutil.copy(DEFECTS, d / "p4.jsonl")
    # an exact duplicate across files: the last story of p0 again in p3's format family
    return d


def demo_pipeline(
    inputs: Path, out: Path, *, workers: int = 1, kind: str = "local", fmt: str = "arrow"
) -> Pipeline:
    return Pipeline(
        name="determinism",
        input=InputSpec(paths=(str(inputs),)),
        output=OutputSpec(path=str(out), shard_rows=300, format=fmt),
        steps=[
            build_step("normalize.text"),
            build_step("filter.gopher_quality"),
            build_step("filter.gopher_repetition"),
            build_step("pii.redact"),
            build_step("dedup.exact"),
        ],
        executor=ExecutorSpec(kind=kind, workers=workers),
        max_reject_rate=None,
    )


@pytest.fixture(scope="module")
def reference_run(multi_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    report = run_pipeline(demo_pipeline(multi_input, out))
    return out, report


def test_reference_run_shards_are_full(reference_run):
    out, report = reference_run
    rows = [s["rows"] for s in report.shards]
    assert len(rows) >= 3
    assert all(r == 300 for r in rows[:-1]) and 0 < rows[-1] <= 300
    assert sum(rows) == report.kept
    assert report.ledger.rejected_total == EXPECTED["rejected"]


def test_two_processes_give_identical_bytes(multi_input, reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "w2"
    run_pipeline(demo_pipeline(multi_input, out, workers=2))
    assert digests(out) == digests(ref)


def _two_dedups(inputs: Path, out: Path, workers: int = 1) -> Pipeline:
    return Pipeline(
        name="thin",
        input=InputSpec(paths=(str(inputs),)),
        output=OutputSpec(path=str(out), shard_rows=300),
        steps=[build_step("normalize.text"), build_step("dedup.exact"), build_step("dedup.minhash")],
        executor=ExecutorSpec(kind="local", workers=workers),
        max_reject_rate=None,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_thin_last_stage_gives_the_bytes_of_full_live_files(multi_input, tmp_path, monkeypatch, workers):
    """A pipeline ending in a dedup step writes its last stage's live files thin (the kept rows'
    positions and the step's own columns; ``dup_of`` from the earlier exact dedup is overridden
    there); the shards are byte-identical to those built from full live files."""
    import dataforge.runner as runner
    from dataforge.stages import SRC_ROW, THIN_BASE, read_ipc, read_live

    thin_out = tmp_path / "thin"
    report = run_pipeline(_two_dedups(multi_input, thin_out, workers), keep_work=True)
    assert report.dropped_by_reason["dedup.exact:exact_duplicate"] > 0
    assert report.dropped_by_reason["dedup.minhash:near_duplicate"] > 0
    last = sorted((thin_out / "_work").glob("*/s2"))[0]
    lives = sorted(last.glob("*.live.arrow"))
    assert lives
    for path in lives:
        table = read_ipc(path)
        assert table.column_names == [SRC_ROW, "cluster_id", "cluster_size", "dup_of", "similarity"]
        assert THIN_BASE in table.schema.metadata
        full = read_live(path)
        assert full.num_rows == table.num_rows
        assert "text" in full.column_names and SRC_ROW not in full.column_names
        _same_live_columns(path)
    monkeypatch.setattr(runner, "thin_columns", lambda seg, last: ())
    full_out = tmp_path / "full"
    run_pipeline(_two_dedups(multi_input, full_out, workers), keep_work=True)
    full_live = sorted((full_out / "_work").glob("*/s2"))[0]
    assert "text" in read_ipc(sorted(full_live.glob("*.live.arrow"))[0]).column_names
    _same_live_columns(sorted(full_live.glob("*.live.arrow"))[0])
    assert digests(thin_out) == digests(full_out)


def _same_live_columns(path: Path) -> None:
    """live_columns (how report.html reads a few columns or rows of a work file) gives what
    read_live gives, for a thin or a full live file, own and base columns, all rows or some."""
    import numpy as np

    from dataforge.stages import live_columns, read_live

    full = read_live(path)
    n = full.num_rows
    assert n > 10
    cols = ["cluster_id", "text", "_line", "no_such_column", "id"]
    want = [c for c in cols if c in full.column_names]
    assert want == ["cluster_id", "text", "_line", "id"]
    got = live_columns(path, 0, n, cols)
    assert got.column_names == want and got.equals(full.select(want))
    part = live_columns(path, 3, n - 5, cols, np.array([0, 2, (n - 5) // 2, n - 6]))
    assert part.equals(full.slice(3, n - 5).select(want).take([0, 2, (n - 5) // 2, n - 6]))
    assert live_columns(path, 0, n, cols, np.array([], dtype=np.int64)).num_rows == 0


def test_assembled_shards_read_back_what_the_shards_hold(multi_input, tmp_path, monkeypatch):
    """report.html reads a run's shards from the work files (AssembledShard): every column of every
    shard of data/, dropped/ and rejects/ (whose work files already use output names), all rows
    and a few, equals what assembly wrote."""
    import numpy as np

    import dataforge.runner as runner
    from dataforge.stages import AssembledShard

    seen: list[tuple[str, int]] = []
    real = runner._work_shards

    def check(out: Path, jobs):
        for job in jobs:
            for i in range(len(job.pieces)):
                shard = AssembledShard(job, i)
                written = read_shard(out / shard_name(job.subdir, i, job.format))
                assert shard.names == written.column_names
                assert shard(shard.names).equals(written)
                rows = [0, written.num_rows // 2, written.num_rows - 1] if written.num_rows else []
                cols = shard.names[::-1][:4]
                assert shard(cols, rows).equals(written.select(cols).take(np.array(rows, dtype=np.int64)))
                seen.append((job.subdir, written.num_rows))
        return real(out, jobs)

    monkeypatch.setattr(runner, "_work_shards", check)
    report = run_pipeline(_two_dedups(multi_input, tmp_path / "out", 2))
    assert report.rejected > 0 and {d for d, n in seen if n} == {"data", "dropped", "rejects"}


def test_runs_of_consecutive_rows():
    import numpy as np

    from dataforge.stages import _runs

    starts, lengths = _runs(np.array([0, 1, 2, 5, 7, 8, 10], dtype=np.int64))
    assert starts.tolist() == [0, 5, 7, 10] and lengths.tolist() == [3, 1, 2, 1]
    starts, lengths = _runs(np.array([], dtype=np.int64))
    assert starts.tolist() == [] and lengths.tolist() == []


def test_rerun_gives_identical_bytes(multi_input, reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "again"
    run_pipeline(demo_pipeline(multi_input, out))
    assert digests(out) == digests(ref)


@pytest.mark.ray
def test_ray_gives_identical_bytes(multi_input, reference_run, tmp_path):
    pytest.importorskip("ray")
    ref, _ = reference_run
    out = tmp_path / "ray"
    report = run_pipeline(demo_pipeline(multi_input, out, kind="ray", workers=2))
    assert report.executor == "ray"
    assert digests(out) == digests(ref)


def test_parquet_output(multi_input, reference_run, tmp_path):
    _, ref_report = reference_run
    out = tmp_path / "pq"
    report = run_pipeline(demo_pipeline(multi_input, out, fmt="parquet"))
    assert report.kept == ref_report.kept
    assert all(s["path"].endswith(".parquet") for s in report.shards)
    ref_rows = read_dir(reference_run[0], "data")
    assert read_dir(out, "data").equals(ref_rows)


# ----------------------------------------------------------------------------- resume


class CrashingExecutor(LocalExecutor):
    """Runs the first ``budget`` tasks of the whole run, then dies like a killed process."""

    def __init__(self, budget: int) -> None:
        super().__init__(workers=1)
        self.budget = budget
        self.calls = 0

    def map(self, fn, items, *, on_done=None):
        results = []
        for i, item in enumerate(items):
            if self.calls >= self.budget:
                raise KeyboardInterrupt("simulated crash")
            self.calls += 1
            results.append(fn(item))
            if on_done:
                on_done(i, results[-1])
        return results


# 5 stage-0 tasks; dedup.exact's 16 `decide` tasks (one per hash partition) and its `finalize`;
# 5 stage-1 tasks; then assembly (no markers: cheap, rewritten)
MARKED_TASKS = 5 + DEFAULT_PARTITIONS + 1 + 5


@pytest.mark.parametrize("budget", [2, 5, 13, 5 + DEFAULT_PARTITIONS + 1, MARKED_TASKS - 2, MARKED_TASKS + 2])
def test_resume_after_crash_gives_identical_bytes(multi_input, reference_run, tmp_path, budget):
    ref, _ = reference_run
    out = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_pipeline(multi_input, out), executor=CrashingExecutor(budget))
    assert not (out / "manifest.json").exists()  # nothing looks complete
    work = next((out / "_work").iterdir())
    markers_before = sorted(p.name for p in work.rglob("*.done.json"))
    assert len(markers_before) == min(budget, MARKED_TASKS)
    run_pipeline(demo_pipeline(multi_input, out))
    assert digests(out) == digests(ref)
    assert not (out / "_work").exists()


def test_resume_skips_finished_tasks(multi_input, tmp_path, monkeypatch):
    out = tmp_path / "skip"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_pipeline(multi_input, out), executor=CrashingExecutor(3))
    import dataforge.stages as stages

    read_calls: list[str] = []
    real = stages.read_batches

    def spy(f, *a, **kw):
        read_calls.append(f.path)
        return real(f, *a, **kw)

    monkeypatch.setattr(stages, "read_batches", spy)
    run_pipeline(demo_pipeline(multi_input, out))
    assert len(read_calls) == 2  # 3 of 5 files were finished before the crash


@pytest.mark.parametrize("record", ["other boot", "missing", "unreadable"])
def test_work_from_before_a_restart_is_not_trusted(multi_input, reference_run, tmp_path, monkeypatch, record):
    """Work files are not fsynced, so work written before the machine restarted (another boot
    id), or without a readable boot record, is discarded: the run starts over, and still ends
    with the reference bytes."""
    ref, _ = reference_run
    out = tmp_path / "reboot"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_pipeline(multi_input, out), executor=CrashingExecutor(3))
    work = next((out / "_work").iterdir())
    boot = work / "boot.json"
    assert (
        json.loads(boot.read_text())["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    )
    if record == "other boot":
        boot.write_text(json.dumps({"boot_id": "00000000-0000-0000-0000-000000000000", "boot_time": 0.0}))
    elif record == "missing":
        boot.unlink()
    else:
        boot.write_text("")  # what a power loss can leave
    import dataforge.stages as stages

    read_calls: list[str] = []
    real = stages.read_batches

    def spy(f, *a, **kw):
        read_calls.append(f.path)
        return real(f, *a, **kw)

    monkeypatch.setattr(stages, "read_batches", spy)
    run_pipeline(demo_pipeline(multi_input, out))
    assert len(read_calls) == 5  # all files again: the 3 finished tasks were not trusted
    assert digests(out) == digests(ref)


def test_outputs_are_fsynced_and_work_files_are_not(multi_input, tmp_path, monkeypatch):
    import dataforge.io.shards as shards

    synced: list[Path] = []
    real = shards._fsync
    monkeypatch.setattr(shards, "_fsync", lambda p: (synced.append(Path(p)), real(p)))
    out = tmp_path / "sync"
    run_pipeline(demo_pipeline(multi_input, out), keep_work=True)
    work_files = [p for p in (out / "_work").rglob("*") if p.is_file()]
    assert len(work_files) > 10  # markers, plan, decisions, live files
    in_work = [p for p in synced if "_work" in p.parts]
    assert [p.name.split(".tmp-")[0] for p in in_work] == [".boot.json"]  # only the boot record
    names = {p.name.split(".tmp-")[0].lstrip(".") for p in synced}
    assert {"manifest.json", "report.json"} <= names
    assert any(n.startswith("part-") and n.endswith(".arrow") for n in names)  # the shards


# ----------------------------------------------------------------------------- output folder


def test_up_to_date_rerun_does_nothing(multi_input, tmp_path):
    out = tmp_path / "u"
    first = run_pipeline(demo_pipeline(multi_input, out))
    before = digests(out)
    again = run_pipeline(demo_pipeline(multi_input, out))
    assert again.status == "up_to_date"
    assert again.kept == first.kept
    assert digests(out) == before


def test_the_same_run_from_another_directory_or_task_size_is_up_to_date(multi_input, tmp_path, monkeypatch):
    """A cron job runs from its home: the inputs then have other paths (relative from one place,
    absolute or via a symlink from another). Same files, same run: up to date, not "another run"
    (exit 2). A different task size gives the same bytes, so it is the same run too."""
    import os

    src = tmp_path / "in"
    shutil.copytree(multi_input, src)
    out = tmp_path / "cwd"
    monkeypatch.chdir(tmp_path)
    run_pipeline(demo_pipeline(Path("in"), out))
    before = digests(out)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(src, tmp_path / "link")
    monkeypatch.chdir(tmp_path / "elsewhere")
    for inputs in (src, Path("../link"), Path("../in")):
        assert run_pipeline(demo_pipeline(inputs, out)).status == "up_to_date", inputs
    p = demo_pipeline(src, out)
    p.input = InputSpec(paths=(str(src),), task_bytes=4096)
    assert run_pipeline(p).status == "up_to_date"
    assert digests(out) == before
    os.utime(src / "p0.jsonl", ns=(0, 0))  # a changed input is another run
    with pytest.raises(OutputError, match="another run"):
        run_pipeline(demo_pipeline(src, out))


def test_different_run_needs_overwrite(multi_input, tmp_path):
    out = tmp_path / "o"
    run_pipeline(demo_pipeline(multi_input, out))
    p = demo_pipeline(multi_input, out)
    p.output.shard_rows = 100
    with pytest.raises(OutputError, match="--overwrite"):
        run_pipeline(p)
    report = run_pipeline(p, overwrite=True)
    assert max(s["rows"] for s in report.shards) == 100
    assert verify_shards(out) == []


def test_refuses_foreign_folder(multi_input, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not a dataforge output"):
        run_pipeline(demo_pipeline(multi_input, out))
    assert (out / "thesis.tex").read_text() == "precious"


def test_missing_input_fails_before_any_output(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(InputError, match="does not exist"):
        dataforge.clean([str(tmp_path / "nope.jsonl")], output=out)
    assert not out.exists()


def test_reject_rate_exceeded_still_writes_outputs(tmp_path):
    out = tmp_path / "rr"
    with pytest.raises(RejectRateError, match="7 of 70 input rows were malformed") as info:
        dataforge.clean([str(DEFECTS)], output=out, max_reject_rate=0.05)
    assert info.value.report.status == "reject_rate_exceeded"
    assert RunReport.load(out).status == "reject_rate_exceeded"
    assert verify_shards(out) == []

    # the same inputs fail the same way on a rerun: not "up to date" with exit 0
    with pytest.raises(RejectRateError, match="7 of 70 input rows were malformed.*not repeated"):
        dataforge.clean([str(DEFECTS)], output=out, max_reject_rate=0.05)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_truncated_input_file_fails_the_run(tmp_path, compression):
    """A file that ends early lost an unknown number of records: one ``truncated`` reject is far
    below any reject rate, so the run fails on it by name (after writing its outputs), unless
    max_reject_rate is null."""
    import zstandard

    lines = b"".join(
        json.dumps({"id": str(i), "text": f"document number {i} " * 20}).encode() + b"\n" for i in range(400)
    )
    packed = (
        gzip.compress(lines, mtime=0) if compression == "gzip" else zstandard.ZstdCompressor().compress(lines)
    )
    src = tmp_path / ("cut.jsonl.gz" if compression == "gzip" else "cut.jsonl.zst")
    src.write_bytes(packed[: len(packed) // 3])
    good = tmp_path / "good.jsonl"
    good.write_bytes(lines)
    out = tmp_path / "t"
    with pytest.raises(RejectRateError, match=r"1 input file\(s\) end early.*cut\.jsonl") as info:
        dataforge.clean([str(good), str(src)], output=out, max_reject_rate=0.05)
    report = info.value.report
    assert report.status == "input_truncated" and not report.ok
    assert report.rejected_by_reason == {"truncated": 1} and report.reject_rate < 0.05
    assert RunReport.load(out).status == "input_truncated" and verify_shards(out) == []
    with pytest.raises(RejectRateError, match="end early"):  # and again on a rerun
        dataforge.clean([str(good), str(src)], output=out, max_reject_rate=0.05)
    accepted = dataforge.clean([str(good), str(src)], output=tmp_path / "a", max_reject_rate=None)
    assert accepted.status == "ok" and accepted.rejected_by_reason == {"truncated": 1}


def test_empty_input_file_gives_empty_schema_shard(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    out = tmp_path / "e"
    report = dataforge.clean([str(src)], output=out)
    assert (report.rows_in, report.kept) == (0, 0)
    table = read_shard(out / report.shards[0]["path"])
    assert table.num_rows == 0
    assert table.schema.names[:2] == ["id", "text"]


def test_no_keep_dropped(tmp_path):
    out = tmp_path / "nd"
    report = dataforge.clean([str(DEFECTS)], output=out, keep_dropped=False, max_reject_rate=None)
    assert report.dropped == EXPECTED["dropped"]
    assert not (out / "dropped").exists()
    assert read_manifest(out)["dropped"] == []


def test_clean_config_options_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("options:\n  filter.gopher_quality: {min_doc_words: 3}\nmax_reject_rate: null\n")
    report = dataforge.clean([str(DEFECTS)], output=tmp_path / "cfg", config=cfg)
    reasons = report.dropped_by_reason
    assert "filter.gopher_quality:gopher_short_doc" not in reasons
    assert report.rows_in == report.kept + report.dropped + report.rejected


def test_a_run_resumed_under_other_paths_starts_over_and_adds_up(multi_input, tmp_path, monkeypatch):
    """An interrupted run resumed with the same files named otherwise (relative, then absolute):
    its work files record the first spelling as source_file, so it starts over instead of mixing
    the two (which crashed the per-input ledger)."""

    class Crash(LocalExecutor):
        def __init__(self, budget: int) -> None:
            super().__init__(workers=1)
            self.budget = budget

        def map(self, fn, items, *, on_done=None):
            results = []
            for i, item in enumerate(items):
                if self.budget == 0:
                    raise KeyboardInterrupt("killed")
                self.budget -= 1
                results.append(fn(item))
                if on_done:
                    on_done(i, results[-1])
            return results

    src = tmp_path / "in"
    shutil.copytree(multi_input, src)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(demo_pipeline(Path("in"), out), executor=Crash(3))
    report = run_pipeline(demo_pipeline(src, out))
    assert report.rows_in == report.kept + report.dropped + report.rejected
    sources = set(read_dir(out, "data")["source_file"].to_list())
    assert sources and all(s.startswith(str(src)) for s in sources)
    assert verify_shards(out) == []
