"""``filter.gopher_quality`` and ``filter.gopher_repetition``: the Gopher (MassiveText) rules.

Reference: Rae et al. 2021, https://arxiv.org/abs/2112.11446, Table A1, as implemented by
datatrove's ``GopherQualityFilter`` and ``GopherRepetitionFilter`` (same defaults, same check
order, same reasons with a ``gopher_`` / ``gopher_rep_`` prefix).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from dataforge.registry import register
from dataforge.step import Rule, Step, StepOutput, check_range, first_failing
from dataforge.text.quality._options import check_int, check_min_max, check_strings, ngram_thresholds
from dataforge.text.quality._text import (
    LINE_BOUNDARY,
    PY_WHITESPACE,
    SYMBOL_TOKEN,
    chain_hash,
    char_class,
    explode_lists,
    fmt,
    hash_text,
    normalize_crlf,
    per_row,
    repeats_earlier,
    row_key,
    strip_py,
    threshold_rule,
    tokenize,
)

logger = logging.getLogger(__name__)

#: Gopher's stop words (datatrove ``STOP_WORDS``); matched case-sensitively against whole tokens.
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

# Whitespace that is not a line boundary (what ``lstrip``/``rstrip`` remove inside one line).
_INLINE_WS = char_class(set(PY_WHITESPACE) - set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))
_BULLET_LINE = rf"(?m)^{_INLINE_WS}*[\x{{2022}}\-]"
_ELLIPSIS_END_LINE = rf"(?m)(?:\.\.\.|\x{{2026}}){_INLINE_WS}*$"
_PARAGRAPH = r"[^\n]+(?:\n[^\n]+)*"  # pieces of re.split(r"\n{2,}", stripped text)


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den``, null where ``den`` is 0 (a rule on a null ratio never fails)."""
    return pl.when(den > 0).then(num / den).otherwise(None)


# --- filter.gopher_quality --------------------------------------------------------------------


def _quality_stats(text: pl.Series, stop_words: tuple[str, ...]) -> pl.DataFrame:
    """Per-document counts the Gopher quality rules need, one row per document."""
    frame = pl.DataFrame({"text": text})
    frame = frame.with_columns(lines=pl.col("text").str.replace_all(LINE_BOUNDARY, "\n"))
    lines = pl.col("lines")
    doc = frame.select(
        hashes=pl.col("text").str.count_matches("#", literal=True),
        ellipses=pl.col("text").str.count_matches(r"\.\.\.")
        + pl.col("text").str.count_matches("\u2026", literal=True),
        # len(text.splitlines()): one line per boundary, plus an unterminated last line
        n_lines=lines.str.count_matches("\n", literal=True)
        + ((pl.col("text").str.len_bytes() > 0) & ~lines.str.ends_with("\n")).cast(pl.UInt32),
        bullet_lines=lines.str.count_matches(_BULLET_LINE),
        ellipsis_lines=lines.str.count_matches(_ELLIPSIS_END_LINE),
    )
    tokens = explode_lists(frame.select(tokenize(pl.col("text"))).to_series(), "tok")
    tokens = tokens.with_columns(
        word=~pl.col("tok").str.contains(SYMBOL_TOKEN),
        alpha=pl.col("tok").str.contains(r"\p{L}"),
        length=pl.col("tok").str.len_chars(),
    )
    counts = tokens.group_by("row").agg(
        n_tokens=pl.len(),
        n_words=pl.col("word").sum(),
        word_chars=pl.col("length").filter("word").sum(),
        alpha_tokens=pl.col("alpha").sum(),
    )
    stop = tokens.filter(pl.col("tok").is_in(list(stop_words)))
    stop = stop.group_by("row").agg(stop_words=pl.col("tok").n_unique())
    words = per_row(
        len(text),
        [counts, stop],
        {"n_tokens": 0, "n_words": 0, "word_chars": 0, "alpha_tokens": 0, "stop_words": 0},
    )
    return pl.concat([doc, words], how="horizontal").with_columns(
        avg_word_length=_ratio(pl.col("word_chars"), pl.col("n_words"))
    )


