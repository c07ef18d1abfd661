from __future__ import annotations

import html
import unicodedata

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.errors import ConfigError
from dataforge.registry import _REGISTRY
from dataforge.text.normalize import NormalizeText, unescape_entities, unicode_normalize

# Steps with only the option under test switched on.
BARE = {"strip_control": False, "strip_zero_width": False, "whitespace": "none", "drop_empty": False}


def run(texts: list[str], **options) -> list[str]:
    out = NormalizeText(**options).apply(pl.DataFrame({"text": texts}))
    return out.frame["text"].to_list()


def one(text: str, **options) -> str:
    return run([text], **options)[0]


def test_registered():
    assert _REGISTRY["normalize.text"] is NormalizeText
    assert NormalizeText.name == "normalize.text"


# --- Unicode normalization -------------------------------------------------------------------


def test_nfc_composes_but_keeps_compatibility_characters():
    assert one("cafe\u0301 ﬁ Ｆｕｌｌ", **BARE, form="NFC") == "café ﬁ Ｆｕｌｌ"


def test_nfkc_folds_compatibility_characters():
    assert one("cafe\u0301 ﬁ Ｆｕｌｌ ²", **BARE, form="NFKC") == "café fi Full 2"


def test_nfd_and_nfkd_decompose():
    assert one("café", **BARE, form="NFD") == "cafe\u0301"
    assert one("ﬁé", **BARE, form="NFKD") == "fie\u0301"


def test_form_none_leaves_text_alone():
    assert one("cafe\u0301 ﬁ", **BARE, form="none") == "cafe\u0301 ﬁ"


def test_unicode_normalize_matches_polars_on_mixed_rows():
    rows = ["ascii only", "café", "cafe\u0301", "ﬁ", "한국어", "\u1100\u1161", "Å", "x\u0327\u0301"]
    for form in ("NFC", "NFKC", "NFD", "NFKD"):
        series = pl.Series(rows)
        expected = [unicodedata.normalize(form, r) for r in rows]
        assert unicode_normalize(series, form).to_list() == expected, form
        assert series.to_list() == rows  # the input series is not modified in place


# --- control characters and line breaks --------------------------------------------------------


def test_strip_control_removes_c0_c1_and_del_but_keeps_tab_and_newline():
    text = "a\x00b\x07c\x1bd\x7fe\x9ff\tg\nh"
    assert one(text, **{**BARE, "strip_control": True}) == "abcdef\tg\nh"


def test_strip_control_removes_ansi_escape_sequences_whole():
    assert one("\x1b[1;31mred\x1b[0m text", **{**BARE, "strip_control": True}) == "red text"


def test_line_breaks_become_newlines():
    text = "a\r\nb\rc\x85d\x0be\x0cf\u2028g\u2029h"
    assert one(text, **{**BARE, "strip_control": True}) == "a\nb\nc\nd\ne\nf\ng\nh"


def test_crlf_is_one_newline_not_two():
    assert one("one\r\ntwo\r\n\r\nthree", **{**BARE, "strip_control": True}) == "one\ntwo\n\nthree"


def test_strip_control_off_keeps_controls():
    assert one("a\x00b\r\nc", **BARE) == "a\x00b\r\nc"


# --- zero-width and invisible characters -------------------------------------------------------


@pytest.mark.parametrize(
    "char",
    ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202a", "\u202e", "\u2066", "\u2069"],
)
def test_zero_width_in_the_middle_of_a_latin_word_is_removed(char):
    assert one(f"pass{char}word", **{**BARE, "strip_zero_width": True}) == "password"


def test_bom_at_start_is_removed():
    assert one("\ufeffHello", **{**BARE, "strip_zero_width": True}) == "Hello"


def test_emoji_zwj_sequences_are_kept():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    rainbow_flag = "\U0001f3f3\ufe0f\u200d\U0001f308"
    runner = "\U0001f3c3\U0001f3fd\u200d\u2640\ufe0f"  # skin tone modifier before the ZWJ
    for emoji in (family, rainbow_flag, runner):
        assert one(f"hi {emoji}!", **{**BARE, "strip_zero_width": True}) == f"hi {emoji}!"


def test_joiners_needed_by_a_script_are_kept():
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ between Arabic letters
    devanagari = "\u0915\u094d\u200d\u0937"  # ZWJ after a virama
    assert one(persian, **{**BARE, "strip_zero_width": True}) == persian
    assert one(devanagari, **{**BARE, "strip_zero_width": True}) == devanagari


def test_dangling_and_repeated_joiners_are_removed():
    opts = {**BARE, "strip_zero_width": True}
    assert one("\u200d\U0001f600", **opts) == "\U0001f600"  # nothing to join before it
    assert one("\U0001f600\u200d", **opts) == "\U0001f600"  # nothing after it
    assert one("\U0001f600\u200d a", **opts) == "\U0001f600 a"
    assert one("\u0915\u094d\u200d\u200d\u0937", **opts) == "\u0915\u094d\u200d\u0937"
    assert one("\u0645\u200c", **opts) == "\u0645"


