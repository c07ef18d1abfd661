"""``dedup.minhash``: near-duplicate removal with MinHash LSH, verification and clusters.

Phases (see :class:`dataforge.step.GlobalStep`):

1. ``keys`` (every batch of every task): signatures (:mod:`dataforge.dedup.minhash`) and band
   hashes; the band table is split into partitions by band and written beside the live rows;
   signatures and per-document attributes go to side files in the work folder.
2. ``reference`` (one task per file of ``against``): the same for the reference set.
3. ``candidates`` (one task per band partition): documents that share a band bucket become
   candidate pairs. Only one partition's bands are in memory at a time.
4. ``finalize`` (one task): verify candidate pairs (``exact`` Jaccard of the shingle sets, or the
   ``estimate`` from signatures, or ``none``), drop documents near-duplicating the reference set,
   cluster the rest with connected components, and choose the kept document of each cluster.

Every output row gets ``cluster_id`` (the global position of its cluster's first document by input
order; its own position when alone), ``cluster_size``, and for removed rows ``dup_of`` (the kept or
reference document's id) and ``similarity`` (Jaccard with that document).

Example (YAML)::

    - dedup.minhash: {threshold: 0.8, num_perm: 128, shingle: "word:5", keep: longest}
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from dataforge.dedup import clusters as cl
from dataforge.dedup.lsh import band_hashes, bucket_pairs, optimal_params, s_curve
from dataforge.dedup.minhash import HASHES, MinHashParams, shingle_hashes, signatures
from dataforge.errors import ConfigError, choices
from dataforge.io.shards import atomic_path
from dataforge.registry import register
from dataforge.step import GlobalContext, GlobalStep, StepOutput, check_range

VERIFY = ("none", "estimate", "exact")
ALL_PAIRS_MAX = 12  # buckets up to this size give every pair; larger ones a star
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
        date_field, date_format: metadata field (and strptime format) for oldest/newest.
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
            parsed = raw.str.to_datetime(format=self.date_format, strict=False, time_unit="us")
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
        out += [("candidates", self.partitions), ("finalize", 1)]
        return out

    def _reference_files(self) -> list[Any]:
        from dataforge.io.inputs import InputSpec, discover

        spec = InputSpec(
            paths=self.against, text_field=self.against_text_field, id_field=self.against_id_field
        )
        return discover(spec)

    def reference(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Sign reference file ``item`` and write its band table and side files."""
        from dataforge.io.inputs import InputSpec
        from dataforge.io.readers import check_file, read_batches

        spec = InputSpec(
            paths=self.against, text_field=self.against_text_field, id_field=self.against_id_field
        )
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

    def candidates(self, ctx: GlobalContext, part: int) -> dict[str, Any]:
        """Candidate pairs of band partition ``part``: documents sharing a band bucket."""
        files = [f for f in ctx.key_files(part) if os.path.getsize(f) > 0]
        files += sorted(glob.glob(ctx.path(f"ref/bands-r*-p{part:03d}.arrow")))
        cols = ["band", "hash", "_task", "_ord"]
        if files:
            table = pl.concat([pl.read_ipc(f, columns=cols) for f in files])
        else:
            table = pl.DataFrame(
                schema={"band": pl.Int16, "hash": pl.UInt64, "_task": pl.Int32, "_ord": pl.Int64}
            )
        table = table.sort(cols)
        edges = _bucket_edges(table)
        with atomic_path(ctx.path(f"edges-p{part:03d}.arrow")) as tmp:
            edges.write_ipc(tmp, compression="uncompressed")
        return {"rows": table.height, "pairs": edges.height}

    def finalize(self, ctx: GlobalContext, item: int) -> dict[str, Any]:
        """Verify candidate pairs, match the reference, cluster, and write the decisions."""
        edges = (
            pl.concat([pl.read_ipc(ctx.path(f"edges-p{p:03d}.arrow")) for p in range(self.partitions)])
            .unique(maintain_order=False)
            .sort(["t1", "o1", "t2", "o2"])
        )
        offsets = np.concatenate([[0], np.cumsum(ctx.task_rows)]).astype(np.int64)
        bands, rows = self.lsh()
        info: dict[str, Any] = {"lsh": s_curve(bands, rows, self.threshold), "candidate_pairs": edges.height}
        nodes = _Nodes.collect(edges, ctx, offsets)
        sim = _similarities(edges, nodes, self, ctx)
        verified = edges.with_columns(pl.Series("similarity", sim, pl.Float32))
        if self.verify != "none":
            verified = verified.filter(pl.col("similarity") >= self.threshold)
        info["verified_pairs"] = verified.height
        decisions, report_rows, pairs = _decide(verified, nodes, self, offsets)
        info["clusters"] = int(decisions.filter(pl.col("cluster_size") > 1)["cluster_id"].n_unique())
        info["near_duplicates"] = int((decisions["reason"] == "near_duplicate").sum())
        info["reference_duplicates"] = int((decisions["reason"] == "reference_duplicate").sum())
        with atomic_path(ctx.decisions_path()) as tmp:
            decisions.write_ipc(tmp, compression="uncompressed")
        if self.report_clusters:
            _write_ipc(ctx.path("clusters.arrow"), report_rows)
            _write_ipc(ctx.path("cluster_pairs.arrow"), pairs)
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