@register("filter.gopher_quality")
@dataclass(kw_only=True)
class GopherQualityFilter(Step):
    """Drop documents failing Gopher's quality rules (datatrove ``GopherQualityFilter``).

    Rules, in check order (reason in brackets); "words" are tokens holding a character that is
    not punctuation, "tokens" are all words and punctuation tokens:

    1. fewer than ``min_doc_words`` words [``gopher_short_doc``], more than ``max_doc_words``
       [``gopher_long_doc``];
    2. mean word length outside ``[min_avg_word_length, max_avg_word_length]``
       [``gopher_below_avg_threshold``, ``gopher_above_avg_threshold``];
    3. ``#`` per token, then ``...``/``…`` per token, above ``max_symbol_word_ratio``
       [``gopher_too_many_hashes``, ``gopher_too_many_ellipsis``];
    4. share of lines starting with ``•`` or ``-`` above ``max_bullet_lines_ratio``
       [``gopher_too_many_bullets``]; share of lines ending with ``...``/``…`` above
       ``max_ellipsis_lines_ratio`` [``gopher_too_many_end_ellipsis``];
    5. share of tokens holding a letter below ``min_alpha_words_ratio``
       [``gopher_below_alpha_threshold``] (datatrove's ``max_non_alpha_words_ratio``);
    6. fewer than ``min_stop_words`` distinct ``stop_words`` [``gopher_enough_stop_words``].

    Every threshold can be set to None to disable its rule.

    Example:
        >>> step = GopherQualityFilter(min_doc_words=3)
        >>> out = step.apply(pl.DataFrame({"text": ["the cat and the dog sat", "a b"]}))
        >>> out.reason.to_list()
        [None, 'gopher_short_doc']
    """

    summary: ClassVar[str] = (
        "Gopher quality rules: word count and length, symbols, bullets, alpha words, stop words."
    )

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS

    def __post_init__(self) -> None:
        name = self.name
        check_int(name, "min_doc_words", self.min_doc_words)
        check_int(name, "max_doc_words", self.max_doc_words)
        check_min_max(name, "min_doc_words", self.min_doc_words, "max_doc_words", self.max_doc_words)
        check_range(name, "min_avg_word_length", self.min_avg_word_length, 0, None)
        check_range(name, "max_avg_word_length", self.max_avg_word_length, 0, None)
        check_min_max(
            name,
            "min_avg_word_length",
            self.min_avg_word_length,
            "max_avg_word_length",
            self.max_avg_word_length,
        )
        for option in (
            "max_symbol_word_ratio",
            "max_bullet_lines_ratio",
            "max_ellipsis_lines_ratio",
            "min_alpha_words_ratio",
        ):
            check_range(name, option, getattr(self, option), 0, 1)
        check_int(name, "min_stop_words", self.min_stop_words)
        self.stop_words = check_strings(name, "stop_words", self.stop_words)

    def rules(self) -> list[Rule]:
        """The enabled rules over the columns of :func:`_quality_stats`, in datatrove's order."""
        words, avg = pl.col("n_words"), pl.col("avg_word_length")
        hash_ratio = _ratio(pl.col("hashes"), pl.col("n_tokens"))
        ellipsis_ratio = _ratio(pl.col("ellipses"), pl.col("n_tokens"))
        bullet_ratio = _ratio(pl.col("bullet_lines"), pl.col("n_lines"))
        end_ellipsis_ratio = _ratio(pl.col("ellipsis_lines"), pl.col("n_lines"))
        alpha_ratio = _ratio(pl.col("alpha_tokens"), pl.col("n_tokens"))
        table = [  # (reason, measure, value, op, option, shown value)
            ("gopher_short_doc", "words", words, "<", "min_doc_words", None),
            ("gopher_long_doc", "words", words, ">", "max_doc_words", None),
            ("gopher_below_avg_threshold", "avg_word_length", avg, "<", "min_avg_word_length", fmt(avg, 2)),
            ("gopher_above_avg_threshold", "avg_word_length", avg, ">", "max_avg_word_length", fmt(avg, 2)),
            ("gopher_too_many_hashes", "hash_ratio", hash_ratio, ">", "max_symbol_word_ratio", fmt(hash_ratio)),
            ("gopher_too_many_ellipsis", "ellipsis_ratio", ellipsis_ratio, ">", "max_symbol_word_ratio", fmt(ellipsis_ratio)),
            ("gopher_too_many_bullets", "bullet_lines_ratio", bullet_ratio, ">", "max_bullet_lines_ratio", fmt(bullet_ratio)),
            ("gopher_too_many_end_ellipsis", "ellipsis_lines_ratio", end_ellipsis_ratio, ">", "max_ellipsis_lines_ratio", fmt(end_ellipsis_ratio)),
            ("gopher_below_alpha_threshold", "alpha_words_ratio", alpha_ratio, "<", "min_alpha_words_ratio", fmt(alpha_ratio)),
            ("gopher_enough_stop_words", "stop_words", pl.col("stop_words"), "<", "min_stop_words", None),
        ]  # fmt: skip
        return [
            threshold_rule(reason, measure, value, op, option, getattr(self, option), shown)
            for reason, measure, value, op, option, shown in table
            if getattr(self, option) is not None
        ]

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        stats = _quality_stats(frame["text"].fill_null(""), self.stop_words)
        reason, detail = first_failing(stats, self.rules())
        return StepOutput(frame=frame, reason=reason, detail=detail)


