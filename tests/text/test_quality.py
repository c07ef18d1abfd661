"""Tests of the quality filters (filter.gopher_quality, filter.gopher_repetition, filter.c4, filter.fineweb).

Every threshold gets a document that just passes and one that just fails. The documents are built
from space-separated plain words and standalone punctuation, so that their word and token counts
are unambiguous and the expected measures follow from the rule definitions by hand.
"""

from __future__ import annotations

import itertools
import string

import polars as pl
import pytest

from dataforge.errors import ConfigError
from dataforge.registry import build_step
from dataforge.text.quality import (
    PRESETS,
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

# --- helpers ------------------------------------------------------------------------------------


def unique_words(n: int, length: int = 5, start: int = 0) -> list[str]:
    """n distinct lowercase letter-only words of exactly ``length`` characters."""
    letters = string.ascii_lowercase
    out = []
    for combo in itertools.islice(itertools.product(letters, repeat=length), start, start + n):
        out.append("".join(combo))
    return out


def decide(step, texts: list[str]) -> list[tuple[str | None, str | None]]:
    out = step.apply(pl.DataFrame({"text": texts}))
    assert out.reason is not None and out.detail is not None
    assert len(out.reason) == len(texts) == len(out.detail)
    return list(zip(out.reason.to_list(), out.detail.to_list()))


def one(step, text: str) -> tuple[str | None, str | None]:
    return decide(step, [text])[0]


def prose(n_words: int, start: int = 0) -> str:
    """n_words plain words (mean length 5) including two stop words: passes every Gopher quality rule."""
    assert n_words >= 2
    return " ".join(["the", "and", *unique_words(n_words - 2, 5, start)])


# --- word tokens ---------------------------------------------------------------------------------

# spaCy's English tokenizer (what datatrove's split_into_words uses) splits this sentence so
# (checked against spaCy 3.8): abbreviations and acronyms keep their period, clitics are split
# as "ca" + "n't", hyphens between letters are split, numbers with separators stay whole.
SPACY_SENTENCE = (
    "Mr. Smith can't go to the U.S. office; it's a self-made plan (3.5 pct, 1,000 dlrs, "
    "10-20 units, M-1 money) said--e-mail foo@bar.com... Yes!"
)
SPACY_TOKENS = [
    "Mr.", "Smith", "ca", "n't", "go", "to", "the", "U.S.", "office", ";", "it", "'s", "a", "self",
    "-", "made", "plan", "(", "3.5", "pct", ",", "1,000", "dlrs", ",", "10", "-", "20", "units", ",",
    "M-1", "money", ")", "said", "--", "e", "-", "mail", "foo@bar.com", "...", "Yes", "!",
]  # fmt: skip


def test_tokenizer_follows_spacy_on_common_shapes():
    from dataforge.text.quality._text import count_tokens, tokenize

    frame = pl.DataFrame({"text": [SPACY_SENTENCE, "", "  \n "]})
    tokens = frame.select(tokenize(pl.col("text"))).to_series().to_list()
    assert tokens == [SPACY_TOKENS, [], []]
    assert frame.select(count_tokens(pl.col("text"))).to_series().to_list() == [len(SPACY_TOKENS), 0, 0]


@pytest.mark.datatrove
def test_tokenizer_matches_datatrove_split_into_words():
    from datatrove.utils import text as text_mod

    assert text_mod.split_into_words(SPACY_SENTENCE, "eng") == SPACY_TOKENS


# --- filter.gopher_quality ------------------------------------------------------------------------

GQ = GopherQualityFilter()


def test_gopher_quality_good_document_is_kept():
    assert one(GQ, prose(60)) == (None, None)


def test_gopher_short_doc_threshold():
    assert one(GQ, prose(50))[0] is None
    reason, detail = one(GQ, prose(49))
    assert reason == "gopher_short_doc"
    assert "words=49" in detail and "min_doc_words=50" in detail


def test_gopher_short_doc_counts_words_not_punctuation():
    # 49 words plus punctuation tokens is still 49 words
    reason, detail = one(GQ, prose(49) + " . , ; !")
    assert reason == "gopher_short_doc" and "words=49" in detail


def test_gopher_long_doc_threshold():
    assert one(GQ, prose(100_000))[0] is None
    reason, detail = one(GQ, prose(100_001))
    assert reason == "gopher_long_doc"
    assert "words=100001" in detail and "max_doc_words=100000" in detail


def test_gopher_below_avg_word_length():
    # 48 x "cat" + "the and": every word has 3 characters -> mean 3.0 passes (3 < 3 is false)
    passing = " ".join(["the", "and", *["cat"] * 48])
    assert one(GQ, passing)[0] is None
    failing = " ".join(["the", "and", "at", *["cat"] * 47])  # (2 + 49*3) / 50 = 2.98
    reason, detail = one(GQ, failing)
    assert reason == "gopher_below_avg_threshold"
    assert "avg_word_length=2.98" in detail and "min_avg_word_length=3" in detail


def test_gopher_above_avg_word_length():
    # 34 words of 10 chars + 14 of 11 + "the and": (340 + 154 + 6) / 50 = 10.0 -> passes
    ten, eleven = unique_words(34, 10), unique_words(15, 11)
    passing = " ".join(["the", "and", *ten, *eleven[:14]])
    assert one(GQ, passing)[0] is None
    failing = " ".join(["the", "and", *ten[:33], *eleven[:15]])  # (330 + 165 + 6) / 50 = 10.02
    reason, detail = one(GQ, failing)
    assert reason == "gopher_above_avg_threshold"
    assert "avg_word_length=10.02" in detail and "max_avg_word_length=10" in detail


def test_gopher_too_many_hashes():
    # '#' per token: 5 / (50 + 5) = 0.0909 passes, 6 / 56 = 0.1071 fails (> 0.1)
    assert one(GQ, prose(50) + " #" * 5)[0] is None
    reason, detail = one(GQ, prose(50) + " #" * 6)
    assert reason == "gopher_too_many_hashes"
    assert "hash_ratio=0.1071" in detail and "max_symbol_word_ratio=0.1" in detail


def test_gopher_too_many_ellipsis_counts_both_forms():
    words = prose(50).split()
    # 3 "..." + 2 "…" mid-line: 5 / 55 passes; one more fails
    passing = " ".join([*words[:10], "...", "...", "...", "…", "…", *words[10:]])
    assert one(GQ, passing)[0] is None
    failing = " ".join([*words[:10], "...", "...", "...", "…", "…", "…", *words[10:]])
    reason, detail = one(GQ, failing)
    assert reason == "gopher_too_many_ellipsis"
    assert "ellipsis_ratio=0.1071" in detail


def _lines(n_lines: int, words_per_line: int = 5) -> list[str]:
    words = prose(n_lines * words_per_line).split()
    return [" ".join(words[i * words_per_line : (i + 1) * words_per_line]) for i in range(n_lines)]


def test_gopher_too_many_bullets():
    lines = _lines(20)  # 100 words, so the bullet tokens keep the alpha ratio above 0.8
    passing = [("  - " if i == 0 else "- " if i < 12 else "• ") + line for i, line in enumerate(lines[:18])]
    assert one(GQ, "\n".join(passing + lines[18:]))[0] is None  # 18/20 = 0.9 is not > 0.9
    failing = ["• " + line for line in lines[:19]] + lines[19:]
    reason, detail = one(GQ, "\n".join(failing))
    assert reason == "gopher_too_many_bullets"
    assert "bullet_lines_ratio=0.95" in detail and "max_bullet_lines_ratio=0.9" in detail


def test_gopher_too_many_end_ellipsis():
    lines = _lines(10, 6)
    passing = [line + " ..." for line in lines[:2]] + [lines[2] + " …  "] + lines[3:]
    assert one(GQ, "\n".join(passing))[0] is None  # 3/10 = 0.3
    failing = [line + " ..." for line in lines[:4]] + lines[4:]
    reason, detail = one(GQ, "\n".join(failing))
    assert reason == "gopher_too_many_end_ellipsis"
    assert "ellipsis_lines_ratio=0.4" in detail


def test_gopher_end_ellipsis_lines_with_crlf_and_trailing_newline():
    # splitlines: "\r\n" is one boundary and a trailing newline adds no line -> 4/10 = 0.4
    lines = _lines(10, 6)
    text = "\r\n".join([line + " ..." for line in lines[:4]] + lines[4:]) + "\r\n"
    reason, detail = one(GQ, text)
    assert reason == "gopher_too_many_end_ellipsis" and "ellipsis_lines_ratio=0.4" in detail


def test_gopher_below_alpha_threshold():
    # tokens with a letter / all tokens: 50 / 62 = 0.806 passes, 50 / 63 = 0.794 fails
    assert one(GQ, prose(50) + " 123" * 12)[0] is None
    reason, detail = one(GQ, prose(50) + " 123" * 13)
    assert reason == "gopher_below_alpha_threshold"
    assert "alpha_words_ratio=0.7937" in detail and "min_alpha_words_ratio=0.8" in detail


def test_gopher_alpha_counts_unicode_letters():
    # Cyrillic and accented words are alphabetic
    text = " ".join(["the", "and", *["été", "слово", "naïve"] * 20])
    assert one(GQ, text)[0] is None


def test_gopher_stop_words_are_distinct_and_case_sensitive():
    words = unique_words(60)
    assert one(GQ, " ".join(["the", "of", *words]))[0] is None
    reason, detail = one(GQ, " ".join(["the", "the", "The", "OF", *words]))
    assert reason == "gopher_enough_stop_words"
    assert "stop_words=1" in detail and "min_stop_words=2" in detail


def test_gopher_quality_first_failing_rule_wins():
    # fails short_doc and stop words -> short_doc (checked first)
    assert one(GQ, " ".join(unique_words(10)))[0] == "gopher_short_doc"
    # fails alpha and stop words -> alpha
    assert one(GQ, " ".join(unique_words(50)) + " 1" * 20)[0] == "gopher_below_alpha_threshold"
    # fails hashes and ellipsis -> hashes
    assert one(GQ, prose(50) + " # ..." * 10)[0] == "gopher_too_many_hashes"


def test_gopher_quality_override_and_disable():
    doc = prose(30)
    assert one(GQ, doc)[0] == "gopher_short_doc"
    assert one(GopherQualityFilter(min_doc_words=30), doc)[0] is None
    assert one(GopherQualityFilter(min_doc_words=None), doc)[0] is None
    no_stop = " ".join(unique_words(60))
    assert one(GopherQualityFilter(min_stop_words=None), no_stop)[0] is None
    assert one(GopherQualityFilter(stop_words=("aaaaa", "aaaab")), no_stop)[0] is None


def test_gopher_quality_empty_and_blank_texts():
    assert decide(GQ, ["", "   \n\n  "]) == [
        ("gopher_short_doc", "words=0 < min_doc_words=50"),
        ("gopher_short_doc", "words=0 < min_doc_words=50"),
    ]
    # with every rule disabled an empty text is kept (no division by zero)
    off = GopherQualityFilter(
        min_doc_words=None,
        max_doc_words=None,
        min_avg_word_length=None,
        max_avg_word_length=None,
        max_symbol_word_ratio=None,
        max_bullet_lines_ratio=None,
        max_ellipsis_lines_ratio=None,
        min_alpha_words_ratio=None,
        min_stop_words=None,
    )
    assert decide(off, ["", "#"]) == [(None, None), (None, None)]


@pytest.mark.parametrize(
    ("options", "bad"),
    [
        ({"min_doc_words": -1}, "-1"),
        ({"min_doc_words": 2.5}, "2.5"),
        ({"max_symbol_word_ratio": 1.5}, "1.5"),
        ({"min_alpha_words_ratio": "0.8"}, "'0.8'"),
        ({"min_doc_words": 200, "max_doc_words": 100}, "200"),
        ({"min_avg_word_length": 12, "max_avg_word_length": 10}, "12"),
        ({"stop_words": ("the", "")}, "''"),
        ({"stop_words": "the"}, "'the'"),
    ],
)
def test_gopher_quality_bad_options(options, bad):
    with pytest.raises(ConfigError, match=r"filter\.gopher_quality") as err:
        GopherQualityFilter(**options)
    assert bad in str(err.value)


# --- filter.gopher_repetition -------------------------------------------------------------------

GR = GopherRepetitionFilter()


def paragraphs(n: int, words: int = 20, start: int = 0) -> list[str]:
    """n distinct one-line paragraphs of distinct words."""
    pool = unique_words(n * words, 5, start)
    return [" ".join(pool[i * words : (i + 1) * words]) for i in range(n)]


def test_gopher_repetition_good_document_is_kept():
    assert one(GR, "\n\n".join(paragraphs(10))) == (None, None)


def test_gopher_rep_empty():
    assert one(GR, "") == ("gopher_rep_empty", "text is empty")


def test_gopher_rep_dup_para_frac():
    uniq = paragraphs(7, 30)
    short = "short one"
    # 10 paragraphs, "short one" 4 times = 3 duplicates: 3/10 = 0.3 passes
    passing = [short, uniq[0], uniq[1], short, uniq[2], uniq[3], short, uniq[4], short, uniq[5]]
    assert one(GR, "\n\n".join(passing))[0] is None
    # 4 duplicates out of 10: 0.4
    failing = [short, uniq[0], short, uniq[1], short, uniq[2], short, uniq[3], short, uniq[4]]
    reason, detail = one(GR, "\n\n\n".join(failing))  # runs of 2+ newlines split paragraphs
    assert reason == "gopher_rep_dup_para_frac"
    assert "dup_para_ratio=0.4" in detail and "dup_para_frac=0.3" in detail


# the repetition rules checked after the one under test (a repeated paragraph also repeats n-grams)
NO_NGRAMS = GopherRepetitionFilter(top_n_grams=None, dup_n_grams=None)


def test_gopher_rep_dup_para_char_frac():
    uniq = paragraphs(4, 20)  # 4 x 119 characters
    dup = " ".join(unique_words(25, 5, 10_000))  # 149 characters
    text = "\n\n".join([dup, *uniq, dup])
    ratio = len(dup) / len(text)  # one duplicate paragraph: 1/6 of paragraphs (passes dup_para_frac)
    assert 0.19 < ratio <= 0.2
    assert one(NO_NGRAMS, text)[0] is None
    longer = " ".join(unique_words(30, 5, 10_000))  # 179 characters
    text = "\n\n".join([longer, *uniq, longer])
    ratio = len(longer) / len(text)
    assert ratio > 0.2
    reason, detail = one(GR, text)
    assert reason == "gopher_rep_dup_para_char_frac"
    assert f"dup_para_char_ratio={round(ratio, 4)}" in detail


def test_gopher_rep_dup_line_frac():
    uniq = paragraphs(7, 30)
    short = "short one"
    passing = [short, uniq[0], uniq[1], short, uniq[2], uniq[3], short, uniq[4], short, uniq[5]]
    assert one(GR, "\n".join(passing))[0] is None  # lines, one paragraph: 3/10
    failing = [short, uniq[0], short, uniq[1], short, uniq[2], short, uniq[3], short, uniq[4]]
    reason, detail = one(GR, "\n".join(failing))
    assert reason == "gopher_rep_dup_line_frac"
    assert "dup_line_ratio=0.4" in detail and "dup_line_frac=0.3" in detail


def test_gopher_rep_dup_line_frac_counts_edge_empty_lines():
    # re.split("\n+") yields "" before a leading and after a trailing newline: ["", "a b", ""]
    # has 1 duplicate of 3 lines = 0.333 > 0.3
    reason, detail = one(GopherRepetitionFilter(top_n_grams=None, dup_n_grams=None), "\nab cd\n")
    assert reason == "gopher_rep_dup_line_frac" and "dup_line_ratio=0.3333" in detail


def test_gopher_rep_dup_line_char_frac():
    uniq = paragraphs(5, 20)  # 5 x 119 characters, one line each
    dup = " ".join(unique_words(30, 5, 10_000))  # 179 characters
    text = "\n".join([dup, *uniq, dup])
    assert 0.18 < len(dup) / len(text) <= 0.2
    assert one(NO_NGRAMS, text)[0] is None
    longer = " ".join(unique_words(40, 5, 10_000))  # 239 characters
    text = "\n".join([longer, *uniq, longer])
    ratio = len(longer) / len(text)
    assert ratio > 0.2
    reason, detail = one(GR, text)
    assert reason == "gopher_rep_dup_line_char_frac"
    assert f"dup_line_char_ratio={round(ratio, 4)}" in detail


def phrase_doc(phrase: str, times: int, fillers_per_gap: int) -> str:
    """``times`` copies of ``phrase``, each after ``fillers_per_gap`` distinct 4-letter words."""
    filler = unique_words(times * fillers_per_gap, 4, 5_000)
    parts = []
    for i in range(times):
        parts.extend(filler[i * fillers_per_gap : (i + 1) * fillers_per_gap])
        parts.append(phrase)
    return " ".join(parts)


def test_gopher_rep_top_2_gram():
    # "big cat" (7 chars) in k segments of m fillers: ratio 7k / len(text)
    passing = phrase_doc("big cat", 20, 6)
    assert 7 * 20 / len(passing) <= 0.2
    assert one(GR, passing)[0] is None
    failing = phrase_doc("big cat", 20, 5)
    ratio = 7 * 20 / len(failing)
    assert ratio > 0.2
    reason, detail = one(GR, failing)
    assert reason == "gopher_rep_top_2_gram"
    assert f"top_2_gram_char_ratio={round(ratio, 4)}" in detail and "top_n_grams[2]=0.2" in detail


def test_gopher_rep_top_3_and_4_gram():
    # "big red cat": bigrams 7 chars, trigram 11 chars; 20 copies
    failing = phrase_doc("big red cat", 20, 8)
    assert 7 * 20 / len(failing) <= 0.2 and 11 * 20 / len(failing) > 0.18
    reason, detail = one(GR, failing)
    assert reason == "gopher_rep_top_3_gram"
    assert f"top_3_gram_char_ratio={round(11 * 20 / len(failing), 4)}" in detail
    # "big red fat cat": 4-gram 15 chars, trigram 11, bigram 7
    failing = phrase_doc("big red fat cat", 20, 14)
    assert 11 * 20 / len(failing) <= 0.18 and 15 * 20 / len(failing) > 0.16
    assert one(GR, failing)[0] == "gopher_rep_top_4_gram"
    assert one(GopherRepetitionFilter(top_n_grams=[[2, 0.2], [3, 0.18]]), failing)[0] is None


def test_gopher_rep_top_ngram_ties_take_the_first_ngram():
    # all bigrams occur once: Counter.most_common(1) returns the first one, "a b" (3 of 24 chars),
    # not the longest ("b " + 20 x "c", 22 chars)
    text = "a b " + "c" * 20
    step = GopherRepetitionFilter(top_n_grams={2: 0.2}, dup_n_grams=None)
    assert one(step, text)[0] is None
    reason, detail = one(step, "abcdef b " + "c" * 10)  # "abcdef b": 8/19 = 0.42
    assert reason == "gopher_rep_top_2_gram" and "0.4211" in detail


def test_gopher_rep_top_ngram_ties_among_repeated_ngrams():
    # "ab cd", "cd longer" and "longer words" all occur twice: the first seen wins, 5 * 2 = 10 of 37
    # characters (0.27); taking the longest ("longer words", 24 characters) would give 0.65
    text = "ab cd longer words ab cd longer words"
    step = GopherRepetitionFilter(top_n_grams={2: 0.3}, dup_n_grams=None, dup_line_frac=None)
    assert one(step, text)[0] is None
    reason, detail = one(GopherRepetitionFilter(top_n_grams={2: 0.25}, dup_n_grams=None), text)
    assert reason == "gopher_rep_top_2_gram" and "top_2_gram_char_ratio=0.2703" in detail


def test_gopher_rep_duplicated_5_n_grams():
    only_dup5 = GopherRepetitionFilter(top_n_grams=None, dup_n_grams={5: 0.15})
    phrase = "alpha bravo charl delta echos"  # 5 words, 25 characters without spaces
    # the second copy is covered: 25 / len(text)
    filler = unique_words(40, 6, 20_000)
    passing = " ".join([*filler[:11], phrase, *filler[11:14], phrase, *filler[14:16]])  # 171 chars
    assert 25 / len(passing) <= 0.15
    assert one(only_dup5, passing)[0] is None
    failing = " ".join([*filler[:11], phrase, *filler[11:14], phrase, *filler[14:15]])  # 164 chars
    ratio = 25 / len(failing)
    assert ratio > 0.15
    reason, detail = one(only_dup5, failing)
    assert reason == "gopher_rep_duplicated_5_n_grams"
    assert f"duplicated_5_gram_char_ratio={round(ratio, 4)}" in detail and "dup_n_grams[5]=0.15" in detail


def test_gopher_rep_duplicated_10_n_grams_and_order():
    phrase = " ".join(unique_words(10, 5, 30_000))  # 50 characters without spaces
    filler = unique_words(60, 6, 20_000)
    text = " ".join([*filler[:30], phrase, *filler[30:50], phrase])
    ratio = 50 / len(text)
    assert 0.10 < ratio <= 0.11
    # with the defaults the repeated 5-grams (0.15) do not fire, 6..9 neither, 10 does
    reason, detail = one(GopherRepetitionFilter(top_n_grams=None), text)
    assert reason == "gopher_rep_duplicated_10_n_grams"
    assert f"duplicated_10_gram_char_ratio={round(ratio, 4)}" in detail
    assert one(GopherRepetitionFilter(top_n_grams=None, dup_n_grams={10: 0.11}), text)[0] is None


def test_gopher_rep_override_and_disable():
    uniq = paragraphs(7, 30)
    short = "short one"
    doc = "\n".join([short, uniq[0], short, uniq[1], short, uniq[2], short, uniq[3], short, uniq[4]])
    assert one(GR, doc)[0] == "gopher_rep_dup_line_frac"
    assert one(GopherRepetitionFilter(dup_line_frac=0.4), doc)[0] is None
    assert one(GopherRepetitionFilter(dup_line_frac=None), doc)[0] is None


def test_gopher_rep_rows_do_not_share_ngrams():
    # the same document twice in one batch is measured as if alone (no cross-row repeats)
    doc = "\n\n".join(paragraphs(5))
    alone = one(GR, doc)
    assert alone == (None, None)
    assert decide(GR, [doc, doc, doc]) == [alone] * 3


@pytest.mark.parametrize(
    ("options", "bad"),
    [
        ({"dup_line_frac": 1.2}, "1.2"),
        ({"dup_para_char_frac": -0.1}, "-0.1"),
        ({"top_n_grams": [[0, 0.2]]}, "0"),
        ({"top_n_grams": [[2, 2.0]]}, "2.0"),
        ({"dup_n_grams": [[5, 0.1, 3]]}, "[5, 0.1, 3]"),
        ({"dup_n_grams": [[5, 0.1], [5, 0.2]]}, "5"),
        ({"top_n_grams": "2"}, "'2'"),
    ],
)
def test_gopher_repetition_bad_options(options, bad):
    with pytest.raises(ConfigError, match=r"filter\.gopher_repetition") as err:
        GopherRepetitionFilter(**options)
    assert bad in str(err.value)


# --- filter.c4 ----------------------------------------------------------------------------------

C4 = C4QualityFilter()
SENTENCES = [
    "The river runs past the old mill.",
    "Children play near the water every day.",
    "Fishermen arrive before the sun rises!",
    "Does anyone remember the great flood?",
    "Nobody in the village has forgotten it.",
    "The mayor built a new bridge afterwards.",
]


def test_c4_rewrites_text_line_by_line():
    long_word = "x" * 1001
    text = "\n".join(
        [
            "Home | About | Contact",  # no terminal punctuation
            SENTENCES[0],
            "Read the rest of the story...",  # ends with an ellipsis
            "Too short.",  # fewer than 3 words
            f"A line with {long_word} in it.",  # a word over 1000 characters
            "Please enable JavaScript to view this page.",
            SENTENCES[1] + "[1]",  # citation removed, then kept
            "By using this site you agree to our Terms of Use.",
            "We use cookies to improve your experience.",
            SENTENCES[2],
            "   " + SENTENCES[3] + "   ",  # stripped
            SENTENCES[4] + "[citation needed]",
            "",
        ]
    )
    out = C4.apply(pl.DataFrame({"text": [text]}))
    assert out.reason.to_list() == [None]
    assert out.frame["text"].to_list() == ["\n".join(SENTENCES[:5])]
    assert out.counters == {
        "c4_line_too_long_word": 1,
        "c4_line_no_terminal_punct": 2,
        "c4_line_too_few_words": 1,
        "c4_line_javascript": 1,
        "c4_line_policy": 2,
    }


def test_c4_keeps_lines_ending_with_quotes_and_splits_crlf():
    text = "\r\n".join([*SENTENCES[:4], 'She said "stay here."', "He answered 'fine.'", "Menu"])
    out = C4.apply(pl.DataFrame({"text": [text]}))
    assert out.reason.to_list() == [None]
    assert out.frame["text"].item() == "\n".join(
        [*SENTENCES[:4], 'She said "stay here."', "He answered 'fine.'"]
    )


def test_c4_too_few_sentences_threshold():
    assert one(C4, " ".join(SENTENCES[:5]))[0] is None  # 5 sentences on one line
    reason, detail = one(C4, "\n".join(SENTENCES[:4]))
    assert reason == "c4_too_few_sentences"
    assert "sentences=4" in detail and "min_num_sentences=5" in detail
    # lines removed by line rules do not count
    reason, detail = one(C4, "\n".join([*SENTENCES[:4], "This has no end mark"]))
    assert reason == "c4_too_few_sentences" and "sentences=4" in detail


def test_c4_sentence_count_respects_abbreviations_and_closing_punctuation():
    # "Mr." and "U.S." do not end sentences; '."' and '!)' do
    text = 'Mr. Smith moved to the U.S. last year. He said "it is big." (It is!) They agree. Fine.'
    assert one(C4, text)[0] is None  # 5 sentences
    assert one(C4, text.removesuffix(" Fine."))[1] == "sentences=4 < min_num_sentences=5"


def test_c4_lorem_ipsum_drops_the_document_and_keeps_its_text():
    text = "\n".join([SENTENCES[0], "Lorem ipsum dolor sit amet.", *SENTENCES[1:]])
    out = C4.apply(pl.DataFrame({"text": [text]}))
    assert out.reason.to_list() == ["c4_lorem_ipsum"]
    assert out.detail.to_list() == ["line 2 contains 'lorem ipsum'"]
    assert out.frame["text"].item() == text  # dropped documents are not rewritten
    assert out.counters["c4_line_no_terminal_punct"] == 0  # counters cover kept documents only


def test_c4_lorem_ipsum_in_a_removed_line_does_not_drop():
    # the line has no terminal punctuation, so it is removed before the lorem check
    text = "\n".join(["lorem ipsum dolor sit amet", *SENTENCES])
    assert one(C4, text)[0] is None
    assert (
        one(C4QualityFilter(filter_lorem_ipsum=False), "\n".join(["Lorem ipsum dolor.", *SENTENCES]))[0]
        is None
    )


def test_c4_curly_bracket_and_line_order():
    curly = "The set {1, 2} is finite."
    lorem = "Lorem ipsum dolor sit."
    reason, detail = one(C4, "\n".join([SENTENCES[0], curly, lorem, *SENTENCES]))
    assert (reason, detail) == ("c4_curly_bracket", "line 2 contains '{'")
    assert one(C4, "\n".join([lorem, curly, *SENTENCES]))[0] == "c4_lorem_ipsum"
    # a javascript line is removed before the curly check
    assert one(C4, "\n".join(["Our javascript uses { here.", *SENTENCES]))[0] is None
    assert one(C4QualityFilter(filter_curly_bracket=False), "\n".join([curly, *SENTENCES]))[0] is None


def test_c4_flags_and_thresholds_can_be_turned_off():
    text = "\n".join(["Menu", "Hi.", *SENTENCES[:5]])
    assert C4.apply(pl.DataFrame({"text": [text]})).frame["text"].item() == "\n".join(SENTENCES[:5])
    loose = C4QualityFilter(filter_no_terminal_punct=False, min_words_per_line=None)
    assert loose.apply(pl.DataFrame({"text": [text]})).frame["text"].item() == text
    no_min = C4QualityFilter(min_num_sentences=None)
    out = no_min.apply(pl.DataFrame({"text": ["Menu\nHome"]}))
    assert out.reason.to_list() == [None] and out.frame["text"].to_list() == [""]
    keep_cookies = C4QualityFilter(filter_policy=False, filter_javascript=False, remove_citations=False)
    extra = ["We use cookies here.", "Turn on JavaScript now.", "Cited fact [2]."]
    out = keep_cookies.apply(pl.DataFrame({"text": ["\n".join([*SENTENCES[:5], *extra])]}))
    assert out.frame["text"].item().splitlines()[5:] == extra


def test_c4_max_word_length_threshold():
    ok_line = f"A {'y' * 1000} word."
    too_long = f"A {'y' * 1001} word."
    out = C4.apply(pl.DataFrame({"text": ["\n".join([ok_line, too_long, *SENTENCES[:4]])]}))
    assert out.frame["text"].item() == "\n".join([ok_line, *SENTENCES[:4]])
    assert out.counters["c4_line_too_long_word"] == 1
    out = C4QualityFilter(max_word_length=None).apply(pl.DataFrame({"text": [too_long]}))
    assert out.detail.to_list() == ["sentences=1 < min_num_sentences=5"]


def test_c4_empty_text():
    assert decide(C4, ["", "\n\n"]) == [("c4_too_few_sentences", "sentences=0 < min_num_sentences=5")] * 2


@pytest.mark.parametrize(
    ("options", "bad"),
    [
        ({"filter_policy": "yes"}, "'yes'"),
        ({"min_num_sentences": -1}, "-1"),
        ({"min_words_per_line": 2.5}, "2.5"),
        ({"max_word_length": 0}, "0"),
    ],
)
def test_c4_bad_options(options, bad):
    with pytest.raises(ConfigError, match=r"filter\.c4") as err:
        C4QualityFilter(**options)
    assert bad in str(err.value)


# --- filter.fineweb -------------------------------------------------------------------------------

FW = FineWebQualityFilter()


def fw_lines(n: int, *, end: str = ".", start: int = 0) -> list[str]:
    """n distinct lines of 6 words (> 30 characters), each ending with ``end``."""
    words = unique_words(6 * n, 5, start)
    return [" ".join(words[6 * i : 6 * i + 6]) + end for i in range(n)]


def test_fineweb_good_document_is_kept():
    assert one(FW, "\n".join(fw_lines(10))) == (None, None)


def test_fineweb_empty():
    assert decide(FW, ["", "\n \n\t\n"]) == [("fineweb_empty", "no non-blank line")] * 2


def test_fineweb_line_punct_ratio():
    passing = fw_lines(3) + fw_lines(22, end="", start=100)  # 3/25 = 0.12
    assert one(FW, "\n".join(passing))[0] is None
    failing = fw_lines(2) + fw_lines(23, end="", start=100)  # 2/25 = 0.08
    reason, detail = one(FW, "\n".join(failing))
    assert reason == "fineweb_line_punct_ratio"
    assert "line_punct_ratio=0.08" in detail and "line_punct_thr=0.12" in detail


def test_fineweb_line_punct_options():
    none_end = "\n".join(fw_lines(5, end=""))
    assert one(FW, none_end)[0] == "fineweb_line_punct_ratio"
    assert one(FineWebQualityFilter(line_punct_exclude_zero=True), none_end)[0] is None
    assert one(FineWebQualityFilter(line_punct_thr=None), none_end)[0] is None
    bangs = "\n".join(fw_lines(5, end="!"))
    assert one(FineWebQualityFilter(stop_chars=("?",)), bangs)[0] == "fineweb_line_punct_ratio"
    assert one(FineWebQualityFilter(stop_chars=("!",)), bangs)[0] is None
    # terminal punctuation of other scripts counts
    assert one(FW, "\n".join(fw_lines(5, end="。")))[0] is None


def test_fineweb_short_line_ratio():
    # lines of at most 30 characters (length in characters, not bytes)
    numbered = [f"Short line number {i:03d} ok." for i in range(66)]  # 25 characters
    exact = "Exactly thirty characters now."
    accented = "é" * 29 + "."
    assert len(exact) == 30 and len(accented) == 30 and len(accented.encode()) > 30
    passing = [*numbered[:65], exact, accented, *fw_lines(33)]  # 67 short of 100
    assert one(FW, "\n".join(passing))[0] is None
    failing = [*numbered[:66], exact, accented, *fw_lines(32)]  # 68 short of 100
    reason, detail = one(FW, "\n".join(failing))
    assert reason == "fineweb_short_line_ratio"
    assert "short_line_ratio=0.68" in detail and "short_line_thr=0.67" in detail
    assert one(FineWebQualityFilter(short_line_length=24), "\n".join(failing))[0] is None


def test_fineweb_char_dup_ratio():
    lines = fw_lines(40)  # 40 x 36 characters
    dup = "Yes."
    passing = [dup, *lines, dup]
    ratio = len(dup) / len("".join(passing))
    assert ratio <= 0.01
    assert one(FW, "\n".join(passing))[0] is None
    failing = [lines[0], *lines[:20], lines[0]]  # lines[0] twice after the first
    ratio = 2 * len(lines[0]) / len("".join(failing))
    reason, detail = one(FW, "\n".join(failing))
    assert reason == "fineweb_char_dup_ratio"
    assert f"char_dup_ratio={round(ratio, 4)}" in detail


def test_fineweb_list_ratio():
    # every line: 2 long words and "." = 3 tokens, more than 30 characters
    words = unique_words(22, 16)
    lines = [f"{words[2 * i]} {words[2 * i + 1]}." for i in range(10)]
    assert one(FW, "\n".join(lines))[0] is None  # 9 newlines / 30 tokens = 0.3
    reason, detail = one(FW, "\n".join(lines) + "\n")  # 10 / 30
    assert reason == "fineweb_list_ratio"
    assert "newlines_per_word=0.3333" in detail and "new_line_ratio=0.3" in detail
    assert one(FineWebQualityFilter(new_line_ratio=None), "\n".join(lines) + "\n")[0] is None


def test_fineweb_crlf_is_measured_like_lf():
    lines = fw_lines(10)
    assert one(FW, "\r\n".join(lines)) == one(FW, "\n".join(lines)) == (None, None)


@pytest.mark.parametrize(
    ("options", "bad"),
    [
        ({"line_punct_thr": 2}, "2"),
        ({"short_line_length": -5}, "-5"),
        ({"short_line_length": None}, "None"),
        ({"line_punct_exclude_zero": 1}, "1"),
        ({"stop_chars": [".", ""]}, "''"),
        ({"new_line_ratio": -1}, "-1"),
    ],
)
def test_fineweb_bad_options(options, bad):
    with pytest.raises(ConfigError, match=r"filter\.fineweb") as err:
        FineWebQualityFilter(**options)
    assert bad in str(err.value)


# --- all steps ----------------------------------------------------------------------------------

ALL_STEPS = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.name)
def test_passthrough_columns_and_row_order(step):
    texts = [prose(60), "", "Menu\nHome", "\n".join(SENTENCES), prose(80, 500) + "\n\n" + prose(80, 500)]
    frame = pl.DataFrame(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            "meta": ['{"a": 1}', None, "{}", None, '{"b": [1]}'],
            "_source": ["in.jsonl"] * len(texts),
            "_row": pl.Series(range(len(texts)), dtype=pl.Int64),
            "_line": pl.Series([1, 2, 3, None, 5], dtype=pl.Int64),
        }
    )
    out = step.apply(frame)
    assert out.frame.columns == frame.columns
    assert out.frame.height == frame.height == len(out.reason)
    assert out.frame.drop("text").equals(frame.drop("text"))
    if step.name != "filter.c4":
        assert out.frame["text"].equals(frame["text"])
    # each row's decision is the decision it gets alone
    alone = [one(step, t) for t in texts]
    assert list(zip(out.reason.to_list(), out.detail.to_list())) == alone
    # and does not depend on the order of the batch
    rev = step.apply(frame.reverse())
    assert rev.reason.to_list() == out.reason.to_list()[::-1]


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.name)
def test_empty_batch(step):
    out = step.apply(pl.DataFrame({"id": [], "text": []}, schema={"id": pl.Utf8, "text": pl.Utf8}))
    assert out.frame.height == 0 and len(out.reason) == 0 and len(out.detail) == 0


