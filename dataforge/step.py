"""What a pipeline step is.

A step is a small, keyword-only dataclass registered under a dotted name (``filter.gopher_quality``).
Shard steps see one batch of documents at a time as a Polars frame and return a :class:`StepOutput`:
the frame (same height and order; they may rewrite ``text`` and add the columns they declare), and,
for filters, a drop reason per row. A filter never deletes a row: the runner moves rows with a reason
to ``dropped/`` and counts them in the ledger. Steps know nothing about files or executors.

The frame a step receives always has these columns:

=========== ======= ===========================================================
``id``      Utf8    document id (from the id field, or ``<file>:<line>``)
``text``    Utf8    document text, never null
``meta``    Utf8    the input record's other fields as a JSON object (nullable)
``_source`` Utf8    input file the row came from
``_row``    Int64   0-based record index in that file (rejected records included)
``_line``   Int64   1-based line number for line formats, null for columnar files
=========== ======= ===========================================================

Global steps (``scope = "global"``, e.g. ``dedup.exact``) work in three phases, see
:class:`GlobalStep`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from dataforge.errors import ConfigError
from dataforge.io.shards import atomic_path

#: Schema metadata of a decision table written by :meth:`GlobalContext.write_decisions`.
DECISIONS_SORTED = b"dataforge.decisions.sorted"
SORTED_MARK = {DECISIONS_SORTED: b"_task,_ord"}
_ORD_SPAN = 1 << 40  # (_task, _ord) as one ascending integer: positions stay below 2^40


@dataclass
class StepOutput:
    """What a shard step returns for one batch.

    Args:
        frame: the batch after the step: same height and row order as the input.
        reason: Utf8 series, one per row; null keeps the row, a string drops it with that reason.
        detail: Utf8 series explaining the reason (the measured value next to its threshold).
        counters: extra counts for the report, e.g. ``{"email": 3}`` for PII redaction.
    """

    frame: pl.DataFrame
    reason: pl.Series | None = None
    detail: pl.Series | None = None
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One quality rule: a boolean expression that is true where the row must be dropped.

    Args:
        reason: the drop reason recorded for rows that fail, e.g. ``gopher_short_doc``.
        fails: boolean expression over the frame; null counts as "does not fail".
        detail: Utf8 expression describing the measured value and threshold (optional).
    """

    reason: str
    fails: pl.Expr
    detail: pl.Expr | None = None


def first_failing(frame: pl.DataFrame, rules: Sequence[Rule]) -> tuple[pl.Series, pl.Series]:
    """Evaluate ``rules`` in order and return (reason, detail) of the first failing rule per row.

    Example:
        >>> df = pl.DataFrame({"text": ["a", "long enough"]})
        >>> r, d = first_failing(df, [Rule("too_short", pl.col("text").str.len_chars() < 3)])
        >>> r.to_list()
        ['too_short', None]
    """
    if not rules:
        n = frame.height
        return pl.Series("reason", [None] * n, pl.Utf8), pl.Series("detail", [None] * n, pl.Utf8)
    reason_expr: Any = pl
    detail_expr: Any = pl
    for rule in rules:
        cond = rule.fails.fill_null(False)
        reason_expr = reason_expr.when(cond).then(pl.lit(rule.reason, pl.Utf8))
        detail = rule.detail if rule.detail is not None else pl.lit(None, pl.Utf8)
        detail_expr = detail_expr.when(cond).then(detail.cast(pl.Utf8))
    out = frame.select(
        reason_expr.otherwise(pl.lit(None, pl.Utf8)).alias("reason"),
        detail_expr.otherwise(pl.lit(None, pl.Utf8)).alias("detail"),
    )
    return out["reason"], out["detail"]


