"""The compiled MinHash kernels against independent references.

- ``xxh3_many`` against the ``xxhash`` library (XXH3-64, seed 0) for every length 0..600 (all of
  XXH3's length classes: 0, 1-3, 4-8, 9-16, 17-128, 129-240, > 240 with one or more stripes and
  blocks) and a few long inputs;
- ``sha1_many`` against datasketch's ``sha1_hash32`` (= first 4 bytes of ``hashlib.sha1``, little
  endian);
- ``canonical`` (through ``normalize_texts``) against the plain-Python ``normalize_text``;
- the shingle kernels against the plain-Python ``shingles``;
- ``minhash_signatures`` against a NumPy transcription of datasketch's ``affine32`` scheme.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xxhash
from datasketch.hashfunc import sha1_hash32

from dataforge.dedup import _kernels as K
from dataforge.dedup import minhash as mh

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
LENGTHS = [*range(601), 1024, 4096, 10000]


def pack(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint8 buffer and int64 offsets of ``values`` (each value starts mid-buffer)."""
    data = np.frombuffer(b"".join(values), dtype=np.uint8) if values else np.empty(0, np.uint8)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(v) for v in values])
    return data, offsets


def unpack(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]].decode() for i in range(len(offsets) - 1)]


@pytest.fixture(scope="module")
def random_values() -> list[bytes]:
    rng = np.random.default_rng(20240229)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in LENGTHS]


def sample_texts() -> list[str]:
    """Every text of the three sample files (malformed lines of planted.jsonl skipped)."""
    texts = []
    for name in ("news/reuters.jsonl.gz", "pretraining/prose.jsonl.gz"):
        with gzip.open(SAMPLE / name, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    for line in (SAMPLE / "defects" / "planted.jsonl").read_bytes().split(b"\n"):
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("text"), str):
            texts.append(rec["text"])
    return texts


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    texts = sample_texts()
    assert len(texts) > 2000
    return texts


# --------------------------------------------------------------------------- hashes


def test_xxh3_many_equals_xxhash_for_every_length(random_values):
    data, offsets = pack(random_values)
    got = K.xxh3_many(data, offsets)
    expected = np.array([xxhash.xxh3_64_intdigest(v) for v in random_values], dtype=np.uint64)
    bad = [LENGTHS[i] for i in np.flatnonzero(got != expected)]
    assert bad == [], f"XXH3-64 differs from xxhash for lengths {bad[:20]}"


def test_xxh3_many_on_text_and_repeated_bytes():
    # structured inputs (runs of one byte, ASCII text, UTF-8) around the length-class boundaries
    values = [b"\x00" * n for n in (0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 1025)]
    values += [b"a" * n for n in (3, 8, 16, 128, 240, 256, 1023, 1024, 1025)]
    values += [b"the quick brown fox jumps", "καλημέρα κόσμε".encode(), "日本語".encode() * 50]
    got = K.xxh3_many(*pack(values))
    assert got.tolist() == [xxhash.xxh3_64_intdigest(v) for v in values]


def test_xxh3_word_loads_refuse_a_strided_buffer():
    # the machine-word loads read consecutive bytes: a non-contiguous view must not compile
    # (it would hash the wrong bytes), while its contiguous copy hashes as xxhash does
    from numba.core.errors import TypingError

    data, offsets = pack([b"abcdefghijklmnop" * 4])
    strided = np.repeat(data, 2)[::2]
    assert not strided.flags.c_contiguous
    with pytest.raises(TypingError):
        K.xxh3_many(strided, offsets)
    assert K.xxh3_many(np.ascontiguousarray(strided), offsets).tolist() == [
        xxhash.xxh3_64_intdigest(b"abcdefghijklmnop" * 4)
    ]