def test_removing_zero_width_renormalizes_the_row():
    # the ZWSP kept the combining accent from composing with its base letter
    assert one("cafe\u200b\u0301", **{**BARE, "strip_zero_width": True}) == "café"


def test_strip_zero_width_off_keeps_them():
    assert one("a\u200bb", **BARE) == "a\u200bb"


# --- whitespace ----------------------------------------------------------------------------------


def test_collapse_spaces_tabs_and_unicode_spaces():
    text = "a  b\t\tc\u00a0d\u2003e\u3000 f"
    assert one(text, **{**BARE, "whitespace": "collapse"}) == "a b c d e f"


def test_collapse_strips_trailing_space_per_line_and_the_document():
    text = "  \n first  \t\nsecond\u00a0\n  "
    assert one(text, **{**BARE, "whitespace": "collapse"}) == "first\nsecond"


@pytest.mark.parametrize(
    ("max_blank_lines", "expected"), [(0, "a\nb\nc"), (1, "a\n\nb\nc"), (2, "a\n\n\nb\nc")]
)
def test_collapse_limits_blank_lines(max_blank_lines, expected):
    text = "a\n\n\n \n\t\nb\nc"
    opts = {**BARE, "whitespace": "collapse", "max_blank_lines": max_blank_lines}
    assert one(text, **opts) == expected


def test_lines_mode_only_normalizes_newlines_and_trailing_space():
    text = "  a  b \r\n\r\n\r\n\r\nc\t"
    assert one(text, **{**BARE, "whitespace": "lines"}) == "  a  b\n\n\n\nc"


def test_whitespace_none_keeps_everything():
    assert one("  a  b \r\n", **BARE) == "  a  b \r\n"


def test_defaults_on_a_messy_document():
    text = "\ufeff  Title\u00a0 \r\n\r\n\r\n\r\nBody with a\u200b hidden\x00 char.\t\n"
    assert one(text) == "Title\n\nBody with a hidden char."


# --- HTML ----------------------------------------------------------------------------------------


def test_html_to_text():
    doc = (
        "<html><head><title>T</title><style>p { color: red }</style>"
        "<script type='text/javascript'>if (a < b) { alert('x') }</script></head>"
        '<body><!-- a comment --><h1>Heading</h1><div class="x>y"><p>One <b>bold <i>and italic</i></b>'
        " word.</p><p>Two&nbsp;&amp;&#160;three &lt;tag&gt; &eacute; &#x263A; &copy;</p>line<br>break"
        "<br/>again<ul><li>first</li><li>second</li></ul></div></body></html>"
    )
    assert one(doc, html=True) == (
        "T\nHeading\nOne bold and italic word.\nTwo & three <tag> é ☺ ©\nline\nbreak\nagain\nfirst\nsecond"
    )


def test_html_keeps_plain_text_and_comparisons():
    assert one("a < b and c > d\nnext line", html=True) == "a < b and c > d\nnext line"


def test_html_off_leaves_tags_and_entities():
    assert one("<p>a &amp; b</p>") == "<p>a &amp; b</p>"


def test_html_table_cells_are_separated():
    assert one("<table><tr><td>1</td><td>2</td></tr><tr><td>3</td></tr></table>", html=True) == "1 2\n3"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="&#;ampltgquosbnxX0123456789AMPcoyé <\n", max_size=40))
def test_unescape_entities_matches_html_unescape(text):
    assert unescape_entities(pl.Series([text])).to_list() == [html.unescape(text)]


# --- drops ---------------------------------------------------------------------------------------


def test_drop_empty_reason_and_detail():
    out = NormalizeText().apply(pl.DataFrame({"text": ["ok", "", " \u200b\x00 \n ", "x"]}))
    assert out.reason.to_list() == [None, "empty_text", "empty_text", None]
    assert out.detail.to_list() == [None, "chars=0 after normalization", "chars=0 after normalization", None]


def test_drop_empty_whitespace_only_when_whitespace_is_kept():
    out = NormalizeText(whitespace="none").apply(pl.DataFrame({"text": ["  \n"]}))
    assert out.reason.to_list() == ["empty_text"]
    assert out.detail.to_list() == ["chars=3 after normalization, whitespace only"]


def test_drop_empty_off_keeps_empty_rows():
    out = NormalizeText(drop_empty=False).apply(pl.DataFrame({"text": ["", "a"]}))
    assert out.reason is None
    assert out.frame["text"].to_list() == ["", "a"]


def test_min_chars_reason_and_detail():
    out = NormalizeText(min_chars=5).apply(pl.DataFrame({"text": ["abcd  ", "abcde", "", "ab\u200bc"]}))
    assert out.reason.to_list() == ["too_short", None, "empty_text", "too_short"]
    assert out.detail.to_list() == [
        "chars=4 < min_chars=5",
        None,
        "chars=0 after normalization",
        "chars=3 < min_chars=5",
    ]


def test_min_chars_applies_to_empty_rows_when_drop_empty_is_off():
    out = NormalizeText(drop_empty=False, min_chars=2).apply(pl.DataFrame({"text": [""]}))
    assert out.reason.to_list() == ["too_short"]
    assert out.detail.to_list() == ["chars=0 < min_chars=2"]


