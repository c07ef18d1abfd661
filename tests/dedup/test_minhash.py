"""MinHash signatures: datasketch compatibility (``hash="sha1"``), normalization, xxh3 accuracy,
parameter validation.

datasketch is the independent reference: with ``hash="sha1"`` dataforge's signatures must equal
``datasketch.MinHash(num_perm, seed=seed).update_batch(shingles(text)).hashvalues`` bit for bit.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from dataforge.dedup import minhash as mh
from dataforge.dedup.minhash import MinHashParams, normalize_text, normalize_texts, shingles, signatures
from dataforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


def read_texts(name: str) -> list[str]:
    with gzip.open(SAMPLE / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


@pytest.fixture(scope="module")
def news() -> list[str]:
    return read_texts("news/reuters.jsonl.gz")


@pytest.fixture(scope="module")
def prose() -> list[str]:
    return read_texts("pretraining/prose.jsonl.gz")


def planted_texts() -> list[str]:
    out = []
    for line in (SAMPLE / "defects" / "planted.jsonl").read_bytes().split(b"\n"):
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            out.append(rec["text"])
    return out


def datasketch_signatures(texts: list[str], *, num_perm: int, seed: int, shingle: str, normalize: bool):
    rows = []
    for t in texts:
        m = MinHash(num_perm=num_perm, seed=seed)
        sh = shingles(t, shingle=shingle, normalize=normalize)
        if sh:
            m.update_batch(sh)
        rows.append(m.hashvalues)
    return np.array(rows)


# --------------------------------------------------------------------------- datasketch identity

# every shingle kind x normalize on/off; seeds {1, 42} and num_perm {64, 128, 256} each covered
COMBOS = [
    ("word:5", True, 1, 128),
    ("word:5", False, 42, 256),
    ("word:1", True, 42, 64),
    ("word:1", False, 1, 128),
    ("char:5", True, 1, 64),
    ("char:5", False, 42, 128),
    ("char:24", True, 42, 256),
    ("char:24", False, 1, 64),
]


@pytest.mark.parametrize(("shingle", "normalize", "seed", "num_perm"), COMBOS)
def test_sha1_signatures_equal_datasketch_minhash(news, prose, shingle, normalize, seed, num_perm):
    texts = news[:250] + planted_texts()
    if shingle.startswith("word"):
        texts += sorted(prose, key=len)[:6]  # a few long documents
    params = MinHashParams(num_perm=num_perm, seed=seed, shingle=shingle, normalize=normalize, hash="sha1")
    sig, counts = signatures(pl.Series(texts), params)
    ref = datasketch_signatures(texts, num_perm=num_perm, seed=seed, shingle=shingle, normalize=normalize)
    assert sig.dtype == np.uint32 and ref.dtype == np.uint32
    assert sig.shape == ref.shape == (len(texts), num_perm)
    bad = np.flatnonzero((sig != ref).any(axis=1))
    assert bad.tolist() == []
    assert counts.tolist() == [len(shingles(t, shingle=shingle, normalize=normalize)) for t in texts]


@pytest.mark.parametrize("seed", [1, 42])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_sha1_signatures_equal_datasketch_for_every_seed_and_size(news, seed, num_perm):
    texts = news[300:360]
    params = MinHashParams(num_perm=num_perm, seed=seed, hash="sha1")
    sig, _ = signatures(pl.Series(texts), params)
    ref = datasketch_signatures(texts, num_perm=num_perm, seed=seed, shingle="word:5", normalize=True)
    np.testing.assert_array_equal(sig, ref)


def test_empty_documents_have_datasketch_empty_signature():
    sig, counts = signatures(
        pl.Series(["", "   ", "!!! ???", None], dtype=pl.Utf8), MinHashParams(hash="sha1")
    )
    assert counts.tolist() == [0, 0, 0, 0]
    empty = MinHash(num_perm=128, seed=1).hashvalues  # no update: all 2^32 - 1
    assert (sig == empty).all() and (sig == 0xFFFFFFFF).all()


def test_signatures_load_into_datasketch_lsh(news):
    """Our signatures, wrapped as LeanMinHash, query an index of datasketch's own MinHashes with
    the same answers as datasketch's MinHashes do."""
    seed, num_perm = 42, 128
    texts = news[:400]
    ours, _ = signatures(pl.Series(texts), MinHashParams(num_perm=num_perm, seed=seed, hash="sha1"))
    theirs = []
    lsh = MinHashLSH(threshold=0.7, num_perm=num_perm)
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(shingles(t))
        theirs.append(m)
        lsh.insert(f"d{i}", m)
    n_with_others = 0
    for i in range(len(texts)):
        lean = LeanMinHash(seed=seed, hashvalues=ours[i], scheme="affine32")
        assert lean.jaccard(LeanMinHash(theirs[i])) == 1.0
        got = sorted(lsh.query(lean))
        assert got == sorted(lsh.query(theirs[i]))
        assert f"d{i}" in got
        n_with_others += len(got) > 1
    assert n_with_others > 0  # the sample holds duplicates, so some queries return other documents