def test_sha1_spans_side_by_side_equal_hashlib():
    """The multi-message SHA-1 (spans of up to 55 bytes, 16 at a time) and its one-at-a-time
    fallback (longer spans) agree with hashlib for every length 0..200, in groups that do not
    fill the last 16 lanes, at every offset into the output."""
    rng = np.random.default_rng(9)
    buf = rng.integers(0, 256, 5_000, dtype=np.uint8)
    lengths = np.concatenate([np.arange(201), rng.integers(0, 70, 300)]).astype(np.int64)
    rng.shuffle(lengths)
    starts = rng.integers(0, buf.shape[0] - 201, lengths.shape[0]).astype(np.int64)
    expected = [
        struct.unpack("<I", hashlib.sha1(buf[s : s + n].tobytes()).digest()[:4])[0]
        for s, n in zip(starts, lengths)
    ]
    for count in (len(lengths), 1, 15, 17, 33):
        out = np.zeros(count + 3, dtype=np.uint32)
        K.sha1_spans(buf, starts[:count], lengths[:count], out, 3)
        assert out[3:].tolist() == expected[:count]
        assert out[:3].tolist() == [0, 0, 0]


def test_sha1_many_equals_datasketch_sha1_hash32(random_values):
    data, offsets = pack(random_values)
    got = K.sha1_many(data, offsets)
    expected = np.array([sha1_hash32(v) for v in random_values], dtype=np.uint32)
    bad = [LENGTHS[i] for i in np.flatnonzero(got != expected)]
    assert bad == [], f"sha1_hash32 differs from datasketch for lengths {bad[:20]}"
    # and datasketch's definition: the first 4 bytes of SHA-1, little endian
    first4 = [struct.unpack("<I", hashlib.sha1(v).digest()[:4])[0] for v in random_values]
    assert got.tolist() == first4


def test_empty_batch_of_values():
    data, offsets = pack([])
    assert K.xxh3_many(data, offsets).shape == (0,)
    assert K.sha1_many(data, offsets).shape == (0,)


# --------------------------------------------------------------------------- normalization

TRICKY_ASCII = [
    "",
    " ",
    " \t\n\r\x0b\x0c ",
    "a",
    "A",
    "0",
    "007",
    "123 456",
    "a1b2c3",
    "1,000,000.50",
    "3.14159",
    "v1.2.3-rc4",
    "--a--",
    "...hello...world...",
    "   leading",
    "trailing   ",
    "  both  ",
    "x\x00y\x1fz\x7fw",
    "tab\tsep\nline\r\nend",
    "a_b-c/d\\e|f",
    "don't stop",
    "(1)(2)[3]{4}",
    "a 1 1 b",
    "1a1",
    "!!!",
    "a!!!b???c",
    "MiXeD CaSe WORDS",
    "Hello, World! 2024-01-01T10:00:00Z",
    "email@example.com http://x.org/a?b=c&d=e#f",
    "$100 + 50% = ~`^*",
]

TRICKY_UNICODE = [
    "Café  RÉSUMÉ: 1,250 units (2024)!",
    "naïve coöperate façade",
    "Straße ÆTHER œuvre",
    "ﬁne ﬂour ﬀ",
    "x² + y³ = z⁴; ½ of ①",
    "“quoted” — dash… ‘single’ «guillemets»",
    "¡Hola! ¿Qué tal? Ñandú",
    "日本語のテキスト、です。",
    "中文：你好，世界！",
    "Ελληνικά ΚΕΊΜΕΝΟ ΟΔΟΣ οδός",
    "Русский ТЕКСТ, ёж и Йод",
    "עִבְרִית",
    "العَرَبِيَّة",
    "e\u0301cole NFD",
    "\u00a0nbsp\u00a0and\u2003em\u3000space",
    "zero\u200bwidth",
    "🙂 ok 👍🏽",
    "İstanbul",
    "Ω ohm",
    "ǅemal",
    "Ⅻ chapters",
    "mixed ascii and é",
]


@pytest.mark.parametrize("text", TRICKY_ASCII + TRICKY_UNICODE)
def test_normalize_texts_equals_normalize_text_on_tricky_strings(text):
    got = mh.normalize_texts(pl.Series([text, "filler row", text]))
    expected = mh.normalize_text(text)
    assert got.to_list() == [expected, "filler row", expected]


