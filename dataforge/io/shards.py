"""Atomic shard writing, checksums and the manifest.

Every file dataforge writes goes to a temporary name in the same folder and is renamed into place
when complete, so a crash never leaves a half-written file under its final name. ``manifest.json``
is written last: a shard is part of a run only if the manifest lists it with its sha256.

Example:
    >>> import pyarrow as pa, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> info = write_shard(pa.table({"x": [1, 2]}), d / "part-00000.arrow")
    >>> info.rows
    2
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dataforge.errors import ConfigError, DataError, OutputError, choices

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("arrow", "parquet")
COMPRESSIONS = ("zstd", "lz4", "none")
EXTENSIONS = {"arrow": ".arrow", "parquet": ".parquet"}
MANIFEST = "manifest.json"
RECORD_BATCH_ROWS = 4096


@dataclass(frozen=True)
class ShardInfo:
    """A written shard: path relative to the output folder, rows, bytes and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tmp_name(path: Path) -> Path:
    """A unique temporary name next to ``path`` (hidden, so readers never pick it up)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on failure delete it."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise OutputError(msg) from None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as stable, indented JSON (sorted keys) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_output_options(*, format: str, compression: str) -> None:
    if format not in OUTPUT_FORMATS:
        msg = f"unknown output format {format!r}; valid: {choices(OUTPUT_FORMATS)}"
        raise ConfigError(msg)
    if compression not in COMPRESSIONS:
        msg = f"unknown compression {compression!r}; valid: {choices(COMPRESSIONS)}"
        raise ConfigError(msg)


def write_shard(
    table: pa.Table,
    path: str | Path,
    *,
    format: str = "arrow",
    compression: str = "zstd",
    relative_to: str | Path | None = None,
) -> ShardInfo:
    """Write ``table`` to ``path`` atomically, byte-for-byte deterministic for the same table.

    Args:
        table: rows to write; its schema is written as is (conform it first).
        path: final file name.
        format: ``arrow`` (IPC file) or ``parquet``.
        compression: ``zstd``, ``lz4`` or ``none``.
        relative_to: folder the returned ShardInfo.path is relative to.

    Returns:
        ShardInfo with rows, bytes and sha256 of the written file.
    """
    check_output_options(format=format, compression=compression)
    path = Path(path)
    table = table.combine_chunks()
    codec = None if compression == "none" else compression
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            if format == "arrow":
                opts = ipc.IpcWriteOptions(compression=codec)
                with (
                    pa.OSFile(str(tmp), "wb") as sink,
                    ipc.new_file(sink, table.schema, options=opts) as writer,
                ):
                    for batch in table.to_batches(max_chunksize=RECORD_BATCH_ROWS):
                        writer.write_batch(batch)
            else:
                pq.write_table(
                    table,
                    str(tmp),
                    compression=codec or "none",
                    row_group_size=max(RECORD_BATCH_ROWS * 4, 1),
                    write_statistics=True,
                )
    except OSError as exc:
        msg = f"cannot write shard {path}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    rel = str(path.relative_to(relative_to)) if relative_to else str(path)
    return ShardInfo(rel, table.num_rows, path.stat().st_size, sha256_file(path))


def read_shard(path: str | Path) -> pa.Table:
    """Read a shard written by :func:`write_shard` (format from the extension)."""
    path = Path(path)
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        with pa.memory_map(str(path)) as src:
            return ipc.open_file(src).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        msg = f"cannot read shard {path}: {exc}"
        raise DataError(msg) from None


def read_manifest(out: str | Path) -> dict[str, Any]:
    """Load ``OUT/manifest.json``; DataError if it is missing or not valid JSON."""
    path = Path(out) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{out}: no {MANIFEST} (not a dataforge output, or the run did not finish)"
        raise DataError(msg) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"{path}: manifest is corrupt: {exc}"
        raise DataError(msg) from None


def verify_shards(out: str | Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Check every file listed in the manifest: exists, size and sha256 match. Returns problems."""
    out = Path(out)
    manifest = manifest or read_manifest(out)
    problems: list[str] = []
    groups = [manifest.get(g, []) for g in ("shards", "dropped", "rejects")]
    groups += list(manifest.get("reports", {}).values())
    for entries in groups:
        for entry in entries:
            p = out / entry["path"]
            if not p.is_file():
                problems.append(f"{entry['path']}: missing")
                continue
            size = p.stat().st_size
            if size != entry["bytes"]:
                problems.append(f"{entry['path']}: {size} bytes, manifest says {entry['bytes']}")
                continue
            digest = sha256_file(p)
            if digest != entry["sha256"]:
                problems.append(
                    f"{entry['path']}: sha256 {digest[:12]}..., manifest says {entry['sha256'][:12]}..."
                )
    return problems