# --- filter.gopher_repetition -----------------------------------------------------------------


def _duplicates(long: pl.DataFrame, item: str) -> pl.DataFrame:
    """Per row: how many items repeat an earlier item of the same row, and their characters."""
    long = long.with_columns(dup=repeats_earlier(pl.col(item)), length=pl.col(item).str.len_chars())
    return long.group_by("row").agg(
        dup_items=pl.col("dup").sum(), dup_chars=pl.col("length").filter("dup").sum()
    )


def _paragraph_and_line_stats(text: pl.Series) -> pl.DataFrame:
    """Duplicate paragraphs (``re.split(r"\\n{2,}", text.strip())``) and lines (``re.split("\\n+")``)."""
    n = len(text)
    frame = pl.DataFrame({"text": text})
    paragraphs = frame.select(strip_py(pl.col("text")).str.extract_all(_PARAGRAPH)).to_series()
    zero: dict[str, object] = {"dup_items": 0, "dup_chars": 0}
    para = per_row(n, [_duplicates(explode_lists(paragraphs, "p"), "p")], zero)
    runs = frame.select(pl.col("text").str.extract_all(r"[^\n]+")).to_series()
    line = per_row(n, [_duplicates(explode_lists(runs, "l"), "l")], zero)
    # re.split("\n+") also yields "" before a leading and after a trailing newline run
    lead = frame.select(pl.col("text").str.starts_with("\n").cast(pl.UInt32)).to_series()
    trail = frame.select(pl.col("text").str.ends_with("\n").cast(pl.UInt32)).to_series()
    return pl.DataFrame(
        {
            "n_paras": paragraphs.list.len().clip(lower_bound=1),
            "dup_paras": para["dup_items"],
            "dup_para_chars": para["dup_chars"],
            "n_lines": runs.list.len() + lead + trail,
            "dup_lines": line["dup_items"] + (lead * trail),
            "dup_line_chars": line["dup_chars"],
        }
    )


