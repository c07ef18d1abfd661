"""Declared schemas: shipped in the wheel, loaded by name, and conform() enforces them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from dataforge.errors import ConfigError, DataError
from dataforge.schemas import conform, extend, load_schema, schema_names

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_schemas_load():
    assert {"document.v1", "dropped.v1", "rejects.v1"} <= set(schema_names())
    doc = load_schema("document.v1")
    assert doc.names == ["id", "text", "meta", "source_file", "source_row", "source_line"]
    assert not doc.field("text").nullable
    assert doc.metadata[b"dataforge.schema"] == b"document.v1"


def test_unknown_schema_lists_valid():
    with pytest.raises(ConfigError, match="unknown schema 'document.v9'; valid: .*document.v1"):
        load_schema("document.v9")


def test_conform_orders_casts_fills_and_rejects():
    schema = pa.schema(
        [
            pa.field("a", pa.int64(), nullable=False),
            pa.field("b", pa.large_string()),
            pa.field("c", pa.float32()),
        ]
    )
    t = conform(pl.DataFrame({"b": ["x", None], "a": [1, 2], "extra": [0, 0]}), schema)
    assert t.schema == schema
    assert t.column("c").null_count == 2
    with pytest.raises(DataError, match="'a' is declared non-nullable but has 1 nulls"):
        conform(pl.DataFrame({"a": [1, None]}), schema)
    with pytest.raises(DataError, match="'a' is declared by the schema but missing"):
        conform(pl.DataFrame({"b": ["x"]}), schema)
    with pytest.raises(DataError, match="cannot cast"):
        conform(pl.DataFrame({"a": ["not a number"]}), schema)


def test_extend_refuses_duplicate_columns():
    with pytest.raises(ConfigError, match="'text' is declared twice"):
        extend(load_schema("document.v1"), {"text": pa.large_string()})


def test_wheel_contains_schemas(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("dataforge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for schema in ("document.v1", "dropped.v1", "rejects.v1"):
        assert f"dataforge/schemas/{schema}.json" in names
