"""The task functions the runner hands to executors: shard stages, global decisions, assembly.

Each function is pure with respect to its inputs (a picklable job description and a task number),
writes its outputs under temporary names and renames them when complete, and writes a completion
marker last. A rerun finds the marker and returns the recorded result without redoing the work,
which is what makes a run resumable after a crash and safe under Ray task retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from dataforge.errors import DataError, OutputError
from dataforge.io.inputs import InputSpec, Task
from dataforge.io.readers import read_batches
from dataforge.io.shards import (
    arrow_indices,
    arrow_numpy,
    take_sorted,
    tmp_name,
    write_json_atomic,
    write_shard,
)
from dataforge.io.views import table_to_polars, valid_mask
from dataforge.schemas import conform, extend, load_schema
from dataforge.step import DECISIONS_SORTED, SORTED_MARK, GlobalContext, GlobalStep, Step, StepOutput

log = logging.getLogger(__name__)

# Columns every in-flight frame carries (see dataforge.step).
INTERNAL_SCHEMA = pa.schema(
    [
        pa.field("id", pa.large_string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("meta", pa.large_string()),
        pa.field("_source", pa.large_string(), nullable=False),
        pa.field("_row", pa.int64(), nullable=False),
        pa.field("_line", pa.int64()),
    ]
)
DROP_FIELDS = [
    pa.field("_drop_step", pa.large_string(), nullable=False),
    pa.field("_drop_reason", pa.large_string(), nullable=False),
    pa.field("_drop_detail", pa.large_string()),
]
KEY_FIELDS = [pa.field("_task", pa.int32(), nullable=False), pa.field("_ord", pa.int64(), nullable=False)]
# Internal -> output column names.
OUTPUT_RENAME = {
    "_source": "source_file",
    "_row": "source_row",
    "_line": "source_line",
    "_drop_step": "drop_step",
    "_drop_reason": "drop_reason",
    "_drop_detail": "drop_detail",
}


@dataclass
class Segment:
    """One shard stage: apply the previous barrier's decisions, then shard steps, then the next
    barrier's keys. ``positions`` are indexes into the pipeline's step list."""

    index: int
    prelude: tuple[int, GlobalStep] | None = None
    steps: list[tuple[int, Step]] = field(default_factory=list)
    barrier: tuple[int, GlobalStep] | None = None

    def step_positions(self) -> list[int]:
        pos = [p for p, _ in self.steps]
        return ([self.prelude[0]] if self.prelude else []) + pos

    def last_position(self) -> int:
        positions = self.step_positions()
        return positions[-1] if positions else -1


def plan_segments(steps: list[Step]) -> list[Segment]:
    """Split the step list at global steps into shard stages."""
    segments: list[Segment] = []
    cur = Segment(0)
    for i, step in enumerate(steps):
        if isinstance(step, GlobalStep):
            cur.barrier = (i, step)
            segments.append(cur)
            cur = Segment(len(segments), prelude=(i, step))
        else:
            cur.steps.append((i, step))
    segments.append(cur)
    return segments


def live_schema(steps: list[Step], upto: int) -> pa.Schema:
    """In-flight schema after step position ``upto`` (inclusive): internal columns + declared ones."""
    extra: list[pa.Field] = []
    for step in steps[: upto + 1]:
        extra += [pa.field(k, v) for k, v in step.output_columns().items()]
    return extend(INTERNAL_SCHEMA, extra)


def with_drop_fields(schema: pa.Schema) -> pa.Schema:
    return extend(schema, DROP_FIELDS)


# --------------------------------------------------------------------------- IPC helpers


class _IpcSink:
    """An Arrow IPC file written under a temporary name; ``commit()`` renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.tmp = tmp_name(path)
        self.rows = 0
        self._sink = pa.OSFile(str(self.tmp), "wb")
        self._writer = ipc.new_file(self._sink, schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            try:
                self._writer.write_table(table)
            except OSError as exc:
                raise _work_error(self.path, exc) from None
            self.rows += table.num_rows

    def commit(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            raise _work_error(self.path, exc) from None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._sink.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def _work_error(path: Path, exc: OSError) -> OutputError:
    """A work file could not be written (disk full, quota, read-only): name the file."""
    return OutputError(f"cannot write work file {path}: {exc.strerror or exc}")


def read_ipc(path: str | Path) -> pa.Table:
    """Memory-map and read an Arrow IPC file written by the work stages."""
    with pa.memory_map(str(path)) as src:
        return ipc.open_file(src).read_all()


def _frames(table: pa.Table, batch_rows: int) -> Iterator[pl.DataFrame]:
    for start in range(0, table.num_rows, batch_rows):
        yield table_to_polars(table.slice(start, batch_rows))


# --------------------------------------------------------------------------- shard stage


@dataclass
class StageJob:
    """Everything a shard-stage task needs (picklable; shared by all tasks of the stage)."""

    work: str
    segment: Segment
    steps: list[Step]
    tasks: list[Task]  # the input pieces of every task (see dataforge.io.inputs.plan_tasks)
    input_spec: InputSpec
    batch_rows: int
    out_schema: pa.Schema  # live schema at the end of this stage
    prelude_ctx: GlobalContext | None = None  # context of the previous global step (annotate)
    barrier_ctx: GlobalContext | None = None  # context of the next global step (keys)
    # the columns this stage's live file holds itself (a thin live file, see ``read_live``);
    # empty: every column of ``out_schema``
    thin: tuple[str, ...] = ()


#: a thin live file's schema metadata: the live file it selects rows from (relative to its own
#: folder) and the column order of the full table; its ``_src_row`` column gives the positions
THIN_BASE = b"dataforge.thin_base"
THIN_COLUMNS = b"dataforge.thin_columns"
SRC_ROW = "_src_row"


def thin_columns(seg: Segment, last: bool) -> tuple[str, ...]:
    """The columns a stage writes itself when its live file can be thin: the last stage, when it
    only applies a global step whose ``annotate`` adds its declared columns and drops rows (the
    usual end of a dedup pipeline). The other columns are the previous stage's, unchanged, so
    copying them into another 200 MB of work file per 100k documents is avoided."""
    if not last or seg.steps or seg.prelude is None or seg.index == 0:
        return ()
    step = seg.prelude[1]
    if not step.annotate_adds_only:
        return ()
    return tuple(step.output_columns())


def _thin_schema(job: StageJob, task: int, live_path: Path) -> pa.Schema:
    base = stage_file(job.work, job.segment.index - 1, task, "live")
    fields = [pa.field(SRC_ROW, pa.int64(), nullable=False)]
    fields += [job.out_schema.field(name) for name in job.thin]
    meta = {
        THIN_BASE: os.path.relpath(base, live_path.parent).encode(),
        THIN_COLUMNS: json.dumps(job.out_schema.names).encode(),
    }
    return pa.schema(fields, metadata=meta)


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of consecutive values in ascending ``rows``."""
    if rows.shape[0] == 0:
        return rows, rows
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    first = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [rows.shape[0]]])
    return rows[first], ends - first


def read_live(path: str | Path, offset: int = 0, rows: int | None = None) -> pa.Table:
    """Rows ``offset:offset + rows`` of a stage's live file, with every column.

    A thin live file (see :func:`thin_columns`) holds its own columns and the positions of its
    rows in the previous stage's live file; the other columns are zero-copy slices of that
    memory-mapped file, one per run of consecutive kept rows, so no row is copied here either
    (the shard writer copies one record batch at a time)."""
    table = read_ipc(path)
    n = table.num_rows - offset if rows is None else rows
    table = table.slice(offset, n)
    meta = table.schema.metadata or {}
    if THIN_BASE not in meta:
        return table
    base = read_ipc(Path(path).parent / meta[THIN_BASE].decode())
    names = json.loads(meta[THIN_COLUMNS])
    src = arrow_numpy(table.column(SRC_ROW).combine_chunks()) if n else np.empty(0, np.int64)
    starts, lengths = _runs(src)
    selected = (
        pa.concat_tables([base.slice(int(s), int(k)) for s, k in zip(starts, lengths, strict=True)])
        if starts.shape[0]
        else base.schema.empty_table()
    )
    own = set(table.column_names)
    columns = [table.column(c) if c in own else selected.column(c) for c in names]
    fields = [table.schema.field(c) if c in own else base.schema.field(c) for c in names]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def live_columns(
    path: str | Path, offset: int, rows: int, columns: list[str], positions: np.ndarray | None = None
) -> pa.Table:
    """Those of ``columns`` (work names) a stage's live file has, for rows ``offset:offset + rows``
    or the rows at ``positions`` (ascending) among those: what :func:`read_live` gives, for a few
    columns or rows. A thin file's other columns are taken (copied) from its base file instead of
    sliced run by run: a copy of one narrow column, or of a few rows, costs less than a view with
    a chunk per run."""
    table = read_ipc(path).slice(offset, rows)
    meta = table.schema.metadata or {}
    if positions is not None:
        table = take_sorted(table, positions)
    if THIN_BASE not in meta:
        return table.select([c for c in columns if c in table.column_names])
    own = table.select([c for c in columns if c in table.column_names])
    base = read_ipc(Path(path).parent / meta[THIN_BASE].decode())
    need = [c for c in columns if c not in own.column_names and c in base.column_names]
    src = table.column(SRC_ROW)
    picked = base.select(need)
    picked = picked.take(src) if positions is None else take_sorted(picked, arrow_numpy(src.combine_chunks()))
    have = [c for c in columns if c in own.column_names or c in need]
    return pa.Table.from_arrays(
        [own.column(c) if c in own.column_names else picked.column(c) for c in have],
        schema=pa.schema([(own if c in own.column_names else picked).schema.field(c) for c in have]),
    )


def _stage_dir(work: str | Path, stage: int) -> Path:
    return Path(work) / f"s{stage}"


def stage_file(work: str | Path, stage: int, task: int, kind: str) -> Path:
    return _stage_dir(work, stage) / f"t{task:05d}.{kind}.arrow"


def stage_marker(work: str | Path, stage: int, task: int) -> Path:
    return _stage_dir(work, stage) / f"t{task:05d}.done.json"


class _Counts:
    def __init__(self, positions: list[int], steps: list[Step]) -> None:
        self.steps = {
            p: {
                "step": steps[p].name,
                "rows_in": 0,
                "kept": 0,
                "dropped": Counter(),
                "counters": Counter(),
                "seconds": 0.0,
            }
            for p in positions
        }

    def to_json(self) -> dict[str, Any]:
        return {
            str(p): {**c, "dropped": dict(c["dropped"]), "counters": dict(c["counters"])}
            for p, c in self.steps.items()
        }


class _BatchDrops:
    """The rows one batch loses, in the batch's row order (not step by step).

    Dropped rows are written in input order within each task and stage, so that the ``dropped/``
    shards do not depend on how the input was cut into tasks and batches. ``pos`` follows each
    surviving row's position in the batch as steps remove rows.
    """

    def __init__(self, n: int, schema: pa.Schema) -> None:
        self.schema = schema
        self.pos = np.arange(n, dtype=np.int64)
        self.tables: list[pa.Table] = []
        self.order: list[np.ndarray] = []
        self.sources: Counter[str] = Counter()

    def add(self, dropped: pl.DataFrame, mask: pl.Series) -> None:
        m = mask.to_numpy()
        self.order.append(self.pos[m])
        self.pos = self.pos[~m]
        self.tables.append(conform(dropped, self.schema))
        _count_sources(self.sources, dropped)

    def flush(self, sink: _IpcSink, sources: Counter[str]) -> None:
        if not self.tables:
            return
        table = self.tables[0] if len(self.tables) == 1 else pa.concat_tables(self.tables)
        if len(self.tables) > 1:
            table = table.take(arrow_indices(np.argsort(np.concatenate(self.order), kind="stable")))
        sink.write(table)
        sources.update(self.sources)
        self.tables, self.order = [], []
        self.sources = Counter()


def _count_sources(counter: Counter[str], frame: pl.DataFrame) -> None:
    """Rows per input file (``_source``) of ``frame``, for the per-input ledger."""
    if frame.height == 0:
        return
    src = frame["_source"]
    first = src[0]
    if src[-1] == first and (src == first).all():
        counter[first] += frame.height
        return
    for name, n in frame.group_by("_source", maintain_order=True).len().iter_rows():
        counter[name] += n


def _apply(
    pos: int,
    step: Step,
    frame: pl.DataFrame,
    out: StepOutput,
    counts: _Counts,
    keep_cols: list[str],
    drops: _BatchDrops,
    seconds: float,
) -> pl.DataFrame:
    """Book one step's output: split kept/dropped, count, collect dropped rows."""
    h = frame.height
    result = out.frame
    if result.height != h:
        msg = f"step {step.name} returned {result.height} rows for {h} (a step must keep height and order)"
        raise DataError(msg)
    missing = [c for c in keep_cols if c not in result.columns]
    if missing:
        msg = f"step {step.name} did not produce its declared column(s) {missing}"
        raise DataError(msg)
    result = result.select(keep_cols)
    c = counts.steps[pos]
    c["rows_in"] += h
    c["seconds"] += seconds
    c["counters"].update({k: int(v) for k, v in out.counters.items()})
    if out.reason is None or h == 0:
        c["kept"] += h
        return result
    reason = out.reason.cast(pl.Utf8).rename("_drop_reason")
    if reason.len() != h:
        msg = f"step {step.name} returned {reason.len()} reasons for {h} rows"
        raise DataError(msg)
    mask = reason.is_not_null()
    n_drop = int(mask.sum())
    if n_drop == 0:
        c["kept"] += h
        return result
    detail = (out.detail if out.detail is not None else pl.Series([None] * h, dtype=pl.Utf8)).cast(pl.Utf8)
    dropped = result.with_columns(
        pl.lit(step.name, pl.Utf8).alias("_drop_step"), reason, detail.rename("_drop_detail")
    ).filter(mask)
    for r, n in dropped.group_by("_drop_reason").len().iter_rows():
        c["dropped"][r] += n
    drops.add(dropped, mask)
    c["kept"] += h - n_drop
    return result.filter(~mask)


def _decisions_for(job: StageJob, task: int) -> pl.DataFrame | None:
    if job.prelude_ctx is None:
        return None
    return task_decisions(job.prelude_ctx.decisions_path(), task)


def task_decisions(path: str, task: int) -> pl.DataFrame:
    """The rows of task ``task`` in a decision table, by ``_ord``.

    A table written by :meth:`GlobalContext.write_decisions` is sorted: only the record batches
    that can hold the task are looked at, and within them a binary search finds its rows, so a
    task's cost does not grow with the whole table. Other tables are filtered whole.
    """
    with pa.memory_map(str(path)) as src:
        reader = ipc.open_file(src)
        if (reader.schema.metadata or {}).get(DECISIONS_SORTED) != SORTED_MARK[DECISIONS_SORTED]:
            table = reader.read_all()
            return pl.DataFrame(pl.from_arrow(table)).filter(pl.col("_task") == task).sort("_ord")
        pieces = []
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            if batch.num_rows == 0:
                continue
            col = arrow_numpy(batch.column("_task"))
            if col[-1] < task:
                continue
            if col[0] > task:
                break
            lo, hi = np.searchsorted(col, task, side="left"), np.searchsorted(col, task, side="right")
            pieces.append(batch.slice(lo, hi - lo))
        table = pa.Table.from_batches(pieces, schema=reader.schema) if pieces else reader.schema.empty_table()
    return pl.DataFrame(pl.from_arrow(table))


def _empty_frame(schema: pa.Schema) -> pl.DataFrame:
    return pl.DataFrame(pl.from_arrow(schema.empty_table()))


def run_stage_task(job: StageJob, task: int) -> dict[str, Any]:
    """Run one shard stage on one task; returns (and records) its counts. Resumable."""
    seg = job.segment
    marker = stage_marker(job.work, seg.index, task)
    if marker.exists():
        return json.loads(marker.read_text())
    _stage_dir(job.work, seg.index).mkdir(parents=True, exist_ok=True)
    positions = seg.step_positions()
    counts = _Counts(positions, job.steps)
    columns_after = {p: live_schema(job.steps, p).names for p in positions}
    rows_in = 0
    rejected: Counter[str] = Counter()
    live_path = stage_file(job.work, seg.index, task, "live")
    live = _IpcSink(live_path, _thin_schema(job, task, live_path) if job.thin else job.out_schema)
    dropped = _IpcSink(stage_file(job.work, seg.index, task, "dropped"), with_drop_fields(job.out_schema))
    sinks = [live, dropped]
    rejects: _IpcSink | None = None
    if seg.index == 0:
        rejects = _IpcSink(stage_file(job.work, 0, task, "rejects"), load_schema("rejects.v1"))
        sinks.append(rejects)
    key_sinks: list[_IpcSink] = []
    if seg.barrier and job.barrier_ctx is not None:
        bstep = seg.barrier[1]
        kschema = pa.schema(KEY_FIELDS + [pa.field(k, v) for k, v in bstep.keys_schema().items()])
        for part in range(job.barrier_ctx.partitions):
            key_sinks.append(_IpcSink(Path(job.barrier_ctx.key_file(task, part)), kschema))
        sinks += key_sinks
    decisions = _decisions_for(job, task)
    in_pos = 0  # position among the previous stage's live rows (decision key)
    ord_ = 0  # position among this stage's live rows (key for the next barrier)
    # per input file: rows read and rejected (stage 0), dropped and live (every stage)
    src_in: Counter[str] = Counter()
    src_rejected: Counter[str] = Counter()
    src_dropped: Counter[str] = Counter()
    src_live: Counter[str] = Counter()
    try:
        for frame in _source_frames(job, task, rejects, rejected, src_in, src_rejected):
            if seg.index == 0:
                rows_in += frame.height
            drops = _BatchDrops(frame.height, dropped.schema)
            if seg.prelude:
                ppos, pstep = seg.prelude
                dec = _slice_decisions(decisions, in_pos, frame.height)
                actx = dataclasses.replace(job.prelude_ctx, task=task, ord_offset=in_pos)  # type: ignore[type-var]
                cols = columns_after[ppos]
                if job.thin:  # the kept rows' positions in the previous stage's live file
                    frame = frame.with_columns(
                        pl.int_range(in_pos, in_pos + frame.height, dtype=pl.Int64).alias(SRC_ROW)
                    )
                    cols = [*cols, SRC_ROW]
                in_pos += frame.height
                t0 = time.perf_counter()
                out = pstep.annotate(frame, dec, actx)
                frame = _apply(ppos, pstep, frame, out, counts, cols, drops, time.perf_counter() - t0)
            for pos, step in seg.steps:
                cols = columns_after[pos]
                t0 = time.perf_counter()
                if frame.height:
                    out = step.apply(frame)
                else:
                    out = StepOutput(_with_nulls(frame, step))
                frame = _apply(pos, step, frame, out, counts, cols, drops, time.perf_counter() - t0)
            drops.flush(dropped, src_dropped)
            if key_sinks and seg.barrier and frame.height:
                kctx = dataclasses.replace(job.barrier_ctx, task=task, ord_offset=ord_)  # type: ignore[type-var]
                k = seg.barrier[1].keys(frame, kctx)
                if k.height:
                    if "_ord" not in k.columns:
                        k = k.with_columns(pl.int_range(ord_, ord_ + k.height, dtype=pl.Int64).alias("_ord"))
                    k = k.with_columns(pl.lit(task, pl.Int32).alias("_task"))
                    if len(key_sinks) == 1:
                        key_sinks[0].write(conform(k, key_sinks[0].schema))
                    else:
                        for (part,), sub in k.partition_by(
                            "_part", as_dict=True, maintain_order=True
                        ).items():
                            key_sinks[int(part)].write(conform(sub, key_sinks[int(part)].schema))
            ord_ += frame.height
            _count_sources(src_live, frame)
            live.write(conform(frame, live.schema))
        for s in sinks:
            s.commit()
    except BaseException:
        for s in sinks:
            s.abort()
        raise
    result = {
        "task": task,
        "stage": seg.index,
        "rows_in": rows_in,
        "rejected": dict(rejected),
        "live": live.rows,
        "dropped_rows": dropped.rows,
        "reject_rows": rejects.rows if rejects else 0,
        "steps": counts.to_json(),
        "sources": {
            path: {
                "rows_in": src_in[path],
                "rejected": src_rejected[path],
                "dropped": src_dropped[path],
                "live": src_live[path],
            }
            for path in sorted(set(src_in) | set(src_dropped) | set(src_live) | set(src_rejected))
        },
    }
    write_json_atomic(marker, result, durable=False)
    return result


def _with_nulls(frame: pl.DataFrame, step: Step) -> pl.DataFrame:
    extra = {k: v for k, v in step.output_columns().items() if k not in frame.columns}
    if not extra:
        return frame
    nulls = pl.DataFrame(pl.from_arrow(pa.schema(list(extra.items())).empty_table()))
    return pl.concat([frame, nulls], how="horizontal")


def _slice_decisions(decisions: pl.DataFrame | None, start: int, n: int) -> pl.DataFrame | None:
    if decisions is None:
        return None
    part = decisions.filter(pl.col("_ord").is_between(start, start + n - 1))
    return part.with_columns(pl.col("_ord") - start)


def _source_frames(
    job: StageJob,
    task: int,
    rejects: _IpcSink | None,
    rejected: Counter[str],
    src_in: Counter[str],
    src_rejected: Counter[str],
) -> Iterator[pl.DataFrame]:
    seg = job.segment
    if seg.index == 0:
        for piece in job.tasks[task]:
            path = piece.file.path
            src_in[path] += 0  # every file of the task gets a ledger entry, even an empty one
            for batch in read_batches(piece.file, job.input_spec, batch_rows=job.batch_rows, piece=piece):
                if batch.rejects.height and rejects is not None:
                    rejects.write(conform(batch.rejects, rejects.schema))
                    for r, n in batch.rejects.group_by("reason").len().iter_rows():
                        rejected[r] += n
                    src_rejected[path] += batch.rejects.height
                src_in[path] += batch.docs.height + batch.rejects.height
                yield batch.docs
        return
    prev = stage_file(job.work, seg.index - 1, task, "live")
    table = read_ipc(prev)
    if table.num_rows == 0:
        yield _empty_frame(table.schema)
        return
    yield from _frames(table, job.batch_rows)


# --------------------------------------------------------------------------- global phases


@dataclass
class PhaseJob:
    """Run one phase of a global step (``step.<method>(ctx, item)``) for each item."""

    step: GlobalStep
    method: str
    ctx: GlobalContext


def phase_marker(ctx: GlobalContext, method: str, item: int) -> Path:
    return Path(ctx.work) / f"{method}-{item:05d}.done.json"


def run_phase(job: PhaseJob, item: int) -> dict[str, Any]:
    """Run one item of a global phase; resumable via its marker."""
    marker = phase_marker(job.ctx, job.method, item)
    if marker.exists():
        return json.loads(marker.read_text())
    Path(job.ctx.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = getattr(job.step, job.method)(job.ctx, item) or {}
    result = {**result, "seconds": time.perf_counter() - t0}
    write_json_atomic(marker, result, durable=False)
    return result


# --------------------------------------------------------------------------- assembly


@dataclass
class AssembleJob:
    """Write final shards: each shard is a list of (work file, offset, rows) pieces."""

    out: str
    subdir: str  # data, dropped, rejects
    schema: pa.Schema
    format: str
    compression: str
    pieces: list[list[tuple[str, int, int]]]


def shard_name(subdir: str, index: int, fmt: str) -> str:
    ext = ".arrow" if fmt == "arrow" else ".parquet"
    return f"{subdir}/part-{index:05d}{ext}"


def assembled_table(job: AssembleJob, index: int) -> pa.Table:
    """The rows of output shard ``index`` of ``job`` as they are written: its pieces of the work
    files, renamed and conformed to the output schema (memory-mapped slices, not copied)."""
    tables = []
    for path, offset, rows in job.pieces[index]:
        t = read_live(path, offset, rows)
        t = t.rename_columns([OUTPUT_RENAME.get(c, c) for c in t.column_names])
        tables.append(conform(t, job.schema))
    return pa.concat_tables(tables) if tables else job.schema.empty_table()


@dataclass(frozen=True)
class AssembledShard:
    """Output shard ``index`` of ``job`` read back from the work files it is written from: its
    column names, and any of its columns for all rows or a few (see :func:`live_columns`), renamed
    and conformed as :func:`assembled_table` does. How a run's report.html reads its shards."""

    job: AssembleJob
    index: int

    @property
    def names(self) -> list[str]:
        return list(self.job.schema.names)

    def __call__(self, columns: list[str], rows: list[int] | None = None) -> pa.Table:
        schema = pa.schema([self.job.schema.field(c) for c in columns])
        work_name = {v: k for k, v in OUTPUT_RENAME.items()}
        # live and dropped work files name provenance columns as the stages do (``_source``);
        # rejects files already as the output does: ask for both, the file has one
        names = [n for c in columns for n in dict.fromkeys((work_name.get(c, c), c))]
        wanted = None if rows is None else np.asarray(rows, dtype=np.int64)
        tables = []
        start = 0
        for path, offset, n in self.job.pieces[self.index]:
            positions = None
            if wanted is not None:
                positions = wanted[(wanted >= start) & (wanted < start + n)] - start
            start += n
            if positions is not None and not positions.shape[0]:
                continue
            t = live_columns(path, offset, n, names, positions)
            t = t.rename_columns([OUTPUT_RENAME.get(c, c) for c in t.column_names])
            tables.append(conform(t, schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()


def run_assemble(job: AssembleJob, index: int) -> dict[str, Any]:
    """Write output shard ``index`` of ``job`` (deterministic bytes)."""
    # memory-mapped slices, not copied here: write_shard copies one record batch at a time
    table = assembled_table(job, index)
    target = Path(job.out) / shard_name(job.subdir, index, job.format)
    target.parent.mkdir(parents=True, exist_ok=True)
    info = write_shard(table, target, format=job.format, compression=job.compression, relative_to=job.out)
    return info.to_dict()


def run_assemble_item(jobs: list[AssembleJob], item: tuple[int, int]) -> dict[str, Any]:
    """Write shard ``item[1]`` of ``jobs[item[0]]`` (one map writes every folder's shards)."""
    g, index = item
    return run_assemble(jobs[g], index)


def plan_pieces(
    counts: list[tuple[str, int]],
    shard_rows: int,
    *,
    shard_bytes: int | None = None,
    sizes: Callable[[str], np.ndarray] | None = None,
) -> list[list[tuple[str, int, int]]]:
    """Cut the concatenation of (file, rows) into shards of at most ``shard_rows`` rows and, with
    ``shard_bytes``, at most that many bytes by ``sizes(file)`` (the bytes of each of the file's
    rows, :func:`row_bytes`).

    Rows fill shards in order: a shard is closed when it holds ``shard_rows`` rows or when the
    next row would take it over ``shard_bytes``; a row bigger than ``shard_bytes`` gets a shard
    of its own. The cuts are a function of the row sequence and sizes alone, not of how the rows
    are spread over files, so the shards are the same for any task split. Files are taken one at
    a time (a cumulative sum of one file's sizes and a binary search per cut), so the planner
    holds one file's sizes, not the corpus's.
    """
    if shard_bytes is not None and sizes is None:
        raise ValueError("plan_pieces: shard_bytes needs sizes")
    shards: list[list[tuple[str, int, int]]] = []
    cur: list[tuple[str, int, int]] = []
    room = shard_rows
    room_bytes = shard_bytes or 0
    for path, rows in counts:
        cum = None
        if shard_bytes is not None and sizes is not None:
            row_sizes = sizes(path)
            if row_sizes.shape[0] != rows:
                msg = f"{path}: {row_sizes.shape[0]} row sizes for {rows} rows"
                raise OutputError(msg)
            cum = np.cumsum(row_sizes, dtype=np.int64)
        offset = 0
        while rows - offset > 0:
            take = min(room, rows - offset)
            before = 0
            if cum is not None:
                before = int(cum[offset - 1]) if offset else 0
                fit = max(int(np.searchsorted(cum, before + room_bytes, side="right")) - offset, 0)
                take = min(take, fit if fit or cur else 1)  # an empty shard takes one row whatever its size
            if take == 0:  # the next row does not fit: close this shard
                shards.append(cur)
                cur, room, room_bytes = [], shard_rows, shard_bytes or 0
                continue
            cur.append((path, offset, take))
            if cum is not None:
                room_bytes -= int(cum[offset + take - 1]) - before
            offset += take
            room -= take
            if room == 0:
                shards.append(cur)
                cur, room, room_bytes = [], shard_rows, shard_bytes or 0
    if cur:
        shards.append(cur)
    return shards


def row_bytes(path: str | Path, *, schema: pa.Schema | None = None) -> np.ndarray:
    """Uncompressed bytes of each row of a work file (live, dropped or rejects) as a shard of
    ``schema`` holds it (default: the file's own columns), what ``shard_bytes`` limits.

    A row's bytes are the value bytes of its string and binary columns plus the width of its
    fixed-width ones (taken from ``schema``, so a column the file lacks and a shard fills with
    nulls counts too), summed through lists and structs; offsets, validity bits and types without
    a width (dictionaries, maps) count 0, and so does a null string. A name the file lacks is
    looked up by its work-file name (:data:`OUTPUT_RENAME`), so this measures shards and work
    files alike. A thin live file counts its own columns and, through ``_src_row``, those it
    reads from the previous stage's file. Of a string column only the offsets (and validity)
    buffers are read, not the text.
    """
    table = read_ipc(path)
    meta = table.schema.metadata or {}
    thin = THIN_BASE in meta
    base = read_ipc(Path(path).parent / meta[THIN_BASE].decode()) if thin else None
    if schema is None:
        names = json.loads(meta[THIN_COLUMNS]) if thin else [c for c in table.column_names if c != SRC_ROW]
        mine = set(table.column_names)
        schema = pa.schema(
            [(table.schema if c in mine or base is None else base.schema).field(c) for c in names]
        )
    source = {v: k for k, v in OUTPUT_RENAME.items()}
    present = set(table.column_names) | set(base.column_names if base is not None else ())
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    from_base: list[str] = []
    for f in schema:
        width = _fixed_width(f.type)
        name = f.name if f.name in present else source.get(f.name, f.name)
        if width is not None:
            sizes += width
        elif name in table.column_names:
            sizes += _column_bytes(table.column(name))
        elif base is not None and name in base.column_names:
            from_base.append(name)
    if from_base and base is not None and table.num_rows:
        src = arrow_numpy(table.column(SRC_ROW).combine_chunks())
        base_sizes = np.zeros(base.num_rows, dtype=np.int64)
        for name in from_base:
            base_sizes += _column_bytes(base.column(name))
        sizes += base_sizes[src]
    return sizes


def _fixed_width(t: pa.DataType) -> int | None:
    """Bytes per value of a fixed-width type (a boolean: 0), else None."""
    try:
        return t.bit_width // 8
    except ValueError:
        return None


def _column_bytes(column: pa.ChunkedArray) -> np.ndarray:
    sizes = np.zeros(len(column), dtype=np.int64)
    pos = 0
    for chunk in column.chunks:
        sizes[pos : pos + len(chunk)] = _array_bytes(chunk)
        pos += len(chunk)
    return sizes


def _array_bytes(arr: pa.Array) -> np.ndarray | int:
    """Bytes of each value of ``arr`` (see :func:`row_bytes`); an int when all are equal."""
    t = arr.type
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return arrow_numpy(pc.binary_length(arr).fill_null(0)).astype(np.int64)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        if len(arr) == 0:
            return 0
        offsets = np.frombuffer(
            arr.buffers()[1],
            dtype=np.int64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else np.int32,
        )[arr.offset : arr.offset + len(arr) + 1]
        lengths = np.diff(offsets).astype(np.int64, copy=False)
        if arr.null_count:  # a null slot may still span bytes (a value masked out later): 0
            lengths = np.where(valid_mask(arr), lengths, 0)
        return lengths
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        lengths = pc.list_value_length(arr).fill_null(0)
        counts = arrow_numpy(lengths.combine_chunks() if isinstance(lengths, pa.ChunkedArray) else lengths)
        inner = np.broadcast_to(np.asarray(_array_bytes(arr.flatten()), dtype=np.int64), (int(counts.sum()),))
        cum = np.concatenate([[0], np.cumsum(inner)])
        ends = np.cumsum(counts.astype(np.int64))
        return cum[ends] - cum[ends - counts]
    if pa.types.is_struct(t):
        total: np.ndarray | int = 0
        for child in arr.flatten():
            total = total + _array_bytes(child)
        return total
    return _fixed_width(t) or 0  # no fixed width (dictionary, map, ...): 0
