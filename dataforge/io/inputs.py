"""Finding input files: files, folders and globs; format and compression detection.

Every problem is found here, before any work starts: a path that does not exist, a glob or folder
with no data files, an unknown format, a columnar file without the text column.

Example:
    >>> spec = InputSpec(paths=("sample_data/pretraining",))  # doctest: +SKIP
    >>> [f.path for f in discover(spec)]  # doctest: +SKIP
    ['sample_data/pretraining/prose.jsonl.gz']
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import json
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataforge.errors import ConfigError, InputError, choices

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet", "csv", "arrow")
COMPRESSIONS = ("none", "gzip", "zstd")

_EXT_FORMAT = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".arrow": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
    ".arrows": "arrow",
}
_EXT_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}

#: Default largest input per task: 1M documents in one 2 GB JSONL file become ~30 tasks.
DEFAULT_TASK_BYTES = 64 << 20


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """Where the documents come from and which fields hold text and id.

    Args:
        paths: files, folders (searched recursively for data files) or glob patterns.
        format: force a format (jsonl, parquet, csv, arrow) instead of detecting it from the name.
        text_field: field or column holding the document text.
        id_field: field or column holding the document id (generated from file and line if absent).
        csv_delimiter: CSV delimiter; default "," (tab for .tsv files).
        task_bytes: largest amount of input (bytes on disk) one task reads, default 64 MiB (see
            :func:`plan_tasks`): bigger files are split into pieces, files under
            ``task_bytes / 2048`` are grouped. The output bytes do not depend on it.
    """

    paths: tuple[str, ...]
    format: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    csv_delimiter: str | None = None
    task_bytes: int = DEFAULT_TASK_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            object.__setattr__(self, "paths", (self.paths,))
        if not self.paths:
            msg = "no input paths given"
            raise InputError(msg)
        if self.format is not None and self.format not in FORMATS:
            msg = f"unknown input format {self.format!r}; valid: {choices(FORMATS)}"
            raise ConfigError(msg)
        for name in ("text_field", "id_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                msg = f"{name} must be a non-empty string, got {value!r}"
                raise ConfigError(msg)
        if self.text_field == self.id_field:
            msg = f"text_field and id_field are both {self.text_field!r}"
            raise ConfigError(msg)
        if self.csv_delimiter is not None and len(self.csv_delimiter) != 1:
            msg = f"csv_delimiter must be one character, got {self.csv_delimiter!r}"
            raise ConfigError(msg)
        tb = self.task_bytes
        if isinstance(tb, bool) or not isinstance(tb, int) or tb < 1:
            msg = f"task_bytes must be a positive integer (bytes), got {tb!r}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class InputFile:
    """One input file, as discovered."""

    path: str
    format: str
    compression: str
    size: int
    mtime_ns: int = field(default=0, compare=False)
    delimiter: str = ","


def detect_compression(path: str) -> str:
    """Compression from the file's magic bytes (falls back to the extension for empty files)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return _EXT_COMPRESSION.get(Path(path).suffix.lower(), "none") if not head else "none"


def detect_format(path: str, forced: str | None = None) -> str | None:
    """Format from the file name (``x.jsonl.gz`` -> jsonl), or ``forced`` if given."""
    if forced:
        return forced
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    while suffixes and suffixes[-1] in _EXT_COMPRESSION:
        suffixes.pop()
    return _EXT_FORMAT.get(suffixes[-1]) if suffixes else None


def _is_hidden(path: Path, root: Path) -> bool:
    rel = path.relative_to(root).parts
    return any(part.startswith((".", "_")) for part in rel)


def _in_output(path: Path, root: Path, cache: dict[Path, bool]) -> bool:
    """Whether ``path`` is inside a dataforge output folder below ``root`` (one holding a dataforge
    ``manifest.json``): a run writing its output into its input folder must not read that output
    (shards, reports) back as input on the next run."""
    for folder in path.relative_to(root).parents:
        if folder == Path("."):
            break
        d = root / folder
        if d not in cache:
            cache[d] = _is_dataforge_output(d)
        if cache[d]:
            return True
    return False


