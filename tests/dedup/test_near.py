"""``dedup.minhash`` end to end: hand-made JSONL files and the Reuters sample.

Runs go through ``dataforge.api.dedup`` (what ``dataforge.dedup`` and the CLI call) or
``run_pipeline``. Expected results come from the construction of the inputs or from an
independent brute-force computation (exact Jaccard of ``shingles()`` sets over all pairs).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from dataforge.api import dedup as run_dedup
from dataforge.config import ExecutorSpec, OutputSpec, Pipeline
from dataforge.dedup.minhash import normalize_text, shingles
from dataforge.errors import ConfigError, DataforgeError
from dataforge.io.inputs import InputSpec
from dataforge.io.shards import read_manifest, read_shard, verify_shards
from dataforge.registry import build_step
from dataforge.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"
NEWS = SAMPLE / "news" / "reuters.jsonl.gz"
OUTPUT_COLUMNS = ("cluster_id", "cluster_size", "dup_of", "similarity")


# --------------------------------------------------------------------------- helpers


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_dir(out: Path, sub: str) -> pl.DataFrame:
    files = sorted((out / sub).glob("part-*"))
    if not files:
        return pl.DataFrame()
    return pl.concat([pl.DataFrame(pl.from_arrow(read_shard(f))) for f in files])


def digests(out: Path) -> dict[str, str]:
    """sha256 of every output file (shards, dropped, rejects, reports) and of the manifest."""
    groups = ("data", "dropped", "rejects", "clusters", "cluster_pairs")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.parent.name in groups)
    files.append(out / "manifest.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def by_id(frame: pl.DataFrame) -> dict[str, dict]:
    return {r["id"]: r for r in frame.iter_rows(named=True)}


def word(i: int) -> str:
    """The i-th of 17,576 distinct three-letter words (letters only: digits would normalize to 0)."""
    return "".join(chr(97 + (i // 26**k) % 26) for k in (2, 1, 0))


def words(lo: int, hi: int) -> str:
    return " ".join(word(i) for i in range(lo, hi))


def jaccard(a: str, b: str, shingle: str = "word:5") -> float:
    sa, sb = set(shingles(a, shingle=shingle)), set(shingles(b, shingle=shingle))
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def run(tmp: Path, records: list[dict], name: str = "out", **kw):
    src = write_jsonl(tmp / f"{name}.jsonl", records)
    out = tmp / name
    report = run_dedup([str(src)], output=out, **kw)
    return out, report, read_dir(out, "data"), read_dir(out, "dropped")


def check_ledger(out: Path, report) -> None:
    assert report.rows_in == report.kept + report.dropped + report.rejected
    manifest = read_manifest(out)
    assert sum(s["rows"] for s in manifest["shards"]) == report.kept
    assert sum(s["rows"] for s in manifest["dropped"]) == report.dropped
    assert verify_shards(out) == []


def load_news() -> list[dict]:
    with gzip.open(NEWS, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# --------------------------------------------------------------------------- exact copies


def test_exact_copies_keep_the_first(tmp_path):
    story = words(0, 60)
    records = [
        {"id": "u0", "text": words(1000, 1060)},
        {"id": "x1", "text": story},
        {"id": "u1", "text": words(2000, 2060)},
        {"id": "x2", "text": story},
        {"id": "x3", "text": story.upper() + " !!!"},  # same after normalization
        {"id": "u2", "text": words(3000, 3060)},
    ]
    out, report, data, dropped = run(tmp_path, records)
    check_ledger(out, report)
    assert data["id"].to_list() == ["u0", "x1", "u1", "u2"]
    assert report.dropped_by_reason == {"dedup.minhash:near_duplicate": 2}
    d = by_id(dropped)
    assert sorted(d) == ["x2", "x3"]
    for row in d.values():
        assert row["drop_reason"] == "near_duplicate"
        assert row["drop_step"] == "dedup.minhash"
        assert row["dup_of"] == "x1"
        assert row["similarity"] == 1.0
        assert (row["cluster_id"], row["cluster_size"]) == (1, 3)  # x1 is at global position 1
        assert "x1" in row["drop_detail"]
    kept = by_id(data)
    assert (kept["x1"]["cluster_id"], kept["x1"]["cluster_size"]) == (1, 3)
    assert kept["x1"]["dup_of"] is None and kept["x1"]["similarity"] is None
    # singletons: their own global position, size 1
    assert [(kept[i]["cluster_id"], kept[i]["cluster_size"]) for i in ("u0", "u1", "u2")] == [
        (0, 1),
        (2, 1),
        (5, 1),
    ]
    info = report.global_info["dedup.minhash"]["finalize"]
    assert (info["clusters"], info["near_duplicates"], info["reference_duplicates"]) == (1, 2, 0)


def test_chain_is_joined_by_transitivity(tmp_path):
    """A~B and B~C above the threshold, A~C below it: connected components put all three in one
    cluster, and C is dropped as a duplicate of A although J(A, C) < threshold."""
    a, b, c = words(0, 200), words(10, 210), words(20, 220)
    assert jaccard(a, b) == jaccard(b, c) == pytest.approx(186 / 206)
    assert jaccard(a, c) == pytest.approx(176 / 216)  # 0.815 < 0.85
    records = [{"id": "A", "text": a}, {"id": "B", "text": b}, {"id": "C", "text": c}]
    out, report, data, dropped = run(
        tmp_path, records, threshold=0.85, bands=32, rows=4, report_clusters=True
    )
    check_ledger(out, report)
    assert data["id"].to_list() == ["A"]
    assert (data["cluster_id"][0], data["cluster_size"][0]) == (0, 3)
    d = by_id(dropped)
    assert (d["B"]["dup_of"], d["C"]["dup_of"]) == ("A", "A")
    assert d["B"]["similarity"] == pytest.approx(jaccard(a, b), abs=1e-6)
    assert d["C"]["similarity"] == pytest.approx(jaccard(a, c), abs=1e-6)
    assert d["C"]["similarity"] < 0.85  # the similarity is with the kept document, not the linking one
    pairs = read_dir(out, "cluster_pairs")
    assert sorted(zip(pairs["id_a"], pairs["id_b"])) == [("A", "B"), ("B", "C")]  # A-C was not verified
    assert pairs["cluster_id"].to_list() == [0, 0]


def test_chain_across_files_gives_the_same_decisions(tmp_path):
    """A, B and C in three files (three tasks) and three verify partitions: the pairs are verified
    where their first document's partition is, and C's similarity to its keeper A, which is no
    verified pair, is still computed exactly from the texts in another task."""
    import dataforge.dedup.near as near

    a, b, c = words(0, 200), words(10, 210), words(20, 220)
    files = []
    for name, text in (("A", a), ("B", b), ("C", c)):
        files.append(str(write_jsonl(tmp_path / f"{name}.jsonl", [{"id": name, "text": text}])))
    out = tmp_path / "out"
    opts = {"threshold": 0.85, "bands": 32, "rows": 4, "report_clusters": True}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(near, "VERIFY_DOCS", 1)  # one partition per document
        report = run_dedup(files, output=out, task_bytes=1000, **opts)  # one task per file
    check_ledger(out, report)
    info = report.global_info["dedup.minhash"]
    assert len(info["verify_pairs"]) == 3
    assert sum(v["verified_pairs"] for v in info["verify_pairs"]) == info["finalize"]["verified_pairs"] == 2
    assert read_dir(out, "data")["id"].to_list() == ["A"]
    d = by_id(read_dir(out, "dropped"))
    assert (d["B"]["dup_of"], d["C"]["dup_of"]) == ("A", "A")
    assert d["B"]["similarity"] == pytest.approx(jaccard(a, b), abs=1e-6)
    assert d["C"]["similarity"] == pytest.approx(jaccard(a, c), abs=1e-6)
    one = tmp_path / "one-task"
    run_dedup(files, output=one, **opts)  # small files grouped into one task; one partition
    assert digests(one) == digests(out)


def test_chain_with_estimates_across_files(tmp_path):
    """verify=estimate, one task per file: C's similarity to its keeper A (no verified pair) is
    the signature estimate, read from another task's side files by the finalize."""
    from dataforge.dedup.minhash import MinHashParams, signatures

    a, b, c = words(0, 200), words(10, 210), words(20, 220)
    sig, _ = signatures(pl.Series([a, b, c]), MinHashParams())
    est = {
        k: float((sig[i] == sig[j]).mean())
        for k, (i, j) in {"ab": (0, 1), "bc": (1, 2), "ac": (0, 2)}.items()
    }
    assert est["ab"] >= 0.85 and est["bc"] >= 0.85 and est["ac"] < 0.85  # A~B~C, A-C not verified
    files = [
        str(write_jsonl(tmp_path / f"{n}.jsonl", [{"id": n, "text": t}])) for n, t in zip("ABC", (a, b, c))
    ]
    out = tmp_path / "out"
    report = run_dedup(
        files,
        output=out,
        threshold=0.85,
        bands=32,
        rows=4,
        verify="estimate",
        task_bytes=1000,
        report_clusters=True,
    )
    check_ledger(out, report)
    pairs = read_dir(out, "cluster_pairs")
    assert sorted(zip(pairs["id_a"], pairs["id_b"])) == [("A", "B"), ("B", "C")]
    d = by_id(read_dir(out, "dropped"))
    assert (d["B"]["dup_of"], d["C"]["dup_of"]) == ("A", "A")
    assert d["B"]["similarity"] == pytest.approx(est["ab"], abs=1e-6)
    assert d["C"]["similarity"] == pytest.approx(est["ac"], abs=1e-6)


