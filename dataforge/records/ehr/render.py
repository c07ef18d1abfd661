"""Rendering de-identified EHR tables into training text and grounded instruction pairs.

``render_text`` writes one document per patient (split into parts of at most ``max_lines`` lines):
demographics, then the record year by year: encounters, diagnoses, procedures, medications and the
last value of each measurement in that year. ``render_instruct`` writes question/answer pairs whose
answers are read off canonical rows (diagnoses in a year, the latest value of a measurement, the
medications of a year, a patient's age group), with the rows given as context.

A code is printed after its display (``Body Weight (LOINC 29463-7)``), or alone when the row has no
display (``LOINC 29463-7``). Medications are listed once per drug name (case and spacing aside),
without the diluents and containers of an IV order (MIMIC's ``Bag``, ``SW``, ``NS``, ``D5W``...,
:func:`is_drug`); an answer lists at most :data:`MAX_LISTED` of them.

Traceability: every number and code in a rendered text comes from a row listed in ``fact_ids``
(the ``record_id``/``encounter_id``/``patient_id`` of the rows used) and is printed by :func:`fmt_value`
or as the row's year or code, so a test can check each one. Counts are never printed (they would
not be a row's value). Only de-identified tables are rendered: no time of day, no dates unless the
run kept them (``date-shift``/``off``), and never a name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import defaultdict
from typing import Any

import polars as pl

log = logging.getLogger(__name__)

MAX_LINES = 60
#: the most medications one answer lists (the rest are summed up as "and others")
MAX_LISTED = 10
_SYSTEM_LABEL = {
    "SNOMED": "SNOMED CT",
    "ICD9CM": "ICD-9-CM",
    "ICD10CM": "ICD-10-CM",
    "ICD9Proc": "ICD-9 procedure",
    "ICD10PCS": "ICD-10-PCS",
}


def fmt_value(v: float | None) -> str:
    """A measurement value as printed in rendered text: up to 4 decimals, no trailing zeros."""
    if v is None:
        return ""
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _system(system: str | None) -> str:
    return _SYSTEM_LABEL.get(system or "", system or "code")


def _code(system: str | None, code: str | None, display: str | None) -> str:
    """`` (LOINC 29463-7)`` after a display; nothing when there is no code, or no display (the
    label is then the code itself)."""
    if not code or not (display or "").strip():
        return ""
    return f" ({_system(system)} {code})"


def _label(display: str | None, code: str | None, system: str | None = None) -> str:
    """A row's name: its display, else its code with the system (``LOINC 29463-7``)."""
    if display and display.strip():
        return display.strip()
    return f"{_system(system)} {code.strip()}" if code and code.strip() else "unknown"


def _named(row: dict[str, Any]) -> str:
    """``Body Weight (LOINC 29463-7)``, or ``LOINC 29463-7`` for a row without a display."""
    display, code, system = row.get("display"), row.get("code"), row.get("code_system")
    return f"{_label(display, code, system)}{_code(system, code, display)}"


# What an IV order lists besides its drug: containers and diluents (MIMIC-IV ``drug_type = BASE``
# rows such as Bag, SW, NS, D5W, 0.9% Sodium Chloride (Mini Bag Plus)) and saline flushes. Matched
# against the whole display, case-insensitively, after dropping a trailing "(...)".
_NOT_A_DRUG = re.compile(
    r"(?:bag|syringe|vial|soln|solution|diluent|sw|sterile water(?: for injection)?|ns|1/2 ?ns"
    r"|d5 ?(?:w|ns|lr|1/2 ?ns)|d10 ?w|lr|lactated ringers?|ringers? lactate"
    r"|iso-osmotic (?:dextrose|sodium chloride)|dextrose (?:5|10)%|(?:5|10)% dextrose"
    r"|(?:sodium chloride|nacl) (?:0\.45|0\.83|0\.9)%|(?:0\.45|0\.83|0\.9)% (?:sodium chloride|nacl))"
    r"(?: flush)?"
)


