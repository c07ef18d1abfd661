"""The noise report: ``report.json`` (machine-readable) and ``report.html`` (self-contained).

The HTML page needs no network: plots are inline SVG (estimated noise matrix heatmap, label
quality histogram, flagged rows per class), the flagged-row table is searchable and sortable with a
few lines of inline JavaScript, and all text is escaped.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
ISSUES_PARQUET = "issues.parquet"
HTML_ROWS = 2000  # flagged rows shown in the HTML table (all of them are in issues.parquet)


@dataclass
class NoiseReport:
    """What ``dataforge noise-report`` found; ``to_dict`` is ``report.json``.

    Counts always add up: ``rows_in == rows_used + rejected`` and, with a fix,
    ``rows_used == kept + dropped`` (relabelled rows are kept).
    """

    output: str
    rows_in: int
    rows_used: int
    rejected: int
    rejected_by_reason: dict[str, int]
    reject_samples: list[dict[str, Any]]
    label_col: str
    mode: str  # text | tabular | pred_probs
    model: str
    members: list[str]
    member_accuracy: dict[str, float]
    folds: int
    seed: int
    filter_by: str
    rank_by: str
    classes: list[str]
    class_counts: list[int]
    num_flagged: int
    num_issues_estimate: int
    health_score: float
    noise_matrix: list[list[float]]
    per_class: list[dict[str, Any]]
    overlapping: list[dict[str, Any]]
    quality_histogram: dict[str, list[float]]
    top_issues: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    num_outliers: int | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    fix: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    dataforge_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged_fraction(self) -> float:
        return self.num_flagged / self.rows_used if self.rows_used else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": 1,
            "kind": "noise_report",
            "output": self.output,
            "dataforge_version": self.dataforge_version,
            "counts": {
                "rows_in": self.rows_in,
                "rows_used": self.rows_used,
                "rejected": self.rejected,
                "flagged": self.num_flagged,
                "issues_estimate": self.num_issues_estimate,
                "outliers": self.num_outliers,
            },
            "rejected_by_reason": self.rejected_by_reason,
            "reject_samples": self.reject_samples,
            "label_col": self.label_col,
            "mode": self.mode,
            "model": {
                "name": self.model,
                "members": self.members,
                "accuracy_vs_given": self.member_accuracy,
                "folds": self.folds,
                "seed": self.seed,
                "earlier_rounds": self.rounds,
            },
            "filter_by": self.filter_by,
            "rank_by": self.rank_by,
            "health": {
                "overall_label_health_score": round(self.health_score, 6),
                "flagged_fraction": round(self.flagged_fraction, 6),
                "classes": self.classes,
                "class_counts": self.class_counts,
                "noise_matrix": self.noise_matrix,
                "noise_matrix_doc": "P(given label = row class | true label = column class)",
                "per_class": self.per_class,
                "overlapping_classes": self.overlapping,
            },
            "quality_histogram": self.quality_histogram,
            "top_issues": self.top_issues,
            "warnings": self.warnings,
            "fix": self.fix,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "files": self.files,
            "inputs": self.inputs,
            "config": self.config,
        }

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal."""
        lines = [
            f"rows in {self.rows_in:,} = used {self.rows_used:,} + rejected {self.rejected:,}",
            f"model {self.model} ({', '.join(f'{m} acc {a:.3f}' for m, a in self.member_accuracy.items()) or 'given pred_probs'}),"
            f" {self.folds} folds",
            f"flagged {self.num_flagged:,} label issues ({self.flagged_fraction:.1%}; cleanlab estimate {self.num_issues_estimate:,}),"
            f" label health {self.health_score:.3f}",
        ]
        if self.fix:
            f = self.fix
            lines.append(
                f"fix {f['mode']}: kept {f['kept']:,} (relabelled {f['relabelled']:,}) + dropped {f['dropped']:,} -> {f['output']}"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def histogram(values: np.ndarray, flagged: np.ndarray, *, bins: int = 20) -> dict[str, list[float]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    v = np.clip(values, 0.0, 1.0)
    all_counts, _ = np.histogram(v, bins=edges)
    flag_counts, _ = np.histogram(v[flagged], bins=edges)
    return {
        "edges": [round(float(e), 4) for e in edges],
        "all": [int(c) for c in all_counts],
        "flagged": [int(c) for c in flag_counts],
    }


# --------------------------------------------------------------------------- SVG plots


def _color(value: float) -> str:
    """White -> deep red for 0 -> 1."""
    v = min(max(value, 0.0), 1.0) ** 0.5
    r, g, b = 255, int(255 - 200 * v), int(255 - 210 * v)
    return f"rgb({r},{g},{b})"


def heatmap_svg(matrix: list[list[float]], labels: list[str], *, title: str) -> str:
    k = len(labels)
    cell = max(14, min(44, 560 // max(k, 1)))
    short = [lab if len(lab) <= 18 else lab[:17] + "…" for lab in labels]
    left = 8 + 7 * max((len(s) for s in short), default=4)
    top = left
    size_w = left + cell * k + 10
    size_h = top + cell * k + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{size_w}" height="{size_h}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="{size_h - 8}" font-size="12">columns: true label · rows: given label · value: P(given | true)</text>',
    ]
    for i, lab in enumerate(short):
        y = top + i * cell + cell * 0.65
        parts.append(
            f'<text x="{left - 4}" y="{y:.1f}" font-size="11" text-anchor="end">{html.escape(lab)}</text>'
        )
        x = left + i * cell + cell * 0.65
        parts.append(
            f'<text x="{x:.1f}" y="{top - 4}" font-size="11" transform="rotate(-60 {x:.1f} {top - 4})">{html.escape(lab)}</text>'
        )
    for i in range(k):
        for j in range(k):
            v = float(matrix[i][j])
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" fill="{_color(v)}" stroke="#ddd">'
                f"<title>given {html.escape(labels[i])} | true {html.escape(labels[j])}: {v:.3f}</title></rect>"
            )
            if cell >= 26:
                parts.append(
                    f'<text x="{left + j * cell + cell / 2:.1f}" y="{top + i * cell + cell * 0.62:.1f}" font-size="9" text-anchor="middle">{v:.2f}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(
    series: list[tuple[str, list[float], str]], edges: list[float], *, title: str, xlabel: str
) -> str:
    w, h, left, bottom = 620, 240, 50, 36
    n = len(edges) - 1
    top_val = max((max(vals) for _, vals, _ in series if vals), default=1) or 1
    bw = (w - left - 10) / max(n, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">'
    ]
    for _, vals, color in series:
        for i, v in enumerate(vals):
            bh = (h - bottom - 10) * (v / top_val)
            parts.append(
                f'<rect x="{left + i * bw + 1:.1f}" y="{h - bottom - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" fill="{color}">'
                f"<title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {int(v):,}</title></rect>"
            )
    for i in range(0, n + 1, max(1, n // 5)):
        parts.append(
            f'<text x="{left + i * bw:.1f}" y="{h - bottom + 14}" font-size="11" text-anchor="middle">{edges[i]:.1f}</text>'
        )
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="12">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="{left - 6}" y="16" font-size="11" text-anchor="end">{int(top_val):,}</text>')
    parts.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#333"/>')
    legend_x = w - 170
    for j, (name, _, color) in enumerate(series):
        parts.append(f'<rect x="{legend_x}" y="{8 + j * 16}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{17 + j * 16}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def class_bars_svg(per_class: list[dict[str, Any]]) -> str:
    w = 620
    row = 18
    h = 20 + row * len(per_class)
    top = max((r["examples"] for r in per_class), default=1) or 1
    left = 8 + 7 * max((min(len(r["class"]), 24) for r in per_class), default=4)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" role="img" aria-label="flagged rows per class">'
    ]
    for i, r in enumerate(per_class):
        y = 10 + i * row
        name = r["class"] if len(r["class"]) <= 24 else r["class"][:23] + "…"
        total = (w - left - 90) * r["examples"] / top
        flag = (w - left - 90) * r["flagged"] / top
        parts.append(
            f'<text x="{left - 4}" y="{y + 12}" font-size="11" text-anchor="end">{html.escape(name)}</text>'
        )
        parts.append(f'<rect x="{left}" y="{y}" width="{total:.1f}" height="{row - 4}" fill="#cfd8e3"/>')
        parts.append(f'<rect x="{left}" y="{y}" width="{flag:.1f}" height="{row - 4}" fill="#c0392b"/>')
        parts.append(
            f'<text x="{left + total + 4:.1f}" y="{y + 12}" font-size="11">{r["flagged"]:,} / {r["examples"]:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top}
th{background:#f4f6f8;cursor:pointer;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}.warn{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px;border-radius:4px;margin:4px 0}
#q{width:360px;padding:6px;font-size:14px}.excerpt{max-width:520px;white-space:pre-wrap;word-break:break-word}
.plot{background:#fff;border:1px solid #eee;margin:6px 0}
"""

_JS = """
const q=document.getElementById('q'),rows=[...document.querySelectorAll('#issues tbody tr')],cnt=document.getElementById('shown');
function filt(){const s=q.value.toLowerCase();let n=0;for(const r of rows){const m=!s||r.textContent.toLowerCase().includes(s);r.style.display=m?'':'none';if(m)n++;}cnt.textContent=n;}
q.addEventListener('input',filt);
document.querySelectorAll('table.sortable th').forEach((th,i)=>th.addEventListener('click',()=>{
 const tb=th.closest('table').tBodies[0],rs=[...tb.rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
 rs.sort((a,b)=>{const x=a.cells[i].dataset.v??a.cells[i].textContent,y=b.cells[i].dataset.v??b.cells[i].textContent;
  const nx=parseFloat(x),ny=parseFloat(y);const c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
 rs.forEach(r=>tb.appendChild(r));}));
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def render_html(report: NoiseReport) -> str:
    d = report.to_dict()
    c = d["counts"]
    hist = report.quality_histogram
    cards = [
        ("rows in", f"{c['rows_in']:,}"),
        ("used", f"{c['rows_used']:,}"),
        ("rejected", f"{c['rejected']:,}"),
        ("flagged", f"{c['flagged']:,} ({report.flagged_fraction:.1%})"),
        ("cleanlab estimate", f"{c['issues_estimate']:,}"),
        ("label health", f"{report.health_score:.3f}"),
    ]
    if report.num_outliers is not None:
        cards.append(("outliers", f"{report.num_outliers:,}"))
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dataforge noise report: {_e(report.output)}</title><style>{_CSS}</style></head><body>",
        "<h1>Label noise report</h1>",
        f"<p>Label column <code>{_e(report.label_col)}</code>, {len(report.classes)} classes; model <b>{_e(report.model)}</b>"
        f" ({_e(', '.join(report.members) or 'given probabilities')}), {report.folds}-fold cross-validation, seed {report.seed};"
        f" cleanlab <code>filter_by={_e(report.filter_by)}</code>, ranked by <code>{_e(report.rank_by)}</code>.</p>",
        "<div class='cards'>"
        + "".join(f"<div class='card'>{_e(k)}<b>{_e(v)}</b></div>" for k, v in cards)
        + "</div>",
    ]
    out += [f"<div class='warn'>{_e(w)}</div>" for w in report.warnings]
    if report.member_accuracy:
        out.append(
            "<p>Out-of-sample accuracy against the given labels: "
            + ", ".join(f"{_e(m)} {a:.3f}" for m, a in report.member_accuracy.items())
            + ". Detection is only as good as this model: review the flags, do not trust them blindly.</p>"
        )
    if report.rounds:
        out.append(
            "<p>Re-scored: "
            + ", ".join(f"round {r['round']} flagged {r['flagged']:,}" for r in report.rounds)
            + f"; the final round trained without those rows and flagged {report.num_flagged:,}.</p>"
        )
    if report.fix:
        f = report.fix
        out.append(
            f"<h2>Fix applied: {_e(f['mode'])}</h2><p>kept {f['kept']:,} (of which relabelled {f['relabelled']:,}),"
            f" dropped {f['dropped']:,} with reason <code>label_issue</code>; shards in <code>{_e(f['output'])}</code>."
            f" Relabel needs the suggested label's probability ≥ {f['min_confidence']}.</p>"
        )
    out.append("<h2>Summary by class</h2>")
    out.append(class_bars_svg(report.per_class))
    out.append(
        "<table class='sortable'><thead><tr><th>class</th><th>examples</th><th>flagged</th><th>label noise</th>"
        "<th>inverse label noise</th><th>label quality</th></tr></thead><tbody>"
    )
    for r in report.per_class:
        out.append(
            f"<tr><td>{_e(r['class'])}</td><td class='num'>{r['examples']:,}</td><td class='num'>{r['flagged']:,}</td>"
            f"<td class='num'>{r['label_noise']:.3f}</td><td class='num'>{r['inverse_label_noise']:.3f}</td>"
            f"<td class='num'>{r['label_quality']:.3f}</td></tr>"
        )
    out.append("</tbody></table>")
    if report.overlapping:
        out.append(
            "<h2>Most confused class pairs</h2><table><thead><tr><th>class A</th><th>class B</th><th>examples</th><th>joint probability</th></tr></thead><tbody>"
        )
        for r in report.overlapping[:10]:
            out.append(
                f"<tr><td>{_e(r['class_a'])}</td><td>{_e(r['class_b'])}</td><td class='num'>{r['num_overlapping']:,}</td>"
                f"<td class='num'>{r['joint_probability']:.4f}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append("<h2>Estimated noise matrix</h2>")
    out.append(heatmap_svg(report.noise_matrix, report.classes, title="estimated noise matrix"))
    out.append("<h2>Label quality scores</h2>")
    out.append(
        bars_svg(
            [("all rows", hist["all"], "#9fb3c8"), ("flagged", hist["flagged"], "#c0392b")],
            hist["edges"],
            title="label quality histogram",
            xlabel="label quality score (low = likely wrong label)",
        )
    )
    shown = report.top_issues[:HTML_ROWS]
    out.append(
        f"<h2>Flagged rows</h2><p>{len(report.top_issues):,} flagged; the {len(shown):,} lowest-quality are listed here"
        f" (every row is in <code>{ISSUES_PARQUET}</code>). Showing <span id='shown'>{len(shown)}</span>."
        " <input id='q' placeholder='search text, id, label…'></p>"
    )
    out.append(
        "<table id='issues' class='sortable'><thead><tr><th>rank</th><th>id</th><th>given</th><th>suggested</th>"
        "<th>p(suggested)</th><th>quality</th><th>source</th><th>excerpt</th></tr></thead><tbody>"
    )
    for r in shown:
        src = (
            f"{r['source_file']}:{r['source_line']}"
            if r.get("source_line") is not None
            else f"{r['source_file']}#row{r['source_row']}"
        )
        out.append(
            f"<tr><td class='num'>{r['rank']}</td><td>{_e(r['id'])}</td><td>{_e(r['given_label'])}</td>"
            f"<td>{_e(r['suggested_label'])}</td><td class='num'>{r['suggested_prob']:.3f}</td>"
            f"<td class='num' data-v='{r['label_quality']:.6f}'>{r['label_quality']:.4f}</td><td>{_e(src)}</td>"
            f"<td class='excerpt'>{_e(r.get('excerpt', ''))}</td></tr>"
        )
    out.append("</tbody></table>")
    if report.rejected:
        out.append(
            "<h2>Rejected input</h2><table><thead><tr><th>reason</th><th>rows</th></tr></thead><tbody>"
        )
        out += [
            f"<tr><td>{_e(k)}</td><td class='num'>{v:,}</td></tr>"
            for k, v in report.rejected_by_reason.items()
        ]
        out.append("</tbody></table><ul>")
        out += [f"<li><code>{_e(s['error'])}</code></li>" for s in report.reject_samples[:10]]
        out.append("</ul>")
    out.append(
        f"<p style='color:#777;font-size:12px'>dataforge {_e(report.dataforge_version)} · timings: "
        + ", ".join(f"{_e(k)} {v:.1f} s" for k, v in report.timings.items())
        + "</p>"
    )
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out)


def to_json(report: NoiseReport) -> str:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(report.to_dict()), indent=2, ensure_ascii=False) + "\n"


def load_report(folder: str | Path) -> dict[str, Any]:
    """Read ``FOLDER/report.json`` of a noise report."""
    return json.loads((Path(folder) / REPORT_JSON).read_text(encoding="utf-8"))
