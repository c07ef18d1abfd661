"""Run a pipeline: plan stages, run them on an executor, assemble shards, write manifest and report.

Data flow (see docs/architecture.md)::

    inputs -> plan: tasks of ~input.task_bytes (pieces of big files, groups of small ones)
           -> stage 0 tasks (read, shard steps, keys of the next global step)  [one task per task]
           -> global decision (e.g. exact dedup)                              [barrier]
           -> stage 1 tasks (apply decisions, more shard steps) ...
           -> assembly: data/ dropped/ rejects/ shards of fixed row counts      [one task per shard]
           -> manifest.json (written last) and report.json / report.md

A task is a list of input pieces (``dataforge.io.inputs.plan_tasks``): byte ranges of uncompressed
JSONL/CSV files cut at newlines, row-group ranges of Parquet files, record-batch ranges of Arrow IPC
files, whole compressed files, several small files together. Pieces are numbered from their offsets
in the file, so provenance (``source_row``, ``source_line``) is that of the file, and tasks hold the
input in order, so the assembled shards are the same for any ``task_bytes`` (and any executor or
worker count). The plan is stored in the work folder (``plan.json``) and reused on resume.

Work files live in ``OUT/_work/<run key>/``; every task writes a completion marker, so a rerun
after a crash skips finished tasks and ends with the same bytes. The work folder is removed when
the run succeeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

import dataforge
from dataforge.config import Pipeline
from dataforge.errors import DataError, LedgerError, OutputError
from dataforge.executors.base import Executor, make_executor
from dataforge.executors.local import LocalExecutor
from dataforge.html import REPORT_HTML, write_report_or_log
from dataforge.html.run import ShardRows, TableShards
from dataforge.io.inputs import InputFile, Task, discover, plan_tasks, tasks_from_json, tasks_to_json
from dataforge.io.readers import check_file
from dataforge.io.shards import MANIFEST, read_manifest, read_shard, write_bytes_atomic, write_json_atomic
from dataforge.ledger import Ledger, StepCounts
from dataforge.report import REPORT_JSON, REPORT_MD, RunReport, peak_rss_mb, truncated_message
from dataforge.schemas import extend, load_schema, schema_to_json
from dataforge.stages import (
    DROP_FIELDS,
    INTERNAL_SCHEMA,
    AssembledShard,
    AssembleJob,
    PhaseJob,
    StageJob,
    live_schema,
    plan_pieces,
    plan_segments,
    row_bytes,
    run_assemble_item,
    run_phase,
    run_stage_task,
    shard_name,
    stage_file,
    thin_columns,
)
from dataforge.step import GlobalContext, GlobalStep

log = logging.getLogger(__name__)

WORK_DIR = "_work"
REPORT_DIRS = ("clusters", "cluster_pairs")
OUR_NAMES = {
    MANIFEST,
    REPORT_JSON,
    REPORT_MD,
    REPORT_HTML,
    "data",
    "dropped",
    "rejects",
    *REPORT_DIRS,
    WORK_DIR,
}


class RejectRateError(DataError):
    """More input was malformed than ``max_reject_rate`` allows. Outputs were still written."""

    def __init__(self, message: str, report: RunReport) -> None:
        super().__init__(message)
        self.report = report


class Progress(Protocol):
    """What the runner tells a progress display."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, label: str, total: int) -> None:
        log.info("%s: %d task(s)", label, total)

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


# --------------------------------------------------------------------------- fingerprints


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def config_of(pipeline: Pipeline) -> dict[str, Any]:
    """What determines the output bytes (executor and paths of the output excluded)."""
    i, o = pipeline.input, pipeline.output
    return {
        "input": {
            "format": i.format,
            "text_field": i.text_field,
            "id_field": i.id_field,
            "csv_delimiter": i.csv_delimiter,
        },
        "output": {
            "format": o.format,
            "compression": o.compression,
            "shard_rows": o.shard_rows,
            "shard_bytes": o.shard_bytes,
            "keep_dropped": o.keep_dropped,
        },
        "steps": pipeline.steps_spec(),
        "dataforge_version": dataforge.__version__,
    }


