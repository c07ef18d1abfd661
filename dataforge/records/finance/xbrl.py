"""Read an XBRL instance document (``*_htm.xml`` / ``*.xml``, plain or gzip) with ``xml.etree``.

What is read: ``xbrli:context`` (entity identifier = CIK, period ``instant`` or ``startDate``/
``endDate``, ``segment``/``scenario`` ``xbrldi:explicitMember``/``typedMember`` dimensions),
``xbrli:unit`` (``measure`` or ``divide`` -> ``USD/shares``; ``iso4217:``/``xbrli:`` prefixes
dropped, other prefixes too: ``aapl:Customer`` -> ``Customer``) and the facts: every child of the
root that is not a context, unit, schemaRef/roleRef/arcroleRef or footnote link.

Decisions:

* The input record is a fact element; ``source_row`` is its 0-based index among fact elements in
  document order; ``source_ref`` is ``fact:id=<id>`` (or ``prefix:Concept@contextRef`` without id).
* Non-numeric facts (no ``unitRef``: text blocks, dates, booleans, the dei cover page strings) are
  dropped with reason ``non_numeric``; ``xsi:nil="true"`` facts with reason ``nil``. Tuples are
  non-numeric.
* Rejects: ``unknown_context`` (missing or undefined ``contextRef``, or a context whose dates do not
  parse), ``unknown_unit`` (``unitRef`` not defined), ``missing_unit`` (``decimals``/``precision``
  given without ``unitRef``), ``bad_value`` (not an exact decimal). A file that is not XML or not an
  XBRL instance counts as one rejected record (``bad_xml``).
* XBRL instant contexts are *end of day*: ``instant`` and ``endDate`` are used as given
  (``startDate`` 2022-09-25 .. ``endDate`` 2023-09-30 is Apple's 53-week fiscal 2023).
* Filing metadata: ``entity`` = ``dei:EntityRegistrantName``; ``form`` = ``dei:DocumentType``;
  ``fye_hint`` = ``dei:CurrentFiscalYearEndDate`` (``--09-30`` -> ``0930``); ``filing_fy``/``filing_fp``
  from ``dei:DocumentFiscalYearFocus``/``...PeriodFocus``. The instance does not contain the
  accession number or filing date: they come from a sidecar ``metadata.json[.gz]`` next to the
  instance (edgartools' layout: ``accession_no``, ``filing_date``, ``form``, ``company``) when present,
  or from the ``accession``/``filed`` arguments. Without them ``accession``/``filed`` are null and the
  counter ``xbrl_no_filing_metadata`` says so.
* Linkbases (``_cal``, ``_def``, ``_lab``, ``_pre``) and the ``.xsd`` in a folder are listed as skipped.
* Instance documents are independent of each other (contexts and units are per instance): a
  parallel read (:func:`xbrl_tasks`) lists the folders in the driver and reads one instance per task.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataforge.errors import InputError
from dataforge.records.finance.common import parse_value, raw_frame
from dataforge.records.model import Extract, display_name, read_bytes

log = logging.getLogger(__name__)

SOURCE = "xbrl"
XBRLI = "http://www.xbrl.org/2003/instance"
LINK = "http://www.xbrl.org/2003/linkbase"
XBRLDI = "http://xbrl.org/2006/xbrldi"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
LINKBASE_SUFFIXES = ("_cal.xml", "_def.xml", "_lab.xml", "_pre.xml")
SIDE_CAR = ("metadata.json", "metadata.json.gz")
CIK_SCHEME = "http://www.sec.gov/CIK"


@dataclass
class _Context:
    cik: int | None
    start: dt.date | None
    end: dt.date | None
    dims: str | None
    error: str | None = None


def read_xbrl(
    paths: str | Path | Iterable[str | Path],
    *,
    root: str | Path | None = None,
    accession: str | None = None,
    filed: str | dt.date | None = None,
) -> Extract:
    """Read XBRL instance documents (files, or folders holding one filing's files).

    Args:
        paths: instance files or folders (in a folder, ``*.xml[.gz]`` files that are not linkbases
            are instances; a ``metadata.json[.gz]`` there supplies accession/filing date).
        root: provenance paths are written relative to ``root`` when given.
        accession: accession number to use when no sidecar metadata gives one.
        filed: filing date (``YYYY-MM-DD``) to use when no sidecar metadata gives one.

    Returns:
        An Extract with table ``raw_fact`` (one row per usable numeric fact).
    """
    extract = Extract.empty(SOURCE)
    rows: list[dict[str, Any]] = []
    for path, meta in _instances(paths, root, extract, accession=accession, filed=filed):
        _read_into(path, meta, root, extract, rows)
    extract.tables["raw_fact"] = raw_frame(rows)
    log.info("xbrl: %d facts, %d usable numeric facts", extract.rows_in, len(rows))
    return extract


def xbrl_tasks(
    paths: str | Path | Iterable[str | Path],
    *,
    root: str | Path | None = None,
    accession: str | None = None,
    filed: str | dt.date | None = None,
) -> tuple[Extract, list[Callable[[], Extract]]]:
    """:func:`read_xbrl` as independent tasks, one per instance document, for an executor.

    Returns the extract of the listing (the sidecar metadata and skipped files in ``inputs``) and
    the tasks; :meth:`Extract.concat` of the extract and the tasks' results, in order, is what
    :func:`read_xbrl` returns.
    """
    head = Extract.empty(SOURCE)
    found = _instances(paths, root, head, accession=accession, filed=filed)
    return head, [functools.partial(read_xbrl_instance, path, meta, root=root) for path, meta in found]


def read_xbrl_instance(path: Path, meta: dict[str, Any], *, root: str | Path | None = None) -> Extract:
    """One instance document (with its filing metadata ``meta``) on its own: a task of :func:`xbrl_tasks`."""
    extract = Extract.empty(SOURCE)
    rows: list[dict[str, Any]] = []
    _read_into(path, meta, root, extract, rows)
    extract.tables["raw_fact"] = raw_frame(rows)
    return extract


def _read_into(
    path: Path, meta: dict[str, Any], root: str | Path | None, extract: Extract, rows: list[dict[str, Any]]
) -> None:
    name = display_name(path, root)
    before = extract.rows_in
    _read_instance(path, name, meta, extract, rows)
    extract.inputs.append(
        {"path": name, "role": "records", "table": "xbrl", "rows": extract.rows_in - before}
    )


def _instances(
    paths: str | Path | Iterable[str | Path],
    root: str | Path | None,
    extract: Extract,
    *,
    accession: str | None,
    filed: str | dt.date | None,
) -> list[tuple[Path, dict[str, Any]]]:
    """The instance documents of ``paths`` with their filing metadata; the sidecar metadata and
    skipped files of folders go to ``extract.inputs``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    instances: list[tuple[Path, dict[str, Any]]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            # a filing folder, or a folder of filing folders (searched recursively); each folder's
            # sidecar metadata applies to the instances in that folder
            found = False
            for folder in [path, *sorted(d for d in path.rglob("*") if d.is_dir())]:
                files = sorted(f for f in folder.iterdir() if f.is_file())
                if not files:
                    continue
                meta = _sidecar(folder, root, extract)
                for f in files:
                    if f.name in SIDE_CAR:
                        continue
                    base = f.name.removesuffix(".gz")
                    if base.endswith(".xml") and not base.endswith(LINKBASE_SUFFIXES):
                        instances.append((f, meta))
                        found = True
                    else:
                        extract.inputs.append(
                            {
                                "path": display_name(f, root),
                                "role": "skipped",
                                "table": "xbrl",
                                "rows": 0,
                                "reason": "not an instance document (schema, linkbase or other file)",
                            }
                        )
            if not found:
                msg = f"{path}: no XBRL instance (*.xml) in this folder or below it"
                raise InputError(msg)
        elif path.is_file():
            instances.append((path, _sidecar(path.parent, root, extract, record=False)))
        else:
            msg = f"{path}: no such file or folder"
            raise InputError(msg)
    out = []
    for path, meta in instances:
        meta = dict(meta)
        if accession:
            meta.setdefault("accession_no", accession)
        if filed:
            meta.setdefault("filing_date", str(filed))
        out.append((path, meta))
    return out


def _sidecar(
    folder: Path, root: str | Path | None, extract: Extract, *, record: bool = True
) -> dict[str, Any]:
    for name in SIDE_CAR:
        f = folder / name
        if f.is_file():
            data, err = read_bytes(f)
            try:
                meta = json.loads(data)
            except (ValueError, RecursionError):
                log.warning("%s: unreadable filing metadata ignored", f)
                return {}
            if record:
                extract.inputs.append(
                    {"path": display_name(f, root), "role": "lookup", "table": "metadata", "rows": 1}
                )
            return meta if isinstance(meta, dict) and not err else {}
    return {}


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _date(text: str | None) -> dt.date:
    if text is None:
        raise ValueError("missing")
    text = text.strip()
    return dt.date.fromisoformat(text[:10]) if "T" in text else dt.date.fromisoformat(text)


def _measure(text: str | None) -> str:
    text = (text or "").strip()
    return text.rpartition(":")[2] if ":" in text else text


def _read_instance(
    path: Path, name: str, meta: dict[str, Any], extract: Extract, rows: list[dict[str, Any]]
) -> None:
    data, error = read_bytes(path)
    prefixes: dict[str, str] = {}
    try:
        if error:
            raise ET.ParseError(error)
        for _event, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            prefixes.setdefault(uri, prefix)
        root = ET.fromstring(data)
        if _local(root.tag) != (XBRLI, "xbrl"):
            raise ET.ParseError(f"root element is {root.tag}, not xbrli:xbrl")
    except ET.ParseError as exc:
        extract.rows_in += 1
        extract.reject(
            name,
            None,
            table="xbrl",
            reason="bad_xml",
            error=f"{name}: not an XBRL instance: {exc}",
            raw=data[:200],
        )
        return

    contexts: dict[str, _Context] = {}
    units: dict[str, str] = {}
    facts: list[ET.Element] = []
    for el in root:
        if not isinstance(el.tag, str):
            continue  # comments, processing instructions
        ns, local = _local(el.tag)
        if ns == XBRLI and local == "context":
            contexts[el.get("id", "")] = _context(el)
        elif ns == XBRLI and local == "unit":
            units[el.get("id", "")] = _unit(el)
        elif ns == LINK or (ns == XBRLI and local in ("schemaRef",)):
            continue
        else:
            facts.append(el)

    dei = {}
    for el in facts:
        ns, local = _local(el.tag)
        if prefixes.get(ns) == "dei" or "/dei/" in ns:
            dei.setdefault(local, (el.text or "").strip())
    # sidecar metadata is JSON of any shape: only strings (or numbers, as text) are used
    meta = {
        k: str(v) for k, v in meta.items() if isinstance(v, str | int | float) and not isinstance(v, bool)
    }
    entity = dei.get("EntityRegistrantName") or meta.get("company")
    form = dei.get("DocumentType") or meta.get("form")
    fye = dei.get("CurrentFiscalYearEndDate", "").lstrip("-").replace("-", "") or None
    try:
        filing_fy = int(dei["DocumentFiscalYearFocus"]) if "DocumentFiscalYearFocus" in dei else None
    except ValueError:
        filing_fy = None
    if filing_fy is not None and not -(2**31) <= filing_fy < 2**31:
        filing_fy = None  # does not fit the Int32 column: not a year
    filing_fp = dei.get("DocumentFiscalPeriodFocus")
    accession = meta.get("accession_no") or meta.get("accession")
    filed = None
    if meta.get("filing_date"):
        try:
            filed = _date(str(meta["filing_date"]))
        except ValueError:
            log.warning("%s: filing date %r in metadata is not a date", name, meta["filing_date"])
    if accession is None or filed is None:
        extract.counters["xbrl_no_filing_metadata"] += 1
    dei_cik = None
    if dei.get("EntityCentralIndexKey", "").isdigit() and int(dei["EntityCentralIndexKey"]) < 2**63:
        dei_cik = int(dei["EntityCentralIndexKey"])

    for row, el in enumerate(facts):
        ns, local = _local(el.tag)
        prefix = prefixes.get(ns, ns)
        fact_id = el.get("id")
        ctx_ref = el.get("contextRef")
        ref = f"fact:id={fact_id}" if fact_id else f"{prefix}:{local}@{ctx_ref}"
        text = (el.text or "").strip()
        where = f"{name} fact {row} ({prefix}:{local}{', id ' + fact_id if fact_id else ''})"

        def reject(reason: str, msg: str, el: ET.Element = el, row: int = row) -> None:
            extract.reject(
                name,
                row,
                table="xbrl",
                reason=reason,
                error=msg,
                raw=ET.tostring(el, encoding="utf-8")[:2000],
            )

        if ctx_ref is None or ctx_ref not in contexts:
            reject("unknown_context", f"{where}: contextRef {ctx_ref!r} is not a context in this instance")
            continue
        ctx = contexts[ctx_ref]
        if ctx.error:
            reject("unknown_context", f"{where}: context {ctx_ref!r} is unusable: {ctx.error}")
            continue
        unit_ref = el.get("unitRef")
        if el.get(XSI_NIL) in ("true", "1"):
            extract.drop(name, row, source_ref=ref, table="xbrl", reason="nil", detail="xsi:nil fact")
            continue
        if unit_ref is None:
            if el.get("decimals") is not None or el.get("precision") is not None:
                reject(
                    "missing_unit",
                    f"{where}: numeric fact (decimals {el.get('decimals')!r}) has no unitRef; value {text!r}",
                )
            else:
                extract.drop(
                    name,
                    row,
                    source_ref=ref,
                    table="xbrl",
                    reason="non_numeric",
                    detail=f"{prefix}:{local} has no unitRef",
                )
            continue
        if unit_ref not in units:
            reject(
                "unknown_unit",
                f"{where}: unitRef {unit_ref!r} is not a unit in this instance; value {text!r}",
            )
            continue
        value, why = parse_value(text)
        if value is None:
            reject("bad_value", f"{where}: {why}")
            continue
        rows.append(
            {
                "cik": ctx.cik if ctx.cik is not None else dei_cik,
                "entity": entity,
                "taxonomy": prefix,
                "concept": local,
                "unit": units[unit_ref],
                "value": value,
                "value_text": text,
                "decimals": el.get("decimals"),
                "start": ctx.start,
                "end": ctx.end,
                "dimensions": ctx.dims,
                "form": form,
                "filed": filed,
                "accession": accession,
                "filing_fy": filing_fy,
                "filing_fp": filing_fp,
                "fye_hint": fye,
                "source": SOURCE,
                "source_file": name,
                "source_row": row,
                "source_ref": ref,
            }
        )
    extract.rows_in += len(facts)


def _context(el: ET.Element) -> _Context:
    cik = None
    dims: list[str] = []
    start = end = None
    error = None
    for child in el.iter():
        ns, local = _local(child.tag) if isinstance(child.tag, str) else ("", "")
        if ns == XBRLI and local == "identifier":
            ident = (child.text or "").strip()
            if ident.isdigit() and int(ident) < 2**63:  # a CIK beyond the Int64 column is no CIK
                cik = int(ident)
        elif ns == XBRLDI and local == "explicitMember":
            dims.append(f"{child.get('dimension', '').strip()}={(child.text or '').strip()}")
        elif ns == XBRLDI and local == "typedMember":
            val = "".join(child.itertext()).strip()
            dims.append(f"{child.get('dimension', '').strip()}={val}")
    period = el.find(f"{{{XBRLI}}}period")
    try:
        if period is None:
            raise ValueError("no period")
        instant = period.find(f"{{{XBRLI}}}instant")
        if instant is not None:
            end = _date(instant.text)
        elif period.find(f"{{{XBRLI}}}forever") is not None:
            raise ValueError("forever period")
        else:
            start = _date(period.findtext(f"{{{XBRLI}}}startDate"))
            end = _date(period.findtext(f"{{{XBRLI}}}endDate"))
            if start > end:
                raise ValueError(f"startDate {start} is after endDate {end}")
    except ValueError as exc:
        error = f"period: {exc}"
    return _Context(cik, start, end, ";".join(sorted(dims)) or None, error)


def _unit(el: ET.Element) -> str:
    divide = el.find(f"{{{XBRLI}}}divide")
    if divide is not None:
        num = [_measure(m.text) for m in divide.iterfind(f"{{{XBRLI}}}unitNumerator/{{{XBRLI}}}measure")]
        den = [_measure(m.text) for m in divide.iterfind(f"{{{XBRLI}}}unitDenominator/{{{XBRLI}}}measure")]
        return f"{'*'.join(num)}/{'*'.join(den)}"
    return "*".join(_measure(m.text) for m in el.iterfind(f"{{{XBRLI}}}measure"))