def _ngram_stats(text: pl.Series, top_ns: list[int], dup_ns: list[int]) -> pl.DataFrame:
    """Top n-gram characters (``top_{n}``) and duplicated n-gram characters (``dup_{n}``) per row.

    The tokens of all documents form one long frame in document order. The n-gram starting at a
    token is identified by a 64-bit hash chained over its n token hashes (row folded in) and
    exists where its last token belongs to the same row. An n-gram can only repeat where its
    (n-1)-gram prefix repeats, so after each n only the positions of repeated n-grams are kept
    as candidates for n+1: the work shrinks quickly with n.
    """
    tokens = text.to_frame().select(tokenize(pl.col(text.name))).to_series()
    counts = tokens.list.len().cast(pl.Int64)
    long = explode_lists(tokens, "tok").select(
        "row", h1=hash_text(pl.col("tok")), ln=pl.col("tok").str.len_chars().cast(pl.Int64)
    )
    # end = index just past the row's last token
    ends = (counts.cum_sum()).gather(long["row"]) if long.height else pl.Series([], dtype=pl.Int64)
    cand = long.with_columns(
        idx=pl.int_range(pl.len(), dtype=pl.Int64), end=ends, g=pl.col("h1"), clen=pl.col("ln")
    )
    parts: list[pl.DataFrame] = []
    covered: dict[str, pl.Series] = {}
    for n in range(1, max([*top_ns, *dup_ns], default=0) + 1):
        if n > 1:
            cand = cand.filter(pl.col("idx") + (n - 1) < pl.col("end"))
            last = cand["idx"] + (n - 1)
            cand = cand.with_columns(
                g=chain_hash(pl.col("g"), long["h1"].gather(last)),
                clen=pl.col("clen") + long["ln"].gather(last),
            )
        cand = cand.with_columns(key=row_key(pl.col("g"))).filter(pl.col("key").is_duplicated())
        if n in top_ns:
            parts.append(_top_ngram(cand, long, counts, n))
        if n in dup_ns:
            covered[f"dup_{n}"] = _covered_by_repeats(cand, long.height, n)
    if covered:
        cov = long.select("row", "ln").with_columns(**covered)
        parts.append(cov.group_by("row").agg(pl.col("ln").filter(pl.col(c)).sum().alias(c) for c in covered))
    fill: dict[str, object] = {f"dup_{n}": 0 for n in dup_ns}
    return per_row(len(text), parts, fill)


def _top_ngram(repeated: pl.DataFrame, long: pl.DataFrame, counts: pl.Series, n: int) -> pl.DataFrame:
    """``len(" ".join(ngram)) * count`` of the most frequent n-gram (ties: the first seen), per row.

    ``repeated`` holds the occurrences of n-grams seen at least twice in their row. A row without
    one falls back to its first n-gram (count 1), as ``Counter.most_common(1)`` returns the first
    inserted of equal counts.
    """
    grouped = repeated.group_by("key").agg(
        row=pl.col("row").first(), cnt=pl.len(), first=pl.col("idx").min(), chars=pl.col("clen").first()
    )
    value = (pl.col("chars") + (n - 1)) * pl.col("cnt")
    best = grouped.group_by("row").agg(
        value.sort_by(["cnt", "first"], descending=[True, False]).first().alias("repeated")
    )
    # the first n tokens of every row that has at least n
    pos = pl.int_range(pl.len(), dtype=pl.Int64) - (counts.cum_sum() - counts).gather(long["row"])
    heads = long.filter(pos < n).group_by("row").agg(chars=pl.col("ln").sum(), k=pl.len())
    first = heads.filter(pl.col("k") == n).select("row", single=pl.col("chars") + (n - 1))
    out = first.join(best, on="row", how="left")
    return out.select("row", pl.coalesce("repeated", "single").alias(f"top_{n}"))


def _covered_by_repeats(repeated: pl.DataFrame, n_tokens: int, n: int) -> pl.Series:
    """Boolean per token: inside an n-gram occurrence that repeats an earlier one of its row."""
    starts = repeated.filter(~pl.col("key").is_first_distinct())["idx"]
    opened = pl.zeros(n_tokens + n, pl.Int32, eager=True).scatter(starts, 1).cum_sum()
    closed = pl.zeros(n_tokens + n, pl.Int32, eager=True).scatter(starts + n, 1).cum_sum()
    return (opened - closed).head(n_tokens) > 0