# --------------------------------------------------------------------------- empty and short documents


@pytest.mark.parametrize("verify", ["exact", "none"])
def test_empty_documents_never_match(tmp_path, verify):
    records = [
        {"id": "e1", "text": ""},
        {"id": "e2", "text": ""},
        {"id": "p1", "text": "!!! ... ???"},  # empty after normalization
        {"id": "p2", "text": "  --  "},
        {"id": "w1", "text": "   \t\n  "},
        {"id": "s1", "text": "hello world"},
        {"id": "s2", "text": "Hello, World!"},  # the same single shingle: a duplicate
        {"id": "s3", "text": "hello"},
        {"id": "s4", "text": "hello world again"},  # one shingle, a different one
        {"id": "s5", "text": "hello  world"},
    ]
    out, report, data, dropped = run(tmp_path, records, verify=verify)
    check_ledger(out, report)
    assert sorted(dropped["id"].to_list()) == ["s2", "s5"]
    assert set(dropped["dup_of"].to_list()) == {"s1"}
    assert dropped["similarity"].to_list() == [1.0, 1.0]
    kept = by_id(data)
    for i in ("e1", "e2", "p1", "p2", "w1", "s3", "s4"):
        assert kept[i]["cluster_size"] == 1
    assert kept["s1"]["cluster_size"] == 3
    assert [kept[i]["cluster_id"] for i in ("e1", "e2", "p1", "p2", "w1")] == [0, 1, 2, 3, 4]


def test_short_documents_match_only_identical_short_documents(tmp_path):
    records = [
        {"id": "a", "text": "one two three four"},
        {"id": "b", "text": "one two three four five"},
        {"id": "c", "text": "ONE two, three; four."},
    ]
    _, _, data, dropped = run(tmp_path, records)
    assert data["id"].to_list() == ["a", "b"]
    assert dropped["id"].to_list() == ["c"]


# --------------------------------------------------------------------------- non-Latin text


def scripted(vocab: list[str], n: int, seed: int, sep: str = " ") -> str:
    rng = random.Random(seed)
    return sep.join(rng.choice(vocab) for _ in range(n))


GREEK = [
    "αλήθεια",
    "θάλασσα",
    "ουρανός",
    "πόλη",
    "άνθρωπος",
    "ήλιος",
    "φεγγάρι",
    "νερό",
    "φωτιά",
    "γη",
    "βουνό",
    "δέντρο",
    "λουλούδι",
    "πουλί",
    "ψάρι",
    "δρόμος",
    "σπίτι",
    "παιδί",
    "μητέρα",
    "πατέρας",
    "φίλος",
    "χρόνος",
    "ημέρα",
    "νύχτα",
]
CYRILLIC = [
    "правда",
    "море",
    "небо",
    "город",
    "человек",
    "солнце",
    "луна",
    "вода",
    "огонь",
    "земля",
    "гора",
    "дерево",
    "цветок",
    "птица",
    "рыба",
    "дорога",
    "дом",
    "ребёнок",
    "мать",
    "отец",
    "друг",
    "время",
    "день",
    "ночь",
]
CJK = list("天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳云腾致雨露结为霜金生丽水")