def _is_dataforge_output(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "dataforge_version" in doc


def _expand(raw: str, forced: str | None) -> list[str]:
    """Expand one user path into data files (sorted, deterministic)."""
    if os.path.isdir(raw):
        root = Path(raw)
        if _is_dataforge_output(root):
            if not (root / "data").is_dir():
                parts = sorted(
                    p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                )
                msg = (
                    f"input folder {raw!r} is a dataforge output without data/: give the part to read "
                    f"(one of its folders: {', '.join(parts) or 'none'})"
                )
                raise InputError(msg)
            log.info("%s is a dataforge output: reading its data/ shards", raw)
            root = root / "data"
        outputs: dict[Path, bool] = {}
        found = [
            str(p)
            for p in sorted(root.rglob("*"))
            if p.is_file()
            and not _is_hidden(p, root)
            and detect_format(str(p), forced)
            and not _in_output(p, root, outputs)
        ]
        if not found:
            msg = f"input folder {raw!r} holds no data files (looked for {', '.join(sorted(_EXT_FORMAT))}, optionally .gz/.zst)"
            raise InputError(msg)
        return found
    if os.path.isfile(raw):
        return [raw]
    if glob.has_magic(raw):
        found = sorted(p for p in glob.glob(raw, recursive=True) if os.path.isfile(p))
        if not found:
            msg = f"input pattern {raw!r} matches no files"
            raise InputError(msg)
        return found
    msg = f"input path {raw!r} does not exist"
    raise InputError(msg)


def discover(spec: InputSpec) -> list[InputFile]:
    """List the input files of ``spec`` in a stable order: argument order, then sorted within each.

    Raises:
        InputError: a path does not exist, matches nothing, or a file's format is unknown.
    """
    seen: set[str] = set()
    files: list[InputFile] = []
    for raw in spec.paths:
        for path in _expand(str(raw), spec.format):
            norm = os.path.normpath(path)
            if norm in seen:
                continue
            seen.add(norm)
            fmt = detect_format(norm, spec.format)
            if fmt is None:
                msg = (
                    f"cannot tell the format of {norm!r} from its name; pass --format "
                    f"(valid: {choices(FORMATS)})"
                )
                raise InputError(msg)
            try:
                st = os.stat(norm)
                compression = detect_compression(norm)
            except OSError as exc:
                msg = f"cannot read input {norm!r}: {exc.strerror}"
                raise InputError(msg) from None
            delim = spec.csv_delimiter or (
                "\t" if ".tsv" in [s.lower() for s in Path(norm).suffixes] else ","
            )
            files.append(InputFile(norm, fmt, compression, st.st_size, st.st_mtime_ns, delim))
    if not files:
        msg = "no input files found"
        raise InputError(msg)
    log.info("found %d input files", len(files))
    return files


# --------------------------------------------------------------------------- task planning
#
# A task reads a list of *pieces*; a piece is a contiguous part of one input file. Big files are
# split so that one worker never has to hold a whole 2 GB file, small files are grouped so that
# 100,000 tiny files do not become 100,000 tasks.
#
# Line formats (uncompressed JSONL, and CSV without quotes or bare carriage returns) are split at
# byte offsets just after a newline: a record belongs to the piece in which its line *starts*. A
# planning pass counts the newlines of every piece (numpy over a memory map, ~4 GB/s, run on the
# executor), and prefix sums give each piece's first line and first row. A piece then numbers
# its records from those offsets, so ``_row``/``_line`` (and ids generated from the line number,
# and rejects) are exactly what one reader going through the whole file would give. In JSONL every
# line is one record (blank lines are rejected records), so ``row = line - 1``; in a CSV without
# quotes every line is one record after the one-line header, so ``row = line - 2``. A CSV that
# holds a quote character or a bare ``\r`` could have records spanning lines, so it is never split
# (this is decided from the counts, so it costs nothing extra).
#
# Parquet files are split at row-group boundaries and Arrow IPC files at record-batch boundaries;
# their first row is the sum of the rows before (from the file metadata). Compressed files (gzip,
# zstd) and Arrow IPC *streams* cannot be entered in the middle and always stay whole.
#
# A file bigger than ``task_bytes`` is cut by position: with ``n = ceil(size / task_bytes)``, a
# record (line, row group, batch) starting at byte ``p`` goes to piece ``floor(p * n / size)``
# (lines: the first line start at or after ``k * size / n`` opens piece ``k``), so its pieces are
# balanced. Runs of consecutive *small* files (under ``task_bytes / SMALL_FILE_DIVISOR``, 32 KiB by
# default, where the fixed cost of a task outweighs its work) are packed into tasks of at most
# ``task_bytes``; every other file or piece is a task of its own. Tasks hold the input in order, so
# everything downstream (global positions, dedup keep rules, shard assembly) sees the same rows in
# the same order for any plan: the output bytes do not depend on ``task_bytes``.

#: Files smaller than ``task_bytes // SMALL_FILE_DIVISOR`` are grouped with their small neighbours.
SMALL_FILE_DIVISOR = 2048
_COUNT_CHUNK = 16 << 20
PIECE_KINDS = ("whole", "bytes", "row_groups", "batches")


@dataclass(frozen=True)
class Piece:
    """A contiguous part of one input file; a task reads one or more pieces in order.

    Attributes:
        file: the input file.
        kind: ``whole`` (the entire file), ``bytes`` (bytes ``[start, end)`` of an uncompressed
            JSONL/CSV file, both just after a newline or at the file's ends), ``row_groups``
            (Parquet row groups ``[start, end)``) or ``batches`` (record batches ``[start, end)`` of
            an Arrow IPC file).
        start, end: the range (0, 0 for ``whole``).
        first_row: 0-based index in the file of the piece's first record.
        first_line: 1-based line number in the file of the piece's first line (line formats).
        nbytes: the piece's size on disk, used to balance tasks.
    """

    file: InputFile
    kind: str = "whole"
    start: int = 0
    end: int = 0
    first_row: int = 0
    first_line: int = 1
    nbytes: int = 0

    def to_json(self, file_index: int) -> dict[str, int | str]:
        return {
            "file": file_index,
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "first_row": self.first_row,
            "first_line": self.first_line,
            "nbytes": self.nbytes,
        }


Task = tuple[Piece, ...]
MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


def plan_tasks(
    files: list[InputFile], *, task_bytes: int = DEFAULT_TASK_BYTES, map_fn: MapFn | None = None
) -> list[Task]:
    """Split and group ``files`` into tasks of at most about ``task_bytes`` (see the notes above).

    Args:
        files: the input files in input order (from :func:`discover`).
        task_bytes: the largest task (bytes of input on disk).
        map_fn: runs the newline counting (``map_fn(fn, items) -> results in order``), e.g. on the
            run's executor; by default in this process.

    Returns:
        The tasks in input order; every record of every file is in exactly one piece.
    """
    target = task_bytes
    per_file = [_split_file(f, target) for f in files]
    # a piece's first line is the newlines before it: the last piece of a file need not be counted,
    # except in CSV, where every piece is also searched for quotes (see _number_lines)
    jobs = [
        (fi, pi)
        for fi, pieces in enumerate(per_file)
        for pi, p in enumerate(pieces)
        if p.kind == "bytes" and (pi < len(pieces) - 1 or files[fi].format == "csv")
    ]
    if jobs:
        items = [
            (
                per_file[fi][pi].file.path,
                per_file[fi][pi].start,
                per_file[fi][pi].end,
                files[fi].format == "csv",
            )
            for fi, pi in jobs
        ]
        run = map_fn or (lambda fn, xs: [fn(x) for x in xs])
        counts = run(count_newlines, items)
        by_file: dict[int, list[tuple[int, int]]] = {}
        for (fi, _), c in zip(jobs, counts):
            by_file.setdefault(fi, []).append(c)
        for fi, file_counts in by_file.items():
            per_file[fi] = _number_lines(files[fi], per_file[fi], file_counts)
    small = task_bytes // SMALL_FILE_DIVISOR
    tasks: list[Task] = []
    cur: list[Piece] = []  # a group of small files being filled
    size = 0
    for p in (p for pieces in per_file for p in pieces):
        if p.kind == "whole" and p.nbytes < small:
            if cur and size + p.nbytes > target:
                tasks.append(tuple(cur))
                cur, size = [], 0
            cur.append(p)
            size += p.nbytes
            continue
        if cur:
            tasks.append(tuple(cur))
            cur, size = [], 0
        tasks.append((p,))
    if cur:
        tasks.append(tuple(cur))
    n_split = sum(1 for pieces in per_file if len(pieces) > 1)
    log.info(
        "planned %d task(s) of <= %d bytes from %d file(s) (%d split)",
        len(tasks),
        target,
        len(files),
        n_split,
    )
    return tasks


def tasks_to_json(tasks: list[Task], files: list[InputFile]) -> list[list[dict[str, int | str]]]:
    index = {f.path: i for i, f in enumerate(files)}
    return [[p.to_json(index[p.file.path]) for p in task] for task in tasks]


def tasks_from_json(raw: list[list[dict[str, Any]]], files: list[InputFile]) -> list[Task]:
    return [
        tuple(
            Piece(
                files[int(d["file"])],
                str(d["kind"]),
                int(d["start"]),
                int(d["end"]),
                int(d["first_row"]),
                int(d["first_line"]),
                int(d["nbytes"]),
            )
            for d in task
        )
        for task in raw
    ]


def _whole(f: InputFile) -> list[Piece]:
    return [Piece(f, "whole", nbytes=f.size)]


def _split_file(f: InputFile, target: int) -> list[Piece]:
    """Cut ``f`` into balanced pieces of at most about ``target`` bytes (rows not yet numbered for
    line formats); one ``whole`` piece when it is small or cannot be split."""
    if f.size <= target or f.compression != "none":
        return _whole(f)
    n = -(-f.size // target)
    if f.format in ("jsonl", "csv"):
        bounds = _line_bounds(f.path, f.size, n)
        if len(bounds) <= 2:
            return _whole(f)
        return [Piece(f, "bytes", a, b, nbytes=b - a) for a, b in itertools.pairwise(bounds)]
    if f.format == "parquet":
        return _split_units(f, "row_groups", _parquet_units(f.path), n)
    if f.format == "arrow":
        units = _ipc_units(f.path)
        return _split_units(f, "batches", units, n) if units is not None else _whole(f)
    return _whole(f)


def _line_bounds(path: str, size: int, n: int) -> list[int]:
    """``[0, b1, ..., size]``: ``b_k`` is the first line start at or after ``k * size / n``."""
    bounds = [0]
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for k in range(1, n):
            lo = max(size * k // n, bounds[-1] + 1)
            nl = mm.find(b"\n", lo - 1)  # a line starts at p when p == 0 or byte p - 1 is "\n"
            if nl < 0 or nl + 1 >= size:
                break
            bounds.append(nl + 1)
    bounds.append(size)
    return bounds


def count_newlines(item: tuple[str, int, int, bool]) -> tuple[int, int]:
    """``(newlines, unsafe)`` in bytes ``[start, end)`` of a file; ``unsafe`` counts what could
    make a CSV record span lines (quote characters, carriage returns not followed by ``\\n``);
    only computed when the last element of ``item`` is true."""
    import numpy as np

    path, start, end, csv = item
    newlines = unsafe = 0
    if end <= start:
        return 0, 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        data = np.frombuffer(mm, dtype=np.uint8)
        try:
            for s in range(start, end, _COUNT_CHUNK):
                e = min(s + _COUNT_CHUNK, end)
                chunk = data[s:e]
                newlines += int(np.count_nonzero(chunk == 10))
                if csv:
                    unsafe += int(np.count_nonzero(chunk == 34))
                    cr = np.flatnonzero(chunk == 13) + s
                    if cr.size:
                        after = cr + 1
                        ok = after < end
                        unsafe += int(cr.size - np.count_nonzero(data[after[ok]] == 10))
                del chunk
        finally:
            del data
    return newlines, unsafe


def _number_lines(f: InputFile, pieces: list[Piece], counts: list[tuple[int, int]]) -> list[Piece]:
    """Give each byte-range piece its first line and row from the newline counts before it."""
    if f.format == "csv" and any(u for _, u in counts):
        log.info("%s: CSV with quotes or bare carriage returns: read whole (not split)", f.path)
        return _whole(f)
    out: list[Piece] = []
    lines_before = 0
    header = 1 if f.format == "csv" else 0
    counts = counts + [(0, 0)] * (len(pieces) - len(counts))  # the uncounted last piece
    for p, (nl, _) in zip(pieces, counts, strict=True):
        row = max(lines_before - header, 0)
        out.append(dataclasses.replace(p, first_line=lines_before + 1, first_row=row))
        lines_before += nl
    return out


def _parquet_units(path: str) -> list[tuple[int, int]]:
    """(rows, compressed bytes) per row group."""
    import pyarrow.parquet as pq

    md = pq.read_metadata(path)
    units = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        nbytes = sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
        units.append((rg.num_rows, nbytes))
    return units


def _ipc_units(path: str) -> list[tuple[int, int]] | None:
    """(rows, bytes) per record batch of an Arrow IPC file; None for an IPC stream."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(path) as src:
        try:
            reader = ipc.open_file(src)
        except pa.ArrowInvalid:
            return None
        units = []
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)  # zero-copy on a memory map (uncompressed IPC)
            units.append((batch.num_rows, batch.nbytes))
        return units


def _split_units(f: InputFile, kind: str, units: list[tuple[int, int]], n: int) -> list[Piece]:
    """Group row groups / batches into ``n`` balanced pieces: a unit starting at byte ``pos`` (of
    the units' total) goes to piece ``floor(pos * n / total)``."""
    total = sum(b for _, b in units) or 1
    pieces: list[Piece] = []
    numbers: list[int] = []
    pos = row = 0
    for i, (rows, nbytes) in enumerate(units):
        k = min(n - 1, pos * n // total)
        if pieces and numbers[-1] == k:
            last = pieces[-1]
            pieces[-1] = dataclasses.replace(last, end=i + 1, nbytes=last.nbytes + nbytes)
        else:
            pieces.append(Piece(f, kind, i, i + 1, first_row=row, nbytes=nbytes))
            numbers.append(k)
        pos += nbytes
        row += rows
    if len(pieces) <= 1:
        return _whole(f)
    return pieces
