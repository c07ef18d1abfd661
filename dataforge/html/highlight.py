"""Which part of a dropped document made its rule fire: character spans to highlight, per reason.

The spans are an explanation for a human reader, found with plain regular expressions on the
sample's text; the decision itself was made by the step (its measured value and threshold are in
``drop_detail``). Reasons with nothing local to point at (too short, too few stop words) get no
spans: the detail says why.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from dataforge.text.pii import PLACEHOLDERS
from dataforge.text.quality.c4 import POLICY_SUBSTRINGS
from dataforge.text.quality.gopher import STOP_WORDS

Spans = list[tuple[int, int]]

_ELLIPSIS = re.compile(r"\.\.\.|\u2026")
_END_ELLIPSIS = re.compile(r"(?:\.\.\.|\u2026)[ \t]*$", re.M)
_BULLET = re.compile(r"^[ \t]*[\u2022\-\*\u2023\u25aa\u25cf\u25e6].*$", re.M)
_HASH = re.compile(r"#+")
_WORD = re.compile(r"\S+")
_LINE = re.compile(r"^.*$", re.M)
_PARAGRAPH = re.compile(r"(?m)(?:^[^\S\n]*\S[^\n]*(?:\n|$))+")  # runs of non-blank lines
_TERMINAL = (".", "!", "?", '"', "'", "\u201d", "\u2019")


def _all(pattern: re.Pattern[str], text: str) -> Spans:
    return [m.span() for m in pattern.finditer(text)]


def _repeated_lines(text: str) -> Spans:
    """Every line after its first occurrence (blank lines ignored)."""
    seen: set[str] = set()
    out: Spans = []
    for m in _LINE.finditer(text):
        line = m.group().strip()
        if not line:
            continue
        if line in seen:
            out.append(m.span())
        seen.add(line)
    return out


def _repeated_paragraphs(text: str) -> Spans:
    seen: set[str] = set()
    out: Spans = []
    for m in _PARAGRAPH.finditer(text):
        para = m.group().strip()
        if para in seen:
            out.append((m.start(), m.start() + len(m.group().rstrip())))
        seen.add(para)
    return out


def _ngrams(text: str, n: int) -> list[tuple[tuple[str, ...], int, int]]:
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    return [
        (tuple(w for w, _, _ in words[i : i + n]), words[i][1], words[i + n - 1][2])
        for i in range(len(words) - n + 1)
    ]


def _top_ngram(text: str, n: int) -> Spans:
    grams = _ngrams(text, n)
    if not grams:
        return []
    top, _ = Counter(g for g, _, _ in grams).most_common(1)[0]
    return [(s, e) for g, s, e in grams if g == top]


def _duplicated_ngrams(text: str, n: int) -> Spans:
    seen: set[tuple[str, ...]] = set()
    out: Spans = []
    for g, s, e in _ngrams(text, n):
        if g in seen:
            out.append((s, e))
        seen.add(g)
    return out


def _non_alpha_words(text: str) -> Spans:
    return [m.span() for m in _WORD.finditer(text) if not any(c.isalpha() for c in m.group())]


def _stop_words(text: str) -> Spans:
    words = set(STOP_WORDS)
    return [m.span() for m in _WORD.finditer(text) if m.group() in words]


def _lines_where(pred: Callable[[str], bool]) -> Callable[[str], Spans]:
    def find(text: str) -> Spans:
        return [m.span() for m in _LINE.finditer(text) if m.group().strip() and pred(m.group().strip())]

    return find


def _policy(text: str) -> Spans:
    low = text.lower()
    out: Spans = []
    for sub in POLICY_SUBSTRINGS:
        out += [(m.start(), m.end()) for m in re.finditer(re.escape(sub), low)]
    return out


def _literal(word: str) -> Callable[[str], Spans]:
    pat = re.compile(re.escape(word), re.I)
    return lambda text: _all(pat, text)


def placeholder_spans(text: str, placeholders: dict[str, str] | None = None) -> Spans:
    """Where ``pii.redact`` put its placeholders (the defaults overridden by ``placeholders``)."""
    values = {**PLACEHOLDERS, **(placeholders or {})}.values()
    pat = re.compile("|".join(re.escape(p) for p in sorted(set(values), key=lambda p: (-len(p), p)) if p))
    return _all(pat, text)


FINDERS: dict[str, Callable[[str], Spans]] = {
    "gopher_too_many_ellipsis": lambda t: _all(_ELLIPSIS, t),
    "gopher_too_many_end_ellipsis": lambda t: _all(_END_ELLIPSIS, t),
    "gopher_too_many_bullets": lambda t: _all(_BULLET, t),
    "gopher_too_many_hashes": lambda t: _all(_HASH, t),
    "gopher_below_alpha_threshold": _non_alpha_words,
    "gopher_enough_stop_words": _stop_words,
    "gopher_rep_dup_line_frac": _repeated_lines,
    "gopher_rep_dup_line_char_frac": _repeated_lines,
    "gopher_rep_dup_para_frac": _repeated_paragraphs,
    "gopher_rep_dup_para_char_frac": _repeated_paragraphs,
    "fineweb_char_dup_ratio": _repeated_lines,
    "fineweb_line_punct_ratio": _lines_where(lambda s: not s.endswith(_TERMINAL)),
    "fineweb_short_line_ratio": _lines_where(lambda s: len(s) <= 30),
    "c4_lorem_ipsum": _literal("lorem ipsum"),
    "c4_curly_bracket": lambda t: _all(re.compile(r"[{}]"), t),
    "c4_line_javascript": _literal("javascript"),
    "c4_line_policy": _policy,
    "c4_line_no_terminal_punct": _lines_where(lambda s: not s.endswith(_TERMINAL)),
    "pii_redacted": placeholder_spans,
}


def spans_for(reason: str, text: str) -> Spans:
    """Spans of ``text`` that explain ``reason`` (empty when the reason has nothing local)."""
    if not text:
        return []
    if reason in FINDERS:
        return FINDERS[reason](text)
    m = re.fullmatch(r"gopher_rep_top_(\d+)_gram", reason)
    if m:
        return _top_ngram(text, int(m.group(1)))
    m = re.fullmatch(r"gopher_rep_duplicated_(\d+)_n_grams", reason)
    if m:
        return _duplicated_ngrams(text, int(m.group(1)))
    return []
