"""``report.html`` of a run (clean, dedup, pipeline, normalize, curriculum), built from the run's files.

Input is the output folder: ``report.json`` plus the shards it lists (dropped rows for samples,
data shards for duplicate representatives and cluster sizes, ``clusters/`` when written). Reading is
bounded: samples stop once every reason has a few, and only the columns needed are read.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from dataforge.html import kit
from dataforge.html.highlight import placeholder_spans, spans_for

log = logging.getLogger(__name__)

SAMPLES_PER_REASON = 3
LARGEST_CLUSTERS = 10
CLUSTER_DIFFS = 3
INPUT_PAGE = 25
INPUT_ROWS = 2000  # input files listed in the page (every one is in report.json)

_SIZE_BUCKETS = [
    (1, 1),
    (2, 2),
    (3, 3),
    (4, 4),
    (5, 9),
    (10, 19),
    (20, 49),
    (50, 99),
    (100, 999),
    (1000, None),
]


# --------------------------------------------------------------------------- reading shards


def _scan(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(path) if path.suffix == ".parquet" else pl.scan_ipc(path)


class FileShards:
    """How the page reads the shards ``report.json`` lists: from their files in ``out``.

    Every read the page makes goes through these four methods, so a caller that already holds the
    same rows as Arrow tables can hand them over instead (:class:`TableShards`) and get the same page.
    """

    def __init__(self, out: Path) -> None:
        self.out = out

    def names(self, entry: dict[str, Any]) -> list[str] | None:
        """The shard's column names, or None when its file is missing."""
        p = self.out / entry["path"]
        return _scan(p).collect_schema().names() if p.is_file() else None

    def read(self, entry: dict[str, Any], columns: list[str]) -> pl.DataFrame:
        """Every row of ``columns``."""
        return _scan(self.out / entry["path"]).select(columns).collect()

    def take(self, entry: dict[str, Any], columns: list[str], rows: list[int]) -> pl.DataFrame:
        """Rows at the ascending positions ``rows``, in that order."""
        return (
            _scan(self.out / entry["path"])
            .select(columns)
            .with_row_index("__i")
            .filter(pl.col("__i").is_in(rows))
            .collect()
            .sort("__i")
            .drop("__i")
        )

    def matching(
        self, entry: dict[str, Any], names: list[str], columns: list[str], key: str, where: pl.Expr
    ) -> Iterator[pl.DataFrame]:
        """The rows where ``where`` (over column ``key``) holds, in order, maybe in several frames.

        Column ``key`` is read first; from Arrow shards one record batch at a time, and only the
        batches holding a match are read (and decompressed) in full, so a caller that stops early
        reads little."""
        p = self.out / entry["path"]
        if p.suffix == ".parquet":
            lf = _scan(p)
            idx = lf.select(key).with_row_index("__i").filter(where).select("__i").collect()["__i"]
            if not idx.is_empty():
                yield self.take(entry, columns, idx.to_list())
            return
        import pyarrow.ipc as ipc

        def reader(src: pa.MemoryMappedFile, fields: list[str]) -> ipc.RecordBatchFileReader:
            wanted = sorted({names.index(f) for f in fields})
            return ipc.open_file(src, options=ipc.IpcReadOptions(included_fields=wanted))

        with pa.memory_map(str(p)) as src:
            keys, full = reader(src, [key]), reader(src, columns)
            for i in range(keys.num_record_batches):
                mask = pl.DataFrame(pl.from_arrow(keys.get_batch(i))).select(where.alias("m"))["m"]
                if mask.any():
                    yield pl.DataFrame(pl.from_arrow(full.get_batch(i))).filter(mask).select(columns)


class ShardRows(Protocol):
    """One shard's rows held elsewhere: its column names, and any of its columns for every row or
    for the rows at ascending positions (``dataforge.stages.AssembledShard``)."""

    @property
    def names(self) -> list[str]: ...

    def __call__(self, columns: list[str], rows: list[int] | None = None) -> pa.Table: ...


