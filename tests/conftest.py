"""Shared fixtures: paths to the committed sample data, a CLI runner, small file builders."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"

# Keep Polars from oversubscribing the 2-core CI machine when tests spawn workers.
os.environ.setdefault("POLARS_MAX_THREADS", "2")


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[str]:
    """A simulated two-node Ray cluster (head + one worker node, one CPU each), started once per
    test module that asks for it; yields its address."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


def write_jsonl(path: Path, records: list, *, compression: str = "none") -> Path:
    """Write records (dicts, or raw bytes/str lines) as JSONL, optionally gzip/zstd compressed."""
    lines = []
    for r in records:
        if isinstance(r, bytes):
            lines.append(r)
        elif isinstance(r, str):
            lines.append(r.encode())
        else:
            lines.append(json.dumps(r).encode())
    data = b"\n".join(lines) + b"\n"
    if compression == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.fixture
def make_jsonl(tmp_path):
    def make(name: str, records: list, *, compression: str = "none") -> Path:
        return write_jsonl(tmp_path / name, records, compression=compression)

    return make


def read_jsonl_gz(path: Path) -> list[dict]:
    """Read a gzip JSONL file from sample_data into dicts."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
