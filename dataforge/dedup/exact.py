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

Example (YAML)::

    - dedup.exact: {normalize: lower, keep: first}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa
import xxhash

from dataforge.errors import ConfigError, choices
from dataforge.registry import register
from dataforge.step import GlobalContext, GlobalStep, StepOutput

NORMALIZE = ("none", "whitespace", "lower")
KEEP = ("first", "last")


def _normalized(text: pl.Expr, mode: str) -> pl.Expr:
    if mode == "none":
        return text
    out = text.str.replace_all(r"\s+", " ").str.strip_chars()
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
    """

    summary: ClassVar[str] = "Drop exact duplicates of normalized content across all shards."
    path_options: ClassVar[tuple[str, ...]] = ("against",)

    normalize: str = "lower"
    keep: str = "first"
    against: tuple[str, ...] = ()
    against_text_field: str = "text"
    against_id_field: str = "id"

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

    def output_columns(self) -> dict[str, pa.DataType]:
        return {"content_hash": pa.large_string(), "exact_dups": pa.int32(), "dup_of": pa.large_string()}

    def keys_schema(self) -> dict[str, pa.DataType]:
        return {"hi": pa.uint64(), "lo": pa.uint64(), "id": pa.large_string()}

    def keys(self, frame: pl.DataFrame, ctx: GlobalContext) -> pl.DataFrame:
        return content_hashes(frame, self.normalize).select("hi", "lo").with_columns(frame["id"])

    def phases(self, ctx: GlobalContext) -> list[tuple[str, int]]:
        return [("decide", 1)]

    def _reference_hashes(self) -> pl.DataFrame:
        """(hi, lo, ref_id) of every reference document (first id per distinct content)."""
        from dataforge.io.inputs import InputSpec, discover
        from dataforge.io.readers import check_file, read_batches

        spec = InputSpec(
            paths=self.against, text_field=self.against_text_field, id_field=self.against_id_field
        )
        parts = []
        for f in discover(spec):
            check_file(f, spec)
            for batch in read_batches(f, spec):
                if batch.docs.height:
                    parts.append(
                        content_hashes(batch.docs, self.normalize)
                        .select("hi", "lo")
                        .with_columns(batch.docs["id"].alias("ref_id"))
                    )
        schema = {"hi": pl.UInt64, "lo": pl.UInt64, "ref_id": pl.Utf8}
        if not parts:
            return pl.DataFrame(schema=schema)
        return pl.concat(parts).unique(["hi", "lo"], keep="first", maintain_order=True)

    def decide(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Find every group of equal hashes across all tasks (and the reference); write the decisions."""
        decisions = self._decisions(pl.scan_ipc(ctx.key_files()))
        n_ref = 0
        if self.against:
            decisions, n_ref = self._with_reference(pl.scan_ipc(ctx.key_files()), decisions)
        ctx.write_decisions([decisions])
        out: dict[str, Any] = {
            "rows": decisions.height,
            "dropped": int(decisions["reason"].is_not_null().sum()),
        }
        if self.against:
            out["reference_duplicates"] = n_ref
        return out

    def _with_reference(self, keys: pl.LazyFrame, decisions: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Overlay drops of rows equal to a reference document onto the in-run decisions."""
        if not keys.collect_schema().names():
            return decisions, 0
        ref = self._reference_hashes()
        hits = (
            keys.join(ref.lazy(), on=["hi", "lo"], how="inner")
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