def test_documented_normalization_example():
    assert mh.normalize_text("Café  RÉSUMÉ: 1,250 units (2024)!") == "cafe resume 0 0 units 0"
    assert mh.normalize_texts(pl.Series(["Café  RÉSUMÉ: 1,250 units (2024)!"])).to_list() == [
        "cafe resume 0 0 units 0"
    ]


def test_non_ascii_rows_at_every_alignment():
    """The word-at-a-time kernel flags exactly the documents holding a byte >= 0x80, whatever the
    documents' lengths and their start within 8-byte words (including empty documents)."""
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(400):
        n = int(rng.integers(0, 40))
        offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 30, n))]).astype(np.int64)
        shift = int(rng.integers(0, 9))
        buf = rng.integers(0, 128, int(offsets[-1]) + shift + int(rng.integers(0, 9))).astype(np.uint8)
        for _ in range(int(rng.integers(0, 5))):
            if buf.size:
                buf[rng.integers(0, buf.size)] = rng.integers(128, 256)
        o = offsets + shift
        expected = np.array([bool((buf[o[d] : o[d + 1]] >= 128).any()) for d in range(n)], dtype=bool)
        assert np.array_equal(K.non_ascii_rows(buf, o), expected)
        flagged += int(expected.sum())
    assert flagged > 100  # the cases do contain non-ASCII documents


def test_canonical_kernel_on_ascii_equals_reference():
    # the byte table alone (no Unicode pre-pass) is the whole normalization for ASCII rows
    data, offsets = pack([t.encode() for t in TRICKY_ASCII])
    out, out_offsets = mh.canonical_bytes(data, offsets, mh._TABLE, digit_runs=True)
    assert unpack(out, out_offsets) == [mh.normalize_text(t) for t in TRICKY_ASCII]


def test_canonical_whitespace_table_only_collapses_whitespace():
    # zeros and digit runs stay as they are: only the normalizing table collapses them
    texts = [*TRICKY_ASCII, *TRICKY_UNICODE, "a 000  b00\t0 1900 007", "00 0"]
    data, offsets = pack([t.encode() for t in texts])
    out, out_offsets = mh.canonical_bytes(data, offsets, mh._WS_TABLE, digit_runs=False)
    expected = [re.sub(r"[ \t\n\r\x0b\x0c]+", " ", t).strip(" ") for t in texts]
    assert unpack(out, out_offsets) == expected


def test_normalize_texts_equals_normalize_text_on_all_sample_texts(real_texts):
    got = mh.normalize_texts(pl.Series(real_texts)).to_list()
    bad = [i for i, (g, t) in enumerate(zip(got, real_texts)) if g != mh.normalize_text(t)]
    assert bad == []
    assert any(not t.isascii() for t in real_texts)  # the Unicode path was exercised


def test_normalize_texts_handles_nulls_as_empty():
    got = mh.normalize_texts(pl.Series(["A b", None, "Ünïcode"], dtype=pl.Utf8))
    assert got.to_list() == ["a b", "", "unicode"]


@pytest.fixture(scope="module")
def code_points() -> mh.CodePoints:
    """Tables with every page of the Basic Multilingual Plane looked at."""
    cp = mh.CodePoints()
    cp.ensure(np.ones(256, dtype=np.bool_))
    return cp


def test_code_point_tables_are_context_free(code_points):
    """Every code point the byte kernel normalizes on its own normalizes that way next to letters,
    digits, separators, other such code points and the ends of a document, by the reference."""
    kind = code_points.kind
    easy = np.flatnonzero(kind >= K.CP_SEPARATOR)
    sep = {int(c) for c in np.flatnonzero(kind == K.CP_SEPARATOR)}
    assert kind[0x80:].min() >= K.CP_HARD  # every page was looked at

    def mapped(c: str) -> str:
        cp = ord(c)
        if cp in sep:
            return " "
        return bytes(code_points.repl[cp, : code_points.rlen[cp]]).decode()

    rng = np.random.default_rng(3)
    chosen = [chr(int(c)) for c in easy]
    for c in chosen:
        other = chosen[int(rng.integers(0, len(chosen)))]
        for text in (f"A{c}b", f"{c}x{c}", f"1{c}2", f"x{c}{other}{c}y", f"{c} {other}.", f"q{c}\u00a8Z"):
            plain = "".join(
                mapped(ch) if ord(ch) >= 0x80 and ord(ch) < 0x10000 and kind[ord(ch)] >= 2 else ch
                for ch in text
            )
            assert mh.normalize_text(text) == mh.normalize_text(plain), (hex(ord(c)), text)


