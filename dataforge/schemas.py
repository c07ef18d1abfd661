"""Versioned Arrow schemas from ``schemas/`` and conforming frames to them.

The JSON files in ``schemas/`` are the truth; they ship inside the wheel as ``dataforge/schemas``.
Output schemas are always declared (a base schema plus the columns each step declares), never
inferred from the data.

Example:
    >>> from dataforge.schemas import load_schema
    >>> load_schema("document.v1").names[:2]
    ['id', 'text']
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from dataforge.errors import ConfigError, DataError, choices
from dataforge.io.views import frame_to_arrow

_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "date32": pa.date32(),
    "timestamp_us": pa.timestamp("us"),
    "timestamp_us_utc": pa.timestamp("us", tz="UTC"),
    "list<large_string>": pa.large_list(pa.large_string()),
    "list<int64>": pa.large_list(pa.int64()),
}


def schema_dir() -> Path:
    """Folder holding the schema JSON files (inside the installed wheel, or the source checkout)."""
    packaged = resources.files("dataforge") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    here = Path(__file__).resolve().parent.parent / "schemas"
    if here.is_dir():
        return here
    msg = "dataforge schemas folder not found (broken install?)"
    raise RuntimeError(msg)


def schema_names() -> list[str]:
    """Names of all shipped schemas, e.g. ``document.v1``."""
    return sorted(p.name.removesuffix(".json") for p in schema_dir().glob("*.json"))


@functools.cache
def schema_spec(name: str) -> dict[str, Any]:
    """The raw JSON description of schema ``name`` (``document.v1``)."""
    path = schema_dir() / f"{name}.json"
    if not path.is_file():
        msg = f"unknown schema {name!r}; valid: {choices(schema_names())}"
        raise ConfigError(msg)
    return json.loads(path.read_text(encoding="utf-8"))


_DECIMAL = re.compile(r"decimal128\((\d+),\s*(\d+)\)")


def type_from_name(type_name: str) -> pa.DataType:
    """The Arrow type for a schema type name; ``decimal128(P,S)`` takes any precision and scale."""
    if m := _DECIMAL.fullmatch(type_name):
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    try:
        return _TYPES[type_name]
    except KeyError:
        msg = f"unknown schema type {type_name!r}; valid: {choices([*_TYPES, 'decimal128(P,S)'])}"
        raise ConfigError(msg) from None


def type_name(dtype: pa.DataType) -> str:
    for name, t in _TYPES.items():
        if t == dtype:
            return name
    if pa.types.is_decimal128(dtype):
        return f"decimal128({dtype.precision},{dtype.scale})"
    return str(dtype)


def load_schema(name: str) -> pa.Schema:
    """Load schema ``name`` as a ``pa.Schema`` (with ``dataforge.schema`` metadata)."""
    spec = schema_spec(name)
    fields = [
        pa.field(f["name"], type_from_name(f["type"]), nullable=f.get("nullable", True))
        for f in spec["fields"]
    ]
    return pa.schema(fields, metadata={"dataforge.schema": name})


# Columns several steps may declare (each fills them only for the rows it drops).
SHARED_COLUMNS = {"dup_of": pa.large_string()}


def extend(
    base: pa.Schema, extra: dict[str, pa.DataType] | list[pa.Field], *, name: str | None = None
) -> pa.Schema:
    """Append columns to ``base``; a name already present is a ConfigError, except for shared
    columns such as ``dup_of``, which appear once whichever steps declare them."""
    fields = list(base)
    seen = set(base.names)
    extra_fields = list(extra) if isinstance(extra, list) else [pa.field(k, v) for k, v in extra.items()]
    for f in extra_fields:
        if f.name in seen and SHARED_COLUMNS.get(f.name) == f.type:
            continue
        if f.name in seen:
            msg = f"column {f.name!r} is declared twice (by the base schema or two steps)"
            raise ConfigError(msg)
        seen.add(f.name)
        fields.append(f)
    meta = dict(base.metadata or {})
    if name:
        meta[b"dataforge.schema"] = name.encode()
    return pa.schema(fields, metadata=meta)


def conform(frame: pl.DataFrame | pa.Table, schema: pa.Schema) -> pa.Table:
    """Return ``frame`` as a table with exactly ``schema``: columns selected in order and cast.

    Missing nullable columns are filled with nulls; a missing non-nullable column, a failed cast or a
    null in a non-nullable column raises DataError naming the column.
    """
    table = frame_to_arrow(frame) if isinstance(frame, pl.DataFrame) else frame
    arrays = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    msg = f"column {f.name!r}: cannot cast {col.type} to declared {f.type}: {exc}"
                    raise DataError(msg) from None
            if not f.nullable and col.null_count:
                msg = f"column {f.name!r} is declared non-nullable but has {col.null_count} nulls"
                raise DataError(msg)
        elif f.nullable:
            col = pa.nulls(table.num_rows, f.type)
        else:
            msg = f"column {f.name!r} is declared by the schema but missing from the data"
            raise DataError(msg)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    """A JSON-friendly description of ``schema`` (for manifests)."""
    return [{"name": f.name, "type": type_name(f.type), "nullable": f.nullable} for f in schema]
