"""The run report: what came in, what was kept, dropped (and why) and rejected; where it went.

``report.json`` is the machine-readable record; ``report.md`` the readable summary; the CLI prints
:meth:`RunReport.summary_rows` as a table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.ledger import Ledger

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def truncated_message(files: Iterable[str | None], *, accept: str, see: str = "") -> str:
    """The error of a run whose input files end early (a reject with reason ``truncated``): the
    records after the break were never read, so no reject rate covers them. One wording for
    every command; ``accept`` says how to let such a run pass, ``see`` where to look."""
    names = sorted({str(f) for f in files if f})
    msg = (
        f"{len(names) or 'some'} input file(s) end early (truncated or corrupt): "
        f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}; the records after the break "
        f"could not be read and are not counted ({accept})"
    )
    return f"{msg}; see {see}" if see else msg


def peak_rss_mb() -> float:
    """Peak resident memory of this process or of its largest finished child (MiB; ru_maxrss is KiB
    on Linux, bytes on macOS)."""
    import resource
    import sys

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / (1024 * 1024 if sys.platform == "darwin" else 1024)


@dataclass
class RunReport:
    """Counts and metadata of one run. ``rows_in == kept + dropped + rejected`` always holds.

    What every command that writes shards returns, and what ``OUT/report.json`` holds
    (:meth:`load` reads it back). The counts are properties over the ledger.

    Attributes:
        name: the pipeline's name.
        output: the output folder.
        ledger: the counts per step and reason (``ledger.steps``: one entry per step).
        status: ``ok``, ``up_to_date`` (a rerun that did nothing), ``reject_rate_exceeded`` or
            ``input_truncated`` (an input file ended early: its unread records cannot be counted).
        shards: the shards written to ``data/``: path, rows, bytes, sha256.
        dropped_shards: the same for ``dropped/``.
        reject_shards: the same for ``rejects/``.
        per_input: the ledger per input file (rows in, kept, dropped, rejected).
        timings: seconds per stage and in total.
        executor: ``local`` or ``ray`` (it never changes the output bytes).
        workers: local processes or Ray CPUs asked for.
        started_at: UTC time the run started (ISO 8601).
        finished_at: UTC time it finished.
        peak_rss_mb: peak resident memory of this process or its largest finished child (MiB).
        max_reject_rate: the run's limit on the share of malformed input.
        config_fingerprint: sha256 of what determines the output bytes: the steps and their
            options, the input fields, the output format and the dataforge version.
        run_key: the fingerprint plus every input's real path, size and modification time and
            the same for the files steps read besides the input (``against``): what a rerun
            compares to find its output up to date (the task size and the working directory do
            not matter).
        dataforge_version: the version that wrote the run.
        config: the resolved config (steps with every option).
        reject_samples: a few rejected records: file, line, reason, error.
        reports: tables global steps wrote for inspection (``clusters``, ``cluster_pairs``).
        global_info: what each global step found, per phase (e.g. ``dedup.minhash``'s LSH
            bands and rows, candidate and verified pairs, clusters).
    """

    name: str
    output: str
    ledger: Ledger
    status: str = "ok"  # ok | up_to_date | reject_rate_exceeded | input_truncated
    shards: list[dict[str, Any]] = field(default_factory=list)
    dropped_shards: list[dict[str, Any]] = field(default_factory=list)
    reject_shards: list[dict[str, Any]] = field(default_factory=list)
    per_input: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    executor: str = "local"
    workers: int = 1
    started_at: str = ""
    finished_at: str = ""
    peak_rss_mb: float = 0.0
    max_reject_rate: float | None = None
    config_fingerprint: str = ""
    run_key: str = ""
    dataforge_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    reject_samples: list[dict[str, Any]] = field(default_factory=list)
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    global_info: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        """Input rows (records), malformed ones included."""
        return self.ledger.rows_in

    @property
    def kept(self) -> int:
        """Rows written to ``data/``."""
        return self.ledger.kept

    @property
    def dropped(self) -> int:
        """Rows a step dropped (with a reason; in ``dropped/`` unless ``keep_dropped`` is off)."""
        return self.ledger.dropped_total

    @property
    def rejected(self) -> int:
        """Malformed input records (in ``rejects/`` with file, line and raw bytes)."""
        return self.ledger.rejected_total

    @property
    def reject_rate(self) -> float:
        """``rejected / rows_in`` (0.0 for an empty input)."""
        return self.rejected / self.rows_in if self.rows_in else 0.0

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        """Dropped rows by ``step:reason``, e.g. ``{'filter.gopher_quality:gopher_short_doc': 423}``."""
        return self.ledger.dropped_by_reason()

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        """Rejected records by reason (``bad_json``, ``bad_utf8``, ``missing_text``...)."""
        return dict(sorted(self.ledger.rejected.items()))

    @property
    def ok(self) -> bool:
        """True unless the input failed the run (``status`` is ``ok`` or ``up_to_date``)."""
        return self.status in ("ok", "up_to_date")

    def to_dict(self) -> dict[str, Any]:
        """What ``report.json`` holds (JSON types only; ``counts`` sums up the ledger)."""
        return {
            "report_version": 1,
            "name": self.name,
            "status": self.status,
            "output": self.output,
            "dataforge_version": self.dataforge_version,
            "config_fingerprint": self.config_fingerprint,
            "run_key": self.run_key,
            "executor": self.executor,
            "workers": self.workers,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "max_reject_rate": self.max_reject_rate,
            "reject_rate": round(self.reject_rate, 6),
            "counts": {
                "rows_in": self.rows_in,
                "kept": self.kept,
                "dropped": self.dropped,
                "rejected": self.rejected,
            },
            "ledger": self.ledger.to_dict(),
            "per_input": self.per_input,
            "shards": self.shards,
            "dropped_shards": self.dropped_shards,
            "reject_shards": self.reject_shards,
            "reject_samples": self.reject_samples,
            "reports": self.reports,
            "global_info": self.global_info,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunReport:
        """The report from :meth:`to_dict`'s output (a parsed ``report.json``)."""
        return cls(
            name=d["name"],
            output=d["output"],
            ledger=Ledger.from_dict(d["ledger"]),
            status=d.get("status", "ok"),
            shards=d.get("shards", []),
            dropped_shards=d.get("dropped_shards", []),
            reject_shards=d.get("reject_shards", []),
            per_input=d.get("per_input", []),
            timings=d.get("timings", {}),
            executor=d.get("executor", ""),
            workers=d.get("workers", 1),
            started_at=d.get("started_at", ""),
            finished_at=d.get("finished_at", ""),
            peak_rss_mb=d.get("peak_rss_mb", 0.0),
            max_reject_rate=d.get("max_reject_rate"),
            config_fingerprint=d.get("config_fingerprint", ""),
            run_key=d.get("run_key", ""),
            dataforge_version=d.get("dataforge_version", ""),
            config=d.get("config", {}),
            reject_samples=d.get("reject_samples", []),
            reports=d.get("reports", {}),
            global_info=d.get("global_info", {}),
        )

    @classmethod
    def load(cls, out: str | Path) -> RunReport:
        """Read ``OUT/report.json``."""
        return cls.from_dict(json.loads((Path(out) / REPORT_JSON).read_text(encoding="utf-8")))

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        """(step, rows in, kept, dropped/rejected by reason) rows for a terminal table."""
        rows: list[tuple[str, str, str, str]] = []
        led = self.ledger
        rej = "\n".join(f"rejected {r}={n}" for r, n in sorted(led.rejected.items())) or "-"
        rows.append(("read", f"{led.rows_in:,}", f"{led.rows_in - led.rejected_total:,}", rej))
        for s in led.steps:
            why = "\n".join(f"{r}={n}" for r, n in sorted(s.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
            rows.append((s.step, f"{s.rows_in:,}", f"{s.kept:,}", why or "-"))
        return rows

    def markdown(self) -> str:
        """The readable summary written to ``report.md``."""
        d = self.to_dict()
        c = d["counts"]
        lines = [
            f"# dataforge run: {self.name}",
            "",
            f"- status: **{self.status}**",
            f"- output: `{self.output}`",
            f"- rows in: {c['rows_in']:,} = kept {c['kept']:,} + dropped {c['dropped']:,} + rejected {c['rejected']:,}",
            f"- reject rate: {self.reject_rate:.4%} (max {self.max_reject_rate})",
            f"- executor: {self.executor} x{self.workers}; peak RSS {self.peak_rss_mb:.0f} MiB",
            f"- dataforge {self.dataforge_version}; config fingerprint `{self.config_fingerprint[:19]}`",
            "",
            "## Steps",
            "",
            "| step | rows in | kept | dropped | reasons | seconds |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for s in self.ledger.steps:
            why = ", ".join(f"{r}: {n}" for r, n in sorted(s.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(
                f"| {s.step} | {s.rows_in:,} | {s.kept:,} | {s.dropped_total:,} | {why or '-'} | {s.seconds:.2f} |"
            )
        counters = [(s.step, k, v) for s in self.ledger.steps for k, v in sorted(s.counters.items())]
        if counters:
            lines += ["", "## Step counters", "", "| step | counter | value |", "|---|---|---:|"]
            lines += [f"| {s} | {k} | {v:,} |" for s, k, v in counters]
        for step, info in self.global_info.items():
            fin = info.get("finalize", info.get("decide", {}))
            if not isinstance(fin, dict):
                continue
            lines += ["", f"## {step}", ""]
            lsh = fin.get("lsh")
            if lsh:
                lines.append(
                    f"- LSH: {lsh['bands']} bands x {lsh['rows']} rows, threshold {lsh['threshold']}, "
                    f"S-curve midpoint {lsh['midpoint']}, false-positive area {lsh['false_positive_area']}, "
                    f"false-negative area {lsh['false_negative_area']}"
                )
                curve = ", ".join(f"P({s})={p}" for s, p in lsh["probability"].items() if float(s) >= 0.5)
                lines.append(f"- S-curve: {curve}")
            for key in (
                "candidate_pairs",
                "verified_pairs",
                "clusters",
                "near_duplicates",
                "reference_duplicates",
                "dropped",
            ):
                if key in fin:
                    lines.append(f"- {key.replace('_', ' ')}: {fin[key]:,}")
        if self.ledger.rejected:
            lines += ["", "## Rejected (malformed input)", "", "| reason | rows |", "|---|---:|"]
            lines += [f"| {r} | {n:,} |" for r, n in sorted(self.ledger.rejected.items())]
            if self.reject_samples:
                lines += ["", "First rejects:", ""]
                lines += [f"- `{s['error']}`" for s in self.reject_samples[:10]]
        lines += [
            "",
            "## Inputs",
            "",
            "| file | rows in | kept | dropped | rejected |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in self.per_input:
            lines.append(
                f"| `{p['path']}` | {p['rows_in']:,} | {p['kept']:,} | {p['dropped']:,} | {p['rejected']:,} |"
            )
        lines += ["", "## Outputs", ""]
        for label, group in (
            ("data", self.shards),
            ("dropped", self.dropped_shards),
            ("rejects", self.reject_shards),
        ):
            rows = sum(s["rows"] for s in group)
            size = sum(s["bytes"] for s in group)
            lines.append(f"- {label}: {len(group)} shard(s), {rows:,} rows, {size:,} bytes")
        if self.timings:
            lines += ["", "## Timings (seconds)", ""]
            lines += [f"- {k}: {v:.2f}" for k, v in self.timings.items()]
        return "\n".join(lines) + "\n"