class TableShards(FileShards):
    """The listed shards read from ``shards`` (by entry path; others from their files).

    The runner builds the page this way from the memory-mapped work files its shards were just
    written from (the same rows, renamed and conformed the same way), so the page costs no
    decompression of the shards it wrote; ``dataforge report OUT`` reads the files and gives the
    same page."""

    def __init__(self, out: Path, shards: dict[str, ShardRows]) -> None:
        super().__init__(out)
        self._shards = shards

    def names(self, entry: dict[str, Any]) -> list[str] | None:
        s = self._shards.get(entry["path"])
        return super().names(entry) if s is None else s.names

    def read(self, entry: dict[str, Any], columns: list[str]) -> pl.DataFrame:
        s = self._shards.get(entry["path"])
        return super().read(entry, columns) if s is None else _polars(s(columns))

    def take(self, entry: dict[str, Any], columns: list[str], rows: list[int]) -> pl.DataFrame:
        s = self._shards.get(entry["path"])
        return super().take(entry, columns, rows) if s is None else _polars(s(columns, rows))

    def matching(
        self, entry: dict[str, Any], names: list[str], columns: list[str], key: str, where: pl.Expr
    ) -> Iterator[pl.DataFrame]:
        s = self._shards.get(entry["path"])
        if s is None:
            yield from super().matching(entry, names, columns, key, where)
            return
        idx = _polars(s([key])).select(where.alias("m"))["m"].arg_true().to_list()
        # a few matches at a time (first a few, then more): callers stop once they have enough
        lo, step = 0, 8
        while lo < len(idx):
            yield self.take(entry, columns, idx[lo : lo + step])
            lo, step = lo + step, min(step * 4, 4096)


def _polars(table: pa.Table) -> pl.DataFrame:
    return pl.DataFrame(pl.from_arrow(table))


def _frames(
    src: FileShards,
    entries: list[dict[str, Any]],
    columns: list[str],
    *,
    where: pl.Expr | None = None,
    key: str = "",
) -> Iterator[pl.DataFrame]:
    """Each listed shard in order, with those of ``columns`` it has (missing files are skipped).

    With ``where`` (an expression over column ``key``) only matching rows come back, and the wide
    columns (text) are read only for the rows (from files: the record batches) that match."""
    for e in entries:
        names = src.names(e)
        if names is None:
            log.warning("report: %s is listed in report.json but missing", src.out / e["path"])
            continue
        cols = [c for c in columns if c in names]
        if not cols:
            continue
        if where is None:
            yield src.read(e, cols)
            continue
        if key not in names:
            return
        yield from src.matching(e, names, cols, key, where)


def _schema_of(src: FileShards, entries: list[dict[str, Any]]) -> list[str]:
    for e in entries:
        names = src.names(e)
        if names is not None:
            return names
    return []


# --------------------------------------------------------------------------- page


