"""``filter.c4``: the C4 clean-up rules (Raffel et al. 2020), as datatrove's ``C4QualityFilter``.

Unlike the other quality filters this one rewrites ``text``: lines failing a line rule are removed
from the documents it keeps. A document it drops keeps its original text (so the dropped output
shows what was removed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from dataforge.registry import register
from dataforge.step import Rule, Step, StepOutput, first_failing
from dataforge.text.quality._options import check_bool, check_int
from dataforge.text.quality._text import (
    LINE_BOUNDARY,
    NOT_WS,
    PUNCT_TOKEN,
    SENTENCE_END_TOKEN,
    explode_lists,
    fmt_threshold,
    per_row,
    strip_py,
    tokenize,
)

logger = logging.getLogger(__name__)

CITATION = r"\[\d*]|\[edit]|\[citation needed]"
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
_END_PUNCTUATION = r"[.?!\"']$"

#: Line-removal counters reported in ``StepOutput.counters`` (non-blank lines of kept documents).
LINE_COUNTERS = (
    "c4_line_too_long_word",
    "c4_line_no_terminal_punct",
    "c4_line_too_few_words",
    "c4_line_javascript",
    "c4_line_policy",
)


def _sentence_counts(lines: pl.DataFrame) -> pl.Series:
    """Sentences per line as spaCy's sentencizer counts them (over :func:`tokenize` tokens).

    A sentence starts at every non-punctuation token that follows a run of punctuation tokens
    holding a sentence-final mark; an empty line has no sentence.
    """
    tokens = explode_lists(lines.select(tokenize(pl.col("line"))).to_series(), "tok")
    tokens = tokens.with_columns(
        plain=~pl.col("tok").str.contains(PUNCT_TOKEN) & ~pl.col("tok").str.contains(SENTENCE_END_TOKEN),
        end=pl.col("tok").str.contains(SENTENCE_END_TOKEN),
    )
    # k = plain tokens so far; the tokens after the k-th plain one share k. A run with k < the
    # line's number of plain tokens is followed by a plain token, so an end mark in it opens a sentence.
    tokens = tokens.with_columns(k=pl.col("plain").cast(pl.UInt32).cum_sum().over("row"))
    per_line = tokens.group_by("row").agg(
        n_tokens=pl.len(),
        breaks=pl.col("k").filter(pl.col("end") & (pl.col("k") < pl.col("plain").sum())).n_unique(),
    )
    counts = per_row(lines.height, [per_line], {"n_tokens": 0, "breaks": 0})
    return counts.select(
        pl.when(pl.col("n_tokens") > 0).then(pl.col("breaks") + 1).otherwise(0).alias("sentences")
    ).to_series()


@register("filter.c4")
@dataclass(kw_only=True)
class C4QualityFilter(Step):
    """Remove bad lines and drop bad documents with C4's rules (datatrove ``C4QualityFilter``).

    Each line (``str.splitlines``), stripped, goes through these checks in order; the first
    that applies decides:

    1. a whitespace-separated word longer than ``max_word_length``: line removed;
    2. ``remove_citations``: ``[1]``, ``[edit]``, ``[citation needed]`` are deleted from the line;
    3. ``filter_no_terminal_punct``: line removed unless it ends with ``. ? ! " '`` (not ``...``);
    4. fewer than ``min_words_per_line`` words: line removed;
    5. ``filter_lorem_ipsum``: "lorem ipsum" drops the document [``c4_lorem_ipsum``];
    6. ``filter_javascript``: "javascript" removes the line;
    7. ``filter_curly_bracket``: ``{`` drops the document [``c4_curly_bracket``];
    8. ``filter_policy``: "terms of use", "privacy policy", cookie notices remove the line.

    A document whose kept lines hold fewer than ``min_num_sentences`` sentences is dropped
    [``c4_too_few_sentences``]; a kept document's text becomes its kept lines joined with
    ``\\n``. The bad-words rule of C4 is not part of this step (as in datatrove).

    Example:
        >>> step = C4QualityFilter(min_num_sentences=1)
        >>> out = step.apply(pl.DataFrame({"text": ["Menu\\nThis line is kept."]}))
        >>> out.frame["text"].to_list()
        ['This line is kept.']
    """

    summary: ClassVar[str] = (
        "C4 rules: remove lines without end punctuation, short lines, boilerplate; drop lorem ipsum, {, few sentences."
    )

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int | None = 5
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True

    def __post_init__(self) -> None:
        for option in (
            "remove_citations",
            "filter_no_terminal_punct",
            "filter_lorem_ipsum",
            "filter_javascript",
            "filter_curly_bracket",
            "filter_policy",
        ):
            check_bool(self.name, option, getattr(self, option))
        check_int(self.name, "min_num_sentences", self.min_num_sentences)
        check_int(self.name, "min_words_per_line", self.min_words_per_line)
        check_int(self.name, "max_word_length", self.max_word_length, 1)

    def _line_flags(self, text: pl.Series) -> pl.DataFrame:
        """One row per line: ``row``, ``li`` (0-based), the cleaned ``line`` and its fate."""
        lines = text.to_frame("text").select(
            pl.col("text").str.replace_all(LINE_BOUNDARY, "\n").str.split("\n")
        )
        long = explode_lists(lines.to_series(), "raw")
        long = long.with_columns(
            li=pl.int_range(pl.len()).over("row").cast(pl.UInt32), line=strip_py(pl.col("raw"))
        )
        words = pl.col("line").str.count_matches(f"{NOT_WS}+")
        long = long.with_columns(n_words=words, long_word=self._has_long_word(long))
        if self.remove_citations:
            long = long.with_columns(line=pl.col("line").str.replace_all(CITATION, ""))
        long = long.with_columns(lower=pl.col("line").str.to_lowercase())
        line, lower = pl.col("line"), pl.col("lower")
        no_punct = ~(line.str.contains(_END_PUNCTUATION) & ~line.str.ends_with("..."))
        few_words = pl.col("n_words") < (self.min_words_per_line or 0)
        # (flag, enabled, condition) in datatrove's order: the first flag that hits decides the line;
        # "lorem" and "curly" drop the whole document, the others only remove the line
        checks = [
            ("c4_line_too_long_word", True, pl.col("long_word")),
            ("c4_line_no_terminal_punct", self.filter_no_terminal_punct, no_punct),
            ("c4_line_too_few_words", self.min_words_per_line is not None, few_words),
            ("lorem", self.filter_lorem_ipsum, lower.str.contains("lorem ipsum", literal=True)),
            ("c4_line_javascript", self.filter_javascript, lower.str.contains("javascript", literal=True)),
            ("curly", self.filter_curly_bracket, line.str.contains("{", literal=True)),
            ("c4_line_policy", self.filter_policy, lower.str.contains_any(list(POLICY_SUBSTRINGS))),
        ]
        long = long.with_columns(kept=pl.lit(True))
        for flag, enabled, expr in checks:
            hit = pl.col("kept") & expr if enabled else pl.lit(False)
            long = long.with_columns(hit.alias(flag)).with_columns(kept=pl.col("kept") & ~pl.col(flag))
        # blank lines are not counted as removed lines
        blank = pl.col("n_words") == 0
        return long.drop("lower").with_columns(pl.col(c) & ~blank for c in LINE_COUNTERS)

    def _has_long_word(self, long: pl.DataFrame) -> pl.Series:
        """True for lines with a word longer than ``max_word_length`` (only long lines are split)."""
        limit = self.max_word_length
        if limit is None:
            return pl.Series("long_word", [False] * long.height, pl.Boolean)
        candidates = long.select(pl.col("line").str.len_chars() > limit).to_series()
        out = pl.Series("long_word", [False] * long.height, pl.Boolean)
        if candidates.any():
            idx = candidates.arg_true()
            longest = (
                long["line"]
                .gather(idx)
                .str.extract_all(f"{NOT_WS}+")
                .list.eval(pl.element().str.len_chars())
                .list.max()
            )
            out = out.scatter(idx, longest > limit)
        return out

    def rules(self) -> list[Rule]:
        """Document rules over the per-row columns, in the order datatrove meets them."""
        lorem, curly = pl.col("first_lorem"), pl.col("first_curly")
        rules = [
            Rule(
                "c4_lorem_ipsum",
                lorem.is_not_null() & (curly.is_null() | (lorem < curly)),
                pl.format("line {} contains 'lorem ipsum'", lorem + 1),
            ),
            Rule(
                "c4_curly_bracket",
                curly.is_not_null(),
                pl.concat_str(pl.lit("line "), (curly + 1).cast(pl.Utf8), pl.lit(" contains '{'")),
            ),
        ]
        if self.min_num_sentences is not None:
            threshold = fmt_threshold(self.min_num_sentences)
            rules.append(
                Rule(
                    "c4_too_few_sentences",
                    pl.col("sentences") < self.min_num_sentences,
                    pl.format(f"sentences={{}} < min_num_sentences={threshold}", pl.col("sentences")),
                )
            )
        return rules

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        text = frame["text"].fill_null("")
        long = self._line_flags(text)
        kept = long.filter("kept")
        if self.min_num_sentences is not None:
            kept = kept.with_columns(sentences=_sentence_counts(kept.select("line")))
        else:
            kept = kept.with_columns(sentences=pl.lit(0, pl.UInt32))
        per_doc = per_row(
            frame.height,
            [
                long.group_by("row").agg(
                    pl.col("li").filter("lorem").min().alias("first_lorem"),
                    pl.col("li").filter("curly").min().alias("first_curly"),
                    *[pl.col(c).sum() for c in LINE_COUNTERS],
                ),
                kept.group_by("row").agg(
                    sentences=pl.col("sentences").sum(), new_text=pl.col("line").str.join("\n")
                ),
            ],
            {"sentences": 0, "new_text": "", **dict.fromkeys(LINE_COUNTERS, 0)},
        )
        reason, detail = first_failing(per_doc, self.rules())
        keep = reason.is_null()
        new_text = per_doc.select(strip_py(pl.col("new_text"))).to_series()
        out = frame.with_columns(text=new_text.zip_with(keep, frame["text"]))
        counters = {c: int(per_doc[c].filter(keep).sum()) for c in LINE_COUNTERS}
        return StepOutput(frame=out, reason=reason, detail=detail, counters=counters)