def test_reasons_are_distinct_and_prefixed_by_family():
    reasons = [r.reason for step in ALL_STEPS for r in step.rules()]
    assert len(reasons) == len(set(reasons))
    prefixes = {
        "filter.gopher_quality": "gopher_",
        "filter.gopher_repetition": "gopher_rep_",
        "filter.c4": "c4_",
        "filter.fineweb": "fineweb_",
    }
    for step in ALL_STEPS:
        for rule in step.rules():
            assert rule.reason.startswith(prefixes[step.name]), rule.reason
            assert rule.reason == rule.reason.lower() and " " not in rule.reason
    assert not any(r.reason.startswith("gopher_rep_") for r in GopherQualityFilter().rules())


def test_presets_and_registry():
    assert PRESETS == {
        "gopher": [("filter.gopher_quality", {}), ("filter.gopher_repetition", {})],
        "c4": [("filter.c4", {})],
        "fineweb": [("filter.fineweb", {})],
        "none": [],
    }
    for steps in PRESETS.values():
        for name, options in steps:
            assert build_step(name, options).name == name
    step = build_step("filter.gopher_repetition", {"top_n_grams": [[2, 0.25]], "dup_n_grams": {5: 0.2}})
    assert step.top_n_grams == ((2, 0.25),) and step.dup_n_grams == ((5, 0.2),)
    assert step.options()["top_n_grams"] == [[2, 0.25]]
    with pytest.raises(ConfigError, match=r"min_alpha_words_ratio.*0\.8"):
        build_step("filter.gopher_quality", {"max_bullet_lines_ratio": 0.8, "min_alpha_words_ratio": "0.8"})


