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
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on failure delete it.

    With ``durable`` (outputs) the file is fsynced before the rename. Work files pass
    ``durable=False``: they live for one run, a killed process leaves them complete in the page
    cache, and only a machine restart can lose them, which the runner detects (it starts over
    when the boot id changed, see ``dataforge.runner``). Not syncing them saves the disk writes
    of files that are deleted seconds later (an fsync on ext4 also flushes every other dirty work
    file, the large live files included)."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        if durable:
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


PARTIAL = ".partial-"
OLD = ".old-"


def _pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists on this machine (conservative: True when unsure)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def stale_folders(out: str | Path) -> list[Path]:
    """The ``.OUT.partial-<pid>`` / ``.OUT.old-<pid>`` folders next to ``out`` left by runs whose
    process is gone (killed, out of memory, power loss): never visible as an output, safe to delete."""
    out = Path(out)
    stale = []
    if not out.parent.is_dir():
        return stale
    for p in out.parent.iterdir():
        for mark in (PARTIAL, OLD):
            prefix = f".{out.name}{mark}"
            if p.name.startswith(prefix):
                pid = p.name[len(prefix) :]
                if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                    stale.append(p)
    return sorted(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def check_replaceable(out: Path, *, overwrite: bool, what: str = "output folder") -> None:
    """Refuse to write into ``out`` unless it is empty or missing, or (with ``overwrite``) a
    dataforge output folder (it holds a manifest or a run report). OutputError otherwise."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            msg = f"{what} {str(out)!r} is not empty; pass --overwrite to replace it"
            raise OutputError(msg)
        if not (out / MANIFEST).exists() and not (out / "report.json").exists():
            msg = f"refusing to overwrite {str(out)!r}: it is not a dataforge output folder"
            raise OutputError(msg)


@contextlib.contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Build a whole output folder under ``.OUT.partial-<pid>`` and put it in place when complete.

    On success an existing ``out`` is moved aside (``.OUT.old-<pid>``), the new folder renamed to
    ``out`` and the old one deleted, so ``out`` is never a mix of two runs. On an exception the
    partial folder is deleted and ``out`` is left as it was. Partial and old folders of processes
    that no longer exist (a run killed with SIGKILL runs no cleanup) are deleted first.

    Raises:
        OutputError: the folder cannot be created or renamed (read-only, full disk, ...).
    """
    out = Path(out)
    tmp = out.parent / f".{out.name}{PARTIAL}{os.getpid()}"
    old = out.parent / f".{out.name}{OLD}{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in stale_folders(out):
            log.info("removing %s, left by an interrupted run", stale)
            _remove(stale)
        tmp.mkdir()
    except OSError as exc:
        msg = f"cannot write to output folder {str(out)!r}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    try:
        yield tmp
        try:
            _fsync_tree(tmp)
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        except OSError as exc:
            msg = f"cannot put {str(out)!r} in place: {exc.strerror or exc}"
            raise OutputError(msg) from None
    except BaseException:
        _remove(tmp)
        if old.exists() and not out.exists():  # put the previous output back
            with contextlib.suppress(OSError):
                os.replace(old, out)
        raise
    _remove(old)


def _fsync_tree(root: Path) -> None:
    """fsync the folders of ``root`` (files are fsynced when written), so the rename publishes
    entries that are on disk."""
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        with contextlib.suppress(OSError):
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (fsynced with ``durable``, see :func:`atomic_path`)."""
    try:
        with atomic_path(path, durable=durable) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise OutputError(msg) from None


def write_ipc_atomic(path: str | Path, frame: Any, *, record_batch_size: int | None = None) -> None:
    """Write a Polars DataFrame to an uncompressed Arrow IPC work file atomically (its folder
    created), strings as plain large strings (not views), so that readers can memory-map it and
    take single rows with pyarrow. ``record_batch_size`` bounds the rows per record batch. Not
    fsynced (a work file, see :func:`atomic_path`)."""
    import polars as pl

    try:
        os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
        with atomic_path(path, durable=False) as tmp:
            frame.write_ipc(
                tmp,
                compression="uncompressed",
                compat_level=pl.CompatLevel.oldest(),
                record_batch_size=record_batch_size,
            )
    except OSError as exc:
        msg = f"cannot write work file {path}: {exc.strerror or exc}"
        raise OutputError(msg) from None


def write_json_atomic(path: str | Path, obj: Any, *, durable: bool = True) -> None:
    """Write ``obj`` as stable, indented JSON (sorted keys) atomically (fsynced with ``durable``)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


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


def _plain_type(t: pa.DataType) -> pa.DataType:
    """``t`` with string/binary views replaced by large strings/binaries (also inside lists and
    structs)."""
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _plain_type(t.value_type)
        return t if inner == t.value_type else pa.large_list(t.value_field.with_type(inner))
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        plain = [f.with_type(_plain_type(f.type)) for f in fields]
        return t if plain == fields else pa.struct(plain)
    return t


def arrow_indices(rows: Any) -> pa.Array:
    """Row positions (any integer NumPy array or sequence) as an Arrow int64 array for ``take``,
    built from the buffer: ``pa.array`` of a NumPy array or list first imports pandas (~0.25 s,
    pyarrow checks for pandas types), which a run or a training job would otherwise pay once."""
    arr = np.ascontiguousarray(rows, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), arr.shape[0], [None, pa.py_buffer(arr)])