def is_drug(display: str | None) -> bool:
    """False for the containers and diluents of an IV order (``Bag``, ``SW``, ``NS``, ``D5W``,
    ``0.9% Sodium Chloride (Mini Bag Plus)``, ``Sodium Chloride 0.9%  Flush``); True otherwise.

    Example:
        >>> is_drug("Bag"), is_drug("D5W"), is_drug("Dextrose 50%"), is_drug("Insulin")
        (False, False, True, True)
    """
    if not display:
        return True
    name = re.sub(r"\s+", " ", display).strip().lower()
    name = re.sub(r"\s*\([^()]*\)$", "", name)
    return _NOT_A_DRUG.fullmatch(name) is None


def _medications(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per drug (by display, case and spacing aside; by code without one), first first,
    without containers and diluents."""
    out: dict[Any, dict[str, Any]] = {}
    for r in rows:
        if not is_drug(r.get("display")):
            continue
        display = (r.get("display") or "").strip()
        key = re.sub(r"\s+", " ", display).lower() if display else (r.get("code_system"), r.get("code"))
        out.setdefault(key, r)
    return list(out.values())


def _subject(gender: str | None) -> str:
    """``A female patient``, ``A patient of unknown sex``, ``A patient of other gender``."""
    g = (gender or "").strip().lower()
    if g in ("male", "female"):
        return f"A {g} patient"
    if g in ("", "unknown"):
        return "A patient of unknown sex"
    return f"A patient of {g} gender"


# the columns rendering reads (fewer columns make the row dicts much cheaper to build)
_RENDER_COLUMNS = (
    "patient_id",
    "record_id",
    "encounter_id",
    "year",
    "start_year",
    "class",
    "category",
    "code",
    "code_system",
    "display",
    "value",
    "unit",
    "source_unit",
    "value_text",
)


def _by_patient(tables: dict[str, pl.DataFrame], table: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    f = tables.get(table)
    if f is None or not f.height:
        return out
    f = f.select([c for c in _RENDER_COLUMNS if c in f.columns])
    for row in f.iter_rows(named=True):
        out[row["patient_id"]].append(row)
    return out


def _year(row: dict[str, Any]) -> int | None:
    return row.get("start_year") if "start_year" in row else row.get("year")


def _patient_header(p: dict[str, Any]) -> tuple[str, list[str]]:
    parts = []
    who = _subject(p.get("gender"))
    if p.get("age_90_plus"):
        parts.append(f"{who} aged 90 or older")
    elif p.get("age") is not None:
        born = f", born in {p['birth_year']}" if p.get("birth_year") is not None else ""
        parts.append(f"{who} aged {p['age']} at the last record{born}")
    else:
        parts.append(who)
    extra = [x for x in (p.get("race"), p.get("ethnicity")) if x]
    if extra:
        parts.append("recorded as " + " and ".join(extra))
    if p.get("deceased"):
        parts.append(f"who died in {p['death_year']}" if p.get("death_year") is not None else "who has died")
    if p.get("state"):
        parts.append(f"living in {p['state']}")
    return ", ".join(parts) + ".", [p["patient_id"]]


def _year_lines(
    year: int | None,
    enc: list[dict[str, Any]],
    cond: list[dict[str, Any]],
    proc: list[dict[str, Any]],
    med: list[dict[str, Any]],
    meas: list[dict[str, Any]],
) -> list[tuple[str, list[str]]]:
    lines: list[tuple[str, list[str]]] = []
    when = str(year) if year is not None else "Undated"
    if enc:
        kinds: dict[str, list[str]] = defaultdict(list)
        for e in enc:
            kinds[f"{e.get('class') or 'other'} visit: {_named(e)}"].append(e["encounter_id"])
        for text, ids in sorted(kinds.items()):
            lines.append((f"{when}: {text}.", ids))
    seen: set[tuple[str | None, str | None]] = set()
    for c in cond:
        key = (c.get("code_system"), c.get("code"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(
            (
                f"{when}: diagnosis {_named(c)}.",
                [c["record_id"]],
            )
        )
    seen = set()
    for pr in proc:
        key = (pr.get("code_system"), pr.get("code"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(
            (
                f"{when}: procedure {_named(pr)}.",
                [pr["record_id"]],
            )
        )
    for m in _medications(med):
        what = "immunization" if m.get("category") == "immunization" else "medication"
        lines.append((f"{when}: {what} {_named(m)}.", [m["record_id"]]))
    last: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for m in meas:  # rows are in record order; the last one of a code in a year wins
        last[(m.get("code_system"), m.get("code"))] = m
    for m in last.values():
        if m.get("value") is not None:
            unit = (
                f" {m['unit']}" if m.get("unit") else (f" {m['source_unit']}" if m.get("source_unit") else "")
            )
            val = f"{fmt_value(m['value'])}{unit}"
        elif m.get("value_text"):
            val = str(m["value_text"])
        else:
            continue
        lines.append(
            (
                f"{when}: {_named(m)} = {val}.",
                [m["record_id"]],
            )
        )
    return lines


def render_text(tables: dict[str, pl.DataFrame], *, max_lines: int = MAX_LINES) -> pl.DataFrame:
    """One document (or several parts) per patient: ``id, text, fact_ids, meta``."""
    patients = tables.get("patient")
    ids, texts, facts, metas = [], [], [], []
    if patients is None or not patients.height:
        return _frame(ids, texts, facts, metas)
    per = {
        t: _by_patient(tables, t)
        for t in ("encounter", "condition", "procedure", "medication", "measurement")
    }
    for p in patients.sort("patient_id").iter_rows(named=True):
        pid = p["patient_id"]
        header, header_ids = _patient_header(p)
        years: dict[int | None, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for t, rows in per.items():
            for r in rows.get(pid, []):
                years[_year(r)][t].append(r)
        body: list[tuple[str, list[str]]] = []
        for y in sorted(years, key=lambda v: (v is None, v or 0)):
            g = years[y]
            body += _year_lines(
                y, g["encounter"], g["condition"], g["procedure"], g["medication"], g["measurement"]
            )
        chunks = [body[i : i + max_lines] for i in range(0, len(body), max_lines)] or [[]]
        for part, chunk in enumerate(chunks):
            lines = [header] + [line for line, _ in chunk]
            fact_ids = list(dict.fromkeys(header_ids + [i for _, ids_ in chunk for i in ids_]))
            ids.append(f"ehr:{pid}:{part}")
            texts.append("\n".join(lines))
            facts.append(fact_ids)
            metas.append(
                json.dumps(
                    {"patient_id": pid, "part": part, "parts": len(chunks), "kind": "patient_timeline"}
                )
            )
    return _frame(ids, texts, facts, metas)


def _frame(ids: list[str], texts: list[str], facts: list[list[str]], metas: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": ids, "text": texts, "fact_ids": facts, "meta": metas},
        schema={"id": pl.Utf8, "text": pl.Utf8, "fact_ids": pl.List(pl.Utf8), "meta": pl.Utf8},
    )


def _pick(seed: int, key: str, n: int) -> int:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % n


def render_instruct(tables: dict[str, pl.DataFrame], *, seed: int = 0, per_patient: int = 4) -> pl.DataFrame:
    """Grounded question/answer pairs: ``id, prompt, response, context, fact_ids, meta``.

    Per patient, up to ``per_patient`` questions chosen deterministically from ``seed``: the
    diagnoses of a year, the last value of a measurement, the medications of a year, the age group.
    The context lists the rows the answer is read from.
    """
    out: dict[str, list[Any]] = {k: [] for k in ("id", "prompt", "response", "context", "fact_ids", "meta")}
    patients = tables.get("patient")
    if patients is None or not patients.height:
        return _instruct_frame(out)
    cond = _by_patient(tables, "condition")
    meas = _by_patient(tables, "measurement")
    med = _by_patient(tables, "medication")

    def add(pid: str, kind: str, prompt: str, response: str, context: str, fact_ids: list[str]) -> None:
        out["id"].append(f"ehr-qa:{pid}:{kind}")
        out["prompt"].append(prompt)
        out["response"].append(response)
        out["context"].append(context)
        out["fact_ids"].append(list(dict.fromkeys(fact_ids)))
        out["meta"].append(json.dumps({"patient_id": pid, "kind": kind}))

    for p in patients.sort("patient_id").iter_rows(named=True):
        pid = p["patient_id"]
        header, hid = _patient_header(p)
        made = 0
        # 1. diagnoses in a year
        by_year: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for c in cond.get(pid, []):
            if _year(c) is not None:
                by_year[_year(c)].append(c)
        if by_year and made < per_patient:
            years = sorted(by_year)
            y = years[_pick(seed, f"{pid}:dx", len(years))]
            rows = list({(r.get("code_system"), r.get("code")): r for r in by_year[y]}.values())
            listing = "; ".join(_named(r) for r in rows)
            ctx = sorted((r for r in cond[pid] if _year(r) is not None), key=lambda r: _year(r))[:40]
            context = "\n".join(f"{_year(r)}: diagnosis {_named(r)}." for r in ctx)
            add(
                pid,
                "diagnoses_in_year",
                f"Which diagnoses were recorded for this patient in {y}?",
                f"In {y} the record lists: {listing}.",
                context,
                [r["record_id"] for r in rows + ctx],
            )
            made += 1
        # 2. last value of a measurement
        numeric = [m for m in meas.get(pid, []) if m.get("value") is not None]
        if numeric and made < per_patient:
            codes = sorted(
                {(m.get("code_system"), m.get("code")) for m in numeric},
                key=lambda k: (k[0] or "", k[1] or ""),
            )
            cs, cd = codes[_pick(seed, f"{pid}:lab", len(codes))]
            series = [m for m in numeric if (m.get("code_system"), m.get("code")) == (cs, cd)]
            last = series[-1]
            unit = last.get("unit") or last.get("source_unit") or ""
            name = _label(last.get("display"), cd, cs)
            named = _named(last)
            yr = f" in {_year(last)}" if _year(last) is not None else ""
            context = "\n".join(
                f"{_year(m) if _year(m) is not None else 'Undated'}: {named} = {fmt_value(m['value'])} {m.get('unit') or m.get('source_unit') or ''}".rstrip()
                + "."
                for m in series[-20:]
            )
            add(
                pid,
                "last_measurement",
                f"What was the most recent {name} result for this patient?",
                f"The most recent {named} was {fmt_value(last['value'])}{(' ' + unit) if unit else ''}{yr}.",
                context,
                [m["record_id"] for m in series[-20:]],
            )
            made += 1
        # 3. medications in a year
        myears: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for m in med.get(pid, []):
            if _year(m) is not None:
                myears[_year(m)].append(m)
        myears = {y: rows for y, rows in ((y, _medications(rows)) for y, rows in myears.items()) if rows}
        if myears and made < per_patient:
            years = sorted(myears)
            y = years[_pick(seed, f"{pid}:rx", len(years))]
            rows = myears[y][:MAX_LISTED]
            listing = "; ".join(_named(r) for r in rows)
            if len(myears[y]) > MAX_LISTED:
                listing += "; and others"
            ctx = [r for yr in years for r in myears[yr]][:40]
            context = "\n".join(
                f"{_year(r)}: {'immunization' if r.get('category') == 'immunization' else 'medication'} {_named(r)}."
                for r in ctx
            )
            add(
                pid,
                "medications_in_year",
                f"Which medications or immunizations were given in {y}?",
                f"In {y}: {listing}.",
                context,
                [r["record_id"] for r in rows + ctx],
            )
            made += 1
        # 4. age group
        if made < per_patient and (p.get("age") is not None or p.get("age_90_plus")):
            if p.get("age_90_plus"):
                answer = (
                    "The patient is 90 or older; the exact age is withheld under de-identification rules."
                )
            else:
                answer = f"The patient was {p['age']} years old at the last record."
            add(pid, "age", "How old was the patient at the last record?", answer, header, hid)
    return _instruct_frame(out)


def _instruct_frame(out: dict[str, list[Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        out,
        schema={
            "id": pl.Utf8,
            "prompt": pl.Utf8,
            "response": pl.Utf8,
            "context": pl.Utf8,
            "fact_ids": pl.List(pl.Utf8),
            "meta": pl.Utf8,
        },
    )
