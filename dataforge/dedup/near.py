"""``dedup.minhash``: near-duplicate removal with MinHash LSH, verification and clusters.

Phases (see :class:`dataforge.step.GlobalStep`):

1. ``keys`` (every batch of every task): signatures (:mod:`dataforge.dedup.minhash`) and band
   hashes; the band table is split into partitions by band and written beside the live rows;
   signatures and per-document attributes go to side files in the work folder.
2. ``reference`` (one task per file of ``against``): the same for the reference set.
3. ``candidates`` (one task per band partition): documents that share a band bucket become
   candidate pairs. Only one partition's bands are in memory at a time. Each partition's pairs are
   written grouped by *verify partition* (a hash of the pair's first document).
4. ``verify_pairs`` (one task per verify partition: one per ``VERIFY_DOCS`` documents, rounded
   up to a multiple of the workers when partitions stay >= ``MIN_VERIFY_DOCS``, at most
   ``MAX_VERIFY_PARTS``): the unique candidate pairs of the partition are checked (``exact``
   Jaccard of the shingle sets, or the ``estimate`` from signatures, or ``none``). Only this
   partition's documents' signatures and shingle sets are in memory, so verification runs in
   parallel and its memory does not grow with the corpus.
5. ``finalize`` (one task): drop documents near-duplicating the reference set, cluster the rest
   with connected components over the verified pairs, and choose the kept document of each
   cluster. It holds the verified pairs and their documents' numeric attributes only, decides
   with integers, and writes the decisions ``DECISION_CHUNK`` rows at a time, looking up just
   those rows' keeper ids (sorted by task and row, so each next-stage task reads only its own).

Every output row gets ``cluster_id`` (the global position of its cluster's first document by input
order; its own position when alone), ``cluster_size``, and for removed rows ``dup_of`` (the kept or
reference document's id) and ``similarity`` (Jaccard with that document).

Example (YAML)::

    - dedup.minhash: {threshold: 0.8, num_perm: 128, shingle: "word:5", keep: longest}
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from dataforge.dedup import clusters as cl
from dataforge.dedup.against import checked_reference_files, reference_files, reference_spec
from dataforge.dedup.lsh import band_hashes, binom_ppf, bucket_pairs, optimal_params, s_curve
from dataforge.dedup.minhash import HASHES, MinHashParams, shingle_hashes, signatures
from dataforge.errors import ConfigError, OutputError, choices
from dataforge.io.shards import arrow_indices, atomic_path, by_piece, take_sorted, write_json_atomic
from dataforge.io.shards import write_ipc_atomic as _write_ipc
from dataforge.io.views import string_views
from dataforge.registry import register
from dataforge.step import GlobalContext, GlobalStep, StepOutput, check_range

log = logging.getLogger(__name__)

VERIFY = ("none", "estimate", "exact")
# Date formats tried in this order for keep=oldest/newest when date_format is not given (per value:
# the first format that parses it wins, so the result never depends on batching).
DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
    "%d-%b-%Y %H:%M:%S%.f",
    "%d-%b-%Y %H:%M:%S",
    "%d-%b-%Y",
    "%d %b %Y",
    "%b %d, %Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
)
ALL_PAIRS_MAX = 12  # buckets up to this size give every pair; larger ones a star
# Verify partitions: one per VERIFY_DOCS documents, at most MAX_VERIFY_PARTS. Each reads the
# signatures and texts it needs from every task, so fewer, larger partitions cost less; these bound
# the documents one partition holds (~25% of them are candidates in a corpus with ~10% duplicates).
# With several workers the count is rounded up to a multiple of the worker count, as long as each
# partition still covers MIN_VERIFY_DOCS documents (below that, one task is cheaper than several).
VERIFY_DOCS = 250_000
MIN_VERIFY_DOCS = 20_000
MAX_VERIFY_PARTS = 256
ATTR_TYPES = {"id": pl.Utf8, "source": pl.Utf8, "length": pl.Int64, "value": pl.Float64}
# Decision rows are written (and their ids and sources looked up) this many at a time.
DECISION_CHUNK = 200_000
# Decision codes while deciding (strings are added when written, see _resolve)
_KEPT, _NEAR, _REF = 0, 1, 2
EDGE_SCHEMA = {"t1": pl.Int32, "o1": pl.Int64, "t2": pl.Int32, "o2": pl.Int64}


@register("dedup.minhash")
@dataclass(kw_only=True)
class MinHashDedup(GlobalStep):
    """Remove near-duplicate documents (MinHash LSH), keeping one per cluster.

    Args:
        threshold: Jaccard similarity of the shingle sets above which two documents are duplicates.
        num_perm: MinHash permutations.
        bands, rows: LSH banding; by default chosen from the threshold (see ``fp_weight``).
        fp_weight, fn_weight: weights of the false-positive and false-negative areas when choosing
            bands and rows; by default 0.05 / 0.95 when pairs are verified (favour recall: the
            verification removes false positives) and 0.5 / 0.5 (datasketch's) without.
        shingle: ``word:N`` (default ``word:5``) or ``char:N``.
        normalize: lowercase, strip accents, punctuation and digits before shingling.
        hash: ``xxh3`` (fast) or ``sha1`` (signatures identical to datasketch's MinHash).
        seed: permutation seed (datasketch's ``seed``).
        keep: which document of a cluster to keep: ``first`` (by input order), ``last``,
            ``longest``, ``shortest``, ``oldest``/``newest`` (by ``date_field``), ``field:NAME``
            (smallest numeric value) or ``field:-NAME`` (largest). Ties go to input order.
        date_field, date_format: metadata field (and strptime format) for oldest/newest. Without a
            format, ISO 8601 and a few common layouts (``26-FEB-1987 15:01:01.79``, ``03/15/2024``)
            are tried; dates that do not parse count as missing (never preferred).
        verify: ``exact`` (Jaccard of the shingle sets, default), ``estimate`` (from signatures)
            or ``none`` (every LSH candidate pair counts).
        against: files, folders or globs of a reference set; documents near-duplicating any
            reference document are removed (reason ``reference_duplicate``). The reference is
            only read.
        against_text_field, against_id_field: fields of the reference files.
        band_partitions: partitions of the band table (default: one per band, at most 32).
        report_clusters: publish ``clusters/`` (every member of every cluster) and
            ``cluster_pairs/`` (every verified pair with its similarity) next to the shards.
    """

    summary: ClassVar[str] = "Remove near-duplicates with MinHash LSH; cluster ids on every row."
    annotate_adds_only: ClassVar[bool] = True
    path_options: ClassVar[tuple[str, ...]] = ("against",)

    threshold: float = 0.8
    num_perm: int = 128
    bands: int | None = None
    rows: int | None = None
    fp_weight: float | None = None
    fn_weight: float | None = None
    shingle: str = "word:5"
    normalize: bool = True
    hash: str = "xxh3"
    seed: int = 1
    keep: str = "first"
    date_field: str = "date"
    date_format: str | None = None
    verify: str = "exact"
    against: tuple[str, ...] = ()
    against_text_field: str = "text"
    against_id_field: str = "id"
    band_partitions: int | None = None
    report_clusters: bool = False

    def __post_init__(self) -> None:
        check_range(self.name, "threshold", self.threshold, 0.0, 1.0)
        if not 0.0 < self.threshold < 1.0:
            msg = f"{self.name}: threshold must be strictly between 0 and 1, got {self.threshold!r}"
            raise ConfigError(msg)
        if self.verify not in VERIFY:
            msg = f"{self.name}: unknown verify {self.verify!r}; valid: {choices(VERIFY)}"
            raise ConfigError(msg)
        if self.hash not in HASHES:
            msg = f"{self.name}: unknown hash {self.hash!r}; valid: {choices(HASHES)}"
            raise ConfigError(msg)
        cl.check_keep(self.keep)
        if isinstance(self.against, str):
            self.against = (self.against,)
        self.params()  # validates num_perm, shingle, seed
        if (self.bands is None) != (self.rows is None):
            msg = f"{self.name}: give both bands and rows, or neither (got bands={self.bands}, rows={self.rows})"
            raise ConfigError(msg)
        if self.bands is not None and self.rows is not None:
            for opt in ("bands", "rows"):
                check_range(self.name, opt, getattr(self, opt), 1, self.num_perm)
            if self.bands * self.rows > self.num_perm:
                msg = (
                    f"{self.name}: bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}"
                )
                raise ConfigError(msg)
        for opt in ("fp_weight", "fn_weight"):
            check_range(self.name, opt, getattr(self, opt), 0.0, 1.0)
        if self.band_partitions is not None:
            check_range(self.name, "band_partitions", self.band_partitions, 1, 1024)

    # ------------------------------------------------------------------ configuration

    def params(self) -> MinHashParams:
        return MinHashParams(
            num_perm=self.num_perm,
            seed=self.seed,
            shingle=self.shingle,
            normalize=self.normalize,
            hash=self.hash,
        )

    def lsh(self) -> tuple[int, int]:
        """``(bands, rows)``: given, or chosen from the threshold."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        default = (0.05, 0.95) if self.verify != "none" else (0.5, 0.5)
        fp = self.fp_weight if self.fp_weight is not None else default[0]
        fn = self.fn_weight if self.fn_weight is not None else default[1]
        return optimal_params(round(self.threshold, 6), self.num_perm, fp, fn)

    @property
    def partitions(self) -> int:
        bands, _ = self.lsh()
        return min(self.band_partitions or min(bands, 32), bands)

    def output_columns(self) -> dict[str, pa.DataType]:
        return {
            "cluster_id": pa.int64(),
            "cluster_size": pa.int32(),
            "dup_of": pa.large_string(),
            "similarity": pa.float32(),
        }

    def keys_schema(self) -> dict[str, pa.DataType]:
        return {"_part": pa.int16(), "band": pa.int16(), "hash": pa.uint64()}

    def report_tables(self) -> list[str]:
        return ["clusters", "cluster_pairs"] if self.report_clusters else []

    # ------------------------------------------------------------------ keys

    def _sort_values(self, frame: pl.DataFrame) -> pl.Series:
        """The value the keep policy sorts by (float; NaN when missing)."""
        n = frame.height
        if self.keep in ("oldest", "newest"):
            raw = frame["meta"].str.json_path_match(f"$.{self.date_field}")
            formats = (self.date_format,) if self.date_format else DATE_FORMATS
            parsed = pl.select(pl.coalesce([_parse_dates(raw, f) for f in formats])).to_series()
            return parsed.dt.epoch("s").cast(pl.Float64).fill_null(float("nan")).rename("value")
        if self.keep.startswith("field:"):
            name = self.keep.removeprefix("field:").lstrip("-")
            raw = frame["meta"].str.json_path_match(f"$.{name}")
            return raw.cast(pl.Float64, strict=False).fill_null(float("nan")).rename("value")
        return pl.Series("value", np.full(n, np.nan))

    def keys(self, frame: pl.DataFrame, ctx: GlobalContext) -> pl.DataFrame:
        sig, n_sh = signatures(frame["text"], self.params())
        ords = np.arange(ctx.ord_offset, ctx.ord_offset + frame.height, dtype=np.int64)
        name = f"t{ctx.task:05d}-{ctx.ord_offset:012d}"
        _save_npy(ctx.path(f"sig/{name}.npy"), sig)
        attrs = pl.DataFrame(
            {
                "_ord": ords,
                "id": frame["id"],
                "source": frame["_source"],
                "row": frame["_row"],
                "length": frame["text"].str.len_chars().cast(pl.Int64),
                "value": self._sort_values(frame),
                "shingles": n_sh,
            }
        )
        _write_ipc(ctx.path(f"attr/{name}.arrow"), attrs)
        return _band_table(sig, n_sh, ords, self.lsh(), self.partitions)

    # ------------------------------------------------------------------ phases

    def phases(self, ctx: GlobalContext) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        if self.against:
            out.append(("reference", len(self._reference_files())))
        out += [("candidates", self.partitions), ("verify_pairs", _plan_verify(ctx)), ("finalize", 1)]
        return out

    def _reference_files(self) -> list[Any]:
        return reference_files(self)

    def reference_inputs(self) -> list[Any]:
        return checked_reference_files(self)

    def reference(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Sign reference file ``item`` and write its band table and side files."""
        from dataforge.io.readers import check_file, read_batches

        spec = reference_spec(self)
        f = self._reference_files()[item]
        check_file(f, spec)
        bands: list[pl.DataFrame] = []
        offset = rejected = 0
        for batch in read_batches(f, spec):
            rejected += batch.rejects.height
            docs = batch.docs
            if not docs.height:
                continue
            sig, n_sh = signatures(docs["text"], self.params())
            ords = np.arange(offset, offset + docs.height, dtype=np.int64)
            name = f"r{item:05d}-{offset:012d}"
            _save_npy(ctx.path(f"ref/sig/{name}.npy"), sig)
            _write_ipc(
                ctx.path(f"ref/attr/{name}.arrow"),
                pl.DataFrame(
                    {
                        "_ord": ords,
                        "id": docs["id"],
                        "source": docs["_source"],
                        "row": docs["_row"],
                        "text": docs["text"],
                    }
                ),
            )
            bands.append(
                _band_table(sig, n_sh, ords, self.lsh(), self.partitions).with_columns(
                    pl.lit(-(item + 1), pl.Int32).alias("_task")
                )
            )
            offset += docs.height
        table = (
            pl.concat(bands)
            if bands
            else pl.DataFrame(
                schema={
                    "_part": pl.Int16,
                    "band": pl.Int16,
                    "hash": pl.UInt64,
                    "_ord": pl.Int64,
                    "_task": pl.Int32,
                }
            )
        )
        for part in range(self.partitions):
            _write_ipc(
                ctx.path(f"ref/bands-r{item:05d}-p{part:03d}.arrow"), table.filter(pl.col("_part") == part)
            )
        return {"file": f.path, "documents": offset, "rejected": rejected}

    def _keep_value_coverage(self, plan: pl.DataFrame, nodes: _Nodes) -> dict[str, int]:
        """How many clustered documents had the value the keep policy sorts by; warn when some or
        all did not (the policy then falls back to input order among them, silently otherwise)."""
        members = plan.filter(pl.col("code").is_in([_KEPT, _NEAR]))["node"].to_numpy()
        values = nodes.attrs["value"].to_numpy()[members] if members.size else np.empty(0)
        missing = int(np.isnan(values).sum())
        what = f"the date field {self.date_field!r}" if self.keep in ("oldest", "newest") else "the field"
        if members.size and missing == members.size:
            log.warning(
                "keep %s: %s is missing or not a number in all %d clustered documents; "
                "each cluster keeps its first document (input order)",
                self.keep,
                what,
                members.size,
            )
        elif missing:
            log.warning(
                "keep %s: %s is missing or not a number in %d of %d clustered documents; "
                "those are kept only when no member of their cluster has it",
                self.keep,
                what,
                missing,
                members.size,
            )
        return {"clustered": int(members.size), "missing": missing}

    def candidates(self, ctx: GlobalContext, part: int) -> dict[str, Any]:
        """Candidate pairs of band partition ``part``: documents sharing a band bucket."""
        # reference files first, the last reference first (its ``_task`` is -(item + 1)), then the
        # tasks in order: the rows come in (_task, _ord) order, see _sort_buckets
        refs = sorted(glob.glob(ctx.path(f"ref/bands-r*-p{part:03d}.arrow")), reverse=True)
        files = refs + [f for f in ctx.key_files(part) if os.path.getsize(f) > 0]
        cols = ["band", "hash", "_task", "_ord"]
        if files:
            table = pl.concat([pl.read_ipc(f, columns=cols) for f in files])
        else:
            table = pl.DataFrame(
                schema={"band": pl.Int16, "hash": pl.UInt64, "_task": pl.Int32, "_ord": pl.Int64}
            )
        table = _sort_buckets(table)
        edges = _bucket_edges(table)
        offsets = _task_offsets(ctx)
        k1 = _node_keys(edges["t1"].to_numpy(), edges["o1"].to_numpy(), offsets)
        k2 = _node_keys(edges["t2"].to_numpy(), edges["o2"].to_numpy(), offsets)
        lo, hi = np.minimum(k1, k2), np.maximum(k1, k2)
        n_parts = _verify_count(ctx)
        vpart = _verify_part(lo, n_parts)
        order = np.lexsort((hi, lo, vpart))
        _save_npy(
            ctx.path(f"edges-p{part:03d}.npy"),
            np.searchsorted(vpart[order], np.arange(n_parts + 1), side="left").astype(np.int64),
        )
        _write_ipc(ctx.path(f"edges-p{part:03d}.arrow"), pl.DataFrame({"lo": lo[order], "hi": hi[order]}))
        return {"rows": table.height, "pairs": edges.height}

    def verify_pairs(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Check the candidate pairs of verify partition ``item`` and write the pairs that pass,
        with their similarity (``verified-vNNNN.arrow``) and the partition's counts (``.json``)."""
        pieces: list[np.ndarray] = []
        for p in range(self.partitions):
            bounds = np.load(ctx.path(f"edges-p{p:03d}.npy"))
            start, stop = int(bounds[item]), int(bounds[item + 1])
            if stop > start:
                part = pl.read_ipc(ctx.path(f"edges-p{p:03d}.arrow")).slice(start, stop - start)
                pieces.append(part.to_numpy().astype(np.int64, copy=False))
        pairs = _unique_pairs(np.concatenate(pieces)) if pieces else np.empty((0, 2), np.int64)
        info: dict[str, Any] = {"candidate_pairs": int(pairs.shape[0])}
        nodes = _Nodes.collect(np.unique(pairs), ctx, _task_offsets(ctx), attrs=())
        left = np.searchsorted(nodes.keys, pairs[:, 0])
        right = np.searchsorted(nodes.keys, pairs[:, 1])
        if self.verify == "exact":
            # A pair whose signatures agree on fewer permutations than a pair at the threshold would
            # with probability 1e-9 cannot reach it: skip reading those texts again.
            agree = (nodes.sig[left] == nodes.sig[right]).sum(axis=1)
            plausible = agree > binom_ppf(1e-9, self.num_perm, self.threshold)
            info["rejected_by_signature"] = int((~plausible).sum())
            left, right = left[plausible], right[plausible]
            which = np.unique(np.concatenate([left, right]))
            info["texts_hashed"] = int(which.shape[0])
            nodes.load_sets(ctx, self, which)
        sim = nodes.similarity(left, right)
        if self.verify != "none":
            ok = sim >= self.threshold
            left, right, sim = left[ok], right[ok], sim[ok]
        info["verified_pairs"] = int(left.shape[0])
        _write_ipc(
            ctx.path(f"verified-v{item:04d}.arrow"),
            pl.DataFrame({"lo": nodes.keys[left], "hi": nodes.keys[right], "sim": sim}),
        )
        write_json_atomic(ctx.path(f"verified-v{item:04d}.json"), info, durable=False)
        return info

    def finalize(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Match the reference, cluster the verified pairs, and write the decisions."""
        n_parts = _verify_count(ctx)
        counts = [json.loads(Path(ctx.path(f"verified-v{v:04d}.json")).read_text()) for v in range(n_parts)]
        verified = pl.concat(
            [pl.read_ipc(ctx.path(f"verified-v{v:04d}.arrow")) for v in range(n_parts)]
        ).sort("lo", "hi")
        bands, rows = self.lsh()
        info: dict[str, Any] = {
            "lsh": s_curve(bands, rows, self.threshold),
            "candidate_pairs": sum(c["candidate_pairs"] for c in counts),
        }
        if self.verify == "exact":
            info["rejected_by_signature"] = sum(c["rejected_by_signature"] for c in counts)
        info["verified_pairs"] = verified.height
        lo, hi = verified["lo"].to_numpy(), verified["hi"].to_numpy()
        # numeric attributes only: similarities come from the verified pairs (see pair_similarity),
        # ids and sources are read while the decisions are written
        nodes = _Nodes.collect(np.unique(np.concatenate([lo, hi])), ctx, _task_offsets(ctx), sig=False)
        nodes.known = verified
        left, right = np.searchsorted(nodes.keys, lo), np.searchsorted(nodes.keys, hi)
        plan, pairs = _decide(left, right, verified["sim"].to_numpy(), nodes, self, ctx)
        del verified, left, right, lo, hi
        nodes.known = None
        info["clusters"] = int(plan.filter(pl.col("cluster_size") > 1)["cluster_id"].n_unique())
        info["near_duplicates"] = int((plan["code"] == _NEAR).sum())
        info["reference_duplicates"] = int((plan["code"] == _REF).sum())
        if self.keep in ("oldest", "newest") or self.keep.startswith("field:"):
            info["keep_value"] = self._keep_value_coverage(plan, nodes)
        written: list[pl.DataFrame] = []

        def pieces() -> Iterator[pl.DataFrame]:
            for start in range(0, max(plan.height, 1), DECISION_CHUNK):
                piece = _resolve(plan.slice(start, DECISION_CHUNK), nodes, ctx, self)
                if self.report_clusters:
                    written.append(piece)
                yield piece

        ctx.write_decisions(pieces())
        if self.report_clusters:
            decisions = pl.concat(written) if written else pl.DataFrame()
            report_rows, pair_rows = _report(decisions, plan, pairs, nodes, ctx)
            _write_ipc(ctx.path("clusters.arrow"), report_rows)
            _write_ipc(ctx.path("cluster_pairs.arrow"), pair_rows)
        return info

    # ------------------------------------------------------------------ annotate

    def annotate(self, frame: pl.DataFrame, decisions: pl.DataFrame | None, ctx: GlobalContext) -> StepOutput:
        start = ctx.task_offset(ctx.task) + ctx.ord_offset
        n = frame.height
        base = pl.DataFrame(
            {
                "cluster_id": np.arange(start, start + n, dtype=np.int64),
                "cluster_size": np.ones(n, dtype=np.int32),
            }
        )
        out = frame.with_columns(
            base["cluster_id"],
            base["cluster_size"],
            pl.lit(None, pl.Utf8).alias("dup_of") if "dup_of" not in frame.columns else pl.col("dup_of"),
            pl.lit(None, pl.Float32).alias("similarity"),
        )
        if decisions is None or decisions.height == 0:
            return StepOutput(out)
        pos = pl.DataFrame({"_ord": pl.int_range(0, n, eager=True, dtype=pl.Int64)})
        j = pos.join(decisions.drop("_task"), on="_ord", how="left", maintain_order="left")
        out = out.with_columns(
            pl.coalesce(j["cluster_id"], out["cluster_id"]).alias("cluster_id"),
            pl.coalesce(j["cluster_size"], out["cluster_size"]).alias("cluster_size"),
            pl.coalesce(j["dup_of"], out["dup_of"]).alias("dup_of"),
            j["similarity"].cast(pl.Float32).alias("similarity"),
        )
        counters = {
            "clusters": int(j.filter(pl.col("cluster_size") > 1)["cluster_id"].n_unique()),
        }
        return StepOutput(out, reason=j["reason"], detail=j["detail"], counters=counters)


# --------------------------------------------------------------------------- helpers


def compile_kernels() -> list[str]:
    """Compile (and cache next to the code) every compiled kernel a MinHash run uses, for both hash
    modes and shingle kinds, and the JSONL reader's, and return their names.

    The kernels compile on first use, which takes ~40 s on a 2-core machine and is
    repeated by every process that starts before the cache is written. Call this once after
    installing (a container build, a cluster node's setup, before parallel tests) so that runs
    start at full speed::

        python -c "from dataforge.dedup.near import compile_kernels; compile_kernels()"
    """
    from dataforge.dedup import _kernels as K
    from dataforge.dedup import lsh
    from dataforge.io._jsonl import simple_records

    texts = pl.Series(
        ["Ünïcode and plain words, 12 of them: one two three four five six", "", "a b", "“quoted” x² Σ"]
    )
    for hash_mode in HASHES:
        for shingle in ("word:5", "char:5"):
            sig, n_sh = signatures(texts, MinHashParams(hash=hash_mode, shingle=shingle, num_perm=16))
    table = _band_table(sig, n_sh, np.arange(sig.shape[0], dtype=np.int64), (4, 4), 2)
    twice = pl.concat([table.with_columns(pl.lit(t, pl.Int32).alias("_task")) for t in (0, 1)])
    _bucket_edges(twice.sort("band", "hash"))  # every bucket has two members: pairs are made
    hv, counts = shingle_hashes(texts, MinHashParams())
    idx = np.zeros(1, dtype=np.int64)
    _jaccard_pairs(hv, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), idx, idx)
    line = np.frombuffer(b'{"id": "a", "text": "x"}\n', np.uint8)  # read-only, as the reader's
    simple_records(line, 0, line.shape[0], np.frombuffer(b"text", np.uint8), np.frombuffer(b"id", np.uint8))
    kernels = {
        "jsonl_simple_records": simple_records,
        "non_ascii_rows": K.non_ascii_rows,
        "cp_pages": K.cp_pages,
        "transcodable": K.transcodable,
        "canonical": K.canonical,
        "word_shingle_hashes": K.word_shingle_hashes,
        "char_shingle_hashes": K.char_shingle_hashes,
        "minhash_signatures": K.minhash_signatures,
        "band_hashes": lsh.band_hashes,
        "bucket_pairs": lsh.bucket_pairs,
        "jaccard_pairs": _jaccard_pairs,
    }
    missing = [name for name, fn in kernels.items() if not fn.signatures]
    if missing:  # a kernel this function should have reached
        msg = f"kernels not compiled: {missing}"
        raise RuntimeError(msg)
    return sorted(kernels)


def _parse_dates(raw: pl.Series, fmt: str) -> pl.Series:
    """Parse with one strptime format (null where it does not fit); zoned times become naive UTC."""
    parsed = raw.str.to_datetime(format=fmt, strict=False, time_unit="us")
    if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None:
        parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return parsed


def _save_npy(path: str, arr: np.ndarray) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    except (OSError, ValueError) as exc:  # numpy reports a short write as ValueError
        msg = f"cannot write work file {path}: {getattr(exc, 'strerror', None) or exc}"
        raise OutputError(msg) from None


def _band_table(
    sig: np.ndarray, n_sh: np.ndarray, ords: np.ndarray, lsh: tuple[int, int], partitions: int
) -> pl.DataFrame:
    bands, rows = lsh
    live = np.flatnonzero(n_sh > 0)  # documents without shingles never match
    bh = band_hashes(sig[live], bands, rows)
    band_ids = np.tile(np.arange(bands, dtype=np.int16), live.shape[0])
    return pl.DataFrame(
        {
            "_part": (band_ids % partitions).astype(np.int16),
            "band": band_ids,
            "hash": bh.ravel(),
            "_ord": np.repeat(ords[live], bands),
        }
    )


def _sort_buckets(table: pl.DataFrame) -> pl.DataFrame:
    """``table`` sorted by (band, hash, _task, _ord).

    Rows that already come in (_task, _ord) order (as :meth:`MinHashDedup.candidates` reads them)
    need only a stable sort by the bucket, and by the hash alone when the partition holds one band:
    a third faster than the four-key sort, with the same result. Other input is sorted in full.
    """
    if table.height < 2:
        return table
    task, ord_ = table["_task"].to_numpy(), table["_ord"].to_numpy()
    dt, do = np.diff(task), np.diff(ord_)
    if not bool(np.all((dt > 0) | ((dt == 0) & (do >= 0)))):
        return table.sort(["band", "hash", "_task", "_ord"])
    band = table["band"]
    by = "hash" if band.min() == band.max() else ["band", "hash"]
    return table.sort(by, maintain_order=True)


def _bucket_edges(table: pl.DataFrame) -> pl.DataFrame:
    """Pairs of members of every (band, hash) bucket of a sorted band table."""
    if table.height < 2:
        return pl.DataFrame(schema=EDGE_SCHEMA)
    band = table["band"].to_numpy()
    h = table["hash"].to_numpy()
    new = np.r_[True, (band[1:] != band[:-1]) | (h[1:] != h[:-1])]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, table.height])
    multi = sizes > 1
    left, right = bucket_pairs(starts[multi], sizes[multi], ALL_PAIRS_MAX)
    t = table["_task"].to_numpy()
    o = table["_ord"].to_numpy()
    edges = pl.DataFrame({"t1": t[left], "o1": o[left], "t2": t[right], "o2": o[right]}, schema=EDGE_SCHEMA)
    # reference-reference pairs are of no interest; same-document pairs cannot occur within a band
    return edges.filter(~((pl.col("t1") < 0) & (pl.col("t2") < 0))).unique()


def verify_parts(ctx: GlobalContext) -> int:
    """Number of verify partitions: one per ``VERIFY_DOCS`` documents, rounded up to a multiple of
    ``ctx.workers`` while each partition keeps at least ``MIN_VERIFY_DOCS`` documents, at most
    ``MAX_VERIFY_PARTS``. The output does not depend on it (each pair is verified once, wherever
    it lands)."""
    docs = int(sum(ctx.task_rows))
    parts = -(-docs // VERIFY_DOCS)
    workers = max(1, ctx.workers)
    rounded = min(-(-parts // workers) * workers, docs // MIN_VERIFY_DOCS)
    return max(1, min(max(parts, rounded), MAX_VERIFY_PARTS))


def _plan_verify(ctx: GlobalContext) -> int:
    """Fix the number of verify partitions for this run (in the driver, before the phases) in
    ``verify_parts.json``, which every phase reads: all processes agree, and a resumed run keeps
    the count its finished phases used."""
    path = Path(ctx.path("verify_parts.json"))
    if not path.exists():
        write_json_atomic(path, {"parts": verify_parts(ctx)}, durable=False)
    return _verify_count(ctx)


def _verify_count(ctx: GlobalContext) -> int:
    return int(json.loads(Path(ctx.path("verify_parts.json")).read_text())["parts"])


def _verify_part(lo: np.ndarray, n_parts: int) -> np.ndarray:
    """Verify partition of pairs by their first document's key (a multiplicative hash, so that
    neighbouring documents spread over partitions)."""
    mixed = lo.astype(np.int64, copy=False).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(32)) % np.uint64(n_parts)).astype(np.int64)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """The distinct rows of an (n, 2) int64 array, sorted (a lexsort: faster than
    ``np.unique(axis=0)``)."""
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    new = np.r_[True, (pairs[1:, 0] != pairs[:-1, 0]) | (pairs[1:, 1] != pairs[:-1, 1])]
    return pairs[new]


def _task_offsets(ctx: GlobalContext) -> np.ndarray:
    """Global position of every task's first row, and the total."""
    return np.concatenate([[0], np.cumsum(ctx.task_rows)]).astype(np.int64)


_REF_SHIFT = 40  # reference keys pack (file, row) as -(file << 40 | row) - 1


def _node_keys(tasks: np.ndarray, ords: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One int64 key per document: its global position (input order) for the corpus, a negative
    number for reference documents."""
    ref = tasks < 0
    keys = np.empty(tasks.shape[0], dtype=np.int64)
    keys[~ref] = offsets[tasks[~ref]] + ords[~ref]
    keys[ref] = -(((-tasks[ref].astype(np.int64) - 1) << _REF_SHIFT) | ords[ref]) - 1
    return keys


def _split_keys(keys: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_node_keys`: (task, ord) per key."""
    tasks = np.empty(keys.shape[0], dtype=np.int64)
    ords = np.empty(keys.shape[0], dtype=np.int64)
    ref = keys < 0
    v = -keys[ref] - 1
    tasks[ref] = -(v >> _REF_SHIFT) - 1
    ords[ref] = v & ((1 << _REF_SHIFT) - 1)
    t = np.searchsorted(offsets, keys[~ref], side="right") - 1
    tasks[~ref] = t
    ords[~ref] = keys[~ref] - offsets[t]
    return tasks, ords


_SET_CHUNK = 5_000  # documents whose texts are re-read and hashed at once (exact verification)


@dataclass
class _Nodes:
    """The documents that appear in candidate pairs, in key order, with what deciding needs."""

    keys: np.ndarray  # sorted node keys (references first: negative)
    tasks: np.ndarray
    ords: np.ndarray
    sig: np.ndarray
    attrs: pl.DataFrame  # id, source, row, length, value (aligned with keys)
    sets: tuple[np.ndarray, np.ndarray] | None = None  # shingle hashes and offsets (exact mode) ...
    set_index: np.ndarray | None = None  # ... of node k at position set_index[k]
    known: pl.DataFrame | None = None  # verified pairs: lo, hi (keys), sim

    @classmethod
    def collect(
        cls,
        keys: np.ndarray,
        ctx: GlobalContext,
        offsets: np.ndarray,
        *,
        sig: bool = True,
        attrs: tuple[str, ...] = ("length", "value"),
    ) -> _Nodes:
        """The signatures (with ``sig``) and the attribute columns ``attrs`` of the documents
        ``keys``. Each side-file folder is listed once, whatever the number of tasks. Only the
        numeric attributes are read by default: strings (ids, sources) are looked up when written
        (:func:`_resolve`), so that the decisions in memory hold no strings."""
        tasks, ords = _split_keys(keys, offsets)
        n = keys.shape[0]
        sigs = np.empty((n, 0), dtype=np.uint32) if not sig else None
        frames: list[pl.DataFrame] = []
        listings: dict[str, dict[str, tuple[list[str], np.ndarray]]] = {}

        def files_of(folder: str, prefix: str, ext: str) -> tuple[list[str], np.ndarray]:
            if folder not in listings:
                listings[folder] = _listing(ctx.path(folder), ext)
            return listings[folder].get(prefix, ([], np.empty(0, np.int64)))

        for t in np.unique(tasks):
            idx = np.flatnonzero(tasks == t)
            order = idx[np.argsort(ords[idx], kind="stable")]
            prefix = f"t{int(t):05d}" if t >= 0 else f"r{int(-t - 1):05d}"
            if sig:
                rows = _gather_sig(files_of("sig" if t >= 0 else "ref/sig", prefix, "npy"), ords[order])
                if sigs is None:
                    sigs = np.empty((n, rows.shape[1]), dtype=np.uint32)
                sigs[order] = rows
            if not attrs:
                continue
            side = files_of("attr" if t >= 0 else "ref/attr", prefix, "arrow")
            frames.append(_gather_attr(side, ords[order], attrs).with_columns(pl.Series("_node", order)))
        table = (
            pl.concat(frames, how="diagonal_relaxed").sort("_node").drop("_node")
            if frames
            else pl.DataFrame(schema={c: ATTR_TYPES[c] for c in attrs})
        )
        # reference documents have no length or keep value
        table = table.with_columns(
            pl.lit(None, ATTR_TYPES[c]).alias(c) for c in attrs if c not in table.columns
        ).select(attrs)
        return cls(keys, tasks, ords, sigs if sigs is not None else np.empty((0, 1), np.uint32), table)

    def similarity(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Jaccard of node pairs: exact when the shingle sets are loaded, else estimated."""
        if i.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        if self.sets is not None and self.set_index is not None:
            return _jaccard_pairs(self.sets[0], self.sets[1], self.set_index[i], self.set_index[j])
        return (self.sig[i] == self.sig[j]).mean(axis=1)

    def pair_similarity(
        self, i: np.ndarray, j: np.ndarray, ctx: GlobalContext, step: MinHashDedup
    ) -> np.ndarray:
        """Similarity of node pairs ``(i, j)`` as verification would give it: looked up in the
        verified pairs (:attr:`known`) when the pair is one, else computed (``exact``: the shingle
        sets of just those documents are read again). 1.0 where ``i == j``."""
        out = np.ones(i.shape[0], dtype=np.float64)
        diff = np.flatnonzero(i != j)
        if diff.size == 0:
            return out
        a, b = self.keys[i[diff]], self.keys[j[diff]]
        query = pl.DataFrame({"lo": np.minimum(a, b), "hi": np.maximum(a, b)})
        if self.known is not None:
            found = query.join(self.known, on=["lo", "hi"], how="left", maintain_order="left")["sim"]
            sim = found.fill_null(np.nan).to_numpy().astype(np.float64)
        else:
            sim = np.full(diff.size, np.nan)
        miss = np.flatnonzero(np.isnan(sim))
        if miss.size:
            mi, mj = i[diff[miss]], j[diff[miss]]
            if step.verify == "exact":
                sim[miss] = self._exact_in_chunks(mi, mj, ctx, step)
            else:  # the estimate, from the signatures of just these documents
                sub = _Nodes.collect(
                    np.unique(self.keys[np.concatenate([mi, mj])]), ctx, _task_offsets(ctx), attrs=()
                )
                a_i = np.searchsorted(sub.keys, self.keys[mi])
                a_j = np.searchsorted(sub.keys, self.keys[mj])
                sim[miss] = sub.similarity(a_i, a_j)
        out[diff] = sim
        return out

    def _exact_in_chunks(
        self, i: np.ndarray, j: np.ndarray, ctx: GlobalContext, step: MinHashDedup
    ) -> np.ndarray:
        """Exact Jaccard of node pairs ``(i, j)``, ``_SET_CHUNK // 2`` pairs at a time (by ``j``, the
        keeper, so a keeper's text is mostly hashed once): the shingle sets held at once stay
        bounded however many chains the corpus has."""
        out = np.empty(i.shape[0], dtype=np.float64)
        order = np.lexsort((i, j))
        step_pairs = max(1, _SET_CHUNK // 2)
        for start in range(0, order.shape[0], step_pairs):
            sel = order[start : start + step_pairs]
            self.load_sets(ctx, step, np.unique(np.concatenate([i[sel], j[sel]])))
            out[sel] = self.similarity(i[sel], j[sel])
        self.sets = self.set_index = None
        return out

    def load_sets(self, ctx: GlobalContext, step: MinHashDedup, which: np.ndarray) -> None:
        """Read the texts of nodes ``which`` again and keep their shingle hashes (as hashed:
        unsorted, repeats included; :func:`_jaccard_pairs` takes them as sets).

        Texts stay Arrow arrays (no Python strings). They are gathered task by task and hashed
        ``_SET_CHUNK`` documents at a time, whatever tasks they come from: the texts and raw
        shingle hashes held at once stay bounded, and a partition touching many tasks does not pay
        the per-call cost of hashing once per task.
        """
        from dataforge.stages import read_ipc

        tasks, ords = self.tasks[which], self.ords[which]
        hashes: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        order: list[np.ndarray] = []
        pending: list[tuple[pa.Array, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            texts = pa.concat_arrays([a for a, _ in pending])
            idx = np.concatenate([i for _, i in pending])
            pending.clear()
            # as views over the gathered buffer: Polars would copy it again (io/views)
            hv, n_sh = shingle_hashes(pl.Series(string_views(texts), dtype=pl.Utf8), step.params())
            del texts
            hashes.append(hv.copy() if hv.base is not None else hv)  # the kernel's buffer is larger
            counts.append(n_sh)
            order.append(idx)

        held = 0
        ref_files = _listing(ctx.path("ref/attr"), "arrow") if (tasks < 0).any() else {}
        for t in np.unique(tasks):
            all_idx = np.flatnonzero(tasks == t)
            all_idx = all_idx[np.argsort(ords[all_idx], kind="stable")]
            column = read_ipc(ctx.live_file(int(t))).column("text") if t >= 0 else None
            for start in range(0, all_idx.shape[0], _SET_CHUNK):
                idx = all_idx[start : start + _SET_CHUNK]
                if column is not None:
                    texts = take_sorted(column, ords[idx])
                else:
                    side = ref_files[f"r{int(-t - 1):05d}"]
                    texts = _gather_attr(side, ords[idx], ("text",))["text"].to_arrow()
                pending.append((texts.cast(pa.large_string()), idx))
                held += idx.shape[0]
                if held >= _SET_CHUNK:
                    flush()
                    held = 0
            del column
        flush()
        if order:
            flat = np.concatenate(hashes)
            sizes = np.concatenate(counts)
            position = np.concatenate(order)
        else:
            flat, sizes, position = np.empty(0, np.uint32), np.empty(0, np.int64), np.empty(0, np.int64)
        self.sets = (flat, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        self.set_index = np.full(self.keys.shape[0], -1, dtype=np.int64)
        self.set_index[which[position]] = np.arange(position.shape[0])


def _listing(folder: str, ext: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """The side files ``PREFIX-START.ext`` of a folder by prefix (a task or reference file): their
    paths and first positions, in order."""
    groups: dict[str, list[tuple[int, str]]] = {}
    suffix = f".{ext}"
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith(".") or not name.endswith(suffix) or name.count("-") != 1:
            continue
        prefix, start = name[: -len(suffix)].split("-")
        groups.setdefault(prefix, []).append((int(start), f"{folder}/{name}"))
    out = {}
    for prefix, items in groups.items():
        items.sort()
        out[prefix] = ([f for _, f in items], np.array([s for s, _ in items], dtype=np.int64))
    return out


def _gather_sig(side: tuple[list[str], np.ndarray], ords: np.ndarray) -> np.ndarray:
    files, starts = side
    return np.concatenate(
        [np.asarray(np.load(files[k], mmap_mode="r")[local]) for k, local in by_piece(starts, ords)]
    )


def _gather_attr(
    side: tuple[list[str], np.ndarray], ords: np.ndarray, columns: tuple[str, ...]
) -> pl.DataFrame:
    """Rows ``ords`` (ascending) of a task's attribute files, with ``_ord`` and those of
    ``columns`` the files have: row ``i`` of a file starting at position ``s`` holds
    ``_ord == s + i``, so only the wanted rows of the wanted columns are read (from memory-mapped
    files), not whole files filtered."""
    from dataforge.stages import read_ipc

    files, starts = side
    parts = []
    for k, local in by_piece(starts, ords):
        table = read_ipc(files[k])
        table = table.select(["_ord", *[c for c in columns if c in table.column_names]])
        parts.append(table.take(arrow_indices(local)))
    return pl.DataFrame(pl.from_arrow(pa.concat_tables(parts)))


@njit(inline="always")
def _slot(slots, stamp, v, shift, mask, free):
    """The slot of ``v`` in the open-addressing table: where it is, or the free one it goes in."""
    h = np.int64((np.uint64(v) * np.uint64(0x9E3779B97F4A7C15)) >> shift)
    while stamp[h] > free and slots[h] != v:
        h = (h + 1) & mask
    return h


@njit(cache=True)
def _jaccard_pairs(values, offs, left, right):
    """Jaccard similarity of the hash sets of documents ``left[e]`` and ``right[e]``.

    ``values[offs[k]:offs[k + 1]]`` are document ``k``'s shingle hashes, in any order and with
    repeats; each is a set member once. Per pair, the left document's hashes go into an
    open-addressing table (sized for the pair, at most half full) and the right document's are
    looked up in it: O(|A| + |B|) per pair, with no sort and no per-document set kept. Two empty
    documents have similarity 0.
    """
    n_pairs = left.shape[0]
    out = np.empty(n_pairs, dtype=np.float64)
    largest = 0
    for e in range(n_pairs):
        size = offs[left[e] + 1] - offs[left[e]] + offs[right[e] + 1] - offs[right[e]]
        largest = max(largest, size)
    bits = 4
    while (1 << bits) < 2 * largest:
        bits += 1
    slots = np.empty(1 << bits, dtype=np.uint32)
    # slot states for pair e: in A (maybe B too, unseen yet), in B only, in both; a slot whose
    # stamp is <= 3 * e is free (left over from earlier pairs), so nothing is cleared between pairs
    stamp = np.zeros(1 << bits, dtype=np.int64)
    for e in range(n_pairs):
        a0, a1 = offs[left[e]], offs[left[e] + 1]
        b0, b1 = offs[right[e]], offs[right[e] + 1]
        b = 4
        while (1 << b) < 2 * (a1 - a0 + b1 - b0):
            b += 1
        shift = np.uint64(64 - b)
        mask = (1 << b) - 1
        free, in_a, in_b, in_both = 3 * e, 3 * e + 1, 3 * e + 2, 3 * e + 3
        n_a = 0
        for x in range(a0, a1):
            v = values[x]
            h = _slot(slots, stamp, v, shift, mask, free)
            if stamp[h] <= free:
                stamp[h] = in_a
                slots[h] = v
                n_a += 1
        inter = 0
        b_only = 0
        for x in range(b0, b1):
            v = values[x]
            h = _slot(slots, stamp, v, shift, mask, free)
            if stamp[h] <= free:
                stamp[h] = in_b
                slots[h] = v
                b_only += 1
            elif stamp[h] == in_a:
                stamp[h] = in_both
                inter += 1
        union = n_a + b_only
        out[e] = inter / union if union else 0.0
    return out


def _decide(
    left: np.ndarray,
    right: np.ndarray,
    sim: np.ndarray,
    nodes: _Nodes,
    step: MinHashDedup,
    ctx: GlobalContext,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The decisions as numbers, from the verified pairs (node indices).

    Returns ``plan`` (one row per node with something to say, by node: ``node``, ``code`` (kept in
    a cluster, near duplicate, reference duplicate), ``cluster_id``, ``cluster_size``, ``other``
    (the keeper's or the reference's node), ``similarity``) and the clustered pairs (``left``,
    ``right``, ``similarity``, ``cluster_id``) for the report. No strings: ids and sources are looked
    up when the plan is written (:func:`_resolve`).
    """
    is_ref = nodes.keys < 0
    # 1. corpus documents near-duplicating a reference document (references sort first, so a
    #    reference is always on the left); the most similar reference wins, then the first one
    ref_edge = is_ref[left]
    ref_pairs = pl.DataFrame(
        {"node": right[ref_edge], "ref": left[ref_edge], "sim": sim[ref_edge]},
        schema={"node": pl.Int64, "ref": pl.Int64, "sim": pl.Float64},
    )
    best = (
        ref_pairs.sort(["node", "sim", "ref"], descending=[False, True, False])
        .unique("node", keep="first")
        .sort("node")
    )
    matched = best["node"].to_numpy()
    frames = [
        pl.DataFrame(
            {
                "node": matched,
                "code": np.full(matched.shape[0], _REF, dtype=np.int8),
                "cluster_id": nodes.keys[matched],
                "cluster_size": np.ones(matched.shape[0], dtype=np.int32),
                "other": best["ref"],
                "similarity": best["sim"].cast(pl.Float32),
            }
        )
    ]
    # 2. clusters among the remaining corpus documents
    keep = ~ref_edge & ~np.isin(left, matched) & ~np.isin(right, matched)
    li, ri, esim = left[keep], right[keep], sim[keep]
    pairs = pl.DataFrame(
        schema={"left": pl.Int64, "right": pl.Int64, "similarity": pl.Float32, "cluster_id": pl.Int64}
    )
    if li.size:
        involved = np.unique(np.concatenate([li, ri]))
        rank = cl.keep_rank(
            step.keep,
            length=nodes.attrs["length"].fill_null(0).to_numpy()[involved],
            position=nodes.keys[involved],
            value=nodes.attrs["value"].to_numpy()[involved],
        )
        clu = cl.components(nodes.keys[li], nodes.keys[ri], rank=rank, nodes=nodes.keys[involved])
        member = np.searchsorted(nodes.keys, clu.nodes)
        keeper = np.searchsorted(nodes.keys, clu.keeper)
        kept = member == keeper
        ksim = nodes.pair_similarity(member, keeper, ctx, step)
        frames.append(
            pl.DataFrame(
                {
                    "node": member,
                    "code": np.where(kept, _KEPT, _NEAR).astype(np.int8),
                    "cluster_id": clu.cluster_id,
                    "cluster_size": clu.cluster_size,
                    "other": pl.Series(keeper).scatter(np.flatnonzero(kept), None),
                    "similarity": pl.Series(ksim.astype(np.float32)).scatter(np.flatnonzero(kept), None),
                }
            )
        )
        if step.report_clusters:
            pairs = pl.DataFrame(
                {
                    "left": li,
                    "right": ri,
                    "similarity": esim.astype(np.float32),
                    "cluster_id": clu.cluster_id[np.searchsorted(clu.nodes, nodes.keys[li])],
                }
            )
    plan = pl.concat(
        [
            f.cast({"node": pl.Int64, "cluster_id": pl.Int64, "cluster_size": pl.Int32, "other": pl.Int64})
            for f in frames
        ]
    ).sort("node")
    return plan, pairs


def _strings(nodes: _Nodes, which: np.ndarray, ctx: GlobalContext) -> pl.DataFrame:
    """``id`` and ``source`` of the nodes ``which`` (ascending node indices, repeats allowed)."""
    unique, inverse = np.unique(which, return_inverse=True)
    sub = _Nodes.collect(nodes.keys[unique], ctx, _task_offsets(ctx), sig=False, attrs=("id", "source"))
    return sub.attrs[inverse] if which.shape[0] else sub.attrs


def _resolve(plan: pl.DataFrame, nodes: _Nodes, ctx: GlobalContext, step: MinHashDedup) -> pl.DataFrame:
    """Decision rows (the declared schema) for a slice of the plan: the ids and sources of the
    keepers and references are read from the attribute files for just these rows."""
    other = plan["other"]
    has = other.is_not_null().to_numpy()
    names = _strings(nodes, other.to_numpy()[has].astype(np.int64), ctx)
    with_id = pl.Series([None] * plan.height, dtype=pl.Utf8).scatter(np.flatnonzero(has), names["id"])
    with_src = pl.Series([None] * plan.height, dtype=pl.Utf8).scatter(np.flatnonzero(has), names["source"])
    node = plan["node"].to_numpy()
    code = pl.col("code")
    sim3 = pl.col("similarity").round(3)
    return plan.with_columns(with_id.alias("_with"), with_src.alias("_source")).select(
        pl.Series("_task", nodes.tasks[node], pl.Int32),
        pl.Series("_ord", nodes.ords[node], pl.Int64),
        pl.when(code == _REF)
        .then(pl.lit("reference_duplicate"))
        .when(code == _NEAR)
        .then(pl.lit("near_duplicate"))
        .alias("reason"),
        pl.when(code == _REF)
        .then(
            pl.format(
                "jaccard {} >= {} with reference {} ({})", sim3, pl.lit(step.threshold), "_with", "_source"
            )
        )
        .when(code == _NEAR)
        .then(
            pl.format(
                "jaccard {} with {} (cluster {}: {} documents, keep={})",
                sim3,
                "_with",
                "cluster_id",
                "cluster_size",
                pl.lit(step.keep),
            )
        )
        .alias("detail"),
        "cluster_id",
        "cluster_size",
        pl.col("_with").alias("dup_of"),
        "similarity",
    )


def _report(
    decisions: pl.DataFrame, plan: pl.DataFrame, pairs: pl.DataFrame, nodes: _Nodes, ctx: GlobalContext
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``clusters`` and ``cluster_pairs`` report tables (``--report-clusters``)."""
    names = _strings(nodes, plan["node"].to_numpy(), ctx)
    report = decisions.select(
        "cluster_id",
        "cluster_size",
        names["id"].alias("id"),
        names["source"].alias("source_file"),
        pl.col("reason").is_null().alias("kept"),
        "dup_of",
        "similarity",
        "reason",
    ).sort(["cluster_id", "kept", "id"], descending=[False, True, False])
    left, right = pairs["left"].to_numpy(), pairs["right"].to_numpy()
    ends = np.unique(np.concatenate([left, right]))
    ids = _strings(nodes, ends, ctx)["id"]
    pair_report = pl.DataFrame(
        {
            "cluster_id": pairs["cluster_id"],
            "id_a": ids.gather(np.searchsorted(ends, left)),
            "id_b": ids.gather(np.searchsorted(ends, right)),
            "similarity": pairs["similarity"],
        },
        schema={"cluster_id": pl.Int64, "id_a": pl.Utf8, "id_b": pl.Utf8, "similarity": pl.Float32},
    )
    return report, pair_report.sort("cluster_id", "id_a", "id_b")