def edit(text: str, pos: int, new: str, sep: str = " ") -> str:
    parts = text.split(sep) if sep else list(text)
    parts[pos] = new
    return (sep or "").join(parts)


def test_non_latin_scripts_dedup(tmp_path):
    greek = scripted(GREEK, 90, 1)
    cyr = scripted(CYRILLIC, 90, 2)
    records = [
        {"id": "el", "text": greek},
        {"id": "el-caps", "text": greek.upper()},  # case and accents are normalized away
        {"id": "el-edit", "text": edit(greek, 40, "διαφορετικό")},
        {"id": "el-other", "text": scripted(GREEK, 90, 11)},
        {"id": "ru", "text": cyr},
        {"id": "ru-edit", "text": edit(cyr, 50, "иначе")},
        {"id": "ru-other", "text": scripted(CYRILLIC, 90, 12)},
    ]
    assert jaccard(greek, greek.upper()) == 1.0
    assert 0.85 < jaccard(greek, records[2]["text"]) < 1.0
    assert jaccard(greek, records[3]["text"]) < 0.1
    out, report, data, dropped = run(tmp_path, records)
    check_ledger(out, report)
    assert data["id"].to_list() == ["el", "el-other", "ru", "ru-other"]
    assert dict(zip(dropped["id"], dropped["dup_of"])) == {"el-caps": "el", "el-edit": "el", "ru-edit": "ru"}
    # the output text is the input text, byte for byte (normalization is for hashing only)
    src = {r["id"]: r["text"] for r in records}
    for row in data.iter_rows(named=True):
        assert row["text"] == src[row["id"]]
    for row in dropped.iter_rows(named=True):
        assert row["text"] == src[row["id"]]


def test_cjk_with_character_shingles(tmp_path):
    zh = scripted(CJK, 150, 3, sep="")
    records = [
        {"id": "zh", "text": zh},
        {"id": "zh-edit", "text": zh[:70] + "鳥" + zh[71:]},
        {"id": "zh-punct", "text": "，".join([zh[:75], zh[75:]])},  # a full-width comma is a separator
        {"id": "zh-other", "text": scripted(CJK, 150, 4, sep="")},
    ]
    assert jaccard(zh, records[1]["text"], "char:5") > 0.85
    # with word shingles an unspaced CJK document is a single shingle: any edit breaks the match
    _, _, data_w, _ = run(tmp_path, records[:2], name="words")
    assert data_w["id"].to_list() == ["zh", "zh-edit"]
    out, report, data, dropped = run(tmp_path, records, name="chars", shingle="char:5")
    check_ledger(out, report)
    assert data["id"].to_list() == ["zh", "zh-other"]
    assert dict(zip(dropped["id"], dropped["dup_of"])) == {"zh-edit": "zh", "zh-punct": "zh"}
    for row in dropped.iter_rows(named=True):
        assert row["similarity"] == pytest.approx(jaccard(zh, row["text"], "char:5"), abs=1e-6)


# --------------------------------------------------------------------------- keep policies

BASE = [word(i) for i in range(80)]
KEEP_RECORDS = [
    {"id": "a", "text": " ".join(BASE), "date": "2021-03-01", "score": 3},
    {"id": "b", "text": " ".join([*BASE, "zza", "zzb", "zzc"]), "date": "2019-07-15", "score": 1},
    {"id": "c", "text": " ".join(BASE[:-2]), "date": "2020-01-01T12:00:00"},
    {"id": "d", "text": " ".join(BASE), "date": "not a date", "score": "high"},
]


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        ("first", "a"),
        ("last", "d"),
        ("longest", "b"),  # the most characters
        ("shortest", "c"),
        ("oldest", "b"),  # 2019; d's date does not parse and is never preferred
        ("newest", "a"),
        ("field:score", "b"),  # smallest; c has none, d's is not a number
        ("field:-score", "a"),  # largest
    ],
)
def test_keep_policies_through_the_api(tmp_path, keep, kept):
    assert min(jaccard(KEEP_RECORDS[0]["text"], r["text"]) for r in KEEP_RECORDS) > 0.9
    out, report, data, dropped = run(tmp_path, KEEP_RECORDS, keep=keep)
    check_ledger(out, report)
    assert data["id"].to_list() == [kept]
    assert (data["cluster_id"][0], data["cluster_size"][0]) == (0, 4)  # cluster id: the first member
    assert set(dropped["dup_of"].to_list()) == {kept}
    assert f"keep={keep}" in dropped["drop_detail"][0]


@pytest.mark.parametrize(("keep", "missing"), [("field:score", 2), ("field:nowhere", 4), ("oldest", 1)])
def test_keep_policy_says_when_its_value_is_missing(tmp_path, caplog, keep, missing):
    """A keep policy whose field is missing (or not a number) in clustered documents falls back to
    input order among them: the run says how many lacked it, in the report and the log."""
    caplog.set_level("WARNING", logger="dataforge.dedup.near")
    out, report, data, _ = run(tmp_path, KEEP_RECORDS, keep=keep)
    cover = report.global_info["dedup.minhash"]["finalize"]["keep_value"]
    assert cover == {"clustered": 4, "missing": missing}
    assert ("in all 4 clustered" if missing == 4 else f"in {missing} of 4 clustered") in caplog.text
    if missing == 4:
        assert data["id"].to_list() == ["a"]  # the first document


def test_keep_ties_go_to_input_order(tmp_path):
    records = [
        {"id": "p", "text": " ".join(BASE), "score": 2},
        {"id": "q", "text": " ".join(BASE[::-1][:40] + BASE[40:]), "score": 9},  # unrelated
        {"id": "r", "text": " ".join(BASE).upper(), "score": 2},
        {"id": "s", "text": " ".join(BASE).lower() + ".", "score": 2},
    ]
    _, _, data, _ = run(tmp_path, records, keep="field:score", name="tie1")
    assert data["id"].to_list() == ["p", "q"]
    _, _, data, _ = run(tmp_path, records, keep="longest", name="tie2")
    assert data["id"].to_list() == ["q", "s"]


