"""report.html of every kind of run, checked against the run's own files (no browser here)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import polars as pl
import pytest

from dataforge.html import build_report, write_report
from dataforge.html.noise import HTML_ROWS, PAGE_ROWS


def _page(out: Path) -> str:
    return (out / "report.html").read_text(encoding="utf-8")


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def _frame(out: Path, entries: list[dict]) -> pl.DataFrame:
    return pl.concat([pl.read_ipc(out / e["path"]) for e in entries], how="diagonal_relaxed")


def _self_contained(page: str) -> None:
    # nothing that would make a browser fetch anything: no external URLs in src/href, no @import
    assert not re.search(r"""(?:src|href)\s*=\s*['"]?(?:https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert page.count("<script>") == 1  # only ours: data is escaped, never a tag
    assert "Content-Security-Policy" in page


@pytest.mark.parametrize("kind", ["pipeline", "noise", "noise_fixed", "ehr", "finance", "curriculum"])
def test_every_output_has_a_report_that_rebuilds_identically(demo_outputs, kind, cli_runner):
    from dataforge.cli import cli

    out = demo_outputs[kind]
    written = _page(out)
    _self_contained(written)
    (out / "report.html").unlink()
    res = cli_runner.invoke(cli, ["report", str(out)])
    assert res.exit_code == 0, res.output
    assert _page(out) == written  # the page is a pure function of the run's files


def test_report_command_names_a_folder_without_report(tmp_path, cli_runner):
    from dataforge.cli import cli

    res = cli_runner.invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 1
    assert "no report.json" in res.output and str(tmp_path) in res.output


def test_pipeline_report_funnel_and_counts(demo_outputs):
    out = demo_outputs["pipeline"]
    page, rep = _page(out), _report(out)
    c = rep["counts"]
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"]
    assert f"✓ counts add up: {c['rows_in']:,} in = {c['kept']:,} kept" in page
    funnel = page[page.index("id='funnel'") : page.index("id='reasons'")]
    # one bar per step (plus read), labelled with the rows left and what the step removed
    for s in rep["ledger"]["steps"]:
        assert f"{html.escape(s['step'])}: {s['kept']:,} rows left" in funnel
        if s["dropped_total"]:
            assert f"{s['step']}: {s['dropped_total']:,} rows removed" in funnel
    for s in rep["ledger"]["steps"]:
        for reason, n in s["dropped"].items():
            assert f"{reason}: {n:,}" in page  # reason bars carry the counts (svg <title>)


def test_pipeline_report_samples_each_reason_with_its_first_dropped_rows(demo_outputs):
    out = demo_outputs["pipeline"]
    page, rep = _page(out), _report(out)
    dropped = _frame(out, rep["dropped_shards"])
    samples = page[page.index("id='samples'") :]
    for (step, reason), group in dropped.group_by(["drop_step", "drop_reason"], maintain_order=True):
        head = f"{html.escape(step)} · <code>{html.escape(reason)}</code> · {group.height:,} rows"
        assert head in samples
        block = samples[samples.index(head) :]
        block = block[: block.index("<h3>", 5)] if "<h3>" in block[5:] else block
        for row in group.head(3).iter_rows(named=True):
            assert f"<b>{html.escape(row['id'])}</b>" in block
            if row["drop_detail"]:
                assert html.escape(row["drop_detail"]) in block
        assert block.count("<div class='sample'>") == min(3, group.height)


def test_rule_highlights_point_at_the_offending_text(demo_outputs):
    page = _page(demo_outputs["pipeline"])
    block = page[page.index("<code>gopher_too_many_ellipsis</code>") :]
    block = block[: block.index("<h3>")]
    assert "<mark>...</mark>" in block or "<mark>…</mark>" in block
    block = page[page.index("<code>gopher_below_alpha_threshold</code>") :]
    block = block[: block.index("<h3>")]
    marks = re.findall(r"<mark>(.*?)</mark>", block)
    assert marks and all(not any(ch.isalpha() for ch in html.unescape(m)) for m in marks)


def test_near_duplicates_show_a_diff_against_the_kept_representative(demo_outputs):
    out = demo_outputs["pipeline"]
    page, rep = _page(out), _report(out)
    data = _frame(out, rep["shards"])
    clusters = pl.read_ipc(out / rep["reports"]["clusters"][0]["path"])
    dedup = page[page.index("id='dedup'") :]
    assert 'aria-label="LSH S-curve"' in dedup and "threshold 0.8" in dedup
    assert 'aria-label="cluster-size histogram"' in dedup
    # the largest cluster (ties: smallest id) is the first row of the largest-clusters table
    top = clusters.sort(["cluster_size", "cluster_id"], descending=[True, False]).row(0, named=True)
    kept = clusters.filter((pl.col("cluster_id") == top["cluster_id"]) & pl.col("kept"))["id"].to_list()
    assert len(kept) == 1
    table = dedup[dedup.index("Largest clusters") :]
    first_row = re.search(r"<tbody><tr>(.*?)</tr>", table).group(1)
    assert f">{top['cluster_id']}<" in first_row and f">{top['cluster_size']}<" in first_row
    assert html.escape(kept[0]) in first_row
    # each near-duplicate sample is a side-by-side diff naming the kept row of its cluster
    near = page[page.index("<code>near_duplicate</code>") :]
    near = near[: near.index("<h3>")]
    diffs = re.findall(r"dropped (\S+) \(.*?\)</div>.*?kept (\S+) \(", near, flags=re.S)
    assert diffs
    kept_of = dict(zip(clusters["id"].to_list(), clusters["cluster_id"].to_list()))
    rep_of = dict(zip(data["cluster_id"].to_list(), data["id"].to_list()))
    for dropped_id, kept_id in diffs:
        assert rep_of[kept_of[html.unescape(dropped_id)]] == html.unescape(kept_id)
    # cluster-size histogram: the bars add up to the clusters seen by MinHash
    sizes = pl.concat(
        [
            data.select("cluster_id", "cluster_size"),
            _frame(out, rep["dropped_shards"]).select("cluster_id", "cluster_size"),
        ]
    )
    n_clusters = sizes.drop_nulls().unique("cluster_id").height
    hist = dedup[dedup.index('aria-label="cluster-size histogram"') :]
    hist = hist[: hist.index("</svg>")]
    bars = [int(v.replace(",", "")) for v in re.findall(r"<title>[^<:]+: ([\d,]+)</title>", hist)]
    assert sum(bars) == n_clusters


def test_pii_redactions_are_shown_with_their_types(demo_outputs):
    out = demo_outputs["pipeline"]
    page, rep = _page(out), _report(out)
    pii = next(s for s in rep["ledger"]["steps"] if s["step"] == "pii.redact")
    sec = page[page.index("id='pii'") : page.index("id='dedup'")]
    assert f"{sum(pii['counters'].values()):,} matches redacted" in sec
    for t, n in pii["counters"].items():
        assert f"{t}: {n:,}" in sec
    assert re.search(r"<mark>&lt;(EMAIL|PHONE|SSN|IP_ADDRESS|IBAN|CREDIT_CARD)&gt;</mark>", sec)


def test_rejects_show_file_line_and_error(demo_outputs):
    out = demo_outputs["pipeline"]
    page, rep = _page(out), _report(out)
    sec = page[page.index("id='rejects'") : page.index("id='inputs'")]
    for reason, n in rep["ledger"]["rejected_by_reason"].items():
        assert f"<td>{html.escape(reason)}</td><td class='num' data-v='{n}'>{n:,}</td>" in sec
    for s in rep["reject_samples"][:20]:
        assert html.escape(f"{s['source_file']}:{s['source_line']}") in sec
        assert html.escape(s["error"]) in sec


def test_normalize_report_tables_phi_and_units(demo_outputs):
    for kind in ("ehr", "finance"):
        out = demo_outputs[kind]
        page, rep = _page(out), _report(out)
        sec = page[page.index("id='records'") :]
        for t in rep["reports"]["tables"]:
            assert f"{html.escape(t['table'])}: {t['rows']:,}" in sec
    page, rep = _page(demo_outputs["ehr"]), _report(demo_outputs["ehr"])
    counters = rep["global_info"]["counters"]
    phi = page[page.index("PHI fields removed") : page.index("de-identification</h3>")]
    for k, v in counters.items():
        if k.startswith("deid:phi_removed:"):
            assert f"<td>{k.split(':', 2)[2]}</td><td class='num' data-v='{v}'>{v:,}</td>" in phi
    units = page[page.index("unit conversions</h3>") : page.index("PHI fields removed")]
    for k, v in counters.items():
        if k.startswith("unit"):
            assert f"<td>{html.escape(k)}</td><td class='num' data-v='{v}'>" in units
    assert "De-identification mode: <code>safe-harbor</code>" in page


def test_curriculum_report_lists_every_stage_and_source(demo_outputs):
    out = demo_outputs["curriculum"]
    page, rep = _page(out), _report(out)
    for r in rep["reports"]["curriculum"]:
        assert f"Stage {r['stage']}: {html.escape(r['stage_name'])}" in page
        assert f"<td>{html.escape(r['source'])}</td>" in page
    # budget and filter are selection, not removal: no "dropped samples" for a curriculum
    assert "id='samples'" not in page and "A curriculum drops no data" in page


def test_noise_report_flagged_rows_are_paginated_and_linked(demo_outputs):
    out = demo_outputs["noise"]
    page, rep = _page(out), _report(out)
    table = page[page.index("id='issues'") :]
    table = table[: table.index("</table>")]
    assert f"data-page='{PAGE_ROWS}'" in table
    assert table.count("<tr>") - 1 == min(rep["counts"]["flagged"], HTML_ROWS)
    assert "href='issues.parquet'" in page
    assert 'aria-label="estimated noise matrix"' in page and 'aria-label="label quality histogram"' in page


def test_noise_page_with_100k_flagged_rows_stays_small(demo_outputs, tmp_path):
    rep = _report(demo_outputs["noise"])
    base = rep["top_issues"][0]
    rep["top_issues"] = [{**base, "rank": i + 1, "id": f"row-{i}"} for i in range(100_000)]
    rep["counts"]["flagged"] = 100_000
    (tmp_path / "report.json").write_text(json.dumps(rep))
    page = build_report(tmp_path)
    assert page.count("<td class='num' data-v=") // 3 <= HTML_ROWS + 50  # rank, p, quality per row
    assert "row-1999" in page and "row-2000" not in page
    assert len(page.encode()) < 6_000_000


def test_100k_dropped_rows_give_a_bounded_page_and_escaped_text(tmp_path, make_jsonl):
    import dataforge

    records = [{"id": f"d{i}", "text": f"tiny doc {i}"} for i in range(100_000)]
    records[0] = {"id": "evil", "text": "<script>alert('x')</script> & <b>bold</b> " * 3}
    src = make_jsonl("tiny.jsonl", records)
    out = tmp_path / "o"
    report = dataforge.clean([src], output=out, pii="off", dedup=False)
    assert report.dropped == 100_000
    page = _page(out)
    _self_contained(page)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    samples = page[page.index("id='samples'") :]
    assert samples.count("<div class='sample'>") == sum(
        min(3, n) for s in report.ledger.steps for n in s.dropped.values()
    )
    assert len(page.encode()) < 300_000


def test_a_failing_page_does_not_fail_the_run(tmp_path, make_jsonl, monkeypatch, caplog):
    import dataforge
    import dataforge.html.run as run_html

    def boom(*a, **k):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(run_html, "render_run", boom)
    src = make_jsonl("a.jsonl", [{"id": "1", "text": "one two three"}])
    out = tmp_path / "o"
    report = dataforge.clean([src], output=out, pii="off")
    assert report.rows_in == 1 and (out / "manifest.json").exists()
    assert not (out / "report.html").exists()
    assert "renderer bug" in caplog.text and "dataforge report" in caplog.text
    monkeypatch.undo()
    assert write_report(out).exists()


def test_100k_inputs_list_the_busiest_with_a_pointer_to_report_json(demo_outputs, tmp_path):
    from dataforge.html.run import INPUT_ROWS

    rep = _report(demo_outputs["finance"])
    base = rep["per_input"][0]
    rep["per_input"] = [{**base, "path": f"in/{i:06d}.json", "rows_in": i % 997} for i in range(100_000)]
    rep["dropped_shards"], rep["shards"] = [], []
    (tmp_path / "report.json").write_text(json.dumps(rep))
    page = build_report(tmp_path)
    table = page[page.index("id='inputs'") :]
    table = table[table.index("<table") : table.index("</table>")]
    assert table.count("<tr>") - 1 == INPUT_ROWS
    assert "in/000996.json" in table  # 996 rows: among the busiest
    assert "in/000997.json" not in table  # 0 rows
    assert "every input is in <a href='report.json'>report.json</a>" in page
    assert len(page.encode()) < 2_000_000


class _Rows:
    """A shard's rows held in memory (the ShardRows interface of TableShards)."""

    def __init__(self, table) -> None:
        self.table, self.names = table, table.column_names

    def __call__(self, columns, rows=None):
        t = self.table.select(columns)
        return t if rows is None else t.take(rows)


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_report_rows_matching_a_key_equal_a_filter_of_the_shards(tmp_path, monkeypatch, fmt):
    """The report reads sample rows by key (cluster representatives, PII samples): from Arrow
    shards one matching record batch at a time. The rows must equal a plain filter of the shards,
    in order, across shards and batches; a shard without the key column ends the search."""
    from dataforge.html.run import FileShards, TableShards, _frames
    from dataforge.io import shards

    monkeypatch.setattr(shards, "RECORD_BATCH_ROWS", 7)  # many batches per shard
    full = pl.DataFrame(
        {
            "id": [f"d{i}" for i in range(100)],
            "text": [f"text {i} " * (i % 5) for i in range(100)],
            "cluster_id": [None if i % 3 == 0 else i // 4 for i in range(100)],
        },
        schema={"id": pl.Utf8, "text": pl.Utf8, "cluster_id": pl.Int64},
    )
    entries, tables = [], {}
    for k, (lo, hi) in enumerate([(0, 45), (45, 45), (45, 100)]):
        name = f"data/part-{k:05d}.{fmt}"
        shards.write_shard(full[lo:hi].to_arrow(), tmp_path / name, format=fmt)
        entries.append({"path": name})
        tables[name] = _Rows(full[lo:hi].to_arrow())
    wanted = [1, 2, 11, 13, 24, 999]
    where = pl.col("cluster_id").is_in(wanted)
    expected = full.filter(where).select("text", "cluster_id")
    assert expected.height > 10
    # from the files, and from the same rows as tables in memory (how the runner builds the page)
    for src in (FileShards(tmp_path), TableShards(tmp_path, tables)):
        got = list(_frames(src, entries, ["text", "cluster_id", "missing"], key="cluster_id", where=where))
        assert pl.concat(got).equals(expected)
        if fmt == "arrow" and type(src) is FileShards:
            assert len(got) > 3 and all(f.height <= 7 for f in got)  # batch by batch, only matching ones
        assert list(_frames(src, entries, ["id"], key="nope", where=pl.col("nope") > 0)) == []
        rows = src.take(entries[2], ["id"], [0, 3, 54])
        assert rows["id"].to_list() == ["d45", "d48", "d99"]
        many = pl.col("cluster_id").is_not_null()  # 66 matches: taken a few, then more at a time
        got = list(_frames(src, entries, ["id", "cluster_id"], key="cluster_id", where=many))
        assert pl.concat(got).equals(full.filter(many).select("id", "cluster_id"))


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_the_runs_page_from_its_work_files_equals_the_page_from_its_shards(tmp_path, monkeypatch, fmt):
    """A run builds report.html from the work files its shards were written from (no shard is
    read back); `dataforge report OUT` builds it from the shards. With many shards per folder,
    near-duplicate diffs, PII samples and every drop reason, both pages are the same."""
    import yaml

    import dataforge
    from dataforge.html import run as run_html

    root = Path(__file__).resolve().parents[2]
    spec = yaml.safe_load((root / "pipelines" / "demo.yaml").read_text(encoding="utf-8"))
    spec["input"]["paths"] = [
        str(root / "sample_data" / p.removeprefix("../sample_data/")) for p in spec["input"]["paths"]
    ]
    spec["output"] = {"path": str(tmp_path / "out"), "format": fmt, "shard_rows": 150}
    spec["executor"] = {"kind": "local", "workers": 2}
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(spec), encoding="utf-8")

    def no_file_reads(path):
        raise AssertionError(f"the run's page read {path}")

    with monkeypatch.context() as m:
        m.setattr(run_html, "_scan", no_file_reads)
        report = dataforge.run(cfg)
    out = tmp_path / "out"
    assert len(report.shards) > 3 and len(report.dropped_shards) > 1
    written = _page(out)
    assert "<code>near_duplicate</code>" in written and "Largest clusters" in written
    assert "placeholders highlighted" in written and written.count("class='diff") >= 2
    assert build_report(out) == written