def render_run(out: str | Path, report: dict[str, Any], *, shards: FileShards | None = None) -> str:
    """The whole ``report.html`` of a run folder whose ``report.json`` is ``report``.

    ``shards`` reads the shards it lists (default: from their files in ``out``)."""
    src = shards or FileShards(Path(out))
    name = report.get("name", "")
    kind = _kind(report)
    c = report["counts"]
    adds_up = c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"]
    body: list[str] = []
    toc: list[tuple[str, str]] = [("funnel", "funnel")]
    status = report.get("status", "ok")
    body.append(
        kit.cards(
            [
                ("rows in", f"{c['rows_in']:,}"),
                ("kept", f"{c['kept']:,}"),
                ("dropped", f"{c['dropped']:,}"),
                ("rejected (malformed)", f"{c['rejected']:,}"),
                ("status", status),
                ("peak memory", f"{report.get('peak_rss_mb', 0):,.0f} MiB"),
            ]
        )
    )
    check = (
        f"<p class='ok'>✓ counts add up: {c['rows_in']:,} in = {c['kept']:,} kept + {c['dropped']:,} dropped"
        f" + {c['rejected']:,} rejected.</p>"
        if adds_up
        else f"<p class='bad'>✗ counts do not add up: {c['rows_in']:,} in ≠ {c['kept']:,} + {c['dropped']:,}"
        f" + {c['rejected']:,}.</p>"
    )
    body.append(check)
    if status == "reject_rate_exceeded":
        body.append(
            f"<div class='warn'>Reject rate {report.get('reject_rate', 0):.2%} is above max_reject_rate "
            f"{report.get('max_reject_rate')}: the run exited non-zero after writing its outputs.</div>"
        )
    if status == "input_truncated":
        n = report.get("ledger", {}).get("rejected_by_reason", {}).get("truncated", 0) or "some"
        body.append(
            f"<div class='warn'>Input ended early {n} time(s) (a truncated or corrupt file): the records after "
            "the break could not be read and are not in these counts (rejects/, reason "
            "<code>truncated</code>). The run exited non-zero after writing its outputs.</div>"
        )
    body += _funnel(report)
    samples = _samples(src, report)
    minhash = [
        (step, info["finalize"])
        for step, info in report.get("global_info", {}).items()
        if step.startswith("dedup.minhash") and isinstance(info, dict) and "finalize" in info
    ]
    sizes = _cluster_sizes(src, report) if minhash else _no_sizes()
    hist = dict(sizes.group_by("cluster_size").len().iter_rows())
    top = [
        (int(s), int(cid))
        for cid, s in sizes.filter(pl.col("cluster_size") > 1)
        .sort(["cluster_size", "cluster_id"], descending=[True, False])
        .head(LARGEST_CLUSTERS)
        .iter_rows()
    ]
    near = {
        int(r["cluster_id"])
        for rows in samples.values()
        for r in rows
        if r.get("cluster_id") is not None and r.get("drop_reason") == "near_duplicate"
    }
    # one pass over the data shards for every kept representative the page shows
    reps = _representatives(src, report, near | {cid for _, cid in top})
    if any(s["dropped"] for s in report["ledger"]["steps"]):
        toc.append(("reasons", "drop reasons"))
        body += _reasons(report)
        if kind == "curriculum":  # not selected is not removed: those rows stay in their sources
            body.append(
                "<p>A curriculum drops no data: rows outside a stage's <code>where</code> filter or "
                "budget stay in their source outputs (see Inputs).</p>"
            )
        else:
            toc.append(("samples", "dropped samples"))
            body += _sample_section(report, samples, reps)
    pii = _pii_section(src, report)
    if pii:
        toc.append(("pii", "PII"))
        body += pii
    for step, fin in minhash:
        toc.append(("dedup", "near-duplicates"))
        body += _dedup_section(src, report, step, fin, hist, top, reps)
    if kind == "normalize":
        toc.append(("records", "records"))
        body += _records_section(report)
    if kind == "curriculum":
        toc.append(("curriculum", "curriculum"))
        body += _curriculum_section(report)
    counters = [
        (s["step"], k, v) for s in report["ledger"]["steps"] for k, v in sorted(s["counters"].items())
    ]
    if counters and kind != "normalize":
        toc.append(("counters", "step counters"))
        body.append(kit.section("counters", "Step counters"))
        body.append(kit.table(["step", "counter", "value"], counters, numeric=[2], cls="sortable"))
    toc.append(("rejects", "rejects"))
    body += _rejects_section(report)
    toc.append(("inputs", "inputs"))
    body += _inputs_section(report)
    toc.append(("outputs", "outputs"))
    body += _outputs_section(report)
    toc.append(("run", "run"))
    body += _run_section(report)
    subtitle = (
        f"{kit.esc(kind)} run · output <code>{kit.esc(report.get('output', ''))}</code> · "
        f"dataforge {kit.esc(report.get('dataforge_version', ''))} · {kit.esc(report.get('executor', ''))}"
        f" × {report.get('workers', 1)} · finished {kit.esc(report.get('finished_at', ''))}"
    )
    return kit.page(f"dataforge {kind}: {name}", body, subtitle=subtitle, toc=toc)


def _kind(report: dict[str, Any]) -> str:
    cmd = str(report.get("config", {}).get("command", ""))
    if cmd.startswith("normalize"):
        return "normalize"
    if "curriculum" in report.get("reports", {}) or "stages" in report.get("config", {}):
        return "curriculum"
    if report.get("name") in ("clean", "dedup"):  # the commands of those names
        return str(report["name"])
    steps = [next(iter(s)) for s in report.get("config", {}).get("steps", []) if isinstance(s, dict) and s]
    if steps and all(s.startswith("dedup.") for s in steps):
        return "dedup"
    return "pipeline"