def test_keep_oldest_with_a_date_format_in_a_pipeline(tmp_path):
    """Reuters dates need a format: ``date_field``/``date_format`` through ``run_pipeline``."""
    story = words(0, 70)
    records = [
        {"id": "n1", "text": story, "published": "03-MAR-1987 09:12:00.00"},
        {"id": "n2", "text": story, "published": "26-FEB-1987 15:01:01.79"},
        {"id": "n3", "text": story, "published": "26-FEB-1987 15:01:01.80"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    step = build_step(
        "dedup.minhash",
        {"keep": "oldest", "date_field": "published", "date_format": "%d-%b-%Y %H:%M:%S%.f"},
    )
    pipeline = Pipeline(
        name="oldest",
        input=InputSpec(paths=(str(src),)),
        output=OutputSpec(path=str(tmp_path / "out")),
        steps=[step],
        executor=ExecutorSpec(kind="local", workers=1),
    )
    report = run_pipeline(pipeline)
    assert read_dir(tmp_path / "out", "data")["id"].to_list() == ["n2"]
    assert report.dropped == 2


def test_keep_oldest_with_unparsable_dates_does_not_crash(tmp_path):
    records = load_news()[:30]
    try:
        report = run_dedup(
            [str(write_jsonl(tmp_path / "n.jsonl", records))], output=tmp_path / "o", keep="oldest"
        )
    except DataforgeError:
        return  # a clear configuration/data error would be acceptable too
    assert report.rows_in == report.kept + report.dropped


# --------------------------------------------------------------------------- --against


@pytest.fixture(scope="module")
def against_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("against")
    news = load_news()
    reference = [{"id": f"ref-{r['id']}", "text": r["text"]} for r in news[1500:1520]]
    ref_texts = [r["text"] for r in reference]
    corpus = [{"id": r["id"], "text": r["text"]} for r in news[1000:1040]]
    near = ref_texts[1].split()
    near[10] = "CHANGED"
    corpus += [
        {"id": "copy-of-ref0", "text": ref_texts[0]},
        {"id": "near-ref1", "text": " ".join(near)},
        {"id": "copy-of-ref0-again", "text": ref_texts[0] + " "},
        {"id": "not-similar", "text": words(5000, 5100)},
    ]
    ref_path = write_jsonl(tmp / "reference.jsonl", reference)
    ref_digest = hashlib.sha256(ref_path.read_bytes()).hexdigest()
    listing = sorted(p.name for p in tmp.iterdir())
    src = write_jsonl(tmp / "corpus.jsonl", corpus)
    out = tmp / "out"
    report = run_dedup([str(src)], output=out, against=[str(ref_path)])
    return {
        "corpus": corpus,
        "reference": reference,
        "ref_path": ref_path,
        "ref_digest": ref_digest,
        "listing": listing,
        "out": out,
        "report": report,
    }


def test_against_drops_reference_duplicates(against_run):
    out, report = against_run["out"], against_run["report"]
    check_ledger(out, report)
    assert report.rows_in == len(against_run["corpus"])  # reference rows are not input rows
    dropped = by_id(read_dir(out, "dropped").filter(pl.col("drop_reason") == "reference_duplicate"))
    # independent expectation: the best exact Jaccard against any reference document
    expected = {}
    for doc in against_run["corpus"]:
        best = max(
            ((jaccard(doc["text"], r["text"]), r["id"]) for r in against_run["reference"]), key=lambda x: x[0]
        )
        if best[0] >= 0.8:
            expected[doc["id"]] = best
    assert {"copy-of-ref0", "near-ref1", "copy-of-ref0-again"} <= set(expected)
    assert set(dropped) == set(expected)
    ref_ids = {r["id"] for r in against_run["reference"]}
    for doc_id, (sim, ref_id) in expected.items():
        row = dropped[doc_id]
        assert row["dup_of"] == ref_id and row["dup_of"] in ref_ids
        assert row["similarity"] == pytest.approx(sim, abs=1e-6)
        assert row["drop_step"] == "dedup.minhash"
        assert ref_id in row["drop_detail"]
    assert dropped["copy-of-ref0"]["similarity"] == 1.0
    kept = read_dir(out, "data")["id"].to_list()
    assert "not-similar" in kept
    info = report.global_info["dedup.minhash"]["finalize"]
    assert info["reference_duplicates"] == len(expected)
    assert report.dropped_by_reason["dedup.minhash:reference_duplicate"] == len(expected)


def test_against_with_several_verify_partitions_gives_the_same_bytes(against_run, tmp_path, monkeypatch):
    """Reference pairs (negative keys) are verified in whichever partition their reference lands
    in; with 5 partitions the decisions and bytes equal the one-partition run."""
    import dataforge.dedup.near as near

    monkeypatch.setattr(near, "VERIFY_DOCS", 10)  # 44 documents: 5 partitions
    out = tmp_path / "out"
    corpus = against_run["out"].parent / "corpus.jsonl"
    report = run_dedup([str(corpus)], output=out, against=[str(against_run["ref_path"])])
    check_ledger(out, report)
    assert len(report.global_info["dedup.minhash"]["verify_pairs"]) == 5
    assert report.global_info["dedup.minhash"]["finalize"]["reference_duplicates"] >= 3
    assert digests(out) == digests(against_run["out"])


def test_against_leaves_the_reference_alone(against_run):
    ref_path = against_run["ref_path"]
    assert hashlib.sha256(ref_path.read_bytes()).hexdigest() == against_run["ref_digest"]
    listing = sorted(p.name for p in ref_path.parent.iterdir())
    assert listing == sorted([*against_run["listing"], "corpus.jsonl", "out"])  # nothing written beside it
    kept = read_dir(against_run["out"], "data")
    dropped = read_dir(against_run["out"], "dropped")
    ref_ids = {r["id"] for r in against_run["reference"]}
    assert not ref_ids & set(kept["id"].to_list() + dropped["id"].to_list())


@pytest.mark.parametrize("step", ["dedup.minhash", "dedup.exact"])
def test_missing_reference_fails_before_any_work(tmp_path, step):
    """A reference path that does not exist is an error naming it before the input is read: no
    output folder, no work files."""
    src = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "a", "text": words(0, 60)}])
    out = tmp_path / "out"
    pipeline = Pipeline(
        name="p",
        input=InputSpec(paths=(str(src),)),
        output=OutputSpec(path=str(out)),
        steps=[build_step(step, {"against": [str(tmp_path / "nowhere")]})],
    )
    from dataforge.runner import run_pipeline

    with pytest.raises(DataforgeError, match=f"{step}: against: .*nowhere"):
        run_pipeline(pipeline)
    assert not out.exists()


