"""Every kind of report.html as a person sees it: headless Chromium loads it from disk with no
console errors and no network requests, the charts and tables are there, the flagged-row table
pages, sorts and searches; a full-page screenshot is saved under the test's tmp folder."""

from __future__ import annotations

import json

import pytest

# (output, charts at least, tables at least, anchors that must exist)
PAGES = {
    "pipeline": (
        6,
        4,
        ["funnel", "reasons", "samples", "pii", "dedup", "rejects", "inputs", "outputs", "run"],
    ),
    "noise": (4, 2, ["classes", "matrix", "quality", "flagged", "run"]),
    "noise_fixed": (3, 3, ["funnel", "reasons", "samples", "outputs", "run"]),
    "ehr": (3, 5, ["funnel", "records", "inputs", "outputs", "run"]),
    "finance": (3, 3, ["funnel", "records", "inputs", "outputs", "run"]),
    "curriculum": (5, 4, ["funnel", "curriculum", "inputs", "outputs", "run"]),
}


@pytest.mark.parametrize("kind", sorted(PAGES))
def test_report_loads_cleanly_in_chromium(demo_outputs, open_report, tmp_path, kind):
    charts, tables, anchors = PAGES[kind]
    path = demo_outputs[kind] / "report.html"
    seen = open_report(path, shot=f"{kind}.png")
    page = seen.page
    assert seen.errors == []
    assert [m for m in seen.console if m[0] in ("error", "warning")] == []
    assert seen.requests == [path.resolve().as_uri()]  # the page itself, nothing else
    assert page.locator("svg.plot").count() >= charts
    assert page.locator("table").count() >= tables
    for a in anchors:
        assert page.locator(f"#{a}").count() == 1, a
    # every chart has drawn something with a size
    for i in range(page.locator("svg.plot").count()):
        box = page.locator("svg.plot").nth(i).bounding_box()
        assert box and box["width"] > 100 and box["height"] > 10
    shot = tmp_path / f"{kind}.png"
    assert shot.stat().st_size > 10_000


def _visible_ranks(page) -> list[int]:
    return page.evaluate(
        "[...document.querySelectorAll('#issues tbody tr')].filter(r=>r.style.display!=='none')"
        ".map(r=>parseInt(r.cells[0].textContent))"
    )


def test_flagged_rows_page_sort_and_search(demo_outputs, open_report):
    out = demo_outputs["noise"]
    rep = json.loads((out / "report.json").read_text())
    flagged = rep["counts"]["flagged"]
    assert flagged > 50  # the demo slice has enough flags to need two pages
    ranks = [r["rank"] for r in rep["top_issues"]]
    page = open_report(out / "report.html").page
    assert _visible_ranks(page) == ranks[:50]
    assert (
        page.locator(".pager span").first.inner_text() == f"page 1 of {(flagged + 49) // 50} ({flagged} rows)"
    )
    page.locator(".pager button", has_text="next").first.click()
    assert _visible_ranks(page) == ranks[50:100]
    # sort by quality, descending on the second click: the best-quality flag comes first
    header = page.locator("#issues th", has_text="quality")
    header.click()
    header.click()
    best = max(rep["top_issues"], key=lambda r: (r["label_quality"], -r["rank"]))
    assert _visible_ranks(page)[0] == best["rank"]
    # search one id: one row left, the counter says so
    target = rep["top_issues"][7]["id"]
    page.fill("#q", target)
    rows = page.evaluate(
        "[...document.querySelectorAll('#issues tbody tr')].filter(r=>r.style.display!=='none').map(r=>r.cells[1].textContent)"
    )
    assert rows == [target]
    assert page.locator("#shown").inner_text() == "1"


def test_100k_flagged_rows_page_opens_with_50_rows_shown(demo_outputs, open_report, tmp_path):
    from dataforge.html import write_report

    rep = json.loads((demo_outputs["noise"] / "report.json").read_text())
    base = rep["top_issues"][0]
    rep["top_issues"] = [{**base, "rank": i + 1, "id": f"row-{i}"} for i in range(100_000)]
    rep["counts"]["flagged"] = 100_000
    big = tmp_path / "big"
    big.mkdir()
    (big / "report.json").write_text(json.dumps(rep))
    seen = open_report(write_report(big), shot="big.png")
    assert seen.errors == []
    assert _visible_ranks(seen.page) == list(range(1, 51))
    assert seen.page.locator(".pager span").first.inner_text() == "page 1 of 40 (2,000 rows)"
    assert seen.page.locator("a[href='issues.parquet']").count() == 1


def test_near_duplicate_diff_is_side_by_side(demo_outputs, open_report):
    page = open_report(demo_outputs["pipeline"] / "report.html").page
    diff = page.locator("#dedup ~ .diff").first
    left, right = diff.locator(":scope > div").nth(0), diff.locator(":scope > div").nth(1)
    lb, rb = left.bounding_box(), right.bounding_box()
    assert lb and rb and rb["x"] > lb["x"] + lb["width"] - 1  # two columns, left to right
    assert "dropped" in left.inner_text() and "kept" in right.inner_text()


@pytest.fixture(scope="module")
def command_outputs(tmp_path_factory) -> dict[str, object]:
    """`dataforge clean` and `dataforge dedup` (the commands, not a pipeline file) on sample_data/."""
    from click.testing import CliRunner

    from dataforge.cli import cli

    from .conftest import ROOT

    base = tmp_path_factory.mktemp("commands")
    runner = CliRunner()
    news, defects = ROOT / "sample_data" / "news", ROOT / "sample_data" / "defects" / "planted.jsonl"
    for args in (
        ["clean", str(news), str(defects), "-o", str(base / "clean")],
        ["dedup", str(base / "clean" / "data"), "-o", str(base / "dedup"), "--report-clusters"],
    ):
        res = runner.invoke(cli, ["-q", *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return {"clean": base / "clean", "dedup": base / "dedup"}


@pytest.mark.parametrize(("kind", "title", "anchors"), [
    ("clean", "dataforge clean: clean", ["funnel", "reasons", "samples", "pii", "rejects", "run"]),
    ("dedup", "dataforge dedup: dedup", ["funnel", "samples", "dedup", "outputs", "run"]),
])  # fmt: skip
def test_clean_and_dedup_command_reports_in_chromium(command_outputs, open_report, kind, title, anchors):
    path = command_outputs[kind] / "report.html"
    seen = open_report(path, shot=f"cmd-{kind}.png")
    assert seen.errors == [] and [m for m in seen.console if m[0] == "error"] == []
    assert seen.requests == [path.resolve().as_uri()]
    assert seen.page.title() == title
    for a in anchors:
        assert seen.page.locator(f"#{a}").count() == 1, a
    assert seen.page.locator("svg.plot").count() >= 3
    if kind == "dedup":  # each removed near-duplicate is shown next to the document it kept
        assert seen.page.locator("#samples ~ .sample .diff").count() >= 1
