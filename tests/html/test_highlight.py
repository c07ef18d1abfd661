"""The spans that explain a drop point at the text the rule measured."""

from __future__ import annotations

from dataforge.html.highlight import placeholder_spans, spans_for


def _marked(reason: str, text: str) -> list[str]:
    return [text[s:e] for s, e in spans_for(reason, text)]


def test_repeated_lines_after_their_first_occurrence():
    text = "Buy now\nfresh news today\nBuy now\n\nBuy now\nend"
    assert _marked("gopher_rep_dup_line_frac", text) == ["Buy now", "Buy now"]
    assert spans_for("gopher_rep_dup_line_frac", text)[0][0] == text.index("Buy now", 1)


def test_repeated_paragraphs():
    text = "para one\nline two\n\nother\n\npara one\nline two"
    assert _marked("gopher_rep_dup_para_frac", text) == ["para one\nline two"]


def test_top_and_duplicated_ngrams():
    text = "click here click here to win click here now"
    assert _marked("gopher_rep_top_2_gram", text) == ["click here"] * 3
    dup = _marked("gopher_rep_duplicated_3_n_grams", "a b c d a b c d e")
    assert dup == ["a b c", "b c d"]


def test_symbols_bullets_alpha_and_c4_rules():
    assert _marked("gopher_too_many_hashes", "#tag ## x") == ["#", "##"]
    assert _marked("gopher_too_many_ellipsis", "wait... more… end") == ["...", "…"]
    assert _marked("gopher_too_many_end_ellipsis", "cut off...\nfine line\nalso…") == ["...", "…"]
    assert _marked("gopher_too_many_bullets", "- one\ntext\n• two") == ["- one", "• two"]
    assert _marked("gopher_below_alpha_threshold", "price 1,200 at 3.5% ok") == ["1,200", "3.5%"]
    assert _marked("c4_lorem_ipsum", "Lorem ipsum dolor") == ["Lorem ipsum"]
    assert _marked("c4_curly_bracket", "f(){ x }") == ["{", "}"]
    assert _marked("fineweb_line_punct_ratio", "A sentence.\nno stop here\nQ?") == ["no stop here"]


def test_reasons_with_nothing_local_have_no_spans():
    assert spans_for("gopher_short_doc", "two words") == []
    assert spans_for("some_future_rule", "text") == []
    assert spans_for("gopher_too_many_hashes", "") == []


def test_placeholders_default_and_custom():
    text = "mail <EMAIL> or call [TEL] now"
    assert [text[s:e] for s, e in placeholder_spans(text)] == ["<EMAIL>"]
    assert [text[s:e] for s, e in placeholder_spans(text, {"phone": "[TEL]"})] == ["<EMAIL>", "[TEL]"]