@pytest.mark.parametrize("step", ["dedup.minhash", "dedup.exact"])
def test_changed_reference_makes_the_run_not_up_to_date(tmp_path, step):
    """The reference files are part of the run's identity: after one changes, the same command
    is not "up to date" (it asks for --overwrite, as a changed input does), and with --overwrite the
    new reference is used."""
    from dataforge.runner import run_pipeline

    text = words(100, 160)
    src = write_jsonl(
        tmp_path / "corpus.jsonl", [{"id": "a", "text": text}, {"id": "b", "text": words(0, 60)}]
    )
    ref = write_jsonl(tmp_path / "ref.jsonl", [{"id": "r0", "text": words(300, 360)}])
    out = tmp_path / "out"

    def pipeline() -> Pipeline:
        return Pipeline(
            name="p",
            input=InputSpec(paths=(str(src),)),
            output=OutputSpec(path=str(out)),
            steps=[build_step(step, {"against": [str(ref)]})],
        )

    first = run_pipeline(pipeline())
    assert first.dropped == 0
    assert run_pipeline(pipeline()).status == "up_to_date"
    write_jsonl(ref, [{"id": "r0", "text": words(300, 360)}, {"id": "r1", "text": text}])
    with pytest.raises(DataforgeError, match="another run"):
        run_pipeline(pipeline())
    again = run_pipeline(pipeline(), overwrite=True)
    assert again.status != "up_to_date"
    assert again.dropped == 1
    assert read_dir(out, "dropped")["id"].to_list() == ["a"]


# --------------------------------------------------------------------------- the Reuters sample


@pytest.fixture(scope="module")
def news_rows() -> list[dict]:
    return load_news()


@pytest.fixture(scope="module")
def news_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("news") / "out"
    report = run_dedup([str(NEWS)], output=out, report_clusters=True, verify="exact")
    return out, report


@pytest.fixture(scope="module")
def brute_force(news_rows):
    """Exact Jaccard (word:5 shingle sets) of every pair of Reuters stories sharing a shingle."""
    sets = [set(shingles(r["text"])) for r in news_rows]
    vocab: dict[bytes, int] = {}
    indptr, indices = [0], []
    for s in sets:
        indices += [vocab.setdefault(x, len(vocab)) for x in s]
        indptr.append(len(indices))
    x = csr_matrix((np.ones(len(indices), np.int32), indices, indptr), shape=(len(sets), len(vocab)))
    inter = (x @ x.T).tocoo()
    sizes = np.array([len(s) for s in sets])
    upper = inter.row < inter.col
    i, j, n = inter.row[upper], inter.col[upper], inter.data[upper]
    jac = n / (sizes[i] + sizes[j] - n)
    return {(int(a), int(b)): float(s) for a, b, s in zip(i, j, jac) if s >= 0.8}


def test_news_ledger_and_dropped_rows(news_run, news_rows):
    out, report = news_run
    check_ledger(out, report)
    assert report.rows_in == len(news_rows) == 2000 and report.rejected == 0
    data, dropped = read_dir(out, "data"), read_dir(out, "dropped")
    ids = [r["id"] for r in news_rows]
    assert sorted(data["id"].to_list() + dropped["id"].to_list()) == sorted(ids)
    assert not set(data["id"].to_list()) & set(dropped["id"].to_list())
    assert set(dropped["drop_reason"].to_list()) == {"near_duplicate"}
    assert dropped.height == report.dropped == report.dropped_by_reason["dedup.minhash:near_duplicate"]
    stored = json.loads((out / "report.json").read_text())["counts"]
    assert stored["rows_in"] == stored["kept"] + stored["dropped"] + stored["rejected"]


def test_news_every_row_has_cluster_columns(news_run):
    out, _ = news_run
    data, dropped = read_dir(out, "data"), read_dir(out, "dropped")
    for frame in (data, dropped):
        assert set(OUTPUT_COLUMNS) <= set(frame.columns)
        assert frame["cluster_id"].null_count() == 0 and frame["cluster_size"].null_count() == 0
    assert data["dup_of"].null_count() == data.height
    assert data["similarity"].null_count() == data.height
    assert dropped["dup_of"].null_count() == 0 and dropped["similarity"].null_count() == 0
    singles = data.filter(pl.col("cluster_size") == 1)
    assert singles.height > 1800
    assert singles["cluster_id"].to_list() == singles["source_row"].to_list()  # own global position
    # every cluster keeps exactly one member and its id is its first member's position
    both = pl.concat(
        [
            data.select("id", "source_row", "cluster_id", "cluster_size", "dup_of"),
            dropped.select("id", "source_row", "cluster_id", "cluster_size", "dup_of"),
        ]
    )
    multi = both.filter(pl.col("cluster_size") > 1)
    for (cid,), members in multi.group_by(["cluster_id"]):
        assert members.height == members["cluster_size"][0]
        assert members["source_row"].min() == cid
        kept = members.filter(pl.col("dup_of").is_null())
        assert kept.height == 1
        assert kept["source_row"][0] == cid  # keep=first
        assert set(members["dup_of"].drop_nulls().to_list()) == {kept["id"][0]}


def test_news_cluster_reports(news_run):
    out, report = news_run
    manifest = read_manifest(out)
    assert set(manifest["reports"]) == {"clusters", "cluster_pairs"}
    for name in ("clusters", "cluster_pairs"):
        (entry,) = manifest["reports"][name]
        path = out / entry["path"]
        assert entry["path"] == f"{name}/part-00000.arrow"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        assert read_shard(path).num_rows == entry["rows"]
    clusters, pairs = read_dir(out, "clusters"), read_dir(out, "cluster_pairs")
    dropped = read_dir(out, "dropped")
    info = report.global_info["dedup.minhash"]["finalize"]
    assert pairs.height == info["verified_pairs"]
    assert clusters["cluster_id"].n_unique() == info["clusters"]
    assert clusters.filter(~pl.col("kept")).height == dropped.height
    assert sorted(clusters.filter(~pl.col("kept"))["id"].to_list()) == sorted(dropped["id"].to_list())
    assert clusters.filter(pl.col("kept")).height == info["clusters"]


