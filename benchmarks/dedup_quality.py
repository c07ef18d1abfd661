"""Measure dataforge's near-duplicate removal (``dedup.minhash``) against the exact answer.

The exact answer is computed from the very shingle sets dataforge hashes
(``dataforge.dedup.minhash.shingles``: ``word:5`` after dataforge's normalization): a sparse
document x shingle incidence matrix ``A``, intersections ``A @ A.T`` (in row blocks), Jaccard
``inter / (|a| + |b| - inter)``, compared with the threshold in exact rational arithmetic. Four
experiments, all on real text from ``/work/shared/data``:

1. **reuters**: the 10,107 Reuters-21578 bodies (reut2-000..010). Every pair with exact Jaccard
   >= threshold is a true pair; dataforge runs with ``verify=exact``, ``estimate`` and ``none``.
   Pair-level figures (LSH candidates, verified pairs, pairs co-clustered) and document-level
   figures (removed documents against the documents an exact run would remove).
2. **edits**: Reuters bodies and ~2 KB paragraph groups of public-domain prose, copied with
   word-level edits (insert / delete / substitute a random corpus word) at 1-30 % of the words;
   the copies are shuffled into the corpus. ``--edit-seeds`` corpora (seeds ``--seed``, +1, ...)
   are built and pooled. Per edit rate: exact Jaccard of (original, copy) and how often dataforge
   puts the two in one cluster (= one of them is removed), overall and for pairs with J >= threshold.
3. **clough**: Clough & Stevenson short answers: which categories land in the cluster of their
   task's source article, at the threshold and at a lower one.
4. **pan**: PAN plagiarism sentence pairs: exact Jaccard of positives and negatives and how many
   pairs dataforge clusters (MinHash on single sentences is not expected to catch paraphrases).

dataforge is run through ``dataforge.api.dedup`` (``report_clusters=True``); the runner's work
folder is kept (``keep_work``) only to read the LSH candidate pairs dataforge generated. The
full candidate set of the same banding (every pair sharing a band bucket) is also recomputed
from dataforge's own signatures (``signatures`` + ``band_hashes``) to separate LSH misses from
verification misses.

Figures (true pair = exact Jaccard >= threshold; ideal removal = connected components of the true
pairs, keep the first document, i.e. what dataforge would do with perfect recall):

* LSH recall: share of true pairs sharing at least one band bucket (recomputed, every bucket pair).
* candidate recall: share of true pairs among dataforge's candidate pairs (buckets of more than 12
  documents give a star, so this is lower; clustering recovers the rest through connectivity).
* verified P / R: dataforge's ``cluster_pairs`` rows (pairs that passed verification; with
  ``verify=none`` every candidate) against the true pairs.
* co-clustered P / R: all pairs of documents in the same output cluster against the true pairs
  (precision below 1 with exact verification measures transitivity: chains a~b~c with J(a,c) < t).
* removed P / R: removed documents against the ideal removal.

Run from the repository root::

    .venv/bin/python benchmarks/dedup_quality.py                 # everything, about 1.5 minutes on 2 cores
    .venv/bin/python benchmarks/dedup_quality.py --parts reuters --limit 3000
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import gzip
import itertools
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import scipy
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

import dataforge
import dataforge.api
from dataforge.dedup.lsh import band_hashes, candidate_probability
from dataforge.dedup.minhash import MinHashParams, shingles, signatures

VERIFY_MODES = ("exact", "estimate", "none")
EDIT_RATES = (0.01, 0.02, 0.03, 0.05, 0.10, 0.15, 0.20, 0.30)
PARTS = ("reuters", "edits", "clough", "pan")


# --- data ---------------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def reuters_docs(data: Path, limit: int | None) -> list[tuple[str, str]]:
    """(id, body) of the Reuters stories with a body, in file order; id ``reuters:<newid>``."""
    docs = [
        (f"reuters:{rec['newid']}", rec["body"])
        for rec in _jsonl(data / "near_dup/reuters21578_reut2-000_to_010.jsonl.gz")
        if rec.get("body") is not None
    ]
    return docs[:limit] if limit else docs


def _units(text: str, target: int) -> Iterator[str]:
    """Paragraphs; one longer than 1.5 x ``target`` is split into lines, a long line into sentences."""
    for para in re.split(r"\n\s*\n", text):
        if len(para) <= 1.5 * target:
            yield para
            continue
        for line in para.split("\n"):
            if len(line) <= 1.5 * target:
                yield line
            else:
                yield from re.split(r"(?<=[.!?])\s+", line)


def _paragraph_groups(text: str, target: int) -> Iterator[str]:
    """Cut a book or speech into groups of whole paragraphs of about ``target`` characters."""
    group: list[str] = []
    size = 0
    for para in _units(text, target):
        if not para.strip():
            continue
        group.append(para)
        size += len(para) + 2
        if size >= target:
            yield "\n\n".join(group)
            group, size = [], 0
    if group:
        yield "\n\n".join(group)


def prose_chunks(data: Path, limit: int | None, target: int = 2000) -> list[tuple[str, str]]:
    """(id, text) paragraph groups of ~``target`` characters; id ``prose:<doc>#<k>``."""
    docs = []
    for rec in _jsonl(data / "pretraining_text/public_domain_prose.jsonl.gz"):
        for k, chunk in enumerate(_paragraph_groups(rec["text"], target)):
            docs.append((f"prose:{rec['id']}#{k}", chunk))
    return docs[:limit] if limit else docs


