"""Task planning: big files split into pieces, small files grouped, provenance exact."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import zstandard

import dataforge.io.inputs as inputs
from dataforge.io.inputs import (
    InputFile,
    InputSpec,
    Piece,
    count_newlines,
    discover,
    plan_tasks,
    tasks_from_json,
    tasks_to_json,
)
from dataforge.io.readers import read_batches


def _file(path: Path, **spec) -> InputFile:
    (f,) = discover(InputSpec(paths=(str(path),), **spec))
    return f


def _read_all(f: InputFile, spec: InputSpec, pieces: list[Piece] | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    docs, rejects = [], []
    for piece in pieces or [None]:
        for b in read_batches(f, spec, batch_rows=7, piece=piece):
            docs.append(b.docs)
            rejects.append(b.rejects)
    return pl.concat(docs), pl.concat(rejects)


def _pieces(f: InputFile, task_bytes: int) -> list[Piece]:
    tasks = plan_tasks([f], task_bytes=task_bytes)
    return [p for t in tasks for p in t]


def _messy_jsonl(path: Path, n: int = 300) -> Path:
    """Lines of varied length, records without id (ids from line numbers), blank and broken
    lines, CRLF endings, and no newline at the end."""
    lines = []
    for i in range(n):
        if i % 37 == 5:
            lines.append(b"")  # blank line: a rejected record
        elif i % 41 == 7:
            lines.append(b'{"text": "broken')  # bad JSON
        elif i % 3 == 0:
            lines.append(json.dumps({"text": "word " * (i % 17 + 1), "n": i}).encode())  # no id
        else:
            rec = {"id": f"r{i}", "text": ("x" * (i % 50)) + f" doc {i}"}
            lines.append(json.dumps(rec).encode() + (b"\r" if i % 11 == 0 else b""))
    path.write_bytes(b"\n".join(lines))  # no final newline
    return path


@pytest.mark.parametrize("task_bytes", [1, 64, 500, 2_000, 7_919])
def test_jsonl_pieces_start_at_lines_and_number_them_exactly(tmp_path, task_bytes):
    f = _file(_messy_jsonl(tmp_path / "m.jsonl"))
    data = Path(f.path).read_bytes()
    pieces = _pieces(f, task_bytes)
    assert pieces[0].start == 0 and pieces[-1].end == len(data)
    for a, b in itertools.pairwise(pieces):
        assert a.end == b.start  # contiguous, nothing lost or read twice
    for p in pieces:
        assert p.kind == "bytes"
        assert p.start == 0 or data[p.start - 1 : p.start] == b"\n"  # a line starts here
        assert p.first_line == data[: p.start].count(b"\n") + 1
        assert p.first_row == p.first_line - 1
        if task_bytes >= 500:
            assert p.nbytes <= task_bytes + 200  # balanced: at most one line over the target
    n = -(-len(data) // task_bytes)
    assert len(pieces) <= n
    if task_bytes >= 2_000:  # lines are much shorter than the pieces: exactly n pieces
        assert len(pieces) == n


@pytest.mark.parametrize("task_bytes", [300, 1_000, 4_096])
def test_split_jsonl_reads_like_the_whole_file(tmp_path, task_bytes):
    f = _file(_messy_jsonl(tmp_path / "m.jsonl"))
    spec = InputSpec(paths=(f.path,))
    pieces = _pieces(f, task_bytes)
    assert len(pieces) > 3
    whole_docs, whole_rej = _read_all(f, spec, None)
    docs, rej = _read_all(f, spec, pieces)
    assert whole_rej.height > 5 and whole_docs["id"].str.contains(":").sum() > 50  # generated ids
    assert docs.equals(whole_docs)  # ids, texts, meta, _source, _row, _line
    assert rej.equals(whole_rej)


def _csv(path: Path, n: int, *, quoted: bool = False, eol: str = "\n") -> Path:
    rows = ["id,text,title"]
    for i in range(n):
        text = f'"has, a comma {i}"' if quoted and i == n // 2 else f"plain text number {i} " + "y" * (i % 30)
        rows.append(f"{'' if i % 9 == 0 else 'c' + str(i)},{text},t{i}")
        if i % 23 == 4:
            rows.append("")  # blank line: a rejected record
        if i % 29 == 3:
            rows.append("only,two")  # ragged row
    path.write_bytes((eol.join(rows) + eol).encode())
    return path


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_csv_without_quotes_is_split_at_rows(tmp_path, eol):
    f = _file(_csv(tmp_path / "a.csv", 200, eol=eol))
    spec = InputSpec(paths=(f.path,))
    pieces = _pieces(f, 700)
    assert len(pieces) > 3 and all(p.kind == "bytes" for p in pieces)
    data = Path(f.path).read_bytes()
    for p in pieces[1:]:
        assert p.first_line == data[: p.start].count(b"\n") + 1
        assert p.first_row == p.first_line - 2  # the header is line 1
    whole_docs, whole_rej = _read_all(f, spec, None)
    docs, rej = _read_all(f, spec, pieces)
    assert whole_rej.height > 5
    assert docs.equals(whole_docs)
    assert rej.equals(whole_rej)


@pytest.mark.parametrize("kind", ["quoted", "bare_cr"])
def test_csv_that_could_have_multiline_records_stays_whole(tmp_path, kind):
    path = _csv(tmp_path / "q.csv", 200, quoted=kind == "quoted")
    if kind == "bare_cr":
        raw = path.read_bytes()
        path.write_bytes(raw.replace(b"t51\n", b"t51\r", 1))
        assert b"\r\n" not in path.read_bytes()
    f = _file(path)
    assert [p.kind for p in _pieces(f, 700)] == ["whole"]


def test_parquet_is_split_at_row_groups(tmp_path):
    n = 1_000
    table = pa.table({"text": [f"doc {i} " + "z" * (i % 40) for i in range(n)], "k": list(range(n))})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=90)  # no id column: ids from rows
    f = _file(tmp_path / "p.parquet")
    md = pq.read_metadata(f.path)
    pieces = _pieces(f, f.size // 4)
    assert len(pieces) >= 3 and all(p.kind == "row_groups" for p in pieces)
    assert pieces[0].start == 0 and pieces[-1].end == md.num_row_groups
    for a, b in itertools.pairwise(pieces):
        assert a.end == b.start
        assert b.first_row == sum(md.row_group(i).num_rows for i in range(b.start))
    spec = InputSpec(paths=(f.path,))
    whole_docs, _ = _read_all(f, spec, None)
    docs, _ = _read_all(f, spec, pieces)
    assert docs.equals(whole_docs)
    assert docs["_row"].to_list() == list(range(n))


def test_arrow_file_is_split_at_record_batches_and_streams_stay_whole(tmp_path):
    n = 600
    table = pa.table({"id": [f"a{i}" for i in range(n)], "text": [f"t{i} " * (i % 9 + 1) for i in range(n)]})
    with ipc.new_file(str(tmp_path / "f.arrow"), table.schema) as w:
        for b in table.to_batches(max_chunksize=50):
            w.write_batch(b)
    with ipc.new_stream(str(tmp_path / "s.arrows"), table.schema) as w:
        for b in table.to_batches(max_chunksize=50):
            w.write_batch(b)
    f = _file(tmp_path / "f.arrow")
    pieces = _pieces(f, f.size // 3)
    assert len(pieces) >= 2 and all(p.kind == "batches" for p in pieces)
    assert [p.first_row for p in pieces] == [p.start * 50 for p in pieces]
    spec = InputSpec(paths=(f.path,))
    assert _read_all(f, spec, pieces)[0].equals(_read_all(f, spec, None)[0])
    s = _file(tmp_path / "s.arrows")
    assert [p.kind for p in _pieces(s, s.size // 3)] == ["whole"]


def test_compressed_files_stay_whole(tmp_path):
    raw = _messy_jsonl(tmp_path / "m.jsonl").read_bytes()
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(raw, mtime=0))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    for name in ("g.jsonl.gz", "z.jsonl.zst"):
        f = _file(tmp_path / name)
        assert [p.kind for p in _pieces(f, 100)] == ["whole"]


def test_small_files_are_grouped_in_order_and_big_ones_split(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(10):
        (d / f"a{i:02d}.jsonl").write_text(json.dumps({"text": f"small {i}"}) + "\n")
    _messy_jsonl(d / "b-big.jsonl", 3_000)
    for i in range(5):
        (d / f"c{i:02d}.jsonl").write_text(json.dumps({"text": f"small {i}"}) + "\n")
    files = discover(InputSpec(paths=(str(d),)))
    big = next(f for f in files if "big" in f.path)
    task_bytes = 2**16  # small files: under 32 bytes
    assert big.size > 2 * task_bytes
    tasks = plan_tasks(files, task_bytes=task_bytes)
    flat = [p for t in tasks for p in t]
    assert [p.file.path for p in flat if p.kind == "whole"] == [f.path for f in files if f is not big]
    assert [len(t) for t in tasks] == [10] + [1] * (len(tasks) - 2) + [5]
    assert all(p.kind == "bytes" for t in tasks[1:-1] for p in t)
    assert len(tasks) - 2 == -(-big.size // task_bytes)
    # a group holds at most task_bytes (no file is read: whole small files need no planning I/O)
    limit = 64 * 2048  # small: under 64 bytes
    fake = [InputFile(f"/nowhere/{i:05d}.jsonl", "jsonl", "none", 63) for i in range(5_000)]
    grouped = plan_tasks(fake, task_bytes=limit)
    assert [len(t) for t in grouped] == [2080, 2080, 840]
    assert [p.file for t in grouped for p in t] == fake


def test_middle_sized_files_are_one_task_each(tmp_path):
    for i in range(3):
        _messy_jsonl(tmp_path / f"m{i}.jsonl", 1_000)  # ~60 KB: over 32 KiB, under 64 MiB
    files = discover(InputSpec(paths=(str(tmp_path),)))
    tasks = plan_tasks(files, task_bytes=64 << 20)
    assert [[p.kind for p in t] for t in tasks] == [["whole"]] * 3


def test_plan_round_trips_through_json(tmp_path):
    f = _file(_messy_jsonl(tmp_path / "m.jsonl"))
    tasks = plan_tasks([f], task_bytes=1_000)
    raw = json.loads(json.dumps(tasks_to_json(tasks, [f])))
    assert tasks_from_json(raw, [f]) == tasks


def test_count_newlines_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "_COUNT_CHUNK", 7)
    data = b'a\r\nb"c\rd\n\n\r\r\nxyz\r'
    path = tmp_path / "x.csv"
    path.write_bytes(data)
    for start, end in [(0, len(data)), (2, 9), (3, len(data)), (5, 5)]:
        sub = data[start:end]
        quotes = sub.count(b'"')
        bare_cr = sum(1 for i, c in enumerate(sub) if c == 13 and (i + 1 >= len(sub) or sub[i + 1] != 10))
        assert count_newlines((str(path), start, end, True)) == (sub.count(b"\n"), quotes + bare_cr)
        assert count_newlines((str(path), start, end, False)) == (sub.count(b"\n"), 0)


def test_plan_counts_lines_through_the_given_map(tmp_path):
    f = _file(_messy_jsonl(tmp_path / "m.jsonl"))
    calls = []

    def map_fn(fn, items):
        calls.append(len(items))
        return [fn(x) for x in items]

    tasks = plan_tasks([f], task_bytes=2_000, map_fn=map_fn)
    assert calls == [len(tasks) - 1]  # the last piece's newlines are never needed (JSONL)
    assert os.path.getsize(f.path) > 2_000
