"""The HTML building blocks escape data, mark what they are asked to, and draw what they are given."""

from __future__ import annotations

import re

from dataforge.html import kit


def test_page_is_self_contained_and_escapes_the_title():
    page = kit.page("<x> & y", ["<p>body</p>"], toc=[("a", "A")])
    assert "<title>&lt;x&gt; &amp; y</title>" in page
    assert page.count("<script>") == 1 and "default-src 'none'" in page
    assert "<a href='#a'>A</a>" in page


def test_table_escapes_cells_and_formats_numbers():
    t = kit.table(["a", "n", "raw"], [("<b>", 1234567, "<i>ok</i>")], numeric=[1], raw=[2], page_size=10)
    assert "<td>&lt;b&gt;</td>" in t
    assert "<td class='num' data-v='1234567'>1,234,567</td>" in t
    assert "<td><i>ok</i></td>" in t and "data-page='10'" in t


def test_highlighted_marks_spans_and_windows_long_text():
    text = "abc DEF ghi"
    assert kit.highlighted(text, [(4, 7)]) == "abc <mark>DEF</mark> ghi"
    assert kit.highlighted("<a>", [(0, 3)]) == "<mark>&lt;a&gt;</mark>"
    long = "x" * 5000 + "HIT" + "y" * 5000
    out = kit.highlighted(long, [(5000, 5003)], max_chars=1000)
    assert "<mark>HIT</mark>" in out
    assert "characters before" in out and "characters more" in out
    assert len(re.sub(r"<[^>]+>", "", out)) < 1200


def test_merge_spans():
    assert kit.merge_spans([(5, 8), (0, 2), (1, 3), (8, 9), (4, 4)]) == [(0, 3), (5, 9)]


def test_diff_marks_words_only_in_one_side():
    d = kit.diff_html("the cat sat down", "the dog sat down", names=("left", "right"))
    assert "<del>cat </del>" in d and "<ins>dog </ins>" in d  # a word carries its trailing space
    assert d.count("<del>") == 1 and d.count("<ins>") == 1


def test_charts_draw_one_mark_per_item():
    bars = kit.hbars_svg([("a", 3), ("b", 1)], title="t")
    assert bars.count("<rect") == 2 and "a: 3" in bars
    funnel = kit.funnel_svg([("read", 10, 0), ("f", 7, 3)])
    assert "f: 3 rows removed" in funnel and "read: 10 rows left" in funnel
    cols = kit.columns_svg([("1", 100), ("2", 5)], title="h", xlabel="size", log=True)
    assert cols.count("<rect") == 2
    curve = kit.curve_svg(
        [(0.5, 0.1), (0.9, 0.99)], title="c", xlabel="s", ylabel="p", marker=0.8, marker_label="thr"
    )
    assert curve.count("<circle") == 2 and "thr" in curve
    heat = kit.heatmap_svg([[0.9, 0.1], [0.2, 0.8]], ["a", "b"], title="m")
    assert heat.count("<rect") == 4
