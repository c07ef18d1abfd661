"""The finance output tables match their schema files (names, order, types, nullability)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from dataforge.schemas import _TYPES, conform

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
# decimal128(38,10) is requested from dataforge/schemas.py; until it is there, map it here
TYPES = {**_TYPES, "decimal128(38,10)": pa.decimal128(38, 10)}


def _schema(name: str) -> pa.Schema:
    spec = json.loads((SCHEMAS / f"{name}.json").read_text())
    assert spec["name"] == name.removesuffix(".v1") and spec["version"] == 1
    return pa.schema([pa.field(f["name"], TYPES[f["type"]], nullable=f["nullable"]) for f in spec["fields"]])


@pytest.mark.parametrize(
    ("table", "schema"),
    [("fact", "fin.fact.v1"), ("restatement", "fin.restatement.v1"), ("check", "fin.check.v1")],
)
@pytest.mark.parametrize("source", ["cf", "fsds", "xbrl"])
def test_tables_conform(request, source, table, schema):
    norm = request.getfixturevalue(f"{source}_norm")
    frame = norm.tables[table]
    target = _schema(schema)
    assert frame.columns == target.names
    out = conform(frame, target)  # raises on a failed cast or a null in a non-nullable column
    assert out.num_rows == frame.height
    if table == "fact" and frame.height:
        assert out.column("value").type == pa.decimal128(38, 10)
        assert out.column("value").to_pylist() == frame["value"].to_list()
