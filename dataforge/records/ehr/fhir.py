"""Read FHIR R4 JSON (Bundles, single resources, NDJSON bulk export) into canonical EHR tables.

Input: files or folders (searched recursively for ``*.json`` and ``*.ndjson``, each optionally
``.gz``/``.zst``), read in sorted path order. A ``.json`` file holds a Bundle of any type
(transaction, collection, searchset...), a single resource, or a JSON array of resources; an
``.ndjson`` file holds one resource (or one Bundle) per line.

**Ledger.** The input record is a Bundle entry, a single-resource file, or an NDJSON line (a Bundle
on a line contributes one record per entry). ``source_row`` is the 0-based record index in its file;
rejects of NDJSON lines also carry the 1-based line. A file that is not JSON at all (or is cut off)
counts as one rejected record. Records end as:

* kept: a mapped resource that produced canonical rows;
* dropped: ``unmapped_resource`` (Claim, ExplanationOfBenefit, DiagnosticReport, CareTeam,
  CarePlan, ImagingStudy, Provenance, AllergyIntolerance, Practitioner, Organization, and
  Medication, which is a lookup folded into the MedicationRequest/Administration that references
  it), ``entered_in_error`` (status ``entered-in-error``), ``no_resource`` (an entry without a
  resource, e.g. a DELETE), ``empty_bundle`` (a Bundle without entries: one record),
  ``panel_without_value`` (an Observation that only groups others through ``hasMember``),
  ``external_attachment`` (a DocumentReference whose text is only a URL);
* rejected: ``bad_json``, ``truncated``, ``wrong_type`` (a value of the wrong JSON type),
  ``missing_id``, ``missing_subject``, ``missing_code``, ``missing_content``, ``unknown_patient``
  (the subject resolves to no accepted Patient), ``dangling_reference`` (an encounter reference to
  no accepted Encounter), ``bad_date``, ``bad_number``, ``bad_attachment``, ``duplicate_id``.
  Every error names the file, the entry (or line), the element and the value.

Resolution happens after all files are read: Patients first, then Encounters, then the rest, so a
reference to a rejected Patient/Encounter is itself rejected. References may be ``urn:uuid:...``
(Bundle ``fullUrl``), relative (``Patient/<id>``), absolute URLs, contained (``#id``) or
conditional (``Patient?identifier=<system>|<value>``, as Synthea writes them); each resolves to the
source id of the target resource.

**Mapping.**

* Patient -> ``patient``: ``gender``; ``birthDate``; ``deceasedDateTime`` -> ``death_date`` and
  ``deceased = true``, ``deceasedBoolean`` -> ``deceased`` (null when absent); US Core race/ethnicity
  OMB codes -> the words Synthea's CSV uses (``white``, ``black``, ``asian``, ``native``,
  ``hawaiian``, ``other``; ``hispanic``, ``nonhispanic``), else the extension's ``text``;
  ``maritalStatus`` code (HL7 v3); ``communication.language`` code; home (else first) address:
  ``state`` (a full US state name becomes its USPS code), ``postalCode``, ``country``, PHI ``line``
  (joined), ``city``, ``district`` (county), ``geolocation`` lat/lon. Names: the official (else
  first non-maiden) name gives ``given`` (all given names, space-joined), ``family``, ``prefix``,
  ``suffix`` and ``name`` (``text`` or given + family); ``name.use == maiden`` gives ``maiden``.
  ``telecom`` phone/email; identifiers SSN (system ``http://hl7.org/fhir/sid/us-ssn`` or type
  ``SS``), MRN (``MR``), driver's license (``DL``), passport (``PPN``); ``patient-birthPlace``
  -> ``birthplace`` ("city, state, country"); the ``patient-mothersMaidenName`` extension and the
  names of ``contact`` entries -> ``relatives`` (PHI: scrubbed from the patient's free text).
* Encounter -> ``encounter``: ``class`` v3 ActCode -> canonical word (``AMB`` -> ambulatory,
  ``EMER`` -> emergency, ``IMP``/``ACUTE``/``NONAC`` -> inpatient, ``HH`` -> home, ``VR`` ->
  virtual, ``SS``/``OBSENC`` -> outpatient, ``PRENC`` -> ambulatory; anything else lower-cased).
  Synthea's FHIR exporter writes ``AMB`` for its ambulatory, wellness, outpatient and urgentcare
  encounters, so the CSV's finer ``ENCOUNTERCLASS`` cannot be recovered from FHIR. ``type`` ->
  code, ``reasonCode`` (or a ``reasonReference`` Condition's code) -> reason, ``period``, ``status``.
* Condition -> ``condition``: ``onset[x]``/``abatement[x]`` (dateTime or Period), ``category``.
* Observation -> ``measurement``: ``valueQuantity`` -> ``value`` (the JSON number as written is kept
  in ``source_value``), ``unit`` -> ``source_unit``, UCUM ``code`` -> ``source_unit_ucum``;
  ``valueCodeableConcept`` -> ``value_text`` (display, else text, else code; the code goes to
  ``source_value``); ``valueString``/``Boolean``/``DateTime``/``Time`` -> ``value_text``;
  ``valueInteger`` -> ``value``; ``valueRange``/``Ratio``/``Period`` -> ``value_text`` rendered.
  Each ``component`` is its own row with ``record_id = <id>#<component code>`` (Synthea's CSV also
  writes one row per component of a blood-pressure or PRAPARE panel and none for the panel); a
  parent value, if any, is a row with the plain id. ``interpretation``, ``referenceRange`` low/high.
* MedicationRequest -> ``medication`` (``category = prescription``), ``authoredOn`` start,
  ``dispenseRequest.validityPeriod.end`` end, first dosage's dose and route; the drug comes from
  ``medicationCodeableConcept`` or a referenced/contained Medication.
* MedicationAdministration -> ``medication`` (``category = administration``): Synthea writes one
  alongside the MedicationRequest of an administered drug; its CSV has only the prescription row,
  so these rows have no CSV counterpart (kept because other FHIR sources may hold only
  administrations).
* Immunization -> ``medication`` (``category = immunization``, CVX), ``occurrenceDateTime``.
* Procedure -> ``procedure``: ``performedPeriod``/``performedDateTime``; reason from
  ``reasonCode`` or the code of the Condition in ``reasonReference``.
* DocumentReference -> ``note``: first attachment with inline ``data`` (base64, decoded as UTF-8 or
  the ``contentType`` charset), ``note_type`` = type display, ``time`` = ``date`` else
  ``context.period.start``, encounter from ``context.encounter``.

Code systems use :data:`~dataforge.records.ehr.columns.SYSTEM_URIS` (unknown systems are
``local``, counted in ``counters['unknown_code_system:<uri>']``); of several codings the first
with a known system wins. Times with offsets become UTC; date-only and partial values are midnight
UTC of their first day; a dateTime without offset is taken as UTC (counted as ``naive_datetime``).
Every time also keeps the calendar date as written (``<col>_local``: the year of
``2015-12-31T23:30:00-05:00`` is 2015, though its UTC instant is in 2016) and its precision
(``<col>_precision``: ``year`` for ``2015``, ``month`` for ``2015-07``, ``day``, ``time``).
Optional elements may be absent anywhere; only the elements named above as rejects are required.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from dataforge.errors import InputError
from dataforge.records.ehr.columns import RAW_COLUMNS, SYSTEM_URIS, conform_raw
from dataforge.records.ehr.synthea import US_STATE_CODES
from dataforge.records.model import Extract, display_name, read_bytes

log = logging.getLogger(__name__)

UCUM = "http://unitsofmeasure.org"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
BIRTHPLACE_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
MAIDEN_NAME_URL = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
GEOLOCATION_URL = "http://hl7.org/fhir/StructureDefinition/geolocation"

# OMB race / ethnicity categories (urn:oid:2.16.840.1.113883.6.238) -> the words Synthea's CSV uses
RACE_CODES = {
    "2106-3": "white",
    "2054-5": "black",
    "2028-9": "asian",
    "1002-5": "native",
    "2076-8": "hawaiian",
    "2131-1": "other",
}
ETHNICITY_CODES = {"2135-2": "hispanic", "2186-5": "nonhispanic"}

# v3 ActCode encounter class -> canonical class
ENCOUNTER_CLASSES = {
    "AMB": "ambulatory",
    "EMER": "emergency",
    "IMP": "inpatient",
    "ACUTE": "inpatient",
    "NONAC": "inpatient",
    "SS": "outpatient",
    "OBSENC": "outpatient",
    "PRENC": "ambulatory",
    "HH": "home",
    "VR": "virtual",
    "FLD": "field",
}

MAPPED = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationAdministration",
    "Immunization",
    "Procedure",
    "DocumentReference",
)

_DATETIME = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:[T ](?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?)?)?)?$"
)
_JSON_SUFFIXES = (".json", ".ndjson", ".jsonl")
# value[x] types rendered as text: element -> (first part, second part, separator)
_COMPOUND_VALUES = {
    "valueRange": ("low", "high", "-"),
    "valueRatio": ("numerator", "denominator", "/"),
    "valuePeriod": ("start", "end", "/"),
}
_COMPRESSED = (".gz", ".zst", ".zstd")
# the order in which read_fhir records rejects and dropped records
PHASES = ("load", "resource check", "Patient", "Encounter", "other resources")


class _Reject(Exception):
    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class _Drop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class _Record:
    file: str
    row: int
    line: int | None
    resource: Any
    full_url: str | None
    raw: bytes | None = None

    @property
    def where(self) -> str:
        if self.line is not None:
            return f"{self.file} line {self.line}"
        return f"{self.file} entry {self.row}"


def read_fhir(paths: Sequence[str | Path], *, root: str | Path | None = None) -> Extract:
    """Read FHIR R4 JSON/NDJSON files (or folders of them) into canonical EHR tables.

    Args:
        paths: files and/or folders (searched recursively).
        root: names in provenance (``source_file``) are relative to this folder when given.

    Returns:
        An :class:`Extract` (source ``fhir``) with the tables the inputs feed (``patient``,
        ``encounter``, ``condition``, ``measurement``, ``medication``, ``procedure``, ``note``).

    Raises:
        InputError: a path does not exist or no ``*.json``/``*.ndjson`` file is found.
    """
    extract = Extract.empty("fhir")
    records: list[_Record] = []
    for path in _collect(paths):
        _load_input(path, root, extract, records)
    _Mapper(extract, records).run()
    return extract


def _load_input(path: Path, root: str | Path | None, extract: Extract, records: list[_Record]) -> None:
    name = display_name(path, root)
    rows_before = extract.rows_in
    family = _load_file(path, name, extract, records)
    extract.inputs.append(
        {"path": name, "role": "records", "table": family, "rows": extract.rows_in - rows_before}
    )


# --------------------------------------------------------------------------- parallel read


@dataclass
class FhirPart:
    """One file read and mapped on its own (:func:`read_fhir_file`), with what
    :func:`merge_fhir_parts` needs to tell whether that is the file's share of reading all files.

    Attributes:
        extract: the file's extract.
        marks: ``(rejects, dropped)`` recorded when each mapping phase began: the resource check,
            Patients, Encounters, the rest (before the first, the file was loaded).
        defines: the reference keys the file's resources define (``("url", fullUrl)``,
            ``("type_id", (type, id))``, ``("identifier", (type, system, value))``) and its accepted
            Patients and Encounters (``("patient", id)``, ``("encounter", id)``).
        lookups: the keys its references looked up, found or not (same shapes).
    """

    extract: Extract
    marks: list[tuple[int, int]]
    defines: set[tuple[str, Any]]
    lookups: set[tuple[str, Any]]


def fhir_tasks(
    paths: Sequence[str | Path], *, root: str | Path | None = None
) -> tuple[Extract, list[Callable[[], FhirPart]]]:
    """:func:`read_fhir` as one task per file for an executor; :func:`merge_fhir_parts` joins them.

    Returns an empty extract and the tasks (the files as :func:`read_fhir` finds them).
    """
    return Extract.empty("fhir"), [functools.partial(read_fhir_file, p, root=root) for p in _collect(paths)]


def read_fhir_file(path: str | Path, *, root: str | Path | None = None) -> FhirPart:
    """Read and map one FHIR file as if it were the only input (a task of :func:`fhir_tasks`)."""
    extract = Extract.empty("fhir")
    records: list[_Record] = []
    _load_input(Path(path), root, extract, records)
    mapper = _Mapper(extract, records, track=True)
    mapper.run()
    assert mapper.defines is not None and mapper.lookups is not None
    return FhirPart(extract, mapper.marks, mapper.defines, mapper.lookups)


def merge_fhir_parts(head: Extract, parts: Sequence[FhirPart]) -> Extract | None:
    """What :func:`read_fhir` returns for all the parts' files, or None when they are not independent.

    Files read alone give the same rows, rejects and drops as read together when no file looks up
    a reference key (a ``fullUrl``, a type and id, an identifier, an accepted Patient or Encounter)
    that another file defines, and no Patient or Encounter is accepted in two files (keys defined
    in several files but never looked up, such as the placeholder identifier on every Synthea
    ExplanationOfBenefit, do not matter). Then the merge keeps :func:`read_fhir`'s order:
    tables sorted by file and record, rejects and dropped records by phase (loading, resource
    check, Patients, Encounters, the rest), within a phase in file order. Otherwise (e.g. an
    NDJSON bulk export, whose ``Observation.ndjson`` references ``Patient.ndjson``) it returns None
    and the files must be read together.
    """
    owners: dict[tuple[str, Any], list[int]] = {}
    for i, part in enumerate(parts):
        for key in part.defines:
            owners.setdefault(key, []).append(i)
            if key[0] in ("patient", "encounter") and len(owners[key]) > 1:
                log.info("fhir: %s is accepted in two files: reading the files together", key)
                return None
    for i, part in enumerate(parts):
        for key in part.lookups:
            if any(j != i for j in owners.get(key, ())):
                log.info(
                    "fhir: a file looks up %s, which another file defines: reading the files together", key
                )
                return None
    merged = Extract.concat([head, *(p.extract for p in parts)])
    # rejects and drops are recorded one at a time (never as frames): reorder them phase by phase
    for attr, k in (("_rejects", 0), ("_dropped", 1)):
        bounds = [[0, *(m[k] for m in p.marks), len(getattr(p.extract, attr))] for p in parts]
        setattr(
            merged,
            attr,
            [
                item
                for phase in range(len(PHASES))
                for p, b in zip(parts, bounds)
                for item in getattr(p.extract, attr)[b[phase] : b[phase + 1]]
            ],
        )
    merged.tables = {
        t: merged.tables[t].sort(["source_file", "source_row"], maintain_order=True)
        for t in RAW_COLUMNS
        if t in merged.tables
    }
    return merged


# --------------------------------------------------------------------------- files


def is_fhir_file(path: Path) -> bool:
    name = path.name.lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.endswith(_JSON_SUFFIXES)


def _collect(paths: Sequence[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and is_fhir_file(f))
            if not found:
                msg = f"fhir: no *.json/*.ndjson files (optionally .gz/.zst) under folder {path}"
                raise InputError(msg)
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            msg = f"fhir: input {path} does not exist"
            raise InputError(msg)
    if not out:
        msg = "fhir: no input files given"
        raise InputError(msg)
    seen: set[Path] = set()
    unique = []
    for p in sorted(out, key=lambda q: str(q)):
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _json_loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_bad_constant)
    except RecursionError:
        msg = "JSON nested too deeply"
        raise ValueError(msg) from None


def _bad_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _load_file(path: Path, name: str, extract: Extract, out: list[_Record]) -> str:
    """Append the file's records to ``out``; returns the resource family for ``inputs``."""
    data, error = read_bytes(path)
    lower = path.name.lower()
    for suffix in _COMPRESSED:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    start = len(out)
    if lower.endswith((".ndjson", ".jsonl")):
        _load_ndjson(data, error, name, extract, out)
    else:
        _load_json(data, error, name, extract, out)
    added = out[start:]
    if any(r.full_url is not None for r in added):
        return "Bundle"
    types = sorted({str(r.resource.get("resourceType")) for r in added if isinstance(r.resource, dict)})
    if len(types) == 1:
        return types[0]
    return "mixed" if types else "none"


