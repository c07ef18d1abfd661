"""Compiled kernels (numba) for MinHash: tokenizing, XXH3-64 word hashing, n-grams, permutations.

Everything here works on flat NumPy buffers: the UTF-8 bytes of a batch of documents and their
offsets. ``xxh3_64`` is the XXH3 64-bit hash (seed 0, default secret) of the xxHash specification;
``tests/dedup/test_kernels.py`` checks it against the ``xxhash`` library for every length class.
Kernels are compiled on first use and cached next to this file.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from dataforge._native import bswap64, load_word, mul128_fold64

# XXH3's default secret (the xxHash specification's kSecret, 192 bytes).
_SECRET = np.array(
    [
        0xB8, 0xFE, 0x6C, 0x39, 0x23, 0xA4, 0x4B, 0xBE, 0x7C, 0x01, 0x81, 0x2C, 0xF7, 0x21, 0xAD, 0x1C,
        0xDE, 0xD4, 0x6D, 0xE9, 0x83, 0x90, 0x97, 0xDB, 0x72, 0x40, 0xA4, 0xA4, 0xB7, 0xB3, 0x67, 0x1F,
        0xCB, 0x79, 0xE6, 0x4E, 0xCC, 0xC0, 0xE5, 0x78, 0x82, 0x5A, 0xD0, 0x7D, 0xCC, 0xFF, 0x72, 0x21,
        0xB8, 0x08, 0x46, 0x74, 0xF7, 0x43, 0x24, 0x8E, 0xE0, 0x35, 0x90, 0xE6, 0x81, 0x3A, 0x26, 0x4C,
        0x3C, 0x28, 0x52, 0xBB, 0x91, 0xC3, 0x00, 0xCB, 0x88, 0xD0, 0x65, 0x8B, 0x1B, 0x53, 0x2E, 0xA3,
        0x71, 0x64, 0x48, 0x97, 0xA2, 0x0D, 0xF9, 0x4E, 0x38, 0x19, 0xEF, 0x46, 0xA9, 0xDE, 0xAC, 0xD8,
        0xA8, 0xFA, 0x76, 0x3F, 0xE3, 0x9C, 0x34, 0x3F, 0xF9, 0xDC, 0xBB, 0xC7, 0xC7, 0x0B, 0x4F, 0x1D,
        0x8A, 0x51, 0xE0, 0x4B, 0xCD, 0xB4, 0x59, 0x31, 0xC8, 0x9F, 0x7E, 0xC9, 0xD9, 0x78, 0x73, 0x64,
        0xEA, 0xC5, 0xAC, 0x83, 0x34, 0xD3, 0xEB, 0xC3, 0xC5, 0x81, 0xA0, 0xFF, 0xFA, 0x13, 0x63, 0xEB,
        0x17, 0x0D, 0xDD, 0x51, 0xB7, 0xF0, 0xDA, 0x49, 0xD3, 0x16, 0x55, 0x26, 0x29, 0xD4, 0x68, 0x9E,
        0x2B, 0x16, 0xBE, 0x58, 0x7D, 0x47, 0xA1, 0xFC, 0x8F, 0xF8, 0xB8, 0xD1, 0x7A, 0xD0, 0x31, 0xCE,
        0x45, 0xCB, 0x3A, 0x8F, 0x95, 0x16, 0x04, 0x28, 0xAF, 0xD7, 0xFB, 0xCA, 0xBB, 0x4B, 0x40, 0x7E,
    ],
    dtype=np.uint8,
)  # fmt: skip

_P32_1 = np.uint64(0x9E3779B1)
_P32_2 = np.uint64(0x85EBCA77)
_P32_3 = np.uint64(0xC2B2AE3D)
_P64_1 = np.uint64(0x9E3779B185EBCA87)
_P64_2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P64_3 = np.uint64(0x165667B19E3779F9)
_P64_4 = np.uint64(0x85EBCA77C2B2AE63)
_P64_5 = np.uint64(0x27D4EB2F165667C5)
_MX1 = np.uint64(0x165667919E3779F9)
_MX2 = np.uint64(0x9FB21C651E98DF25)
_M32 = np.uint64(0xFFFFFFFF)
_NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)


# Machine words (dataforge._native): one unaligned load and one widening multiply instead of byte
# loads and four 32-bit products (about 2x the speed of XXH3 on words). On a big-endian machine the
# portable byte-by-byte reads below are used.
_LITTLE = sys.byteorder == "little"


@njit(inline="always")
def _r64_bytes(b, i):
    return (
        np.uint64(b[i])
        | (np.uint64(b[i + 1]) << np.uint64(8))
        | (np.uint64(b[i + 2]) << np.uint64(16))
        | (np.uint64(b[i + 3]) << np.uint64(24))
        | (np.uint64(b[i + 4]) << np.uint64(32))
        | (np.uint64(b[i + 5]) << np.uint64(40))
        | (np.uint64(b[i + 6]) << np.uint64(48))
        | (np.uint64(b[i + 7]) << np.uint64(56))
    )


@njit(inline="always")
def _r32_bytes(b, i):
    return (
        np.uint64(b[i])
        | (np.uint64(b[i + 1]) << np.uint64(8))
        | (np.uint64(b[i + 2]) << np.uint64(16))
        | (np.uint64(b[i + 3]) << np.uint64(24))
    )


@njit(inline="always")
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(inline="always")
def _r64_native(b, i):
    return load_word(b, i, 8)


@njit(inline="always")
def _r32_native(b, i):
    return load_word(b, i, 4)


@njit(inline="always")
def _swap64_bytes(x):
    out = np.uint64(0)
    for k in range(8):
        out = (out << np.uint64(8)) | ((x >> np.uint64(8 * k)) & np.uint64(0xFF))
    return out


@njit(inline="always")
def _mul128_fold64_portable(a, b):
    a_lo = a & _M32
    a_hi = a >> np.uint64(32)
    b_lo = b & _M32
    b_hi = b >> np.uint64(32)
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    hi_hi = a_hi * b_hi
    cross = (lo_lo >> np.uint64(32)) + (hi_lo & _M32) + lo_hi
    upper = (hi_lo >> np.uint64(32)) + (cross >> np.uint64(32)) + hi_hi
    lower = (cross << np.uint64(32)) | (lo_lo & _M32)
    return lower ^ upper


_r64 = _r64_native if _LITTLE else _r64_bytes  # little-endian reads of the input and secret
_r32 = _r32_native if _LITTLE else _r32_bytes
_swap64 = bswap64
_mul128_fold64 = mul128_fold64


@njit(inline="always")
def _xxh64_avalanche(h):
    h ^= h >> np.uint64(33)
    h *= _P64_2
    h ^= h >> np.uint64(29)
    h *= _P64_3
    return h ^ (h >> np.uint64(32))


@njit(inline="always")
def _xxh3_avalanche(h):
    h ^= h >> np.uint64(37)
    h *= _MX1
    return h ^ (h >> np.uint64(32))


@njit(inline="always")
def _rrmxmx(h, length):
    h ^= _rotl(h, 49) ^ _rotl(h, 24)
    h *= _MX2
    h ^= (h >> np.uint64(35)) + np.uint64(length)
    h *= _MX2
    return h ^ (h >> np.uint64(28))


@njit(inline="always")
def _mix16(b, i, s, si):
    lo = _r64(b, i)
    hi = _r64(b, i + 8)
    return _mul128_fold64(lo ^ _r64(s, si), hi ^ _r64(s, si + 8))


@njit
def _xxh3_long(b, start, length, s):
    acc = np.empty(8, dtype=np.uint64)
    acc[0] = _P32_3
    acc[1] = _P64_1
    acc[2] = _P64_2
    acc[3] = _P64_3
    acc[4] = _P64_4
    acc[5] = _P32_2
    acc[6] = _P64_5
    acc[7] = _P32_1
    stripes_per_block = (192 - 64) // 8
    block_len = 64 * stripes_per_block
    nb_blocks = (length - 1) // block_len
    for n in range(nb_blocks):
        for st in range(stripes_per_block):
            _accumulate_512(acc, b, start + n * block_len + st * 64, s, st * 8)
        _scramble(acc, s, 192 - 64)
    nb_stripes = ((length - 1) - block_len * nb_blocks) // 64
    for st in range(nb_stripes):
        _accumulate_512(acc, b, start + nb_blocks * block_len + st * 64, s, st * 8)
    _accumulate_512(acc, b, start + length - 64, s, 192 - 64 - 7)
    result = np.uint64(length) * _P64_1
    for i in range(4):
        result += _mul128_fold64(acc[2 * i] ^ _r64(s, 11 + 16 * i), acc[2 * i + 1] ^ _r64(s, 11 + 16 * i + 8))
    return _xxh3_avalanche(result)


@njit
def _accumulate_512(acc, b, i, s, si):
    for k in range(8):
        data_val = _r64(b, i + 8 * k)
        data_key = data_val ^ _r64(s, si + 8 * k)
        acc[k ^ 1] += data_val
        acc[k] += (data_key & _M32) * (data_key >> np.uint64(32))


@njit
def _scramble(acc, s, si):
    for k in range(8):
        a = acc[k]
        a ^= a >> np.uint64(47)
        a ^= _r64(s, si + 8 * k)
        a *= _P32_1
        acc[k] = a


@njit(inline="always")
def xxh3_64(b, start, length):
    """XXH3-64 (seed 0, default secret) of ``b[start:start+length]``."""
    s = _SECRET
    if length <= 16:
        if length > 8:
            bitflip1 = _r64(s, 24) ^ _r64(s, 32)
            bitflip2 = _r64(s, 40) ^ _r64(s, 48)
            lo = _r64(b, start) ^ bitflip1
            hi = _r64(b, start + length - 8) ^ bitflip2
            acc = np.uint64(length) + _swap64(lo) + hi + _mul128_fold64(lo, hi)
            return _xxh3_avalanche(acc)
        if length >= 4:
            in1 = _r32(b, start)
            in2 = _r32(b, start + length - 4)
            bitflip = _r64(s, 8) ^ _r64(s, 16)
            keyed = (in2 + (in1 << np.uint64(32))) ^ bitflip
            return _rrmxmx(keyed, length)
        if length > 0:
            c1 = np.uint64(b[start])
            c2 = np.uint64(b[start + (length >> 1)])
            c3 = np.uint64(b[start + length - 1])
            combined = (
                (c1 << np.uint64(16)) | (c2 << np.uint64(24)) | c3 | (np.uint64(length) << np.uint64(8))
            )
            bitflip = _r32(s, 0) ^ _r32(s, 4)
            return _xxh64_avalanche(combined ^ bitflip)
        return _xxh64_avalanche(_r64(s, 56) ^ _r64(s, 64))
    if length <= 128:
        acc = np.uint64(length) * _P64_1
        if length > 32:
            if length > 64:
                if length > 96:
                    acc += _mix16(b, start + 48, s, 96)
                    acc += _mix16(b, start + length - 64, s, 112)
                acc += _mix16(b, start + 32, s, 64)
                acc += _mix16(b, start + length - 48, s, 80)
            acc += _mix16(b, start + 16, s, 32)
            acc += _mix16(b, start + length - 32, s, 48)
        acc += _mix16(b, start, s, 0)
        acc += _mix16(b, start + length - 16, s, 16)
        return _xxh3_avalanche(acc)
    if length <= 240:
        acc = np.uint64(length) * _P64_1
        for i in range(8):
            acc += _mix16(b, start + 16 * i, s, 16 * i)
        acc_end = _mix16(b, start + length - 16, s, 136 - 17)
        acc = _xxh3_avalanche(acc)
        for i in range(8, length // 16):
            acc_end += _mix16(b, start + 16 * i, s, 16 * (i - 8) + 3)
        return _xxh3_avalanche(acc + acc_end)
    return _xxh3_long(b, start, length, s)


# XXH3's bitflips for inputs of 1-16 bytes (fixed words of the default secret).
def _secret_word(i: int, width: int) -> int:
    return int.from_bytes(_SECRET[i : i + width].tobytes(), "little")


_BF_1TO3 = np.uint64(_secret_word(0, 4) ^ _secret_word(4, 4))
_BF_4TO8 = np.uint64(_secret_word(8, 8) ^ _secret_word(16, 8))
_BF_9TO16_LO = np.uint64(_secret_word(24, 8) ^ _secret_word(32, 8))
_BF_9TO16_HI = np.uint64(_secret_word(40, 8) ^ _secret_word(48, 8))


@njit(inline="always")
def _xxh3_short(b, start, length):
    """:func:`xxh3_64` of 1-16 bytes without a branch on the length: the three length classes'
    results are all computed and one is selected. Word lengths in text fall into the classes at
    random, so the branches of ``xxh3_64`` were mispredicted about every other word; this is ~2x
    faster on words. Reads ``b[max(start + length - 8, 0):start + 8]``, so the caller keeps
    ``start + 16 <= len(b)`` (and ``1 <= length <= 16``)."""
    n = np.uint64(length)
    c1 = np.uint64(b[start])
    c2 = np.uint64(b[start + (length >> 1)])
    c3 = np.uint64(b[start + length - 1])
    combined = (c1 << np.uint64(16)) | (c2 << np.uint64(24)) | c3 | (n << np.uint64(8))
    h_1to3 = _xxh64_avalanche(combined ^ _BF_1TO3)
    in1 = _r32(b, start)
    in2 = _r32(b, max(start + length - 4, 0))
    h_4to8 = _rrmxmx((in2 + (in1 << np.uint64(32))) ^ _BF_4TO8, length)
    lo = _r64(b, start) ^ _BF_9TO16_LO
    hi = _r64(b, max(start + length - 8, 0)) ^ _BF_9TO16_HI
    h_9to16 = _xxh3_avalanche(n + _swap64(lo) + hi + _mul128_fold64(lo, hi))
    h = h_4to8 if length <= 8 else h_9to16
    return h_1to3 if length <= 3 else h


@njit(cache=True)
def xxh3_many(data, offsets):
    """XXH3-64 of every value ``data[offsets[i]:offsets[i+1]]``."""
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = xxh3_64(data, offsets[i], offsets[i + 1] - offsets[i])
    return out


# --------------------------------------------------------------------------- SHA-1


@njit(inline="always")
def _rotl32(x, r):
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@njit(inline="always")
def _bswap32(h):
    return np.uint32(
        ((h & np.uint32(0xFF)) << np.uint32(24))
        | ((h & np.uint32(0xFF00)) << np.uint32(8))
        | ((h >> np.uint32(8)) & np.uint32(0xFF00))
        | (h >> np.uint32(24))
    )


@njit
def sha1_hash32(b, start, length, w):
    """datasketch's ``sha1_hash32``: the first 4 bytes of SHA-1, read little endian.

    ``w`` is a scratch array of 80 uint32.
    """
    h0 = np.uint32(0x67452301)
    h1 = np.uint32(0xEFCDAB89)
    h2 = np.uint32(0x98BADCFE)
    h3 = np.uint32(0x10325476)
    h4 = np.uint32(0xC3D2E1F0)
    bits = np.uint64(length) * np.uint64(8)
    n_blocks = (length + 8) // 64 + 1
    total = n_blocks * 64
    for blk in range(n_blocks):
        base = blk * 64
        for i in range(16):
            pos = base + 4 * i
            if pos + 3 < length:  # a whole word of message bytes
                p = start + pos
                w[i] = np.uint32(
                    (np.uint32(b[p]) << np.uint32(24))
                    | (np.uint32(b[p + 1]) << np.uint32(16))
                    | (np.uint32(b[p + 2]) << np.uint32(8))
                    | np.uint32(b[p + 3])
                )
                continue
            word = np.uint32(0)
            for j in range(4):
                q = pos + j
                if q < length:
                    byte = np.uint32(b[start + q])
                elif q == length:
                    byte = np.uint32(0x80)
                elif q >= total - 8:
                    byte = np.uint32((bits >> np.uint64(8 * (total - 1 - q))) & np.uint64(0xFF))
                else:
                    byte = np.uint32(0)
                word = np.uint32((word << np.uint32(8)) | byte)
            w[i] = word
        for i in range(16, 80):
            w[i] = _rotl32(np.uint32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]), 1)
        a = h0
        bb = h1
        c = h2
        d = h3
        e = h4
        for i in range(20):
            temp = np.uint32(
                _rotl32(a, 5) + np.uint32((bb & c) | (~bb & d)) + e + np.uint32(0x5A827999) + w[i]
            )
            e = d
            d = c
            c = _rotl32(bb, 30)
            bb = a
            a = temp
        for i in range(20, 40):
            temp = np.uint32(_rotl32(a, 5) + np.uint32(bb ^ c ^ d) + e + np.uint32(0x6ED9EBA1) + w[i])
            e = d
            d = c
            c = _rotl32(bb, 30)
            bb = a
            a = temp
        for i in range(40, 60):
            temp = np.uint32(
                _rotl32(a, 5) + np.uint32((bb & c) | (bb & d) | (c & d)) + e + np.uint32(0x8F1BBCDC) + w[i]
            )
            e = d
            d = c
            c = _rotl32(bb, 30)
            bb = a
            a = temp
        for i in range(60, 80):
            temp = np.uint32(_rotl32(a, 5) + np.uint32(bb ^ c ^ d) + e + np.uint32(0xCA62C1D6) + w[i])
            e = d
            d = c
            c = _rotl32(bb, 30)
            bb = a
            a = temp
        h0 = np.uint32(h0 + a)
        h1 = np.uint32(h1 + bb)
        h2 = np.uint32(h2 + c)
        h3 = np.uint32(h3 + d)
        h4 = np.uint32(h4 + e)
    return _bswap32(h0)  # digest bytes 0..3 are h0 big endian; read them little endian


@njit(cache=True)
def sha1_many(data, offsets):
    """``sha1_hash32`` of every value ``data[offsets[i]:offsets[i+1]]``."""
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint32)
    w = np.empty(80, dtype=np.uint32)
    for i in range(n):
        out[i] = sha1_hash32(data, offsets[i], offsets[i + 1] - offsets[i], w)
    return out


_LANES = 16  # SHA-1 messages hashed side by side (one AVX-512 vector of uint32 per state word)


@njit
def sha1_spans(b, starts, lengths, out, o):
    """``sha1_hash32`` of every span ``b[starts[i]:starts[i]+lengths[i]]`` into ``out[o + i]``.

    Spans of at most 55 bytes (one SHA-1 block: almost every word 5-gram or 24-character
    shingle) are hashed ``_LANES`` at a time, the SHA-1 rounds running over arrays of one state
    word per message so that the compiler vectorizes them across messages (~2x a message at a
    time); longer spans go through :func:`sha1_hash32`.
    """
    n = starts.shape[0]
    short = np.empty(n, dtype=np.int64)
    ns = 0
    wtmp = np.empty(80, dtype=np.uint32)
    for i in range(n):
        if lengths[i] <= 55:
            short[ns] = i
            ns += 1
        else:
            out[o + i] = sha1_hash32(b, starts[i], lengths[i], wtmp)
    w = np.zeros((80, _LANES), dtype=np.uint32)
    a = np.empty(_LANES, dtype=np.uint32)
    bb = np.empty(_LANES, dtype=np.uint32)
    c = np.empty(_LANES, dtype=np.uint32)
    d = np.empty(_LANES, dtype=np.uint32)
    e = np.empty(_LANES, dtype=np.uint32)
    for g in range(0, ns, _LANES):
        m = min(_LANES, ns - g)
        for lane in range(_LANES):  # the padded block of each message, as big-endian words
            length = 0
            st = 0
            if lane < m:
                length = lengths[short[g + lane]]
                st = starts[short[g + lane]]
            full = length >> 2
            for k in range(full):
                p = st + 4 * k
                w[k, lane] = (
                    (np.uint32(b[p]) << np.uint32(24))
                    | (np.uint32(b[p + 1]) << np.uint32(16))
                    | (np.uint32(b[p + 2]) << np.uint32(8))
                    | np.uint32(b[p + 3])
                )
            word = np.uint32(0x80) << np.uint32(24 - 8 * (length & 3))
            for j in range(length & 3):
                word |= np.uint32(b[st + 4 * full + j]) << np.uint32(24 - 8 * j)
            w[full, lane] = word
            for k in range(full + 1, 15):
                w[k, lane] = 0
            w[15, lane] = np.uint32(length * 8)
        for t in range(16, 80):
            for lane in range(_LANES):
                w[t, lane] = _rotl32(
                    np.uint32(w[t - 3, lane] ^ w[t - 8, lane] ^ w[t - 14, lane] ^ w[t - 16, lane]), 1
                )
        for lane in range(_LANES):
            a[lane] = np.uint32(0x67452301)
            bb[lane] = np.uint32(0xEFCDAB89)
            c[lane] = np.uint32(0x98BADCFE)
            d[lane] = np.uint32(0x10325476)
            e[lane] = np.uint32(0xC3D2E1F0)
        for t in range(80):
            for lane in range(_LANES):
                x, y, z = bb[lane], c[lane], d[lane]
                if t < 20:
                    f = np.uint32(((x & y) | (~x & z)) + np.uint32(0x5A827999))
                elif t < 40:
                    f = np.uint32((x ^ y ^ z) + np.uint32(0x6ED9EBA1))
                elif t < 60:
                    f = np.uint32(((x & y) | (x & z) | (y & z)) + np.uint32(0x8F1BBCDC))
                else:
                    f = np.uint32((x ^ y ^ z) + np.uint32(0xCA62C1D6))
                temp = np.uint32(_rotl32(a[lane], 5) + f + e[lane] + w[t, lane])
                e[lane] = z
                d[lane] = y
                c[lane] = _rotl32(x, 30)
                bb[lane] = a[lane]
                a[lane] = temp
        for lane in range(m):
            out[o + short[g + lane]] = _bswap32(np.uint32(np.uint32(0x67452301) + a[lane]))


# --------------------------------------------------------------------------- normalization


@njit(cache=True)
def non_ascii_rows(buf, offsets):
    """True for every document holding a byte >= 0x80.

    Eight bytes at a time: the aligned middle of each document is OR-ed as uint64 words (no
    branch per byte), its unaligned ends byte by byte.
    """
    n_docs = offsets.shape[0] - 1
    out = np.zeros(n_docs, dtype=np.bool_)
    n_words = buf.shape[0] >> 3
    words = buf[: n_words << 3].view(np.uint64)
    high = np.uint64(0x8080808080808080)
    for d in range(n_docs):
        lo = offsets[d]
        hi = offsets[d + 1]
        acc = np.uint8(0)
        i = lo
        while i < hi and (i & 7) != 0:
            acc |= buf[i]
            i += 1
        w_end = hi >> 3
        acc_w = np.uint64(0)
        for w in range(i >> 3, w_end):
            acc_w |= words[w]
        i = max(i, w_end << 3)
        while i < hi:
            acc |= buf[i]
            i += 1
        out[d] = ((acc & 0x80) != 0) | ((acc_w & high) != 0)
    return out


# Kinds of a code point in the tables of dataforge.dedup.minhash.CodePoints
CP_UNKNOWN = 0  # not looked at yet
CP_HARD = 1  # needs Unicode normalization in context (Polars)
CP_SEPARATOR = 2  # becomes a separator, whatever surrounds it
CP_REPLACE = 3  # becomes its replacement bytes (possibly none), whatever surrounds it


@njit(inline="always")
def _decode(src, i, b0):
    """Code point and length of the UTF-8 sequence at ``src[i]`` (first byte ``b0`` >= 0x80;
    valid UTF-8). Four-byte sequences give -1 (outside the tables)."""
    if b0 >= 0xF0:
        return -1, 4
    if b0 >= 0xE0:
        return ((b0 & 0x0F) << 12) | ((src[i + 1] & 0x3F) << 6) | (src[i + 2] & 0x3F), 3
    return ((b0 & 0x1F) << 6) | (src[i + 1] & 0x3F), 2


@njit(cache=True)
def cp_pages(buf, offsets, rows):
    """Which 256-code-point pages of the Basic Multilingual Plane the documents ``rows`` use."""
    pages = np.zeros(256, dtype=np.bool_)
    for r in range(rows.shape[0]):
        d = rows[r]
        i = offsets[d]
        hi = offsets[d + 1]
        while i < hi:
            b0 = buf[i]
            if b0 < 0x80:
                i += 1
                continue
            cp, n = _decode(buf, i, b0)
            if cp >= 0:
                pages[cp >> 8] = True
            i += n
    return pages


@njit(cache=True)
def transcodable(buf, offsets, rows, kind, rlen):
    """For each document ``rows[r]``: True when every non-ASCII code point it holds has a
    context-free normalization (``kind`` separator or replacement; the pages it uses were looked
    at, see :func:`cp_pages`). Such documents are normalized here, byte by byte (see
    :func:`canonical`), instead of by Polars' Unicode functions. Also returns how many bytes
    those documents can grow by (replacements longer than their code point, e.g. Hangul
    syllables spelled in jamo)."""
    out = np.zeros(rows.shape[0], dtype=np.bool_)
    growth = 0  # bytes the accepted documents may grow by (replacements longer than their code point)
    for r in range(rows.shape[0]):
        d = rows[r]
        i = offsets[d]
        hi = offsets[d + 1]
        ok = True
        grow = 0
        while i < hi:
            b0 = buf[i]
            if b0 < 0x80:
                i += 1
                continue
            cp, n = _decode(buf, i, b0)
            if cp < 0 or kind[cp] < CP_SEPARATOR:
                ok = False
                break
            grow += max(0, np.int64(rlen[cp]) - n)
            i += n
        out[r] = ok
        if ok:
            growth += grow
    return out, growth


_U1 = np.uint64(1)


@njit(inline="always")
def _canonical_doc(src, lo, hi, tab, run, out, w):
    """Positions are uint64 throughout: numba checks every signed index for wrap-around, which
    here costs as much as the rest of the loop (~1.8x slower)."""
    doc_start = w
    prev = np.uint8(32)  # as if a separator preceded the document
    for i in range(lo, hi):
        c = tab[src[i]]
        out[w] = c
        w += np.uint64((c != prev) | ((c != 32) & (c != run)))  # not a repeat in a run
        prev = c
    if w > doc_start and out[w - _U1] == 32:
        w -= _U1
    return w


@njit(inline="always")
def _transcode_doc(src, lo, hi, tab, run, kind, repl, rlen, out, w):
    """:func:`_canonical_doc` for a document with non-ASCII code points of known normalization:
    separators join the separator runs, others are replaced by their normalized bytes."""
    doc_start = w
    prev = np.uint8(32)
    i = lo
    while i < hi:
        b0 = src[i]
        if b0 < 0x80:
            c = tab[b0]
            out[w] = c
            w += np.uint64((c != prev) | ((c != 32) & (c != run)))
            prev = c
            i += _U1
            continue
        cp, n = _decode(src, np.int64(i), b0)
        i += np.uint64(n)
        if kind[cp] == CP_SEPARATOR:
            if prev != 32:
                out[w] = 32
                w += _U1
            prev = np.uint8(32)
        else:
            m = np.uint64(rlen[cp])
            for j in range(m):
                out[w + np.uint64(j)] = repl[cp, j]
            w += m
            if m:
                prev = np.uint8(1)  # a letter: ends a separator or digit run
    if w > doc_start and out[w - _U1] == 32:
        w -= _U1
    return w


@njit(cache=True)
def canonical(
    buf, offsets, table, digit_runs, fixed_rows, fixed_buf, fixed_offsets, coded, kind, repl, rlen, growth
):
    """Map every byte through ``table`` (32 = separator), collapse each run of separators to one
    space and, with ``digit_runs``, each run of ``0`` bytes (the table maps every digit to ``0``)
    to one ``0``; trim each document.

    - Document ``fixed_rows[k]`` (ascending) is read from document ``k`` of ``fixed_buf`` /
      ``fixed_offsets`` instead of ``buf`` (its text after Unicode normalization).
    - Documents flagged in ``coded`` (a bool per document, or empty for none) hold non-ASCII
      code points of context-free normalization: each is a separator or its replacement bytes
      (``kind``, ``repl``, ``rlen``: tables indexed by code point); those documents grow by at
      most ``growth`` bytes in all (see :func:`transcodable`).

    With a table that maps only ASCII whitespace to 32 and no ``digit_runs``, this just collapses
    whitespace, so that words are always separated by exactly one space. Returns the new bytes
    and offsets.

    Branchless on ASCII documents: every byte is written and the write position advances unless
    the byte repeats a separator or digit run (about 2x faster than branching on this data).
    """
    n_docs = offsets.shape[0] - 1
    # the documents' own bytes (``buf`` may be a larger buffer they lie in: io/views.flat_runs)
    out = np.empty(offsets[n_docs] - offsets[0] + fixed_buf.shape[0] + growth, dtype=np.uint8)
    out_offsets = np.empty(n_docs + 1, dtype=np.int64)
    run = np.uint8(48) if digit_runs else np.uint8(32)
    w = np.uint64(0)
    out_offsets[0] = 0
    any_coded = coded.shape[0] > 0
    k = 0
    for d in range(n_docs):
        lo = np.uint64(offsets[d])
        hi = np.uint64(offsets[d + 1])
        if k < fixed_rows.shape[0] and fixed_rows[k] == d:
            f_lo = np.uint64(fixed_offsets[k])
            f_hi = np.uint64(fixed_offsets[k + 1])
            w = _canonical_doc(fixed_buf, f_lo, f_hi, table, run, out, w)
            k += 1
        elif any_coded and coded[d]:
            w = _transcode_doc(buf, lo, hi, table, run, kind, repl, rlen, out, w)
        else:
            w = _canonical_doc(buf, lo, hi, table, run, out, w)
        out_offsets[d + 1] = w
    return out[:w], out_offsets


# --------------------------------------------------------------------------- shingles


@njit(cache=True)
def _positions(buf, only_spaces):
    """Branchless compaction: positions of spaces, or of UTF-8 code point starts."""
    n = buf.shape[0]
    out = np.empty(n + 1, dtype=np.int64)
    k = 0
    if only_spaces:
        for i in range(n):
            out[k] = i
            k += buf[i] == 32
    else:
        for i in range(n):
            out[k] = i
            k += (buf[i] & 0xC0) != 0x80
    return out[:k]


@njit(inline="always")
def _fmix64_hi32(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return np.uint32(h >> np.uint64(32))


@njit(cache=True)
def word_shingle_hashes(buf, offsets, n, mode):
    """32-bit hashes of every word n-gram of canonical text (words separated by one space, no
    leading or trailing space).

    ``mode`` 0 (``xxh3``): each word is hashed once with XXH3-64 and an n-gram is the polynomial
    ``sum(w[i+k] * M^(n-1-k)) mod 2^64`` of its word hashes, finished with MurmurHash3's fmix64,
    high 32 bits. ``mode`` 1 (``sha1``): datasketch's ``sha1_hash32`` of the n-gram's bytes (its
    words joined by one space). A document with fewer than ``n`` words has one shingle (all its
    words); an empty one has none. Returns hashes (flat) and shingles per document.
    """
    if mode == 0:
        return _word_xxh3(buf, offsets, n)
    return _word_sha1(buf, offsets, n)


@njit(cache=True)
def _word_xxh3(buf, offsets, n):
    """The ``xxh3`` word n-grams, one document at a time: first the word ends are listed without
    a branch per byte (into a scratch array the size of the longest document), then each word is
    hashed and the polynomial rolls (``h = (h - w_old * M^(n-1)) * M + w_new``, exact in mod 2^64
    arithmetic). Listing the ends first keeps the branch on every byte out of the hashing loop
    (~20 % faster than finding words while hashing); words of up to 16 bytes (nearly all) are
    hashed by :func:`_xxh3_short`."""
    n_docs = offsets.shape[0] - 1
    size = buf.shape[0]
    n_sh = np.zeros(n_docs, dtype=np.int64)
    longest = 0
    for d in range(n_docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    ends = np.empty(longest + 1, dtype=np.int64)
    out = np.empty(buf.shape[0] + n_docs + 1, dtype=np.uint32)  # words <= bytes + 1 per document
    ring = np.zeros(n, dtype=np.uint64)
    top = np.uint64(1)  # M^(n-1)
    for _ in range(n - 1):
        top *= _NGRAM_MULT
    o = 0
    for d in range(n_docs):
        lo = offsets[d]
        hi = offsets[d + 1]
        if hi == lo:
            continue
        k = 0  # spaces: word w ends at ends[w], the last one at the document's end
        for i in range(lo, hi):
            ends[k] = i
            k += buf[i] == 32
        ends[k] = hi
        o0 = o
        h = np.uint64(0)
        r = 0  # ring slot of the word leaving the window
        start = lo
        for w in range(k + 1):
            end = ends[w]
            length = end - start
            # (this order of the tests matters: with ``0 < length`` first, LLVM turned the
            # selects of _xxh3_short back into branches; 0.75 s instead of 0.47 s per 100k docs)
            if length <= 16 and start + 16 <= size and length > 0:
                wh = _xxh3_short(buf, start, length)
            else:
                wh = xxh3_64(buf, start, length)
            if w >= n:
                h -= ring[r] * top
            h = h * _NGRAM_MULT + wh
            ring[r] = wh
            r = r + 1 if r + 1 < n else 0
            if w + 1 >= n:
                out[o] = _fmix64_hi32(h)
                o += 1
            start = end + 1
        if k + 1 < n:  # fewer than n words: one shingle of all of them
            out[o] = _fmix64_hi32(h)
            o += 1
        n_sh[d] = o - o0
    return out[:o], n_sh


@njit(cache=True)
def _word_sha1(buf, offsets, n):
    """The ``sha1`` word n-grams: SHA-1 of each n-gram's bytes (listed as spans first, then hashed
    side by side, see :func:`sha1_spans`)."""
    n_docs = offsets.shape[0] - 1
    spaces = _positions(buf, True)
    n_spaces = spaces.shape[0]
    n_sh = np.zeros(n_docs, dtype=np.int64)
    starts = np.empty(n_spaces + n_docs + 1, dtype=np.int64)
    lengths = np.empty(n_spaces + n_docs + 1, dtype=np.int64)
    o = 0
    si = 0
    for d in range(n_docs):
        lo = offsets[d]
        hi = offsets[d + 1]
        sj = si
        while sj < n_spaces and spaces[sj] < hi:
            sj += 1
        if hi == lo:
            si = sj
            continue
        words = sj - si + 1
        if words < n:
            starts[o] = lo
            lengths[o] = hi - lo
            o += 1
        else:
            for k in range(words - n + 1):
                start = lo if k == 0 else spaces[si + k - 1] + 1
                last = k + n - 1
                end = hi if last == words - 1 else spaces[si + last]
                starts[o] = start
                lengths[o] = end - start
                o += 1
        n_sh[d] = words - n + 1 if words >= n else 1
        si = sj
    out = np.empty(o, dtype=np.uint32)
    sha1_spans(buf, starts[:o], lengths[:o], out, 0)
    return out, n_sh


@njit(cache=True)
def char_shingle_hashes(buf, offsets, n, mode):
    """32-bit hashes of every window of ``n`` characters (UTF-8 code points); see
    :func:`word_shingle_hashes` for ``mode`` and short documents."""
    n_docs = offsets.shape[0] - 1
    cps = _positions(buf, False)
    n_cps = cps.shape[0]
    n_sh = np.zeros(n_docs, dtype=np.int64)
    out = np.empty(n_cps + n_docs + 1, dtype=np.uint32)
    longest = 1
    for d in range(n_docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    starts = np.empty(longest, dtype=np.int64)  # sha1: one document's spans, hashed side by side
    lengths = np.empty(longest, dtype=np.int64)
    o = 0
    ci = 0
    for d in range(n_docs):
        lo = offsets[d]
        hi = offsets[d + 1]
        cj = ci
        while cj < n_cps and cps[cj] < hi:
            cj += 1
        chars = cj - ci
        if chars == 0:
            ci = cj
            continue
        # a document shorter than n characters is one shingle: itself. One call site of the
        # (inlined) hash keeps the compiled kernel half the size, and its compile time too.
        count = chars - n + 1 if chars >= n else 1
        for k in range(count):
            start = cps[ci + k] if chars >= n else lo
            end = hi if k + n >= chars else cps[ci + k + n]
            if mode == 0:
                out[o + k] = np.uint32(xxh3_64(buf, start, end - start) >> np.uint64(32))
            else:
                starts[k] = start
                lengths[k] = end - start
        if mode != 0:
            sha1_spans(buf, starts[:count], lengths[:count], out, o)
        o += count
        n_sh[d] = count
        ci = cj
    return out[:o], n_sh


# --------------------------------------------------------------------------- permutations


@njit(inline="always")
def _fmix32(x):
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * np.uint32(0x85EBCA6B))
    x = np.uint32(x ^ (x >> np.uint32(13)))
    x = np.uint32(x * np.uint32(0xC2B2AE35))
    return np.uint32(x ^ (x >> np.uint32(16)))


@njit(cache=True)
def minhash_signatures(hv, n_sh, a, b):
    """MinHash of each document's shingle hashes ``hv`` (datasketch ``affine32``: fmix32 pre-mix,
    ``a*h + b mod 2^32``, minimum per permutation). Empty documents keep ``2^32 - 1``.

    Four shingles per pass over the permutations: the signature row is loaded and stored once
    for four shingles instead of once for each (~1.5x faster; the vectorized multiplies are
    then the bound).
    """
    n_docs = n_sh.shape[0]
    num_perm = a.shape[0]
    sig = np.full((n_docs, num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    pos = 0
    for d in range(n_docs):
        row = sig[d]
        end = pos + n_sh[d]
        s = pos
        while s + 3 < end:
            x0 = _fmix32(hv[s])
            x1 = _fmix32(hv[s + 1])
            x2 = _fmix32(hv[s + 2])
            x3 = _fmix32(hv[s + 3])
            for k in range(num_perm):
                ak = a[k]
                bk = b[k]
                m01 = min(np.uint32(ak * x0 + bk), np.uint32(ak * x1 + bk))
                m23 = min(np.uint32(ak * x2 + bk), np.uint32(ak * x3 + bk))
                row[k] = min(row[k], min(m01, m23))
            s += 4
        while s < end:
            x = _fmix32(hv[s])
            for k in range(num_perm):
                row[k] = min(row[k], np.uint32(a[k] * x + b[k]))
            s += 1
        pos = end
    return sig
