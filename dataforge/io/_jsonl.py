"""Compiled fast path for JSONL records of the common shape ``{"id": "...", "text": "...", ...}``.

``simple_records`` parses a run of complete lines in one pass over the bytes, without a Python
object per line. It accepts a line only when it is a JSON object holding the text field (a string)
and optionally the id field (a string), each once, and any other fields whose values orjson would
write back byte for byte: strings without escapes, integers of at most 18 digits, ``true``,
``false``, ``null`` (those become the record's ``meta``, ``{"key":value,...}`` in file order, as
the general path's ``orjson.dumps`` writes it). Text and id strings must be valid UTF-8 without
control characters and with well-formed escapes (surrogate pairs combined; a lone surrogate is
refused); keys may not hold escapes and may not repeat. Anything else (floats, arrays, objects, a
numeric id, a blank line, bad UTF-8, ...) refuses the whole run, and the reader parses it with
orjson line by line as before. So what this accepts decodes exactly as orjson would (tests
compare both paths), and every error message still comes from the general path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dataforge._native import load_word, store_word64

_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_Q8 = np.uint64(0x2222222222222222)
_B8 = np.uint64(0x5C5C5C5C5C5C5C5C)
_C8 = np.uint64(0x2020202020202020)
_U8 = np.uint64(8)

_QUOTE = 34
_BACKSLASH = 92


# Positions are uint64 throughout: numba checks every signed index for wrap-around, which costs
# more than the parsing itself here. Strings may not hold a raw newline (a control character), so
# every scan can run to the end of the buffer and stops at the line's newline at the latest.
_U0 = np.uint64(0)
_U1 = np.uint64(1)

# Bytes copied as they are inside a string: printable ASCII other than the quote and backslash.
_PLAIN = np.zeros(256, dtype=np.bool_)
_PLAIN[0x20:0x80] = True
_PLAIN[[_QUOTE, _BACKSLASH]] = False
# JSON whitespace within a line
_SPACE = np.zeros(256, dtype=np.bool_)
_SPACE[[32, 9, 13]] = True


@njit(inline="always")
def _ws(buf, i, e):
    space = _SPACE
    while i < e and space[buf[i]]:
        i += _U1
    return i


@njit(inline="always")
def _hex4(buf, i, e):
    """Value of the 4 hex digits at ``buf[i:i+4]``, or -1."""
    if i + np.uint64(4) > e:
        return -1
    v = 0
    for k in range(4):
        c = np.int64(buf[i + np.uint64(k)])
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            return -1
        v = (v << 4) | d
    return v


@njit(inline="always")
def _put_utf8(out, w, cp):
    if cp < 0x80:
        out[w] = cp
        return w + _U1
    if cp < 0x800:
        out[w] = 0xC0 | (cp >> 6)
        out[w + _U1] = 0x80 | (cp & 0x3F)
        return w + np.uint64(2)
    if cp < 0x10000:
        out[w] = 0xE0 | (cp >> 12)
        out[w + _U1] = 0x80 | ((cp >> 6) & 0x3F)
        out[w + np.uint64(2)] = 0x80 | (cp & 0x3F)
        return w + np.uint64(3)
    out[w] = 0xF0 | (cp >> 18)
    out[w + _U1] = 0x80 | ((cp >> 12) & 0x3F)
    out[w + np.uint64(2)] = 0x80 | ((cp >> 6) & 0x3F)
    out[w + np.uint64(3)] = 0x80 | (cp & 0x3F)
    return w + np.uint64(4)


@njit(inline="always")
def _utf8_len(buf, i, e):
    """Length of the valid UTF-8 sequence (lead byte >= 0x80) at ``buf[i]``, or 0: no overlong
    forms, no surrogates, nothing above U+10FFFF (what a JSON parser accepts)."""
    c = buf[i]
    if 0xC2 <= c <= 0xDF:
        n = 2
    elif 0xE0 <= c <= 0xEF:
        n = 3
    elif 0xF0 <= c <= 0xF4:
        n = 4
    else:
        return 0
    if i + np.uint64(n) > e:
        return 0
    for k in range(1, n):
        if (buf[i + np.uint64(k)] & 0xC0) != 0x80:
            return 0
    c1 = buf[i + _U1]
    if c == 0xE0 and c1 < 0xA0:  # overlong
        return 0
    if c == 0xED and c1 >= 0xA0:  # surrogates
        return 0
    if c == 0xF0 and c1 < 0x90:  # overlong
        return 0
    if c == 0xF4 and c1 >= 0x90:  # above U+10FFFF
        return 0
    return n


@njit(inline="never")
def _special(buf, i, e, out, w):
    """One escape or multi-byte character at buf[i]: (ok, new i, new w)."""
    c = buf[i]
    if c == _BACKSLASH:
        if i + _U1 >= e:
            return False, i, w
        x = buf[i + _U1]
        i += np.uint64(2)
        if x == 110:
            out[w] = 10
        elif x == 116:
            out[w] = 9
        elif x == _QUOTE or x == _BACKSLASH or x == 47:  # noqa: SIM109
            out[w] = x
        elif x == 114:
            out[w] = 13
        elif x == 98:
            out[w] = 8
        elif x == 102:
            out[w] = 12
        elif x == 117:
            cp = _hex4(buf, i, e)
            if cp < 0:
                return False, i, w
            i += np.uint64(4)
            if 0xDC00 <= cp <= 0xDFFF:
                return False, i, w
            if 0xD800 <= cp <= 0xDBFF:
                if i + np.uint64(6) > e or buf[i] != _BACKSLASH or buf[i + _U1] != 117:
                    return False, i, w
                low = _hex4(buf, i + np.uint64(2), e)
                if low < 0xDC00 or low > 0xDFFF:
                    return False, i, w
                i += np.uint64(6)
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            return True, i, _put_utf8(out, w, cp)
        else:
            return False, i, w
        return True, i, w + _U1
    if c < 0x20:
        return False, i, w
    n = _utf8_len(buf, i, e)
    if n == 0:
        return False, i, w
    for k in range(n):
        out[w + np.uint64(k)] = buf[i + np.uint64(k)]
    return True, i + np.uint64(n), w + np.uint64(n)


@njit(inline="always")
def _string(buf, i, e, out, w):
    chars = 0
    plain = _PLAIN
    while i < e:
        if i + _U8 <= e:  # eight bytes at a time while they are all plain
            x = load_word(buf, i, 8)
            q = x ^ _Q8
            bs = x ^ _B8
            special = (x | ((q - _ONES) & ~q) | ((bs - _ONES) & ~bs) | ((x - _C8) & ~x)) & _HIGH
            if special == 0:
                store_word64(out, w, x)
                w += _U8
                i += _U8
                chars += 8
                continue
        c = buf[i]
        if plain[c]:
            out[w] = c
            w += _U1
            i += _U1
            chars += 1
            continue
        if c == _QUOTE:
            return True, i + _U1, w, chars
        ok, i, w = _special(buf, i, e, out, w)
        if not ok:
            return False, i, w, chars
        chars += 1
    return False, i, w, chars


@njit(inline="always")
def _key_is(buf, i, j, key):
    if j - i != np.uint64(key.shape[0]):
        return False
    for k in range(key.shape[0]):  # noqa: SIM110 - compiled: no generators
        if buf[i + np.uint64(k)] != key[k]:
            return False
    return True


_MAX_META_KEYS = 64


@njit(inline="always")
def _copy(buf, a, b, out, w):
    for k in range(a, b):
        out[w] = buf[k]
        w += _U1
    return w


@njit(inline="always")
def _literal(buf, i, e, word):
    """Index after ``word`` (true, false, null) at ``buf[i]``, or 0."""
    j = i + np.uint64(word.shape[0])
    return j if j <= e and _key_is(buf, i, j, word) else _U0


_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)


@njit(inline="always")
def _plain_value(buf, i, e):
    """End of a value whose JSON text orjson writes back byte for byte (a string without escapes
    or control characters, an integer of at most 18 digits other than -0, true, false, null) at
    ``buf[i]``; 0 for anything else (floats, big integers, arrays, objects, escapes)."""
    c = buf[i]
    if c == _QUOTE:
        j = i + _U1
        while j < e:
            d = buf[j]
            if d == _QUOTE:
                return j + _U1
            if d == _BACKSLASH or d < 0x20:
                return _U0
            if d < 0x80:
                j += _U1
                continue
            n = _utf8_len(buf, j, e)
            if n == 0:
                return _U0
            j += np.uint64(n)
        return _U0
    if c == 45 or 48 <= c <= 57:  # - or a digit
        j = i + _U1 if c == 45 else i
        d0 = j
        while j < e and 48 <= buf[j] <= 57:
            j += _U1
        digits = j - d0
        if digits == 0 or digits > 18 or (buf[d0] == 48 and digits > 1):
            return _U0
        if c == 45 and digits == 1 and buf[d0] == 48:
            return _U0  # -0 comes back as 0
        if j < e and (buf[j] == 46 or buf[j] == 101 or buf[j] == 69):  # . e E: a float
            return _U0
        return j
    if c == 116:
        return _literal(buf, i, e, _TRUE)
    if c == 102:
        return _literal(buf, i, e, _FALSE)
    if c == 110:
        return _literal(buf, i, e, _NULL)
    return _U0


@njit(cache=True)
def simple_records(buf, lo, hi, text_key, id_key):
    """Parse the lines of ``buf[lo:hi]`` (each ending with a newline) as simple records.

    Returns ``(ok, texts, text_offsets, ids, id_offsets, has_id, metas, meta_offsets, chars)``:
    the decoded UTF-8 of every text and id (an absent id is empty, with ``has_id`` False), the
    other fields of each record as orjson writes them (``{"k":v,...}``; empty when there are
    none), and the code points of all texts together. ``ok`` is False, and the rest meaningless,
    when any line is not a simple record.
    """
    n = 0
    for p in range(lo, hi):
        n += buf[p] == 10
    texts = np.empty(hi - lo, dtype=np.uint8)  # decoded strings are never longer than their JSON
    ids = np.empty(hi - lo, dtype=np.uint8)
    t_off = np.zeros(n + 1, dtype=np.int64)
    i_off = np.zeros(n + 1, dtype=np.int64)
    has_id = np.zeros(n, dtype=np.bool_)
    metas = np.empty(hi - lo, dtype=np.uint8)  # the compact form is never longer than the line
    m_off = np.zeros(n + 1, dtype=np.int64)
    keys = np.empty((_MAX_META_KEYS, 2), dtype=np.uint64)
    mw = _U0
    tw = _U0
    iw = _U0
    chars = 0
    e = np.uint64(hi)
    i = np.uint64(lo)
    for r in range(n):
        i = _ws(buf, i, e)
        if i >= e or buf[i] != 123:  # {
            return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
        i = _ws(buf, i + _U1, e)
        seen_text = False
        seen_id = False
        n_keys = 0
        while True:
            if i >= e or buf[i] != _QUOTE:
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            k0 = i + _U1
            k1 = k0
            # a key is plain printable ASCII here (copied into the meta as is); an escape, a
            # control character or any non-ASCII byte (which would need UTF-8 validation) sends
            # the chunk the general way
            while k1 < e and buf[k1] != _QUOTE:
                if buf[k1] == _BACKSLASH or buf[k1] < 0x20 or buf[k1] >= 0x80:
                    return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
                k1 += _U1
            if k1 >= e:
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            is_text = _key_is(buf, k0, k1, text_key)
            is_id = not is_text and _key_is(buf, k0, k1, id_key)
            if (is_text and seen_text) or (is_id and seen_id):
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            for q in range(n_keys):  # another field: once only (orjson would keep the last)
                if _key_is(buf, k0, k1, buf[keys[q, 0] : keys[q, 1]]):
                    return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            i = _ws(buf, k1 + _U1, e)
            if i >= e or buf[i] != 58:  # :
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            i = _ws(buf, i + _U1, e)
            if i >= e:
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            if not (is_text or is_id):  # kept as written: "key":value, compact
                if n_keys == _MAX_META_KEYS:
                    return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
                v1 = _plain_value(buf, i, e)
                if v1 == _U0:
                    return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
                keys[n_keys, 0] = k0
                keys[n_keys, 1] = k1
                metas[mw] = 123 if n_keys == 0 else 44  # { or ,
                n_keys += 1
                mw = _copy(buf, k0 - _U1, k1 + _U1, metas, mw + _U1)
                metas[mw] = 58
                mw = _copy(buf, i, v1, metas, mw + _U1)
                i = _ws(buf, v1, e)
                if i < e and buf[i] == 44:  # ,
                    i = _ws(buf, i + _U1, e)
                    continue
                if i < e and buf[i] == 125:  # }
                    i = _ws(buf, i + _U1, e)
                    break
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            if buf[i] != _QUOTE:
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            out = texts if is_text else ids  # one call site: the inlined loop is compiled once
            ok, i, w, c = _string(buf, i + _U1, e, out, tw if is_text else iw)
            if is_text:
                tw = w
                chars += c
                seen_text = True
            else:
                iw = w
                seen_id = True
            if not ok:
                return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
            i = _ws(buf, i, e)
            if i < e and buf[i] == 44:  # ,
                i = _ws(buf, i + _U1, e)
                continue
            if i < e and buf[i] == 125:  # }
                i = _ws(buf, i + _U1, e)
                break
            return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
        if i >= e or buf[i] != 10 or not seen_text:  # the line ends here
            return False, texts, t_off, ids, i_off, has_id, metas, m_off, chars
        if n_keys:
            metas[mw] = 125  # }
            mw += _U1
        t_off[r + 1] = tw
        i_off[r + 1] = iw
        m_off[r + 1] = mw
        has_id[r] = seen_id
        i += _U1
    return True, texts[:tw], t_off, ids[:iw], i_off, has_id, metas[:mw], m_off, chars