def test_code_point_kinds_of_known_characters(code_points):
    kind, sep, rep, hard = code_points.kind, K.CP_SEPARATOR, K.CP_REPLACE, K.CP_HARD
    for c in "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a0\u3000\uff01":
        assert kind[ord(c)] == sep, hex(ord(c))
    for c, x in (
        ("é", "e"),
        ("Ä", "a"),
        ("ß", "ß"),
        ("Д", "д"),
        ("ά", "α"),
        ("日", "日"),
        ("\u0301", ""),
        ("ﬁ", "fi"),
    ):
        assert kind[ord(c)] == rep, c
        assert bytes(code_points.repl[ord(c), : code_points.rlen[ord(c)]]).decode() == x
    # digits, a mark that stays, the final-sigma rule, a ligature longer than its code point
    for c in ("²", "½", "\u0483", "Σ", "\ufdfa"):  # U+FDFA: 18 letters
        assert kind[ord(c)] == hard, hex(ord(c))


def test_transcodable_kernel(code_points):
    texts = ["plain", "“quoted” — yes…", "café", "a\u00a0b", "🙂 ok", "x²", "Ünïcode “q”", "ΣΟΦΙΑ", "日本"]
    data, offsets = pack([t.encode() for t in texts])
    rows = np.arange(len(texts), dtype=np.int64)
    got, growth = K.transcodable(data, offsets, rows, code_points.kind, code_points.rlen)
    assert got.tolist() == [True, True, True, True, False, False, True, False, True]
    assert growth == 0
    odd = np.array([1, 4, 8], dtype=np.int64)
    assert K.transcodable(data, offsets, odd, code_points.kind, code_points.rlen)[0].tolist() == [
        True,
        False,
        True,
    ]
    pages = K.cp_pages(data, offsets, rows)
    assert set(np.flatnonzero(pages).tolist()) == {0x00, 0x03, 0x20, 0x65, 0x67}
    hangul = ["한국어 문장", "ﬃx"]  # 3 bytes -> 9 (jamo); ffi ligature 3 bytes -> 3
    data, offsets = pack([t.encode() for t in hangul])
    ok, growth = K.transcodable(
        data, offsets, np.arange(2, dtype=np.int64), code_points.kind, code_points.rlen
    )
    assert ok.tolist() == [True, True] and growth == 6 + 6 + 3 + 6 + 6  # 어: two jamo, no final


def test_code_points_are_looked_at_page_by_page():
    cp = mh.CodePoints()
    pages = np.zeros(256, dtype=np.bool_)
    pages[0x20] = True
    cp.ensure(pages)
    assert cp.done.tolist() == pages.tolist()
    assert cp.kind[0x2019] == K.CP_SEPARATOR and cp.kind[0x00E9] == K.CP_UNKNOWN


def test_normalize_texts_mixes_ascii_transcoded_and_unicode_documents():
    """Batches interleaving ASCII documents, documents the byte kernel transcodes (punctuation,
    accents, other scripts) and documents with context-dependent characters (Unicode path, read
    from the normalized copy) give the reference normalization, in order."""
    rng = np.random.default_rng(7)
    easy = [*"’“”—…\u00a0\u3000！éÉüßæœñçøåÆŒ日本語Ωкиїά한국", "e\u0301", "ﬁ", "ﬃ", "İ", "\u00a8", "\u3392"]
    hard = ["™", "²", "🙂", "Σ", "ΟΣ", "\u0483", "½", "\u3392", "a\u0483\u0301"]
    ascii_parts = ["word", "Two", "3", "45", " ", "  ", ",", ".", "\t", "x-y", "A"]
    for _ in range(40):
        texts = []
        for _ in range(int(rng.integers(1, 40))):
            kind = int(rng.integers(0, 3))
            pool = ascii_parts + (easy if kind >= 1 else []) + (hard if kind == 2 else [])
            n = int(rng.integers(0, 25))
            texts.append("".join(pool[int(rng.integers(0, len(pool)))] for _ in range(n)))
        got = mh.normalize_texts(pl.Series(texts, dtype=pl.Utf8)).to_list()
        assert got == [mh.normalize_text(t) for t in texts]