def _load_json(data: bytes, error: str | None, name: str, extract: Extract, out: list[_Record]) -> None:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        doc = _json_loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        extract.rows_in += 1
        if error:
            extract.reject(name, None, table="fhir", reason="truncated", error=f"{name}: {error}")
        else:
            extract.reject(
                name, None, table="fhir", reason="bad_json",
                error=f"{name}: not valid JSON: {exc}", raw=data[:200],
            )  # fmt: skip
        return
    if error:
        log.warning("fhir: %s: %s, but the decoded part is complete JSON; reading it", name, error)
    counter = [0]
    if isinstance(doc, list):
        for item in doc:
            _add_resource(item, name, None, None, extract, out, counter)
    else:
        _add_resource(doc, name, None, None, extract, out, counter)


def _load_ndjson(data: bytes, error: str | None, name: str, extract: Extract, out: list[_Record]) -> None:
    if error:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    counter = [0]
    for i, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            doc = _json_loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            extract.rows_in += 1
            extract.reject(
                name, counter[0], line=i, table="fhir", reason="bad_json",
                error=f"{name} line {i}: not valid JSON: {exc}: {line[:80]!r}", raw=line,
            )  # fmt: skip
            counter[0] += 1
            continue
        _add_resource(doc, name, i, line, extract, out, counter)
    if error:
        extract.rows_in += 1
        extract.reject(name, None, table="fhir", reason="truncated", error=f"{name}: {error}")


