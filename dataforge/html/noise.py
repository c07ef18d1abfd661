"""``report.html`` of ``dataforge noise-report``, built from its ``report.json``.

Shows the cards, per-class issue rates, the most confused class pairs, the estimated noise matrix
heatmap, the label-quality histogram and the ranked flagged rows (searchable, sortable and
paginated; the page holds at most ``HTML_ROWS`` rows and links to ``issues.parquet`` for all).
"""

from __future__ import annotations

from typing import Any

from dataforge.html import kit

HTML_ROWS = 2000  # flagged rows in the page (every one is in issues.parquet)
PAGE_ROWS = 50


def _class_bars_svg(per_class: list[dict[str, Any]]) -> str:
    w, row = 760, 18
    h = 20 + row * len(per_class)
    top = max((r["examples"] for r in per_class), default=1) or 1
    left = 8 + 7 * max((min(len(str(r["class"])), 24) for r in per_class), default=4)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'role="img" aria-label="flagged rows per class"><title>flagged rows per class</title>'
    ]
    for i, r in enumerate(per_class):
        y = 10 + i * row
        total = (w - left - 110) * r["examples"] / top
        flag = (w - left - 110) * r["flagged"] / top
        parts.append(
            f'<text x="{left - 4}" y="{y + 12}" font-size="11" text-anchor="end">{kit.esc(kit.short(str(r["class"]), 24))}</text>'
        )
        parts.append(f'<rect x="{left}" y="{y}" width="{total:.1f}" height="{row - 4}" fill="#cfd8e3"/>')
        parts.append(f'<rect x="{left}" y="{y}" width="{flag:.1f}" height="{row - 4}" fill="#c0392b"/>')
        parts.append(
            f'<text x="{left + total + 4:.1f}" y="{y + 12}" font-size="11">{r["flagged"]:,} / {r["examples"]:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_noise(d: dict[str, Any]) -> str:
    """The page for a noise report whose ``report.json`` is ``d``."""
    e = kit.esc
    c = d["counts"]
    model = d["model"]
    health = d["health"]
    used = c["rows_used"]
    frac = c["flagged"] / used if used else 0.0
    files = d.get("files", {})
    issues_file = files.get("issues", "issues.parquet")
    cards = [
        ("rows in", f"{c['rows_in']:,}"),
        ("used", f"{used:,}"),
        ("rejected", f"{c['rejected']:,}"),
        ("flagged", f"{c['flagged']:,} ({frac:.1%})"),
        ("cleanlab estimate", f"{c['issues_estimate']:,}"),
        ("label health", f"{health['overall_label_health_score']:.3f}"),
    ]
    if c.get("outliers") is not None:
        cards.append(("outliers", f"{c['outliers']:,}"))
    classes = health["classes"]
    body = [
        f"<p>Label column <code>{e(d['label_col'])}</code>, {len(classes)} classes; model <b>{e(model['name'])}</b>"
        f" ({e(', '.join(model['members']) or 'given probabilities')}), {model['folds']}-fold cross-validation, "
        f"seed {model['seed']}; cleanlab <code>filter_by={e(d['filter_by'])}</code>, ranked by <code>{e(d['rank_by'])}</code>.</p>",
        kit.cards(cards),
    ]
    if c["rows_in"] == used + c["rejected"]:
        body.append(
            f"<p class='ok'>✓ counts add up: {c['rows_in']:,} in = {used:,} used + {c['rejected']:,} rejected.</p>"
        )
    else:
        body.append(
            f"<p class='bad'>✗ counts do not add up: {c['rows_in']:,} ≠ {used:,} + {c['rejected']:,}.</p>"
        )
    body += [f"<div class='warn'>{e(w)}</div>" for w in d.get("warnings", [])]
    if model.get("accuracy_vs_given"):
        body.append(
            "<p>Out-of-sample accuracy against the given labels: "
            + ", ".join(f"{e(m)} {a:.3f}" for m, a in model["accuracy_vs_given"].items())
            + ". Detection is only as good as this model: review the flags, do not trust them blindly.</p>"
        )
    if model.get("earlier_rounds"):
        body.append(
            "<p>Re-scored: "
            + ", ".join(f"round {r['round']} flagged {r['flagged']:,}" for r in model["earlier_rounds"])
            + f"; the final round trained without those rows and flagged {c['flagged']:,}.</p>"
        )
    fix = d.get("fix") or {}
    if fix:
        body.append(
            f"<h2 id='fix'>Fix applied: {e(fix['mode'])}</h2><p>kept {fix['kept']:,} (of which relabelled "
            f"{fix['relabelled']:,}), dropped {fix['dropped']:,} with reason <code>label_issue</code>; shards in "
            f"<code>{e(fix['output'])}</code>. Relabel needs the suggested label's probability ≥ {fix['min_confidence']}.</p>"
        )
    per_class = health["per_class"]
    body.append(kit.section("classes", "Issues by class"))
    body.append(_class_bars_svg(per_class))
    body.append(
        kit.table(
            [
                "class",
                "examples",
                "flagged",
                "issue rate",
                "label noise",
                "inverse label noise",
                "label quality",
            ],
            [
                (
                    r["class"],
                    r["examples"],
                    r["flagged"],
                    round(r["flagged"] / r["examples"], 4) if r["examples"] else 0.0,
                    r["label_noise"],
                    r["inverse_label_noise"],
                    r["label_quality"],
                )
                for r in per_class
            ],
            numeric=[1, 2, 3, 4, 5, 6],
            cls="sortable",
        )
    )
    if health.get("overlapping_classes"):
        body.append("<h3>Most confused class pairs</h3>")
        body.append(
            kit.table(
                ["class A", "class B", "examples", "joint probability"],
                [
                    (r["class_a"], r["class_b"], r["num_overlapping"], r["joint_probability"])
                    for r in health["overlapping_classes"][:10]
                ],
                numeric=[2, 3],
            )
        )
    body.append(kit.section("matrix", "Estimated noise matrix"))
    body.append(
        kit.heatmap_svg(
            health["noise_matrix"],
            classes,
            title="estimated noise matrix",
            caption="columns: true label · rows: given label · value: P(given | true)",
        )
    )
    hist = d["quality_histogram"]
    body.append(kit.section("quality", "Label quality scores"))
    body.append(
        kit.histogram_svg(
            [("all rows", hist["all"], "#9fb3c8"), ("flagged", hist["flagged"], "#c0392b")],
            hist["edges"],
            title="label quality histogram",
            xlabel="label quality score (low = likely wrong label)",
        )
    )
    top = d.get("top_issues", [])
    shown = top[:HTML_ROWS]
    body.append(kit.section("flagged", "Flagged rows"))
    body.append(
        f"<p>{c['flagged']:,} flagged; the {len(shown):,} lowest-quality are in this page, {PAGE_ROWS} a page "
        f"(every flagged row is in <a href='{e(issues_file)}'>{e(issues_file)}</a>). Matching: "
        "<span id='shown'></span>. <input class='search' id='q' placeholder='search text, id, label…'></p>"
    )
    rows = []
    for r in shown:
        src = (
            f"{r['source_file']}:{r['source_line']}"
            if r.get("source_line") is not None
            else f"{r['source_file']} row {r['source_row']}"
        )
        rows.append(
            (
                r["rank"],
                r["id"],
                r["given_label"],
                r["suggested_label"],
                r["suggested_prob"],
                r["label_quality"],
                src,
                f"<span class='excerpt'>{e(r.get('excerpt', ''))}</span>",
            )
        )
    body.append(
        kit.table(
            ["rank", "id", "given", "suggested", "p(suggested)", "quality", "source", "excerpt"],
            rows,
            numeric=[0, 4, 5],
            raw=[7],
            cls="sortable",
            table_id="issues",
            page_size=PAGE_ROWS,
            search_id="q",
            count_id="shown",
        )
    )
    if c["rejected"]:
        body.append(kit.section("rejects", "Rejected input"))
        body.append(
            kit.table(["reason", "rows"], sorted(d.get("rejected_by_reason", {}).items()), numeric=[1])
        )
        body.append(
            "<ul>"
            + "".join(f"<li><code>{e(s['error'])}</code></li>" for s in d.get("reject_samples", [])[:10])
            + "</ul>"
        )
    body.append(kit.section("run", "Run"))
    if d.get("inputs"):
        body.append(
            kit.table(
                ["input", "format", "compression", "bytes"],
                [(i["path"], i.get("format"), i.get("compression"), i.get("bytes")) for i in d["inputs"]],
                numeric=[3],
            )
        )
    timings = {k: v for k, v in d.get("timings", {}).items() if k != "total"}
    if timings:
        body.append(
            kit.hbars_svg(
                [(k, round(v, 3)) for k, v in timings.items()], title="seconds per stage", unit=" s"
            )
        )
    body.append(
        f"<p class='muted'>dataforge {e(d.get('dataforge_version', ''))}; machine-readable figures in "
        f"<a href='{e(files.get('json', 'report.json'))}'>report.json</a>.</p>"
    )
    toc = [
        ("classes", "classes"),
        ("matrix", "noise matrix"),
        ("quality", "quality"),
        ("flagged", "flagged rows"),
        ("run", "run"),
    ]
    return kit.page("Label noise report", body, subtitle=f"output <code>{e(d['output'])}</code>", toc=toc)
