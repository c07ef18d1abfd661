"""MinHash signatures: normalization, shingling, hashing and permutations over whole batches.

Pipeline for one batch of texts (compiled kernels in ``_kernels.py``; no per-document Python):

1. **normalize** (optional, on by default), see :func:`normalize_text`: lowercase; on rows that
   hold non-ASCII text, NFKD, accents (the combining diacritical mark blocks) removed, lowercase
   again and common Unicode punctuation -> space; then each run of digits -> ``0``; ASCII
   punctuation, symbols and whitespace -> space; spaces collapsed, ends trimmed. Without
   normalization only whitespace is collapsed.
2. **shingles**: word n-grams (``word:5``: five consecutive words) or character n-grams
   (``char:24``: 24 consecutive code points) of the normalized text. Words are split on ASCII
   whitespace. A document shorter than one shingle has one shingle, its whole (normalized) text;
   an empty document has none and never matches anything.
3. **hash** each shingle to 32 bits:
   - ``xxh3`` (default; fast and stable across versions): each word is hashed once with XXH3-64
     (seed 0); a word n-gram is the polynomial ``sum(w[i+k] * M^(n-1-k)) mod 2^64`` of its word
     hashes finished with MurmurHash3's fmix64, high 32 bits. A character n-gram is the high 32
     bits of XXH3-64 of its UTF-8 bytes.
   - ``sha1``: the first 4 bytes (little endian) of SHA-1 of the shingle's UTF-8 bytes (word n-grams
     joined by one space), exactly datasketch's ``sha1_hash32``, so signatures equal
     ``datasketch.MinHash(num_perm, seed).update_batch(shingles).hashvalues`` bit for bit.
4. **permute**: datasketch 2.0's ``affine32`` scheme: MurmurHash3's ``fmix32`` pre-mix, then
   ``a*h + b mod 2^32`` with ``a``, ``b`` drawn from ``np.random.RandomState(seed)`` exactly as
   datasketch draws them; a signature is the minimum per permutation.

:func:`shingles` is the plain-Python reference of steps 1-2 (used by tests and for feeding
datasketch directly).
"""

from __future__ import annotations

import functools
import re
import string
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from dataforge.dedup import _kernels as K
from dataforge.errors import ConfigError, choices
from dataforge.io.views import series_runs

HASHES = ("xxh3", "sha1")
SHINGLE_KINDS = ("word", "char")
MAX_HASH = np.uint32(0xFFFFFFFF)

# Common Unicode punctuation and symbols treated as separators (on rows with non-ASCII text).
_UNICODE_PUNCT = (
    "\u00a0\u00a1\u00a6\u00a7\u00a8\u00a9\u00ab\u00ac\u00ae\u00af\u00b0\u00b1\u00b4\u00b6\u00b7\u00b8"
    "\u00bb\u00bf\u00d7\u00f7\u2010\u2011\u2012\u2013\u2014\u2015\u2016\u2017\u2018\u2019\u201a"
    "\u201b\u201c\u201d\u201e\u201f\u2020\u2021\u2022\u2026\u2030\u2032\u2033\u2039\u203a\u2044"
    "\u20ac\u2122\u2212\u3000\u3001\u3002\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f"
    "\u0085\u1680"
)
_UNICODE_TABLE = {ord(c): " " for c in _UNICODE_PUNCT}
_ASCII_SEPARATORS = string.punctuation + "".join(map(chr, range(33))) + "\x7f"
_DIGITS = re.compile(r"[0-9]+")
# Accents: the combining diacritical mark blocks (not every nonspacing mark: Indic vowel signs
# and the like are letters' parts and stay).
_ACCENT_RANGES = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_ACCENTS = re.compile(f"[{_ACCENT_RANGES}]")
_ACCENTS_RUST = r"[\x{0300}-\x{036F}\x{1AB0}-\x{1AFF}\x{1DC0}-\x{1DFF}\x{20D0}-\x{20FF}\x{FE20}-\x{FE2F}]"
_ASCII_SEP = re.compile("[" + re.escape(_ASCII_SEPARATORS) + "]+")
_ASCII_WS = re.compile(r"[ \t\n\r\x0b\x0c]+")


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint8)
    for c in _ASCII_SEPARATORS:
        table[ord(c)] = 32
    for c in string.ascii_uppercase:
        table[ord(c)] = ord(c.lower())
    for c in string.digits:
        table[ord(c)] = 48  # every digit is "0", and runs of "0" collapse (digit_runs)
    return table


