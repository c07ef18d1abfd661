"""``filter.fineweb``: FineWeb's extra heuristics (Penedo et al. 2024), as datatrove's ``FineWebQualityFilter``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import ClassVar

import polars as pl

from dataforge.errors import ConfigError
from dataforge.registry import register
from dataforge.step import Rule, Step, StepOutput, check_range, first_failing
from dataforge.text.quality._options import check_bool, check_int, check_strings
from dataforge.text.quality._text import (
    TERMINAL_PUNCTUATION,
    char_class,
    count_tokens,
    explode_lists,
    fmt,
    normalize_crlf,
    per_row,
    repeats_earlier,
    strip_py,
    threshold_rule,
)

logger = logging.getLogger(__name__)


def _ends_with_any(stop_chars: tuple[str, ...] | None) -> str:
    """Regex true for a line ending with one of ``stop_chars`` (default: terminal punctuation)."""
    if stop_chars is None:
        return char_class(TERMINAL_PUNCTUATION) + "$"
    return "(?:" + "|".join(re.escape(s) for s in stop_chars) + ")$"


@register("filter.fineweb")
@dataclass(kw_only=True)
class FineWebQualityFilter(Step):
    """Drop documents failing FineWeb's line heuristics (datatrove ``FineWebQualityFilter``).

    Lines are the non-blank pieces of ``text.split("\\n")``. Rules, in check order:

    1. no non-blank line [``fineweb_empty``];
    2. share of lines ending with one of ``stop_chars`` below ``line_punct_thr``
       [``fineweb_line_punct_ratio``] (a share of 0 passes when ``line_punct_exclude_zero``);
    3. share of lines of at most ``short_line_length`` characters above ``short_line_thr``
       [``fineweb_short_line_ratio``];
    4. characters of lines repeating an earlier line, over the characters that are not
       ``\\n``, above ``char_duplicates_ratio`` [``fineweb_char_dup_ratio``];
    5. newlines per word above ``new_line_ratio`` [``fineweb_list_ratio``].

    A None threshold disables its rule.

    Example:
        >>> step = FineWebQualityFilter()
        >>> out = step.apply(pl.DataFrame({"text": ["Home\\nAbout\\nContact\\nShop"]}))
        >>> out.reason.to_list()
        ['fineweb_line_punct_ratio']
    """

    summary: ClassVar[str] = (
        "FineWeb rules: lines ending in punctuation, short lines, duplicate lines, list-like text."
    )

    line_punct_thr: float | None = 0.12
    line_punct_exclude_zero: bool = False
    stop_chars: tuple[str, ...] | None = None
    short_line_thr: float | None = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float | None = 0.01
    new_line_ratio: float | None = 0.3

    def __post_init__(self) -> None:
        name = self.name
        check_range(name, "line_punct_thr", self.line_punct_thr, 0, 1)
        check_bool(name, "line_punct_exclude_zero", self.line_punct_exclude_zero)
        if self.stop_chars is not None:
            self.stop_chars = check_strings(name, "stop_chars", self.stop_chars)
        check_range(name, "short_line_thr", self.short_line_thr, 0, 1)
        if self.short_line_length is None:
            msg = f"{name}: option 'short_line_length' must be an integer, got None"
            raise ConfigError(msg)
        check_int(name, "short_line_length", self.short_line_length)
        check_range(name, "char_duplicates_ratio", self.char_duplicates_ratio, 0, 1)
        check_range(name, "new_line_ratio", self.new_line_ratio, 0, None)

    def _stats(self, text: pl.Series) -> pl.DataFrame:
        """Per-document line counts, duplicate-line characters, newlines and words."""
        frame = text.to_frame("text")
        lines = explode_lists(frame.select(pl.col("text").str.split("\n")).to_series(), "line")
        lines = lines.filter(strip_py(pl.col("line")) != "").with_columns(
            dup=repeats_earlier(pl.col("line")),
            punct=pl.col("line").str.contains(_ends_with_any(self.stop_chars)),
            length=pl.col("line").str.len_chars(),
        )
        per_line = lines.group_by("row").agg(
            n_lines=pl.len(),
            punct_lines=pl.col("punct").sum(),
            short_lines=(pl.col("length") <= self.short_line_length).sum(),
            dup_chars=pl.col("length").filter("dup").sum(),
        )
        doc = frame.select(
            newlines=pl.col("text").str.count_matches("\n", literal=True),
            chars=pl.col("text").str.len_chars(),
            words=count_tokens(pl.col("text")) if self.new_line_ratio is not None else pl.lit(0),
        )
        counts = per_row(
            len(text), [per_line], {"n_lines": 0, "punct_lines": 0, "short_lines": 0, "dup_chars": 0}
        )
        return pl.concat([counts, doc], how="horizontal")

    def rules(self) -> list[Rule]:
        """The enabled rules over the columns of :meth:`_stats`, in datatrove's order."""
        n_lines = pl.col("n_lines")
        punct = pl.col("punct_lines") / n_lines
        if self.line_punct_exclude_zero:
            punct = pl.when(punct > 0).then(punct)  # a share of 0 passes
        short = pl.col("short_lines") / n_lines
        non_newline = pl.col("chars") - pl.col("newlines")
        dup = pl.when(non_newline > 0).then(pl.col("dup_chars") / non_newline)
        newlines = pl.col("newlines") / pl.col("words").clip(lower_bound=1)
        table = [  # (reason, measure, value, op, option)
            ("fineweb_line_punct_ratio", "line_punct_ratio", punct, "<", "line_punct_thr"),
            ("fineweb_short_line_ratio", "short_line_ratio", short, ">", "short_line_thr"),
            ("fineweb_char_dup_ratio", "char_dup_ratio", dup, ">", "char_duplicates_ratio"),
            ("fineweb_list_ratio", "newlines_per_word", newlines, ">", "new_line_ratio"),
        ]
        rules = [Rule("fineweb_empty", n_lines == 0, pl.lit("no non-blank line"))]
        for reason, measure, value, op, option in table:
            threshold = getattr(self, option)
            if threshold is not None:
                rules.append(threshold_rule(reason, measure, value, op, option, threshold, fmt(value)))
        return rules

    def apply(self, frame: pl.DataFrame) -> StepOutput:
        text = frame["text"].fill_null("")
        if text.str.contains("\r", literal=True).any():
            text = text.to_frame("text").select(normalize_crlf(pl.col("text"))).to_series()
        reason, detail = first_failing(self._stats(text), self.rules())
        return StepOutput(frame=frame, reason=reason, detail=detail)
