"""Shared pieces of the fuzz suite (``tests/fuzz``): compression, truncation and error checks.

Every fuzz test states the same property for one reader: for any generated input the reader either
returns with every input record accounted for (kept, dropped with a reason, or rejected with a
reason and an error naming the file and the line/row), or raises a
:class:`~dataforge.errors.DataforgeError` whose message names the file. Any other exception is a
bug. The helpers are handed to the tests through the session fixture ``fz`` (the suite runs with
``--import-mode=importlib``, so test modules do not import each other).
"""

from __future__ import annotations

import gzip
import types
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import zstandard

from dataforge.errors import DataforgeError


def compress(data: bytes, kind: str) -> bytes:
    """``data`` as a gzip or zstd stream (``none``: unchanged)."""
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def decoded_prefix(blob: bytes, kind: str) -> tuple[bytes, bool]:
    """What a streaming decoder recovers from ``blob`` (maybe cut short), and whether it is broken.

    Computed independently of dataforge: one decompressor object fed the whole blob.
    """
    if kind == "none":
        return blob, False
    if not blob:
        return b"", False
    if kind == "gzip":
        d = zlib.decompressobj(wbits=31)
        try:
            out = d.decompress(blob)
        except zlib.error:
            return b"", True
        return out, not d.eof
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = d.decompress(blob)
    except zstandard.ZstdError:
        return b"", True
    return out, not d.eof


def expect_clean_error(exc: BaseException, path: str, *, value: str | None = None) -> None:
    """Assert ``exc`` is a deliberate dataforge error whose message names ``path`` (and ``value``)."""
    assert isinstance(exc, DataforgeError), f"{type(exc).__name__} is not a DataforgeError: {exc!r}"
    assert path in str(exc), f"error does not name the file {path!r}: {exc}"
    if value is not None:
        assert value in str(exc), f"error does not name {value!r}: {exc}"


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, DataforgeError | None]:
    """``(result, None)`` or ``(None, error)`` for a DataforgeError; anything else propagates."""
    try:
        return fn(*args, **kwargs), None
    except DataforgeError as exc:
        return None, exc


@pytest.fixture(scope="session")
def fz() -> types.SimpleNamespace:
    """The helpers above, as a namespace (session scope: usable inside ``@given`` tests)."""
    return types.SimpleNamespace(
        compress=compress, decoded_prefix=decoded_prefix, expect_clean_error=expect_clean_error, call=call
    )