_TABLE = _byte_table()
_WS_TABLE = np.arange(256, dtype=np.uint8)
_WS_TABLE[[9, 10, 11, 12, 13]] = 32
_NONE_BOOL = np.zeros(0, dtype=np.bool_)
_NONE_INT = np.zeros(0, dtype=np.int64)
_NONE_U8 = np.zeros(0, dtype=np.uint8)
_ZERO = np.zeros(1, dtype=np.int64)
# read-only like the buffers of Arrow arrays they stand in for: one compiled kernel signature
_NONE_U8.setflags(write=False)
_ZERO.setflags(write=False)
_CHUNK_BYTES = 8 << 20  # documents are processed in groups of about this many bytes


@dataclass(frozen=True, kw_only=True)
class MinHashParams:
    """How documents become signatures.

    Args:
        num_perm: permutations (signature length).
        seed: seed of the permutations (datasketch's ``seed``; default 1 as in datasketch).
        shingle: ``word:N`` or ``char:N``.
        normalize: apply the normalization described in the module docstring.
        hash: ``xxh3`` (fast) or ``sha1`` (datasketch-identical).
    """

    num_perm: int = 128
    seed: int = 1
    shingle: str = "word:5"
    normalize: bool = True
    hash: str = "xxh3"

    def __post_init__(self) -> None:
        if (
            not isinstance(self.num_perm, int)
            or isinstance(self.num_perm, bool)
            or not 2 <= self.num_perm <= 1024
        ):
            msg = f"num_perm must be an integer in [2, 1024], got {self.num_perm!r}"
            raise ConfigError(msg)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            msg = f"seed must be an integer in [0, 2^32), got {self.seed!r}"
            raise ConfigError(msg)
        if self.hash not in HASHES:
            msg = f"unknown hash {self.hash!r}; valid: {choices(HASHES)}"
            raise ConfigError(msg)
        self.shingle_kind()  # validates

    def shingle_kind(self) -> tuple[str, int]:
        kind, _, n = self.shingle.partition(":")
        if kind not in SHINGLE_KINDS or not (n.isascii() and n.isdigit()) or not 1 <= int(n) <= 64:
            msg = f"shingle must be word:N or char:N with 1 <= N <= 64, got {self.shingle!r}"
            raise ConfigError(msg)
        return kind, int(n)