def _funnel(report: dict[str, Any]) -> list[str]:
    led = report["ledger"]
    rows = [("read", led["rows_in"] - led["rejected"], led["rejected"])]
    rows += [(s["step"], s["kept"], s["dropped_total"]) for s in led["steps"]]
    out = [
        kit.section("funnel", "Funnel"),
        "<p>Rows left after each step; red is what the step removed "
        "(for <i>read</i>: malformed rows rejected).</p>",
    ]
    out.append(kit.funnel_svg(rows))
    table_rows = []
    for s in led["steps"]:
        why = ", ".join(
            f"{r}: {n:,}" for r, n in sorted(s["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
        )
        table_rows.append(
            (s["step"], s["rows_in"], s["kept"], s["dropped_total"], why or "-", s.get("seconds", 0.0))
        )
    out.append(
        kit.table(
            ["step", "rows in", "kept", "dropped", "reasons", "seconds"], table_rows, numeric=[1, 2, 3, 5]
        )
    )
    return out


def _reasons(report: dict[str, Any]) -> list[str]:
    out = [kit.section("reasons", "Drop reasons")]
    for s in report["ledger"]["steps"]:
        if not s["dropped"]:
            continue
        items = sorted(s["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(f"<h3>{kit.esc(s['step'])}: {s['dropped_total']:,} dropped</h3>")
        out.append(kit.hbars_svg(items, title=f"{s['step']} drop reasons", color="#c0392b"))
    return out


# --------------------------------------------------------------------------- samples


def _samples(src: FileShards, report: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Up to SAMPLES_PER_REASON dropped rows per (step, reason), first in shard order."""
    entries = report.get("dropped_shards", [])
    steps = report["ledger"]["steps"]
    wanted = {(s["step"], r) for s in steps for r in s["dropped"]}
    got: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    if not entries or not wanted:
        return got
    names = _schema_of(src, entries)
    step_col = "drop_step" if "drop_step" in names else None
    reason_col = "drop_reason" if "drop_reason" in names else "reason"
    if reason_col not in names:
        return got
    only_step = steps[0]["step"] if len(steps) == 1 else ""
    cols = [c for c in names if not c.startswith("_") and c != "raw"]
    keys = [reason_col] if step_col is None else [step_col, reason_col]
    for e in entries:
        need = {k for k in wanted if len(got[k]) < SAMPLES_PER_REASON}
        if not need:
            break
        if src.names(e) is None:
            continue
        # first only the reason columns, to find the rows; then every column of those rows only
        small = src.read(e, keys).with_row_index("__i")
        if step_col is None:
            small = small.with_columns(pl.lit(only_step).alias("__step"))
        sc = step_col or "__step"
        small = small.filter(pl.struct(sc, reason_col).is_in([{sc: st, reason_col: r} for st, r in need]))
        picked = small.group_by(sc, reason_col, maintain_order=True).head(SAMPLES_PER_REASON)["__i"].sort()
        if picked.is_empty():
            continue
        for row in src.take(e, cols, picked.to_list()).to_dicts():
            key = (row.get(step_col) if step_col else only_step, row[reason_col])
            if key in need and len(got[key]) < SAMPLES_PER_REASON:
                got[key].append(row)
    return got


def _where(row: dict[str, Any]) -> str:
    f = row.get("source_file")
    if row.get("source_line") is not None:
        return f"{f}:{row['source_line']}"
    if row.get("source_row") is not None:
        return f"{f} row {row['source_row']}"
    return str(f or "")


def _representatives(
    src: FileShards, report: dict[str, Any], cluster_ids: set[int]
) -> dict[int, dict[str, Any]]:
    """Kept row of each of ``cluster_ids`` (id, text, where) from the data shards."""
    found: dict[int, dict[str, Any]] = {}
    if not cluster_ids:
        return found
    wanted = sorted(cluster_ids)
    for frame in _frames(
        src,
        report.get("shards", []),
        ["cluster_id", "id", "text", "source_file", "source_line", "source_row"],
        key="cluster_id",
        where=pl.col("cluster_id").is_in(wanted),
    ):
        for row in frame.to_dicts():
            found.setdefault(int(row["cluster_id"]), row)
        if len(found) == len(cluster_ids):
            break
    return found


def _sample_section(
    report: dict[str, Any],
    samples: dict[tuple[str, str], list[dict[str, Any]]],
    reps: dict[int, dict[str, Any]],
) -> list[str]:
    res = [
        kit.section("samples", "Dropped samples"),
        f"<p>The first {SAMPLES_PER_REASON} dropped rows of each reason, in input order, with the part that made "
        "the rule fire highlighted and the measured value next to its threshold. Every dropped row is in "
        "<code>dropped/</code> (see Outputs).</p>",
    ]
    for s in report["ledger"]["steps"]:
        for reason, n in sorted(s["dropped"].items(), key=lambda kv: (-kv[1], kv[0])):
            rows = samples.get((s["step"], reason), [])
            res.append(f"<h3>{kit.esc(s['step'])} · <code>{kit.esc(reason)}</code> · {n:,} rows</h3>")
            if not rows:
                res.append(
                    "<p class='muted'>No sample: dropped rows were not kept (output.keep_dropped: false).</p>"
                )
            for row in rows:
                res.append(_sample_html(row, reason, reps))
    return res


def _sample_html(row: dict[str, Any], reason: str, reps: dict[int, dict[str, Any]]) -> str:
    detail = row.get("drop_detail", row.get("detail"))
    meta = [f"<b>{kit.esc(row.get('id', row.get('source_ref', '')) or '')}</b>", kit.esc(_where(row))]
    if detail:
        meta.append(f"<code>{kit.esc(detail)}</code>")
    head = "<div class='meta'>" + " · ".join(meta) + "</div>"
    text = row.get("text")
    if not isinstance(text, str):
        extra = {
            k: v
            for k, v in row.items()
            if k not in ("source_file", "source_row", "source_line", "detail", "drop_detail")
        }
        return f"<div class='sample'>{head}<div class='text'>{kit.esc(json.dumps(extra, default=str, ensure_ascii=False))}</div></div>"
    if reason == "near_duplicate" and row.get("cluster_id") is not None:
        rep = reps.get(int(row["cluster_id"]))
        sim = row.get("similarity")
        if rep is not None:
            names = (f"dropped {row.get('id')} ({_where(row)})", f"kept {rep.get('id')} ({_where(rep)})")
            sim_s = f"similarity {sim:.3f} · " if isinstance(sim, float) else ""
            return (
                f"<div class='sample'>{head}<div class='meta'>{sim_s}cluster {row['cluster_id']}; "
                "words only in one of the two are marked</div>"
                f"{kit.diff_html(text, rep.get('text') or '', names=names)}</div>"
            )
        return (
            f"<div class='sample'>{head}<div class='meta'>matched {kit.esc(row.get('dup_of'))}, which is not in this "
            f"output (a reference document)</div><div class='text'>{kit.highlighted(text, [])}</div></div>"
        )
    return f"<div class='sample'>{head}<div class='text'>{kit.highlighted(text, spans_for(reason, text))}</div></div>"


def _pii_section(src: FileShards, report: dict[str, Any]) -> list[str]:
    pii_steps = [s for s in report["ledger"]["steps"] if s["step"].startswith("pii.")]
    if not pii_steps:
        return []
    placeholders = None
    for st in report.get("config", {}).get("steps", []):
        if isinstance(st, dict) and "pii.redact" in st:
            placeholders = (st["pii.redact"] or {}).get("placeholders")
    res = [kit.section("pii", "PII")]
    for s in pii_steps:
        items = sorted(s["counters"].items(), key=lambda kv: (-kv[1], kv[0]))
        total = sum(v for _, v in items)
        res.append(f"<h3>{kit.esc(s['step'])}: {total:,} matches redacted</h3>")
        if items:
            res.append(kit.hbars_svg(items, title="PII matches by type", color="#8e44ad"))
    shown: list[dict[str, Any]] = []
    for frame in _frames(
        src,
        report.get("shards", []),
        ["id", "text", "pii_count", "pii_types", "source_file", "source_line", "source_row"],
        key="pii_count",
        where=pl.col("pii_count") > 0,
    ):
        if "text" not in frame.columns:
            break
        shown += frame.head(SAMPLES_PER_REASON - len(shown)).to_dicts()
        if len(shown) >= SAMPLES_PER_REASON:
            break
    if shown:
        res.append("<p>Kept documents with redactions (placeholders highlighted):</p>")
    for row in shown:
        types = ", ".join(row.get("pii_types") or [])
        res.append(
            f"<div class='sample'><div class='meta'><b>{kit.esc(row.get('id'))}</b> · {kit.esc(_where(row))} · "
            f"{row['pii_count']} match(es): {kit.esc(types)}</div>"
            f"<div class='text'>{kit.highlighted(row['text'], placeholder_spans(row['text'], placeholders))}</div></div>"
        )
    return res


# --------------------------------------------------------------------------- dedup


def _no_sizes() -> pl.DataFrame:
    return pl.DataFrame(schema={"cluster_id": pl.Int64, "cluster_size": pl.Int64})


def _cluster_sizes(src: FileShards, report: dict[str, Any]) -> pl.DataFrame:
    """One row (cluster_id, cluster_size) per cluster of every row that reached MinHash (kept or
    dropped)."""
    frames = []
    for entries in (report.get("shards", []), report.get("dropped_shards", [])):
        for frame in _frames(src, entries, ["cluster_id", "cluster_size"]):
            if "cluster_id" not in frame.columns or "cluster_size" not in frame.columns:
                break
            frames.append(frame.drop_nulls("cluster_id").cast(pl.Int64))
        else:
            continue
        break
    if not frames:
        return _no_sizes()
    return pl.concat(frames).unique("cluster_id", keep="last")


def _dedup_section(
    src: FileShards,
    report: dict[str, Any],
    step: str,
    fin: dict[str, Any],
    hist: dict[int, int],
    top: list[tuple[int, int]],
    reps: dict[int, dict[str, Any]],
) -> list[str]:
    res = [kit.section("dedup", f"Near-duplicates ({step})")]
    lsh = fin.get("lsh") or {}
    opts = next(
        (st[step] for st in report.get("config", {}).get("steps", []) if isinstance(st, dict) and step in st),
        {},
    )
    facts = [
        ("candidate pairs", fin.get("candidate_pairs")),
        ("verified pairs", fin.get("verified_pairs")),
        ("clusters (size ≥ 2)", fin.get("clusters")),
        ("near-duplicates dropped", fin.get("near_duplicates")),
        ("reference duplicates", fin.get("reference_duplicates")),
    ]
    res.append(kit.cards([(k, f"{v:,}") for k, v in facts if v is not None]))
    if opts:
        res.append(
            "<p>"
            + " · ".join(
                f"{kit.esc(k)} <code>{kit.esc(opts.get(k))}</code>"
                for k in ("threshold", "num_perm", "shingle", "hash", "verify", "keep")
                if k in opts
            )
            + "</p>"
        )
    if lsh:
        pts = [(float(s), float(p)) for s, p in lsh.get("probability", {}).items()]
        res.append(
            f"<h3>LSH S-curve: {lsh['bands']} bands × {lsh['rows']} rows</h3><p>Probability that a pair with Jaccard "
            f"similarity s becomes a candidate: 1 − (1 − s<sup>{lsh['rows']}</sup>)<sup>{lsh['bands']}</sup>. "
            f"Midpoint {lsh.get('midpoint')}; false-positive area {lsh.get('false_positive_area')}, false-negative "
            f"area {lsh.get('false_negative_area')} around threshold {lsh.get('threshold')}.</p>"
        )
        res.append(
            kit.curve_svg(
                pts,
                title="LSH S-curve",
                xlabel="Jaccard similarity s",
                ylabel="P(candidate)",
                marker=float(lsh["threshold"]),
                marker_label=f"threshold {lsh['threshold']}",
            )
        )
    if hist:
        items = []
        for lo, hi in _SIZE_BUCKETS:
            n = sum(v for k, v in hist.items() if k >= lo and (hi is None or k <= hi))
            if n or (hi is not None and lo <= max(hist)):
                items.append((str(lo) if lo == hi else f"{lo}+" if hi is None else f"{lo}–{hi}", n))
        res.append("<h3>Cluster sizes</h3><p>Clusters by number of members (size 1: no near-duplicate).</p>")
        res.append(kit.columns_svg(items, title="cluster-size histogram", xlabel="cluster size", log=True))
        if top:
            res += _largest_clusters(src, report, [cid for _, cid in top], {c: s for s, c in top}, reps)
    return res


def _largest_clusters(
    src: FileShards,
    report: dict[str, Any],
    ids: list[int],
    size: dict[int, int],
    reps: dict[int, dict[str, Any]],
) -> list[str]:
    members: dict[int, list[dict[str, Any]]] = defaultdict(list)
    cols = [
        "cluster_id",
        "id",
        "text",
        "similarity",
        "dup_of",
        "drop_reason",
        "source_file",
        "source_line",
        "source_row",
    ]
    for frame in _frames(
        src, report.get("dropped_shards", []), cols, key="cluster_id", where=pl.col("cluster_id").is_in(ids)
    ):
        for row in frame.to_dicts():
            if len(members[int(row["cluster_id"])]) < 50:
                members[int(row["cluster_id"])].append(row)
    rows = []
    for cid in ids:
        rep = reps.get(cid, {})
        ms = members.get(cid, [])
        sims = [m["similarity"] for m in ms if isinstance(m.get("similarity"), float)]
        rows.append(
            (
                cid,
                size[cid],
                rep.get("id", "(reference)"),
                ", ".join(str(m.get("id")) for m in ms[:6]) + (" …" if len(ms) > 6 else ""),
                min(sims) if sims else None,
            )
        )
    res = [
        "<h3>Largest clusters</h3>",
        kit.table(
            ["cluster", "size", "kept", "dropped members", "lowest similarity"],
            rows,
            numeric=[0, 1, 4],
            cls="sortable",
        ),
    ]
    shown = 0
    for cid in ids:
        rep, ms = reps.get(cid), [m for m in members.get(cid, []) if isinstance(m.get("text"), str)]
        if rep is None or not ms or shown >= CLUSTER_DIFFS:
            continue
        m = ms[0]
        sim = m.get("similarity")
        res.append(
            f"<h3>Cluster {cid} ({size[cid]} members): a dropped member next to the kept one"
            + (f" · similarity {sim:.3f}" if isinstance(sim, float) else "")
            + "</h3>"
        )
        res.append(
            kit.diff_html(
                m["text"],
                rep.get("text") or "",
                names=(f"dropped {m.get('id')} ({_where(m)})", f"kept {rep.get('id')} ({_where(rep)})"),
            )
        )
        shown += 1
    return res


# --------------------------------------------------------------------------- normalize, curriculum


def _records_section(report: dict[str, Any]) -> list[str]:
    counters: dict[str, int] = report.get("global_info", {}).get("counters", {})
    res = [kit.section("records", "Records")]
    tables = report.get("reports", {}).get("tables", [])
    if tables:
        res.append("<h3>Rows per canonical table</h3>")
        res.append(kit.hbars_svg([(t["table"], t["rows"]) for t in tables], title="rows per table"))
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for k, v in sorted(counters.items()):
        head, _, rest = k.partition(":")
        if k.startswith("deid:phi_removed:"):
            groups["PHI fields removed"].append((k.split(":", 2)[2], v))
        elif head == "deid":
            groups["de-identification"].append((rest, v))
        elif k.startswith("unit"):
            groups["unit conversions"].append((k, v))
        elif head == "dropped":
            groups["dropped by source type"].append((rest, v))
        elif head == "validate":
            groups["validation"].append((rest, v))
        elif head == "rendered":
            groups["rendered for the curriculum"].append((rest, v))
        elif head != "rows":
            groups["other"].append((k, v))
    for title in (
        "unit conversions",
        "PHI fields removed",
        "de-identification",
        "validation",
        "dropped by source type",
        "rendered for the curriculum",
        "other",
    ):
        items = groups.get(title)
        if not items:
            continue
        res.append(f"<h3>{kit.esc(title)}</h3>")
        res.append(
            kit.table(
                ["what", "rows"], sorted(items, key=lambda kv: (-kv[1], kv[0])), numeric=[1], cls="sortable"
            )
        )
    deid = report.get("config", {}).get("deid")
    if deid:
        res.append(f"<p>De-identification mode: <code>{kit.esc(deid)}</code>.</p>")
    return res


def _curriculum_section(report: dict[str, Any]) -> list[str]:
    rows = report.get("reports", {}).get("curriculum", [])
    res = [kit.section("curriculum", "Curriculum mixture")]
    by_stage: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_stage[(r["stage"], r.get("stage_name", ""))].append(r)
    for (stage, sname), rs in sorted(by_stage.items()):
        res.append(f"<h3>Stage {stage}: {kit.esc(sname)}</h3>")
        res.append(
            kit.hbars_svg(
                [(r["source"], round(100 * r["realized_share"], 2)) for r in rs],
                title=f"stage {stage} realized share",
                unit=" %",
            )
        )
        res.append(
            kit.table(
                [
                    "source",
                    "unit",
                    "target share",
                    "realized share",
                    "available",
                    "after filter",
                    "written rows",
                    "repeated",
                    "tokens",
                ],
                [
                    (
                        r["source"],
                        r.get("mix_unit"),
                        r.get("target_share"),
                        r.get("realized_share"),
                        r.get("available_rows"),
                        r.get("filtered_rows"),
                        r.get("realized_rows"),
                        r.get("repeated_rows"),
                        r.get("tokens"),
                    )
                    for r in rs
                ],
                numeric=[2, 3, 4, 5, 6, 7, 8],
            )
        )
    return res


# --------------------------------------------------------------------------- rejects, inputs, outputs, run


def _rejects_section(report: dict[str, Any]) -> list[str]:
    led = report["ledger"]
    res = [kit.section("rejects", "Rejected input (malformed)")]
    if not led["rejected"]:
        return [*res, "<p>None: every input row was readable.</p>"]
    res.append(kit.table(["reason", "rows"], sorted(led.get("rejected_by_reason", {}).items()), numeric=[1]))
    samples = report.get("reject_samples", [])
    if samples:
        res.append(
            "<p>First rejects (file:line and what was wrong); all of them are in <code>rejects/</code> with "
            "their raw bytes:</p>"
        )
        res.append(
            kit.table(
                ["reason", "where", "error"],
                [(s.get("reason"), _where(s), s.get("error")) for s in samples[:20]],
            )
        )
    return res


def _inputs_section(report: dict[str, Any]) -> list[str]:
    per = report.get("per_input", [])
    res = [kit.section("inputs", f"Inputs ({len(per):,})")]
    if not per:
        return res
    if len(per) > INPUT_ROWS:  # the busiest files first; the page stays light with 100k inputs
        res.append(
            f"<p>The {INPUT_ROWS:,} inputs with the most rows are listed; every input is in "
            "<a href='report.json'>report.json</a> (<code>per_input</code>).</p>"
        )
        per = sorted(per, key=lambda p: (-(p.get("rows_in") or 0), str(p.get("path"))))[:INPUT_ROWS]
    extra = [k for k in ("stage", "source", "table", "role") if any(k in p for p in per)]
    headers = ["file", *extra, "rows in", "kept", "dropped", "rejected"]
    rows = [
        (
            p.get("path"),
            *(p.get(k) for k in extra),
            p.get("rows_in"),
            p.get("kept"),
            p.get("dropped"),
            p.get("rejected"),
        )
        for p in per
    ]
    n = len(extra)
    search = ""
    if len(per) > INPUT_PAGE:
        search = "input-q"
        res.append("<p><input class='search' id='input-q' placeholder='filter inputs…'></p>")
    res.append(
        kit.table(
            headers,
            rows,
            numeric=range(1 + n, 5 + n),
            cls="sortable",
            page_size=INPUT_PAGE if len(per) > INPUT_PAGE else 0,
            search_id=search,
        )
    )
    return res


def _outputs_section(report: dict[str, Any]) -> list[str]:
    res = [kit.section("outputs", "Outputs")]
    groups = [
        ("data", report.get("shards", [])),
        ("dropped", report.get("dropped_shards", [])),
        ("rejects", report.get("reject_shards", [])),
    ]
    groups += [
        (k, v)
        for k, v in sorted(report.get("reports", {}).items())
        if v and isinstance(v[0], dict) and "path" in v[0]
    ]
    rows = []
    for label, entries in groups:
        if not entries:
            continue
        first = entries[0]["path"]
        rows.append(
            (
                label,
                len(entries),
                sum(e.get("rows", 0) for e in entries),
                sum(e.get("bytes", 0) for e in entries),
                f"<a href='{kit.esc(first)}'>{kit.esc(first)}</a>" + (" …" if len(entries) > 1 else ""),
            )
        )
    res.append(
        kit.table(["part", "shards", "rows", "bytes", "first shard"], rows, numeric=[1, 2, 3], raw=[4])
    )
    res.append(
        "<p>Also here: <a href='report.json'>report.json</a> (these figures, machine-readable), "
        "<a href='manifest.json'>manifest.json</a> (every file with its sha256).</p>"
    )
    return res


def _run_section(report: dict[str, Any]) -> list[str]:
    res = [kit.section("run", "Run")]
    res.append(
        kit.kv_table(
            [
                ("status", report.get("status")),
                ("executor", f"{report.get('executor')} × {report.get('workers')}"),
                ("started / finished (UTC)", f"{report.get('started_at')} / {report.get('finished_at')}"),
                ("peak memory", f"{report.get('peak_rss_mb', 0):,.0f} MiB"),
                ("reject rate", f"{report.get('reject_rate', 0):.4%} (max {report.get('max_reject_rate')})"),
                ("dataforge", report.get("dataforge_version")),
                ("config fingerprint", report.get("config_fingerprint") or "-"),
            ]
        )
    )
    timings = {k: v for k, v in report.get("timings", {}).items() if k != "total"}
    if timings:
        res.append(
            f"<h3>Time per stage (total {report.get('timings', {}).get('total', sum(timings.values())):.2f} s)</h3>"
        )
        res.append(
            kit.hbars_svg(
                [(k, round(v, 3)) for k, v in timings.items()], title="seconds per stage", unit=" s"
            )
        )
    res.append(
        "<details><summary>config</summary><div class='text'>"
        + kit.esc(json.dumps(report.get("config", {}), indent=2, ensure_ascii=False, default=str))
        + "</div></details>"
    )
    return res