def test_normalize_texts_on_random_bmp_text():
    """Random words over the whole Basic Multilingual Plane (marks, scripts, compatibility
    characters, symbols) normalize as the reference does, whichever path each document takes."""
    rng = np.random.default_rng(11)
    cps = [c for c in range(0x80, 0x10000) if not 0xD800 <= c < 0xE000]
    texts = []
    for _ in range(3000):
        words = []
        for _ in range(int(rng.integers(0, 8))):
            n = int(rng.integers(1, 6))
            words.append(
                "".join(
                    chr(cps[int(rng.integers(0, len(cps)))]) if rng.random() < 0.4 else "e" for _ in range(n)
                )
            )
        texts.append(" ".join(words))
    got = mh.normalize_texts(pl.Series(texts, dtype=pl.Utf8)).to_list()
    bad = [(t, g, mh.normalize_text(t)) for t, g in zip(texts, got) if g != mh.normalize_text(t)]
    assert bad == []


def test_normalize_texts_on_curly_quoted_prose(real_texts):
    """Real prose with typographic punctuation (the common non-ASCII case) equals the reference
    on the byte path."""
    curly = [
        t.replace("'", "\u2019").replace(' "', " \u201c").replace('" ', "\u201d ").replace("--", "\u2014")
        for t in real_texts[:300]
    ]
    data, offsets = pack([t.encode() for t in curly])
    rows = np.arange(len(curly), dtype=np.int64)
    mh.CODE_POINTS.ensure(K.cp_pages(data, offsets, rows))
    simple, _ = K.transcodable(data, offsets, rows, mh.CODE_POINTS.kind, mh.CODE_POINTS.rlen)
    assert simple.sum() > 100  # most of them take the byte path
    got = mh.normalize_texts(pl.Series(curly)).to_list()
    assert got == [mh.normalize_text(t) for t in curly]


@pytest.mark.parametrize("text", ["Acme™ widgets", "25 ℃ today", "№ 5 tram", "ℌilbert space"])
def test_normalize_texts_matches_reference_on_compatibility_letters(text):
    assert mh.normalize_texts(pl.Series([text])).to_list() == [mh.normalize_text(text)]


@pytest.mark.parametrize("text", ["दुनिया में आपका स्वागत है", "ที่นี่ ประเทศไทย", "ঠাকুর"])
def test_normalize_texts_matches_reference_on_indic_vowel_signs(text):
    assert mh.normalize_texts(pl.Series([text])).to_list() == [mh.normalize_text(text)]


# --------------------------------------------------------------------------- shingles


def shingle_kernel(texts: list[str], shingle: str, *, normalize: bool, mode: int):
    kind, n = mh.MinHashParams(shingle=shingle).shingle_kind()
    data, offsets = mh.normalized_buffers(pl.Series(texts, dtype=pl.Utf8), normalize=normalize)
    fn = K.word_shingle_hashes if kind == "word" else K.char_shingle_hashes
    return fn(data, offsets, n, mode)


SHORT_DOCS = [
    "",
    "   ",
    "!!!",
    "one",
    "two words",
    "exactly five words in here",
    "six words are in this one",
    "Ελληνικά κείμενα με τόνους και άλλα",
    "日本語のテキスト",
    "a b c d e f g h i j k l m n o p",
]