def _save_npy(path: str, arr: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def _write_ipc(path: str, frame: pl.DataFrame) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        frame.write_ipc(tmp, compression="uncompressed")


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


@dataclass
class _Nodes:
    """The documents that appear in candidate pairs: signatures, attributes, texts on demand."""

    tasks: np.ndarray  # task (negative: reference file -(i+1))
    ords: np.ndarray
    sig: np.ndarray
    ids: list[str]
    sources: list[str]
    rows: np.ndarray
    length: np.ndarray
    value: np.ndarray
    texts: list[str] | None
    index: dict[tuple[int, int], int]
    sets: tuple[np.ndarray, np.ndarray] | None = None  # unique shingle hashes per node (exact mode)

    def similarity(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Jaccard of node pairs: exact when the shingle sets are loaded, else estimated."""
        if self.sets is not None:
            return _jaccard_pairs(self.sets[0], self.sets[1], i, j)
        return (self.sig[i] == self.sig[j]).mean(axis=1)

    @classmethod
    def collect(cls, edges: pl.DataFrame, ctx: GlobalContext, offsets: np.ndarray) -> _Nodes:
        ends = (
            pl.concat([edges.select(t="t1", o="o1"), edges.select(t="t2", o="o2")]).unique().sort(["t", "o"])
        )
        tasks = ends["t"].to_numpy()
        ords = ends["o"].to_numpy()
        n = tasks.shape[0]
        sig_parts, attr_parts = [], []
        for t in np.unique(tasks):
            sel = ords[tasks == t]
            if t >= 0:
                sig_parts.append(_gather_sig(ctx.path("sig"), f"t{int(t):05d}", sel))
                attr_parts.append(_gather_attr(ctx.path("attr"), f"t{int(t):05d}", sel))
            else:
                sig_parts.append(_gather_sig(ctx.path("ref/sig"), f"r{int(-t - 1):05d}", sel))
                attr_parts.append(_gather_attr(ctx.path("ref/attr"), f"r{int(-t - 1):05d}", sel))
        sig = np.concatenate(sig_parts) if sig_parts else np.empty((0, 1), np.uint32)
        attrs = (
            pl.concat(attr_parts, how="diagonal_relaxed")
            if attr_parts
            else pl.DataFrame({"id": [], "source": [], "row": []})
        )
        index = {(int(t), int(o)): i for i, (t, o) in enumerate(zip(tasks, ords))}
        length = attrs["length"].fill_null(0).to_numpy() if "length" in attrs.columns else np.zeros(n)
        value = attrs["value"].to_numpy() if "value" in attrs.columns else np.full(n, np.nan)
        return cls(
            tasks,
            ords,
            sig,
            attrs["id"].to_list(),
            attrs["source"].to_list(),
            attrs["row"].to_numpy(),
            length,
            value,
            None,
            index,
        )

    def positions(self, t: np.ndarray, o: np.ndarray) -> np.ndarray:
        return np.array([self.index[(int(a), int(b))] for a, b in zip(t, o)], dtype=np.int64)

    def load_texts(self, ctx: GlobalContext) -> list[str]:
        if self.texts is None:
            from dataforge.stages import read_ipc

            texts: list[str] = [""] * self.tasks.shape[0]
            for t in np.unique(self.tasks):
                idx = np.flatnonzero(self.tasks == t)
                if t >= 0:
                    table = read_ipc(ctx.live_file(int(t))).select(["text"])
                    vals = table.take(pa.array(self.ords[idx])).column("text").to_pylist()
                else:
                    ref = _gather_attr(ctx.path("ref/attr"), f"r{int(-t - 1):05d}", self.ords[idx])
                    vals = ref["text"].to_list()
                for i, v in zip(idx, vals):
                    texts[i] = v
            self.texts = texts
        return self.texts


def _side_files(folder: str, prefix: str, ext: str) -> tuple[list[str], np.ndarray]:
    files = sorted(glob.glob(f"{folder}/{prefix}-*.{ext}"))
    starts = np.array([int(os.path.basename(f).split("-")[1].split(".")[0]) for f in files], dtype=np.int64)
    return files, starts


def _gather_sig(folder: str, prefix: str, ords: np.ndarray) -> np.ndarray:
    files, starts = _side_files(folder, prefix, "npy")
    which = np.searchsorted(starts, ords, side="right") - 1
    out = []
    for k in np.unique(which):
        arr = np.load(files[k], mmap_mode="r")
        out.append(np.asarray(arr[ords[which == k] - starts[k]]))
    return np.concatenate(out)


def _gather_attr(folder: str, prefix: str, ords: np.ndarray) -> pl.DataFrame:
    files, _ = _side_files(folder, prefix, "arrow")
    wanted = pl.Series("_ord", ords, pl.Int64)
    frames = [pl.read_ipc(f).filter(pl.col("_ord").is_in(wanted)) for f in files]
    return pl.concat(frames).sort("_ord")


def _similarities(edges: pl.DataFrame, nodes: _Nodes, step: MinHashDedup, ctx: GlobalContext) -> np.ndarray:
    """Jaccard of every candidate pair: exact (shingle sets) or estimated (signatures)."""
    if edges.height == 0:
        return np.empty(0, dtype=np.float32)
    i = nodes.positions(edges["t1"].to_numpy(), edges["o1"].to_numpy())
    j = nodes.positions(edges["t2"].to_numpy(), edges["o2"].to_numpy())
    if step.verify == "exact":
        texts = pl.Series(nodes.load_texts(ctx), dtype=pl.Utf8)
        hv, counts = shingle_hashes(texts, step.params())
        nodes.sets = _unique_sets(hv, counts)
    return nodes.similarity(i, j).astype(np.float32)


def _unique_sets(hv: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document, its sorted unique shingle hashes (flat) and offsets."""
    doc = np.repeat(np.arange(counts.shape[0]), counts)
    order = np.lexsort((hv, doc))
    hv_s, doc_s = hv[order], doc[order]
    keep = np.r_[True, (hv_s[1:] != hv_s[:-1]) | (doc_s[1:] != doc_s[:-1])]
    hv_u, doc_u = hv_s[keep], doc_s[keep]
    offs = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.add.at(offs, doc_u + 1, 1)
    return hv_u, np.cumsum(offs)


@njit(cache=True)
def _jaccard_pairs(values, offs, left, right):
    out = np.empty(left.shape[0], dtype=np.float64)
    for e in range(left.shape[0]):
        a0, a1 = offs[left[e]], offs[left[e] + 1]
        b0, b1 = offs[right[e]], offs[right[e] + 1]
        inter = 0
        x, y = a0, b0
        while x < a1 and y < b1:
            if values[x] == values[y]:
                inter += 1
                x += 1
                y += 1
            elif values[x] < values[y]:
                x += 1
            else:
                y += 1
        union = (a1 - a0) + (b1 - b0) - inter
        out[e] = inter / union if union else 0.0
    return out


def _decide(
    verified: pl.DataFrame, nodes: _Nodes, step: MinHashDedup, offsets: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Decision table, clusters report and pairs report from the verified pairs."""
    empty_decisions = pl.DataFrame(
        schema={
            "_task": pl.Int32,
            "_ord": pl.Int64,
            "reason": pl.Utf8,
            "detail": pl.Utf8,
            "cluster_id": pl.Int64,
            "cluster_size": pl.Int32,
            "dup_of": pl.Utf8,
            "similarity": pl.Float32,
        }
    )
    t1, o1 = verified["t1"].to_numpy(), verified["o1"].to_numpy()
    t2, o2 = verified["t2"].to_numpy(), verified["o2"].to_numpy()
    sims = verified["similarity"].to_numpy()
    rows: list[dict[str, Any]] = []
    # 1. documents near-duplicating the reference (t1 < 0 sorts first; refs are never both ends)
    ref_edge = t1 < 0
    ref_match: dict[int, tuple[float, int]] = {}  # corpus node -> (similarity, reference node)
    for a_t, a_o, b_t, b_o, s in zip(t1[ref_edge], o1[ref_edge], t2[ref_edge], o2[ref_edge], sims[ref_edge]):
        corpus = nodes.index[(int(b_t), int(b_o))]
        ref = nodes.index[(int(a_t), int(a_o))]
        best = ref_match.get(corpus)
        if best is None or s > best[0] or (s == best[0] and ref < best[1]):
            ref_match[corpus] = (float(s), ref)
    for corpus, (s, ref) in sorted(ref_match.items()):
        g = int(offsets[nodes.tasks[corpus]] + nodes.ords[corpus])
        rows.append(
            {
                "_task": int(nodes.tasks[corpus]),
                "_ord": int(nodes.ords[corpus]),
                "reason": "reference_duplicate",
                "detail": f"jaccard {s:.3f} >= {step.threshold} with reference {nodes.ids[ref]} ({nodes.sources[ref]})",
                "cluster_id": g,
                "cluster_size": 1,
                "dup_of": nodes.ids[ref],
                "similarity": s,
            }
        )
    # 2. clusters among the remaining corpus documents
    keep_edge = ~ref_edge
    li = nodes.positions(t1[keep_edge], o1[keep_edge])
    ri = nodes.positions(t2[keep_edge], o2[keep_edge])
    matched = np.array(sorted(ref_match), dtype=np.int64)
    alive = ~(np.isin(li, matched) | np.isin(ri, matched))
    li, ri, esims = li[alive], ri[alive], sims[keep_edge][alive]
    gpos = np.where(nodes.tasks >= 0, offsets[np.maximum(nodes.tasks, 0)] + nodes.ords, -1)
    pair_rows: list[dict[str, Any]] = []
    if li.size:
        involved = np.unique(np.concatenate([li, ri]))
        rank = cl.keep_rank(
            step.keep, length=nodes.length[involved], position=gpos[involved], value=nodes.value[involved]
        )
        clu = cl.components(gpos[li], gpos[ri], rank=rank, nodes=gpos[involved])
        node_of = {int(gpos[k]): int(k) for k in involved}  # global position -> node index
        keeper_sim = _keeper_similarities(clu, node_of, nodes)
        for g, cid, size, keeper in zip(clu.nodes, clu.cluster_id, clu.cluster_size, clu.keeper):
            k = node_of[int(g)]
            kept = g == keeper
            s = None if kept else keeper_sim[int(g)]
            keeper_id = nodes.ids[node_of[int(keeper)]]
            rows.append(
                {
                    "_task": int(nodes.tasks[k]),
                    "_ord": int(nodes.ords[k]),
                    "reason": None if kept else "near_duplicate",
                    "detail": None
                    if kept
                    else f"jaccard {s:.3f} with {keeper_id} (cluster {int(cid)}: {int(size)} documents, keep={step.keep})",
                    "cluster_id": int(cid),
                    "cluster_size": int(size),
                    "dup_of": None if kept else keeper_id,
                    "similarity": s,
                }
            )
        cid_of = dict(zip(clu.nodes.tolist(), clu.cluster_id.tolist()))
        for a, b, s in zip(li, ri, esims):
            pair_rows.append(
                {
                    "cluster_id": cid_of[int(gpos[a])],
                    "id_a": nodes.ids[a],
                    "id_b": nodes.ids[b],
                    "similarity": float(s),
                }
            )
    decisions = pl.DataFrame(rows, schema=empty_decisions.schema) if rows else empty_decisions
    decisions = decisions.sort(["_task", "_ord"])
    report = decisions.with_columns(
        pl.Series(
            "id",
            [nodes.ids[nodes.index[(t, o)]] for t, o in zip(decisions["_task"], decisions["_ord"])],
            pl.Utf8,
        ),
        pl.Series(
            "source_file",
            [nodes.sources[nodes.index[(t, o)]] for t, o in zip(decisions["_task"], decisions["_ord"])],
            pl.Utf8,
        ),
        pl.col("reason").is_null().alias("kept"),
    ).select("cluster_id", "cluster_size", "id", "source_file", "kept", "dup_of", "similarity", "reason")
    pairs = pl.DataFrame(
        pair_rows, schema={"cluster_id": pl.Int64, "id_a": pl.Utf8, "id_b": pl.Utf8, "similarity": pl.Float32}
    ).sort("cluster_id", "id_a", "id_b")
    return decisions, report.sort("cluster_id", "kept", descending=[False, True], maintain_order=True), pairs


def _keeper_similarities(clu: cl.Clusters, node_of: dict[int, int], nodes: _Nodes) -> dict[int, float]:
    """Jaccard of every clustered document with its cluster's keeper (same method as verification)."""
    members = np.array([node_of[int(g)] for g in clu.nodes], dtype=np.int64)
    keepers = np.array([node_of[int(k)] for k in clu.keeper], dtype=np.int64)
    if not members.size:
        return {}
    sims = nodes.similarity(members, keepers)
    return {int(g): float(s) for g, s in zip(clu.nodes, sims)}