def fingerprint(obj: Any) -> str:
    return "sha256:" + hashlib.sha256(_canonical(obj)).hexdigest()


def _run_key(config_fp: str, files: list[InputFile], references: list[InputFile] | None = None) -> str:
    """Identifies a run's result: config, input files and the files steps read besides the input
    (``against`` reference sets), each by real path (``..`` and symlinks resolved), size and
    modification time. The same pipeline run from another working directory (a cron job's is its
    home) names its inputs by other paths: with real paths it is the same run, up to date (its
    output keeps the paths of the run that wrote it, in ``source_file`` and the manifest)."""
    ident = [(os.path.realpath(f.path), f.size, f.mtime_ns) for f in files]
    key: dict[str, Any] = {"config": config_fp, "inputs": ident}
    if references:  # absent otherwise, so that runs without references keep their keys
        key["references"] = [(os.path.realpath(f.path), f.size, f.mtime_ns) for f in references]
    return fingerprint(key)


def _work_key(run_key: str, files: list[InputFile], task_bytes: int) -> str:
    """Names the run's work folder: its result, the task size (task numbers, and so the work files
    and completion markers, depend on the plan; the output bytes do not) and the input paths as
    given (the work files record them as ``source_file``: a run resumed with the same files under
    other paths starts over rather than mix the two)."""
    key = {"run": run_key, "task_bytes": task_bytes, "paths": [f.path for f in files]}
    return fingerprint(key).split(":")[1][:16]


# --------------------------------------------------------------------------- output folder


