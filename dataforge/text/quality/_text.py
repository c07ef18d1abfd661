"""Shared text primitives of the quality filters: character sets, the word tokenizer, long frames.

Everything here is a Polars expression or a small helper building one; no per-document Python.
The character sets are copied from datatrove (``datatrove/utils/text.py``) so that the rules see the
same punctuation as datatrove's filters.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from dataforge.step import Rule

#: Characters Python's ``str.isspace()`` is true for (what ``str.strip()``/``str.split()`` use).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

#: datatrove's ``TERMINAL_PUNCTUATION`` (sentence-final marks of many scripts).
TERMINAL_PUNCTUATION = (
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965"
    "\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809"
    "\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e"
    "\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3"
    "\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52"
    "\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57"
    "\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be"
    "\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd"
    "\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c"
    "\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf"
    "\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641"
    "\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b"
    "\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f"
    "\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88"
)

#: datatrove's ``PUNCTUATION`` (ASCII punctuation, C0/C1 controls except tab and newline, and a
#: few CJK and typographic marks; note it holds the full-width digit one, U+FF11, as datatrove does).
PUNCTUATION = (
    "".join(chr(c) for c in (*range(0, 9), *range(11, 32), *range(127, 160)))
    + "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\xab\xb4\xbb\u2013\u2014\u2019\u201c\u201d\u201e\u2026"
    "\u2236\u2501\u25ba\u3001\u3002\u3008\u3009\u300a\u300b\u300c\u300d\u3010\u3011\uff01\uff05"
    "\uff08\uff09\uff0c\uff0e\uff11\uff1a\uff1b\uff1f\uff5e"
)

#: Python's ``str.splitlines()`` boundaries, as a Rust regex.
LINE_BOUNDARY = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x{85}\x{2028}\x{2029}]"


def char_class(chars: Iterable[str], *, negate: bool = False) -> str:
    """A Rust regex character class matching exactly ``chars`` (every char escaped as ``\\x{..}``).

    Example:
        >>> char_class("a-")
        '[\\\\x{2d}\\\\x{61}]'
    """
    body = "".join(f"\\x{{{ord(c):x}}}" for c in sorted(set(chars)))
    return f"[{'^' if negate else ''}{body}]"


WS = char_class(PY_WHITESPACE)
NOT_WS = char_class(PY_WHITESPACE, negate=True)
#: A token made of datatrove punctuation only (a "symbol word").
SYMBOL_TOKEN = "^" + char_class(set(PUNCTUATION) | set(TERMINAL_PUNCTUATION)) + "+$"
#: A spaCy ``is_punct`` token: every character is Unicode punctuation (category P*).
PUNCT_TOKEN = r"^\p{P}+$"
#: A token that ends a sentence for spaCy's sentencizer (one terminal mark).
SENTENCE_END_TOKEN = "^" + char_class(TERMINAL_PUNCTUATION) + "$"

# --- word tokenizer ---------------------------------------------------------------------------
#
# An approximation of datatrove's English word tokenizer (spaCy's blank "en" tokenizer): a few
# rewrites that insert spaces where spaCy splits inside a chunk (``_pre``), then one
# leftmost-first regex. URLs and e-mails stay whole, spaCy's abbreviation exceptions ("Mr.",
# "Inc.", "e.g.", single letters) keep their period, clitics ('s 'll n't) are split, a hyphen
# is split between letters but kept before a digit ("M-1"), "3.5", "1,000", "10:30", "1/2" stay
# whole, symbols spaCy never strips from a chunk's edge stay attached ("said--", "|>the"), other
# punctuation is one token per character except runs of dots and dashes. The differences from
# spaCy are listed in the package docstring.

_ABBREVIATIONS = (
    "Adm|Ak|Ala|Apr|Ariz|Ark|Aug|Bros|Calif|Co|Colo|Conn|Corp|Dec|Del|Dr|Feb|Fla|Ga|Gen|Gov|Ia|Id"
    "|Ill|Inc|Ind|Jan|Jr|Jul|Jun|Kan|Kans|Ky|La|Ltd|Mar|Mass|Md|Messrs|Mich|Minn|Miss|Mo|Mont|Mr"
    "|Mrs|Ms|Mt|Neb|Nebr|Nev|Nov|Oct|Okla|Ore|Pa|Prof|Rep|Rev|Sen|Sep|Sept|St|Tenn|Va|Wash|Wis"
    "|co|vs"
)
_ALNUM = r"[\p{L}\p{M}\p{N}]"
_WORD = rf"{_ALNUM}(?:[\p{{L}}\p{{M}}\p{{N}}_]*{_ALNUM})?"  # inner underscores only
_GLUE = r"[|~/\\^@-]"  # not a spaCy prefix or suffix: stays attached at a chunk's edge
TOKEN_PATTERN = "|".join(
    (
        r"(?:https?://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]'\x{2019}\x{201d}]",  # URL
        r"[\w.+\-$%!#]+@[\w-]+(?:\.[\p{Ll}\p{N}][\w-]*)*",  # e-mail (an upper-case domain part is split off)
        r"(?:\p{L}\.){2,}|Ph\.D\.",  # U.S., e.g., a.m.
        rf"(?:{_ABBREVIATIONS})\.",  # spaCy's abbreviation exceptions
        r"\p{L}\.",  # single letter with a period (initials)
        r"['\x{2019}](?:[sSmMdD]|ll|LL|re|RE|ve|VE)\b|[nN]['\x{2019}][tT]\b",  # clitics
        r"[:;=]-?[()DPp/|]|\):|[A-Za-z]\+\+|\|\||//|''",  # emoticons and a few fixed symbols
        rf"(?:{_WORD})*\p{{L}}(?:-\p{{N}}(?:{_WORD})?(?:[.,:/]\p{{N}}(?:{_WORD})?)*)+",  # M-1, mh-6.8
        r"\p{Lu}+(?:\.\p{Lu}+)+",  # BAC.N
        # a word (3.5, O'Neil), with the symbols spaCy never splits off a chunk's edges (|>the, said--)
        rf"(?:\+|{_GLUE}[!-/:-@\[-`{{-~]*)?"  # (ASCII punctuation: a small class keeps the regex fast)
        rf"{_WORD}(?:(?:\.[\p{{Ll}}\p{{N}}]|[&\"'\x{{2019}}]\p{{L}}|[,:/]\p{{N}})(?:{_WORD})?)*{_GLUE}*",
        r"\.\p{N}+(?:[.,]\p{N}+)*",  # .50
        r"\.{2,}|-{2,}|[~\\^|/-]{2,}",  # runs
        r"\S",  # any other character
    )
)
# Rewrites before matching tokens, as spaCy splits: a space around dot runs ("vs...." ->
# "vs ...."), "cannot" -> "can not", hyphens and slashes between a letter or digit and a letter
# ("self - made", "March / April"), + - * ^ between digits ("10 - 20"), clitics ("do n't",
# "it 's"). One alternation; every branch writes its groups into the same "A B C" template
# (groups of other branches are empty). The infix and clitic branches run a second time because a
# match consumes the character after a hyphen, so "a-b-c" needs a second pass for its second
# hyphen (and "A-P's" for its clitic).
_PRE_BRANCHES = (
    r"()(\.\.+)()",
    r"\b([Cc]an)(not)()\b",
    r"([\p{L}\p{N}])(-+|[\x{2013}\x{2014}~/])(\p{L})",
    r"(\p{N})([-+*^])(\p{N})",
    r"([\p{L}\p{N}])([nN]['\x{2019}][tT]|['\x{2019}](?:[sSmMdD]|ll|LL|re|RE|ve|VE))()\b",
)
_PRE_PATTERN = "|".join(_PRE_BRANCHES)
_SECOND_PATTERN = "|".join(_PRE_BRANCHES[2:])
_PRE_REPLACEMENT = " ".join(
    "".join(f"${{{3 * b + slot + 1}}}" for b in range(len(_PRE_BRANCHES))) for slot in range(3)
)


def _pre(text: pl.Expr) -> pl.Expr:
    text = text.str.replace_all(_PRE_PATTERN, _PRE_REPLACEMENT)
    return text.str.replace_all(_SECOND_PATTERN, "${1}${4}${7} ${2}${5}${8} ${3}${6}${9}")


def tokenize(text: pl.Expr) -> pl.Expr:
    """Split ``text`` into words and punctuation tokens (datatrove's ``split_into_words``, approximated).

    Args:
        text: a Utf8 expression.

    Returns:
        A ``List[Utf8]`` expression, one token list per row (empty for blank text).

    Example:
        >>> pl.select(tokenize(pl.lit("Mr. O'Neil didn't go."))).item().to_list()
        ['Mr.', "O'Neil", 'did', "n't", 'go', '.']
    """
    return _pre(text).str.extract_all(TOKEN_PATTERN)


def count_tokens(text: pl.Expr) -> pl.Expr:
    """Number of tokens :func:`tokenize` would return, without building the lists."""
    return _pre(text).str.count_matches(TOKEN_PATTERN)


def normalize_crlf(text: pl.Expr) -> pl.Expr:
    """``\\r\\n`` -> ``\\n`` (so that a Windows file is measured like its Unix copy)."""
    return text.str.replace_all("\r\n", "\n", literal=True)


def strip_py(expr: pl.Expr) -> pl.Expr:
    """Python's ``str.strip()``: remove leading and trailing Unicode whitespace."""
    return expr.str.strip_chars(PY_WHITESPACE)


def explode_lists(lists: pl.Series, name: str) -> pl.DataFrame:
    """A long frame ``(row, name)`` of the elements of ``lists``, in row then element order.

    Rows whose list is empty contribute nothing.

    Example:
        >>> explode_lists(pl.Series([["a", "b"], [], ["c"]]), "tok")["row"].to_list()
        [0, 0, 2]
    """
    return (
        pl.DataFrame({name: lists})
        .with_row_index("row")
        .explode(name, empty_as_null=False, keep_nulls=False)
        .drop_nulls(name)
    )


def per_row(height: int, parts: list[pl.DataFrame], fill: dict[str, object]) -> pl.DataFrame:
    """Align per-row statistics (frames keyed by ``row``) to rows ``0..height-1``.

    Args:
        height: number of rows of the batch.
        parts: frames with a ``row`` column (UInt32) and statistic columns, at most one row per key.
        fill: value of a statistic for rows a part has no entry for (e.g. 0 for a count);
            statistics not listed stay null there.

    Returns:
        A frame of ``height`` rows in row order with every statistic column, without ``row``.
    """
    out = pl.DataFrame({"row": pl.arange(0, height, dtype=pl.UInt32, eager=True)})
    for part in parts:
        out = out.join(part, on="row", how="left", maintain_order="left")
    fills = [pl.col(c).fill_null(pl.lit(v)) for c, v in fill.items() if c in out.columns]
    return out.with_columns(fills).drop("row")


_HASH_SEED = 0x5EED
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit multiplier (golden ratio); u64 arithmetic wraps


def hash_text(item: pl.Expr) -> pl.Expr:
    """64-bit hash of a Utf8 expression (fixed seed: deterministic for a Polars version)."""
    return item.hash(_HASH_SEED)


def chain_hash(prefix: pl.Expr, nxt: pl.Expr) -> pl.Expr:
    """Hash of a sequence extended by one item: ``prefix * MIX + next`` (mod 2**64)."""
    return prefix * pl.lit(_MIX, pl.UInt64) + nxt


def row_key(h: pl.Expr) -> pl.Expr:
    """Fold the ``row`` column into a 64-bit hash, so one UInt64 identifies (row, item)."""
    return chain_hash(pl.col("row").cast(pl.UInt64), h)


def repeats_earlier(item: pl.Expr) -> pl.Expr:
    """True where ``item`` equals an earlier item of the same row (frame sorted by row)."""
    return ~row_key(hash_text(item)).is_first_distinct()


def fmt(expr: pl.Expr, digits: int = 4) -> pl.Expr:
    """A measured number as text for a ``detail`` message (floats rounded to ``digits``)."""
    return expr.round(digits).cast(pl.Utf8)


def fmt_threshold(value: float) -> str:
    """A threshold as text: ``50``, ``0.3``, ``3`` (not ``3.0``)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def threshold_rule(
    reason: str,
    measure: str,
    value: pl.Expr,
    op: str,
    option: str,
    threshold: float,
    shown: pl.Expr | None = None,
) -> Rule:
    """A rule failing where ``value <op> threshold``, explained as ``"measure=<v> <op> option=<t>"``.

    Args:
        reason: drop reason, e.g. ``gopher_short_doc``.
        measure: name of the measured value in the detail, e.g. ``words``.
        value: the measured value (null never fails).
        op: ``"<"`` (fails below the threshold) or ``">"`` (fails above it).
        option: the option holding the threshold, e.g. ``min_doc_words``.
        threshold: the threshold.
        shown: the value as shown in the detail (default: ``value``).

    Example:
        >>> from dataforge.step import first_failing
        >>> rule = threshold_rule("short", "words", pl.col("n"), "<", "min_words", 50)
        >>> first_failing(pl.DataFrame({"n": [12]}), [rule])[1].to_list()
        ['words=12 < min_words=50']
    """
    fails = value < threshold if op == "<" else value > threshold
    detail = pl.format(
        f"{measure}={{}} {op} {option}={fmt_threshold(threshold)}", value if shown is None else shown
    )
    return Rule(reason, fails, detail)
