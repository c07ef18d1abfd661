"""Readers: every format and compression, provenance, and every kind of malformed record."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.errors import ConfigError, InputError
from dataforge.io.inputs import InputSpec, discover
from dataforge.io.readers import check_file, read_batches


def read_all(path, **spec_kw):
    spec = InputSpec(paths=(str(path),), **spec_kw)
    docs, rejects = [], []
    for f in discover(spec):
        check_file(f, spec)
        for b in read_batches(f, spec, batch_rows=3):
            docs.append(b.docs)
            rejects.append(b.rejects)
    return pl.concat(docs), pl.concat(rejects)


GOOD = [{"id": "a", "text": "first doc", "lang": "en"}, {"id": 7, "text": "second"}, {"text": "no id here"}]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_jsonl_all_compressions_same_rows(make_jsonl, compression):
    ext = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
    path = make_jsonl(f"d.jsonl{ext}", GOOD, compression=compression)
    docs, rejects = read_all(path)
    assert rejects.height == 0
    assert docs["text"].to_list() == ["first doc", "second", "no id here"]
    assert docs["id"].to_list() == ["a", "7", f"{path}:3"]
    assert docs["_line"].to_list() == [1, 2, 3]
    assert docs["_row"].to_list() == [0, 1, 2]
    assert json.loads(docs["meta"][0]) == {"lang": "en"}
    assert docs["meta"][1] is None
    assert set(docs["_source"]) == {str(path)}


def test_jsonl_malformed_lines_go_to_rejects_with_line_and_raw(make_jsonl):
    lines = [
        json.dumps({"id": "ok1", "text": "fine"}),
        "{not json",
        b'{"text": "bad \xff byte"}',
        json.dumps({"id": "x"}),
        json.dumps({"text": None}),
        json.dumps({"text": 42}),
        json.dumps([1, 2, 3]),
        "   ",
        json.dumps({"id": {"nested": 1}, "text": "id is an object"}),
        json.dumps({"text": "NaN follows", "x": 1}).replace("1}", "NaN}"),
        json.dumps({"id": "ok2", "text": "also fine"}),
    ]
    path = make_jsonl("bad.jsonl", lines)
    docs, rejects = read_all(path)
    assert docs["id"].to_list() == ["ok1", "ok2"]
    assert docs["_line"].to_list() == [1, 11]
    got = dict(zip(rejects["source_line"].to_list(), rejects["reason"].to_list()))
    assert got == {
        2: "bad_json",
        3: "bad_utf8",
        4: "missing_text",
        5: "missing_text",
        6: "wrong_type",
        7: "not_object",
        8: "blank_line",
        9: "wrong_type",
        10: "bad_json",
    }
    # raw bytes are kept exactly, and the error names file, line and the bad value
    raw3 = rejects.filter(pl.col("source_line") == 3)["raw"][0]
    assert raw3 == b'{"text": "bad \xff byte"}'
    err6 = rejects.filter(pl.col("source_line") == 6)["error"][0]
    assert f"{path}:6" in err6 and "42" in err6 and "integer" in err6
    err4 = rejects.filter(pl.col("source_line") == 4)["error"][0]
    assert "'text'" in err4 and "missing" in err4
    assert docs.height + rejects.height == len(lines)


def test_jsonl_big_integers_kept_exactly_in_meta(make_jsonl):
    path = make_jsonl("big.jsonl", ['{"text": "t", "n": 123456789012345678901234567890}'])
    docs, _ = read_all(path)
    assert json.loads(docs["meta"][0])["n"] == 123456789012345678901234567890


def test_jsonl_crlf_and_missing_final_newline(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"text": "one"}\r\n{"text": "two"}')
    docs, rejects = read_all(path)
    assert docs["text"].to_list() == ["one", "two"]
    assert rejects.height == 0


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_jsonl_byte_order_mark_at_the_start_is_dropped(tmp_path, compression):
    """A BOM at the start of the file is not part of the first record (a BOM further on is
    malformed input: that line is rejected)."""
    data = b'\xef\xbb\xbf{"id": "a", "text": "one"}\n{"text": "two"}\n\xef\xbb\xbf{"text": "three"}\n'
    path = tmp_path / {"none": "b.jsonl", "gzip": "b.jsonl.gz", "zstd": "b.jsonl.zst"}[compression]
    if compression == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    docs, rejects = read_all(path)
    assert docs["text"].to_list() == ["one", "two"] and docs["id"][0] == "a"
    assert docs["_line"].to_list() == [1, 2]
    assert rejects["source_line"].to_list() == [3] and rejects["reason"].to_list() == ["bad_json"]


def test_custom_text_and_id_fields(make_jsonl):
    path = make_jsonl("r.jsonl", [{"newid": 12, "body": "text here", "title": "T"}])
    docs, _ = read_all(path, text_field="body", id_field="newid")
    assert docs["id"].to_list() == ["12"]
    assert json.loads(docs["meta"][0]) == {"title": "T"}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_compressed_stream_rejects_tail_keeps_head(tmp_path, compression):
    data = b"".join(
        json.dumps({"id": str(i), "text": f"document number {i} " * 20}).encode() + b"\n" for i in range(2000)
    )
    comp = (
        gzip.compress(data, mtime=0) if compression == "gzip" else zstandard.ZstdCompressor().compress(data)
    )
    ext = ".gz" if compression == "gzip" else ".zst"
    path = tmp_path / f"t.jsonl{ext}"
    path.write_bytes(comp[: len(comp) // 2])
    docs, rejects = read_all(path)
    assert rejects["reason"].to_list()[-1] == "truncated"
    assert "truncated" in rejects["error"].to_list()[-1]
    assert docs.height < 2000
    # rows that were read are intact and in order
    assert docs["id"].to_list() == [str(i) for i in range(docs.height)]


def test_csv_quoted_multiline_ragged_and_bad_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(
        b'id,text,tag\n1,"hello, world",a\n2,"two\nlines",b\n3,ragged\n4,"bad \xff",c\n5,last,d\n'
    )
    docs, rejects = read_all(path)
    assert docs["id"].to_list() == ["1", "2", "5"]
    assert docs["text"].to_list() == ["hello, world", "two\nlines", "last"]
    assert docs["_line"].to_list() == [2, 3, 7]
    assert json.loads(docs["meta"][0]) == {"tag": "a"}
    assert dict(zip(rejects["source_line"], rejects["reason"])) == {5: "ragged_row", 6: "bad_utf8"}
    assert rejects.filter(pl.col("reason") == "bad_utf8")["raw"][0] == b'4,"bad \xff",c\n'


def test_csv_unclosed_quote_is_rejected_not_merged_into_a_kept_record(tmp_path):
    """A quote that never closes would swallow the lines after it: the line it opens is rejected
    (bad_csv, with its file, line and raw bytes) and the lines after it are read again as records
    of their own, so nothing else is lost; at the end of the file too. Text after a closing quote
    is malformed as well."""
    path = tmp_path / "q.csv"
    path.write_bytes(
        b'id,text\n1,"fine"\n2,"never closed\n3,third record\n4,"quoted, fourth"\n5,fifth\n6,"at the end\n'
    )
    docs, rejects = read_all(path)
    assert docs["id"].to_list() == ["1", "3", "4", "5"]
    assert docs["text"].to_list() == ["fine", "third record", "quoted, fourth", "fifth"]
    assert docs["_line"].to_list() == [2, 4, 5, 6]
    assert rejects["source_line"].to_list() == [3, 7] and rejects["reason"].to_list() == ["bad_csv"] * 2
    assert rejects["raw"].to_list() == [b'2,"never closed\n', b'6,"at the end\n']
    # the many good rows after an unclosed quote are all kept
    many = tmp_path / "m.csv"
    many.write_text('id,text\n1,"never closed\n' + "".join(f"{i},row {i}\n" for i in range(2, 1000)))
    docs, rejects = read_all(many)
    assert docs.height == 998 and rejects["source_line"].to_list() == [2]
    junk = tmp_path / "j.csv"
    junk.write_bytes(b'id,text\n1,"closed" then more\n2,ok\n')
    docs, rejects = read_all(junk)
    assert docs["id"].to_list() == ["2"] and rejects["reason"].to_list() == ["bad_csv"]


@pytest.mark.parametrize("layout", ["simple", "general", "bad_line", "csv", "parquet"])
def test_an_empty_id_is_no_id_in_every_format(tmp_path, layout):
    """``"id": ""`` gets the generated id (file and line or row), as a missing or null id does and as
    CSV always did: an empty string does not identify a record (two would collide)."""
    recs = [
        {"id": "", "text": "one"},
        {"id": "k", "text": "two"},
        {"text": "three"},
        {"id": None, "text": "four"},
    ]
    if layout in ("simple", "general", "bad_line"):
        path = tmp_path / "e.jsonl"
        lines = [json.dumps(r) for r in recs]
        if layout == "general":  # a nested value sends the chunk through orjson, in bulk
            lines = [json.dumps({**r, "tags": ["x", {"y": 1}]}) for r in recs]
        if layout == "bad_line":  # a malformed line: line by line
            lines.append("{not json")
        path.write_text("\n".join(lines) + "\n")
        expect = [f"{path}:1", "k", f"{path}:3", f"{path}:4"]
    elif layout == "csv":
        path = tmp_path / "e.csv"
        path.write_text("id,text\n,one\nk,two\n,three\n,four\n")
        expect = [f"{path}:2", "k", f"{path}:4", f"{path}:5"]
    else:
        path = tmp_path / "e.parquet"
        pq.write_table(pa.table({"id": ["", "k", None, None], "text": ["one", "two", "three", "four"]}), path)
        expect = [f"{path}#row0", "k", f"{path}#row2", f"{path}#row3"]
    docs, _ = read_all(path)
    assert docs["id"].to_list() == expect


def test_jsonl_without_the_text_field_is_refused_up_front(tmp_path):
    """A wrong text field on JSONL stops before any work (as on CSV and Parquet), naming the fields
    seen; a short file whose records lack it still gets a per-line reject each."""
    many = tmp_path / "body.jsonl.gz"
    many.write_bytes(
        gzip.compress(b"".join(json.dumps({"id": i, "body": "x"}).encode() + b"\n" for i in range(25)))
    )
    spec = InputSpec(paths=(str(many),))
    with pytest.raises(
        InputError, match=r"none of the first 20 records has the text field 'text'.*'id', 'body'"
    ):
        check_file(discover(spec)[0], spec)
    check_file(
        discover(InputSpec(paths=(str(many),), text_field="body"))[0],
        InputSpec(paths=(str(many),), text_field="body"),
    )
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"id": i, "body": "x"}) + "\n" for i in range(5)))
    docs, rejects = read_all(few)
    assert docs.height == 0 and rejects["reason"].to_list() == ["missing_text"] * 5


def test_csv_with_another_delimiter_gets_a_hint(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("id;text\n1;hello\n")
    with pytest.raises(InputError, match=r"columns: 'id;text' \(one column: is the delimiter ';'\?"):
        read_all(path)
    docs, _ = read_all(path, csv_delimiter=";")
    assert docs["text"].to_list() == ["hello"]


def test_tsv_by_extension(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("id\ttext\nx\tsome, text\n")
    docs, _ = read_all(path)
    assert docs["text"].to_list() == ["some, text"]


def test_csv_without_text_column_is_an_input_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,body\n1,x\n")
    with pytest.raises(InputError, match="no text column 'text'.*'id', 'body'"):
        read_all(path)


@pytest.mark.parametrize("fmt", ["parquet", "arrow-file", "arrow-stream"])
def test_columnar_readers(tmp_path, fmt):
    table = pa.table(
        {
            "id": [10, 11, 12, 13],
            "text": ["alpha", None, "gamma", "delta"],
            "score": [0.5, 1.5, None, 2.0],
        }
    )
    if fmt == "parquet":
        path = tmp_path / "d.parquet"
        pq.write_table(table, path)
    else:
        path = tmp_path / "d.arrow"
        with pa.OSFile(str(path), "wb") as sink:
            writer = (
                ipc.new_file(sink, table.schema)
                if fmt == "arrow-file"
                else ipc.new_stream(sink, table.schema)
            )
            writer.write_table(table, max_chunksize=2)
            writer.close()
    docs, rejects = read_all(path)
    assert docs["id"].to_list() == ["10", "12", "13"]
    assert docs["_row"].to_list() == [0, 2, 3]
    assert docs["_line"].null_count() == 3
    assert json.loads(docs["meta"][0]) == {"score": 0.5}
    assert rejects["reason"].to_list() == ["missing_text"]
    assert rejects["source_row"].to_list() == [1]


def test_parquet_wrong_text_type_and_binary_text(tmp_path):
    p1 = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), p1)
    docs, rejects = read_all(p1)
    assert docs.height == 0
    assert rejects["reason"].to_list() == ["wrong_type", "wrong_type"]
    assert "int64" in rejects["error"][0]
    p2 = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"text": pa.array([b"ok", b"bad\xff"], pa.binary())}), p2)
    docs, rejects = read_all(p2)
    assert docs["text"].to_list() == ["ok"]
    assert rejects["reason"].to_list() == ["bad_utf8"]


def test_parquet_missing_text_column_fails_before_work(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(InputError, match="no text column 'text'; columns: body"):
        read_all(path)


def test_not_a_parquet_file_is_an_input_error(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match="not a readable parquet file"):
        read_all(path)


def test_gzipped_parquet(tmp_path):
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": ["a", "b"]}), buf)
    path = tmp_path / "d.parquet.gz"
    path.write_bytes(gzip.compress(buf.getvalue().to_pybytes()))
    docs, _ = read_all(path)
    assert docs["text"].to_list() == ["a", "b"]


# ----------------------------------------------------------------------------- discovery


def test_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="does-not-exist.jsonl' does not exist"):
        discover(InputSpec(paths=(str(tmp_path / "does-not-exist.jsonl"),)))


def test_empty_folder_and_empty_glob_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no data files"):
        discover(InputSpec(paths=(str(tmp_path / "empty"),)))
    with pytest.raises(InputError, match="matches no files"):
        discover(InputSpec(paths=(str(tmp_path / "*.jsonl"),)))


def test_unknown_extension_needs_format(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text('{"text": "x"}\n')
    with pytest.raises(InputError, match="--format"):
        discover(InputSpec(paths=(str(path),)))
    files = discover(InputSpec(paths=(str(path),), format="jsonl"))
    assert files[0].format == "jsonl"


def test_folder_recursion_order_dedupe_and_hidden(tmp_path, make_jsonl):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    make_jsonl("b.jsonl", GOOD)
    make_jsonl("a.jsonl.gz", GOOD, compression="gzip")
    make_jsonl("sub/c.jsonl.zst", GOOD, compression="zstd")
    make_jsonl(".hidden/x.jsonl", GOOD)
    make_jsonl("_tmp.jsonl", GOOD)
    (tmp_path / "notes.txt").write_text("ignored in folders")
    files = discover(InputSpec(paths=(str(tmp_path), str(tmp_path / "b.jsonl"))))
    names = [f.path.removeprefix(str(tmp_path) + "/") for f in files]
    assert names == ["a.jsonl.gz", "b.jsonl", "sub/c.jsonl.zst"]
    assert [f.compression for f in files] == ["gzip", "none", "zstd"]


def test_output_folders_inside_an_input_folder_are_not_read(tmp_path):
    """``clean d -o d/out``: the next run must not read d/out's shards and reports as input (and so
    finds its output up to date); a dataforge output given as the input reads its data/ shards."""
    import dataforge

    d = tmp_path / "d"
    d.mkdir()
    (d / "a.jsonl").write_text(
        "".join(json.dumps({"id": str(i), "text": f"doc {i} " * 30}) + "\n" for i in range(20))
    )
    first = dataforge.clean([str(d)], output=d / "out")
    assert [f.path for f in discover(InputSpec(paths=(str(d),)))] == [str(d / "a.jsonl")]
    again = dataforge.clean([str(d)], output=d / "out")
    assert again.status == "up_to_date"
    other = dataforge.clean([str(d)], output=d / "out2")  # reads a.jsonl only, not out/
    assert (other.rows_in, other.rejected) == (first.rows_in, 0)
    # a folder merely holding a file called manifest.json is not an output
    (d / "sub").mkdir()
    (d / "sub" / "manifest.json").write_text('{"name": "not ours"}')
    (d / "sub" / "b.jsonl").write_text('{"text": "kept"}\n')
    assert str(d / "sub" / "b.jsonl") in [f.path for f in discover(InputSpec(paths=(str(d),)))]
    # the output folder itself as the input: its data/ shards, not its reports
    files = discover(InputSpec(paths=(str(d / "out"),)))
    assert files and all("/out/data/" in f.path for f in files)
    # an output without data/ (normalize writes tables/, text/...): say which parts there are
    rec = tmp_path / "rec"
    (rec / "tables").mkdir(parents=True)
    (rec / "text").mkdir()
    (rec / "manifest.json").write_text('{"dataforge_version": "0.1.0", "kind": "records"}')
    with pytest.raises(InputError, match="dataforge output without data/.*tables, text"):
        discover(InputSpec(paths=(str(rec),)))


def test_a_dataforge_output_read_again_keeps_one_meta_object(tmp_path):
    """clean, then dedup over clean's output: the original fields stay at the top of ``meta``
    (not a JSON string inside a new object), the previous run's columns are added beside them."""
    import dataforge

    src = tmp_path / "m.jsonl"
    prose = Path(__file__).resolve().parent.parent.parent / "sample_data" / "pretraining" / "prose.jsonl.gz"
    with gzip.open(prose, "rt") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(12), fh)]
    rows = [{"id": f"d{i}", "text": t, "title": f"T{i}", "year": 2000 + i} for i, t in enumerate(texts)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataforge.clean([str(src)], output=tmp_path / "c")
    dataforge.dedup([str(tmp_path / "c" / "data")], output=tmp_path / "d")
    out = pl.concat([pl.read_ipc(p) for p in sorted((tmp_path / "d" / "data").glob("*.arrow"))])
    metas = [json.loads(m) for m in out["meta"].to_list()]
    assert [m["title"] for m in metas] == [f"T{i}" for i in range(12)]
    assert all(m["year"] == 2000 + i and "meta" not in m for i, m in enumerate(metas))
    assert all(m["source_file"] == str(src) for m in metas)  # the first run's provenance, kept
    # a meta column that is not a JSON object is kept as a field, like any other column
    t = pa.table({"text": ["a b c d e f"], "meta": ["plain words"], "k": [1]})
    pq.write_table(t, tmp_path / "p.parquet")
    docs, _ = read_all(tmp_path / "p.parquet")
    assert json.loads(docs["meta"][0]) == {"meta": "plain words", "k": 1}


def test_compression_detected_by_magic_not_name(tmp_path):
    path = tmp_path / "mislabeled.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "hidden gzip"}\n'))
    docs, _ = read_all(path)
    assert docs["text"].to_list() == ["hidden gzip"]


def test_bad_input_spec_options():
    with pytest.raises(ConfigError, match="unknown input format 'xml'"):
        InputSpec(paths=("x",), format="xml")
    with pytest.raises(ConfigError, match="both 'x'"):
        InputSpec(paths=("x",), text_field="x", id_field="x")


# ----------------------------------------------------------------------------- property


line_kinds = st.sampled_from(["good", "bad_json", "bad_utf8", "missing", "wrong", "blank", "array"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(line_kinds, min_size=1, max_size=30),
    texts=st.lists(st.text(max_size=40), min_size=30, max_size=30),
)
def test_every_line_lands_exactly_once(tmp_path, kinds, texts):
    make = {
        "good": lambda i: json.dumps({"id": f"d{i}", "text": texts[i]}).encode(),
        "bad_json": lambda i: b'{"text": ',
        "bad_utf8": lambda i: b'{"text": "\xc3\x28"}',
        "missing": lambda i: b'{"id": "m"}',
        "wrong": lambda i: b'{"text": [1]}',
        "blank": lambda i: b"",
        "array": lambda i: b"[]",
    }
    path = tmp_path / "prop.jsonl"
    path.write_bytes(b"\n".join(make[k](i) for i, k in enumerate(kinds)) + b"\n")
    docs, rejects = read_all(path)
    lines = sorted(docs["_line"].to_list() + rejects["source_line"].to_list())
    assert lines == list(range(1, len(kinds) + 1))
    assert docs.height == kinds.count("good")
    assert docs["text"].to_list() == [texts[i] for i, k in enumerate(kinds) if k == "good"]


def test_bulk_path_equals_line_by_line_path(monkeypatch):
    import dataforge.io.readers as readers

    sample = Path(__file__).resolve().parent.parent.parent / "sample_data"
    files = [
        sample / "news" / "reuters.jsonl.gz",
        sample / "defects" / "planted.jsonl",
        sample / "pretraining" / "prose.jsonl.gz",
    ]
    for path in files:
        fast_docs, fast_rej = read_all(path)
        monkeypatch.setattr(readers, "_fast_jsonl_chunk", lambda *a, **k: False)
        slow_docs, slow_rej = read_all(path)
        monkeypatch.undo()
        assert fast_docs.equals(slow_docs), path
        assert fast_rej.equals(slow_rej), path


def test_big_integer_id_is_kept_exactly(make_jsonl):
    path = make_jsonl(
        "bigid.jsonl", ['{"id": 123456789012345678901234567890, "text": "t"}', '{"id": 7, "text": "u"}']
    )
    docs, rejects = read_all(path)
    assert rejects.height == 0
    assert docs["id"].to_list() == ["123456789012345678901234567890", "7"]


@pytest.mark.parametrize("chunk", [1, 2, 7, 64])
def test_lines_straddling_read_chunks_are_rebuilt(tmp_path, monkeypatch, chunk):
    """The reader reads fixed-size chunks and splits them at newlines: with chunks shorter than a
    line (a line spread over many chunks, chunks with no newline at all), every record and every
    reject comes out whole and once, as with one big chunk."""
    import dataforge.io.readers as readers

    sample = Path(__file__).resolve().parent.parent.parent / "sample_data"
    raw = (sample / "defects" / "planted.jsonl").read_bytes()[:20_000]
    raw = raw[: raw.rindex(b"\n") + 1] + b'{"id": "tail", "text": "no final newline"}'
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(raw)
    whole_docs, whole_rej = read_all(path)
    monkeypatch.setattr(readers, "_CHUNK", chunk)
    docs, rejects = read_all(path)
    assert docs.equals(whole_docs)
    assert rejects.equals(whole_rej)
    assert docs["id"][-1] == "tail" and docs.height + rejects.height == raw.count(b"\n") + 1