@dataclass(kw_only=True)
class Step:
    """Base class of every step. Subclasses are keyword-only dataclasses of their options."""

    name: ClassVar[str] = ""
    scope: ClassVar[str] = "shard"
    #: One-line summary shown by ``dataforge steps`` and in the YAML reference.
    summary: ClassVar[str] = ""

    def output_columns(self) -> dict[str, pa.DataType]:
        """Columns this step adds to the output schema, in order (declared, never inferred)."""
        return {}

    def reference_inputs(self) -> list[Any]:
        """Files the step reads besides the run's input (e.g. ``against`` of the dedup steps), as
        ``dataforge.io.inputs.InputFile``: the runner checks them before any work starts (a
        missing path is an error naming it) and puts their size and modification time in the run
        key, so a rerun after a reference file changed is not "up to date"."""
        return []

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        """Process one batch. Shard steps must override this."""
        msg = f"step {self.name!r} does not implement apply()"
        raise NotImplementedError(msg)

    def options(self) -> dict[str, Any]:
        """The step's options as plain values (goes into the config fingerprint)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass
class GlobalContext:
    """What a global step may know about the run. Paths point into the run's work folder.

    Attributes:
        work: the step's own folder (``OUT/_work/<run>/g<stage>``), for side files and results.
        stage_dir: folder of the stage whose live rows the keys describe.
        n_tasks: number of tasks (input files).
        task: the current task (in ``keys`` and ``annotate``), else -1.
        ord_offset: in ``keys`` and ``annotate``, the position of the batch's first row among the
            task's live rows (at the keys stage).
        task_rows: in phases and ``annotate``, live rows per task when the keys were taken.
        workers: how many tasks the executor runs at once (a hint for splitting phases into
            partitions; a step's output must not depend on it).
    """

    work: str
    stage_dir: str
    n_tasks: int
    partitions: int = 1
    task: int = -1
    ord_offset: int = 0
    task_rows: tuple[int, ...] = ()
    workers: int = 1

    def key_file(self, task: int, part: int = 0) -> str:
        """The key file of task ``task`` for key partition ``part``."""
        return f"{self.stage_dir}/t{task:05d}.keys.p{part:03d}.arrow"

    def key_files(self, part: int = 0) -> list[str]:
        """The key files of every task for key partition ``part``, in task order."""
        return [self.key_file(t, part) for t in range(self.n_tasks)]

    def live_file(self, task: int) -> str:
        """The Arrow IPC file holding task ``task``'s live rows (the rows the keys describe)."""
        return f"{self.stage_dir}/t{task:05d}.live.arrow"

    def path(self, name: str) -> str:
        """A file in the step's own folder."""
        return f"{self.work}/{name}"

    def decisions_path(self) -> str:
        """Where the last phase must write the decision table (see :meth:`write_decisions`)."""
        return self.path("decisions.arrow")

    def write_decisions(self, frames: Iterable[pl.DataFrame]) -> int:
        """Write the decision table from ``frames`` (pieces of it, in order), atomically.

        The rows must be ascending by ``(_task, _ord)`` across all pieces: the file is marked as
        sorted, so that each task of the next stage reads only its own rows (a binary search over
        a memory-mapped file) instead of filtering the whole table. Returns the number of rows.
        """
        rows = 0
        last = -1
        writer = schema = None
        with atomic_path(self.decisions_path(), durable=False) as tmp:
            try:
                for frame in frames:
                    if frame.height == 0 and writer is not None:
                        continue
                    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
                    key = (
                        frame["_task"].cast(pl.Int64) * _ORD_SPAN + frame["_ord"].cast(pl.Int64)
                    ).to_numpy()
                    if key.size and (key[0] <= last or (np.diff(key) <= 0).any()):
                        msg = "decision rows must be unique and ascending by (_task, _ord)"
                        raise ValueError(msg)
                    last = int(key[-1]) if key.size else last
                    if writer is None:
                        schema = table.schema.with_metadata(SORTED_MARK)
                        writer = pa.ipc.new_file(str(tmp), schema)
                    writer.write_table(table.cast(schema))
                    rows += frame.height
            finally:
                if writer is not None:
                    writer.close()
            if writer is None:
                msg = "write_decisions needs at least one frame (an empty one gives the schema)"
                raise ValueError(msg)
        return rows

    def task_offset(self, task: int) -> int:
        """Global position of task ``task``'s first row (rows of earlier tasks)."""
        return int(sum(self.task_rows[:task]))


@dataclass(kw_only=True)
class GlobalStep(Step):
    """A step that needs to see every shard before it can decide (a barrier).

    1. ``keys(frame, ctx)`` on every batch of every task (in parallel) returns a small table of
       what the decision needs (e.g. a content hash). The runner adds ``_task`` and ``_ord`` (the
       row's position among the task's live rows) and writes it to the work folder, split by the
       ``_part`` column into ``partitions`` files per task. ``keys`` may also write side files under
       ``ctx.work`` (e.g. signatures), named by task and ``ctx.ord_offset``.
    2. ``phases(ctx)`` lists ``(method name, items)``; the runner calls ``method(ctx, item)`` for
       every item, phase after phase, as resumable executor tasks. The last phase writes the
       decision table to ``ctx.decisions_path()``: ``_task``, ``_ord``, ``reason``, ``detail`` and
       the step's declared columns, for every row it has something to say about, with
       :meth:`GlobalContext.write_decisions` (ascending by ``_task``, ``_ord``).
    3. ``annotate(frame, decisions, ctx)`` on every batch again applies the decisions (``_ord``
       relative to the batch).
    """

    scope: ClassVar[str] = "global"
    #: ``annotate`` only sets the step's declared ``output_columns`` and drop reasons, and leaves
    #: every other column as it was. When such a step ends the pipeline, its stage writes just
    #: those columns and the kept rows' positions (a thin live file, see
    #: :func:`dataforge.stages.read_live`) instead of a copy of every row.
    annotate_adds_only: ClassVar[bool] = False

    @property
    def partitions(self) -> int:
        """How many partitions the key table is split into (the ``_part`` column)."""
        return 1

    def keys_schema(self) -> dict[str, pa.DataType]:
        """Declared columns of the key table (besides ``_task``, ``_ord`` and ``_part``)."""
        raise NotImplementedError

    def keys(self, frame: pl.DataFrame, ctx: GlobalContext) -> pl.DataFrame:
        raise NotImplementedError

    def phases(self, ctx: GlobalContext) -> list[tuple[str, int]]:
        """``[(method name, number of items), ...]`` run after all keys are written."""
        raise NotImplementedError

    def annotate(self, frame: pl.DataFrame, decisions: pl.DataFrame | None, ctx: GlobalContext) -> StepOutput:
        raise NotImplementedError

    def report_tables(self) -> list[str]:
        """Names of report tables the phases write as ``ctx.path(name + '.arrow')``; each is
        published as ``OUT/<name>/part-00000.arrow``."""
        return []


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def check_range(step: str, option: str, value: float | None, lo: float | None, hi: float | None) -> None:
    """Raise ConfigError unless ``lo <= value <= hi`` (None bounds are open; None value is allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{step}: option {option!r} must be a number, got {value!r}"
        raise ConfigError(msg)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        msg = f"{step}: option {option!r} = {value!r} is outside [{lo_s}, {hi_s}]"
        raise ConfigError(msg)