def _add_resource(
    doc: Any,
    name: str,
    line: int | None,
    raw: bytes | None,
    extract: Extract,
    out: list[_Record],
    counter: list[int],
) -> None:
    """One JSON value: a Bundle (one record per entry) or a single resource (one record)."""
    if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
        entries = doc.get("entry")
        if entries is None or entries == []:
            # no entry to count: the Bundle itself is the record, so it does not vanish silently
            extract.rows_in += 1
            extract.drop(
                name, counter[0], table="Bundle", reason="empty_bundle",
                detail=f"{name}{_at_line(line)}: Bundle has no entries",
            )  # fmt: skip
            counter[0] += 1
            return
        if not isinstance(entries, list):
            extract.rows_in += 1
            extract.reject(
                name, counter[0], line=line, table="Bundle", reason="wrong_type",
                error=f"{name}{_at_line(line)}: Bundle.entry is {type(entries).__name__}, not a list",
            )  # fmt: skip
            counter[0] += 1
            return
        for entry in entries:
            extract.rows_in += 1
            row = counter[0]
            counter[0] += 1
            if not isinstance(entry, dict):
                extract.reject(
                    name, row, line=line, table="Bundle", reason="wrong_type",
                    error=f"{name}{_at_line(line)} entry {row}: entry is {type(entry).__name__}, not an object",
                )  # fmt: skip
                continue
            full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            out.append(_Record(name, row, line, entry.get("resource"), full_url or "", raw))
        return
    extract.rows_in += 1
    out.append(_Record(name, counter[0], line, doc, None, raw))
    counter[0] += 1


def _at_line(line: int | None) -> str:
    return f" line {line}" if line is not None else ""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class When:
    """A FHIR date, dateTime or instant: its UTC instant (a partial date: midnight UTC of its first
    day), the calendar date as written (before any offset is applied) and its precision (``year``,
    ``month``, ``day`` or ``time``)."""

    utc: datetime
    local: date
    precision: str


def parse_datetime(value: Any, where: str, element: str) -> datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime (None when absent)."""
    when = parse_when(value, where, element)
    return None if when is None else when.utc


def parse_when(value: Any, where: str, element: str) -> When | None:
    """A FHIR date/dateTime/instant as a :class:`When` (None when absent).

    Example:
        >>> w = parse_when("2015-12-31T23:30:00-05:00", "w", "x")
        >>> w.utc.isoformat(), w.local.isoformat(), w.precision
        ('2016-01-01T04:30:00+00:00', '2015-12-31', 'time')
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject("wrong_type", f"{where}: {element} {value!r} is not a date string")
    m = _DATETIME.match(value.strip())
    if not m:
        raise _Reject("bad_date", f"{where}: {element} {value!r} is not a FHIR date/dateTime")
    g = m.groupdict()
    try:
        micro = round(float(g["f"]) * 1_000_000) if g["f"] else 0
        dt = datetime(
            int(g["y"]), int(g["m"] or 1), int(g["d"] or 1),
            int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0), min(micro, 999_999),
        )  # fmt: skip
    except ValueError as exc:
        raise _Reject("bad_date", f"{where}: {element} {value!r} is not a valid date ({exc})") from None
    tz = g["tz"]
    if tz is None or tz == "Z":
        offset = timedelta(0)
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    precision = "time" if g["H"] else "day" if g["d"] else "month" if g["m"] else "year"
    return When((dt - offset).replace(tzinfo=timezone.utc), dt.date(), precision)


