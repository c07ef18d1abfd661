"""Writing a records run: canonical tables, rendered text and instruction pairs, rejects, dropped
records, the manifest and the run report, all into a temporary folder renamed into place.

Layout of ``OUT``::

    tables/<table>/part-00000.arrow   canonical tables (schema ehr.<table>.v1 / fin.<table>.v1)
    text/part-00000.arrow             rendered documents (document.v1 + rendered.v1 columns), stage 3
    instruct/part-00000.arrow         instruction pairs (instruction.v1), stage 2
    rejects/part-00000.arrow          malformed or impossible input records, with reason and error
    dropped/part-00000.arrow          input records deliberately not mapped, with reason
    manifest.json                     every shard with rows, bytes and sha256; schemas; counts
    report.json, report.md            the run report; ledger: rows_in = kept + dropped + rejected

A crash leaves ``OUT`` as it was (the new output is built under ``.OUT.partial-<pid>`` and renamed
only when complete).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

import dataforge
from dataforge.html import write_report_or_log
from dataforge.io.shards import (
    MANIFEST,
    atomic_folder,
    check_replaceable,
    write_bytes_atomic,
    write_json_atomic,
    write_shard,
)
from dataforge.ledger import Ledger, StepCounts
from dataforge.records.model import AUX_TABLES, Extract
from dataforge.report import REPORT_JSON, REPORT_MD, RunReport, peak_rss_mb, truncated_message
from dataforge.schemas import conform, extend, load_schema, schema_to_json

log = logging.getLogger(__name__)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("source_row", pa.int64()),
        pa.field("source_line", pa.int64()),
        pa.field("table", pa.large_string()),
        pa.field("reason", pa.large_string(), nullable=False),
        pa.field("error", pa.large_string(), nullable=False),
        pa.field("raw", pa.large_binary()),
    ],
    metadata={"dataforge.schema": "records_rejects.v1"},
)
DROPPED_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("source_row", pa.int64()),
        pa.field("source_ref", pa.large_string()),
        pa.field("table", pa.large_string()),
        pa.field("reason", pa.large_string(), nullable=False),
        pa.field("detail", pa.large_string()),
    ],
    metadata={"dataforge.schema": "records_dropped.v1"},
)


def rendered_schema() -> pa.Schema:
    return extend(load_schema("document.v1"), list(load_schema("rendered.v1")), name="rendered.v1")


@dataclass(kw_only=True)
class RecordsRun:
    """Everything one records run writes."""

    name: str  # normalize-ehr | normalize-finance
    domain: str  # ehr | finance
    extract: Extract
    tables: dict[str, tuple[pl.DataFrame, str]]  # table -> (frame, schema name)
    text: pl.DataFrame | None = None  # id, text, fact_ids, meta
    instruct: pl.DataFrame | None = None  # id, prompt, response, context, fact_ids, meta
    rejects: pl.DataFrame | None = None
    dropped: pl.DataFrame | None = None
    config: dict[str, Any] = field(default_factory=dict)
    manifest_extra: dict[str, Any] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    timings: dict[str, float] = field(default_factory=dict)
    text_stage: int = 3
    instruct_stage: int = 2
    max_reject_rate: float | None = 0.05
    executor: str = "local"  # what read the inputs (recorded in the report, not in the manifest)
    workers: int = 1


def ledger_of(run: RecordsRun) -> Ledger:
    """The run's ledger in input records; raises LedgerError when the counts do not add up."""
    ex = run.extract
    rejects = run.rejects if run.rejects is not None else ex.rejects
    dropped = run.dropped if run.dropped is not None else ex.dropped
    kept = ex.kept_records()
    step = StepCounts(
        f"normalize.{run.domain}",
        rows_in=ex.rows_in - rejects.height,
        kept=kept,
        dropped=Counter(dropped["reason"].to_list()),
        counters=Counter(run.counters),
        seconds=sum(run.timings.values()),
    )
    ledger = Ledger(
        rows_in=ex.rows_in, kept=kept, rejected=Counter(rejects["reason"].to_list()), steps=[step]
    )
    ledger.check(run.name)
    return ledger