def test_signatures_do_not_depend_on_batching(news, monkeypatch):
    texts = pl.Series(news[:200])
    params = MinHashParams(num_perm=64, shingle="char:5")
    whole, counts = signatures(texts, params)
    monkeypatch.setattr(mh, "_CHUNK_BYTES", 3000)  # many groups of a few documents
    chunked, chunked_counts = signatures(texts, params)
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(counts, chunked_counts)
    one_by_one = np.concatenate([signatures(texts.slice(i, 1), params)[0] for i in range(0, 200, 17)])
    np.testing.assert_array_equal(whole[::17], one_by_one)


def test_signatures_of_empty_series():
    sig, counts = signatures(pl.Series([], dtype=pl.Utf8), MinHashParams(num_perm=16))
    assert sig.shape == (0, 16) and counts.shape == (0,)


def test_documented_signatures_example():
    sig, n = signatures(pl.Series(["a b c d e f", ""]), MinHashParams(num_perm=4))
    assert sig.shape == (2, 4) and n.tolist() == [2, 0]


def test_signatures_leave_the_input_column_alone():
    texts = ["Café ÉCLAIR au CHOCOLAT", "plain ascii", "Ωμέγα ΣΟΦΟΣ"]
    s = pl.Series("text", texts)
    signatures(s, MinHashParams())
    assert s.to_list() == texts


def test_normalize_texts_and_shingle_hashes_do_not_modify_their_input():
    texts = ["Café ÉCLAIR au CHOCOLAT", "plain ascii", "Ωμέγα ΣΟΦΟΣ"]
    s = pl.Series("text", texts)
    normalize_texts(s)
    t = pl.Series("text", texts)
    mh.shingle_hashes(t, MinHashParams())
    assert (s.to_list(), t.to_list()) == (texts, texts)


def test_sha1_signatures_equal_datasketch_on_hindi_and_trademark_text():
    texts = ["दुनिया में आपका स्वागत है और यह एक परीक्षा है", "The Acme™ widget is the best widget ever made"]
    sig, _ = signatures(pl.Series(texts), MinHashParams(hash="sha1", shingle="word:2"))
    ref = datasketch_signatures(texts, num_perm=128, seed=1, shingle="word:2", normalize=True)
    np.testing.assert_array_equal(sig, ref)


# --------------------------------------------------------------------------- normalization


def test_normalize_texts_equals_normalize_text_on_all_samples(news, prose):
    texts = news + prose + planted_texts()
    got = normalize_texts(pl.Series(texts)).to_list()
    assert [i for i, (g, t) in enumerate(zip(got, texts)) if g != normalize_text(t)] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Café  RÉSUMÉ: 1,250 units (2024)!", "cafe resume 0 0 units 0"),  # the docstring's example
        ("The QUICK brown fox.", "the quick brown fox"),
        ("  --leading and trailing--  ", "leading and trailing"),
        ("1999 and 2000", "0 and 0"),
        ("v2.0.1", "v0 0 0"),
        ("tab\tnew\nline", "tab new line"),
        ("“smart” quotes — and… dashes", "smart quotes and dashes"),
        ("naïve façade", "naive facade"),
        ("ΑΘΉΝΑ Αθήνα", "αθηνα αθηνα"),
        ("Ёлка", "елка"),
        ("", ""),
        ("!?!", ""),
    ],
)
def test_normalization_examples(text, expected):
    assert normalize_text(text) == expected
    assert normalize_texts(pl.Series([text])).to_list() == [expected]


def test_documented_shingles_example():
    assert shingles("The quick brown fox.", shingle="word:2") == [b"the quick", b"quick brown", b"brown fox"]
    assert shingles("The quick brown fox.", shingle="word:2", normalize=False) == [
        b"The quick",
        b"quick brown",
        b"brown fox.",
    ]
    assert shingles("abcdef", shingle="char:4") == [b"abcd", b"bcde", b"cdef"]


def test_normalization_makes_case_punctuation_and_digits_irrelevant():
    a = "Shares of ACME Corp. rose 12.5% to $45.20 on Tuesday, traders said."
    b = "shares of acme corp rose 3.1% to $9.99 on tuesday -- traders said"
    sig, _ = signatures(pl.Series([a, b]), MinHashParams(hash="sha1"))
    assert (sig[0] == sig[1]).all()
    raw, _ = signatures(pl.Series([a, b]), MinHashParams(hash="sha1", normalize=False))
    assert (raw[0] != raw[1]).any()


# --------------------------------------------------------------------------- xxh3 mode