def _number(value: Any, where: str, element: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        raise _Reject("wrong_type", f"{where}: {element} {value!r} is not a number")
    try:
        out = float(value)
    except ValueError:
        raise _Reject("bad_number", f"{where}: {element} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise _Reject("bad_number", f"{where}: {element} {value!r} is not a finite number")
    return out


def _obj(value: Any, where: str, element: str) -> dict:
    """``value`` when it is a JSON object, {} when absent; a reject for any other type."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Reject("wrong_type", f"{where}: {element} is {type(value).__name__}, not an object")
    return value


def _list(value: Any, where: str, element: str) -> list:
    """FHIR arrays; a lone object is accepted as a one-item list."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise _Reject("wrong_type", f"{where}: {element} is {type(value).__name__}, not an array")
    return value


def _str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- mapping


class _Mapper:
    """Maps the loaded records. With ``track``, it also notes the reference keys the records define
    and the ones their references look up (see :class:`FhirPart`)."""

    def __init__(self, extract: Extract, records: list[_Record], *, track: bool = False) -> None:
        self.extract = extract
        self.records = records
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in RAW_COLUMNS}
        self.by_url: dict[str, dict] = {}
        self.by_type_id: dict[tuple[str, str], dict] = {}
        self.by_identifier: dict[tuple[str, str, str], dict] = {}
        self.patients: set[str] = set()
        self.encounters: set[str] = set()
        self.marks: list[tuple[int, int]] = []
        self.defines: set[tuple[str, Any]] | None = set() if track else None
        self.lookups: set[tuple[str, Any]] | None = set() if track else None

    # -- driver --------------------------------------------------------------------------------

    def _mark(self) -> None:
        self.marks.append((len(self.extract._rejects), len(self.extract._dropped)))

    def run(self) -> None:
        self._mark()
        valid: list[_Record] = []
        for rec in self.records:
            res = rec.resource
            if res is None:
                self.extract.drop(
                    rec.file, rec.row, table="Bundle", reason="no_resource",
                    detail=f"{rec.where}: entry has no resource",
                )  # fmt: skip
                continue
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                what = type(res).__name__ if not isinstance(res, dict) else "object without resourceType"
                self._reject(rec, "wrong_type", f"{rec.where}: expected a FHIR resource, got {what}")
                continue
            valid.append(rec)
            self._index(rec)
        # Patients first, then Encounters, then the rest (a stable order within each)
        phases: list[list[_Record]] = [[], [], []]
        order = {"Patient": 0, "Encounter": 1}
        for rec in valid:
            phases[order.get(rec.resource["resourceType"], 2)].append(rec)
        for phase in phases:
            self._mark()
            for rec in phase:
                self._map(rec)
        if self.defines is not None:
            for kind, index in (
                ("url", self.by_url),
                ("type_id", self.by_type_id),
                ("identifier", self.by_identifier),
            ):
                self.defines.update((kind, key) for key in index)
            self.defines.update(("patient", p) for p in self.patients)
            self.defines.update(("encounter", e) for e in self.encounters)
        self.extract.tables = {
            t: conform_raw(t, pl.DataFrame(rows, schema=RAW_COLUMNS[t], orient="row")).sort(
                ["source_file", "source_row"], maintain_order=True
            )
            for t, rows in self.rows.items()
            if rows
        }

    def _index(self, rec: _Record) -> None:
        res = rec.resource
        rtype = res["resourceType"]
        rid = res.get("id") if isinstance(res.get("id"), str) else None
        if rid is None and rec.full_url and rec.full_url.startswith("urn:uuid:"):
            rid = rec.full_url[len("urn:uuid:") :]
        if rid is None:
            return
        res.setdefault("id", rid)
        if rec.full_url:
            self.by_url.setdefault(rec.full_url, res)
        self.by_type_id.setdefault((rtype, rid), res)
        ids = res.get("identifier")
        for ident in ids if isinstance(ids, list) else []:
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                system = ident.get("system") if isinstance(ident.get("system"), str) else ""
                self.by_identifier.setdefault((rtype, system, ident["value"]), res)

    def _map(self, rec: _Record) -> None:
        res = rec.resource
        rtype = res["resourceType"]
        try:
            if rtype not in MAPPED:
                detail = f"{rtype} is not mapped to a canonical EHR table"
                if rtype == "Medication":
                    detail = "Medication is a lookup, folded into the resources that reference it"
                raise _Drop("unmapped_resource", detail)
            if res.get("status") == "entered-in-error":
                raise _Drop("entered_in_error", f"{rtype}.status is entered-in-error")
            rows = getattr(self, f"_{rtype}")(rec, res)
        except _Reject as exc:
            self._reject(rec, exc.reason, exc.error, table=rtype)
            return
        except _Drop as exc:
            self.extract.drop(
                rec.file, rec.row, source_ref=_ref_of(res), table=rtype, reason=exc.reason, detail=exc.detail
            )
            self.extract.counters[f"dropped:{rtype}:{exc.reason}"] += 1
            return
        for table, row in rows:
            for key in [k for k, v in row.items() if isinstance(v, When)]:
                when = row[key]
                row[key] = when.utc
                row[f"{key}_local"] = when.local
                row[f"{key}_precision"] = when.precision
            row["source_file"] = rec.file
            row["source_row"] = rec.row
            row["source_ref"] = _ref_of(res)
            self.rows[table].append(row)

    def _reject(self, rec: _Record, reason: str, error: str, *, table: str = "fhir") -> None:
        raw = rec.raw
        if raw is None:
            try:
                raw = json.dumps(rec.resource, default=str).encode()
            except (TypeError, ValueError):
                raw = None
        self.extract.reject(
            rec.file, rec.row, line=rec.line, table=table, reason=reason, error=error, raw=raw
        )
        self.extract.counters[f"rejected:{table}:{reason}"] += 1

    # -- references ----------------------------------------------------------------------------

    def _resolve(self, ref: Any, types: tuple[str, ...], container: dict | None = None) -> dict | None:
        """The resource a Reference points to (or None)."""
        if not isinstance(ref, dict):
            return None
        target = ref.get("reference")
        if not isinstance(target, str) or not target:
            ident = ref.get("identifier")
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                system = ident.get("system") if isinstance(ident.get("system"), str) else ""
                for t in types:
                    hit = self._get("identifier", self.by_identifier, (t, system, ident["value"]))
                    if hit is not None:
                        return hit
            return None
        if target.startswith("#") and container is not None:
            for c in container.get("contained") or []:
                if isinstance(c, dict) and c.get("id") == target[1:]:
                    return c
            return None
        hit = self._get("url", self.by_url, target)
        if hit is not None:
            return hit if hit.get("resourceType") in types else None
        if "?" in target:
            rtype, _, query = target.partition("?")
            rtype = rtype.rsplit("/", 1)[-1]
            if rtype not in types:
                return None
            for part in query.split("&"):
                key, _, value = part.partition("=")
                if key == "identifier" and value:
                    system, bar, val = value.rpartition("|")
                    if not bar:
                        system, val = "", value
                    return self._get("identifier", self.by_identifier, (rtype, system, val))
            return None
        parts = [p for p in target.split("/") if p]
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-2] in types:
            return self._get("type_id", self.by_type_id, (parts[-2], parts[-1]))
        return None

    def _get(self, kind: str, index: dict, key: Any) -> dict | None:
        if self.lookups is not None:
            self.lookups.add((kind, key))
        return index.get(key)

    def _accepted(self, kind: str, accepted: set[str], rid: Any) -> bool:
        """``rid in accepted`` (the accepted Patients or Encounters, ``kind``), noted as a lookup."""
        if self.lookups is not None:
            self.lookups.add((kind, rid))
        return rid in accepted

    def _patient_of(self, rec: _Record, res: dict, element: str = "subject") -> str:
        ref = res.get(element)
        if not isinstance(ref, dict) or not (ref.get("reference") or ref.get("identifier")):
            raise _Reject(
                "missing_subject", f"{rec.where}: {res['resourceType']}/{res.get('id')} has no {element}"
            )
        target = self._resolve(ref, ("Patient",), res)
        if target is None or not self._accepted("patient", self.patients, target.get("id")):
            raise _Reject(
                "unknown_patient",
                f"{rec.where}: {res['resourceType']}.{element} {_show(ref)} is not an accepted Patient "
                "in the inputs",
            )
        return target["id"]

    def _encounter_of(self, rec: _Record, res: dict, ref: Any, element: str) -> str | None:
        if ref is None:
            return None
        if not isinstance(ref, dict):
            raise _Reject("wrong_type", f"{rec.where}: {element} is {type(ref).__name__}, not a Reference")
        if not (ref.get("reference") or ref.get("identifier")):
            return None
        target = self._resolve(ref, ("Encounter",), res)
        if target is None or not self._accepted("encounter", self.encounters, target.get("id")):
            raise _Reject(
                "dangling_reference",
                f"{rec.where}: {res['resourceType']}.{element} {_show(ref)} is not an accepted Encounter "
                "in the inputs",
            )
        return target["id"]

    # -- codes ---------------------------------------------------------------------------------

    def _coding(
        self, concept: Any, where: str, element: str, *, clinical: bool = False
    ) -> tuple[str | None, str | None, str | None]:
        """(code, system, display) of a CodeableConcept: the first coding with a known system,
        else the first coding; display falls back to the concept's text. Unknown systems of
        ``clinical`` codes (the ones that fill ``code``/``reason_code`` columns) are counted."""
        concept = _obj(concept, where, element)
        codings = [c for c in _list(concept.get("coding"), where, f"{element}.coding") if isinstance(c, dict)]
        chosen = next(
            (
                c
                for c in codings
                if isinstance(c.get("system"), str) and c["system"] in SYSTEM_URIS and c.get("code")
            ),
            None,
        )
        if chosen is None:
            chosen = next((c for c in codings if c.get("code")), None)
        text = _str(concept.get("text"))
        if chosen is None:
            return None, None, next((_str(c.get("display")) for c in codings if c.get("display")), text)
        system_uri = chosen.get("system")
        system = SYSTEM_URIS.get(system_uri) if isinstance(system_uri, str) else None
        if system is None:
            system = "local"
            if clinical:
                self.extract.counters[f"unknown_code_system:{system_uri}"] += 1
        return _str(chosen.get("code")), system, _str(chosen.get("display")) or text

    def _required_code(self, rec: _Record, res: dict, element: str) -> tuple[str, str | None, str | None]:
        code, system, display = self._coding(res.get(element), rec.where, element, clinical=True)
        if code is None:
            raise _Reject(
                "missing_code",
                f"{rec.where}: {res['resourceType']}/{res.get('id')} has no {element} coding with a code "
                f"({_show(res.get(element))})",
            )
        return code, system, display

    def _first_code(
        self, concepts: Any, where: str, element: str, *, clinical: bool = False
    ) -> tuple[str | None, str | None, str | None]:
        for i, concept in enumerate(_list(concepts, where, element)):
            code, system, display = self._coding(concept, where, f"{element}[{i}]", clinical=clinical)
            if code is not None:
                return code, system, display
        return None, None, None

    def _reason(self, rec: _Record, res: dict) -> tuple[str | None, str | None, str | None]:
        code = self._first_code(res.get("reasonCode"), rec.where, "reasonCode", clinical=True)
        if code[0] is not None:
            return code
        for ref in _list(res.get("reasonReference"), rec.where, "reasonReference"):
            target = self._resolve(ref, ("Condition", "Observation", "Procedure"), res)
            if target is None:
                self.extract.counters["unresolved_reason_reference"] += 1
                continue
            code = self._coding(target.get("code"), rec.where, "reasonReference.code", clinical=True)
            if code[0] is not None:
                return code
        return None, None, None

    def _record_id(self, rec: _Record, res: dict) -> str:
        rid = res.get("id")
        if isinstance(rid, str) and rid:
            return rid
        return f"{rec.file}#{rec.row}"

    def _time(self, rec: _Record, res: dict, prefix: str) -> tuple[When | None, When | None]:
        """``<prefix>DateTime`` / ``<prefix>Period`` / ``<prefix>Instant`` / ``<prefix>Date``."""
        w = rec.where
        for suffix in ("DateTime", "Instant", "Date"):
            if res.get(prefix + suffix) is not None:
                return self._dt(res.get(prefix + suffix), w, prefix + suffix), None
        period = _obj(res.get(prefix + "Period"), w, prefix + "Period")
        start = self._dt(period.get("start"), w, f"{prefix}Period.start")
        end = self._dt(period.get("end"), w, f"{prefix}Period.end")
        return start, end

    def _dt(self, value: Any, where: str, element: str) -> When | None:
        out = parse_when(value, where, element)
        if isinstance(value, str) and "T" in value and not re.search(r"(Z|[+-]\d{2}:?\d{2})$", value):
            self.extract.counters["naive_datetime"] += 1
        return out

    # -- resources -----------------------------------------------------------------------------

    def _Patient(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        pid = res.get("id")
        if not isinstance(pid, str) or not pid:
            raise _Reject("missing_id", f"{w}: Patient has no id (and no urn:uuid fullUrl)")
        if self._accepted("patient", self.patients, pid):
            raise _Reject("duplicate_id", f"{w}: Patient/{pid} repeats an earlier Patient")
        birth = self._dt(res.get("birthDate"), w, "birthDate")
        death = self._dt(res.get("deceasedDateTime"), w, "deceasedDateTime")
        deceased: bool | None = None
        if death is not None:
            deceased = True
        elif "deceasedBoolean" in res:
            if not isinstance(res["deceasedBoolean"], bool):
                raise _Reject(
                    "wrong_type", f"{w}: deceasedBoolean {res['deceasedBoolean']!r} is not a boolean"
                )
            deceased = res["deceasedBoolean"]
        row: dict[str, Any] = {
            "patient_id": pid,
            "gender": (_str(res.get("gender")) or "").lower() or None,
            "birth_date": birth,
            "death_date": death,
            "deceased": deceased,
        }
        relatives: list[str] = []  # names of relatives and contacts: PHI to scrub from free text
        exts = [e for e in _list(res.get("extension"), w, "extension") if isinstance(e, dict)]
        for e in exts:
            url = e.get("url")
            if url == RACE_URL:
                row["race"] = _omb(e, RACE_CODES)
            elif url == ETHNICITY_URL:
                row["ethnicity"] = _omb(e, ETHNICITY_CODES)
            elif url == BIRTHPLACE_URL:
                addr = _obj(e.get("valueAddress"), w, "birthPlace.valueAddress")
                parts = [_str(addr.get(k)) for k in ("city", "state", "country")]
                row["birthplace"] = ", ".join(p for p in parts if p) or None
            elif url == MAIDEN_NAME_URL and isinstance(e.get("valueString"), str):
                relatives.append(e["valueString"])
        marital = _obj(res.get("maritalStatus"), w, "maritalStatus")
        code, _, display = self._coding(marital, w, "maritalStatus") if marital else (None, None, None)
        row["marital_status"] = code or display
        for comm in _list(res.get("communication"), w, "communication"):  # preferred, else first
            if isinstance(comm, dict) and ("language" not in row or comm.get("preferred") is True):
                code, _, display = self._coding(comm.get("language"), w, "communication.language")
                row["language"] = code or display
                if comm.get("preferred") is True:
                    break
        # names
        names = [n for n in _list(res.get("name"), w, "name") if isinstance(n, dict)]
        official = next((n for n in names if n.get("use") == "official"), None) or next(
            (n for n in names if n.get("use") not in ("maiden", "old", "nickname")), None
        )
        if official is not None:
            given = [g for g in _list(official.get("given"), w, "name.given") if isinstance(g, str)]
            family = _str(official.get("family"))
            row["given"] = " ".join(given) or None
            row["family"] = family
            row["prefix"] = (
                " ".join(p for p in _list(official.get("prefix"), w, "name.prefix") if isinstance(p, str))
                or None
            )
            row["suffix"] = (
                " ".join(s for s in _list(official.get("suffix"), w, "name.suffix") if isinstance(s, str))
                or None
            )
            row["name"] = (
                _str(official.get("text")) or " ".join([*given, *([family] if family else [])]) or None
            )
        maiden = next((n for n in names if n.get("use") == "maiden"), None)
        if maiden is not None:
            row["maiden"] = _str(maiden.get("family"))
        for contact in _list(res.get("contact"), w, "contact"):
            cname = contact.get("name") if isinstance(contact, dict) else None
            if isinstance(cname, dict):
                parts = [
                    cname.get("text"),
                    *_list(cname.get("given"), w, "contact.name.given"),
                    cname.get("family"),
                ]
                relatives += [x for x in parts if isinstance(x, str) and x.strip()]
        row["relatives"] = " ".join(relatives) or None
        # contact
        for t in _list(res.get("telecom"), w, "telecom"):
            if isinstance(t, dict) and isinstance(t.get("value"), str):
                if t.get("system") == "phone" and "phone" not in row:
                    row["phone"] = t["value"]
                elif t.get("system") == "email" and "email" not in row:
                    row["email"] = t["value"]
        addresses = [a for a in _list(res.get("address"), w, "address") if isinstance(a, dict)]
        address = next((a for a in addresses if a.get("use") == "home"), addresses[0] if addresses else None)
        if address is not None:
            state = _str(address.get("state"))
            row["state"] = US_STATE_CODES.get(state.lower(), state) if state else None
            row["zip"] = _str(address.get("postalCode"))
            row["country"] = _str(address.get("country"))
            lines = [x for x in _list(address.get("line"), w, "address.line") if isinstance(x, str)]
            row["address"] = " ".join(lines) or None
            row["city"] = _str(address.get("city"))
            row["county"] = _str(address.get("district"))
            for e in _list(address.get("extension"), w, "address.extension"):
                if isinstance(e, dict) and e.get("url") == GEOLOCATION_URL:
                    for sub in _list(e.get("extension"), w, "geolocation.extension"):
                        if isinstance(sub, dict) and sub.get("url") in ("latitude", "longitude"):
                            key = "lat" if sub["url"] == "latitude" else "lon"
                            row[key] = _number(sub.get("valueDecimal"), w, f"geolocation.{sub['url']}")
        # identifiers
        for ident in _list(res.get("identifier"), w, "identifier"):
            if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
                continue
            type_code, _, _ = (
                self._coding(ident.get("type"), w, "identifier.type")
                if ident.get("type")
                else (None, None, None)
            )
            key = None
            if ident.get("system") == SSN_SYSTEM or type_code == "SS":
                key = "ssn"
            elif type_code == "MR":
                key = "mrn"
            elif type_code == "DL":
                key = "drivers"
            elif type_code == "PPN":
                key = "passport"
            if key and key not in row:
                row[key] = ident["value"]
        self.patients.add(pid)
        return [("patient", row)]

    def _Encounter(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        eid = res.get("id")
        if not isinstance(eid, str) or not eid:
            raise _Reject("missing_id", f"{w}: Encounter has no id (and no urn:uuid fullUrl)")
        if self._accepted("encounter", self.encounters, eid):
            raise _Reject("duplicate_id", f"{w}: Encounter/{eid} repeats an earlier Encounter")
        patient = self._patient_of(rec, res)
        period = _obj(res.get("period"), w, "period")
        cls = res.get("class")
        cls_code = None
        if isinstance(cls, dict):
            cls_code = _str(cls.get("code")) or _str(cls.get("display"))
        elif isinstance(cls, list):  # R5 shape: class is a list of CodeableConcepts
            cls_code = self._first_code(cls, w, "class")[0]
        elif cls is not None:
            raise _Reject("wrong_type", f"{w}: Encounter.class is {type(cls).__name__}, not a Coding")
        code, system, display = self._first_code(res.get("type"), w, "type", clinical=True)
        reason_code, reason_system, reason_display = self._reason(rec, res)
        row = {
            "patient_id": patient,
            "encounter_id": eid,
            "start_time": self._dt(period.get("start"), w, "period.start"),
            "end_time": self._dt(period.get("end"), w, "period.end"),
            "status": _str(res.get("status")),
            "class": ENCOUNTER_CLASSES.get(cls_code.upper(), cls_code.lower()) if cls_code else None,
            "code": code,
            "code_system": system,
            "display": display,
            "reason_code": reason_code,
            "reason_system": reason_system,
            "reason_display": reason_display,
            "source_value": code,
        }
        self.encounters.add(eid)
        return [("encounter", row)]

    def _Condition(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        patient = self._patient_of(rec, res)
        code, system, display = self._required_code(rec, res, "code")
        encounter = self._encounter_of(rec, res, res.get("encounter"), "encounter")
        start, _ = self._time(rec, res, "onset")
        end_dt, end_period = self._time(rec, res, "abatement")
        category = self._first_code(res.get("category"), w, "category")[0]
        row = {
            "patient_id": patient,
            "record_id": self._record_id(rec, res),
            "encounter_id": encounter,
            "start_time": start,
            "end_time": end_period or end_dt,
            "category": category,
            "code": code,
            "code_system": system,
            "display": display,
            "source_value": code,
        }
        return [("condition", row)]

    def _Observation(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        code, system, display = self._required_code(rec, res, "code")
        patient = self._patient_of(rec, res)
        encounter = self._encounter_of(rec, res, res.get("encounter"), "encounter")
        time, _ = self._time(rec, res, "effective")
        if time is None:
            time = self._dt(res.get("issued"), w, "issued")
        category = self._first_code(res.get("category"), w, "category")[0]
        rid = self._record_id(rec, res)
        base = {"patient_id": patient, "encounter_id": encounter, "time": time, "category": category}
        rows: list[tuple[str, dict]] = []
        value = self._value(res, w, "Observation")
        components = list(_list(res.get("component"), w, "component"))
        if value is not None or not components:
            if value is None:
                if res.get("hasMember"):
                    raise _Drop(
                        "panel_without_value", "Observation groups others (hasMember) and has no value"
                    )
                self.extract.counters["observation_without_value"] += 1
            row = {**base, "record_id": rid, "code": code, "code_system": system, "display": display}
            row.update(value or {})
            row.update(self._ranges(res, w, "Observation"))
            rows.append(("measurement", row))
        seen: dict[str, int] = {}
        for i, comp in enumerate(components):
            if not isinstance(comp, dict):
                raise _Reject("wrong_type", f"{w}: component[{i}] is {type(comp).__name__}, not an object")
            c_code, c_system, c_display = self._coding(
                comp.get("code"), w, f"component[{i}].code", clinical=True
            )
            if c_code is None:
                raise _Reject("missing_code", f"{w}: Observation/{rid} component[{i}] has no code")
            seen[c_code] = seen.get(c_code, 0) + 1
            suffix = c_code if seen[c_code] == 1 else f"{c_code}#{seen[c_code]}"
            row = {
                **base,
                "record_id": f"{rid}#{suffix}",
                "code": c_code,
                "code_system": c_system,
                "display": c_display,
            }
            row.update(self._value(comp, w, f"component[{i}]") or {})
            row.update(self._ranges(comp, w, f"component[{i}]"))
            rows.append(("measurement", row))
        return rows

    def _value(self, res: dict, w: str, element: str) -> dict[str, Any] | None:
        """The measurement columns of ``value[x]`` (None when there is no value)."""
        if "valueQuantity" in res:
            q = _obj(res["valueQuantity"], w, f"{element}.valueQuantity")
            raw = q.get("value")
            out: dict[str, Any] = {
                "value": _number(raw, w, f"{element}.valueQuantity.value"),
                "source_value": _str(raw),
                "source_unit": _str(q.get("unit")) or _str(q.get("code")),
                "source_unit_ucum": _str(q.get("code")) if q.get("system") == UCUM else None,
            }
            if q.get("comparator"):
                out["source_value"] = f"{q['comparator']}{_str(raw) or ''}"
                self.extract.counters["value_comparator"] += 1
            return out
        if "valueCodeableConcept" in res:
            code, _, display = self._coding(res["valueCodeableConcept"], w, f"{element}.valueCodeableConcept")
            return {"value_text": display or code, "source_value": code or display}
        if "valueInteger" in res:
            raw = res["valueInteger"]
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise _Reject("wrong_type", f"{w}: {element}.valueInteger {raw!r} is not an integer")
            return {"value": float(raw), "source_value": str(raw)}
        for key in ("valueString", "valueBoolean", "valueDateTime", "valueTime"):
            if key in res:
                raw = res[key]
                if key == "valueBoolean" and not isinstance(raw, bool):
                    raise _Reject("wrong_type", f"{w}: {element}.valueBoolean {raw!r} is not a boolean")
                if key != "valueBoolean" and not isinstance(raw, str):
                    raise _Reject("wrong_type", f"{w}: {element}.{key} {raw!r} is not a string")
                if key == "valueDateTime":
                    parse_datetime(raw, w, f"{element}.valueDateTime")
                text = _str(raw)
                return {"value_text": text, "source_value": text}
        for key, (a, b, sep) in _COMPOUND_VALUES.items():
            if key in res:
                v = _obj(res[key], w, f"{element}.{key}")
                ends = []
                for part in (a, b):
                    x = v.get(part)
                    ends.append(_str(x.get("value")) if isinstance(x, dict) else _str(x))
                text = f"{ends[0] or ''}{sep}{ends[1] or ''}"
                self.extract.counters[f"value_rendered:{key}"] += 1
                return {"value_text": text, "source_value": text}
        return None

    def _ranges(self, res: dict, w: str, element: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        interp = self._first_code(res.get("interpretation"), w, f"{element}.interpretation")
        if interp[0] is not None:
            out["interpretation"] = interp[0]
        ranges = _list(res.get("referenceRange"), w, f"{element}.referenceRange")
        if ranges and isinstance(ranges[0], dict):
            low = _obj(ranges[0].get("low"), w, "referenceRange.low")
            high = _obj(ranges[0].get("high"), w, "referenceRange.high")
            out["ref_low"] = _number(low.get("value"), w, "referenceRange.low.value")
            out["ref_high"] = _number(high.get("value"), w, "referenceRange.high.value")
        return out

    def _medication_code(self, rec: _Record, res: dict) -> tuple[str, str | None, str | None]:
        if res.get("medicationCodeableConcept") is not None:
            return self._required_code(rec, res, "medicationCodeableConcept")
        ref = res.get("medicationReference")
        if ref is None:
            raise _Reject(
                "missing_code", f"{rec.where}: {res['resourceType']}/{res.get('id')} has no medication[x]"
            )
        target = self._resolve(ref, ("Medication",), res)
        if target is None:
            raise _Reject(
                "dangling_reference",
                f"{rec.where}: {res['resourceType']}.medicationReference {_show(ref)} is not a Medication "
                "in the inputs",
            )
        code, system, display = self._coding(target.get("code"), rec.where, "Medication.code", clinical=True)
        if code is None:
            raise _Reject(
                "missing_code", f"{rec.where}: referenced Medication/{target.get('id')} has no code coding"
            )
        return code, system, display

    def _dose(self, dosage: dict, w: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dose = dosage.get("dose")
        if dose is None:
            rates = _list(dosage.get("doseAndRate"), w, "dosage.doseAndRate")
            if rates and isinstance(rates[0], dict):
                dose = rates[0].get("doseQuantity")
        if dose is not None:
            dose = _obj(dose, w, "dose")
            out["dose_value"] = _number(dose.get("value"), w, "dose.value")
            out["dose_unit"] = _str(dose.get("code")) or _str(dose.get("unit"))
        if dosage.get("route") is not None:
            code, _, display = self._coding(dosage.get("route"), w, "dosage.route")
            out["route"] = display or code
        return out

    def _MedicationRequest(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        code, system, display = self._medication_code(rec, res)
        patient = self._patient_of(rec, res)
        encounter = self._encounter_of(rec, res, res.get("encounter"), "encounter")
        dispense = _obj(res.get("dispenseRequest"), w, "dispenseRequest")
        validity = _obj(dispense.get("validityPeriod"), w, "dispenseRequest.validityPeriod")
        row: dict[str, Any] = {
            "patient_id": patient,
            "record_id": self._record_id(rec, res),
            "encounter_id": encounter,
            "start_time": self._dt(res.get("authoredOn"), w, "authoredOn"),
            "end_time": self._dt(validity.get("end"), w, "dispenseRequest.validityPeriod.end"),
            "category": "prescription",
            "status": _str(res.get("status")),
            "code": code,
            "code_system": system,
            "display": display,
            "source_value": code,
        }
        dosages = [
            d for d in _list(res.get("dosageInstruction"), w, "dosageInstruction") if isinstance(d, dict)
        ]
        if dosages:
            row.update(self._dose(dosages[0], w))
        return [("medication", row)]

    def _MedicationAdministration(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        code, system, display = self._medication_code(rec, res)
        patient = self._patient_of(rec, res)
        encounter = self._encounter_of(rec, res, res.get("context") or res.get("encounter"), "context")
        start, end = self._time(rec, res, "effective")
        row: dict[str, Any] = {
            "patient_id": patient,
            "record_id": self._record_id(rec, res),
            "encounter_id": encounter,
            "start_time": start,
            "end_time": end,
            "category": "administration",
            "status": _str(res.get("status")),
            "code": code,
            "code_system": system,
            "display": display,
            "source_value": code,
        }
        if isinstance(res.get("dosage"), dict):
            row.update(self._dose(res["dosage"], w))
        return [("medication", row)]

    def _Immunization(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        code, system, display = self._required_code(rec, res, "vaccineCode")
        patient = self._patient_of(rec, res, "patient")
        encounter = self._encounter_of(rec, res, res.get("encounter"), "encounter")
        if res.get("occurrenceDateTime") is not None:
            start = self._dt(res.get("occurrenceDateTime"), w, "occurrenceDateTime")
        else:
            start = None
            if res.get("occurrenceString") is not None:
                self.extract.counters["immunization_occurrence_string"] += 1
        row: dict[str, Any] = {
            "patient_id": patient,
            "record_id": self._record_id(rec, res),
            "encounter_id": encounter,
            "start_time": start,
            "category": "immunization",
            "status": _str(res.get("status")),
            "code": code,
            "code_system": system,
            "display": display,
            "source_value": code,
        }
        if res.get("doseQuantity") is not None:
            dose = _obj(res.get("doseQuantity"), w, "doseQuantity")
            row["dose_value"] = _number(dose.get("value"), w, "doseQuantity.value")
            row["dose_unit"] = _str(dose.get("code")) or _str(dose.get("unit"))
        if res.get("route") is not None:
            rcode, _, rdisplay = self._coding(res.get("route"), w, "route")
            row["route"] = rdisplay or rcode
        return [("medication", row)]

    def _Procedure(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        code, system, display = self._required_code(rec, res, "code")
        patient = self._patient_of(rec, res)
        encounter = self._encounter_of(rec, res, res.get("encounter"), "encounter")
        start, end = self._time(rec, res, "performed")
        reason_code, reason_system, _ = self._reason(rec, res)
        row = {
            "patient_id": patient,
            "record_id": self._record_id(rec, res),
            "encounter_id": encounter,
            "start_time": start,
            "end_time": end,
            "code": code,
            "code_system": system,
            "display": display,
            "reason_code": reason_code,
            "reason_system": reason_system,
            "source_value": code,
        }
        return [("procedure", row)]

    def _DocumentReference(self, rec: _Record, res: dict) -> list[tuple[str, dict]]:
        w = rec.where
        patient = self._patient_of(rec, res)
        contents = _list(res.get("content"), w, "content")
        if not contents:
            raise _Reject("missing_content", f"{w}: DocumentReference/{res.get('id')} has no content")
        text = None
        for i, content in enumerate(contents):
            att = _obj(_obj(content, w, f"content[{i}]").get("attachment"), w, f"content[{i}].attachment")
            if att.get("data") is None:
                continue
            text = _decode_attachment(att, w, f"content[{i}].attachment")
            break
        if text is None:
            raise _Drop("external_attachment", "DocumentReference has no inline attachment data")
        context = _obj(res.get("context"), w, "context")
        encounters = _list(context.get("encounter"), w, "context.encounter")
        encounter = self._encounter_of(rec, res, encounters[0], "context.encounter") if encounters else None
        time = self._dt(res.get("date"), w, "date")
        if time is None:
            period = _obj(context.get("period"), w, "context.period")
            time = self._dt(period.get("start"), w, "context.period.start")
        code, _, display = self._coding(res.get("type"), w, "type")
        row = {
            "patient_id": patient,
            "record_id": self._record_id(rec, res),
            "encounter_id": encounter,
            "time": time,
            "note_type": display or code,
            "text": text,
        }
        return [("note", row)]


# --------------------------------------------------------------------------- helpers


def _omb(ext: dict, codes: dict[str, str]) -> str | None:
    """A US Core race/ethnicity extension -> a canonical word (OMB category), else its text."""
    text = None
    for sub in ext.get("extension") or []:
        if not isinstance(sub, dict):
            continue
        if sub.get("url") == "ombCategory" and isinstance(sub.get("valueCoding"), dict):
            code = sub["valueCoding"].get("code")
            if code in codes:
                return codes[code]
            text = text or _str(sub["valueCoding"].get("display"))
        elif sub.get("url") == "text":
            text = _str(sub.get("valueString")) or text
    return text.lower() if text else None


def _decode_attachment(att: dict, where: str, element: str) -> str:
    data = att.get("data")
    if not isinstance(data, str):
        raise _Reject("wrong_type", f"{where}: {element}.data is {type(data).__name__}, not a base64 string")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise _Reject(
            "bad_attachment", f"{where}: {element}.data is not base64 ({exc}): {data[:40]!r}"
        ) from None
    content_type = _str(att.get("contentType")) or ""
    m = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
    charset = m.group(1) if m else "utf-8"
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeDecodeError) as exc:
        raise _Reject(
            "bad_attachment", f"{where}: {element}.data does not decode as {charset} text ({exc})"
        ) from None


def _ref_of(res: dict) -> str:
    return f"{res.get('resourceType')}/{res.get('id')}"


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."