@pytest.mark.parametrize("shingle", ["word:1", "word:5", "word:13", "char:1", "char:5", "char:24"])
@pytest.mark.parametrize("normalize", [True, False])
def test_shingle_counts_and_sha1_hashes_equal_reference(real_texts, shingle, normalize):
    texts = real_texts[:300] + real_texts[-40:] + SHORT_DOCS
    hv, counts = shingle_kernel(texts, shingle, normalize=normalize, mode=1)
    ref = [mh.shingles(t, shingle=shingle, normalize=normalize) for t in texts]
    assert counts.tolist() == [len(r) for r in ref]
    # mode 1 hashes each shingle's UTF-8 bytes with datasketch's sha1_hash32, in document order
    assert hv.tolist() == [sha1_hash32(s) for r in ref for s in r]


@pytest.mark.parametrize("shingle", ["char:5", "char:24"])
def test_char_shingle_xxh3_is_high_half_of_xxh3_64(real_texts, shingle):
    texts = real_texts[:50] + SHORT_DOCS
    hv, counts = shingle_kernel(texts, shingle, normalize=True, mode=0)
    ref = [s for t in texts for s in mh.shingles(t, shingle=shingle)]
    assert hv.tolist() == [xxhash.xxh3_64_intdigest(s) >> 32 for s in ref]


@pytest.mark.parametrize("shingle", ["word:1", "word:3", "word:5"])
def test_word_shingle_xxh3_hash_depends_only_on_the_shingle(real_texts, shingle):
    """Whatever the word n-gram scheme, an n-gram's hash is a function of its words: hashing each
    reference shingle as a document of its own gives the same hashes, in the same order."""
    texts = real_texts[:30]
    hv, counts = shingle_kernel(texts, shingle, normalize=True, mode=0)
    ref = [s.decode() for t in texts for s in mh.shingles(t, shingle=shingle)]
    alone, alone_counts = shingle_kernel(ref, shingle, normalize=True, mode=0)
    assert alone_counts.tolist() == [1] * len(ref)
    assert hv.tolist() == alone.tolist()
    assert len(set(hv.tolist())) > 0.99 * len(set(ref))  # 32-bit hashes: (almost) no collisions


def _documented_word_hash(words: list[bytes]) -> int:
    """The module docstring's xxh3 word n-gram hash, in plain Python: polynomial of the words'
    XXH3-64 (mod 2^64), fmix64, high 32 bits."""
    mask = (1 << 64) - 1
    h = 0
    for w in words:
        h = (h * 0x9E3779B97F4A7C15 + xxhash.xxh3_64_intdigest(w)) & mask
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & mask
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & mask
    h ^= h >> 33
    return h >> 32


@pytest.mark.parametrize("shingle", ["word:1", "word:2", "word:5", "word:13"])
@pytest.mark.parametrize("normalize", [True, False])
def test_word_shingle_xxh3_equals_documented_polynomial(real_texts, shingle, normalize):
    """The kernel rolls the polynomial from one n-gram to the next; every value must still be the
    documented polynomial of the n-gram's own words (documents long and short, empty ones)."""
    texts = real_texts[:200] + real_texts[-20:] + SHORT_DOCS
    hv, counts = shingle_kernel(texts, shingle, normalize=normalize, mode=0)
    ref = [mh.shingles(t, shingle=shingle, normalize=normalize) for t in texts]
    assert counts.tolist() == [len(r) for r in ref]
    assert hv.tolist() == [_documented_word_hash(s.split(b" ")) for r in ref for s in r]


def test_word_hash_of_every_short_length_at_every_position():
    """Words of 1-16 bytes take a branchless XXH3 (all three length classes computed, one
    selected) that reads up to 8 bytes around the word; longer words, and words within 16 bytes
    of the buffer's end, take the general one. Random non-space bytes, every word length 1-24,
    one word per document and whole runs of words per document: the first word starts at byte
    0, the last ends at the buffer's end."""
    rng = np.random.default_rng(7)
    alphabet = np.array([b for b in range(256) if b != 32], dtype=np.uint8)
    words = [rng.choice(alphabet, n).tobytes() for n in [*range(1, 25)] * 8]
    data, offsets = pack(words)
    hv, counts = K.word_shingle_hashes(data, offsets, 1, 0)
    assert counts.tolist() == [1] * len(words)
    assert hv.tolist() == [_documented_word_hash([w]) for w in words]
    docs = [b" ".join(words[i : i + 9]) for i in range(0, len(words), 9)]
    hv, counts = K.word_shingle_hashes(*pack(docs), 1, 0)
    assert hv.tolist() == [_documented_word_hash([w]) for d in docs for w in d.split(b" ")]


