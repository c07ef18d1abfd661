"""Measurement units: raw unit strings -> UCUM, then one canonical unit per code.

:func:`normalize_units` takes a measurement frame (raw columns: ``code_system``, ``code``,
``value``, ``source_unit``, ``source_unit_ucum``, optionally ``ref_low``/``ref_high``) and adds:

* ``unit``: the canonical UCUM code after conversion (null when the unit is unknown or cannot be
  converted);
* ``value`` (and ``ref_low``/``ref_high`` when present): converted, full float precision;
* ``unit_status``: ``canonical`` (already in the canonical unit), ``converted``, ``unknown``
  (unit string not recognised, or no valid conversion: value kept as given) or ``none`` (no unit);
* ``conversion``: null or a readable rule such as ``[lb_av] -> kg x 0.45359237``.

Steps, per distinct (code_system, code, unit) key (then joined back, so the per-row work is
vectorized):

1. The unit string: ``source_unit_ucum`` when present, else ``source_unit``; trimmed. It is mapped
   to UCUM with ``data/units.csv`` (exact alias, then a unique case-insensitive alias; a lone UCUM
   annotation ``{score}`` is kept as is; a declared ``source_unit_ucum`` that is not in the table is
   trusted as given).
2. The target unit: the code's canonical unit in ``data/loinc_units.csv``; when the code has no
   row, the ``fallback_target`` of the unit in ``data/ucum_units.csv`` (customary -> metric only:
   ``[lb_av]`` -> ``kg``, ``[in_i]`` -> ``cm``, ``[degF]`` -> ``Cel``); else the unit itself.
3. The conversion: an analyte row in ``loinc_units.csv`` (mass <-> substance via the molar mass,
   meq <-> mmol via the valence, IU -> U for enzymes); else a pure dimension conversion from
   ``ucum_units.csv`` (same dimension only); else an analyte row reached through a same-dimension
   step (umol/L -> mmol/L -> mg/dL for glucose). Never across dimensions without the analyte: such
   a value keeps its unit string, gets ``unit`` null and status ``unknown``, and is counted.

The counter holds ``unit_converted:<from>-><to>``, ``unit_unknown:<raw unit>``,
``unit_incompatible:<from>-><to>``, ``unit_canonical`` and ``unit_none`` (row counts).
"""

from __future__ import annotations

import collections
import csv
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
ANNOTATION = re.compile(r"^\{[^{}]*\}$")


def _read_table(name: str) -> list[dict[str, str]]:
    with (DATA_DIR / name).open(encoding="utf-8", newline="") as fh:
        lines = [line for line in fh if not line.startswith("# ")]
    return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(lines)]


def _fraction(text: str) -> tuple[float, float]:
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num), float(den)
    return float(text), 1.0


@dataclass(frozen=True)
class _Unit:
    dimension: str
    num: float
    den: float
    offset: float
    fallback: str | None


@dataclass(frozen=True)
class _Step:
    """out = (x + a) * num / den + b"""

    a: float = 0.0
    num: float = 1.0
    den: float = 1.0
    b: float = 0.0

    def then(self, other: _Step) -> _Step:
        # ((x + a1) n1/d1 + b1 + a2) n2/d2 + b2 = (x + a1 + (b1 + a2) d1/n1) n1 n2 / (d1 d2) + b2
        shift = (self.b + other.a) * self.den / self.num
        return _Step(self.a + shift, self.num * other.num, self.den * other.den, other.b)

    def describe(self, src: str, dst: str) -> str:
        factor = f"{_fmt(self.num)}/{_fmt(self.den)}" if self.den != 1 else _fmt(self.num)
        if self.a:
            sign = "-" if self.a < 0 else "+"
            text = f"{src} -> {dst} (x {sign} {_fmt(abs(self.a))}) x {factor}"
        else:
            text = f"{src} -> {dst} x {factor}"
        if self.b:
            text += f" {'-' if self.b < 0 else '+'} {_fmt(abs(self.b))}"
        return text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class _Tables:
    aliases: dict[str, str]
    aliases_ci: dict[str, str]
    units: dict[str, _Unit]
    canonical: dict[tuple[str, str], str]
    analyte: dict[tuple[str, str], dict[str, _Step]]


@functools.cache
def _tables() -> _Tables:
    aliases = {r["alias"]: r["ucum"] for r in _read_table("units.csv")}
    units: dict[str, _Unit] = {}
    for r in _read_table("ucum_units.csv"):
        num, den = _fraction(r["factor"])
        units[r["ucum"]] = _Unit(
            r["dimension"], num, den, float(r["offset"] or 0), r["fallback_target"] or None
        )
    for code in units:
        aliases.setdefault(code, code)
    lower: dict[str, set[str]] = collections.defaultdict(set)
    for alias, code in aliases.items():
        lower[alias.lower()].add(code)
    aliases_ci = {k: next(iter(v)) for k, v in lower.items() if len(v) == 1}
    canonical: dict[tuple[str, str], str] = {}
    analyte: dict[tuple[str, str], dict[str, _Step]] = collections.defaultdict(dict)
    for r in _read_table("loinc_units.csv"):
        key = (r["code_system"], r["code"])
        canonical[key] = r["canonical_unit"]
        if r["from_unit"] != r["canonical_unit"]:
            num, den = _fraction(r["factor"])
            analyte[key][r["from_unit"]] = _Step(0.0, num, den, float(r["offset"] or 0))
    return _Tables(aliases, aliases_ci, units, canonical, dict(analyte))