# --- counters, frame shape ------------------------------------------------------------------------


def test_counters():
    texts = ["clean", "a\x00b\x01", "zw\u200b\u200b", "  spaced  ", "\x1b[0mx"]
    out = NormalizeText().apply(pl.DataFrame({"text": texts}))
    assert out.counters == {"changed": 4, "control_chars_removed": 6, "zero_width_removed": 2}


def test_counters_zero_when_nothing_changes():
    out = NormalizeText().apply(pl.DataFrame({"text": ["fine", "also fine\nok"]}))
    assert out.counters == {"changed": 0, "control_chars_removed": 0, "zero_width_removed": 0}


def test_passthrough_columns_and_row_order():
    frame = pl.DataFrame(
        {
            "id": ["c", "a", "b"],
            "text": ["  third ", "first\x00", "second"],
            "meta": ['{"k": 1}', None, "{}"],
            "_row": [2, 0, 1],
        }
    )
    out = NormalizeText().apply(frame)
    assert out.frame.columns == frame.columns
    assert out.frame.height == 3
    assert out.frame["text"].to_list() == ["third", "first", "second"]
    assert out.frame.drop("text").equals(frame.drop("text"))
    assert frame["text"].to_list() == ["  third ", "first\x00", "second"]  # input untouched


def test_empty_frame():
    out = NormalizeText().apply(pl.DataFrame({"text": pl.Series([], dtype=pl.Utf8)}))
    assert out.frame.height == 0
    assert out.counters["changed"] == 0


# --- idempotence and properties ------------------------------------------------------------------

OPTION_SETS = [
    {},
    {"form": "NFKC"},
    {"form": "NFD", "max_blank_lines": 0},
    {"form": "NFKD", "whitespace": "lines"},
    {"form": "none", "strip_zero_width": False},
    {"strip_control": False, "whitespace": "none"},
]
# Characters that exercise every rule: controls, line breaks, spaces, invisibles, joiners and
# their neighbours (emoji, Devanagari, Arabic), combining marks, compatibility characters.
TRICKY = (
    "a e\u0301\u0327\u0300\t\n\r\x00\x1b\x85\x0b\x0c\x7f\x9f \u00a0\u2003\u3000\u2028\u2029"
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u202a\u2066\u200e\ufe0f\U0001f600\U0001f3fd\u2122\u2640"
    "\u0915\u094d\u093c\u0645\u064b\u00e9\ufb01\uff21\u00b2\u1100\u1161\u11a8\uac00\u0958[m;1"
)
texts = st.one_of(st.text(), st.text(alphabet=TRICKY, max_size=30))


@pytest.mark.parametrize(
    "options", OPTION_SETS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults"
)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, min_size=1, max_size=5))
def test_idempotent(options, batch):
    once = run(batch, **options)
    assert run(once, **options) == once


@pytest.mark.parametrize(
    "options", OPTION_SETS[:4], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults"
)
def test_idempotent_when_stripping_reorders_marks(options):
    """Found by the property test above: deleting the ZWSP makes a grave accent and a nukta
    neighbours, the Unicode form puts the nukta first, and the ZWNJ then follows a mark of no
    joining script, which a second pass deleted. The step now strips to a fixed point."""
    batch = ["\u0300\u200b\u093c\u200c\u0860", "x\u0301\u200b\u0323\u200d\u0915 ok"]
    once = run(batch, **options)
    assert run(once, **options) == once
    assert all("\u200b" not in t for t in once)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(texts, min_size=1, max_size=5))
def test_never_introduces_control_characters(batch):
    for after in run(batch):
        assert not any(unicodedata.category(c) == "Cc" and c not in "\t\n" for c in after), repr(after)
        assert "\r" not in after
        assert after == after.strip()


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(texts, min_size=1, max_size=5))
def test_result_is_in_the_requested_form(batch):
    for form in ("NFC", "NFKC", "NFD", "NFKD"):
        assert all(unicodedata.is_normalized(form, t) for t in run(batch, form=form))


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"form": "nfc"}, "'nfc'"),
        ({"form": "NFX"}, "'NFX'"),
        ({"whitespace": "squash"}, "'squash'"),
        ({"html": "yes"}, "'yes'"),
        ({"strip_control": 1}, "1"),
        ({"max_blank_lines": -1}, "-1"),
        ({"max_blank_lines": 1.5}, "1.5"),
        ({"min_chars": 0}, "0"),
        ({"min_chars": True}, "True"),
    ],
)
def test_bad_options_raise_config_error_naming_the_value(options, named):
    with pytest.raises(ConfigError, match=named) as info:
        NormalizeText(**options)
    assert "normalize.text" in str(info.value)


def test_bad_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: NFC, NFD, NFKC, NFKD, none"):
        NormalizeText(form="NFX")
    with pytest.raises(ConfigError, match="valid: collapse, lines, none"):
        NormalizeText(whitespace="tidy")
