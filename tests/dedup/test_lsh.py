"""LSH banding: parameter choice against datasketch, the S-curve, band hashes and bucket pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from datasketch import MinHashLSH
from datasketch.lsh import _false_negative_probability, _false_positive_probability, _optimal_param

from dataforge.dedup.lsh import band_hashes, bucket_pairs, candidate_probability, optimal_params, s_curve
from dataforge.errors import ConfigError


@pytest.mark.parametrize("num_perm", [16, 64, 128, 256])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
def test_optimal_params_equal_datasketch(threshold, num_perm):
    assert optimal_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


@pytest.mark.parametrize(("fp", "fn"), [(0.05, 0.95), (0.2, 0.8), (0.9, 0.1)])
@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.9])
def test_weighted_optimal_params_equal_datasketch(threshold, fp, fn):
    ours = optimal_params(threshold, 128, fp, fn)
    assert ours == _optimal_param(threshold, 128, fp, fn)
    lsh = MinHashLSH(threshold=threshold, num_perm=128, weights=(fp, fn))
    assert ours == (lsh.b, lsh.r)


def test_documented_example():
    assert optimal_params(0.8, 128) == (9, 13)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_weighting_false_negatives_increases_recall(threshold):
    """As in datasketch's own test: favouring false negatives gives more bands of fewer rows, so a
    pair at the threshold is more likely a candidate (and the false-negative area shrinks)."""
    b1, r1 = optimal_params(threshold, 128)
    b2, r2 = optimal_params(threshold, 128, 0.05, 0.95)
    assert b2 > b1 and r2 < r1
    assert candidate_probability(threshold, b2, r2) > candidate_probability(threshold, b1, r1)
    c1, c2 = s_curve(b1, r1, threshold), s_curve(b2, r2, threshold)
    assert c2["false_negative_area"] < c1["false_negative_area"]
    assert c2["false_positive_area"] > c1["false_positive_area"]


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_optimal_params_rejects_bad_threshold(bad):
    with pytest.raises(ConfigError, match=repr(bad)):
        optimal_params(bad, 128)


@pytest.mark.parametrize(
    ("bands", "rows", "threshold"), [(9, 13, 0.8), (16, 8, 0.8), (20, 5, 0.5), (1, 1, 0.5)]
)
def test_s_curve_is_consistent(bands, rows, threshold):
    c = s_curve(bands, rows, threshold)
    assert (c["bands"], c["rows"], c["threshold"]) == (bands, rows, threshold)
    assert c["midpoint"] == round((1 / bands) ** (1 / rows), 4)
    assert c["false_positive_area"] == pytest.approx(
        _false_positive_probability(threshold, bands, rows), abs=1e-6
    )
    assert c["false_negative_area"] == pytest.approx(
        _false_negative_probability(threshold, bands, rows), abs=1e-6
    )
    probs = c["probability"]
    keys = sorted(probs, key=float)
    assert keys[0] == "0.30" and keys[-1] == "1.00" and len(keys) == 15
    values = [probs[k] for k in keys]
    assert values == sorted(values)  # monotone in the similarity
    assert values[-1] == 1.0
    for k in keys:
        s = float(k)
        assert probs[k] == round(1 - (1 - s**rows) ** bands, 4)


def test_candidate_probability_is_exact_formula_and_vectorized():
    s = np.array([0.0, 0.25, 0.5, 0.8, 1.0])
    got = candidate_probability(s, 16, 8)
    np.testing.assert_allclose(got, 1 - (1 - s**8) ** 16)
    assert got[0] == 0.0 and got[-1] == 1.0


def test_candidate_probability_matches_simulated_banding():
    """Empirical check of P(s) with random signatures agreeing in a fraction s of positions."""
    rng = np.random.default_rng(3)
    bands, rows, num_perm = 8, 4, 32
    for s in (0.5, 0.7, 0.9):
        trials = 4000
        base = rng.integers(0, 2**32, (trials, num_perm), dtype=np.uint64).astype(np.uint32)
        other = base.copy()
        differ = rng.random((trials, num_perm)) >= s
        other[differ] ^= np.uint32(1)
        hits = (band_hashes(base, bands, rows) == band_hashes(other, bands, rows)).any(axis=1).mean()
        assert hits == pytest.approx(candidate_probability(s, bands, rows), abs=0.03)


def test_band_hashes_compare_bands_only():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, (3, 12), dtype=np.uint64).astype(np.uint32)
    sig[1] = sig[0]
    sig[1, 5] ^= 1  # differs from row 0 in band 1 only (rows 4..7)
    sig[2, :4] = sig[0, 4:8]  # band 0 of doc 2 holds band 1's values of doc 0
    h = band_hashes(sig, 3, 4)
    assert h.shape == (3, 3) and h.dtype == np.uint64
    assert h[0, 0] == h[1, 0] and h[0, 2] == h[1, 2]
    assert h[0, 1] != h[1, 1]
    assert h[2, 0] != h[0, 1]  # the band index is part of the hash
    assert len(set(h.ravel().tolist())) >= 7  # otherwise no collisions
    # rows beyond bands * rows are ignored
    sig2 = sig.copy()
    sig2[:, 12 - 1] += 1
    assert (band_hashes(sig2[:, :12], 2, 4) == band_hashes(sig[:, :12], 2, 4)).all()


def pairs_of(starts, sizes, max_all):
    left, right = bucket_pairs(np.array(starts, np.int64), np.array(sizes, np.int64), max_all)
    return sorted(zip(left.tolist(), right.tolist()))


def test_bucket_pairs_small_buckets_give_every_pair():
    got = pairs_of([0, 3, 10], [3, 2, 4], 12)
    expected = sorted(
        list(itertools.combinations(range(0, 3), 2))
        + list(itertools.combinations(range(3, 5), 2))
        + list(itertools.combinations(range(10, 14), 2))
    )
    assert got == expected


def test_bucket_pairs_large_buckets_give_a_star_from_the_first_member():
    got = pairs_of([5], [6], 4)
    assert got == [(5, j) for j in range(6, 11)]
    # at the limit it is still every pair
    assert pairs_of([0], [4], 4) == list(itertools.combinations(range(4), 2))
    # mixed, with the default limit of dedup.minhash (12)
    got = pairs_of([0, 12, 40], [12, 13, 2], 12)
    assert len(got) == 66 + 12 + 1
    assert [(12, j) for j in range(13, 25)] == [p for p in got if 12 <= p[0] < 40]


def test_bucket_pairs_star_keeps_the_bucket_connected():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    left, right = bucket_pairs(np.array([0], np.int64), np.array([50], np.int64), 12)
    graph = coo_matrix((np.ones(left.shape[0]), (left, right)), shape=(50, 50))
    assert connected_components(graph, directed=False)[0] == 1
    assert left.shape[0] == 49


def test_bucket_pairs_of_nothing():
    left, right = bucket_pairs(np.empty(0, np.int64), np.empty(0, np.int64), 12)
    assert left.shape == right.shape == (0,)


@pytest.mark.parametrize("n", [16, 64, 128, 256, 1024])
@pytest.mark.parametrize("p", [0.5, 0.7, 0.8, 0.9, 0.99])
def test_binom_ppf_equals_scipy(n, p):
    from scipy.stats import binom

    from dataforge.dedup.lsh import binom_ppf

    for q in (1e-9, 1e-6, 0.01, 0.5, 0.99):
        assert binom_ppf(q, n, p) == int(binom.ppf(q, n, p)), (q, n, p)


def test_dedup_does_not_import_scipy_stats_or_integrate():
    import subprocess
    import sys

    code = "import sys, dataforge.dedup.near; print(sorted(m for m in sys.modules if m in ('scipy.stats', 'scipy.integrate')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