def test_news_verified_pairs_have_exact_jaccard_above_threshold(news_run, news_rows, brute_force):
    out, _ = news_run
    pairs = read_dir(out, "cluster_pairs")
    text = {r["id"]: r["text"] for r in news_rows}
    pos = {r["id"]: i for i, r in enumerate(news_rows)}
    found = set()
    for row in pairs.iter_rows(named=True):
        j = jaccard(text[row["id_a"]], text[row["id_b"]])
        assert j >= 0.8, (row["id_a"], row["id_b"], j)
        assert row["similarity"] == pytest.approx(j, abs=1e-6)
        found.add(tuple(sorted((pos[row["id_a"]], pos[row["id_b"]]))))
    assert found <= set(brute_force)  # precision: only true pairs
    # recall: LSH (16 x 8 bands) finds a pair at J=0.9 with probability 0.9999, at 0.8 with 0.947
    strong = {p for p, s in brute_force.items() if s >= 0.9}
    assert strong <= found
    assert len(found) >= 0.9 * len(brute_force)


def test_news_clusters_lie_within_true_components(news_run, news_rows, brute_force):
    out, _ = news_run
    n = len(news_rows)
    rows, cols = zip(*brute_force)
    graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    dropped = read_dir(out, "dropped")
    pos = {r["id"]: i for i, r in enumerate(news_rows)}
    for row in dropped.iter_rows(named=True):
        assert label[pos[row["id"]]] == label[pos[row["dup_of"]]]
        assert pos[row["dup_of"]] < pos[row["id"]]
    # this sample has no chain below the threshold: every dropped story is >= 0.8 like its keeper
    text = {r["id"]: r["text"] for r in news_rows}
    for row in dropped.iter_rows(named=True):
        j = jaccard(row["text"], text[row["dup_of"]])
        assert row["similarity"] == pytest.approx(j, abs=1e-6)
        assert row["similarity"] >= 0.8


def test_news_natural_exact_duplicates_are_all_dropped(news_run, news_rows):
    out, _ = news_run
    seen, later_copies = set(), set()
    for r in news_rows:
        key = normalize_text(r["text"])
        if key in seen:
            later_copies.add(r["id"])
        seen.add(key)
    assert len(later_copies) >= 40  # the sample holds re-sent stories
    assert later_copies <= set(read_dir(out, "dropped")["id"].to_list())


@pytest.fixture(scope="module")
def news_head(tmp_path_factory, news_rows):
    """The first 800 stories split into 4 files (duplicates cross file boundaries)."""
    d = tmp_path_factory.mktemp("split")
    for k in range(4):
        write_jsonl(d / f"part{k}.jsonl", news_rows[k * 200 : (k + 1) * 200])
    return d


def test_verify_none_finds_at_least_the_exact_pairs(news_head, tmp_path):
    reports = {}
    for verify in ("exact", "estimate", "none"):
        out = tmp_path / verify
        reports[verify] = run_dedup([str(news_head)], output=out, verify=verify, bands=16, rows=8)
        check_ledger(out, reports[verify])
    info = {v: r.global_info["dedup.minhash"]["finalize"] for v, r in reports.items()}
    assert (
        info["exact"]["candidate_pairs"]
        == info["none"]["candidate_pairs"]
        == info["estimate"]["candidate_pairs"]
    )
    assert (
        info["none"]["verified_pairs"] == info["none"]["candidate_pairs"] >= info["exact"]["verified_pairs"]
    )
    dropped = {v: set(read_dir(tmp_path / v, "dropped")["id"].to_list()) for v in reports}
    assert dropped["exact"] <= dropped["none"]
    assert dropped["estimate"] <= dropped["none"]
    exact = read_dir(tmp_path / "exact", "dropped")
    assert exact.height > 0 and exact["similarity"].min() >= 0.8


def test_workers_give_identical_bytes(news_head, tmp_path):
    one = tmp_path / "w1"
    two = tmp_path / "w2"
    r1 = run_dedup([str(news_head)], output=one, workers=1, report_clusters=True, shard_rows=150)
    run_dedup([str(news_head)], output=two, workers=2, report_clusters=True, shard_rows=150)
    assert r1.dropped > 0 and len(r1.shards) > 1
    d1, d2 = digests(one), digests(two)
    assert any(k.startswith("cluster_pairs/") for k in d1)
    assert d1 == d2
    # global positions run across files in input order
    data = read_dir(one, "data").filter(pl.col("cluster_size") == 1)
    offsets = {str(news_head / f"part{k}.jsonl"): 200 * k for k in range(4)}
    expected = [offsets[f] + r for f, r in zip(data["source_file"], data["source_row"])]
    assert data["cluster_id"].to_list() == expected


