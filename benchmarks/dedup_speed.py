"""MinHash near-duplicate detection speed and memory: dataforge vs datasketch vs rensa.

Replicates the method of ``shared/docs/research/perf-baselines.md`` (word 5-grams, 128
permutations, LSH 16 bands x 8 rows, threshold 0.8) on the corpus built by ``make_corpus.py``
(100k real-text documents of 1-3 KB, 10% injected near-duplicates). Every method runs in its own
subprocess (so peak RSS values do not mix) ``--repeat`` times; the tables give the best and the
median run. Methods:

- ``datasketch-loop``: per document ``MinHash(128, seed=1)`` + ``update_batch`` (``--loop-docs``).
- ``datasketch-bulk``: ``MinHash.bulk`` + ``MinHashLSH(params=(16, 8))`` insert and query.
- ``rensa``: ``RMinHash.from_token_sets`` + ``RMinHashLSH(0.8, 128, 16)`` ``insert_many``/``query_all``.
  Both get their shingles from dataforge's plain-Python reference ``shingles()`` (normalized text,
  the same shingles as dataforge), timed as their "shingle" stage.
- ``dataforge-xxh3`` / ``dataforge-sha1``: the library's stages on the corpus in memory:
  normalization (``normalized_buffers``), shingle hashing and permutations (the compiled kernels,
  per 8 MB chunk as ``signatures`` does), ``signatures`` itself, LSH candidates (``band_hashes`` +
  sort + ``bucket_pairs`` as ``near.py`` does).
  Every in-memory method ends with the same verification (estimated Jaccard >= 0.8 from the
  signature matrix) and connected components, so "in-memory E2E" is text -> clusters.
- ``e2e-*``: ``dataforge.dedup([jsonl], output=..., force=True, bands=16, rows=8)`` (read JSONL ->
  shingle -> sign -> LSH -> verify exact -> cluster -> write shards) on 1 worker, on 2 workers
  (over the corpus split into 8 files, since one file is one task; and over the single file to
  show it), and on Ray (2 CPUs; ``ray.init`` timed separately). ``e2e-xxh3-1w-raw`` is the 1-worker
  run writing uncompressed shards (``compression="none"``), to show what zstd output costs.
- ``breakdown-*``: one ``dedup`` run on 1 worker with timers wrapped around its internal functions.
- ``--rounds N``: the method list runs N times, interleaved, each time ``--repeat`` runs per method;
  best and median are over all runs. This VM's speed drifts by 20-30 % over tens of minutes, so
  with one round the ratios depend on which method ran in a fast window; interleaving spreads the
  drift over every method.
- ``--scale``: peak RSS of ``dedup`` end to end and of the signature stage alone at ``--docs`` and
  at ``--scale-docs`` (1M) documents.

Run from the repository root (``make_corpus.py`` builds ``benchmarks/_data/`` on first use)::

    .venv-bench/bin/python benchmarks/dedup_speed.py                  # all methods, 100k docs
    .venv-bench/bin/python benchmarks/dedup_speed.py --scale          # + memory at 100k and 1M
    .venv-bench/bin/python benchmarks/dedup_speed.py --methods dataforge-xxh3 e2e-xxh3-1w --repeat 5
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import importlib.metadata
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_corpus  # noqa: E402

DATA = make_corpus.OUT
NUM_PERM, SEED, BANDS, ROWS, THRESHOLD, NGRAM = 128, 1, 16, 8, 0.8, 5
MIB = 1024 * 1024

# --------------------------------------------------------------------------- measuring helpers


def _status(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


_PEAK = [0.0]  # VmHWM folded in before each reset (see _reset_hwm)


def _reset_hwm() -> None:
    """Fold the current peak RSS into _PEAK and reset the kernel's VmHWM (``clear_refs`` 5)."""
    _PEAK[0] = max(_PEAK[0], _status("VmHWM"))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak() -> float:
    """Peak RSS of this process (MiB) over its whole life, across _reset_hwm calls."""
    return max(_PEAK[0], _status("VmHWM"))


