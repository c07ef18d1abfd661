"""The compiled JSONL path (``dataforge.io._jsonl``) against the general orjson path.

The oracle is the reader itself with the compiled path switched off: for every file, both give
the same documents (ids, texts, meta, provenance), the same rejects and the same batches. The
kernel's own answer (accepted or refused) is checked too, so that each case exercises the path
it is meant to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataforge.io.readers as readers
from dataforge.io._jsonl import simple_records
from dataforge.io.inputs import InputSpec, discover
from dataforge.io.readers import read_batches

TEXT, ID = np.frombuffer(b"text", np.uint8), np.frombuffer(b"id", np.uint8)


def accepts(line: bytes) -> bool:
    buf = np.frombuffer(line + b"\n", np.uint8)
    return bool(simple_records(buf, 0, len(buf), TEXT, ID)[0])


def batches(path: Path, *, simple: bool, monkeypatch, **kw) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    monkeypatch.setattr(readers, "_SIMPLE_JSONL", simple)
    spec = InputSpec(paths=(str(path),))
    return [(b.docs, b.rejects) for f in discover(spec) for b in read_batches(f, spec, **kw)]


def assert_same_as_orjson(path: Path, monkeypatch, **kw) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    fast = batches(path, simple=True, monkeypatch=monkeypatch, **kw)
    slow = batches(path, simple=False, monkeypatch=monkeypatch, **kw)
    assert len(fast) == len(slow)
    for (fd, fr), (sd, sr) in zip(fast, slow, strict=True):
        assert fd.schema == sd.schema
        assert fd.equals(sd)
        assert fr.equals(sr)
    return fast


SIMPLE = [
    b'{"id": "a", "text": "plain words"}',
    b'{"text": "text first", "id": "b"}',
    b'{"text": "no id at all"}',
    b'  {  "id"  :  "c" ,  "text"  :  "spaces around everything"  }  ',
    b'{"id":"d","text":"no spaces"}\r',
    b'{"id": "e", "text": "escapes: \\" \\\\ \\/ \\b \\f \\n \\r \\t end"}',
    b'{"id": "f", "text": "unicode escapes: \\u00e9 \\u00E9 \\u2019 \\u4e2d \\u0041 \\u0000 \\uffff"}',
    b'{"id": "g", "text": "a surrogate pair: \\ud83d\\ude00 and \\uD834\\uDD1E"}',
    '{"id": "h", "text": "raw UTF-8: caf\u00e9 \u2019 \u4e2d\u6587 \U0001f600 \ufffe \x7f"}'.encode(),
    b'{"id": "", "text": ""}',
    b'{"id": "j", "text": "' + b"x" * 5000 + b'"}',
    b'{"id": "k", "text": "12345678\\"12345678\\\\1234567"}',
    # other fields with values orjson writes back as they are: kept as meta
    b'{"id": "m", "text": "extra key", "lang": "en"}',
    b'{"url": "http://x.org/a?b=1", "id": "n", "n": 42, "neg": -7, "zero": 0, "text": "t", "ok": true}',
    '{"text": "meta with unicode", "title": "caf\u00e9 \u4e2d \U0001f600", "f": false, "z": null}'.encode(),
    b'{"text": "18 digits", "big": 123456789012345678, "s": "1e5 and 12345678901234567890123"}',
    b'{"text":"compact","a":"","b":1}',
]

REFUSED = [
    b'{"id": 7, "text": "integer id"}',
    b'{"id": null, "text": "null id"}',
    b'{"id": "a", "text": "a float", "score": 1.5}',
    b'{"id": "a", "text": "an exponent", "score": 1e5}',
    b'{"id": "a", "text": "minus zero", "n": -0}',
    b'{"id": "a", "text": "leading zero", "n": 012}',
    b'{"id": "a", "text": "19 digits", "n": 1234567890123456789}',
    b'{"id": "a", "text": "an array", "tags": ["x"]}',
    b'{"id": "a", "text": "an object", "o": {}}',
    b'{"id": "a", "text": "escaped meta", "s": "a\\nb"}',
    b'{"id": "a", "text": "duplicate meta", "s": "1", "s": "2"}',
    b'{"id": "a", "text": "bad literal", "s": tru}',
    b'{"id": "a", "text": null}',
    b'{"id": "a", "text": 42}',
    b'{"id": "a"}',
    b"{}",
    b"",
    b"   ",
    b"[1, 2]",
    b'{"id": "a", "text": "dup", "text": "dup"}',
    b'{"te\\u0078t": "escaped key"}',
    b'{"id": "a", "text": "lone high \\ud800 surrogate"}',
    b'{"id": "a", "text": "lone low \\udc00 surrogate"}',
    b'{"id": "a", "text": "bad escape \\x41"}',
    b'{"id": "a", "text": "short escape \\u12"}',
    b'{"id": "a", "text": "raw tab \t inside"}',
    b'{"id": "a", "text": "bad utf-8 \xff here"}',
    b'{"id": "a", "text": "overlong \xc0\xaf"}',
    b'{"id": "a", "text": "encoded surrogate \xed\xa0\x80"}',
    b'{"id": "a", "text": "truncated \xe2\x80"}',
    b'{"id": "a", "text": "unterminated}',
    b'{"id": "a", "text": "trailing comma",}',
    b'{"id": "a", "text": "garbage after"} x',
    b'\xef\xbb\xbf{"text": "byte order mark"}',
    b'{"id": "a", "text": "form feed is not JSON space"}\x0c',
    b'{"id": "a" "text": "missing comma"}',
    # keys: invalid UTF-8 or a raw control character (orjson rejects the line), and valid
    # non-ASCII (kept, the general way): a key is copied into the meta only when plain ASCII
    b'{"id": "a", "text": "ok", "ti\x80tle": "bad utf-8 in a key"}',
    b'{"id": "a", "text": "ok", "\xff": 1}',
    b'{"id": "a", "text": "ok", "k\tey": 1}',
    '{"id": "a", "text": "ok", "caf\u00e9": "non-ASCII key"}'.encode(),
]


@pytest.mark.parametrize("line", SIMPLE, ids=range(len(SIMPLE)))
def test_simple_records_are_accepted_and_decode_as_json(line):
    assert accepts(line)
    buf = np.frombuffer(line + b"\n", np.uint8)
    ok, texts, t_off, ids, i_off, has_id, metas, m_off, chars = simple_records(buf, 0, len(buf), TEXT, ID)
    rec = json.loads(line)
    text = bytes(texts[t_off[0] : t_off[1]]).decode("utf-8")
    assert text == rec["text"] and chars == len(rec["text"])
    assert bool(has_id[0]) == ("id" in rec)
    assert bytes(ids[i_off[0] : i_off[1]]).decode() == rec.get("id", "")
    others = {k: v for k, v in rec.items() if k not in ("id", "text")}
    meta = bytes(metas[m_off[0] : m_off[1]])
    assert meta == (orjson.dumps(others) if others else b"")  # what the general path stores


@pytest.mark.parametrize("line", REFUSED, ids=range(len(REFUSED)))
def test_other_lines_are_refused(line):
    assert not accepts(line)


@pytest.mark.parametrize("line", REFUSED, ids=range(len(REFUSED)))
def test_a_refused_line_sends_its_chunk_the_general_way(tmp_path, monkeypatch, line):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([*SIMPLE, line, *SIMPLE]) + b"\n")
    out = assert_same_as_orjson(path, monkeypatch)
    docs = pl.concat([d for d, _ in out])
    rejects = pl.concat([r for _, r in out])
    assert docs.height + rejects.height == 2 * len(SIMPLE) + 1


def test_a_file_of_simple_records_reads_as_orjson_reads_it(tmp_path, monkeypatch):
    path = tmp_path / "simple.jsonl"
    path.write_bytes(b"\n".join(SIMPLE * 50) + b"\n")
    out = assert_same_as_orjson(path, monkeypatch, batch_rows=7)
    docs = pl.concat([d for d, _ in out])
    assert docs.height == 50 * len(SIMPLE)
    assert docs["id"][2] == f"{path}:3"  # the generated id of a record without one
    assert docs["_line"].to_list() == list(range(1, docs.height + 1))
    plain = sum(set(json.loads(line)) <= {"id", "text"} for line in SIMPLE)
    assert 0 < plain < len(SIMPLE) and docs["meta"].null_count() == 50 * plain


@pytest.mark.parametrize("chunk", [1, 5, 64, 1000])
def test_lines_straddling_reads(tmp_path, monkeypatch, chunk):
    path = tmp_path / "straddle.jsonl"
    path.write_bytes(b"\n".join(SIMPLE * 3) + b'\n{"id": "tail", "text": "no final newline"}')
    monkeypatch.setattr(readers, "_CHUNK", chunk)
    out = assert_same_as_orjson(path, monkeypatch, batch_rows=5)
    docs = pl.concat([d for d, _ in out])
    assert docs.height == 3 * len(SIMPLE) + 1 and docs["id"][-1] == "tail"


def test_batches_are_cut_by_text_size_as_before(tmp_path, monkeypatch):
    # batch_bytes counts code points of the texts: the compiled path counts the same
    path = tmp_path / "sizes.jsonl"
    lines = [
        json.dumps({"id": str(i), "text": "\u00e9\u4e2d\U0001f600 " * (i % 40)}).encode() for i in range(3000)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(readers, "_CHUNK", 4096)
    out = assert_same_as_orjson(path, monkeypatch, batch_bytes=2000)
    assert len(out) > 10


JSON_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60
) | st.sampled_from(["", '"', "\\", "\n\t\r", "\x00\x1f\x7f", "\u2028\u2029", "\U0001f600"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(JSON_TEXT, st.one_of(st.none(), JSON_TEXT), st.booleans(), st.booleans()),
        min_size=1,
        max_size=30,
    ),
    extra=st.lists(
        st.dictionaries(
            st.sampled_from(["url", "lang", "n", "flag", "title"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-(10**18) + 1, 10**18 - 1),
                st.text(
                    st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters='"\\'), max_size=20
                ),
            ),
            max_size=4,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_random_records_read_as_orjson_reads_them(tmp_path_factory, monkeypatch, records, extra):
    lines = []
    for (text, id_, ascii_only, id_first), more in zip(records, extra * len(records), strict=False):
        rec = {"id": id_, "text": text} if id_first else {"text": text, "id": id_}
        if id_ is None:
            del rec["id"]
        line = json.dumps(rec, ensure_ascii=ascii_only)
        if more:  # other fields as plain values (no escapes), after text and id
            extra = json.dumps(more, ensure_ascii=False)[1:-1]
            line = line[:-1] + (", " if rec else "") + extra + "}"
        lines.append(line.encode())
    path = tmp_path_factory.mktemp("random") / "r.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert all(accepts(line) for line in lines)
    assert_same_as_orjson(path, monkeypatch, batch_rows=4)