@functools.cache
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` uint32 arrays of datasketch 2.0's ``affine32`` scheme for ``seed``."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


# --------------------------------------------------------------------------- normalization


def normalize_text(text: str) -> str:
    """Plain-Python reference of the normalization, for one string.

    Example:
        >>> normalize_text("Café  RÉSUMÉ: 1,250 units (2024)!")
        'cafe resume 0 0 units 0'
    """
    text = text.lower()
    if not text.isascii():
        text = _ACCENTS.sub("", unicodedata.normalize("NFKD", text)).lower()
        text = text.translate(_UNICODE_TABLE)
    text = _DIGITS.sub("0", text)
    return _ASCII_SEP.sub(" ", text).strip(" ")


def _buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes and int64 offsets of a string column (read in place when it lies in order in
    one buffer, else copied)."""
    runs = _text_runs(texts)
    if len(runs) == 1:
        return runs[0][2], runs[0][3]
    return _copied_buffers(texts)


def _copied_buffers(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes and int64 offsets of a string column, copied into one flat buffer (nulls empty)."""
    arr = texts.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    if arr.null_count:
        arr = arr.fill_null("")
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return data, offsets


def _text_runs(texts: pl.Series) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(start, stop, data, offsets)`` runs of rows whose texts lie in order in one buffer, read in
    place (:func:`dataforge.io.views.series_runs`), or no run when the column must be copied."""
    found = series_runs(texts) if texts.dtype == pl.String else None
    return [(r.start, r.stop, r.data, r.offsets) for r in found[1]] if found else []


def _unicode_fix(texts: pl.Series) -> pl.Series:
    """Lowercase, NFKD, drop accents, lowercase again, map Unicode punctuation to spaces."""
    return (
        texts.str.to_lowercase()
        .str.normalize("NFKD")
        .str.replace_all(_ACCENTS_RUST, "")
        .str.to_lowercase()
        .str.replace_many(list(_UNICODE_PUNCT), [" "] * len(_UNICODE_PUNCT))
    )


class CodePoints:
    """How each code point of the Basic Multilingual Plane normalizes, when that does not depend
    on its neighbours: tables the byte kernel reads (:func:`~dataforge.dedup._kernels.canonical`).

    Filled page by page (256 code points, ~1 ms each) the first time a document uses the page,
    from the plain-Python reference itself: a code point ``c`` with
    ``normalize_text("a" + c + "b") == "a" + X + "b"`` becomes a *separator* when ``X`` is one
    space, and is *replaced* by ``X`` when ``X`` holds no separator, digit or combining mark and
    has at most 12 bytes (accented Latin letters, Greek, Cyrillic, Hebrew, CJK, Hangul syllables
    spelled in jamo, ligatures; removed accents: ``X`` empty). Anything else (digits such as
    ``²``, combining marks that stay, the context-dependent capital sigma, long ligatures) is
    *hard*: documents holding one go through Polars' Unicode normalization.
    """

    def __init__(self) -> None:
        self.kind = np.zeros(0x10000, dtype=np.uint8)
        self.repl = np.zeros((0x10000, REPLACEMENT_BYTES), dtype=np.uint8)
        self.rlen = np.zeros(0x10000, dtype=np.uint8)
        self.done = np.zeros(256, dtype=np.bool_)
        self._lock = threading.Lock()

    def ensure(self, pages: np.ndarray) -> None:
        """Look at the pages flagged in ``pages`` (bool per page) not looked at yet."""
        todo = np.flatnonzero(pages & ~self.done)
        if todo.size == 0:
            return
        with self._lock:
            for page in todo.tolist():
                if not self.done[page]:
                    for cp in range(page << 8, (page + 1) << 8):
                        self._classify(cp)
                    self.done[page] = True

    def _classify(self, cp: int) -> None:
        self.kind[cp] = K.CP_HARD
        if cp < 0x80 or 0xD800 <= cp < 0xE000 or cp in _CONTEXTUAL:
            return
        c = chr(cp)
        got = normalize_text(f"a{c}b")
        if got == "a b":
            self.kind[cp] = K.CP_SEPARATOR
            return
        if not (got.startswith("a") and got.endswith("b")):
            return
        x = got[1:-1]
        raw = x.encode()
        if (
            len(raw) > REPLACEMENT_BYTES
            or " " in x
            or "0" in x
            or any(unicodedata.combining(ch) for ch in x)
            # the replacement must also be what the code point gives next to a separator
            or normalize_text(f"{c} .{c}") != f"{x} {x}".strip(" ")
        ):
            return
        self.repl[cp, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self.rlen[cp] = len(raw)
        self.kind[cp] = K.CP_REPLACE


# Python's str.lower() depends on the context for the capital sigma only (final form).
_CONTEXTUAL = frozenset({0x03A3})
REPLACEMENT_BYTES = 12
CODE_POINTS = CodePoints()


def canonical_bytes(
    data: np.ndarray, offsets: np.ndarray, table: np.ndarray, *, digit_runs: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~dataforge.dedup._kernels.canonical` with one byte table for every document."""
    cp = CODE_POINTS
    return K.canonical(
        data, offsets, table, digit_runs, _NONE_INT, _NONE_U8, _ZERO, _NONE_BOOL, cp.kind, cp.repl, cp.rlen, 0
    )


def normalized_buffers(
    texts: pl.Series, *, normalize: bool = True, buffers: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bytes and offsets of the canonical texts (normalized, or with whitespace collapsed only).

    Documents whose non-ASCII code points all normalize the same whatever surrounds them
    (:class:`CodePoints`: typographic punctuation, accented Latin, Greek, Cyrillic, CJK, ...) are
    normalized by the byte kernel; only the others go through Polars' Unicode normalization
    (NFKD, accents), and the byte kernel reads those from the normalized copy. ``buffers``: the
    texts' bytes and offsets when the caller has them.
    """
    data, offsets = buffers if buffers is not None else _buffers(texts)
    if not normalize:
        return canonical_bytes(data, offsets, _WS_TABLE, digit_runs=False)
    non_ascii = K.non_ascii_rows(data, offsets)
    cp = CODE_POINTS
    coded, hard, fixed_data, fixed_offsets, growth = _NONE_BOOL, _NONE_INT, _NONE_U8, _ZERO, 0
    if non_ascii.any():
        rows = np.flatnonzero(non_ascii)
        cp.ensure(K.cp_pages(data, offsets, rows))
        simple, growth = K.transcodable(data, offsets, rows, cp.kind, cp.rlen)
        if simple.any():
            coded = np.zeros(offsets.shape[0] - 1, dtype=np.bool_)
            coded[rows[simple]] = True
        hard = rows[~simple]
        if hard.size:
            fixed_data, fixed_offsets = _buffers(_unicode_fix(texts.gather(hard)))
    return K.canonical(
        data, offsets, _TABLE, True, hard, fixed_data, fixed_offsets, coded, cp.kind, cp.repl, cp.rlen, growth
    )