def test_short_documents_have_one_shingle_and_empty_ones_none():
    texts = ["", "  ...  ", "two words", "Hello, World!", "héllo"]
    for shingle in ("word:5", "char:24"):
        _, counts = shingle_kernel(texts, shingle, normalize=True, mode=1)
        assert counts.tolist() == [0, 0, 1, 1, 1]
    assert mh.shingles("Hello, World!", shingle="word:5") == [b"hello world"]
    assert mh.shingles("héllo", shingle="char:24") == [b"hello"]
    assert mh.shingles("  ...  ") == []


def test_char_shingles_count_code_points_not_bytes():
    texts = ["αβγδεζ", "日本語のテキスト"]
    _, counts = shingle_kernel(texts, "char:3", normalize=False, mode=1)
    assert counts.tolist() == [4, 6]


# --------------------------------------------------------------------------- signatures


def numpy_signatures(hv: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """datasketch affine32 in NumPy: fmix32, then min over shingles of (a*h + b) mod 2^32."""
    m32 = np.uint64(0xFFFFFFFF)
    x = hv.astype(np.uint64)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x85EBCA6B)) & m32
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & m32
    x ^= x >> np.uint64(16)
    out = np.full((counts.shape[0], a.shape[0]), 0xFFFFFFFF, dtype=np.uint64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for d in range(counts.shape[0]):
        xs = x[starts[d] : starts[d + 1]]
        if xs.size:
            perm = (a.astype(np.uint64)[None, :] * xs[:, None] + b.astype(np.uint64)[None, :]) & m32
            out[d] = perm.min(axis=0)
    return out.astype(np.uint32)


@pytest.mark.parametrize(("num_perm", "seed"), [(2, 0), (64, 1), (128, 42), (256, 7)])
def test_minhash_signatures_equal_numpy_reference(num_perm, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 40, 200).astype(np.int64)
    counts[[0, 5, 199]] = 0  # empty documents, including the first and the last
    hv = rng.integers(0, 2**32, int(counts.sum()), dtype=np.uint64).astype(np.uint32)
    hv[:3] = [0, 0xFFFFFFFF, 1]
    a, b = mh.permutations(num_perm, seed)
    got = K.minhash_signatures(hv, counts, a, b)
    assert got.dtype == np.uint32 and got.shape == (200, num_perm)
    np.testing.assert_array_equal(got, numpy_signatures(hv, counts, a, b))
    assert (got[[0, 5, 199]] == 0xFFFFFFFF).all()
    assert (got[counts > 0] < 0xFFFFFFFF).any(axis=1).all()


def test_minhash_signatures_of_no_documents():
    a, b = mh.permutations(16, 1)
    got = K.minhash_signatures(np.empty(0, np.uint32), np.empty(0, np.int64), a, b)
    assert got.shape == (0, 16)


def test_permutations_are_odd_multipliers_from_randomstate():
    a, b = mh.permutations(128, 42)
    assert a.dtype == b.dtype == np.uint32
    assert (a % 2 == 1).all()  # odd: a bijection mod 2^32
    gen = np.random.RandomState(42)
    assert (a == gen.randint(0, 1 << 31, 128, dtype=np.uint32) * 2 + 1).all()
    assert (b == gen.randint(0, 1 << 32, 128, dtype=np.uint32)).all()


def test_non_ascii_rows():
    data, offsets = pack([b"", b"ascii only", "caf\u00e9".encode(), b"\x7f", "日".encode()])
    assert K.non_ascii_rows(data, offsets).tolist() == [False, False, True, False, True]