# --- agreement with datatrove (marker 'datatrove': run by `make bench` in the bench venv) --------------------------------

AGREEMENT_DOCS = [
    prose(60),
    prose(20),
    "\n".join(SENTENCES),
    "\n".join(["Menu", *SENTENCES, "Lorem ipsum dolor sit amet."]),
    "\n".join([SENTENCES[0], "The set {1, 2} is finite.", *SENTENCES]),
    "\n\n".join(paragraphs(5)),
    "\n".join(["short one", *paragraphs(3), "short one", "short one"]),
    phrase_doc("big cat", 20, 5),
    phrase_doc("big red cat", 20, 8),
    "\n".join(fw_lines(2) + fw_lines(23, end="", start=100)),
    "\n".join(f"{w}." for w in unique_words(40, 8)),
    (
        "The committee met on Tuesday to discuss the budget. Mr. Jones, who chairs it, said the "
        'figures were not final. "We\'ll know more next week," he told reporters. The plan would '
        "raise spending by 3.5 pct to 1,200 mln dlrs in 1987/88, and it has to be approved by the "
        "board.\nShares of the company rose 2-1/2 to 31 on the news.\n"
    )
    * 2,
]


@pytest.mark.datatrove
@pytest.mark.parametrize("preset", ["gopher", "c4", "fineweb"])
def test_matches_datatrove_on_sample_documents(preset):
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter as DtC4,
    )
    from datatrove.pipeline.filters import (
        FineWebQualityFilter as DtFineWeb,
    )
    from datatrove.pipeline.filters import (
        GopherQualityFilter as DtGopherQuality,
    )
    from datatrove.pipeline.filters import (
        GopherRepetitionFilter as DtGopherRepetition,
    )

    theirs_steps = {
        "gopher": [("", DtGopherQuality()), ("gopher_rep_", DtGopherRepetition())],
        "c4": [("c4_", DtC4())],
        "fineweb": [("fineweb_", DtFineWeb())],
    }[preset]
    ours_steps = [build_step(name, opts) for name, opts in PRESETS[preset]]
    for text in AGREEMENT_DOCS:
        doc = Document(text=text, id="x")
        theirs = None
        for prefix, filt in theirs_steps:
            result = filt.filter(doc)
            if result is not True and not (isinstance(result, tuple) and result[0]):
                theirs = prefix + result[1]
                break
        ours = None
        frame = pl.DataFrame({"text": [text]})
        for step in ours_steps:
            out = step.apply(frame)
            ours = out.reason.item()
            if ours is not None:
                break
            frame = out.frame
        assert ours == theirs, (preset, text[:80])
        if preset == "c4" and ours is None:
            assert frame["text"].item() == doc.text
