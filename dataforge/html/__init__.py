"""Self-contained HTML reports (``report.html``) for every kind of dataforge output folder.

:func:`build_report` reads ``OUT/report.json`` (and the shards it lists) and returns the page;
:func:`write_report` writes it atomically. Every command calls :func:`write_report` after its
``report.json``; ``dataforge report OUT`` calls it again on an existing folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataforge.errors import DataError
from dataforge.html.kit import REPORT_HTML

if TYPE_CHECKING:
    from dataforge.html.run import FileShards

log = logging.getLogger(__name__)

__all__ = ["REPORT_HTML", "build_report", "write_report"]


def _load(out: Path) -> dict[str, Any]:
    path = out / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{out}: no report.json (not a dataforge output folder, or its run did not finish)"
        raise DataError(msg) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"{path}: not valid JSON: {exc}"
        raise DataError(msg) from None
    if not isinstance(report, dict) or "counts" not in report:
        msg = f"{path}: not a dataforge report (no 'counts')"
        raise DataError(msg)
    return report


def build_report(
    out: str | Path, report: dict[str, Any] | None = None, *, shards: FileShards | None = None
) -> str:
    """The ``report.html`` page of output folder ``out`` (``report`` defaults to its report.json;
    ``shards`` reads the shards it lists, by default from their files)."""
    out = Path(out)
    report = report if report is not None else _load(out)
    if report.get("kind") == "noise_report":
        from dataforge.html.noise import render_noise

        return render_noise(report)
    from dataforge.html.run import render_run

    return render_run(out, report, shards=shards)


def write_report(
    out: str | Path, report: dict[str, Any] | None = None, *, shards: FileShards | None = None
) -> Path:
    """Write ``OUT/report.html`` (temp file + rename) and return its path."""
    from dataforge.io.shards import write_bytes_atomic

    out = Path(out)
    page = build_report(out, report, shards=shards)
    path = out / REPORT_HTML
    write_bytes_atomic(path, page.encode("utf-8"))
    log.info("wrote %s (%s bytes)", path, f"{len(page):,}")
    return path


def write_report_or_log(
    out: str | Path, report: dict[str, Any] | None = None, *, shards: FileShards | None = None
) -> Path | None:
    """:func:`write_report` for the end of a run: the run's data and report.json are already
    written, so a failure here is logged (with the command that retries it) instead of failing the run."""
    try:
        return write_report(out, report, shards=shards)
    except Exception as exc:
        log.error(
            "could not build %s/report.html (%s: %s); `dataforge report %s` retries",
            out,
            type(exc).__name__,
            exc,
            out,
        )
        return None
