"""What the three finance readers share: the raw fact layout, exact value parsing, file discovery.

Every reader (companyfacts JSON, Financial Statement Data Sets, XBRL instance) returns an
:class:`~dataforge.records.model.Extract` whose only table is ``raw_fact``: one row per input record
that carries a usable numeric fact, with the columns of :data:`RAW_SCHEMA`. Nothing is de-duplicated
or derived there; :func:`dataforge.records.finance.facts.normalize_facts` does that for all readers.

Values are exact decimals. SEC values are unscaled (``62611000000``, not "62,611 in millions"); the
FSDS readme declares ``value`` as ``NUMERIC(28,4)``; companyfacts and XBRL values measured on the
shared data have at most 15 integer digits and 4 fractional digits (XBRL ``decimals`` up to 4). We
store ``Decimal(38, 10)``: 28 integer digits and 10 fractional digits hold every value the SEC
formats can carry with room to spare. A value that does not fit exactly (more than 10 significant
fractional digits or more than 28 integer digits) is rejected rather than rounded, and the reject
says which limit it broke; ``value_text`` keeps the value as written in the input, without
surrounding whitespace (every reader strips it, and ``" 42 "`` is the number 42).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from dataforge.errors import InputError

VALUE_PRECISION = 38
VALUE_SCALE = 10
DECIMAL = pl.Decimal(VALUE_PRECISION, VALUE_SCALE)
MAX_INT_DIGITS = VALUE_PRECISION - VALUE_SCALE

RAW_SCHEMA: dict[str, pl.DataType] = {
    "cik": pl.Int64(),
    "entity": pl.Utf8(),
    "taxonomy": pl.Utf8(),
    "concept": pl.Utf8(),
    "label": pl.Utf8(),
    "unit": pl.Utf8(),
    "value": DECIMAL,
    "value_text": pl.Utf8(),
    "decimals": pl.Utf8(),
    "start": pl.Date(),
    "end": pl.Date(),
    "dimensions": pl.Utf8(),
    "datatype": pl.Utf8(),
    "statement": pl.Utf8(),
    "form": pl.Utf8(),
    "filed": pl.Date(),
    "accession": pl.Utf8(),
    "filing_fy": pl.Int32(),
    "filing_fp": pl.Utf8(),
    "frame": pl.Utf8(),
    "fye_hint": pl.Utf8(),
    "source": pl.Utf8(),
    "source_file": pl.Utf8(),
    "source_row": pl.Int64(),
    "source_ref": pl.Utf8(),
}

# exact decimal text that fits Decimal(38, 10): optional sign, <= 28 integer digits, <= 10 decimals
VALUE_RE = rf"^[+-]?[0-9]{{1,{MAX_INT_DIGITS}}}(\.[0-9]{{1,{VALUE_SCALE}}})?$"
_VALUE_RE = re.compile(VALUE_RE)
# any plain decimal number, whatever its size
PLAIN_DECIMAL = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def parse_value(raw: object) -> tuple[decimal.Decimal | None, str | None]:
    """``raw`` (int, Decimal or str) as an exact Decimal, or ``(None, why)``.

    Strings are stripped of surrounding whitespace. Floats are refused: a companyfacts reader must
    parse JSON with ``parse_float=Decimal``.
    """
    if raw is None:
        return None, "value is missing (null)"
    if isinstance(raw, bool):
        return None, f"value {raw!r} is not a number"
    if isinstance(raw, int):
        text = str(raw)
    elif isinstance(raw, decimal.Decimal):
        if not raw.is_finite():
            return None, f"value {raw!r} is not a finite number"
        text = format(raw, "f")
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        return None, f"value {raw!r} is not a number ({type(raw).__name__})"
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return None, f"value {text!r} is not a number"
    if not value.is_finite():
        return None, f"value {text!r} is not a finite number"
    plain = format(value, "f")
    if not _VALUE_RE.match(plain):
        # trailing zeros beyond the scale are harmless: 1.50000000000000 == 1.5
        if "." in plain and _VALUE_RE.match(plain.rstrip("0").rstrip(".")):
            plain = plain.rstrip("0").rstrip(".")
        else:
            return None, misfit(text, plain)
    return decimal.Decimal(plain), None


def misfit(text: str, plain: str) -> str:
    """Why the number ``plain`` (written ``text`` in the input) does not fit ``Decimal(38, 10)``:
    too many integer digits (out of range) or too many fractional ones (never rounded)."""
    whole, _, frac = plain.lstrip("+-").partition(".")
    whole, frac = whole.lstrip("0"), frac.rstrip("0")
    if len(whole) > MAX_INT_DIGITS:
        return (
            f"value {text!r} is out of range: {len(whole)} integer digits, "
            f"Decimal({VALUE_PRECISION},{VALUE_SCALE}) holds at most {MAX_INT_DIGITS}"
        )
    return (
        f"value {text!r} has {len(frac)} fractional digits; Decimal({VALUE_PRECISION},{VALUE_SCALE}) "
        f"holds at most {VALUE_SCALE}, and values are never rounded"
    )


def decimal_text_error(text: str) -> str:
    """Why ``text``, read as a plain decimal number (FSDS ``num.value``), is not a usable value."""
    if not PLAIN_DECIMAL.match(text):
        return f"value {text!r} is not a decimal number"
    return misfit(text, text)


def raw_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """A ``raw_fact`` frame from row dicts (missing keys are nulls), in :data:`RAW_SCHEMA` order."""
    cols = {name: [r.get(name) for r in rows] for name in RAW_SCHEMA}
    return pl.DataFrame(
        {name: pl.Series(name, cols[name], dtype=dtype) for name, dtype in RAW_SCHEMA.items()}
    )


def fit_raw(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly the :data:`RAW_SCHEMA` columns (missing ones null), cast."""
    return frame.select(
        [
            (pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t)).alias(c)
            for c, t in RAW_SCHEMA.items()
        ]
    )


def expand_paths(paths: str | Path | Iterable[str | Path], *, patterns: tuple[str, ...]) -> list[Path]:
    """Files named by ``paths``: a file as given, a folder by its files matching ``patterns``
    (sorted, non-recursive). A missing path or a folder without matches is an InputError."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted({f for pat in patterns for f in path.glob(pat) if f.is_file()})
            if not found:
                msg = f"{path}: no input files matching {', '.join(patterns)}"
                raise InputError(msg)
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            msg = f"{path}: no such file or folder"
            raise InputError(msg)
    if not out:
        msg = "no input paths given"
        raise InputError(msg)
    return out


def iso4217(unit: str | None) -> bool:
    """True for a currency unit code such as ``USD``."""
    return bool(unit) and bool(CURRENCY_RE.match(unit or ""))
