"""Exact deduplication on normalized content, across all shards (a global step).

Content is normalized (by default: lowercased, whitespace collapsed, trimmed), hashed with
128-bit xxh3, and rows with equal hashes form a group. The kept row of each group is the first by
input order (file order, then row order) unless ``keep: last``. Every row gets ``content_hash``
and ``exact_dups`` (the group size); dropped rows get ``dup_of`` (the kept row's id) and the
reason ``exact_duplicate``.

With ``against`` (files, folders or globs of a reference set, e.g. an earlier release), rows whose
normalized content equals a reference document are dropped too, with reason
``exact_duplicate_of_reference`` and ``dup_of`` the reference id; the reference is not modified.
This is what incremental runs use to keep a release free of duplicates across increments.

Phases (see :class:`dataforge.step.GlobalStep`): the key table (hash, id, position) is split by
hash into ``hash_partitions`` partitions (``reference``, one task per reference file, splits the
reference set's hashes the same way); ``decide`` runs once per partition (in parallel; equal
contents always share a partition, so each group is decided whole), holding only that
partition's keys; ``finalize`` merges the partitions' decisions, which are sorted by task and row,
a few tasks at a time into the run's decision table. No process holds every key of the corpus.

Example (YAML)::

    - dedup.exact: {normalize: lower, keep: first}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
import xxhash

from dataforge.dedup.against import checked_reference_files, reference_files, reference_spec
from dataforge.errors import ConfigError, choices
from dataforge.io.shards import write_ipc_atomic, write_json_atomic
from dataforge.registry import register
from dataforge.step import GlobalContext, GlobalStep, StepOutput, check_range

NORMALIZE = ("none", "whitespace", "lower")
KEEP = ("first", "last")
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 256  # finalize holds one open file per partition (a soft limit of 1,024 is common)
# finalize merges the partitions' decisions this many rows (at least) at a time
MERGE_ROWS = 200_000


# Runs of whitespace become one space. Written as "two or more whitespace characters, or one that
# is not a plain space" so that the many single spaces between words are not matched (and rewritten
# to themselves): the same result as r"\s+" (tested), ~6x faster on prose.
_WHITESPACE_RUN = r"\s\s+|[\s&&[^ ]]"


def _normalized(text: pl.Expr, mode: str) -> pl.Expr:
    if mode == "none":
        return text
    out = text.str.replace_all(_WHITESPACE_RUN, " ").str.strip_chars()
    return out.str.to_lowercase() if mode == "lower" else out


def content_hashes(frame: pl.DataFrame, mode: str) -> pl.DataFrame:
    """(hi, lo) uint64 halves of xxh3-128 of the normalized text of each row."""
    norm = frame.select(_normalized(pl.col("text"), mode)).to_series()
    digests = [xxhash.xxh3_128_intdigest(s.encode("utf-8")) for s in norm.to_list()]
    mask = (1 << 64) - 1
    return pl.DataFrame(
        {
            "hi": [d >> 64 for d in digests],
            "lo": [d & mask for d in digests],
            "content_hash": [f"{d:032x}" for d in digests],
        },
        schema={"hi": pl.UInt64, "lo": pl.UInt64, "content_hash": pl.Utf8},
    )


@register("dedup.exact")
@dataclass(kw_only=True)
class ExactDedup(GlobalStep):
    """Drop exact duplicates (after normalization) across all input shards.

    Args:
        normalize: ``lower`` (lowercase + collapse whitespace, default), ``whitespace`` or ``none``.
        keep: ``first`` (default) or ``last`` row of each group by input order.
        against: files, folders or globs of a reference set; rows equal to a reference document
            are dropped (``exact_duplicate_of_reference``).
        against_text_field, against_id_field: fields of the reference files.
        hash_partitions: partitions of the key table (1-256, default 16): ``decide`` holds one
            partition's keys at a time. The output does not depend on it. (``finalize`` keeps
            every partition's file open while it merges them, hence the bound.)
    """

    summary: ClassVar[str] = "Drop exact duplicates of normalized content across all shards."
    annotate_adds_only: ClassVar[bool] = True
    path_options: ClassVar[tuple[str, ...]] = ("against",)

    normalize: str = "lower"
    keep: str = "first"
    against: tuple[str, ...] = ()
    against_text_field: str = "text"
    against_id_field: str = "id"
    hash_partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE:
            msg = f"dedup.exact: unknown normalize {self.normalize!r}; valid: {choices(NORMALIZE)}"
            raise ConfigError(msg)
        if self.keep not in KEEP:
            msg = f"dedup.exact: unknown keep {self.keep!r}; valid: {choices(KEEP)}"
            raise ConfigError(msg)
        if isinstance(self.against, str):
            self.against = (self.against,)
        self.against = tuple(self.against)
        if isinstance(self.hash_partitions, bool) or not isinstance(self.hash_partitions, int):
            msg = f"dedup.exact: option 'hash_partitions' must be an integer, got {self.hash_partitions!r}"
            raise ConfigError(msg)
        check_range(self.name, "hash_partitions", self.hash_partitions, 1, MAX_PARTITIONS)

    @property
    def partitions(self) -> int:
        return self.hash_partitions

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"content_hash": pa.large_string(), "exact_dups": pa.int32(), "dup_of": pa.large_string()}

    def keys_schema(self) -> dict[str, pa.DataType]:
        return {"hi": pa.uint64(), "lo": pa.uint64(), "id": pa.large_string()}

    def keys(self, frame: pl.DataFrame, ctx: GlobalContext) -> pl.DataFrame:
        keys = content_hashes(frame, self.normalize).select("hi", "lo").with_columns(frame["id"])
        return keys.with_columns(_partition(pl.col("hi"), self.partitions))

    def phases(self, ctx: GlobalContext) -> list[tuple[str, int]]:
        ref = [("reference", len(self._reference_files()[1]))] if self.against else []
        return [*ref, ("decide", self.partitions), ("finalize", 1)]

    def _reference_files(self) -> tuple[Any, list[Any]]:
        return reference_spec(self), reference_files(self)

    def reference_inputs(self) -> list[Any]:
        return checked_reference_files(self)

    def reference(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Hash reference file ``item`` and write its (hi, lo, ref_id) rows split by partition
        (``ref/fNNNNN-pNNN.arrow``), in file order: ``decide`` reads only its partition's."""
        from dataforge.io.readers import check_file, read_batches

        spec, files = self._reference_files()
        f = files[item]
        check_file(f, spec)
        parts = [
            content_hashes(batch.docs, self.normalize)
            .select("hi", "lo")
            .with_columns(batch.docs["id"].alias("ref_id"))
            for batch in read_batches(f, spec)
            if batch.docs.height
        ]
        schema = {"hi": pl.UInt64, "lo": pl.UInt64, "ref_id": pl.Utf8}
        frame = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
        part = frame.select(_partition(pl.col("hi"), self.partitions)).to_series()
        Path(ctx.path("ref")).mkdir(parents=True, exist_ok=True)
        for p in range(self.partitions):
            _write_ipc(ctx.path(f"ref/f{item:05d}-p{p:03d}.arrow"), frame.filter(part == p))
        return {"documents": frame.height}

    def _reference_hashes(self, ctx: GlobalContext, part: int) -> pl.LazyFrame:
        """(hi, lo, ref_id) of the reference documents of partition ``part`` (the first id per
        distinct content, in reference file order)."""
        _, files = self._reference_files()
        paths = [ctx.path(f"ref/f{i:05d}-p{part:03d}.arrow") for i in range(len(files))]
        return pl.scan_ipc(paths).unique(["hi", "lo"], keep="first", maintain_order=True)

    def decide(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Decide every group of equal hashes in partition ``item`` (and its reference hashes);
        write the partition's decisions, sorted by task and row, to ``decided-pNNN.arrow``."""
        keys = pl.scan_ipc(ctx.key_files(item))
        decisions = self._decisions(keys)
        n_ref = 0
        if self.against:
            decisions, n_ref = self._with_reference(keys, decisions, ctx, item)
        _write_ipc(ctx.path(f"decided-p{item:03d}.arrow"), decisions)
        out: dict[str, Any] = {
            "rows": decisions.height,
            "dropped": int(decisions["reason"].is_not_null().sum()),
        }
        if self.against:
            out["reference_duplicates"] = n_ref
        write_json_atomic(ctx.path(f"decided-p{item:03d}.json"), out, durable=False)
        return out

    def finalize(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Merge the partitions' sorted decisions into the run's decision table."""
        files = [ctx.path(f"decided-p{p:03d}.arrow") for p in range(self.partitions)]
        rows = ctx.write_decisions(_merge_sorted(files))
        parts = [json.loads(Path(f"{f[: -len('.arrow')]}.json").read_text()) for f in files]
        out: dict[str, Any] = {"rows": rows, "dropped": sum(p["dropped"] for p in parts)}
        if self.against:
            out["reference_duplicates"] = sum(p["reference_duplicates"] for p in parts)
        return out

    def _with_reference(
        self, keys: pl.LazyFrame, decisions: pl.DataFrame, ctx: GlobalContext, part: int
    ) -> tuple[pl.DataFrame, int]:
        """Overlay drops of rows equal to a reference document (of partition ``part``) onto the
        in-run decisions."""
        if not keys.collect_schema().names():
            return decisions, 0
        ref = self._reference_hashes(ctx, part)
        hits = (
            keys.join(ref, on=["hi", "lo"], how="inner")
            .with_columns(pl.len().over("hi", "lo").cast(pl.Int32).alias("exact_dups"))
            .select(
                "_task",
                "_ord",
                pl.lit("exact_duplicate_of_reference").alias("reason"),
                pl.format("same normalized content as reference document {}", "ref_id").alias("detail"),
                "exact_dups",
                pl.col("ref_id").alias("dup_of"),
            )
            .collect()
        )
        if not hits.height:
            return decisions, 0
        rest = decisions.join(hits.select("_task", "_ord"), on=["_task", "_ord"], how="anti")
        merged = pl.concat([rest, hits.cast(rest.schema)], how="vertical").sort("_task", "_ord")
        return merged, hits.height

    def _decisions(self, keys: pl.LazyFrame) -> pl.DataFrame:
        if not keys.collect_schema().names():
            return pl.DataFrame(
                schema={
                    "_task": pl.Int32,
                    "_ord": pl.Int64,
                    "reason": pl.Utf8,
                    "detail": pl.Utf8,
                    "exact_dups": pl.Int32,
                    "dup_of": pl.Utf8,
                }
            )
        order = [pl.col("_task"), pl.col("_ord")]
        descending = self.keep == "last"
        dup = (
            keys.with_columns(pl.len().over("hi", "lo").cast(pl.Int32).alias("exact_dups"))
            .filter(pl.col("exact_dups") > 1)
            .sort(order, descending=descending)
            .with_columns(
                pl.col("id").first().over("hi", "lo").alias("_rep"),
                (pl.int_range(pl.len()).over("hi", "lo") == 0).alias("_is_rep"),
            )
        )
        return (
            dup.select(
                "_task",
                "_ord",
                pl.when(pl.col("_is_rep")).then(None).otherwise(pl.lit("exact_duplicate")).alias("reason"),
                pl.when(pl.col("_is_rep"))
                .then(None)
                .otherwise(pl.format("same normalized content as {} ({} copies)", "_rep", "exact_dups"))
                .alias("detail"),
                "exact_dups",
                pl.when(pl.col("_is_rep")).then(None).otherwise(pl.col("_rep")).alias("dup_of"),
            )
            .sort("_task", "_ord")
            .collect(engine="streaming")
        )

    def annotate(self, frame: pl.DataFrame, decisions: pl.DataFrame | None, ctx: GlobalContext) -> StepOutput:
        h = content_hashes(frame, self.normalize)
        base = frame.with_columns(
            h["content_hash"], pl.lit(1, pl.Int32).alias("exact_dups"), pl.lit(None, pl.Utf8).alias("dup_of")
        )
        if decisions is None or decisions.height == 0:
            return StepOutput(base)
        pos = pl.DataFrame({"_ord": pl.int_range(0, frame.height, eager=True, dtype=pl.Int64)})
        joined = pos.join(decisions.drop("_task"), on="_ord", how="left", maintain_order="left")
        out = base.with_columns(
            joined["exact_dups"].fill_null(1).cast(pl.Int32).alias("exact_dups"),
            joined["dup_of"].alias("dup_of"),
        )
        return StepOutput(out, reason=joined["reason"], detail=joined["detail"])


def _write_ipc(path: str, frame: pl.DataFrame) -> None:
    """A work file in record batches of at most 65,536 rows: the merge holds one batch per file."""
    write_ipc_atomic(path, frame, record_batch_size=65_536)


def _partition(hi: pl.Expr, partitions: int) -> pl.Expr:
    """The key partition of a content hash (its high half modulo the partition count)."""
    return (hi % partitions).cast(pl.Int16).alias("_part")


def _merge_sorted(files: list[str]) -> Iterator[pl.DataFrame]:
    """The rows of ``files`` (each sorted by ``_task``, ``_ord``; no row in two files) merged in
    that order, about ``MERGE_ROWS`` at a time: record batches are read in order from every file,
    and everything up to the smallest last ``_task`` read from a file that still has batches is
    sorted and given out. Memory holds about one batch per file plus one piece."""
    readers = []
    sources = []
    for f in files:
        src = pa.memory_map(f)
        sources.append(src)
        readers.append(pa.ipc.open_file(src))
    try:
        schema = readers[0].schema if readers else None
        next_batch = [0] * len(readers)
        held: list[pa.RecordBatch] = []
        n_held = 0
        last_task = [-1] * len(readers)  # largest _task read so far from each file
        last_bound: int | None = -1
        yielded = False
        while True:
            open_files = [i for i, r in enumerate(readers) if next_batch[i] < r.num_record_batches]
            if not open_files:
                break
            # read from the file that is furthest behind, until MERGE_ROWS rows are held
            i = min(open_files, key=lambda k: (last_task[k], k))
            batch = readers[i].get_batch(next_batch[i]).cast(schema)
            next_batch[i] += 1
            if batch.num_rows:
                held.append(batch)
                n_held += batch.num_rows
                last_task[i] = int(batch.column("_task")[-1].as_py())
            if n_held < MERGE_ROWS:
                continue
            # every task below the smallest last task of a file with batches left is complete
            still = [k for k in range(len(readers)) if next_batch[k] < readers[k].num_record_batches]
            bound = min((last_task[k] for k in still), default=None)
            if bound is not None and bound == last_bound:
                continue  # nothing new is complete: read on
            last_bound = bound
            frame, held = _split_below(held, schema, bound)
            n_held = sum(b.num_rows for b in held)
            if frame.height:
                yielded = True
                yield frame
        if held or not yielded:
            table = pa.Table.from_batches(held, schema=schema) if schema is not None else pa.table({})
            yield pl.DataFrame(pl.from_arrow(table)).sort("_task", "_ord")
    finally:
        for src in sources:
            src.close()


def _split_below(
    held: list[pa.RecordBatch], schema: pa.Schema, bound: int | None
) -> tuple[pl.DataFrame, list[pa.RecordBatch]]:
    """Rows of ``held`` with ``_task < bound`` (all when ``bound`` is None), sorted, and the rest."""
    frame = pl.DataFrame(pl.from_arrow(pa.Table.from_batches(held, schema=schema)))
    if bound is None:
        return frame.sort("_task", "_ord"), []
    done = frame.filter(pl.col("_task") < bound).sort("_task", "_ord")
    rest = frame.filter(pl.col("_task") >= bound)
    return done, rest.to_arrow(compat_level=pl.CompatLevel.oldest()).to_batches()