def _cpu() -> float:
    import resource

    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Clock:
    """Accumulates named stage times of one run."""

    def __init__(self) -> None:
        self.t: dict[str, float] = collections.defaultdict(float)

    def add(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.t[name] += now - t0
        return now


def load_corpus(path: Path, limit: int | None = None) -> Any:
    import polars as pl

    df = pl.read_ndjson(path, schema={"id": pl.Utf8, "text": pl.Utf8})
    return df.head(limit) if limit else df


def truth_keys(corpus: Path, n: int) -> np.ndarray:
    """Injected pairs with exact J >= 0.8 inside the first ``n`` documents, as i * 2^32 + j keys."""
    meta_path = corpus.with_name(corpus.name.replace(".jsonl", ".truth.json"))
    meta = json.loads(meta_path.read_text())
    pairs = np.array(
        [(a, b) for a, b, j in meta.get("pairs", []) if j >= THRESHOLD and b < n], dtype=np.int64
    )
    if not pairs.size:
        return np.empty(0, np.int64)
    return pairs[:, 0] * (1 << 32) + pairs[:, 1]


def pair_keys(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    return np.unique(lo * (1 << 32) + hi)


def recall(found: np.ndarray, truth: np.ndarray) -> float | None:
    return float(np.isin(truth, found).mean()) if truth.size else None


def verify_and_cluster(sig: np.ndarray | list[Any], keys: np.ndarray, n_docs: int) -> tuple[np.ndarray, int]:
    """Estimated Jaccard >= threshold on candidate pairs, then connected components.

    ``sig`` is a signature matrix (dataforge) or a list of MinHash objects (datasketch, rensa),
    whose own ``jaccard`` method is used, as their users would.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    i, j = keys >> 32, keys & 0xFFFFFFFF
    est = np.empty(i.shape[0], dtype=np.float32)
    if isinstance(sig, list):
        est[:] = [sig[a].jaccard(sig[b]) for a, b in zip(i.tolist(), j.tolist())]
    else:
        for s in range(0, i.shape[0], 1 << 16):  # bounded temporaries
            e = slice(s, s + (1 << 16))
            est[e] = (sig[i[e]] == sig[j[e]]).mean(axis=1)
    ok = est >= THRESHOLD
    graph = coo_matrix((np.ones(int(ok.sum()), np.int8), (i[ok], j[ok])), shape=(n_docs, n_docs))
    n_comp, _ = connected_components(graph, directed=False)
    return keys[ok], n_docs - n_comp


# --------------------------------------------------------------------------- python shingles


def python_shingles(texts: list[str]) -> list[list[bytes]]:
    """dataforge's plain-Python reference shingles (normalized word 5-grams): the identity check."""
    from dataforge.dedup.minhash import shingles

    return [shingles(t, shingle=f"word:{NGRAM}") for t in texts]


def fast_shingles(texts: list[str], encode: bool) -> list[list[Any]]:
    """Word 5-grams the usual quick Python way (lowercase, split on whitespace, join), as
    perf-baselines fed datasketch and rensa; bytes for datasketch (its sha1 hashes bytes), str for
    rensa. No punctuation/digit normalization, so the shingle sets differ slightly from dataforge's.
    """
    out: list[list[Any]] = []
    for t in texts:
        w = t.lower().split()
        if len(w) < NGRAM:
            g = [" ".join(w)] if w else []
        else:
            g = [" ".join(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)]
        out.append([x.encode() for x in g] if encode else g)
    return out


# --------------------------------------------------------------------------- methods (in a worker)


def m_datasketch_loop(args: argparse.Namespace) -> dict[str, Any]:
    from datasketch import MinHash

    df = load_corpus(Path(args.corpus), args.loop_docs)
    texts = df["text"].to_list()
    res: dict[str, Any] = {"docs": len(texts), "bytes": int(df["text"].str.len_bytes().sum())}
    res["baseline_rss"] = _status("VmRSS")
    runs = []
    for _ in range(args.repeat):
        c = Clock()
        t0 = time.perf_counter()
        sh = fast_shingles(texts, encode=True)
        t0 = c.add("shingle", t0)
        sigs = []
        for s in sh:
            m = MinHash(num_perm=NUM_PERM, seed=SEED)
            m.update_batch(s)
            sigs.append(m)
        c.add("minhash", t0)
        runs.append(dict(c.t))
        del sh, sigs
    res["runs"] = runs
    return res


def _subset(args: argparse.Namespace, limit: int) -> tuple[Any, list[str], np.ndarray]:
    df = load_corpus(Path(args.corpus), limit)
    return df, df["text"].to_list(), truth_keys(Path(args.corpus), df.height)


def m_datasketch_bulk(args: argparse.Namespace) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    df, texts, truth = _subset(args, args.ds_docs)
    n = len(texts)
    res: dict[str, Any] = {"docs": n, "bytes": int(df["text"].str.len_bytes().sum())}
    res["baseline_rss"] = _status("VmRSS")
    runs = []
    for _ in range(args.repeat):
        c = Clock()
        t0 = time.perf_counter()
        sh = fast_shingles(texts, encode=True)
        t0 = c.add("shingle", t0)
        mhs = MinHash.bulk(sh, num_perm=NUM_PERM, seed=SEED)
        t0 = c.add("minhash", t0)
        lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
        with lsh.insertion_session() as session:
            for i, m in enumerate(mhs):
                session.insert(i, m, check_duplication=False)
        li: list[int] = []
        lj: list[int] = []
        for i, m in enumerate(mhs):
            for j in lsh.query(m):
                if j > i:
                    li.append(i)
                    lj.append(j)
        keys = pair_keys(np.array(li, np.int64), np.array(lj, np.int64))
        t0 = c.add("lsh", t0)
        verified, clustered = verify_and_cluster(mhs, keys, n)
        c.add("verify", t0)
        runs.append(dict(c.t))
        info = {"candidates": int(keys.size), "verified": int(verified.size), "clustered_docs": clustered}
        info.update(recall_candidates=recall(keys, truth), recall_verified=recall(verified, truth))
        del sh, mhs, lsh
    res["runs"], res["info"] = runs, info
    return res


def m_rensa(args: argparse.Namespace) -> dict[str, Any]:
    import rensa

    df, texts, truth = _subset(args, None)
    n = len(texts)
    res: dict[str, Any] = {"docs": n, "bytes": int(df["text"].str.len_bytes().sum())}
    res["version"] = importlib.metadata.version("rensa")
    res["baseline_rss"] = _status("VmRSS")
    runs = []
    for _ in range(args.repeat):
        c = Clock()
        t0 = time.perf_counter()
        sh = fast_shingles(texts, encode=False)
        t0 = c.add("shingle", t0)
        mhs = rensa.RMinHash.from_token_sets(sh, NUM_PERM, SEED)
        t0 = c.add("minhash", t0)
        lsh = rensa.RMinHashLSH(THRESHOLD, NUM_PERM, BANDS)
        lsh.insert_many(mhs, 0)
        found = lsh.query_all(mhs)
        sizes = np.fromiter((len(f) for f in found), np.int64, n)
        flat = np.fromiter((k for f in found for k in f), np.int64, int(sizes.sum()))
        qi = np.repeat(np.arange(n, dtype=np.int64), sizes)
        keep = flat != qi
        keys = pair_keys(qi[keep], flat[keep])
        t0 = c.add("lsh", t0)
        verified, clustered = verify_and_cluster(mhs, keys, n)
        c.add("verify", t0)
        runs.append(dict(c.t))
        info = {"candidates": int(keys.size), "verified": int(verified.size), "clustered_docs": clustered}
        info.update(recall_candidates=recall(keys, truth), recall_verified=recall(verified, truth))
        del sh, mhs, lsh, found
    res["runs"], res["info"] = runs, info
    return res


def _chunks(lengths: np.ndarray, chunk_bytes: int) -> list[tuple[int, int]]:
    """The same ~8 MB document groups as ``minhash.signatures``."""
    out, start, n = [], 0, lengths.shape[0]
    while start < n:
        cum = np.cumsum(lengths[start:])
        stop = min(n, start + max(1, int(np.searchsorted(cum, chunk_bytes, side="right"))))
        out.append((start, stop))
        start = stop
    return out


def candidate_pairs(sig: np.ndarray, n_sh: np.ndarray, c: Clock, t0: float) -> tuple[np.ndarray, float]:
    """LSH candidates as near.py finds them: band hashes, sort by (band, hash), bucket pairs."""
    import polars as pl

    from dataforge.dedup.lsh import band_hashes, bucket_pairs

    live = np.flatnonzero(n_sh > 0)
    bh = band_hashes(sig[live], BANDS, ROWS)
    t0 = c.add("lsh_band_hashes", t0)
    table = pl.DataFrame(
        {
            "band": np.tile(np.arange(BANDS, dtype=np.int16), live.shape[0]),
            "hash": bh.ravel(),
            "_ord": np.repeat(live.astype(np.int64), BANDS),
        }
    ).sort(["band", "hash", "_ord"])
    t0 = c.add("lsh_sort", t0)
    band, h, o = table["band"].to_numpy(), table["hash"].to_numpy(), table["_ord"].to_numpy()
    new = np.r_[True, (band[1:] != band[:-1]) | (h[1:] != h[:-1])]
    starts = np.flatnonzero(new)
    sizes = np.diff(np.r_[starts, table.height])
    multi = sizes > 1
    left, right = bucket_pairs(starts[multi], sizes[multi], 12)
    keys = pair_keys(o[left], o[right])
    t0 = c.add("lsh_pairs", t0)
    return keys, t0


def m_dataforge_stages(args: argparse.Namespace) -> dict[str, Any]:
    import polars as pl

    from dataforge.dedup import _kernels as K
    from dataforge.dedup import minhash as mh

    df, _, truth = _subset(args, None)
    texts = df["text"]
    del _
    n = texts.len()
    params = mh.MinHashParams(num_perm=NUM_PERM, seed=SEED, shingle=f"word:{NGRAM}", hash=args.hash)
    a, b = mh.permutations(NUM_PERM, SEED)
    mode = 0 if args.hash == "xxh3" else 1
    lengths = texts.str.len_bytes().fill_null(0).to_numpy()
    chunks = _chunks(lengths, getattr(mh, "_CHUNK_BYTES", 8 << 20))
    res: dict[str, Any] = {"docs": n, "bytes": int(lengths.sum()), "chunks": len(chunks)}
    t0 = time.perf_counter()
    mh.signatures(texts.head(64), params)  # numba: load (or compile) the cached kernels
    warm, warm_n = mh.signatures(texts.head(64), params)
    verify_and_cluster(warm, candidate_pairs(warm, warm_n, Clock(), time.perf_counter())[0], 64)
    res["warmup_s"] = time.perf_counter() - t0
    res["baseline_rss"] = _status("VmRSS")
    kernels_ok = hasattr(K, "word_shingle_hashes") and hasattr(K, "minhash_signatures")
    res["kernel_stages"] = kernels_ok
    runs = []
    cpu0 = _cpu()
    for _ in range(args.repeat):
        c = Clock()
        # 1. stage by stage over the same 8 MB chunks
        n_shingles = 0
        for s, e in chunks:
            part = texts.slice(s, e - s)
            t0 = time.perf_counter()
            data, offs = mh.normalized_buffers(part, normalize=True)
            t0 = c.add("normalize", t0)
            if kernels_ok:
                hv, n_sh = K.word_shingle_hashes(data, offs, NGRAM, mode)
                t0 = c.add("shingle_hash", t0)
                K.minhash_signatures(hv, n_sh, a, b)
                c.add("permute", t0)
            else:  # kernels changed: shingle_hashes minus its normalization
                hv, n_sh = mh.shingle_hashes(part, params)
                t0 = c.add("shingle_hash", t0)
                c.t["shingle_hash"] -= c.t["normalize"] / len(chunks)
            n_shingles += int(hv.shape[0])
            del data, offs, hv
        # 2. the public function, as the pipeline calls it
        t0 = time.perf_counter()
        sig, n_sh = mh.signatures(texts, params)
        t0 = c.add("signatures", t0)
        # 3. LSH candidates, 4. verify + cluster
        keys, t0 = candidate_pairs(sig, n_sh, c, t0)
        verified, clustered = verify_and_cluster(sig, keys, n)
        c.add("verify", t0)
        c.t["lsh"] = c.t["lsh_band_hashes"] + c.t["lsh_sort"] + c.t["lsh_pairs"]
        runs.append(dict(c.t))
    res["cpu_s"] = _cpu() - cpu0
    res["runs"] = runs
    res["info"] = {
        "shingles": n_shingles,
        "candidates": int(keys.size),
        "verified": int(verified.size),
        "clustered_docs": clustered,
        "recall_candidates": recall(keys, truth),
        "recall_verified": recall(verified, truth),
        "polars_threads": pl.thread_pool_size(),
    }
    return res


def _rss_parts() -> tuple[float, float, float]:
    """RssAnon, RssFile (mapped files, e.g. memory-mapped Arrow), RssShmem of this process, MiB."""
    vals = {"RssAnon": 0.0, "RssFile": 0.0, "RssShmem": 0.0}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in vals:
                vals[key] = int(line.split()[1]) / 1024
    return vals["RssAnon"], vals["RssFile"], vals["RssShmem"]


class PhaseLog:
    """A dataforge Progress that records when each runner phase starts and ends, this process's
    peak RSS in each phase (VmHWM reset at every phase start), and, when ``sample`` is set, the
    largest anonymous and file-backed RSS seen by a 20 ms sampler thread in each phase."""

    def __init__(self, sample: bool = False) -> None:
        self.phases: list[list[Any]] = []
        self.label = "before the first phase"
        self.parts: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if sample else None
        if self._thread:
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            anon, file, _shm = _rss_parts()
            cur = self.parts.setdefault(self.label, [0.0, 0.0])
            cur[0], cur[1] = max(cur[0], anon), max(cur[1], file)

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def start(self, label: str, total: int) -> None:
        self.label = label.split(" (")[0]
        self.gap = max(getattr(self, "gap", 0.0), _status("VmHWM"))  # peak since the last phase
        _reset_hwm()
        self.phases.append([label, total, time.perf_counter(), None, None])

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        self.label = "between phases"
        self.phases[-1][3] = time.perf_counter()
        self.phases[-1][4] = _status("VmHWM")  # this process's peak RSS during the phase
        _reset_hwm()

    def phase_peaks(self) -> dict[str, float]:
        out: dict[str, float] = {
            "between phases (incl. RSS left from the phase before)": getattr(self, "gap", 0.0)
        }
        for label, _total, _a, _b, peak in self.phases:
            key = label.split(" (")[0]
            out[key] = max(out.get(key, 0.0), peak or 0.0)
        return out

    def peak_phase(self) -> tuple[str, float]:
        """The phase with this process's highest peak RSS, and that peak."""
        peaks = self.phase_peaks()
        key = max(peaks, key=peaks.__getitem__)
        return key, peaks[key]


def _phase_times(log: PhaseLog, t_start: float, t_end: float) -> dict[str, float]:
    out: dict[str, float] = {}
    covered = 0.0
    for label, _total, a, b, *_ in log.phases:
        key = label.split(" (")[0]
        out[key] = out.get(key, 0.0) + (b - a)
        covered += b - a
    out["other (discover, plan, manifest, report)"] = (t_end - t_start) - covered
    return out


def _e2e_inputs(args: argparse.Namespace) -> list[str]:
    corpus = Path(args.corpus)
    if args.parts:
        parts = corpus.with_name(corpus.stem + "-parts")
        return sorted(str(p) for p in parts.glob("part-*.jsonl"))
    return [str(corpus)]


def _cluster_recall(out: Path, corpus: Path, n: int) -> float | None:
    import polars as pl

    truth = truth_keys(corpus, n)
    if not truth.size:
        return None
    frames = [
        pl.read_ipc(p, columns=["id", "cluster_id"])
        for sub in ("data", "dropped")
        for p in sorted((out / sub).glob("*.arrow"))
    ]
    if not frames:
        return None
    df = pl.concat(frames).with_columns(pl.col("id").str.slice(1).cast(pl.Int64).alias("pos")).sort("pos")
    cid = np.full(n, -1, np.int64)
    cid[df["pos"].to_numpy()] = df["cluster_id"].to_numpy()
    i, j = truth >> 32, truth & 0xFFFFFFFF
    return float((cid[i] == cid[j]).mean())


def m_e2e(args: argparse.Namespace, before_runs: Callable[[], None] | None = None) -> dict[str, Any]:
    import polars as pl

    # not ``dataforge.dedup``: once ``dataforge.dedup.*`` is imported, that name is the subpackage
    from dataforge.api import dedup
    from dataforge.dedup.minhash import MinHashParams, signatures

    inputs = _e2e_inputs(args)
    corpus = Path(args.corpus)
    meta = json.loads(corpus.with_name(corpus.name.replace(".jsonl", ".truth.json")).read_text())
    n = meta["docs"]
    out = DATA / "out" / args.method
    res: dict[str, Any] = {"docs": n, "bytes": meta["text_bytes"], "inputs": len(inputs)}
    res["input_file_bytes"] = sum(os.path.getsize(p) for p in inputs)
    kw = {"bands": BANDS, "rows": ROWS, "hash": args.hash, "num_perm": NUM_PERM, "seed": SEED}
    kw.update(threshold=THRESHOLD, shingle=f"word:{NGRAM}", workers=args.workers, executor=args.executor)
    kw["compression"] = args.compression
    if args.executor == "local" and args.workers == 1:  # warm the in-process numba kernels
        signatures(pl.Series(["warm up the kernels " * 4]), MinHashParams(hash=args.hash))
    ray = None
    if args.executor == "ray":
        t0 = time.perf_counter()
        import ray

        res["ray_import_s"] = time.perf_counter() - t0
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        t0 = time.perf_counter()
        ray.init(  # the same options as dataforge's RayExecutor; it reuses this runtime
            num_cpus=args.workers,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"POLARS_MAX_THREADS": "1"}},
        )
        res["ray_init_s"] = time.perf_counter() - t0
    res["baseline_rss"] = _status("VmRSS")
    if before_runs:
        before_runs()
    runs, infos = [], []
    cpu0 = _cpu()
    for _ in range(args.repeat):
        shutil.rmtree(out, ignore_errors=True)
        log = PhaseLog(sample=args.method.startswith("mem-"))
        t0 = time.perf_counter()
        report = dedup(inputs, output=out, force=True, progress=log, **kw)
        t1 = time.perf_counter()
        log.close()
        run = {"e2e": t1 - t0, **{f"phase:{k}": v for k, v in _phase_times(log, t0, t1).items()}}
        run.update({f"runner:{k}": v for k, v in report.timings.items()})
        runs.append(run)
        fin = report.global_info.get("dedup.minhash", {}).get("finalize", {})
        infos.append(
            {
                "kept": report.kept,
                "dropped": report.dropped,
                "candidates": fin.get("candidate_pairs"),
                "verified": fin.get("verified_pairs"),
                "clusters": fin.get("clusters"),
                "near_duplicates": fin.get("near_duplicates"),
                "runner_peak_rss_mb": report.peak_rss_mb,
                "peak_phase": log.peak_phase(),
                "phase_peaks": log.phase_peaks(),
                "phase_rss_parts": log.parts,
            }
        )
    res["cpu_s"] = _cpu() - cpu0
    if ray is not None:
        t0 = time.perf_counter()
        ray.shutdown()
        res["ray_shutdown_s"] = time.perf_counter() - t0
    res["runs"] = runs
    res["info"] = infos[-1]
    res["info"]["peak_phase"] = infos[0]["peak_phase"]  # the first run's (later runs reuse memory)
    res["info"]["phase_peaks"] = infos[0]["phase_peaks"]
    res["info"]["phase_rss_parts"] = infos[0]["phase_rss_parts"]
    res["info"]["recall_clusters"] = _cluster_recall(out, corpus, n)
    res["output_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return res


# functions timed by ``breakdown-*`` (module, attribute); missing ones are skipped. Times are
# recorded per call path ("keys > signatures > normalized_buffers"), so nesting is visible.
BREAKDOWN = [
    ("dataforge.stages", "read_batches"),
    ("dataforge.stages", "read_ipc"),
    ("dataforge.dedup.near", "MinHashDedup.keys"),
    ("dataforge.dedup.near", "signatures"),
    ("dataforge.dedup.minhash", "shingle_hashes"),
    ("dataforge.dedup.near", "shingle_hashes"),
    ("dataforge.dedup.minhash", "normalized_buffers"),
    ("dataforge.dedup.minhash", "_buffers"),
    ("dataforge.dedup._kernels", "non_ascii_rows"),
    ("dataforge.dedup.minhash", "_unicode_fix"),
    ("dataforge.dedup._kernels", "canonical"),
    ("dataforge.dedup._kernels", "word_shingle_hashes"),
    ("dataforge.dedup._kernels", "minhash_signatures"),
    ("dataforge.dedup.near", "MinHashDedup._sort_values"),
    ("dataforge.dedup.near", "_save_npy"),
    ("dataforge.dedup.near", "_write_ipc"),
    ("dataforge.dedup.near", "_band_table"),
    ("dataforge.dedup.near", "band_hashes"),
    ("dataforge.stages", "_IpcSink.write"),
    ("dataforge.stages", "_IpcSink.commit"),
    ("dataforge.dedup.near", "MinHashDedup.candidates"),
    ("dataforge.dedup.near", "_bucket_edges"),
    ("dataforge.dedup.near", "MinHashDedup.finalize"),
    ("dataforge.dedup.near", "s_curve"),
    ("dataforge.dedup.near", "_Nodes.collect"),
    ("dataforge.dedup.near", "_gather_sig"),
    ("dataforge.dedup.near", "_gather_attr"),
    ("dataforge.dedup.near", "_Nodes.load_sets"),
    ("dataforge.dedup.near", "_unique_sets"),
    ("dataforge.dedup.near", "_Nodes.similarity"),
    ("dataforge.dedup.near", "_decide"),
    ("dataforge.dedup.clusters", "components"),
    ("dataforge.dedup.near", "_resolve"),
    ("dataforge.step", "GlobalContext.write_decisions"),
    ("dataforge.stages", "task_decisions"),
    ("dataforge.dedup.near", "MinHashDedup.annotate"),
    ("dataforge.stages", "run_assemble"),
    ("dataforge.stages", "conform"),
    ("dataforge.stages", "write_shard"),
    ("dataforge.io.shards", "_fsync"),
    ("dataforge.io.shards", "sha256_file"),
]


class Timers:
    """Inclusive time and calls per call path of the wrapped functions."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.n: collections.Counter[str] = collections.Counter()
        self.stack: list[str] = []

    def reset(self) -> None:
        self.t.clear()
        self.n.clear()

    def _enter(self, label: str) -> str:
        self.stack.append(label)
        key = " > ".join(self.stack)
        self.t.setdefault(key, 0.0)
        return key

    def _leave(self, key: str, t0: float) -> None:
        self.t[key] += time.perf_counter() - t0
        self.n[key] += 1
        self.stack.pop()

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen(*a: Any, **k: Any) -> Any:
                it = fn(*a, **k)
                while True:
                    key = self._enter(label)
                    t0 = time.perf_counter()
                    try:
                        x = next(it)
                    except StopIteration:
                        self._leave(key, t0)
                        return
                    self._leave(key, t0)
                    self.n[key] -= 1  # count calls, not batches
                    yield x

            return gen

        @functools.wraps(fn)
        def call(*a: Any, **k: Any) -> Any:
            key = self._enter(label)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._leave(key, t0)

        return call

    def install(self) -> list[str]:
        missing = []
        for mod_name, attr in BREAKDOWN:
            try:
                owner: Any = importlib.import_module(mod_name)
                *path, name = attr.split(".")
                for p in path:
                    owner = getattr(owner, p)
                fn = getattr(owner, name)
            except (ImportError, AttributeError):
                missing.append(f"{mod_name}.{attr}")
                continue
            setattr(owner, name, self.wrap(attr.split(".")[-1], fn))
        return missing


def m_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    timers = Timers()
    missing = timers.install()
    args.repeat = 1
    res = m_e2e(args, before_runs=timers.reset)
    res["breakdown"] = {k: [v, timers.n[k]] for k, v in timers.t.items()}
    res["breakdown_missing"] = missing
    return res


def m_check(args: argparse.Namespace) -> dict[str, Any]:
    """Are dataforge's sha1 signatures identical to datasketch's MinHash (on ``--check-docs``)?"""
    from datasketch import MinHash

    from dataforge.dedup.minhash import MinHashParams, signatures

    df = load_corpus(Path(args.corpus), args.check_docs)
    sig, _ = signatures(df["text"], MinHashParams(num_perm=NUM_PERM, seed=SEED, hash="sha1"))
    ds = np.stack(
        [
            m.hashvalues
            for m in MinHash.bulk(python_shingles(df["text"].to_list()), num_perm=NUM_PERM, seed=SEED)
        ]
    )
    return {"docs": df.height, "identical": bool((ds.astype(np.uint32) == sig).all()), "runs": []}


class AnonPeak:
    """Largest anonymous RSS (RssAnon, MiB) seen by a 10 ms sampler thread while active."""

    def __enter__(self) -> AnonPeak:
        self.base = _rss_parts()[0]
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_parts()[0])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_parts()[0])


def m_mem_sig(args: argparse.Namespace) -> dict[str, Any]:
    """Memory of the signature stage alone: streaming 10k-row batches, then the whole column.

    Measured as anonymous RSS (10 ms sampler) above the anonymous RSS just before the stage, so
    that file mappings and allocator memory left over from loading the corpus do not blur it.
    """
    import gc

    import orjson
    import polars as pl

    from dataforge.dedup.minhash import MinHashParams, signatures

    params = MinHashParams(num_perm=NUM_PERM, seed=SEED, hash=args.hash)
    signatures(pl.Series(["warm up the kernels " * 4]), params)
    res: dict[str, Any] = {"runs": [], "baseline_rss": _status("VmRSS")}
    t0 = time.perf_counter()
    n = 0
    with AnonPeak() as stream, open(args.corpus, "rb") as f:
        batch: list[str] = []
        for line in f:
            batch.append(orjson.loads(line)["text"])
            if len(batch) == 10_000:
                signatures(pl.Series(batch), params)
                n += len(batch)
                batch = []
        if batch:
            signatures(pl.Series(batch), params)
            n += len(batch)
    res["stream_s"] = time.perf_counter() - t0
    res["docs"] = n
    res["stream_hwm"] = _status("VmHWM")
    res["stream_anon_base"], res["stream_anon_peak"] = stream.base, stream.peak
    _reset_hwm()
    texts = load_corpus(Path(args.corpus))["text"]
    gc.collect()
    res["loaded_rss"] = _status("VmRSS")
    res["column_mib"] = texts.estimated_size() / MIB
    res["text_bytes"] = int(texts.str.len_bytes().sum())
    _reset_hwm()
    t0 = time.perf_counter()
    with AnonPeak() as whole:
        sig, _ = signatures(texts, params)
    res["whole_s"] = time.perf_counter() - t0
    res["sig_matrix_mib"] = sig.nbytes / MIB
    res["whole_hwm"] = _status("VmHWM")
    res["whole_anon_base"], res["whole_anon_peak"] = whole.base, whole.peak
    return res


METHODS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], dict[str, Any]]] = {
    "check": (m_check, {}),
    "datasketch-loop": (m_datasketch_loop, {}),
    "datasketch-bulk": (m_datasketch_bulk, {}),
    "rensa": (m_rensa, {}),
    "dataforge-xxh3": (m_dataforge_stages, {"hash": "xxh3"}),
    "dataforge-sha1": (m_dataforge_stages, {"hash": "sha1"}),
    "e2e-xxh3-1w": (m_e2e, {"hash": "xxh3"}),
    "e2e-sha1-1w": (m_e2e, {"hash": "sha1"}),
    "e2e-xxh3-1w-raw": (m_e2e, {"hash": "xxh3", "compression": "none"}),
    "e2e-xxh3-2w": (m_e2e, {"hash": "xxh3", "workers": 2, "parts": True}),
    "e2e-xxh3-2w-1file": (m_e2e, {"hash": "xxh3", "workers": 2}),
    "e2e-xxh3-ray": (m_e2e, {"hash": "xxh3", "workers": 2, "parts": True, "executor": "ray"}),
    "breakdown-xxh3": (m_breakdown, {"hash": "xxh3"}),
    "breakdown-sha1": (m_breakdown, {"hash": "sha1"}),
    "mem-e2e": (m_e2e, {"hash": "xxh3"}),
    "mem-sig": (m_mem_sig, {"hash": "xxh3"}),
}
DEFAULT_METHODS = [m for m in METHODS if not m.startswith("mem-")]
WORKER_DEFAULTS = {"hash": "xxh3", "workers": 1, "parts": False, "executor": "local", "compression": "zstd"}


def worker_main(args: argparse.Namespace) -> None:
    fn, extra = METHODS[args.method]
    for k, v in {**WORKER_DEFAULTS, **extra}.items():
        setattr(args, k, v)
    code = code_fingerprint()
    t0 = time.perf_counter()
    res = fn(args)
    res["code"] = code
    res["code_changed"] = code != code_fingerprint()
    res["method"] = args.method
    res["wall_s"] = time.perf_counter() - t0
    res["hwm"] = _peak()
    import resource

    res["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    Path(args.result).write_text(json.dumps(res))


# --------------------------------------------------------------------------- orchestration


def _tree_rss(root: int) -> tuple[float, int]:
    """Summed RSS (MiB) of ``root`` and all its descendants, and their number."""
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            kids[int(s[s.rindex(")") + 2 :].split()[1])].append(int(d))
    page = os.sysconf("SC_PAGE_SIZE")
    total, count, stack = 0, 0, [root]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
            count += 1
        except OSError:
            pass
        stack.extend(kids.get(p, ()))
    return total / MIB, count


def run_method(method: str, args: argparse.Namespace, corpus: Path) -> dict[str, Any]:
    result = DATA / f"result-{method}-{os.getpid()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--corpus", str(corpus)]
    cmd += ["--result", str(result), "--repeat", str(args.repeat), "--loop-docs", str(args.loop_docs)]
    cmd += ["--ds-docs", str(args.ds_docs), "--check-docs", str(args.check_docs)]
    print(f"  {method} ...", end="", flush=True, file=sys.stderr)
    import resource

    busy0, own0, t_start = _busy_seconds(), _children_cpu(resource), time.perf_counter()
    load0 = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0]
    multi = "2w" in method or "ray" in method

    def sample() -> None:
        while proc.poll() is None:
            rss, count = _tree_rss(proc.pid) if multi else _tree_rss_single(proc.pid)
            if rss > peak[0]:
                peak[0], peak[1] = rss, count
            time.sleep(0.2 if multi else 0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = proc.communicate()
    th.join()
    wall = time.perf_counter() - t_start
    others = (_busy_seconds() - busy0) - (_children_cpu(resource) - own0)
    contention = {
        "others_cores": max(0.0, others / wall),
        "load_start": load0,
        "load_end": os.getloadavg()[0],
    }
    if proc.returncode != 0 or not result.exists():
        print(f" FAILED\n{err[-3000:]}", file=sys.stderr)
        return {"method": method, "error": err[-3000:]}
    res = json.loads(result.read_text())
    result.unlink()
    res["tree_peak_rss"], res["tree_procs"] = peak
    res["contention"] = contention
    print(f" {res['wall_s']:.1f} s", file=sys.stderr)
    return res


def merge_rounds(first: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """One method's results over several rounds: every run kept (best and median are taken over
    all of them), CPU and wall time added up, the highest memory and contention kept."""
    if "error" in first or "error" in more:
        return first if "error" in first else more
    out = dict(first)
    out["runs"] = first["runs"] + more["runs"]
    out["rounds"] = first.get("rounds", 1) + 1
    for key in ("wall_s", "cpu_s"):
        if key in first and key in more:
            out[key] = first[key] + more[key]
    for key in ("hwm", "children_maxrss", "tree_peak_rss"):
        if key in first and key in more and more[key] > first[key]:
            out[key] = more[key]
            if key == "tree_peak_rss":
                out["tree_procs"] = more["tree_procs"]
    c1, c2 = first["contention"], more["contention"]
    out["contention"] = {
        "others_cores": max(c1["others_cores"], c2["others_cores"]),
        "load_start": c1["load_start"],
        "load_end": c2["load_end"],
    }
    return out


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu(resource: Any) -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def _tree_rss_single(pid: int) -> tuple[float, int]:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB, 1
    except OSError:
        return 0.0, 0


# --------------------------------------------------------------------------- report


def _best_med(res: dict[str, Any], key: str) -> tuple[float, float] | None:
    vals = [r[key] for r in res.get("runs", []) if key in r]
    return (min(vals), statistics.median(vals)) if vals else None


def _rate(n: float, secs: float | None) -> str:
    return f"{n / secs:,.0f}" if secs else "–"


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return fmt.format(x) if x is not None else "–"


def _stage_secs(res: dict[str, Any], which: str) -> float | None:
    """Best-of-runs seconds of a logical stage (sum of stages taken per run, then min)."""
    parts = {
        "shingle": ["shingle"],
        "sig": ["shingle", "minhash"],
        "lsh": ["lsh"],
        "e2e_mem": ["shingle", "minhash", "lsh", "verify"],
    }
    runs = res.get("runs", [])
    if not runs:
        return None
    if "signatures" in runs[0]:  # dataforge stages
        parts = {
            "shingle": ["normalize", "shingle_hash"],
            "sig": ["signatures"],
            "lsh": ["lsh"],
            "e2e_mem": ["signatures", "lsh", "verify"],
        }
    keys = parts[which]
    if not all(k in runs[0] for k in keys):
        return None
    return min(sum(r[k] for k in keys) for r in runs)


def _median_secs(res: dict[str, Any], keys: list[str]) -> float | None:
    runs = res.get("runs", [])
    if not runs or not all(k in runs[0] for k in keys):
        return None
    return statistics.median(sum(r[k] for k in keys) for r in runs)


def _stage_table(results: dict[str, dict[str, Any]], w: Callable[[str], None]) -> None:
    """The per-stage table of the in-memory dataforge methods."""
    w("### dataforge stages in memory (seconds per run over the whole corpus: best / median)\n")
    w("| stage | xxh3 best s | xxh3 median s | xxh3 docs/s | sha1 best s | sha1 median s | sha1 docs/s |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    labels = [
        ("normalize", "normalize (`normalized_buffers`)"),
        ("shingle_hash", "shingle + hash kernel (`word_shingle_hashes`)"),
        ("permute", "permutations kernel (`minhash_signatures`)"),
        ("signatures", "`signatures()` (all of the above, one call)"),
        ("lsh_band_hashes", "LSH: `band_hashes`"),
        ("lsh_sort", "LSH: band table + sort"),
        ("lsh_pairs", "LSH: buckets -> `bucket_pairs` -> unique pairs"),
        ("lsh", "LSH total"),
        ("verify", "verify (estimate) + connected components"),
    ]
    for key, label in labels:
        row = [label]
        for name in ("dataforge-xxh3", "dataforge-sha1"):
            r = results.get(name, {})
            bm = _best_med(r, key)
            row += [f"{bm[0]:.3f}", f"{bm[1]:.3f}", _rate(r["docs"], bm[0])] if bm else ["–"] * 3
        w("| " + " | ".join(row) + " |")
    w("")


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    ds = results.get("datasketch-bulk", {})
    rn = results.get("rensa", {})
    ds_sig = ds and ds.get("docs") / _stage_secs(ds, "sig")
    rn_sig = rn and rn.get("docs") / _stage_secs(rn, "sig")
    ds_e2e = ds and ds.get("docs") / _stage_secs(ds, "e2e_mem")
    rn_e2e = rn and rn.get("docs") / _stage_secs(rn, "e2e_mem")

    def ratio(x: float | None, ref: float | None) -> str:
        return f"{x / ref:.1f}x" if x and ref else "–"

    w("### In memory: text -> signatures -> LSH candidates -> verified clusters (best of runs, 1 process)\n")
    w(
        "| method | docs | shingle docs/s | signatures docs/s (MB/s) | LSH docs/s | in-memory E2E docs/s (MB/s)"
        " | peak RSS MiB (above loaded corpus) | sig vs datasketch bulk / rensa | E2E vs datasketch bulk / rensa"
        " | candidates | R cand / R verified |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("datasketch-loop", "datasketch-bulk", "rensa", "dataforge-xxh3", "dataforge-sha1"):
        r = results.get(name)
        if not r or "error" in r:
            continue
        n, mb = r["docs"], r["bytes"] / 1e6
        sh, sg, ls, ee = (_stage_secs(r, k) for k in ("shingle", "sig", "lsh", "e2e_mem"))
        info = r.get("info", {})
        rss = f"{r['hwm']:,.0f} (+{r['hwm'] - r['baseline_rss']:,.0f})"
        sig_rate = n / sg if sg else None
        e2e_rate = n / ee if ee else None
        rc = info.get("recall_candidates")
        rv = info.get("recall_verified")
        w(
            f"| {name} | {n:,} | {_rate(n, sh)} | {_rate(n, sg)} ({mb / sg:.1f}) | {_rate(n, ls)} | "
            + (f"{_rate(n, ee)} ({mb / ee:.1f})" if ee else "–")
            + f" | {rss} | {ratio(sig_rate, ds_sig)} / {ratio(sig_rate, rn_sig)} | "
            f"{ratio(e2e_rate, ds_e2e)} / {ratio(e2e_rate, rn_e2e)} | {_f(info.get('candidates'))} | "
            f"{_f(rc, '{:.3f}')} / {_f(rv, '{:.3f}')} |"
        )
    w("")
    # dataforge stage table
    if any(k in results for k in ("dataforge-xxh3", "dataforge-sha1")):
        _stage_table(results, w)
    # e2e
    w("### End to end: `dataforge.dedup(...)` JSONL -> shards (best / median of runs)\n")
    w(
        "| run | input files | best s | median s | docs/s | docs/s per core | MB/s | CPU s per run (util.) "
        "| peak RSS MiB (above imports) | peak reached in | candidates | verified | near-dups removed | R clusters |"
    )
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    e2e_best = {}
    for name in (
        "e2e-xxh3-1w",
        "e2e-xxh3-1w-raw",
        "e2e-sha1-1w",
        "e2e-xxh3-2w",
        "e2e-xxh3-2w-1file",
        "e2e-xxh3-ray",
    ):
        r = results.get(name)
        if not r or "error" in r:
            continue
        bm = _best_med(r, "e2e")
        n = r["docs"]
        one_worker = "-1w" in name
        cores = 1 if one_worker else 2
        e2e_best[name] = n / bm[0]
        info = r["info"]
        util = ""
        if "cpu_s" in r and "ray" not in name:
            per = r["cpu_s"] / len(r["runs"])
            util = f"{per:.1f} ({per / statistics.median(x['e2e'] for x in r['runs']):.2f})"
        peak = max(r.get("tree_peak_rss", 0), r["hwm"])
        w(
            f"| {name} | {r['inputs']} | {bm[0]:.2f} | {bm[1]:.2f} | {n / bm[0]:,.0f} | {n / bm[0] / cores:,.0f} | "
            f"{r['bytes'] / 1e6 / bm[0]:.1f} | {util or '–'} | {peak:,.0f} (+{peak - r['baseline_rss']:,.0f}) | "
            f"{info.get('peak_phase', ['?'])[0] if one_worker else '–'} | "
            f"{_f(info.get('candidates'))} | {_f(info.get('verified'))} | {_f(info.get('near_duplicates'))} | "
            f"{_f(info.get('recall_clusters'), '{:.3f}')} |"
        )
        if "-2w" in name and len(r["runs"]) > 1:  # later runs reuse the first run's worker pool
            first = r["runs"][0]["e2e"]
            w(
                f"| ↳ first run only (spawns the pool worker: imports, kernels) | | {first:.2f} | | "
                f"{n / first:,.0f} | {n / first / cores:,.0f} | | | | | | | | |"
            )
        if "ray_init_s" in r:
            w(
                f"| ↳ Ray start-up (not in the row above) | | import {r['ray_import_s']:.2f} s, "
                f"`ray.init` {r['ray_init_s']:.2f} s, shutdown {r.get('ray_shutdown_s', 0):.2f} s "
                f"| first run {r['runs'][0]['e2e']:.2f} s | | | | | {r.get('tree_procs', 0)} processes | | | | | |"
            )
    w("")
    w("Phases of the runs (best run of each; seconds):\n")
    names = [
        k
        for k in ("e2e-xxh3-1w", "e2e-xxh3-1w-raw", "e2e-sha1-1w", "e2e-xxh3-2w", "e2e-xxh3-ray")
        if results.get(k, {}).get("runs")
    ]
    if names:
        phase_keys: list[str] = []
        for k in names:
            for p in results[k]["runs"][0]:
                if p.startswith("phase:") and p not in phase_keys:
                    phase_keys.append(p)
        w("| phase | " + " | ".join(names) + " |")
        w("|---|" + "---:|" * len(names))
        for p in phase_keys:
            row = [p.removeprefix("phase:")]
            for k in names:
                runs = results[k]["runs"]
                best = min(runs, key=lambda x: x["e2e"])
                row.append(f"{best.get(p, 0):.2f}")
            w("| " + " | ".join(row) + " |")
        w(
            "| **total** | "
            + " | ".join(f"**{min(x['e2e'] for x in results[k]['runs']):.2f}**" for k in names)
            + " |"
        )
        w("")
    peak_runs = [
        k for k in results if (k.endswith("-1w") or k.startswith("mem-e2e")) and "runs" in results[k]
    ]
    peak_runs = [k for k in peak_runs if results[k].get("info", {}).get("phase_peaks")]
    if peak_runs:
        w("Peak RSS (MiB) of the `dedup` process during each phase (first run; 1 worker, in-process):\n")
        w("| phase | " + " | ".join(peak_runs) + " |")
        w("|---|" + "---:|" * len(peak_runs))
        phases: list[str] = []
        for k in peak_runs:
            phases += [p for p in results[k]["info"]["phase_peaks"] if p not in phases]
        for p in phases:
            row = [p]
            for k in peak_runs:
                v = results[k]["info"]["phase_peaks"].get(p)
                row.append(f"{v:,.0f}" if v else "–")
            w("| " + " | ".join(row) + " |")
        w(
            "| imports (baseline) | "
            + " | ".join(f"{results[k]['baseline_rss']:,.0f}" for k in peak_runs)
            + " |"
        )
        w("")
        sampled = [k for k in peak_runs if results[k]["info"].get("phase_rss_parts")]
        if sampled:
            w("Largest anonymous / file-backed (memory-mapped) RSS seen by a 20 ms sampler, MiB:\n")
            w("| phase | " + " | ".join(f"{k} anon / file" for k in sampled) + " |")
            w("|---|" + "---:|" * len(sampled))
            labels: list[str] = []
            for k in sampled:
                labels += [p for p in results[k]["info"]["phase_rss_parts"] if p not in labels]
            for p in labels:
                cells = []
                for k in sampled:
                    v = results[k]["info"]["phase_rss_parts"].get(p)
                    cells.append(f"{v[0]:,.0f} / {v[1]:,.0f}" if v else "–")
                w(f"| {p} | " + " | ".join(cells) + " |")
            w("")
    for name in ("breakdown-xxh3", "breakdown-sha1"):
        r = results.get(name)
        if not r or "error" in r:
            continue
        total = r["runs"][0]["e2e"]
        n = r["docs"]
        w(
            f"### Inside one `dedup` run, 1 worker, {name.split('-')[1]} (inclusive seconds; {total:.2f} s in all)\n"
        )
        w("| call path (inclusive) | seconds | calls | % of run | docs/s if alone |")
        w("|---|---:|---:|---:|---:|")
        rank = {k: i for i, k in enumerate(r["breakdown"])}

        def tree_order(key: str, rank: dict[str, int] = rank) -> tuple[int, ...]:
            parts = key.split(" > ")
            return tuple(rank.get(" > ".join(parts[: i + 1]), 0) for i in range(len(parts)))

        for key in sorted(r["breakdown"], key=tree_order):
            secs, calls = r["breakdown"][key]
            parts = key.split(" > ")
            label = "&nbsp;&nbsp;" * (len(parts) - 1) + ("↳ " if len(parts) > 1 else "") + f"`{parts[-1]}`"
            w(
                f"| {label} | {secs:.3f} | {calls} | {100 * secs / total:.1f} | {n / secs if secs else 0:,.0f} |"
            )
        if r.get("breakdown_missing"):
            w(f"\n(not found, so not timed: {', '.join(r['breakdown_missing'])})")
        w("")
    chk = results.get("check")
    if chk and "error" not in chk:
        w(
            f"sha1 signatures identical to datasketch `MinHash.bulk` on {chk['docs']:,} documents: {chk['identical']}\n"
        )
    mem = {k: v for k, v in results.items() if k.startswith("mem-")}
    if mem:
        w("### Memory vs corpus size (one run each, 1 worker, xxh3)\n")
        w(
            "| what | docs | text MB | wall s | peak RSS MiB | baseline MiB | above baseline MiB "
            "| above baseline per 100k docs |"
        )
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k, r in sorted(mem.items(), key=lambda kv: (kv[0].split("@")[0], kv[1].get("docs", 0))):
            if "error" in r:
                w(f"| {k} | failed | | | | | | |")
                continue
            n = r["docs"]
            if k.startswith("mem-e2e"):
                peak = max(r["hwm"], r.get("tree_peak_rss", 0))
                above = peak - r["baseline_rss"]
                w(
                    f"| `dedup` end to end (JSONL on disk) | {n:,} | {r['bytes'] / 1e6:,.0f} | {r['runs'][0]['e2e']:.1f} | "
                    f"{peak:,.0f} | {r['baseline_rss']:,.0f} (imports) | {above:,.0f} | {above / n * 1e5:,.0f} |"
                )
                parts = r["info"].get("phase_rss_parts") or {}
                if parts:
                    base = parts.get("before the first phase", [0.0])[0]
                    top = max(parts, key=lambda p: parts[p][0])
                    above = parts[top][0] - base
                    w(
                        f"| `dedup` end to end, anonymous RSS only (peak in {top}) | {n:,} | {r['bytes'] / 1e6:,.0f} | | "
                        f"{parts[top][0]:,.0f} | {base:,.0f} (anon, imports) | {above:,.0f} | {above / n * 1e5:,.0f} |"
                    )
            else:
                above = r["stream_anon_peak"] - r["stream_anon_base"]
                w(
                    f"| signatures, streamed in 10k-doc batches (anonymous RSS) | {n:,} | "
                    f"{r['text_bytes'] / 1e6:,.0f} | {r['stream_s']:.1f} | {r['stream_hwm']:,.0f} | "
                    f"{r['stream_anon_base']:,.0f} (anon, imports) | {above:,.0f} | {above / n * 1e5:,.0f} |"
                )
                above = r["whole_anon_peak"] - r["whole_anon_base"]
                w(
                    f"| `signatures()` of the whole loaded column (anonymous RSS) | {n:,} | "
                    f"{r['text_bytes'] / 1e6:,.0f} | {r['whole_s']:.1f} | {r['whole_hwm']:,.0f} | "
                    f"{r['whole_anon_base']:,.0f} (anon, column of {r['column_mib']:,.0f} loaded) | {above:,.0f} "
                    f"(of which the result matrix {r['sig_matrix_mib']:,.0f}) | {above / n * 1e5:,.0f} |"
                )
        w("")
    cont = [(k, r) for k, r in results.items() if "contention" in r]
    if cont:
        versions = {_code_id(r.get("code", {})) for _, r in cont}
        w("### Machine load and code version during each method\n")
        w(
            "CPU cores used by other processes = (machine busy CPU time - this method's own CPU time) / wall "
            "time; for Ray it also counts Ray's own daemons and workers, which are not our children.\n"
        )
        w(
            "| method | CPU cores used by other processes (mean) | load average at start / end | code version |"
        )
        w("|---|---:|---:|---|")
        for k, r in cont:
            c = r["contention"]
            code = _code_id(r.get("code", {})) + (
                " (changed during the method!)" if r.get("code_changed") else ""
            )
            w(f"| {k} | {c['others_cores']:.2f} | {c['load_start']:.2f} / {c['load_end']:.2f} | {code} |")
        if len(versions) > 1:
            w("\n**The dataforge code changed between methods; compare rows with the same code version.**")
        w("")
    over = {k.split(":", 1)[1]: v for k, v in results.items() if k.startswith("overhead:") and "runs" in v}
    if over:
        n_small = next(iter(over.values()))["docs"]
        w(f"### Fixed costs: the same `dedup` runs on {n_small:,} documents (one run each)\n")
        w("| run | seconds | of which stage 0 | candidates + finalize | other phases | Ray init (separate) |")
        w("|---|---:|---:|---:|---:|---:|")
        for k, r in over.items():
            run = r["runs"][0]
            s0 = run.get("phase:stage 0", 0)
            gl = run.get("phase:dedup.minhash: candidates", 0) + run.get("phase:dedup.minhash: finalize", 0)
            ray_init = f"{r['ray_init_s']:.2f}" if "ray_init_s" in r else "–"
            w(f"| {k} | {run['e2e']:.2f} | {s0:.2f} | {gl:.2f} | {run['e2e'] - s0 - gl:.2f} | {ray_init} |")
        w("")
    # targets
    df_x = results.get("dataforge-xxh3", {})
    df_s = results.get("dataforge-sha1", {})
    loop = results.get("datasketch-loop", {})
    loop_sig = loop and loop["docs"] / _stage_secs(loop, "sig")
    w("### Targets\n")
    w("| target | measured | met? |")
    w("|---|---|---|")

    def tgt(label: str, value: float | None, goal: float, fmt: str = "{:,.0f}") -> None:
        if value is None:
            return
        w(
            f"| {label} | {fmt.format(value)} ({value / goal:.0%} of target) | {'yes' if value >= goal else 'NO'} |"
        )

    one = e2e_best.get("e2e-xxh3-1w")
    two = e2e_best.get("e2e-xxh3-2w")
    tgt("E2E `dedup` >= 25,000 docs/s/core (1 worker, xxh3)", one, 25_000)
    tgt("E2E `dedup` >= 45,000 docs/s on 2 workers", two, 45_000)
    if one and rn_e2e:
        tgt("E2E `dedup` (1 worker) >= 3x rensa in-memory E2E", one / rn_e2e, 3, "{:.2f}x")
    if one and ds_e2e:
        tgt("E2E `dedup` (1 worker) >= 13x datasketch bulk in-memory E2E", one / ds_e2e, 13, "{:.1f}x")
    if df_x and rn_sig:
        x_sig = df_x["docs"] / _stage_secs(df_x, "sig")
        tgt("signatures xxh3 >= 3x rensa signatures", x_sig / rn_sig, 3, "{:.2f}x")
        tgt("signatures xxh3 >= 30,000 docs/s/core (perf-baselines)", x_sig, 30_000)
    if df_x and ds_sig:
        tgt(
            "signatures xxh3 >= 13x datasketch bulk",
            df_x["docs"] / _stage_secs(df_x, "sig") / ds_sig,
            13,
            "{:.1f}x",
        )
    if df_s and loop_sig:
        s_sig = df_s["docs"] / _stage_secs(df_s, "sig")
        tgt("sha1 mode signatures >= 10x datasketch loop", s_sig / loop_sig, 10, "{:.1f}x")
    s1 = e2e_best.get("e2e-sha1-1w")
    if s1 and loop_sig:
        tgt("sha1 mode E2E `dedup` >= 10x datasketch loop (signatures only)", s1 / loop_sig, 10, "{:.1f}x")
    if df_x:
        tgt(
            "LSH candidates >= 150,000 docs/s/core (perf-baselines)",
            df_x["docs"] / _stage_secs(df_x, "lsh"),
            150_000,
        )
    w("")
    return "\n".join(out)


def environment(meta: dict[str, Any]) -> str:
    vers = []
    for p in ("dataforge", "datasketch", "rensa", "polars", "pyarrow", "numpy", "numba", "ray", "scipy"):
        try:
            vers.append(f"{p} {importlib.metadata.version(p)}")
        except importlib.metadata.PackageNotFoundError:
            vers.append(f"{p} (not installed)")
    load = os.getloadavg()
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {os.cpu_count()} cores ({cpu}), "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, Python {platform.python_version()}; "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; " + ", ".join(vers) + "\n\n"
        f"Corpus: {meta['docs']:,} documents, {meta['text_bytes'] / 1e6:,.0f} MB of text (mean "
        f"{meta['mean_bytes']:,.0f} B, p5 {meta['p5_bytes']:,} B, p95 {meta['p95_bytes']:,} B), "
        f"{meta['words']:,} whitespace words; {meta['injected']:,} injected near-duplicates; "
        f"{meta.get('pairs_j08', 0):,} injected pairs with exact J >= 0.8."
    )


def _code_id(code: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:8] if code else "?"


def code_fingerprint() -> dict[str, str]:
    """Short sha256 of the dataforge files on the measured path (the code changes concurrently)."""
    import hashlib

    root = HERE.parent / "dataforge"
    files = sorted(root.glob("dedup/*.py")) + [root / f for f in ("runner.py", "stages.py", "api.py")]
    files += sorted(root.glob("executors/*.py")) + sorted(root.glob("io/*.py"))
    return {
        str(f.relative_to(root.parent)): hashlib.sha256(f.read_bytes()).hexdigest()[:12]
        for f in files
        if f.exists()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000, help="corpus size (default 100000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method (best and median reported)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the whole method list this many times, interleaved (A B C A B C ...), so that "
        "this VM's drift over minutes reaches every method alike; best and median over all runs",
    )
    ap.add_argument("--methods", nargs="*", default=None, help=f"subset of: {', '.join(DEFAULT_METHODS)}")
    ap.add_argument(
        "--loop-docs", type=int, default=5000, help="documents for datasketch-loop (default 5000)"
    )
    ap.add_argument("--ds-docs", type=int, default=None, help="documents for datasketch-bulk (default all)")
    ap.add_argument("--check-docs", type=int, default=2000, help="documents for the sha1 identity check")
    ap.add_argument(
        "--overhead-docs",
        type=int,
        default=1000,
        help="also run e2e once on this many docs (fixed costs; 0 = no)",
    )
    ap.add_argument("--scale", action="store_true", help="also measure memory at --docs and --scale-docs")
    ap.add_argument("--scale-docs", type=int, default=1_000_000)
    ap.add_argument(
        "--merge", type=Path, default=None, help="start from these results (re-run methods replace)"
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="write all results here (default benchmarks/_data/)"
    )
    # worker mode (internal)
    ap.add_argument("--worker", dest="method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        worker_main(args)
        return
    if args.ds_docs is None:
        args.ds_docs = args.docs
    print(f"corpus: {args.docs:,} documents", file=sys.stderr)
    corpus = make_corpus.build(args.docs)
    meta = json.loads(corpus.with_name(f"corpus-{args.docs}.truth.json").read_text())
    methods = args.methods if args.methods is not None else DEFAULT_METHODS
    results: dict[str, dict[str, Any]] = {}
    if args.merge:
        results = json.loads(args.merge.read_text())["results"]
    header = environment(meta)
    code = code_fingerprint()
    for m in methods:
        if m not in METHODS:
            sys.exit(f"unknown method {m!r}; valid: {', '.join(METHODS)}")
    for r in range(args.rounds):
        if args.rounds > 1:
            print(f" round {r + 1} of {args.rounds}", file=sys.stderr)
        for m in methods:
            res = run_method(m, args, corpus)
            results[m] = res if r == 0 else merge_rounds(results[m], res)
    if args.overhead_docs:
        repeat = args.repeat
        args.repeat = 1
        print(f"corpus: {args.overhead_docs:,} documents (fixed costs)", file=sys.stderr)
        small = make_corpus.build(args.overhead_docs)
        for m in ("e2e-xxh3-1w", "e2e-xxh3-2w", "e2e-xxh3-ray"):
            if m in methods:
                results[f"overhead:{m}"] = run_method(m, args, small)
        args.repeat = repeat
    if args.scale:
        repeat = args.repeat
        args.repeat = 1
        for n in (args.docs, args.scale_docs):
            print(f"corpus: {n:,} documents", file=sys.stderr)
            c = make_corpus.build(n, parts=1)
            for m in ("mem-sig", "mem-e2e"):
                results[f"{m}@{n}"] = run_method(m, args, c)
        args.repeat = repeat
    end = code_fingerprint()
    changed = sorted(k for k, v in end.items() if code.get(k) != v)
    header += f"\n\nRounds: {args.rounds} (methods interleaved), {args.repeat} run(s) per method per round."
    header += f"\n\ndataforge code version {_code_id(code)} at the start"
    if changed:
        header += f", {_code_id(end)} at the end (**changed during the run: {', '.join(changed)}**)"
    header += ". Files (sha256[:12]) at the end: " + ", ".join(f"`{k}` {v}" for k, v in end.items())
    text = header + "\n\n" + report(results, args, meta)
    print(text)
    path = args.json or DATA / f"dedup_speed-{args.docs}.json"
    path.write_text(json.dumps({"header": header, "results": results}, indent=1, default=str))
    print(f"\n(results: {path})", file=sys.stderr)


if __name__ == "__main__":
    main()