def per_input(run: RecordsRun, rejects: pl.DataFrame, dropped: pl.DataFrame) -> list[dict[str, Any]]:
    """One entry per input file: role, table and its own ledger (rows_in = kept + dropped + rejected)."""
    kept_keys = [
        t.select("source_file", "source_row").filter(pl.col("source_row").is_not_null())
        for name, (t, _schema) in run.tables.items()
        if t.height and name not in AUX_TABLES
    ]
    kept = (
        pl.concat(kept_keys).unique().group_by("source_file").len()
        if kept_keys
        else pl.DataFrame(schema={"source_file": pl.Utf8, "len": pl.UInt32})
    )
    kept_n = dict(kept.iter_rows())
    drop_n = dict(dropped.group_by("source_file").len().iter_rows())
    rej_n = dict(rejects.group_by("source_file").len().iter_rows())
    out = []
    for i in run.extract.inputs:
        path = str(i["path"])
        k, d, r = kept_n.get(path, 0), drop_n.get(path, 0), rej_n.get(path, 0)
        entry = {**i, "path": path, "rows_in": k + d + r, "kept": k, "dropped": d, "rejected": r}
        entry.pop("rows", None)
        out.append(entry)
    return out


def _stage_frame(frame: pl.DataFrame, *, stage: int, domain: str, kind: str) -> pa.Table:
    if kind == "text":
        f = frame.with_columns(
            pl.lit(stage, dtype=pl.Int32).alias("stage"),
            pl.lit(domain).alias("domain"),
            pl.lit(f"{domain}:records").alias("source_file"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("source_row"),
            pl.lit(None, dtype=pl.Int64).alias("source_line"),
        )
        return conform(f, rendered_schema())
    f = frame.with_columns(
        pl.lit(stage, dtype=pl.Int32).alias("stage"),
        pl.lit(domain).alias("domain"),
        pl.lit(f"{domain}:records").alias("source_file"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("source_row"),
    )
    return conform(f, load_schema("instruction.v1"))


def write_records(
    run: RecordsRun,
    out: str | Path,
    *,
    overwrite: bool = False,
    shard_rows: int = 100_000,
    output_format: str = "arrow",
    compression: str = "zstd",
) -> RunReport:
    """Write ``run`` into ``out`` atomically and return its report."""
    out = Path(out)
    check_replaceable(out, overwrite=overwrite)
    t0 = time.perf_counter()
    ledger = ledger_of(run)
    rejects = run.rejects if run.rejects is not None else run.extract.rejects
    dropped = run.dropped if run.dropped is not None else run.extract.dropped
    ext = "arrow" if output_format == "arrow" else "parquet"

    def write_group(tmp: Path, table: pa.Table, folder: str) -> list[dict[str, Any]]:
        infos = []
        for i, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
            info = write_shard(
                table.slice(start, shard_rows),
                tmp / folder / f"part-{i:05d}.{ext}",
                format=output_format,
                compression=compression,
                relative_to=tmp,
            )
            infos.append(info.to_dict())
        return infos

    with atomic_folder(out) as tmp:
        manifest_tables: dict[str, Any] = {}
        all_shards: list[dict[str, Any]] = []
        for name, (frame, schema_name) in sorted(run.tables.items()):
            schema = load_schema(schema_name)
            table = conform(frame, schema)
            shards = write_group(tmp, table, f"tables/{name}")
            all_shards += shards
            manifest_tables[name] = {
                "schema": {"name": schema_name, "fields": schema_to_json(schema)},
                "rows": table.num_rows,
                "shards": shards,
            }
        stages: dict[str, Any] = {}
        if run.text is not None:
            t = _stage_frame(run.text, stage=run.text_stage, domain=run.domain, kind="text")
            stages["text"] = {
                "stage": run.text_stage,
                "schema": {"name": "rendered.v1", "fields": schema_to_json(t.schema)},
                "rows": t.num_rows,
                "shards": write_group(tmp, t, "text"),
            }
        if run.instruct is not None:
            t = _stage_frame(run.instruct, stage=run.instruct_stage, domain=run.domain, kind="instruct")
            stages["instruct"] = {
                "stage": run.instruct_stage,
                "schema": {"name": "instruction.v1", "fields": schema_to_json(t.schema)},
                "rows": t.num_rows,
                "shards": write_group(tmp, t, "instruct"),
            }
        reject_shards = (
            write_group(tmp, conform(rejects, REJECTS_SCHEMA), "rejects") if rejects.height else []
        )
        dropped_shards = (
            write_group(tmp, conform(dropped, DROPPED_SCHEMA), "dropped") if dropped.height else []
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        timings = dict(run.timings)
        timings["write"] = time.perf_counter() - t0
        report = RunReport(
            name=run.name,
            output=str(out),
            ledger=ledger,
            shards=all_shards + [s for st in stages.values() for s in st["shards"]],
            dropped_shards=dropped_shards,
            reject_shards=reject_shards,
            per_input=per_input(run, rejects, dropped),
            timings=timings,
            executor=run.executor,
            workers=run.workers,
            peak_rss_mb=peak_rss_mb(),
            started_at=now,
            finished_at=now,
            dataforge_version=dataforge.__version__,
            config=run.config,
            reject_samples=[
                {k: r[k] for k in ("source_file", "source_row", "table", "reason", "error")}
                for r in rejects.head(20).iter_rows(named=True)
            ],
            reports={"tables": [{"table": k, "rows": v["rows"]} for k, v in manifest_tables.items()]},
            global_info={"counters": dict(sorted(run.counters.items()))},
            max_reject_rate=run.max_reject_rate,
        )
        rate_exceeded = run.max_reject_rate is not None and report.reject_rate > run.max_reject_rate
        # an input that ends early lost an unknown number of records: never a pass (as in run_pipeline)
        cut_short = run.max_reject_rate is not None and bool(report.rejected_by_reason.get("truncated"))
        if rate_exceeded:
            report.status = "reject_rate_exceeded"
        elif cut_short:
            report.status = "input_truncated"
        manifest = {
            "manifest_version": 1,
            "kind": "records",
            "domain": run.domain,
            "name": run.name,
            "dataforge_version": dataforge.__version__,
            "config": run.config,
            "inputs": run.extract.inputs,
            "format": output_format,
            "compression": compression,
            "counts": {
                "rows_in": ledger.rows_in,
                "kept": ledger.kept,
                "dropped": ledger.dropped_total,
                "rejected": ledger.rejected_total,
            },
            "tables": manifest_tables,
            "stages": stages,
            # every data shard (tables, text, instruct) in one list, for verify_shards/inspect
            "shards": all_shards + [s for st in stages.values() for s in st["shards"]],
            "rejects": reject_shards,
            "dropped": dropped_shards,
            **run.manifest_extra,
        }
        write_json_atomic(tmp / REPORT_JSON, report.to_dict())
        write_bytes_atomic(tmp / REPORT_MD, report.markdown().encode())
        write_report_or_log(tmp)
        write_json_atomic(tmp / MANIFEST, manifest)
    log.info("%s: wrote %s", run.name, out)
    if rate_exceeded or cut_short:
        if rate_exceeded:
            msg = (
                f"{report.rejected:,} of {report.rows_in:,} input records were rejected "
                f"({report.reject_rate:.2%} > max_reject_rate {run.max_reject_rate:.2%}); "
                f"see {out / 'rejects'} and {out / REPORT_MD}"
            )
        else:
            msg = truncated_message(
                rejects.filter(pl.col("reason") == "truncated")["source_file"].to_list(),
                accept="set max_reject_rate to null to accept this",
                see=f"{out / 'rejects'} (reason truncated) and {out / REPORT_MD}",
            )
        from dataforge.runner import RejectRateError

        raise RejectRateError(msg, report)
    return report
