"""Building blocks of the self-contained HTML reports: page shell, cards, tables, inline SVG charts,
highlighted excerpts and side-by-side diffs.

Everything here returns strings. Pages need no network: the CSS and the few lines of JavaScript
(sortable, searchable, paginated tables) are inline, charts are inline SVG, and every piece of
data is escaped with :func:`esc`. Output depends only on the arguments (no clocks, no randomness),
so a report rebuilt from the same run files is identical.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

REPORT_HTML = "report.html"

# --------------------------------------------------------------------------- basics


def esc(value: Any) -> str:
    """HTML-escape ``value`` (quotes included)."""
    return html.escape(str(value), quote=True)


def num(value: Any) -> str:
    """A count with thousands separators; floats to 4 significant digits; ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return esc(value)


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg2:#f6f8fa;--red:#c0392b;--blue:#3b6ea5;--hl:#ffe08a}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:var(--fg);padding:0 16px;line-height:1.45}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}code{background:var(--bg2);padding:0 3px;border-radius:3px;font-size:12.5px}
nav.toc{font-size:13px;margin:8px 0 0}nav.toc a{margin-right:12px;color:var(--blue);text-decoration:none}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid var(--line);padding:4px 6px;vertical-align:top}
th{background:var(--bg2);text-align:left}table.sortable th{cursor:pointer}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card small{color:var(--muted)}
.ok{color:#1a7f37}.bad{color:var(--red)}.muted{color:var(--muted)}
.warn{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px;border-radius:4px;margin:4px 0}
.plot{background:#fff;border:1px solid #eee;margin:6px 0;max-width:100%;height:auto}
.sample{border:1px solid var(--line);border-radius:6px;margin:8px 0;padding:6px 10px}
.sample .meta{font-size:12px;color:var(--muted);margin-bottom:4px}
.text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;max-height:320px;overflow:auto;background:var(--bg2);padding:6px;border-radius:4px}
mark{background:var(--hl);padding:0 1px}.diff{display:grid;grid-template-columns:1fr 1fr;gap:8px}
.diff del{background:#ffd7d5;text-decoration:none}.diff ins{background:#ccffd8;text-decoration:none}
.excerpt{display:block;max-width:520px;max-height:140px;overflow:auto;white-space:pre-wrap;word-break:break-word}
.pager{font-size:13px;margin:4px 0 12px}.pager button{margin:0 6px}input.search{width:360px;padding:5px;font-size:14px}
details{margin:6px 0}summary{cursor:pointer}
footer{color:var(--muted);font-size:12px;margin-top:40px;border-top:1px solid var(--line);padding-top:8px}
"""

# Tables with class "sortable" sort on a header click (numbers by data-v or value); tables with
# data-page="N" show N rows a page with a pager; data-search="ID" ties a search box to a table.
JS = """
(function(){
document.querySelectorAll('table[data-page],table.sortable').forEach(function(t){
 var size=parseInt(t.dataset.page||'0',10)||1e9,body=t.tBodies[0];if(!body)return;
 var rows=Array.prototype.slice.call(body.rows),matched=rows,page=0,info=null,prev=null,next=null;
 if(t.dataset.page){var nav=document.createElement('div');nav.className='pager';
  prev=document.createElement('button');prev.textContent='\\u2190 prev';next=document.createElement('button');next.textContent='next \\u2192';
  info=document.createElement('span');nav.appendChild(prev);nav.appendChild(info);nav.appendChild(next);t.parentNode.insertBefore(nav,t.nextSibling);
  prev.addEventListener('click',function(){page--;draw();});next.addEventListener('click',function(){page++;draw();});}
 function draw(){var pages=Math.max(1,Math.ceil(matched.length/size));page=Math.max(0,Math.min(page,pages-1));
  rows.forEach(function(r){r.style.display='none';});matched.slice(page*size,(page+1)*size).forEach(function(r){r.style.display='';});
  if(info){info.textContent='page '+(page+1)+' of '+pages+' ('+matched.length.toLocaleString()+' rows)';prev.disabled=page===0;next.disabled=page>=pages-1;}
  var c=t.dataset.count&&document.getElementById(t.dataset.count);if(c)c.textContent=matched.length.toLocaleString();}
 var q=t.dataset.search&&document.getElementById(t.dataset.search);
 if(q)q.addEventListener('input',function(){var s=q.value.toLowerCase();matched=rows.filter(function(r){return !s||r.textContent.toLowerCase().indexOf(s)>=0;});page=0;draw();});
 if(t.classList.contains('sortable'))Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){
  var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
  function key(r){var c=r.cells[i];return c?(c.dataset.v!==undefined?c.dataset.v:c.textContent):'';}
  rows.sort(function(a,b){var x=key(a),y=key(b),nx=parseFloat(x),ny=parseFloat(y);var d=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?d:-d;});
  rows.forEach(function(r){body.appendChild(r);});var set=new Set(matched);matched=rows.filter(function(r){return set.has(r);});page=0;draw();});});
 draw();});
})();
"""


def page(title: str, body: Iterable[str], *, subtitle: str = "", toc: Sequence[tuple[str, str]] = ()) -> str:
    """A whole HTML document: inline CSS, the body parts, inline JS."""
    nav = ""
    if toc:
        nav = "<nav class='toc'>" + "".join(f"<a href='#{esc(a)}'>{esc(t)}</a>" for a, t in toc) + "</nav>"
    head = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        # no network, ever: the page may load only itself, inline styles and inline scripts
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
    )
    sub = f"<p class='muted'>{subtitle}</p>" if subtitle else ""
    return (
        "\n".join([head, f"<h1>{esc(title)}</h1>", sub, nav, *body, f"<script>{JS}</script></body></html>"])
        + "\n"
    )


def section(anchor: str, title: str) -> str:
    return f"<h2 id='{esc(anchor)}'>{esc(title)}</h2>"


def cards(items: Iterable[tuple[str, str]], *, cls: str = "") -> str:
    """Big-number cards; values are already formatted (escaped here)."""
    return (
        f"<div class='cards {cls}'>"
        + "".join(f"<div class='card'>{esc(k)}<b>{esc(v)}</b></div>" for k, v in items)
        + "</div>"
    )


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    raw: Iterable[int] = (),
    cls: str = "",
    table_id: str = "",
    page_size: int = 0,
    search_id: str = "",
    count_id: str = "",
) -> str:
    """A table; cells in ``raw`` columns are trusted HTML, others are escaped (numbers formatted)."""
    numeric, raw = set(numeric), set(raw)
    attrs = f" class='{esc(cls)}'" if cls else ""
    attrs += f" id='{esc(table_id)}'" if table_id else ""
    attrs += f" data-page='{page_size}'" if page_size else ""
    attrs += f" data-search='{esc(search_id)}'" if search_id else ""
    attrs += f" data-count='{esc(count_id)}'" if count_id else ""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    out = [f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i in raw:
                cells.append(f"<td>{v}</td>")
            elif i in numeric:
                dv = f" data-v='{v}'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
                cells.append(f"<td class='num'{dv}>{num(v)}</td>")
            else:
                cells.append(f"<td>{esc('' if v is None else v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kv_table(items: Iterable[tuple[str, Any]]) -> str:
    return table(["", ""], [(k, v) for k, v in items])


# --------------------------------------------------------------------------- SVG charts

PALETTE = ["#3b6ea5", "#c0392b", "#e08e0b", "#2e8b57", "#8e44ad", "#16a085", "#d35400", "#7f8c8d"]


def _svg_open(w: int, h: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>'
    )


def hbars_svg(
    items: Sequence[tuple[str, float]], *, title: str, color: str = "#3b6ea5", unit: str = ""
) -> str:
    """Horizontal bars, one per (label, value), value printed at the bar's end."""
    row = 20
    w = 760
    h = 16 + row * max(len(items), 1)
    labels = [short(str(lab), 40) for lab, _ in items]
    left = 12 + int(6.6 * max((len(s) for s in labels), default=4))
    top = max((v for _, v in items), default=0) or 1
    span = w - left - 110
    parts = [_svg_open(w, h, title)]
    for i, ((lab, v), s) in enumerate(zip(items, labels)):
        y = 8 + i * row
        bw = span * (v / top)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="12" text-anchor="end">{esc(s)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 2}" width="{bw:.1f}" height="{row - 6}" fill="{color}">'
            f"<title>{esc(lab)}: {num(v)}{esc(unit)}</title></rect>"
        )
        parts.append(f'<text x="{left + bw + 5:.1f}" y="{y + 13}" font-size="11">{num(v)}{esc(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def funnel_svg(steps: Sequence[tuple[str, int, int]], *, title: str = "rows after each step") -> str:
    """One bar per step: rows left (blue) and rows removed by that step (red), on one scale."""
    row = 26
    w = 760
    h = 30 + row * max(len(steps), 1)
    left = 12 + int(6.6 * max((len(s) for s, _, _ in steps), default=4))
    top = max((left_ + gone for _, left_, gone in steps), default=0) or 1
    span = w - left - 170
    parts = [_svg_open(w, h, title)]
    for i, (name, kept, gone) in enumerate(steps):
        y = 8 + i * row
        kw, gw = span * kept / top, span * gone / top
        parts.append(f'<text x="{left - 6}" y="{y + 16}" font-size="12" text-anchor="end">{esc(name)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{kw:.1f}" height="{row - 8}" fill="#3b6ea5">'
            f"<title>{esc(name)}: {kept:,} rows left</title></rect>"
        )
        if gone:
            parts.append(
                f'<rect x="{left + kw:.1f}" y="{y + 3}" width="{max(gw, 1):.1f}" height="{row - 8}" fill="#c0392b">'
                f"<title>{esc(name)}: {gone:,} rows removed</title></rect>"
            )
        label = f"{kept:,}" + (f"  (−{gone:,})" if gone else "")
        parts.append(f'<text x="{left + kw + gw + 6:.1f}" y="{y + 16}" font-size="11">{esc(label)}</text>')
    y = h - 10
    parts.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="#3b6ea5"/>')
    parts.append(f'<text x="{left + 14}" y="{y}" font-size="11">rows left</text>')
    parts.append(f'<rect x="{left + 90}" y="{y - 9}" width="10" height="10" fill="#c0392b"/>')
    parts.append(f'<text x="{left + 104}" y="{y}" font-size="11">removed by the step</text>')
    parts.append("</svg>")
    return "".join(parts)


def columns_svg(items: Sequence[tuple[str, float]], *, title: str, xlabel: str, log: bool = False) -> str:
    """Vertical bars over categorical labels (e.g. a cluster-size histogram); ``log`` scales heights."""
    import math

    w, h, left, bottom = 760, 260, 60, 44
    n = max(len(items), 1)
    bw = (w - left - 10) / n

    def scale(v: float) -> float:
        return math.log10(1 + v) if log else v

    top = max((scale(v) for _, v in items), default=0) or 1
    parts = [_svg_open(w, h, title)]
    for i, (lab, v) in enumerate(items):
        bh = (h - bottom - 20) * scale(v) / top
        x = left + i * bw
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{h - bottom - bh:.1f}" width="{max(bw - 4, 1):.1f}" height="{bh:.1f}" fill="#3b6ea5">'
            f"<title>{esc(lab)}: {num(v)}</title></rect>"
        )
        parts.append(
            f'<text x="{x + bw / 2:.1f}" y="{h - bottom - bh - 3:.1f}" font-size="10" text-anchor="middle">{num(v)}</text>'
        )
        parts.append(
            f'<text x="{x + bw / 2:.1f}" y="{h - bottom + 14}" font-size="11" text-anchor="middle">{esc(lab)}</text>'
        )
    parts.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#333"/>')
    parts.append(
        f'<text x="{left}" y="{h - 8}" font-size="12">{esc(xlabel)}{" (log-scaled heights)" if log else ""}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def curve_svg(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    marker: float | None = None,
    marker_label: str = "",
) -> str:
    """A line through ``points`` (x and y in [0, 1]) with an optional vertical marker line."""
    w, h, left, bottom, top_pad = 560, 300, 50, 40, 14
    pw, ph = w - left - 16, h - bottom - top_pad

    def sx(x: float) -> float:
        return left + pw * x

    def sy(y: float) -> float:
        return top_pad + ph * (1 - y)

    parts = [_svg_open(w, h, title)]
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{sx(0)}" y1="{sy(t):.1f}" x2="{sx(1)}" y2="{sy(t):.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" font-size="10" text-anchor="end">{t:g}</text>'
        )
        parts.append(
            f'<text x="{sx(t):.1f}" y="{h - bottom + 14}" font-size="10" text-anchor="middle">{t:g}</text>'
        )
    pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(points))
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#3b6ea5" stroke-width="2"/>')
    for x, y in points:
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="#3b6ea5"><title>{x:g}: {y:.4f}</title></circle>'
        )
    if marker is not None:
        parts.append(
            f'<line x1="{sx(marker):.1f}" y1="{sy(0):.1f}" x2="{sx(marker):.1f}" y2="{sy(1):.1f}" '
            'stroke="#c0392b" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text x="{sx(marker) + 4:.1f}" y="{sy(0.06):.1f}" font-size="11" fill="#c0392b">{esc(marker_label)}</text>'
        )
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="12">{esc(xlabel)}</text>')
    parts.append(
        f'<text x="12" y="{top_pad + ph / 2:.0f}" font-size="12" transform="rotate(-90 12 {top_pad + ph / 2:.0f})" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _heat(value: float) -> str:
    """White -> deep red for 0 -> 1."""
    v = min(max(value, 0.0), 1.0) ** 0.5
    return f"rgb(255,{int(255 - 200 * v)},{int(255 - 210 * v)})"


def heatmap_svg(
    matrix: Sequence[Sequence[float]], labels: Sequence[str], *, title: str, caption: str = ""
) -> str:
    """A k x k matrix of values in [0, 1] (rows and columns share ``labels``)."""
    k = len(labels)
    cell = max(14, min(44, 560 // max(k, 1)))
    shorts = [short(lab, 18) for lab in labels]
    left = 8 + 7 * max((len(s) for s in shorts), default=4)
    top = left
    w, h = left + cell * k + 10, top + cell * k + 40
    parts = [_svg_open(w, h, title)]
    if caption:
        parts.append(f'<text x="{left}" y="{h - 8}" font-size="12">{esc(caption)}</text>')
    for i, lab in enumerate(shorts):
        y = top + i * cell + cell * 0.65
        parts.append(f'<text x="{left - 4}" y="{y:.1f}" font-size="11" text-anchor="end">{esc(lab)}</text>')
        x = left + i * cell + cell * 0.65
        parts.append(
            f'<text x="{x:.1f}" y="{top - 4}" font-size="11" transform="rotate(-60 {x:.1f} {top - 4})">{esc(lab)}</text>'
        )
    for i in range(k):
        for j in range(k):
            v = float(matrix[i][j])
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" fill="{_heat(v)}" stroke="#ddd">'
                f"<title>{esc(labels[i])} / {esc(labels[j])}: {v:.3f}</title></rect>"
            )
            if cell >= 26:
                parts.append(
                    f'<text x="{left + j * cell + cell / 2:.1f}" y="{top + i * cell + cell * 0.62:.1f}" '
                    f'font-size="9" text-anchor="middle">{v:.2f}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(
    series: Sequence[tuple[str, Sequence[float], str]], edges: Sequence[float], *, title: str, xlabel: str
) -> str:
    """Overlaid histograms over shared numeric bin ``edges``; series are (name, counts, color)."""
    w, h, left, bottom = 620, 240, 50, 36
    n = len(edges) - 1
    top_val = max((max(vals) for _, vals, _ in series if len(vals)), default=1) or 1
    bw = (w - left - 10) / max(n, 1)
    parts = [_svg_open(w, h, title)]
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
    parts.append(f'<text x="{left}" y="{h - 6}" font-size="12">{esc(xlabel)}</text>')
    parts.append(f'<text x="{left - 6}" y="16" font-size="11" text-anchor="end">{int(top_val):,}</text>')
    parts.append(f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="#333"/>')
    legend_x = w - 170
    for j, (name, _, color) in enumerate(series):
        parts.append(f'<rect x="{legend_x}" y="{8 + j * 16}" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{17 + j * 16}" font-size="11">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- text


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def highlighted(text: str, spans: Iterable[tuple[int, int]], *, max_chars: int = 2400) -> str:
    """``text`` escaped, with ``spans`` wrapped in ``<mark>``; long texts are cut to a window that
    starts near the first highlight (cuts are marked with an ellipsis and the character offset)."""
    spans = merge_spans(spans)
    start = 0
    if len(text) > max_chars and spans:
        start = max(0, min(spans[0][0] - 200, len(text) - max_chars))
        nl = text.rfind("\n", max(0, start - 120), start)
        start = nl + 1 if nl >= 0 else start
    end = min(len(text), start + max_chars)
    out = [f"<span class='muted'>[… {start:,} characters before]</span> " if start else ""]
    pos = start
    for s, e in spans:
        if e <= start or s >= end:
            continue
        s, e = max(s, start), min(e, end)
        out.append(esc(text[pos:s]))
        out.append(f"<mark>{esc(text[s:e])}</mark>")
        pos = e
    out.append(esc(text[pos:end]))
    if end < len(text):
        out.append(f" <span class='muted'>[… {len(text) - end:,} characters more]</span>")
    return "".join(out)


_TOKEN = re.compile(
    r"\S+\s*|\s+"
)  # a word with the spaces after it (whitespace-only tokens make difflib slow)


def diff_html(left: str, right: str, *, max_chars: int = 3000, names: tuple[str, str] = ("", "")) -> str:
    """Side-by-side word diff: words only in ``left`` are struck in red, only in ``right`` green."""
    a = _TOKEN.findall(left[:max_chars])
    b = _TOKEN.findall(right[:max_chars])
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    la: list[str] = []
    rb: list[str] = []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        sa, sb = "".join(a[i1:i2]), "".join(b[j1:j2])
        if op == "equal":
            la.append(esc(sa))
            rb.append(esc(sb))
        else:
            if sa:
                la.append(f"<del>{esc(sa)}</del>")
            if sb:
                rb.append(f"<ins>{esc(sb)}</ins>")
    more_a = (
        f" <span class='muted'>[… {len(left) - max_chars:,} more]</span>" if len(left) > max_chars else ""
    )
    more_b = (
        f" <span class='muted'>[… {len(right) - max_chars:,} more]</span>" if len(right) > max_chars else ""
    )
    return (
        "<div class='diff'>"
        f"<div><div class='meta'>{esc(names[0])}</div><div class='text'>{''.join(la)}{more_a}</div></div>"
        f"<div><div class='meta'>{esc(names[1])}</div><div class='text'>{''.join(rb)}{more_b}</div></div>"
        "</div>"
    )


def series_svg(
    ys: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
    hline_label: str = "",
) -> str:
    """A line over ``ys`` (x = 1..n) on axes scaled to the data, with an optional horizontal line."""
    w, h, left, bottom, top_pad = 760, 300, 60, 40, 14
    pw, ph = w - left - 16, h - bottom - top_pad
    vals = [float(y) for y in ys] + ([float(hline)] if hline is not None else [])
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(ys), 2)

    def sx(i: float) -> float:
        return left + pw * (i - 1) / (n - 1)

    def sy(y: float) -> float:
        return top_pad + ph * (1 - (y - lo) / (hi - lo))

    parts = [_svg_open(w, h, title)]
    for k in range(5):
        y = lo + (hi - lo) * k / 4
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{w - 16}" y2="{sy(y):.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>'
        )
    for k in range(5):
        i = 1 + (n - 1) * k / 4
        parts.append(
            f'<text x="{sx(i):.1f}" y="{h - bottom + 14}" font-size="10" text-anchor="middle">{round(i)}</text>'
        )
    if ys:
        pts = " ".join(f"{sx(i + 1):.1f},{sy(float(y)):.1f}" for i, y in enumerate(ys))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#3b6ea5" stroke-width="1.5"/>')
    if hline is not None:
        parts.append(
            f'<line x1="{left}" y1="{sy(hline):.1f}" x2="{w - 16}" y2="{sy(hline):.1f}" stroke="#c0392b" '
            'stroke-dasharray="5 3"/>'
        )
        parts.append(
            f'<text x="{w - 20}" y="{sy(hline) - 4:.1f}" font-size="11" fill="#c0392b" text-anchor="end">'
            f"{esc(hline_label)}</text>"
        )
    parts.append(f'<text x="{left}" y="{h - 8}" font-size="12">{esc(xlabel)}</text>')
    parts.append(
        f'<text x="14" y="{top_pad + ph / 2:.0f}" font-size="12" transform="rotate(-90 14 {top_pad + ph / 2:.0f})" '
        f'text-anchor="middle">{esc(ylabel)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