def _prepare_output(out: Path, run_key: str, *, overwrite: bool, force: bool) -> RunReport | None:
    """Check the output folder. Returns the stored report when the run is already up to date."""
    if out.exists() and not out.is_dir():
        msg = f"output path {str(out)!r} exists and is not a folder"
        raise OutputError(msg)
    if (out / MANIFEST).exists():
        report_path = out / REPORT_JSON
        if report_path.exists() and not force:
            try:
                stored = RunReport.load(out)
            except (json.JSONDecodeError, KeyError, OSError):
                stored = None
            if stored is not None and stored.run_key == run_key and _shards_present(out):
                return stored
        if not (overwrite or force):
            old = read_manifest(out)
            msg = (
                f"{out} already holds the output of another run ({old.get('name')!r}, "
                f"{old.get('config_fingerprint', '')[:19]}); pass --overwrite to replace it"
            )
            raise OutputError(msg)
        _clear_outputs(out, keep_work=False)
    elif out.exists():
        foreign = sorted(
            p.name for p in out.iterdir() if p.name not in OUR_NAMES and not p.name.startswith(".")
        )
        if foreign and not overwrite:
            msg = f"{out} is not empty and not a dataforge output (holds {', '.join(foreign[:3])}); choose another -o"
            raise OutputError(msg)
        _clear_outputs(out, keep_work=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        msg = f"cannot write to output folder {str(out)!r}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    return None


def _shards_present(out: Path) -> bool:
    try:
        manifest = read_manifest(out)
    except DataError:
        return False
    for group in ("shards", "dropped", "rejects"):
        for e in manifest.get(group, []):
            p = out / e["path"]
            if not p.is_file() or p.stat().st_size != e["bytes"]:
                return False
    return True


def _clear_outputs(out: Path, *, keep_work: bool) -> None:
    """Remove our own output files (manifest first, so nothing half-replaced looks complete)."""
    if not out.exists():
        return
    report_dirs: set[str] = set(REPORT_DIRS)
    with contextlib.suppress(DataError):
        report_dirs |= set(read_manifest(out).get("reports", {}))
    try:
        (out / MANIFEST).unlink(missing_ok=True)
        for name in (REPORT_JSON, REPORT_MD, REPORT_HTML):
            (out / name).unlink(missing_ok=True)
        for name in ("data", "dropped", "rejects", *sorted(report_dirs)) + (() if keep_work else (WORK_DIR,)):
            shutil.rmtree(out / name, ignore_errors=True)
        for p in out.glob(".*.tmp-*"):
            p.unlink(missing_ok=True)
    except OSError as exc:
        msg = f"cannot replace the previous output in {out}: {exc.filename or out}: {exc.strerror or exc}"
        raise OutputError(msg) from None


# --------------------------------------------------------------------------- run


def run_pipeline(
    pipeline: Pipeline,
    *,
    executor: Executor | None = None,
    overwrite: bool = False,
    force: bool = False,
    keep_work: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Run ``pipeline`` and return its report.

    Args:
        pipeline: the resolved pipeline (see ``dataforge.config``).
        executor: an executor to use; by default one is built from ``pipeline.executor``.
        overwrite: replace the output of a different earlier run in the output folder.
        force: rerun even if the output folder already holds this exact run.
        keep_work: keep ``OUT/_work`` after success (for debugging).
        progress: receives stage starts and task completions.

    Returns:
        The RunReport (also written to ``OUT/report.json`` and ``OUT/report.md``).

    Raises:
        InputError, ConfigError, OutputError: before any work starts.
        RejectRateError: after writing the outputs, when too much input was malformed.
    """
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    progress = progress or _NoProgress()
    files = discover(pipeline.input)
    for f in files:
        check_file(f, pipeline.input)
    references = [f for step in pipeline.steps for f in step.reference_inputs()]  # checked here
    config = config_of(pipeline)
    config_fp = fingerprint(config)
    run_key = _run_key(config_fp, files, references)
    out = Path(pipeline.output.path)
    stored = _prepare_output(out, run_key, overwrite=overwrite, force=force)
    if stored is not None:
        log.info("%s is up to date (same inputs and config); nothing to do", out)
        if not keep_work:  # a run killed after its manifest was written may have left these
            shutil.rmtree(out / WORK_DIR, ignore_errors=True)
            for tmp in out.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)
        failure = _failure(stored, out)
        if failure is not None:  # the same inputs fail the same way: say so again, do not pass
            raise RejectRateError(f"{failure} (output up to date: the run is not repeated)", stored)
        stored.status = "up_to_date"
        return stored
    work = out / WORK_DIR / _work_key(run_key, files, pipeline.input.task_bytes)
    _drop_stale_work(out / WORK_DIR, keep=work.name)
    _check_boot(work)

    own_executor = executor is None
    ex = executor or make_executor(
        pipeline.executor.kind, workers=pipeline.executor.workers, address=pipeline.executor.address
    )
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        tasks = _plan(pipeline, files, work, ex, progress)
        timings["plan"] = time.perf_counter() - t0
        stage_results, globals_run = _run_stages(pipeline, tasks, work, ex, progress, timings)
        report, jobs = _assemble(pipeline, files, tasks, work, out, ex, progress, timings, stage_results)
        report.reports = _publish_reports(globals_run, out)
        report.global_info = {g.name: _strip_seconds(info) for g, _, info in globals_run}
    finally:
        if own_executor:
            ex.close()
    report.config = config
    report.config_fingerprint = config_fp
    report.run_key = run_key
    report.executor = ex.name
    report.workers = ex.workers
    report.started_at = started.isoformat(timespec="seconds")
    report.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    timings["total"] = time.perf_counter() - t_start
    report.timings = timings
    report.peak_rss_mb = peak_rss_mb()
    report.max_reject_rate = pipeline.max_reject_rate
    report.dataforge_version = dataforge.__version__
    if pipeline.max_reject_rate is not None:
        if report.reject_rate > pipeline.max_reject_rate:
            report.status = "reject_rate_exceeded"
        elif report.rejected_by_reason.get("truncated"):
            report.status = "input_truncated"
    # the reports first, the manifest last: a folder with a manifest is always a complete run
    write_json_atomic(out / REPORT_JSON, report.to_dict())
    write_bytes_atomic(out / REPORT_MD, report.markdown().encode("utf-8"))
    write_report_or_log(out, shards=_work_shards(out, jobs))
    _write_manifest(pipeline, files, out, report, config, config_fp)
    if not keep_work:
        shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    failure = _failure(report, out)
    if failure is not None:
        raise RejectRateError(failure, report)
    return report


def _failure(report: RunReport, out: Path) -> str | None:
    """Why a finished run failed on its input (its ``status``), or None when it did not."""
    if report.status == "reject_rate_exceeded":
        return (
            f"{report.rejected:,} of {report.rows_in:,} input rows were malformed "
            f"({report.reject_rate:.2%} > max_reject_rate {report.max_reject_rate:.2%}); "
            f"see {out / 'rejects'} and {out / REPORT_MD}"
        )
    if report.status == "input_truncated":
        return truncated_message(
            _truncated_files(out),
            accept="set max_reject_rate to null to accept this",
            see=f"{out / 'rejects'} (reason truncated) and {out / REPORT_MD}",
        )
    return None


def _truncated_files(out: Path) -> list[str]:
    """The input files with a ``truncated`` reject, from the run's ``rejects/`` shards."""
    files: set[str] = set()
    for path in sorted((out / "rejects").glob("part-*")):
        with contextlib.suppress(DataError):
            t = read_shard(path)
            if "reason" in t.column_names and "source_file" in t.column_names:
                hit = t.filter(pc.equal(t.column("reason"), "truncated"))
                files.update(f for f in hit.column("source_file").to_pylist() if f is not None)
    return sorted(files)


def _plan(
    pipeline: Pipeline, files: list[InputFile], work: Path, ex: Executor, progress: Progress
) -> list[Task]:
    """The run's tasks: from ``plan.json`` when resuming, else planned (newlines counted on the
    executor) and stored."""
    path = work / "plan.json"
    if path.exists():
        with contextlib.suppress(json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            return tasks_from_json(json.loads(path.read_text())["tasks"], files)
    tasks = plan_tasks(files, task_bytes=pipeline.input.task_bytes, map_fn=_count_map(ex, progress))
    write_json_atomic(
        path,
        {"task_bytes": pipeline.input.task_bytes, "tasks": tasks_to_json(tasks, files)},
        durable=False,
    )
    return tasks


#: On the local executor, inputs up to this many bytes to split have their lines counted in this
#: process unless its workers are already up: counting runs at page-cache speed (~1-4 GB/s here),
#: while a spawned worker first spends ~0.5-1 s importing, which the first map of a run would wait for.
LOCAL_COUNT_BYTES = 1 << 30


def _count_map(ex: Executor, progress: Progress) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """How ``plan_tasks`` maps its newline counts (items ``(path, start, end, csv)``)."""

    def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        small = sum(int(it[2]) - int(it[1]) for it in items) <= LOCAL_COUNT_BYTES
        here = ex.name == "local" and small and not (isinstance(ex, LocalExecutor) and ex.warm())
        target = LocalExecutor(workers=1) if here else ex
        return _map(target, fn, len(items), "plan: count lines", progress, items=items)

    return run


BOOT_FILE = "boot.json"


def _boot() -> dict[str, Any]:
    """This machine's boot: Linux's boot id, and the boot time estimated from the clocks."""
    boot: dict[str, Any] = {"boot_time": time.time() - time.monotonic()}
    with contextlib.suppress(OSError):
        boot["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return boot


def _same_boot(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if "boot_id" in a or "boot_id" in b:
        return a.get("boot_id") == b.get("boot_id")
    try:  # no boot id (not Linux): the boot times agree to within clock adjustments
        return abs(float(a["boot_time"]) - float(b["boot_time"])) < 30.0
    except (KeyError, TypeError, ValueError):
        return False


def _check_boot(work: Path) -> None:
    """Create the work folder, or keep an interrupted run's work only if it was written since
    this machine last started.

    Work files are not fsynced (see ``dataforge.io.shards.atomic_path``): a killed or crashed
    process leaves them complete in the page cache, but a power loss or kernel crash can leave a
    completion marker whose data files are empty or short. The folder records the boot it was
    written in (fsynced); after a restart, or when that record is missing or unreadable, the
    work is discarded and the run starts over.
    """
    current = _boot()
    record = work / BOOT_FILE
    if work.is_dir() and any(work.iterdir()):
        try:
            stored = json.loads(record.read_text())
        except (OSError, ValueError):
            stored = None
        if isinstance(stored, dict) and _same_boot(stored, current):
            return
        log.warning(
            "%s: the interrupted run's work was written before this machine restarted (or its boot "
            "record is missing); unsynced work files may be incomplete, so the run starts over",
            work,
        )
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, current)


def _drop_stale_work(root: Path, *, keep: str) -> None:
    if root.is_dir():
        for p in root.iterdir():
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)


def _map(
    ex: Executor,
    fn: Callable[[Any], Any],
    n: int,
    label: str,
    progress: Progress,
    *,
    items: list[Any] | None = None,
) -> list[Any]:
    progress.start(label, n)
    try:
        return ex.map(
            fn, items if items is not None else list(range(n)), on_done=lambda i, r: progress.advance()
        )
    finally:
        progress.finish()


def _run_stages(
    pipeline: Pipeline,
    tasks: list[Task],
    work: Path,
    ex: Executor,
    progress: Progress,
    timings: dict[str, float],
) -> tuple[list[list[dict[str, Any]]], list[tuple[GlobalStep, GlobalContext, dict[str, Any]]]]:
    steps = pipeline.steps
    segments = plan_segments(steps)
    results: list[list[dict[str, Any]]] = []
    globals_run: list[tuple[GlobalStep, GlobalContext, dict[str, Any]]] = []
    prelude_ctx: GlobalContext | None = None
    for seg in segments:
        last = seg.last_position()
        out_schema = live_schema(steps, last) if last >= 0 else INTERNAL_SCHEMA
        barrier_ctx = None
        if seg.barrier:
            gstep = seg.barrier[1]
            barrier_ctx = GlobalContext(
                work=str(work / f"g{seg.index}"),
                stage_dir=str(work / f"s{seg.index}"),
                n_tasks=len(tasks),
                partitions=gstep.partitions,
                workers=ex.workers,
            )
            Path(barrier_ctx.work).mkdir(parents=True, exist_ok=True)
        job = StageJob(
            work=str(work),
            segment=seg,
            steps=steps,
            tasks=tasks,
            input_spec=pipeline.input,
            batch_rows=pipeline.batch_rows,
            out_schema=out_schema,
            prelude_ctx=prelude_ctx,
            barrier_ctx=barrier_ctx,
            thin=thin_columns(seg, seg is segments[-1]),
        )
        t0 = time.perf_counter()
        names = ", ".join(s.name for _, s in seg.steps) or "-"
        res = _map(
            ex, functools.partial(run_stage_task, job), len(tasks), f"stage {seg.index} ({names})", progress
        )
        timings[f"stage{seg.index}"] = time.perf_counter() - t0
        results.append(res)
        if seg.barrier and barrier_ctx is not None:
            _, gstep = seg.barrier
            ctx = dataclasses.replace(barrier_ctx, task_rows=tuple(int(r["live"]) for r in res))
            t0 = time.perf_counter()
            info: dict[str, Any] = {}
            for method, n_items in gstep.phases(ctx):
                pjob = PhaseJob(step=gstep, method=method, ctx=ctx)
                info[method] = _map(
                    ex, functools.partial(run_phase, pjob), n_items, f"{gstep.name}: {method}", progress
                )
            timings[f"global:{gstep.name}"] = time.perf_counter() - t0
            globals_run.append((gstep, ctx, info))
            prelude_ctx = ctx
    return results, globals_run


def _task_ledger(pipeline: Pipeline, stage_results: list[list[dict[str, Any]]], task: int) -> Ledger:
    led = Ledger.empty([s.name for s in pipeline.steps])
    first = stage_results[0][task]
    led.rows_in = first["rows_in"] + sum(first["rejected"].values())
    led.rejected = Counter(first["rejected"])
    for stage in stage_results:
        for pos, c in stage[task]["steps"].items():
            led.steps[int(pos)].add(StepCounts.from_dict(c))
    led.kept = stage_results[-1][task]["live"]
    return led


def _output_schemas(pipeline: Pipeline) -> tuple[pa.Schema, pa.Schema, pa.Schema]:
    base = load_schema("document.v1")
    extra = [pa.field(k, v) for s in pipeline.steps for k, v in s.output_columns().items()]
    data = extend(base, extra, name="document.v1")
    drop_spec = load_schema("dropped.v1")
    dropped = extend(data, list(drop_spec), name="dropped.v1")
    rejects = load_schema("rejects.v1")
    return data, dropped, rejects


def _task_where(task: Task) -> str:
    p = task[0]
    where = p.file.path if p.kind == "whole" else f"{p.file.path}[{p.kind} {p.start}:{p.end}]"
    return where + (f" (+{len(task) - 1} more files)" if len(task) > 1 else "")


def _per_input(files: list[InputFile], stage_results: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The ledger per input file: the counts of its pieces (which may be in several tasks) added up."""
    acc = {f.path: {"path": f.path, "rows_in": 0, "kept": 0, "dropped": 0, "rejected": 0} for f in files}
    last = len(stage_results) - 1
    for s, results in enumerate(stage_results):
        for res in results:
            for path, c in res.get("sources", {}).items():
                e = acc[path]
                if s == 0:
                    e["rows_in"] += c["rows_in"]
                    e["rejected"] += c["rejected"]
                e["dropped"] += c["dropped"]
                if s == last:
                    e["kept"] += c["live"]
    per_input = list(acc.values())
    for e in per_input:
        if e["rows_in"] != e["kept"] + e["dropped"] + e["rejected"]:
            msg = (
                f"{e['path']}: ledger does not add up: rows_in={e['rows_in']} but kept={e['kept']} + "
                f"dropped={e['dropped']} + rejected={e['rejected']}"
            )
            raise LedgerError(msg)
    return per_input


def _assemble(
    pipeline: Pipeline,
    files: list[InputFile],
    tasks: list[Task],
    work: Path,
    out: Path,
    ex: Executor,
    progress: Progress,
    timings: dict[str, float],
    stage_results: list[list[dict[str, Any]]],
) -> tuple[RunReport, list[AssembleJob]]:
    t0 = time.perf_counter()
    n_tasks = len(tasks)
    ledger = Ledger.empty([s.name for s in pipeline.steps])
    for t in range(n_tasks):
        led = _task_ledger(pipeline, stage_results, t)
        led.check(where=_task_where(tasks[t]))
        ledger.add(led)
    ledger.check()
    per_input = _per_input(files, stage_results)
    data_schema, dropped_schema, rejects_schema = _output_schemas(pipeline)
    last = len(stage_results) - 1
    o = pipeline.output
    groups: list[tuple[str, pa.Schema, list[tuple[str, int]]]] = [
        (
            "data",
            data_schema,
            [
                (str(stage_file(work, last, t, "live")), stage_results[last][t]["live"])
                for t in range(n_tasks)
            ],
        )
    ]
    if o.keep_dropped:
        # stage by stage, each in input order: the same rows in the same order for any split
        counts = [
            (str(stage_file(work, s, t, "dropped")), stage_results[s][t]["dropped_rows"])
            for s in range(len(stage_results))
            for t in range(n_tasks)
        ]
        groups.append(("dropped", dropped_schema, counts))
    rej_counts = [
        (str(stage_file(work, 0, t, "rejects")), stage_results[0][t]["reject_rows"]) for t in range(n_tasks)
    ]
    groups.append(("rejects", rejects_schema, rej_counts))
    jobs: list[AssembleJob] = []
    for subdir, schema, counts in groups:
        pieces = plan_pieces(
            [(p, n) for p, n in counts if n],
            o.shard_rows,
            shard_bytes=o.shard_bytes,
            sizes=functools.partial(row_bytes, schema=schema),
        )
        if subdir == "data" and not pieces:
            pieces = [[]]  # always write one (possibly empty) data shard so readers see the schema
        jobs.append(
            AssembleJob(
                out=str(out),
                subdir=subdir,
                schema=schema,
                format=o.format,
                compression=o.compression,
                pieces=pieces,
            )
        )
    # one map over the shards of every folder, biggest first: with N workers the last round is
    # not one folder's odd shard alone while the others wait (data/ 3 + dropped/ 1 on 2 workers
    # was 3 rounds, now 2)
    items = [(g, i) for g, job in enumerate(jobs) for i in range(len(job.pieces))]
    items.sort(key=lambda gi: -sum(rows for _, _, rows in jobs[gi[0]].pieces[gi[1]]))
    infos = _map(
        ex, functools.partial(run_assemble_item, jobs), len(items), "write shards", progress, items=items
    )
    by_item = dict(zip(items, infos, strict=True))
    written = {job.subdir: [by_item[(g, i)] for i in range(len(job.pieces))] for g, job in enumerate(jobs)}
    timings["assemble"] = time.perf_counter() - t0
    samples = _reject_samples(rej_counts)
    report = RunReport(
        name=pipeline.name,
        output=str(out),
        ledger=ledger,
        shards=written["data"],
        dropped_shards=written.get("dropped", []),
        reject_shards=written["rejects"],
        per_input=per_input,
        reject_samples=samples,
    )
    return report, jobs


def _work_shards(out: Path, jobs: list[AssembleJob]) -> TableShards:
    """The shards just written, for report.html, read from the memory-mapped work files they
    were written from: the page reads samples, cluster sizes and representatives without
    decompressing the shards again (~0.15 s per 100k documents; ``dataforge report OUT`` gives the
    same page from the files)."""
    shards: dict[str, ShardRows] = {
        shard_name(job.subdir, i, job.format): AssembledShard(job, i)
        for job in jobs
        for i in range(len(job.pieces))
    }
    return TableShards(out, shards)


def _strip_seconds(info: dict[str, Any]) -> dict[str, Any]:
    """Phase results for the report (one entry per phase; single-item phases unwrapped)."""
    return {k: (v[0] if len(v) == 1 else v) for k, v in info.items()}


def _publish_reports(
    globals_run: list[tuple[GlobalStep, GlobalContext, dict[str, Any]]], out: Path
) -> dict[str, list[dict[str, Any]]]:
    """Copy the report tables global steps wrote (e.g. ``clusters``) to ``OUT/<name>/``."""
    from dataforge.io.shards import write_shard
    from dataforge.stages import read_ipc

    published: dict[str, list[dict[str, Any]]] = {}
    for gstep, ctx, _ in globals_run:
        for name in gstep.report_tables():
            src = Path(ctx.path(f"{name}.arrow"))
            if not src.exists():
                continue
            info = write_shard(read_ipc(src), out / name / "part-00000.arrow", relative_to=out)
            published[name] = [info.to_dict()]
    return published


def _reject_samples(rej_counts: list[tuple[str, int]], limit: int = 20) -> list[dict[str, Any]]:
    from dataforge.stages import read_ipc

    samples: list[dict[str, Any]] = []
    for path, n in rej_counts:
        if not n:
            continue
        t = read_ipc(path).slice(0, limit - len(samples)).drop_columns(["raw"])
        samples += t.to_pylist()
        if len(samples) >= limit:
            break
    return samples


def _write_manifest(
    pipeline: Pipeline,
    files: list[InputFile],
    out: Path,
    report: RunReport,
    config: dict[str, Any],
    config_fp: str,
) -> None:
    data_schema, dropped_schema, rejects_schema = _output_schemas(pipeline)
    manifest = {
        "manifest_version": 1,
        "kind": "documents",
        "name": pipeline.name,
        "dataforge_version": dataforge.__version__,
        "config_fingerprint": config_fp,
        "config": config,
        "inputs": [
            {"path": f.path, "format": f.format, "compression": f.compression, "bytes": f.size} for f in files
        ],
        "schema": {"name": "document.v1", "fields": schema_to_json(data_schema)},
        "dropped_schema": {"name": "dropped.v1", "fields": schema_to_json(dropped_schema)},
        "rejects_schema": {"name": "rejects.v1", "fields": schema_to_json(rejects_schema)},
        "format": pipeline.output.format,
        "compression": pipeline.output.compression,
        "counts": {
            "rows_in": report.rows_in,
            "kept": report.kept,
            "dropped": report.dropped,
            "rejected": report.rejected,
        },
        "shards": report.shards,
        "dropped": report.dropped_shards,
        "rejects": report.reject_shards,
        "reports": report.reports,
    }
    write_json_atomic(out / MANIFEST, manifest)


__all__ = ["DROP_FIELDS", "RejectRateError", "config_of", "fingerprint", "run_pipeline"]