# --- exact ground truth -------------------------------------------------------------------------


@dataclass
class Shingled:
    """Binary document x shingle matrix of a corpus (shingle ids are corpus-local)."""

    A: csr_matrix
    sizes: np.ndarray  # distinct shingles per document

    @classmethod
    def build(cls, texts: Sequence[str], shingle: str = "word:5") -> Shingled:
        vocab: dict[bytes, int] = {}
        indptr = [0]
        indices: list[int] = []
        for text in texts:
            ids = {vocab.setdefault(s, len(vocab)) for s in shingles(text, shingle=shingle)}
            indices.extend(sorted(ids))
            indptr.append(len(indices))
        A = csr_matrix(
            (np.ones(len(indices), np.int32), np.array(indices, np.int64), np.array(indptr, np.int64)),
            shape=(len(texts), max(len(vocab), 1)),
        )
        return cls(A, np.diff(np.array(indptr, np.int64)))

    def pairs_at_least(self, threshold: float, block: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Every pair ``i < j`` with exact Jaccard >= ``threshold`` (from ``A @ A.T`` in row blocks)."""
        t = Fraction(str(threshold))
        AT = self.A.T.tocsr()
        left, right = [], []
        n = self.A.shape[0]
        for s in range(0, n, block):
            prod = (self.A[s : s + block] @ AT).tocoo()
            r = prod.row.astype(np.int64) + s
            c = prod.col.astype(np.int64)
            inter = prod.data.astype(np.int64)
            upper = c > r
            r, c, inter = r[upper], c[upper], inter[upper]
            union = self.sizes[r] + self.sizes[c] - inter
            ok = inter * t.denominator >= t.numerator * union
            left.append(r[ok])
            right.append(c[ok])
        i, j = np.concatenate(left), np.concatenate(right)
        order = np.lexsort((j, i))
        return i[order], j[order]

    def jaccard(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact Jaccard of the pairs ``(i[k], j[k])``, with intersections and unions (exact ints)."""
        i = np.asarray(i, np.int64)
        j = np.asarray(j, np.int64)
        if i.size == 0:
            z = np.zeros(0, np.int64)
            return np.zeros(0), z, z
        inter = np.asarray(self.A[i].multiply(self.A[j]).sum(axis=1)).ravel().astype(np.int64)
        union = self.sizes[i] + self.sizes[j] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            sim = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        return sim, inter, union


def at_least(inter: np.ndarray, union: np.ndarray, threshold: float) -> np.ndarray:
    t = Fraction(str(threshold))
    return (inter * t.denominator >= t.numerator * union) & (union > 0)


def pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair."""
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    return lo * n + hi


def removed_by_components(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Documents an exact ``keep=first`` run removes: all but the first member of each component."""
    removed = np.zeros(n, bool)
    if i.size == 0:
        return removed
    graph = coo_matrix((np.ones(i.size, np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(first, labels, np.arange(n))
    sizes = np.bincount(labels)
    removed = (sizes[labels] > 1) & (np.arange(n) != first[labels])
    return removed


# --- running dataforge --------------------------------------------------------------------------


@contextlib.contextmanager
def _keep_work() -> Iterator[None]:
    """Make ``dataforge.api.dedup`` keep its work folder (to read the LSH candidate pairs)."""
    original = dataforge.api.run_pipeline
    dataforge.api.run_pipeline = functools.partial(original, keep_work=True)
    try:
        yield
    finally:
        dataforge.api.run_pipeline = original


@dataclass
class Run:
    """One dataforge run, mapped back onto corpus positions."""

    verify: str
    threshold: float
    seconds: float
    info: dict
    cluster: np.ndarray  # per document: cluster id (singletons: -1 - position)
    removed: np.ndarray  # per document: removed as a near-duplicate
    keeper: np.ndarray  # per document: position of its cluster's kept document (-1 when alone)
    verified: tuple[np.ndarray, np.ndarray]  # cluster_pairs rows (positions)
    verified_sim: np.ndarray  # cluster_pairs similarity (dataforge's Jaccard or estimate)
    edges: tuple[np.ndarray, np.ndarray] | None  # dataforge's candidate pairs (positions)

    @property
    def bands_rows(self) -> tuple[int, int]:
        lsh = self.info["lsh"]
        return int(lsh["bands"]), int(lsh["rows"])


def write_corpus(docs: Sequence[tuple[str, str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in docs:
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")


def _read_edges(out: Path, pos: dict[str, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """dataforge's candidate pairs from the kept work folder (None when the layout is unknown).

    ``edges-pNNN.arrow`` holds each band partition's pairs as node keys (``lo``, ``hi``): a
    document's global position among the rows the keys were taken from, i.e. the rows of the tasks
    before its own plus its ``_ord`` within its task (``dataforge.dedup.near._node_keys``).
    """
    edge_files = sorted(glob.glob(str(out / "_work/**/edges-p*.arrow"), recursive=True))
    if not edge_files:
        return None
    step_dir = Path(edge_files[0]).parent
    by_task: dict[int, list[pl.DataFrame]] = {}
    for f in sorted(glob.glob(str(step_dir / "attr/t*.arrow"))):
        task = int(Path(f).name.split("-")[0][1:])
        by_task.setdefault(task, []).append(pl.read_ipc(f, columns=["_ord", "id"]))
    if not by_task:
        return None
    parts, offset = [], 0
    for task in sorted(by_task):
        frame = pl.concat(by_task[task])
        parts.append(frame.select((pl.col("_ord") + offset).alias("key"), "id"))
        offset += frame.height
    idmap = pl.concat(parts).with_columns(
        pl.col("id").replace_strict(pos, return_dtype=pl.Int64).alias("pos")
    )
    edges = pl.concat([pl.read_ipc(f, columns=["lo", "hi"]) for f in edge_files]).unique()
    for side in ("lo", "hi"):
        edges = edges.join(
            idmap.select(pl.col("key").alias(side), pl.col("pos").alias(f"p_{side}")), on=side, how="left"
        )
    if edges["p_lo"].null_count() or edges["p_hi"].null_count():
        msg = "candidate pairs name documents that are not in the attribute files"
        raise RuntimeError(msg)
    return edges["p_lo"].to_numpy(), edges["p_hi"].to_numpy()


def run_dataforge(
    docs: Sequence[tuple[str, str]], corpus: Path, out: Path, *, verify: str, threshold: float
) -> Run:
    pos = {doc_id: k for k, (doc_id, _) in enumerate(docs)}
    n = len(docs)
    t0 = time.perf_counter()
    with _keep_work():
        report = dataforge.api.dedup(
            str(corpus),
            output=str(out),
            threshold=threshold,
            verify=verify,
            report_clusters=True,
            overwrite=True,
            force=True,
        )
    seconds = time.perf_counter() - t0
    info = report.global_info["dedup.minhash"]["finalize"]
    clusters = pl.read_ipc(out / "clusters/part-00000.arrow")
    pairs = pl.read_ipc(out / "cluster_pairs/part-00000.arrow")
    cluster = -1 - np.arange(n, dtype=np.int64)
    removed = np.zeros(n, bool)
    keeper = np.full(n, -1, np.int64)
    p = np.array([pos[x] for x in clusters["id"].to_list()], np.int64)
    cluster[p] = clusters["cluster_id"].to_numpy()
    removed[p] = ~clusters["kept"].to_numpy()
    kept_pos = dict(
        zip(clusters.filter(pl.col("kept"))["cluster_id"].to_list(), p[clusters["kept"].to_numpy()])
    )
    keeper[p] = [kept_pos.get(c, -1) for c in clusters["cluster_id"].to_list()]
    dropped = sum(pl.read_ipc(f).height for f in glob.glob(str(out / "dropped/*.arrow")))
    if dropped != int(removed.sum()):
        print(
            f"  warning: {dropped} rows in dropped/ but {int(removed.sum())} removed in clusters/",
            file=sys.stderr,
        )
    verified = (
        np.array([pos[x] for x in pairs["id_a"].to_list()], np.int64),
        np.array([pos[x] for x in pairs["id_b"].to_list()], np.int64),
    )
    edges = _read_edges(out, pos)
    sims = pairs["similarity"].to_numpy().astype(np.float64)
    return Run(verify, threshold, seconds, info, cluster, removed, keeper, verified, sims, edges)


def run_modes(
    docs: Sequence[tuple[str, str]],
    work: Path,
    name: str,
    threshold: float,
    modes: Sequence[str] = VERIFY_MODES,
) -> dict[str, Run]:
    corpus = work / name / "corpus.jsonl"
    write_corpus(docs, corpus)
    runs = {}
    for verify in modes:
        runs[verify] = run_dataforge(
            docs, corpus, work / name / f"out-{verify}", verify=verify, threshold=threshold
        )
        r = runs[verify]
        print(
            f"  dataforge verify={verify}: {r.seconds:.1f} s, bands x rows {r.bands_rows[0]}x{r.bands_rows[1]}, "
            f"{r.info['candidate_pairs']} candidate pairs, {r.info['verified_pairs']} verified, "
            f"{int(r.removed.sum())} removed",
            file=sys.stderr,
        )
    return runs


def lsh_candidates(
    sig: np.ndarray, live: np.ndarray, i: np.ndarray, j: np.ndarray, bands: int, rows: int
) -> np.ndarray:
    """Whether pairs share at least one band bucket of the given banding (dataforge's band hashes)."""
    bh = band_hashes(sig, bands, rows)
    return (bh[i] == bh[j]).any(axis=1) & live[i] & live[j]


# --- metrics ------------------------------------------------------------------------------------


def prf(tp: int, n_found: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_found if n_found else 1.0
    r = tp / n_true if n_true else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


@dataclass
class CorpusTruth:
    """Exact answer for one corpus: true pairs, their signatures-based diagnostics."""

    sh: Shingled
    gi: np.ndarray
    gj: np.ndarray
    threshold: float
    sig: np.ndarray
    live: np.ndarray
    keys: np.ndarray = field(init=False)
    ideal_removed: np.ndarray = field(init=False)
    has_earlier_partner: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.sh.A.shape[0]
        self.keys = pair_keys(self.gi, self.gj, n)
        self.ideal_removed = removed_by_components(self.gi, self.gj, n)
        self.has_earlier_partner = np.zeros(n, bool)
        self.has_earlier_partner[self.gj] = True  # gi < gj

    @classmethod
    def build(cls, texts: Sequence[str], threshold: float) -> CorpusTruth:
        sh = Shingled.build(texts)
        gi, gj = sh.pairs_at_least(threshold)
        sig, n_sh = signatures(pl.Series("text", list(texts), pl.Utf8), MinHashParams())
        return cls(sh, gi, gj, threshold, sig, n_sh > 0)

    @property
    def n(self) -> int:
        return self.sh.A.shape[0]


def evaluate(truth: CorpusTruth, run: Run) -> dict:
    """Pair- and document-level figures of one run against the exact answer."""
    n, t = truth.n, truth.threshold
    n_true = truth.gi.size
    res: dict = {
        "verify": run.verify,
        "lsh": f"{run.bands_rows[0]}x{run.bands_rows[1]}",
        "seconds": run.seconds,
    }
    res["true_pairs"] = n_true
    res["candidate_pairs"] = int(run.info["candidate_pairs"])
    # LSH stage, recomputed: every pair sharing a bucket of this banding
    b, r = run.bands_rows
    cand = lsh_candidates(truth.sig, truth.live, truth.gi, truth.gj, b, r)
    res["lsh_recall"] = float(cand.mean()) if n_true else 1.0
    # dataforge's own candidate pairs (large buckets give a star, not every pair)
    if run.edges is not None:
        ek = np.unique(pair_keys(run.edges[0], run.edges[1], n))
        if ek.size != res["candidate_pairs"]:
            print(
                f"  warning: read {ek.size} candidate pairs, dataforge reports {res['candidate_pairs']}",
                file=sys.stderr,
            )
        in_edges = np.isin(truth.keys, ek)
        res["candidate_recall"] = float(in_edges.mean()) if n_true else 1.0
        _, ci, cu = truth.sh.jaccard(*run.edges)
        res["candidates_true"] = int(at_least(ci, cu, t).sum())
    else:
        in_edges = None
        res["candidate_recall"] = float("nan")
    # verified pairs (cluster_pairs)
    vi, vj = run.verified
    vsim, inter, union = truth.sh.jaccard(vi, vj)
    # dataforge's own similarity of the verified pairs against the exact Jaccard
    res["similarity_max_abs_err"] = float(np.abs(run.verified_sim - vsim).max()) if vi.size else 0.0
    v_ok = at_least(inter, union, t)
    vk = pair_keys(vi, vj, n)
    tp = int(np.isin(vk, truth.keys).sum())
    res["verified_pairs"] = int(vi.size)
    res["verified_p"], res["verified_r"], res["verified_f1"] = prf(int(v_ok.sum()), vi.size, n_true)
    assert tp == int(v_ok.sum()), "verified pairs: exact check and pair-set lookup disagree"
    # co-clustered pairs: every pair of documents in the same output cluster
    sizes = np.unique(run.cluster[run.cluster >= 0], return_counts=True)[1]
    n_co = int((sizes * (sizes - 1) // 2).sum())
    same = run.cluster[truth.gi] == run.cluster[truth.gj]
    res["co_pairs"] = n_co
    res["co_p"], res["co_r"], res["co_f1"] = prf(int(same.sum()), n_co, n_true)
    # documents removed
    rem = run.removed
    ideal = truth.ideal_removed
    res["removed"] = int(rem.sum())
    res["ideal_removed"] = int(ideal.sum())
    res["doc_p"], res["doc_r"], res["doc_f1"] = prf(
        int((rem & ideal).sum()), int(rem.sum()), int(ideal.sum())
    )
    res["doc_p_direct"] = float((rem & truth.has_earlier_partner).sum() / max(rem.sum(), 1))
    # removed documents whose exact Jaccard with the kept document is below the threshold
    ri = np.flatnonzero(rem)
    _, ki, ku = truth.sh.jaccard(ri, run.keeper[ri])
    res["removed_below_t_with_keeper"] = int((~at_least(ki, ku, t)).sum())
    # why were true pairs missed (not co-clustered)?
    miss = ~same
    res["missed"] = int(miss.sum())
    res["missed_no_band"] = int((miss & ~cand).sum())
    if in_edges is not None:
        res["missed_band_not_candidate"] = int((miss & cand & ~in_edges).sum())
        res["missed_candidate_rejected"] = int((miss & in_edges).sum())
    return res


# --- tables -------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(x) for x in row) + " |")
    return "\n".join(lines)


def _fmt(x: object) -> str:
    if isinstance(x, float):
        if x != x:
            return "n/a"
        return f"{x:.4f}" if abs(x) < 10 else f"{x:,.1f}"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    return str(x)


def print_section(title: str, body: str) -> None:
    print(f"\n### {title}\n\n{body}\n", flush=True)


def pair_and_doc_tables(results: Sequence[dict], prefix: str = "") -> None:
    pair_rows = [
        (
            r["verify"],
            r["lsh"],
            r["true_pairs"],
            r["candidate_pairs"],
            r["lsh_recall"],
            r["candidate_recall"],
            r["verified_pairs"],
            r["verified_p"],
            r["verified_r"],
            r["similarity_max_abs_err"],
            r["co_pairs"],
            r["co_p"],
            r["co_r"],
            r["co_f1"],
        )
        for r in results
    ]
    print_section(
        f"{prefix}pairs (true pair = exact Jaccard >= threshold)",
        table(
            [
                "verify",
                "bands x rows",
                "true pairs",
                "candidates",
                "LSH recall (all bucket pairs)",
                "candidate recall (dataforge)",
                "verified pairs",
                "verified P",
                "verified R",
                "max abs(similarity - exact J)",
                "co-clustered pairs",
                "co-cl. P",
                "co-cl. R",
                "co-cl. F1",
            ],
            pair_rows,
        ),
    )
    doc_rows = [
        (
            r["verify"],
            r["removed"],
            r["ideal_removed"],
            r["doc_p"],
            r["doc_r"],
            r["doc_f1"],
            r["doc_p_direct"],
            r["removed_below_t_with_keeper"],
            r["missed"],
            r["missed_no_band"],
            r.get("missed_band_not_candidate", float("nan")),
            r.get("missed_candidate_rejected", float("nan")),
            r["seconds"],
        )
        for r in results
    ]
    print_section(
        f"{prefix}documents removed (ideal = exact pairs, connected components, keep first)",
        table(
            [
                "verify",
                "removed",
                "ideal removed",
                "P",
                "R",
                "F1",
                "P (has earlier exact partner)",
                "removed, J(kept doc) < t",
                "true pairs not co-clustered",
                "of which: no shared band",
                "band shared, not a candidate",
                "candidate, rejected",
                "dataforge s",
            ],
            doc_rows,
        ),
    )


# --- experiments --------------------------------------------------------------------------------


def exp_reuters(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    docs = reuters_docs(args.data, args.limit)
    texts = [t for _, t in docs]
    truth = CorpusTruth.build(texts, args.threshold)
    print(
        f"reuters: {len(docs)} docs, {truth.sh.A.nnz:,} shingles, {truth.gi.size} exact pairs >= {args.threshold} "
        f"({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    runs = run_modes(docs, args.out, "reuters", args.threshold)
    results = [evaluate(truth, runs[m]) for m in VERIFY_MODES]
    print(f"\n## 1. Reuters-21578 bodies: {len(docs):,} documents, threshold {args.threshold}")
    pair_and_doc_tables(results)
    # how much of the exact answer is made of raw-text-identical vs normalization-identical docs
    sim, _, _ = truth.sh.jaccard(truth.gi, truth.gj)
    raw_same = np.array([texts[a] == texts[b] for a, b in zip(truth.gi, truth.gj)])
    norm = np.array([shingles(texts[a]) == shingles(texts[b]) for a, b in zip(truth.gi, truth.gj)])
    print(
        f"True pairs: {truth.gi.size:,}; byte-identical bodies {int(raw_same.sum()):,}, identical after "
        f"normalization but not byte-identical {int((norm & ~raw_same).sum()):,}, Jaccard in "
        f"[{args.threshold}, 1) {int((sim < 1).sum()):,}. Documents in some true pair: "
        f"{np.unique(np.r_[truth.gi, truth.gj]).size:,}."
    )
    # the same exact answer with numbers kept (digits spelled as letters before normalization)
    spelled = Shingled.build([_spell_digits(t) for t in texts])
    _, ki, ku = spelled.jaccard(truth.gi, truth.gj)
    kept = at_least(ki, ku, args.threshold)
    words = np.array([len(t.split()) for t in texts])
    lost = ~kept
    n_removed_lost = int(
        (truth.ideal_removed & ~removed_by_components(truth.gi[kept], truth.gj[kept], truth.n)).sum()
    )
    print(
        f"With numbers kept (each digit run spelled as letters before normalization), {int(lost.sum()):,} of "
        f"these {truth.gi.size:,} pairs fall below {args.threshold} (median length of their documents "
        f"{int(np.median(words[np.r_[truth.gi[lost], truth.gj[lost]]])) if lost.any() else 0} words), and "
        f"{n_removed_lost:,} of the {int(truth.ideal_removed.sum()):,} removed documents would be kept: documents "
        f"that differ only in their figures, such as earnings and dividend tables of different companies "
        f"('Shr 16 cts vs 35 cts / Net 476,000 vs 929,000 / Revs ...') or weekly Treasury and Fed reports."
    )
    return {
        "docs": len(docs),
        "true_pairs": int(truth.gi.size),
        "pairs_only_with_digit_collapse": int(lost.sum()),
        "removed_only_with_digit_collapse": n_removed_lost,
        "runs": results,
    }


_DIGIT_RUN = re.compile(r"[0-9]+")


def _spell_digits(text: str) -> str:
    """``'155,221'`` -> ``'nbff,ncbb'``: numbers survive normalization as distinct words."""
    return _DIGIT_RUN.sub(
        lambda m: "n" + m.group().translate(str.maketrans("0123456789", "abcdefghij")), text
    )


def _edit(words: list[str], rate: float, rng: np.random.Generator, vocab: Sequence[str]) -> list[str]:
    """``round(rate * len)`` (at least 1) random word edits: insert, delete or substitute a word."""
    words = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        op = rng.integers(3)
        if op == 0:
            words.insert(int(rng.integers(len(words) + 1)), vocab[int(rng.integers(len(vocab)))])
        elif op == 1 and len(words) > 1:
            del words[int(rng.integers(len(words)))]
        else:
            words[int(rng.integers(len(words)))] = vocab[int(rng.integers(len(vocab)))]
    return words


def _edits_once(
    args: argparse.Namespace, seed: int, sources: dict[str, list[tuple[str, str]]], vocab: Sequence[str]
) -> dict:
    """One corpus with edited copies (edits and shuffle from ``seed``), its exact answer and runs."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    base = [d for docs in sources.values() for d in docs]
    # originals: at least 50 words, disjoint across edit rates, half Reuters, half prose
    per_source = args.copies_per_rate // 2
    copies: list[tuple[str, str]] = []
    meta: list[tuple[str, float, str]] = []  # (original id, rate, source)
    for src, docs in sources.items():
        pool = [d for d in docs if len(d[1].split()) >= 50]
        k = min(per_source, len(pool) // len(EDIT_RATES))
        chosen = rng.choice(len(pool), size=k * len(EDIT_RATES), replace=False)
        for r_idx, rate in enumerate(EDIT_RATES):
            for c in chosen[r_idx * k : (r_idx + 1) * k]:
                oid, text = pool[int(c)]
                new = " ".join(_edit(text.split(), rate, rng, vocab))
                copies.append((f"copy:{rate:.2f}:{oid}", new))
                meta.append((oid, rate, src))
    docs = base + copies
    order = rng.permutation(len(docs))
    docs = [docs[k] for k in order]
    pos = {d: k for k, (d, _) in enumerate(docs)}
    truth = CorpusTruth.build([t for _, t in docs], args.threshold)
    print(
        f"edits, seed {seed}: {len(base)} base docs + {len(copies)} copies, {truth.gi.size} exact pairs "
        f">= {args.threshold} ({time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    runs = run_modes(docs, args.out, f"edits-s{seed}", args.threshold)
    ci = np.array([pos[f"copy:{rate:.2f}:{oid}"] for oid, rate, _ in meta], np.int64)
    oi = np.array([pos[oid] for oid, _, _ in meta], np.int64)
    sim, inter, union = truth.sh.jaccard(oi, ci)
    b, r = runs["exact"].bands_rows
    results = []
    for v in VERIFY_MODES:
        res = evaluate(truth, runs[v])
        res["verify"] = f"{v}, seed {seed}"
        results.append(res)
    return {
        "base": len(base),
        "copies": len(copies),
        "rates": np.array([rate for _, rate, _ in meta]),
        "srcs": np.array([s for _, _, s in meta]),
        "seed": np.full(len(meta), seed),
        "sim": sim,
        "above": at_least(inter, union, args.threshold),
        "together": {v: runs[v].cluster[oi] == runs[v].cluster[ci] for v in VERIFY_MODES},
        "cand": lsh_candidates(truth.sig, truth.live, oi, ci, b, r),
        "est": (truth.sig[oi] == truth.sig[ci]).mean(axis=1),
        "lsh": {v: runs[v].bands_rows for v in VERIFY_MODES},
        "results": results,
    }


def exp_edits(args: argparse.Namespace) -> dict:
    sources = {"reuters": reuters_docs(args.data, args.limit), "prose": prose_chunks(args.data, args.limit)}
    vocab_rng = np.random.default_rng(10_000 + args.seed)
    all_words = [w for docs in sources.values() for _, t in docs for w in t.split()]
    vocab = [all_words[k] for k in vocab_rng.integers(len(all_words), size=200_000)]
    seeds = [args.seed + k for k in range(args.edit_seeds)]
    once = [_edits_once(args, sd, sources, vocab) for sd in seeds]
    cat = {
        k: np.concatenate([o[k] for o in once])
        for k in ("rates", "srcs", "seed", "sim", "above", "cand", "est")
    }
    together = {v: np.concatenate([o["together"][v] for o in once]) for v in VERIFY_MODES}
    rates, srcs, sim, above = cat["rates"], cat["srcs"], cat["sim"], cat["above"]
    cand, est = cat["cand"], cat["est"]
    b, r = once[0]["lsh"]["exact"]
    b_none, r_none = once[0]["lsh"]["none"]

    print(
        f"\n## 2. Injected word edits: {once[0]['base']:,} documents ({len(sources['reuters']):,} Reuters, "
        f"{len(sources['prose']):,} prose chunks) + {once[0]['copies']:,} edited copies per corpus, "
        f"{len(seeds)} corpora (seeds {', '.join(map(str, seeds))}), threshold {args.threshold}"
    )
    rows = []
    for rate in [*EDIT_RATES, None]:
        m = np.ones(rates.size, bool) if rate is None else rates == rate
        s = sim[m]
        ma = m & above
        rows.append(
            (
                "all" if rate is None else f"{rate:.0%}",
                int(m.sum()),
                float(np.percentile(s, 10)),
                float(np.median(s)),
                float(np.percentile(s, 90)),
                float(above[m].mean()),
                *(float(together[v][m].mean()) for v in VERIFY_MODES),
                int(ma.sum()),
                *(float(together[v][ma].mean()) if ma.any() else float("nan") for v in VERIFY_MODES),
            )
        )
    print_section(
        "(original, copy) per edit rate: exact Jaccard, and share in the same dataforge cluster",
        table(
            [
                "edit rate",
                "copies",
                "J p10",
                "J median",
                "J p90",
                f"share J >= {args.threshold}",
                "together: exact",
                "estimate",
                "none",
                f"copies J >= {args.threshold}",
                "recall: exact",
                "estimate",
                "none",
            ],
            rows,
        ),
    )
    per_split = []
    for name, m in [
        *((f"source {k}", srcs == k) for k in sources),
        *((f"seed {sd}", cat["seed"] == sd) for sd in seeds),
    ]:
        ma = m & above
        per_split.append((name, int(ma.sum()), *(float(together[v][ma].mean()) for v in VERIFY_MODES)))
    print_section(
        f"recall on (original, copy) pairs with J >= {args.threshold}, by source and by seed",
        table(["split", "pairs", "exact", "estimate", "none"], per_split),
    )
    edges = sorted({0.6, 0.7, 0.75, 0.78, args.threshold, 0.82, 0.85, 0.9, 0.95, 1.0 + 1e-9})
    bins = []
    for lo, hi in itertools.pairwise(edges):
        m = (sim >= lo) & (sim < hi)
        if not m.any():
            continue
        label = f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}"
        bins.append(
            (
                label,
                int(m.sum()),
                float(candidate_probability(float(sim[m].mean()), b, r)),
                float(cand[m].mean()),
                float((est[m] >= args.threshold).mean()),
                *(float(together[v][m].mean()) for v in VERIFY_MODES),
                float(candidate_probability(float(sim[m].mean()), b_none, r_none)),
            )
        )
    print_section(
        "(original, copy) pairs by exact Jaccard: LSH and verification stages",
        table(
            [
                "exact J",
                "pairs",
                f"S-curve P(mean J), {b}x{r}",
                f"shares a band ({b}x{r})",
                f"MinHash estimate >= {args.threshold}",
                "together: exact",
                "estimate",
                "none",
                f"S-curve P(mean J), {b_none}x{r_none}",
            ],
            bins,
        ),
    )
    results = [res for o in once for res in o["results"]]
    pair_and_doc_tables(results, prefix="whole mixed corpora: ")
    return {"seeds": seeds, "per_rate": rows, "per_split": per_split, "bins": bins, "runs": results}


def exp_clough(args: argparse.Namespace) -> dict:
    recs = list(_jsonl(args.data / "near_dup/clough_stevenson_plagiarism_tasks_abc.jsonl"))
    docs = [(r["file"], r["text"]) for r in recs]
    sh = Shingled.build([t for _, t in docs])
    src_pos = {r["file"]: k for k, r in enumerate(recs) if r["category"] == "orig"}
    src = np.array([src_pos[r["source_file"]] for r in recs], np.int64)
    sim, inter, union = sh.jaccard(np.arange(len(recs)), src)
    contained = inter / np.maximum(sh.sizes, 1)  # share of the answer's shingles found in the source
    thresholds = [args.threshold, *args.low_thresholds]
    together = {}
    for t in thresholds:
        run = run_modes(docs, args.out, f"clough-{t}", t, modes=("exact",))["exact"]
        together[t] = run.cluster == run.cluster[src]
    cats = ["orig", "cut", "light", "heavy", "non"]
    rows = []
    for c in cats:
        m = np.array([r["category"] == c for r in recs])
        s = sim[m]
        cm = contained[m]
        row: list[object] = [
            c,
            int(m.sum()),
            f"{np.median(s):.2f} ({s.min():.2f}-{s.max():.2f})",
            f"{np.median(cm):.2f} ({cm.min():.2f}-{cm.max():.2f})",
        ]
        for t in thresholds:
            row += [int(at_least(inter[m], union[m], t).sum()), int(together[t][m].sum())]
        rows.append(row)
    headers = [
        "category",
        "docs",
        "J with source: median (min-max)",
        "share of answer in source: median (min-max)",
    ]
    for t in thresholds:
        headers += [f"J >= {t}", f"same cluster as source @ {t}"]
    print(f"\n## 3. Clough & Stevenson short answers (tasks a-c, {len(recs)} documents), verify=exact")
    print_section("documents in the cluster of their task's source article", table(headers, rows))
    return {"rows": rows}


def exp_pan(args: argparse.Namespace) -> dict:
    recs = list(_jsonl(args.data / "near_dup/pan_plagiarism_sentence_pairs_train.jsonl.gz"))
    if args.limit:
        recs = recs[: args.limit]
    docs = []
    for r in recs:
        docs += [(f"{r['pair_id']}:1", r["sentence1"]), (f"{r['pair_id']}:2", r["sentence2"])]
    sh = Shingled.build([t for _, t in docs])
    a = np.arange(0, len(docs), 2)
    sim, inter, union = sh.jaccard(a, a + 1)
    label = np.array([r["label"] for r in recs])
    run = run_modes(docs, args.out, "pan", args.threshold, modes=("exact",))["exact"]
    together = run.cluster[a] == run.cluster[a + 1]
    truth = CorpusTruth.build([t for _, t in docs], args.threshold)
    whole = evaluate(truth, run)
    rows = []
    for lab, name in ((1, "positive (plagiarised)"), (0, "negative")):
        m = label == lab
        if not m.any():
            continue
        hit = m & at_least(inter, union, args.threshold)
        rows.append(
            (
                name,
                int(m.sum()),
                float(np.median(sim[m])),
                float((sim[m] == 0).mean()),
                float(at_least(inter[m], union[m], 0.5).mean()),
                float(at_least(inter[m], union[m], args.threshold).mean()),
                float(together[m].mean()),
                float(together[hit].mean()) if hit.any() else float("nan"),
            )
        )
    print(f"\n## 4. PAN plagiarism sentence pairs ({len(recs):,} pairs), word:5 shingles, verify=exact")
    print_section(
        "exact Jaccard of the two sentences, and pairs put in one cluster by dataforge",
        table(
            [
                "label",
                "pairs",
                "J median",
                "J = 0",
                "J >= 0.5",
                f"J >= {args.threshold}",
                f"same cluster @ {args.threshold}",
                f"same cluster, of J >= {args.threshold}",
            ],
            rows,
        ),
    )
    print(
        f"Whole sentence corpus ({len(docs):,} sentences, {len({t for _, t in docs}):,} distinct texts): "
        f"{whole['true_pairs']:,} "
        f"sentence pairs with J >= {args.threshold}; dataforge (verify=exact) co-clusters {whole['co_pairs']:,} pairs, "
        f"precision {whole['co_p']:.4f}, recall {whole['co_r']:.4f}; removes {whole['removed']:,} sentences "
        f"(exact answer {whole['ideal_removed']:,}, precision {whole['doc_p']:.4f}, recall {whole['doc_r']:.4f})."
    )
    return {"rows": rows, "whole": whole}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"), help="shared data folder")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/_data/quality"), help="work folder")
    ap.add_argument(
        "--limit", type=int, default=None, help="at most N Reuters docs, prose chunks and PAN pairs"
    )
    ap.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default 0.8)")
    ap.add_argument(
        "--low-thresholds",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[0.5, 0.3],
        help="lower thresholds for Clough & Stevenson (comma-separated; default 0.5,0.3)",
    )
    ap.add_argument(
        "--copies-per-rate", type=int, default=400, help="edited copies per edit rate (half per source)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the edits and the shuffle")
    ap.add_argument(
        "--edit-seeds",
        type=int,
        default=3,
        help="edited corpora to build, seeds SEED, SEED+1, ... (default 3)",
    )
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument(
        "--json", type=Path, default=None, help="also write the figures here (default OUT/results.json)"
    )
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; valid: {', '.join(PARTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(
        f"# dataforge near-duplicate quality, {date.today().isoformat()}\n\n"
        f"dataforge {dataforge.__version__}, Python {platform.python_version()}, Polars {pl.__version__}, "
        f"NumPy {np.__version__}, SciPy {scipy.__version__}; {os.cpu_count()} CPUs; "
        f"threshold {args.threshold}, num_perm 128, shingle word:5, normalize on, keep first, seed {args.seed}"
    )
    funcs = {"reuters": exp_reuters, "edits": exp_edits, "clough": exp_clough, "pan": exp_pan}
    out = {"threshold": args.threshold, "seed": args.seed}
    for p in PARTS:
        if p in parts:
            out[p] = funcs[p](args)
    total = time.perf_counter() - t0
    print(f"\nTotal time {total:.0f} s.")
    path = args.json or args.out / "results.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