@pytest.mark.parametrize("verify", ["exact", "none"])
def test_verify_partitions_do_not_change_bytes(news_head, tmp_path, monkeypatch, verify):
    """Candidate pairs are verified in partitions (one per ``VERIFY_DOCS`` documents). Each pair
    is verified in exactly one of them, so 4, 3 or one partition give the same counts and bytes."""
    import dataforge.dedup.near as near

    runs = {}
    for parts in (4, 3, 1):
        monkeypatch.setattr(near, "VERIFY_DOCS", -(-800 // parts))  # 800 stories
        out = tmp_path / f"v{parts}"
        workers = 2 if parts == 3 else 1  # the driver fixes the count; spawned workers follow it
        report = run_dedup([str(news_head)], output=out, report_clusters=True, verify=verify, workers=workers)
        check_ledger(out, report)
        runs[parts] = (out, report.global_info["dedup.minhash"])
    (ref_out, ref_info), *others = runs.values()
    assert len(ref_info["verify_pairs"]) == 4 and ref_info["finalize"]["verified_pairs"] > 10
    for n, (out, info) in zip((3, 1), others):
        per = info["verify_pairs"] if n > 1 else [info["verify_pairs"]]
        assert len(per) == n
        fin = info["finalize"]
        assert sum(v["candidate_pairs"] for v in per) == fin["candidate_pairs"]
        assert sum(v["verified_pairs"] for v in per) == fin["verified_pairs"]
        for key in ("candidate_pairs", "verified_pairs", "clusters", "near_duplicates"):
            assert fin[key] == ref_info["finalize"][key]
        assert digests(out) == digests(ref_out)


def test_decisions_written_in_pieces_give_the_same_bytes(news_head, tmp_path, monkeypatch):
    """``finalize`` resolves ids and writes the decisions ``DECISION_CHUNK`` rows at a time; the
    next stage finds each task's rows by binary search over the record batches. Pieces of 7 rows
    (so that tasks' rows straddle batches) give the bytes of one piece."""
    import dataforge.dedup.near as near

    ref = tmp_path / "whole"
    ref_report = run_dedup([str(news_head)], output=ref, report_clusters=True, keep="longest")
    monkeypatch.setattr(near, "DECISION_CHUNK", 7)
    pieces = []
    resolve = near._resolve
    monkeypatch.setattr(near, "_resolve", lambda plan, *a: pieces.append(plan.height) or resolve(plan, *a))
    out = tmp_path / "pieces"
    report = run_dedup([str(news_head)], output=out, report_clusters=True, keep="longest")
    check_ledger(out, report)
    fin = report.global_info["dedup.minhash"]["finalize"]
    ref_fin = ref_report.global_info["dedup.minhash"]["finalize"]
    assert fin["near_duplicates"] > 7 and fin.pop("seconds") > 0 and ref_fin.pop("seconds") > 0
    assert fin == ref_fin
    assert len(pieces) > 3 and max(pieces) == 7
    dropped = read_dir(out, "dropped")
    assert (dropped["drop_reason"] == "near_duplicate").sum() == fin["near_duplicates"]
    assert digests(out) == digests(ref)


def test_compile_kernels_covers_what_runs_use(news_head, tmp_path):
    """After ``compile_kernels`` a run compiles nothing more: every kernel it calls, with the
    argument types it uses, was compiled (and cached) by the warm-up."""
    from dataforge.dedup import _kernels as K
    from dataforge.dedup import lsh
    from dataforge.dedup.near import _jaccard_pairs, compile_kernels
    from dataforge.io._jsonl import simple_records

    names = compile_kernels()
    assert names == sorted(names) and len(names) == 11
    kernels = [
        simple_records,
        K.non_ascii_rows,
        K.cp_pages,
        K.transcodable,
        K.canonical,
        K.word_shingle_hashes,
        K.char_shingle_hashes,
        K.minhash_signatures,
        lsh.band_hashes,
        lsh.bucket_pairs,
        _jaccard_pairs,
    ]
    before = [list(k.signatures) for k in kernels]
    assert all(before)
    for i, opts in enumerate(
        ({}, {"hash": "sha1", "shingle": "char:24", "against": [str(news_head / "part3.jsonl")]})
    ):
        run_dedup(
            [str(news_head / "part0.jsonl"), str(news_head / "part1.jsonl")],
            output=tmp_path / f"o{i}",
            **opts,
        )
    assert [list(k.signatures) for k in kernels] == before


def test_verify_part_spreads_pairs_and_is_stable():
    """The partition of a pair depends only on its first document's key and the partition count:
    neighbouring documents spread over all partitions, and reference keys (negative) are valid."""
    from dataforge.dedup.near import _verify_part

    keys = np.arange(-50, 10_000, dtype=np.int64)
    parts = _verify_part(keys, 7)
    assert parts.min() == 0 and parts.max() == 6
    counts = np.bincount(parts, minlength=7)
    assert counts.min() > 0.8 * keys.size / 7  # balanced
    assert np.array_equal(parts, _verify_part(keys.copy(), 7))
    assert (_verify_part(keys, 1) == 0).all()


def test_batch_size_does_not_change_decisions(news_head, tmp_path):
    """Signatures, side files and positions are per batch: small batches must decide the same."""
    results = []
    for batch_rows in (10_000, 37):
        out = tmp_path / f"b{batch_rows}"
        pipeline = Pipeline(
            name="batches",
            input=InputSpec(paths=(str(news_head),)),
            output=OutputSpec(path=str(out)),
            steps=[build_step("dedup.minhash")],
            executor=ExecutorSpec(kind="local", workers=1),
            batch_rows=batch_rows,
        )
        report = run_pipeline(pipeline)
        cols = ["id", "cluster_id", "cluster_size", "dup_of", "similarity"]
        results.append(
            (report.kept, read_dir(out, "data").select(cols), read_dir(out, "dropped").select(cols))
        )
    (k1, data1, drop1), (k2, data2, drop2) = results
    assert k1 == k2 and drop1.height > 0
    assert data1.equals(data2) and drop1.equals(drop2)


# --------------------------------------------------------------------------- options and CLI


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"threshold": 1.5}, "1.5"),
        ({"threshold": 0.0}, "0.0"),
        ({"threshold": 1.0}, "1.0"),
        ({"bands": 8}, "bands=8"),
        ({"rows": 8}, "rows=8"),
        ({"bands": 20, "rows": 8}, "160"),
        ({"keep": "random"}, "'random'"),
        ({"verify": "maybe"}, "'maybe'"),
        ({"hash": "md5"}, "'md5'"),
        ({"shingle": "word:0"}, "'word:0'"),
        ({"num_perm": 1}, "1"),
    ],
)
def test_bad_options_raise_config_error(tmp_path, kwargs, shown):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "some text here"}])
    out = tmp_path / "never"
    with pytest.raises(ConfigError) as info:
        run_dedup([str(src)], output=out, **kwargs)
    assert shown in str(info.value)
    assert not out.exists()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataforge", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_dedup_help_shows_examples(tmp_path):
    res = cli("dedup", "--help", cwd=tmp_path)
    assert res.returncode == 0
    assert "Examples:" in res.stdout
    assert "dataforge dedup sample_data/news -o out/news-dedup" in res.stdout
    assert "--against" in res.stdout and "--keep" in res.stdout


