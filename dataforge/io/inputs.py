"""Finding input files: files, folders and globs; format and compression detection.

Every problem is found here, before any work starts: a path that does not exist, a glob or folder
with no data files, an unknown format, a columnar file without the text column.

Example:
    >>> spec = InputSpec(paths=("sample_data/pretraining",))  # doctest: +SKIP
    >>> [f.path for f in discover(spec)]  # doctest: +SKIP
    ['sample_data/pretraining/prose.jsonl.gz']
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """Where the documents come from and which fields hold text and id.

    Args:
        paths: files, folders (searched recursively for data files) or glob patterns.
        format: force a format (jsonl, parquet, csv, arrow) instead of detecting it from the name.
        text_field: field or column holding the document text.
        id_field: field or column holding the document id (generated from file and line if absent).
        csv_delimiter: CSV delimiter; default "," (tab for .tsv files).
    """

    paths: tuple[str, ...]
    format: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    csv_delimiter: str | None = None

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


def _expand(raw: str, forced: str | None) -> list[str]:
    """Expand one user path into data files (sorted, deterministic)."""
    if os.path.isdir(raw):
        root = Path(raw)
        found = [
            str(p)
            for p in sorted(root.rglob("*"))
            if p.is_file() and not _is_hidden(p, root) and detect_format(str(p), forced)
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
