"""LSH banding: choosing bands x rows, the S-curve, band hashes and candidate pairs.

A pair of documents with Jaccard similarity ``s`` becomes a candidate with probability
``P(s) = 1 - (1 - s^r)^b`` for ``b`` bands of ``r`` rows. :func:`optimal_params` chooses ``(b, r)``
with ``b * r <= num_perm`` minimizing the weighted false-positive area (``P`` integrated below the
threshold) and false-negative area (``1 - P`` integrated above it), as datasketch's ``MinHashLSH``
does.

Example:
    >>> optimal_params(0.8, 128)
    (9, 13)
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from dataforge.errors import ConfigError

_P64_1 = np.uint64(0x9E3779B185EBCA87)
_P64_2 = np.uint64(0xC2B2AE3D27D4EB4F)


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that a pair with Jaccard ``s`` shares at least one band."""
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


@functools.cache
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _integral(f, lo: float, hi: float, degree: int) -> float:
    """The integral of ``f`` over ``[lo, hi]`` for a polynomial ``f`` of at most ``degree``: exact
    (to rounding) with Gauss-Legendre on ``degree // 2 + 1`` nodes. The S-curve areas are such
    polynomials (degree ``bands * rows``); this replaces ``scipy.integrate.quad`` (same values to
    ~1e-15, the same choices as datasketch, and no scipy import)."""
    x, w = _gauss_legendre(max(degree // 2 + 1, 2))
    half = (hi - lo) / 2.0
    return float(half * np.dot(w, f(half * x + (hi + lo) / 2.0)))


@functools.cache
def optimal_params(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """``(bands, rows)`` minimizing ``fp_weight * FP area + fn_weight * FN area`` (datasketch's rule)."""
    if not 0.0 < threshold < 1.0:
        msg = f"threshold must be in (0, 1), got {threshold!r}"
        raise ConfigError(msg)
    best = (float("inf"), (1, 1))
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integral(lambda s, b=b, r=r: 1 - (1 - s**r) ** b, 0.0, threshold, b * r)
            fn = _integral(lambda s, b=b, r=r: (1 - s**r) ** b, threshold, 1.0, b * r)
            err = fp * fp_weight + fn * fn_weight
            if err < best[0]:
                best = (err, (b, r))
    return best[1]


def binom_ppf(q: float, n: int, p: float) -> int:
    """The ``q`` quantile of Binomial(n, p): the smallest k with P(X <= k) >= q (as
    ``scipy.stats.binom.ppf``, computed from the log-pmf without importing scipy.stats)."""
    from math import lgamma, log, log1p

    k = np.arange(n + 1, dtype=np.float64)
    lg = np.vectorize(lgamma)
    logpmf = lgamma(n + 1) - lg(k + 1) - lg(n - k + 1) + k * log(p) + (n - k) * log1p(-p)
    cdf = np.cumsum(np.exp(logpmf))
    return int(min(np.searchsorted(cdf, q * (1 - 1e-12)), n))


def s_curve(bands: int, rows: int, threshold: float) -> dict[str, object]:
    """The chosen S-curve: its midpoint ``(1/b)^(1/r)`` (roughly where it is steepest; P is about
    0.63 there), the false-positive and false-negative areas, and ``P(s)`` at a few similarities."""
    fp = _integral(lambda s: candidate_probability(s, bands, rows), 0.0, threshold, bands * rows)
    fn = _integral(lambda s: 1 - candidate_probability(s, bands, rows), threshold, 1.0, bands * rows)
    points = [round(x, 2) for x in np.arange(0.3, 1.0001, 0.05)]
    return {
        "bands": bands,
        "rows": rows,
        "threshold": threshold,
        "midpoint": round((1.0 / bands) ** (1.0 / rows), 4),
        "false_positive_area": round(fp, 6),
        "false_negative_area": round(fn, 6),
        "probability": {f"{s:.2f}": round(float(candidate_probability(s, bands, rows)), 4) for s in points},
    }


@njit(cache=True)
def band_hashes(sig, bands, rows):
    """64-bit hash of each band of each signature (documents x bands)."""
    n = sig.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    for d in range(n):
        for bi in range(bands):
            h = np.uint64(bi + 1) * _P64_1
            for r in range(rows):
                h ^= np.uint64(sig[d, bi * rows + r])
                h *= _P64_2
                h = (h << np.uint64(31)) | (h >> np.uint64(33))
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xFF51AFD7ED558CCD)
            h ^= h >> np.uint64(33)
            h *= np.uint64(0xC4CEB9FE1A85EC53)
            h ^= h >> np.uint64(33)
            out[d, bi] = h
    return out


@njit(cache=True)
def bucket_pairs(group_starts, group_sizes, all_pairs_max):
    """Index pairs (into the sorted member array) for every bucket with two or more members.

    Buckets of up to ``all_pairs_max`` members give every pair; larger ones a star from their
    first member (enough for connected components, linear in the bucket size).
    """
    total = 0
    for g in range(group_sizes.shape[0]):
        k = group_sizes[g]
        total += k * (k - 1) // 2 if k <= all_pairs_max else k - 1
    left = np.empty(total, dtype=np.int64)
    right = np.empty(total, dtype=np.int64)
    o = 0
    for g in range(group_sizes.shape[0]):
        s = group_starts[g]
        k = group_sizes[g]
        if k <= all_pairs_max:
            for i in range(k):
                for j in range(i + 1, k):
                    left[o] = s + i
                    right[o] = s + j
                    o += 1
        else:
            for j in range(1, k):
                left[o] = s
                right[o] = s + j
                o += 1
    return left, right