@register("filter.gopher_repetition")
@dataclass(kw_only=True)
class GopherRepetitionFilter(Step):
    """Drop documents with too much repeated content (datatrove ``GopherRepetitionFilter``).

    Rules, in check order (character fractions are over ``len(text)``):

    1. empty text [``gopher_rep_empty``];
    2. duplicate paragraphs (split on blank lines) as a share of paragraphs, then their characters
       [``gopher_rep_dup_para_frac``, ``gopher_rep_dup_para_char_frac``];
    3. the same for lines [``gopher_rep_dup_line_frac``, ``gopher_rep_dup_line_char_frac``];
    4. for each ``(n, fraction)`` of ``top_n_grams``: characters of the most frequent word n-gram
       times its count [``gopher_rep_top_{n}_gram``];
    5. for each ``(n, fraction)`` of ``dup_n_grams``: characters of words covered by repeated
       n-grams [``gopher_rep_duplicated_{n}_n_grams``].

    A None threshold (or a None fraction for one n) disables the rule.

    Example:
        >>> step = GopherRepetitionFilter()
        >>> out = step.apply(pl.DataFrame({"text": ["same line\\nsame line\\nsame line\\nother"]}))
        >>> out.reason.to_list()
        ['gopher_rep_dup_line_frac']
    """

    summary: ClassVar[str] = "Gopher repetition rules: duplicate lines/paragraphs, top and repeated n-grams."

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float | None], ...] | dict[int, float | None] | None = (
        (2, 0.2),
        (3, 0.18),
        (4, 0.16),
    )
    dup_n_grams: tuple[tuple[int, float | None], ...] | dict[int, float | None] | None = (
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    )

    def __post_init__(self) -> None:
        for option in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            check_range(self.name, option, getattr(self, option), 0, 1)
        self.top_n_grams = ngram_thresholds(self.name, "top_n_grams", self.top_n_grams)
        self.dup_n_grams = ngram_thresholds(self.name, "dup_n_grams", self.dup_n_grams)

    def rules(self) -> list[Rule]:
        """The enabled rules over the measured columns, in datatrove's order."""
        chars = pl.col("n_chars")
        rules = [Rule("gopher_rep_empty", chars == 0, pl.lit("text is empty"))]
        fractions = [  # (option, reason, measure, value)
            ("dup_para_frac", "gopher_rep_dup_para_frac", "dup_para_ratio", _ratio(pl.col("dup_paras"), pl.col("n_paras"))),
            ("dup_para_char_frac", "gopher_rep_dup_para_char_frac", "dup_para_char_ratio", _ratio(pl.col("dup_para_chars"), chars)),
            ("dup_line_frac", "gopher_rep_dup_line_frac", "dup_line_ratio", _ratio(pl.col("dup_lines"), pl.col("n_lines"))),
            ("dup_line_char_frac", "gopher_rep_dup_line_char_frac", "dup_line_char_ratio", _ratio(pl.col("dup_line_chars"), chars)),
        ]  # fmt: skip
        for option, reason, measure, value in fractions:
            threshold = getattr(self, option)
            if threshold is not None:
                rules.append(threshold_rule(reason, measure, value, ">", option, threshold, fmt(value)))
        for n, frac in self.top_n_grams:
            if frac is not None:
                value = _ratio(pl.col(f"top_{n}"), chars)
                measure, option = f"top_{n}_gram_char_ratio", f"top_n_grams[{n}]"
                rules.append(
                    threshold_rule(f"gopher_rep_top_{n}_gram", measure, value, ">", option, frac, fmt(value))
                )
        for n, frac in self.dup_n_grams:
            if frac is not None:
                value = _ratio(pl.col(f"dup_{n}"), chars)
                measure, option = f"duplicated_{n}_gram_char_ratio", f"dup_n_grams[{n}]"
                reason = f"gopher_rep_duplicated_{n}_n_grams"
                rules.append(threshold_rule(reason, measure, value, ">", option, frac, fmt(value)))
        return rules

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        text = frame["text"].fill_null("").rename("text")
        if text.str.contains("\r", literal=True).any():
            text = text.to_frame().select(normalize_crlf(pl.col("text"))).to_series()
        top_ns = [n for n, f in self.top_n_grams if f is not None]
        dup_ns = [n for n, f in self.dup_n_grams if f is not None]
        stats = pl.concat(
            [
                text.str.len_chars().rename("n_chars").to_frame(),
                _paragraph_and_line_stats(text),
                _ngram_stats(text, top_ns, dup_ns),
            ],
            how="horizontal",
        )
        reason, detail = first_failing(stats, self.rules())
        return StepOutput(frame=frame, reason=reason, detail=detail)