def normalize_texts(texts: pl.Series) -> pl.Series:
    """Vectorized :func:`normalize_text` over a column."""
    data, offsets = normalized_buffers(texts)
    arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    return pl.Series(texts.name, arr, dtype=pl.Utf8)


def shingles(text: str, *, shingle: str = "word:5", normalize: bool = True) -> list[bytes]:
    """The shingles of one document as UTF-8 bytes (reference implementation).

    Feeding these to ``datasketch.MinHash(num_perm, seed).update_batch(...)`` gives the same
    hash values as dataforge's ``hash="sha1"`` mode.

    Example:
        >>> shingles("The quick brown fox.", shingle="word:2")
        [b'the quick', b'quick brown', b'brown fox']
    """
    kind, n = MinHashParams(shingle=shingle).shingle_kind()
    t = normalize_text(text) if normalize else _ASCII_WS.sub(" ", text).strip(" ")
    if kind == "word":
        words = t.split(" ") if t else []
        if not words:
            return []
        if len(words) < n:
            return [" ".join(words).encode()]
        return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]
    if not t:
        return []
    if len(t) < n:
        return [t.encode()]
    return [t[i : i + n].encode() for i in range(len(t) - n + 1)]


# --------------------------------------------------------------------------- hashing


def shingle_hashes(
    texts: pl.Series, params: MinHashParams, *, buffers: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pre-permutation uint32 hashes of every shingle (flat, document order) and shingles per doc."""
    kind, n = params.shingle_kind()
    data, offsets = normalized_buffers(texts, normalize=params.normalize, buffers=buffers)
    mode = 0 if params.hash == "xxh3" else 1
    if kind == "word":
        return K.word_shingle_hashes(data, offsets, n, mode)
    return K.char_shingle_hashes(data, offsets, n, mode)


def signatures(texts: pl.Series, params: MinHashParams) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of ``texts`` (uint32, documents x num_perm) and shingles per document.

    Documents are processed in groups of about 8 MB of text, so memory stays bounded.

    Example:
        >>> sig, n = signatures(pl.Series(["a b c d e f", ""]), MinHashParams(num_perm=4))
        >>> sig.shape, n.tolist()
        ((2, 4), [2, 0])
    """
    a, b = permutations(params.num_perm, params.seed)
    n_docs = len(texts)
    if n_docs == 0:
        hv, n_sh = shingle_hashes(texts, params)
        return K.minhash_signatures(hv, n_sh, a, b), n_sh
    # texts read in place where they lie in order in a buffer (one run per part of a
    # concatenation), else copied once into one run
    runs = _text_runs(texts) or [(0, n_docs, *_copied_buffers(texts))]
    sigs, counts = [], []
    for run_start, run_stop, data, offsets in runs:
        lengths = np.diff(offsets)
        start = run_start
        while start < run_stop:
            cum = np.cumsum(lengths[start - run_start :])
            stop = start + max(1, int(np.searchsorted(cum, _CHUNK_BYTES, side="right")))
            stop = min(stop, run_stop)
            part = offsets[start - run_start : stop - run_start + 1]
            hv, n_sh = shingle_hashes(texts.slice(start, stop - start), params, buffers=(data, part))
            sigs.append(K.minhash_signatures(hv, n_sh, a, b))
            counts.append(n_sh)
            start = stop
    return np.concatenate(sigs), np.concatenate(counts)