def to_ucum(unit: str | None, *, declared: bool = False) -> tuple[str | None, str]:
    """(UCUM code or None, status) for one unit string; status ``ok`` | ``none`` | ``unknown``."""
    t = _tables()
    text = (unit or "").strip()
    if not text:
        return None, "none"
    code = t.aliases.get(text)
    if code is None:
        code = t.aliases_ci.get(text.lower())
    if code is None:
        if declared or ANNOTATION.match(text):
            return text, "ok"
        return None, "unknown"
    if code == "":
        return None, "none"
    return code, "ok"


def _generic(src: str, dst: str) -> _Step | None:
    t = _tables()
    u, v = t.units.get(src), t.units.get(dst)
    if u is None or v is None or u.dimension != v.dimension:
        return None
    return _Step(u.offset, u.num * v.den, u.den * v.num, -v.offset)


def resolve(code_system: str | None, code: str | None, unit: str | None, declared: str | None) -> dict:
    """How one (code, unit) key is normalized: unit, status, step, conversion, counter key."""
    t = _tables()
    has_declared = bool((declared or "").strip())
    raw = declared if has_declared else unit
    ucum, status = to_ucum(raw, declared=has_declared)
    if status == "none":
        return {"unit": None, "status": "none", "step": None, "conversion": None, "counter": "unit_none"}
    if ucum is None:
        raw_text = (raw or "").strip()
        return {
            "unit": None,
            "status": "unknown",
            "step": None,
            "conversion": None,
            "counter": f"unit_unknown:{raw_text}",
        }
    key = (code_system or "", code or "")
    target = t.canonical.get(key)
    if target is None:
        info = t.units.get(ucum)
        target = info.fallback if info is not None and info.fallback else ucum
    if ucum == target:
        return {
            "unit": ucum,
            "status": "canonical",
            "step": None,
            "conversion": None,
            "counter": "unit_canonical",
        }
    rows = t.analyte.get(key, {})
    step = rows.get(ucum) or _generic(ucum, target)
    if step is None:
        for via, analyte_step in sorted(rows.items()):
            first = _generic(ucum, via)
            if first is not None:
                step = first.then(analyte_step)
                break
    if step is None:
        return {
            "unit": None,
            "status": "unknown",
            "step": None,
            "conversion": None,
            "counter": f"unit_incompatible:{ucum}->{target}",
        }
    return {
        "unit": target,
        "status": "converted",
        "step": step,
        "conversion": step.describe(ucum, target),
        "counter": f"unit_converted:{ucum}->{target}",
    }


KEY = ("__k_system", "__k_code", "__k_unit", "__k_declared")


def normalize_units(measurement: pl.DataFrame) -> tuple[pl.DataFrame, collections.Counter]:
    """Add ``unit``, ``unit_status``, ``conversion``; convert ``value`` (and ref_low/ref_high).

    See the module docstring for the rules. Returns the frame (same rows, same order) and a
    counter of row counts per outcome.
    """
    counter: collections.Counter = collections.Counter()
    if measurement.height == 0:
        return measurement.with_columns(
            pl.lit(None, pl.Utf8).alias("unit"),
            pl.lit(None, pl.Utf8).alias("unit_status"),
            pl.lit(None, pl.Utf8).alias("conversion"),
        ), counter

    def text(c: str) -> pl.Expr:
        return (pl.col(c).cast(pl.Utf8) if c in measurement.columns else pl.lit(None, pl.Utf8)).fill_null("")

    frame = measurement.with_columns(
        text("code_system").alias("__k_system"),
        text("code").alias("__k_code"),
        text("source_unit").alias("__k_unit"),
        text("source_unit_ucum").alias("__k_declared"),
    )
    keys = frame.group_by(list(KEY)).len()
    plans = []
    for row in keys.iter_rows(named=True):
        r = resolve(row["__k_system"], row["__k_code"], row["__k_unit"], row["__k_declared"])
        counter[r["counter"]] += row["len"]
        step: _Step | None = r["step"]
        plans.append(
            {
                **{k: row[k] for k in KEY},
                "__unit": r["unit"],
                "__status": r["status"],
                "__conversion": r["conversion"],
                "__a": step.a if step else 0.0,
                "__num": step.num if step else 1.0,
                "__den": step.den if step else 1.0,
                "__b": step.b if step else 0.0,
                "__convert": step is not None,
            }
        )
    plan = pl.DataFrame(
        plans,
        schema={
            **{k: pl.Utf8 for k in KEY},
            "__unit": pl.Utf8,
            "__status": pl.Utf8,
            "__conversion": pl.Utf8,
            "__a": pl.Float64,
            "__num": pl.Float64,
            "__den": pl.Float64,
            "__b": pl.Float64,
            "__convert": pl.Boolean,
        },
    )
    frame = frame.join(plan, on=list(KEY), how="left", maintain_order="left")

    def convert(c: str) -> pl.Expr:
        x = pl.col(c).cast(pl.Float64)
        return (
            pl.when(pl.col("__convert"))
            .then((x + pl.col("__a")) * pl.col("__num") / pl.col("__den") + pl.col("__b"))
            .otherwise(x)
            .alias(c)
        )

    value_cols = [c for c in ("value", "ref_low", "ref_high") if c in frame.columns]
    out = frame.with_columns(
        *[convert(c) for c in value_cols],
        pl.col("__unit").alias("unit"),
        pl.col("__status").alias("unit_status"),
        pl.col("__conversion").alias("conversion"),
    )
    out = out.drop([c for c in out.columns if c.startswith("__")])
    for k, v in sorted(counter.items()):
        log.debug("units: %s = %d", k, v)
    return out, counter
