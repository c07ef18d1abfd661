"""Read SEC companyfacts JSON (``data.sec.gov/api/xbrl/companyfacts/CIK##########.json``).

Layout: ``{cik, entityName, facts: {taxonomy: {concept: {label, description, units: {unit:
[{start?, end, val, accn, fy, fp, form, filed, frame?}, ...]}}}}}``.

Decisions:

* The input record is one data point (one element of a ``units`` list). ``source_row`` numbers the
  data points of a file in document order (taxonomy, concept, unit, list position), 0-based;
  ``source_ref`` is ``taxonomy:Concept/unit[i]``.
* JSON is parsed with ``parse_float=Decimal`` so ``val`` is exact; ints stay ints.
* A file that is not valid JSON (or not a companyfacts object) counts as one input record, rejected
  with reason ``bad_json``: its data points cannot be counted.
* ``fy``/``fp`` describe the filing, not the fact; they are kept as ``filing_fy``/``filing_fp`` for
  reference only. Fiscal periods are derived from the dates in :mod:`.facts`.
* Every file is independent of the others (one company each): a parallel read
  (:func:`companyfacts_tasks`) reads one file per task.
* Rejects: ``bad_record`` (a data point that is not an object; or a taxonomy, concept, ``units``
  mapping or unit list of the wrong JSON type, which counts as one record since its data points
  cannot be counted), ``bad_value`` (``val`` missing, null, not a number, or not fitting
  ``Decimal(38, 10)``: out of range, or too many fractional digits), ``bad_date`` (``end`` missing
  or not ISO, ``start``/``filed`` not ISO, ``start`` after ``end``), ``missing_unit`` (an empty unit
  key). A string ``val`` is a number when it parses as one after stripping surrounding whitespace,
  and ``value_text`` is that stripped string.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dataforge.records.finance.common import expand_paths, parse_value, raw_frame
from dataforge.records.model import Extract, display_name, read_bytes

log = logging.getLogger(__name__)

SOURCE = "companyfacts"
PATTERNS = ("*.json", "*.json.gz", "*.json.zst")


def read_companyfacts(paths: str | Path | Iterable[str | Path], *, root: str | Path | None = None) -> Extract:
    """Read companyfacts JSON files (plain or gzip/zstd; a folder means its ``*.json*`` files).

    Args:
        paths: files or folders.
        root: provenance paths are written relative to ``root`` when given.

    Returns:
        An Extract with table ``raw_fact`` (one row per usable data point).
    """
    extract = Extract.empty(SOURCE)
    rows: list[dict[str, Any]] = []
    for path in expand_paths(paths, patterns=PATTERNS):
        name = display_name(path, root)
        before = extract.rows_in
        _read_one(path, name, extract, rows)
        extract.inputs.append(
            {"path": name, "role": "records", "table": "companyfacts", "rows": extract.rows_in - before}
        )
    extract.tables["raw_fact"] = raw_frame(rows)
    log.info("companyfacts: %d data points, %d usable", extract.rows_in, len(rows))
    return extract


def companyfacts_tasks(
    paths: str | Path | Iterable[str | Path], *, root: str | Path | None = None
) -> tuple[Extract, list[Callable[[], Extract]]]:
    """:func:`read_companyfacts` as independent tasks, one per file, for an executor.

    Returns an empty extract and the tasks; :meth:`Extract.concat` of the extract and the tasks'
    results, in order, is what :func:`read_companyfacts` returns.
    """
    files = expand_paths(paths, patterns=PATTERNS)
    return Extract.empty(SOURCE), [functools.partial(read_companyfacts, [f], root=root) for f in files]


def _read_one(path: Path, name: str, extract: Extract, rows: list[dict[str, Any]]) -> None:
    data, error = read_bytes(path)
    try:
        if error:
            raise ValueError(error)
        doc = json.loads(data, parse_float=decimal.Decimal)
        if not isinstance(doc, dict) or not isinstance(doc.get("facts"), dict):
            raise ValueError("not a companyfacts object (no 'facts' mapping)")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        extract.rows_in += 1
        extract.reject(
            name,
            None,
            table="companyfacts",
            reason="bad_json",
            error=f"{name}: not valid companyfacts JSON: {exc}",
            raw=data[:200],
        )
        return
    cik = _cik(doc.get("cik"))
    entity = _text(doc.get("entityName"))
    row = 0

    def bad_container(ref: str, what: str, value: object) -> None:
        # a container that is not what the layout says hides an unknown number of data points:
        # it counts as one rejected record, so that it is not skipped silently
        nonlocal row
        extract.reject(
            name,
            row,
            table="companyfacts",
            reason="bad_record",
            error=f"{name} {ref}: {what}, got {type(value).__name__} {_show(value)}",
            raw=_raw(value),
        )
        row += 1

    for taxonomy, concepts in doc["facts"].items():
        if not isinstance(concepts, dict):
            bad_container(f"facts.{taxonomy}", "a taxonomy must be an object of concepts", concepts)
            continue
        for concept, body in concepts.items():
            units = body.get("units") if isinstance(body, dict) else None
            if not isinstance(body, dict):
                bad_container(f"{taxonomy}:{concept}", "a concept must be an object", body)
                continue
            if not isinstance(units, dict):
                bad_container(f"{taxonomy}:{concept}", "'units' must be an object of data point lists", units)
                continue
            label = _text(body.get("label"))
            for unit, points in units.items():
                if not isinstance(points, list):
                    bad_container(
                        f"{taxonomy}:{concept}/{unit}", "a unit must hold a list of data points", points
                    )
                    continue
                for i, point in enumerate(points):
                    ref = f"{taxonomy}:{concept}/{unit}[{i}]"
                    rec = _record(point, name=name, ref=ref)
                    if isinstance(rec, tuple):
                        reason, msg = rec
                        extract.reject(
                            name,
                            row,
                            table="companyfacts",
                            reason=reason,
                            error=msg,
                            raw=_raw(point),
                        )
                    elif not str(unit).strip():
                        extract.reject(
                            name,
                            row,
                            table="companyfacts",
                            reason="missing_unit",
                            error=f"{name} {ref}: empty unit for val {point.get('val')!r}",
                            raw=_raw(point),
                        )
                    else:
                        rec.update(
                            cik=cik,
                            entity=entity,
                            taxonomy=taxonomy,
                            concept=concept,
                            label=label,
                            unit=str(unit),
                            source=SOURCE,
                            source_file=name,
                            source_row=row,
                            source_ref=ref,
                        )
                        rows.append(rec)
                    row += 1
    extract.rows_in += row


def _cik(raw: object) -> int | None:
    """The CIK as an integer; None when absent, not a number or beyond the Int64 column."""
    if isinstance(raw, bool):
        return None
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if 0 <= value < 2**63 else None


def _text(raw: object) -> str | None:
    """A descriptive string field (label, entity, form, accession); other JSON types are written
    as JSON text rather than failing the Utf8 column."""
    if raw is None or isinstance(raw, str):
        return raw
    return json.dumps(raw, default=str)


def _show(value: object) -> str:
    return repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + "..."


def _raw(value: object) -> bytes:
    return json.dumps(value, default=str).encode()[:2000]


def _date(raw: object) -> dt.date:
    if not isinstance(raw, str):
        raise ValueError
    return dt.date.fromisoformat(raw.strip())


def _record(point: object, *, name: str, ref: str) -> dict[str, Any] | tuple[str, str]:
    """The raw_fact columns of one data point, or ``(reason, error)``."""
    if not isinstance(point, dict):
        return "bad_record", f"{name} {ref}: data point is not an object: {point!r:.80}"
    if "val" not in point:
        return "bad_value", f"{name} {ref}: val is missing"
    raw = point["val"]
    value, why = parse_value(raw)
    if value is None:
        return "bad_value", f"{name} {ref}: {'val is null' if raw is None else why}"
    if point.get("end") is None:
        return "bad_date", f"{name} {ref}: end is missing"
    try:
        end = _date(point.get("end"))
    except ValueError:
        return "bad_date", f"{name} {ref}: end {point.get('end')!r} is not a YYYY-MM-DD date"
    start = None
    if point.get("start") is not None:
        try:
            start = _date(point["start"])
        except ValueError:
            return "bad_date", f"{name} {ref}: start {point.get('start')!r} is not a YYYY-MM-DD date"
        if start > end:
            return "bad_date", f"{name} {ref}: start {start} is after end {end}"
    filed = None
    if point.get("filed") is not None:
        try:
            filed = _date(point["filed"])
        except ValueError:
            return "bad_date", f"{name} {ref}: filed {point.get('filed')!r} is not a YYYY-MM-DD date"
    fy = point.get("fy")
    return {
        "value": value,
        "value_text": raw.strip() if isinstance(raw, str) else str(raw),
        "start": start,
        "end": end,
        "form": _text(point.get("form")),
        "filed": filed,
        "accession": _text(point.get("accn")),
        "filing_fy": fy
        if isinstance(fy, int) and not isinstance(fy, bool) and -(2**31) <= fy < 2**31
        else None,
        "filing_fp": point.get("fp") if isinstance(point.get("fp"), str) else None,
        "frame": point.get("frame") if isinstance(point.get("frame"), str) else None,
    }
