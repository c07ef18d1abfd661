"""The two helpers the fault tests led to, tested directly (in-process, fast):

* ``atomic_folder``: builds ``.OUT.partial-<pid>``, renames it into place, and removes the partial
  (and moved-aside) folders of processes that no longer exist, which a SIGKILLed run leaves behind;
* ``write_shard`` of ``string_view`` columns: equal values give equal bytes whatever the buffer
  layout (a resumed dedup run rebuilt its ``clusters`` report with other bytes before).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pyarrow as pa
import pytest

from dataforge.io.shards import atomic_folder, stale_folders, write_shard


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_folder_removes_partials_of_dead_runs(tmp_path):
    """A partial and a moved-aside folder of dead PIDs are removed; one of a live PID is kept."""
    out = tmp_path / "out"
    dead = dead_pid()
    (tmp_path / f".out.partial-{dead}").mkdir()
    (tmp_path / f".out.partial-{dead}" / "x.arrow").write_bytes(b"half")
    (tmp_path / f".out.old-{dead}").mkdir()
    live = tmp_path / f".out.partial-{os.getppid()}"  # our parent is alive
    live.mkdir()
    other = tmp_path / ".other.partial-1"
    other.mkdir()
    assert {p.name for p in stale_folders(out)} == {f".out.partial-{dead}", f".out.old-{dead}"}
    with atomic_folder(out) as tmp:
        assert tmp.name == f".out.partial-{os.getpid()}"
        (tmp / "manifest.json").write_text("{}")
    assert (out / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name, other.name])


def test_atomic_folder_failure_keeps_the_previous_output(tmp_path):
    """An exception while building leaves the earlier output untouched and no partial folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "manifest.json").write_text("new")
        raise RuntimeError("boom")
    assert (out / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_folder_replaces_the_previous_output(tmp_path):
    """Success replaces the earlier output as a whole (no file of the old run survives)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.arrow").write_text("old")
    with atomic_folder(out) as tmp:
        (tmp / "manifest.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _views(values: list[str | None], *, buffers: int, garbage: bool) -> pa.Array:
    """A string_view array of ``values`` with its long strings spread over ``buffers`` data
    buffers (with padding), and junk in the views of null slots when ``garbage``."""
    views, datas, valid = b"", [bytearray() for _ in range(buffers)], 0
    for i, v in enumerate(values):
        if v is None:
            views += (struct.pack("<i", 40) + b"JUNK" + struct.pack("<ii", 0, 3)) if garbage else bytes(16)
            continue
        valid |= 1 << i
        b = v.encode()
        if len(b) <= 12:
            views += struct.pack("<i", len(b)) + b.ljust(12, b"\0")
        else:
            k = i % buffers
            datas[k] += b"#" * (i % 3)
            views += struct.pack("<i", len(b)) + b[:4] + struct.pack("<ii", k, len(datas[k]))
            datas[k] += b
    bufs = [pa.py_buffer(valid.to_bytes((len(values) + 7) // 8, "little")), pa.py_buffer(views)]
    bufs += [pa.py_buffer(bytes(d) + bytes(64)) for d in datas]
    return pa.Array.from_buffers(pa.string_view(), len(values), bufs)


def test_string_view_shards_are_byte_identical_for_equal_values(tmp_path):
    """Two string_view tables with the same values and different buffer layouts (as a fresh
    process builds them on resume): write_shard writes the same bytes, and keeps the type."""
    values = ["a much longer string than twelve", None, "short", "another long string value!", None, "x" * 50]
    a = pa.table({"s": _views(values, buffers=1, garbage=False)})
    b = pa.table({"s": _views(values, buffers=3, garbage=True)})
    assert a.equals(b)
    assert [x.to_pybytes() for x in a["s"].chunk(0).buffers()[1:]] != [
        x.to_pybytes() for x in b["s"].chunk(0).buffers()[1:]
    ]
    ia = write_shard(a, tmp_path / "a.arrow")
    ib = write_shard(b, tmp_path / "b.arrow")
    assert ia.sha256 == ib.sha256
    assert pa.ipc.open_file(tmp_path / "a.arrow").schema.field("s").type == pa.string_view()