def by_piece(starts: np.ndarray, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """For ascending positions ``rows`` over consecutive pieces (chunks, record batches, side
    files) that begin at ``starts``: each piece holding some of them, with the positions within
    that piece."""
    which = np.searchsorted(starts, rows, side="right") - 1
    for k in np.unique(which):
        yield int(k), rows[which == k] - starts[k]


def take_sorted(data: pa.Table | pa.ChunkedArray, rows: np.ndarray) -> pa.Table | pa.Array:
    """``data.take(rows)`` for ascending ``rows``, chunk by chunk (a table: record batch by record
    batch): Arrow's take on a chunked column first concatenates every chunk (a copy of all the
    text, to fetch a few rows)."""
    pieces = data.to_batches() if isinstance(data, pa.Table) else data.chunks
    starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    taken = [
        pieces[k].take(arrow_indices(local)) for k, local in by_piece(starts, np.asarray(rows, np.int64))
    ]
    if isinstance(data, pa.Table):
        return pa.Table.from_batches(taken, schema=data.schema)
    return pa.concat_arrays(taken) if taken else pa.array([], data.type)


def arrow_numpy(arr: pa.Array) -> np.ndarray:
    """A primitive Arrow array without nulls as a zero-copy NumPy view. ``Array.to_numpy`` does
    the same but first imports pandas (see :func:`arrow_indices`)."""
    if arr.null_count or not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return arr.to_numpy(zero_copy_only=False)
    dtype = np.dtype(arr.type.to_pandas_dtype())
    return np.frombuffer(arr.buffers()[1], dtype=dtype)[arr.offset : arr.offset + len(arr)]


def canonical_table(table: pa.Table) -> pa.Table:
    """The same table in exactly sized buffers that hold only its rows' bytes.

    The Arrow IPC writer writes the buffers an array holds, not only the bytes its rows use: up to
    7 bytes after a slice's end (it pads from the source buffer), the bytes of null string slots,
    or the shared data buffers of string views. Those depend on how the rows were batched (which
    differs with the task split), so without this equal tables could give different shard bytes.

    Columns without nulls whose values sit in one flat buffer (strings, binaries, fixed-width
    numbers) are re-cut without copying their values: offsets rebased, data buffer sliced to the
    exact bytes. Other columns (nulls, booleans, views, nested types) are rebuilt with ``take``.
    """
    t = table.combine_chunks()
    columns = [_canonical_array(c.chunk(0)) if c.num_chunks else c for c in t.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _canonical_array(arr: pa.Array) -> pa.Array:
    t = arr.type
    n = len(arr)
    if arr.null_count == 0 and t in _FLAT_OFFSETS:
        bufs = arr.buffers()
        offsets = np.frombuffer(bufs[1], dtype=_FLAT_OFFSETS[t])[arr.offset : arr.offset + n + 1]
        start, end = int(offsets[0]), int(offsets[-1])
        data = bufs[2].slice(start, end - start) if bufs[2] is not None else pa.py_buffer(b"")
        if start:
            rebased = pa.py_buffer(offsets - offsets.dtype.type(start))
        else:
            width = offsets.dtype.itemsize
            rebased = bufs[1].slice(arr.offset * width, (n + 1) * width)
        return pa.Array.from_buffers(t, n, [None, rebased, data])
    if arr.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        width = t.bit_width // 8
        values = arr.buffers()[1].slice(arr.offset * width, n * width)
        return pa.Array.from_buffers(t, n, [None, values])
    plain = _plain_type(t)
    a = arr.cast(plain) if plain != t else arr
    a = a.take(arrow_indices(np.arange(n, dtype=np.int64)))
    return a.cast(t) if plain != t else a


# the plain string/binary types and their offset width: one offsets buffer into one data buffer
_FLAT_OFFSETS = {
    pa.string(): np.int32,
    pa.binary(): np.int32,
    pa.large_string(): np.int64,
    pa.large_binary(): np.int64,
}


_VIEW_TYPES = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


def canonical_views(table: pa.Table) -> pa.Table:
    """``table`` with its ``string_view``/``binary_view`` columns rebuilt in one canonical layout.

    The bytes of a view array are not a function of its values: how the strings are spread over
    data buffers, and whatever bytes sit in the views of null slots, depend on how the array was
    built (Polars writes report tables such as ``clusters`` as views, and a resumed run builds them
    in a fresh process). A round trip through the large type rebuilds the buffers from the values
    alone, so equal values give equal shard bytes. Types are kept.
    """
    for i, f in enumerate(table.schema):
        large = _VIEW_TYPES.get(f.type)
        if large is not None:
            table = table.set_column(i, f, table.column(i).cast(large).cast(f.type))
    return table


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
                    # batch by batch, each copied into exactly sized buffers: the bytes depend only
                    # on the rows, and memory holds one batch more than the (often memory-mapped) input
                    for start in range(0, table.num_rows, RECORD_BATCH_ROWS):
                        piece = canonical_table(table.slice(start, RECORD_BATCH_ROWS))
                        for batch in piece.to_batches(max_chunksize=RECORD_BATCH_ROWS):
                            writer.write_batch(batch)
            else:
                pq.write_table(
                    canonical_views(table.combine_chunks()),
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
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{out}: no {MANIFEST} (not a dataforge output, or the run did not finish)"
        raise DataError(msg) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = f"{path}: manifest is corrupt: {exc}"
        raise DataError(msg) from None
    if not isinstance(manifest, dict):
        msg = f"{path}: manifest is corrupt: a JSON {type(manifest).__name__}, not an object"
        raise DataError(msg)
    return manifest


def verify_shards(out: str | Path, manifest: dict[str, Any] | None = None) -> list[str]:
    """Check every file listed in the manifest (a curriculum's stage lists too): exists, size and
    sha256 match. Returns problems."""
    out = Path(out)
    manifest = manifest or read_manifest(out)
    problems: list[str] = []
    groups = [manifest.get(g, []) for g in ("shards", "dropped", "rejects")]
    groups += list(manifest.get("reports", {}).values())
    stages = manifest.get("stages")
    if isinstance(stages, list):  # a curriculum lists each shard again under its stage
        groups += [st.get("shards", []) for st in stages if isinstance(st, dict)]
    checked: set[tuple[str, Any, Any]] = set()
    for entries in groups:
        for entry in entries:
            if not isinstance(entry, dict) or not {"path", "bytes", "sha256"} <= set(entry):
                problems.append(f"manifest entry {entry!r}: needs path, bytes and sha256")
                continue
            key = (str(entry["path"]), entry["bytes"], entry["sha256"])
            if key in checked:  # the same entry twice: checked once
                continue
            checked.add(key)
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