def edited_pairs(texts: list[str], n_pairs: int, seed: int = 7) -> list[tuple[str, str]]:
    """Real documents paired with copies that have a random number of word edits."""
    rng = random.Random(seed)
    pairs = []
    candidates = [t for t in texts if len(t.split()) >= 60]
    for t in candidates[:n_pairs]:
        words = t.split()
        frac = rng.choice([0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
        for _ in range(int(len(words) * frac)):
            i = rng.randrange(len(words))
            op = rng.random()
            if op < 0.4:
                words[i] = "zzedit" + "q" * rng.randrange(5)
            elif op < 0.7:
                del words[i]
            else:
                words.insert(i, "inserted")
        pairs.append((t, " ".join(words)))
    return pairs


def exact_jaccard(a: str, b: str, shingle: str) -> float:
    sa, sb = set(shingles(a, shingle=shingle)), set(shingles(b, shingle=shingle))
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("shingle", ["word:5", "char:5"])
def test_xxh3_estimated_jaccard_tracks_exact_jaccard(news, shingle):
    pairs = edited_pairs(news, 300)
    left, right = zip(*pairs)
    params = MinHashParams(num_perm=256, shingle=shingle)
    sa, _ = signatures(pl.Series(left), params)
    sb, _ = signatures(pl.Series(right), params)
    est = (sa == sb).mean(axis=1)
    exact = np.array([exact_jaccard(a, b, shingle) for a, b in pairs])
    assert exact.min() < 0.5 < 0.95 < exact.max()  # a spread of similarities
    err = est - exact
    # standard error of a 256-permutation estimate is <= 0.031
    assert np.abs(err).mean() < 0.05
    assert abs(err.mean()) < 0.01  # unbiased
    assert np.abs(err).max() < 0.15
    assert (est[exact == 1.0] == 1.0).all()


def test_xxh3_signatures_are_deterministic_across_processes(news):
    texts = news[:100]
    params = MinHashParams(num_perm=64)
    sig, _ = signatures(pl.Series(texts), params)
    again, _ = signatures(pl.Series(texts), params)
    np.testing.assert_array_equal(sig, again)
    code = (
        "import gzip, json, hashlib, polars as pl\n"
        "from dataforge.dedup.minhash import MinHashParams, signatures\n"
        f"rows = [json.loads(l)['text'] for l in gzip.open({str(SAMPLE / 'news/reuters.jsonl.gz')!r}, 'rt')][:100]\n"
        "sig, _ = signatures(pl.Series(rows), MinHashParams(num_perm=64))\n"
        "print(hashlib.sha256(sig.tobytes()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == hashlib.sha256(sig.tobytes()).hexdigest()


def test_xxh3_and_sha1_differ_but_agree_on_identity(news):
    texts = [news[0], news[0], news[1]]
    x, _ = signatures(pl.Series(texts), MinHashParams())
    s, _ = signatures(pl.Series(texts), MinHashParams(hash="sha1"))
    assert (x[0] != s[0]).any()
    assert (x[0] == x[1]).all() and (s[0] == s[1]).all()
    assert (x[0] == x[2]).mean() < 0.2


def test_seed_changes_the_permutations(news):
    a, _ = signatures(pl.Series(news[:5]), MinHashParams(seed=1))
    b, _ = signatures(pl.Series(news[:5]), MinHashParams(seed=2))
    assert (a != b).any(axis=1).all()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"num_perm": 1}, "1"),
        ({"num_perm": 1025}, "1025"),
        ({"num_perm": 128.0}, "128.0"),
        ({"num_perm": True}, "True"),
        ({"seed": -1}, "-1"),
        ({"seed": 2**32}, str(2**32)),
        ({"seed": "1"}, "'1'"),
        ({"hash": "md5"}, "'md5'"),
        ({"shingle": "line:5"}, "'line:5'"),
        ({"shingle": "word"}, "'word'"),
        ({"shingle": "word:0"}, "'word:0'"),
        ({"shingle": "char:65"}, "'char:65'"),
        ({"shingle": "word:-3"}, "'word:-3'"),
        ({"shingle": "word:five"}, "'word:five'"),
    ],
)
def test_params_validation_names_the_bad_value(kwargs, shown):
    with pytest.raises(ConfigError) as info:
        MinHashParams(**kwargs)
    assert shown in str(info.value)
    assert next(iter(kwargs)) in str(info.value)


def test_valid_params_extremes():
    MinHashParams(num_perm=2, seed=0, shingle="word:1")
    MinHashParams(num_perm=1024, seed=2**32 - 1, shingle="char:64", hash="sha1", normalize=False)
    assert MinHashParams(shingle="char:24").shingle_kind() == ("char", 24)


def test_superscript_shingle_size_is_a_config_error():
    with pytest.raises(ConfigError, match="word:²"):
        MinHashParams(shingle="word:²")