def test_cli_dedup_exit_codes(tmp_path):
    story = words(0, 50)
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": story}, {"id": "b", "text": story}])
    ok = cli("dedup", "in.jsonl", "-o", "out", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "minhash:" in ok.stdout and "1 clusters" in ok.stdout
    assert read_dir(tmp_path / "out", "data")["id"].to_list() == ["a"]
    missing = cli("dedup", "missing.jsonl", "-o", "out2", cwd=tmp_path)
    assert missing.returncode == 2
    assert "missing.jsonl" in missing.stderr
    assert not (tmp_path / "out2").exists()
    bad = cli("dedup", "in.jsonl", "-o", "out3", "--keep", "random", cwd=tmp_path)
    assert bad.returncode == 2 and "'random'" in bad.stderr
    usage = cli("dedup", "in.jsonl", "-o", "out4", "--threshold", "1.5", cwd=tmp_path)
    assert usage.returncode == 2


# --------------------------------------------------------------------------- regressions


def test_dataforge_dedup_is_callable_after_the_subpackage_is_imported(tmp_path):
    """``dataforge.dedup`` (the API) shares its name with the subpackage ``dataforge.dedup``; it must stay
    callable after any ``dataforge.dedup.*`` import (e.g. by an earlier run)."""
    import dataforge
    import dataforge.dedup.near

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "some text"}])
    report = dataforge.dedup([str(src)], output=tmp_path / "out")
    assert report.kept == 1


def test_cli_dedup_in_process_after_a_previous_run(tmp_path, cli_runner):
    """Two ``dataforge dedup`` commands in one process (the subpackage is imported by then)."""
    from dataforge.cli import cli as cli_group

    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "some text"}])
    first = cli_runner.invoke(cli_group, ["dedup", str(src), "-o", str(tmp_path / "o1")])
    second = cli_runner.invoke(cli_group, ["dedup", str(src), "-o", str(tmp_path / "o2")])
    assert (first.exit_code, second.exit_code) == (0, 0)


def test_overwrite_without_report_clusters_removes_old_reports(tmp_path):
    """An --overwrite rerun without --report-clusters must not leave stale clusters/ or cluster_pairs/."""
    story = words(0, 50)
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": story}, {"id": "b", "text": story}])
    out = tmp_path / "out"
    run_dedup([str(src)], output=out, report_clusters=True)
    assert (out / "clusters").is_dir() and (out / "cluster_pairs").is_dir()
    run_dedup([str(src)], output=out, report_clusters=False, threshold=0.7, overwrite=True)
    assert read_manifest(out)["reports"] == {}
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["data", "dropped"]


def test_exact_verification_in_small_chunks_gives_the_same_bytes(news_run, tmp_path, monkeypatch):
    """Texts of candidate documents are re-hashed chunk by chunk; the chunk size must not matter."""
    import dataforge.dedup.near as near

    monkeypatch.setattr(near, "_SET_CHUNK", 7)
    out = tmp_path / "small-chunks"
    report = run_dedup([str(NEWS)], output=out, report_clusters=True, verify="exact")
    ref_out, ref_report = news_run
    assert report.global_info["dedup.minhash"]["finalize"]["verified_pairs"] > 7
    assert digests(out) == digests(ref_out)


@pytest.mark.parametrize(
    ("docs", "workers", "parts"),
    [
        (10, 1, 1),
        (10, 4, 1),  # too few documents to split
        (30_000, 2, 1),  # a second partition would hold < MIN_VERIFY_DOCS
        (100_000, 1, 1),
        (100_000, 2, 2),
        (100_000, 8, 5),  # as many as keep >= 20k documents each
        (1_000_000, 1, 4),  # one per 250k
        (1_000_000, 3, 6),  # rounded up to a multiple of the workers
        (10**9, 7, 256),  # at most MAX_VERIFY_PARTS
    ],
)
def test_verify_partitions_follow_documents_and_workers(docs, workers, parts):
    import dataforge.dedup.near as near
    from dataforge.step import GlobalContext

    ctx = GlobalContext(
        work="w", stage_dir="s", n_tasks=2, task_rows=(docs // 2, docs - docs // 2), workers=workers
    )
    assert near.verify_parts(ctx) == parts


def test_jaccard_kernel_matches_python_sets():
    """The hash-table Jaccard kernel takes raw shingle hashes (any order, repeats) as sets: it
    equals Python's set arithmetic on random documents, including empty ones, identical ones,
    heavy repeats and documents of very different sizes."""
    from dataforge.dedup.near import _jaccard_pairs

    rng = np.random.default_rng(7)
    docs = [rng.integers(0, 50, size=rng.integers(0, 40)).astype(np.uint32) for _ in range(60)]
    docs += [rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32) for n in (0, 1, 3000)]
    docs.append(docs[-1][::-1].copy())  # the same set, reversed
    docs.append(np.repeat(docs[5], 4))  # the same set, every value four times
    values = np.concatenate(docs)
    offs = np.concatenate([[0], np.cumsum([d.shape[0] for d in docs])]).astype(np.int64)
    n = len(docs)
    left, right = (g.ravel().astype(np.int64) for g in np.meshgrid(np.arange(n), np.arange(n)))
    got = _jaccard_pairs(values, offs, left, right)
    sets = [set(d.tolist()) for d in docs]
    want = [
        len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else 0.0
        for a, b in zip(left.tolist(), right.tolist(), strict=True)
    ]
    assert np.array_equal(got, np.array(want))
    assert got[(n - 2) * n + (n - 3)] == 1.0 and got[(n - 1) * n + 5] == 1.0


@pytest.mark.parametrize("seed", range(8))
def test_bucket_sort_equals_the_full_sort(seed):
    """The candidates' band tables are sorted by a stable sort on the bucket when their rows come in
    (_task, _ord) order (reference tasks first): the result must equal the four-key sort, with
    colliding hashes, one or several bands, and input that is not in that order."""
    from dataforge.dedup.near import _sort_buckets

    rng = np.random.default_rng(seed)
    tasks = sorted(rng.choice(np.arange(-3, 6), size=rng.integers(1, 6), replace=False).tolist())
    frames = []
    for t in tasks:
        n = int(rng.integers(0, 300))
        bands = np.full(n, 2, np.int16) if seed % 2 else rng.integers(0, 3, n).astype(np.int16)
        frames.append(
            pl.DataFrame(
                {
                    "band": bands,
                    "hash": rng.integers(0, 20, n).astype(np.uint64),  # many equal hashes
                    "_task": np.full(n, t, np.int32),
                    "_ord": np.sort(rng.integers(0, 50, n)).astype(np.int64),
                }
            )
        )
    table = pl.concat(frames)
    full = table.sort(["band", "hash", "_task", "_ord"])
    assert _sort_buckets(table).equals(full)
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=seed)
    assert _sort_buckets(shuffled).equals(full)
