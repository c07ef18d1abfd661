"""`dataforge curriculum`: stage shards and the manifest of docs/curriculum.md.

Sources are built in tmp folders with the repo's own writers: ``dataforge.clean`` on
``sample_data/news``, ``dataforge.normalize_finance`` on ``sample_data/finance/companyfacts`` and
small hand-made outputs written with ``write_shard`` + a manifest (exact control over rows).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

import dataforge
from dataforge.cli import cli
from dataforge.curriculum import (
    build_curriculum,
    largest_remainder,
    load_curriculum,
    permutation,
    stage_schema,
)
from dataforge.errors import ConfigError, DataError, InputError, OutputError
from dataforge.io.shards import read_manifest, read_shard, verify_shards, write_json_atomic, write_shard
from dataforge.ledger import Ledger
from dataforge.report import RunReport
from dataforge.schemas import load_schema
from dataforge.train.tokenizer import ByteTokenizer, training_text

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


# --------------------------------------------------------------------------- source builders


def make_source(
    folder: Path,
    rows: list[dict[str, Any]],
    *,
    kind: str = "documents",
    steps: tuple[str, ...] = (),
    shard_rows: int = 1000,
) -> Path:
    """A dataforge-like output folder: data/part-*.arrow + manifest.json listing them."""
    table = pa.Table.from_pylist(rows)
    shards = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        info = write_shard(
            table.slice(start, shard_rows), folder / "data" / f"part-{i:05d}.arrow", relative_to=folder
        )
        shards.append(info.to_dict())
    manifest = {
        "manifest_version": 1,
        "kind": kind,
        "name": folder.name,
        "dataforge_version": "0.1.0",
        "config": {"steps": [{s: {}} for s in steps]},
        "config_fingerprint": f"sha256:{folder.name}",
        "schema": {"name": "document.v1", "fields": []},
        "shards": shards,
    }
    write_json_atomic(folder / "manifest.json", manifest)
    return folder


def doc_rows(prefix: str, n: int, *, text_field: str = "text", extra=None) -> list[dict[str, Any]]:
    """Documents ``<prefix>-<i>`` whose texts have different lengths (``i`` words)."""
    rows = []
    for i in range(n):
        row = {
            "id": f"{prefix}-{i}",
            text_field: f"{prefix} " + " ".join(f"w{i}" for _ in range(i + 1)),
            "meta": None,
            "source_file": f"{prefix}.jsonl",
            "source_row": i,
            "source_line": i + 1,
        }
        row.update(extra(i) if extra else {})
        rows.append(row)
    return rows


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """Real dataforge outputs (clean on news, normalize finance) plus small hand-made ones."""
    base = tmp_path_factory.mktemp("sources")
    dataforge.clean([SAMPLE / "news"], output=base / "news", shard_rows=500)
    dataforge.normalize_finance(
        [SAMPLE / "finance" / "companyfacts"],
        output=base / "fin",
        source="companyfacts",
        render="text,instruct",
    )
    make_source(base / "a", doc_rows("a", 40), steps=("normalize.text", "dedup.exact"), shard_rows=15)
    make_source(base / "b", doc_rows("b", 25, extra=lambda i: {"score": i}), shard_rows=10)
    make_source(base / "tiny", doc_rows("tiny", 3))
    make_source(
        base / "labelled",
        doc_rows("lab", 30, extra=lambda i: {"label": "x", "label_issue": i % 3 == 0}),
        kind="labelled",
    )
    make_source(base / "body", doc_rows("body", 8, text_field="body"))
    return {p.name: p for p in base.iterdir()}


def curriculum(tmp_path: Path, stages: list[dict[str, Any]], **top: Any) -> Path:
    data = {"name": "test-curriculum", "seed": 0, **top, "stages": stages}
    return write_yaml(tmp_path / "cur.yaml", data)


def src(name: str, path: Path, **kw: Any) -> dict[str, Any]:
    return {"name": name, "path": str(path), **kw}


def read_stage(out: Path, stage: dict[str, Any]) -> pa.Table:
    return pa.concat_tables([read_shard(out / s["path"]) for s in stage["shards"]])


def stage_of(manifest: dict[str, Any], n: int) -> dict[str, Any]:
    return next(st for st in manifest["stages"] if st["stage"] == n)


# --------------------------------------------------------------------------- the full build


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> tuple[Path, RunReport]:
    """Three stages over real outputs: token budget, row budget with repeat, no budget."""
    tmp = tmp_path_factory.mktemp("built")
    cfg = curriculum(
        tmp,
        [
            {
                "stage": 1,
                "name": "pretraining",
                "budget": {"tokens": 60_000},
                "sources": [
                    src(
                        "news",
                        sources["news"],
                        weight=3,
                        where="exact_dups = 1 AND LENGTH(text) > 1500",
                        require_steps=["dedup.exact"],
                    ),
                    src("newsgroups", sources["labelled"], weight=1, where="label_issue = false"),
                ],
            },
            {
                "stage": 2,
                "name": "instructions",
                "budget": {"rows": 120},
                "sources": [
                    src("fin_qa", sources["fin"], part="instruct", weight=0.75),
                    # the same part twice: verified once, selected with independent permutations
                    src("fin_qa_again", sources["fin"], part="instruct", weight=0.25),
                ],
            },
            {
                "stage": 3,
                "name": "domain",
                "sources": [
                    src("fin_text", sources["fin"], part="text", weight=1),
                    src("tiny", sources["tiny"], weight=1, repeat=True),
                ],
            },
        ],
        output={"path": str(tmp / "cur"), "shard_rows": 25},
    )
    report = build_curriculum(cfg)
    return tmp / "cur", report


def test_manifest_matches_shards(built):
    out, _ = built
    manifest = read_manifest(out)
    assert manifest["kind"] == "curriculum" and manifest["manifest_version"] == 1
    assert manifest["tokenizer"] == {"name": "byte", "vocab_size": 258, "eos_id": 256, "pad_id": 257}
    assert manifest["format"] == "arrow" and manifest["compression"] == "zstd"
    assert verify_shards(out, manifest) == []
    assert manifest["shards"] == [s for st in manifest["stages"] for s in st["shards"]]
    # a stage entry that no longer matches its file is found even when the top-level list does
    edited = json.loads(json.dumps(manifest))
    edited["stages"][0]["shards"][0]["sha256"] = "0" * 64
    problems = verify_shards(out, edited)
    assert len(problems) == 1 and manifest["stages"][0]["shards"][0]["path"] in problems[0]
    tok = ByteTokenizer()
    for st in manifest["stages"]:
        kind = "instruction" if st["stage"] == 2 else "document"
        assert st["schema"]["name"] == f"stage_{kind}.v1"
        first = 0
        for shard in st["shards"]:
            assert shard["path"].startswith(f"stage-{st['stage']}/part-")
            assert shard["first_row"] == first
            table = read_shard(out / shard["path"])
            assert table.schema == stage_schema(kind)
            assert table.num_rows == shard["rows"] <= 25
            assert (out / shard["path"]).stat().st_size == shard["bytes"]
            assert sum(table.column("tokens").to_pylist()) == shard["tokens"]
            assert table.column("tokens").to_pylist() == tok.count(training_text(table))
            assert set(table.column("stage").to_pylist()) <= {st["stage"]}
            first += shard["rows"]
        assert first == st["rows"]
        table = read_stage(out, st)
        assert st["tokens"] == sum(table.column("tokens").to_pylist())
        assert st["bytes"] == sum(s["bytes"] for s in st["shards"])
        per_source = Counter(table.column("source").to_pylist())
        for s in st["sources"]:
            assert per_source[s["name"]] == s["realized_rows"]
        assert sum(per_source.values()) == st["rows"]
    assert manifest["counts"]["rows"] == sum(st["rows"] for st in manifest["stages"])
    assert manifest["counts"]["tokens"] == sum(st["tokens"] for st in manifest["stages"])


def test_lineage_and_config_recorded(built, sources):
    out, _ = built
    manifest = read_manifest(out)
    news = stage_of(manifest, 1)["sources"][0]
    news_manifest = read_manifest(sources["news"])
    assert news["lineage"]["kind"] == "documents"
    assert news["lineage"]["config_fingerprint"] == news_manifest["config_fingerprint"]
    assert "dedup.exact" in news["lineage"]["steps"]
    raw = (sources["news"] / "manifest.json").read_bytes()
    import hashlib

    assert news["lineage"]["manifest_sha256"] == hashlib.sha256(raw).hexdigest()
    fin_qa = stage_of(manifest, 2)["sources"][0]
    assert fin_qa["lineage"]["kind"] == "records" and fin_qa["part"] == "instruct"
    assert manifest["config"]["stages"][0]["sources"][0]["where"] == "exact_dups = 1 AND LENGTH(text) > 1500"
    assert "path" not in manifest["config"]["output"]
    assert manifest["config_fingerprint"].startswith("sha256:")
    # report.md and report.json exist; times only there
    assert "started_at" not in json.dumps(manifest)
    assert RunReport.load(out).started_at


def test_token_budget_respected(built):
    out, _ = built
    st = stage_of(read_manifest(out), 1)
    assert st["budget"] == {"tokens": 60_000} and st["mix_unit"] == "tokens"
    assert st["tokens"] <= 60_000
    table = read_stage(out, st)
    assert [s["target_tokens"] for s in st["sources"]] == [45_000, 15_000]
    for s in st["sources"]:
        toks = [t for t, n in zip(table["tokens"].to_pylist(), table["source"].to_pylist()) if n == s["name"]]
        assert sum(toks) == s["tokens"] <= s["target_tokens"]
        # it stops only when the next row would not fit (close to the target) or the rows run out
        assert s["tokens"] > s["target_tokens"] - 5_000 or s["realized_rows"] == s["filtered_rows"]
    news, groups = st["sources"]
    assert news["tokens"] > 40_000 and news["realized_rows"] < news["filtered_rows"]
    assert groups["realized_rows"] == groups["filtered_rows"] == 20  # too few tokens: all of it
    assert st["realized_mix"]["news"] == round(news["tokens"] / st["tokens"], 6)


def test_row_budget_and_mix(built):
    out, _ = built
    st = stage_of(read_manifest(out), 2)
    assert st["rows"] == 120 and st["mix_unit"] == "rows"
    assert [s["target_rows"] for s in st["sources"]] == [90, 30]
    assert [s["realized_rows"] for s in st["sources"]] == [90, 30]
    assert st["target_mix"] == {"fin_qa": 0.75, "fin_qa_again": 0.25}
    assert st["realized_mix"] == {"fin_qa": 0.75, "fin_qa_again": 0.25}
    table = read_stage(out, st)
    assert set(table.column("stage").to_pylist()) == {2}  # instruction.v1's stage is overwritten


def test_no_budget_takes_all_at_weights_and_repeat(built):
    out, _ = built
    st = stage_of(read_manifest(out), 3)
    fin_text, tiny = st["sources"]
    # tiny repeats, so the non-repeating fin_text (30 rows) sets the size: 30 + 30 at 1:1
    assert fin_text["realized_rows"] == fin_text["available_rows"] == 30
    assert tiny["realized_rows"] == 30 and tiny["unique_rows"] == 3 and tiny["repeated_rows"] == 27
    ids = Counter(
        i for i, s in zip(*(read_stage(out, st)[c].to_pylist() for c in ("id", "source"))) if s == "tiny"
    )
    assert ids == {"tiny-0": 10, "tiny-1": 10, "tiny-2": 10}
    assert st["schema"]["name"] == "stage_document.v1"  # rendered.v1 text conformed


def test_where_filters_rows(built, sources):
    out, _ = built
    st = stage_of(read_manifest(out), 1)
    table = read_stage(out, st)
    flagged = {f"lab-{i}" for i in range(30) if i % 3 == 0}
    chosen = {i for i, s in zip(table["id"].to_pylist(), table["source"].to_pylist()) if s == "newsgroups"}
    assert chosen and not chosen & flagged
    ng = st["sources"][1]
    assert ng["available_rows"] == 30 and ng["filtered_rows"] == 20
    news_rows = pa.concat_tables(
        [read_shard(sources["news"] / s["path"]) for s in read_manifest(sources["news"])["shards"]]
    )
    passing = {
        i
        for i, t, d in zip(*(news_rows[c].to_pylist() for c in ("id", "text", "exact_dups")))
        if d == 1 and len(t) > 1500
    }
    news = st["sources"][0]
    assert news["available_rows"] == news_rows.num_rows > news["filtered_rows"] == len(passing)
    news_chosen = [i for i, s in zip(table["id"].to_pylist(), table["source"].to_pylist()) if s == "news"]
    assert news_chosen and set(news_chosen) <= passing


def test_ledger_adds_up(built):
    out, report = built
    saved = RunReport.load(out)
    led = Ledger.from_dict(saved.to_dict()["ledger"])
    led.check()
    manifest = read_manifest(out)
    srcs = [s for st in manifest["stages"] for s in st["sources"]]
    assert led.rows_in == sum(s["available_rows"] for s in srcs)
    assert led.kept == sum(s["unique_rows"] for s in srcs)
    reasons = led.dropped_by_reason()
    assert reasons["curriculum.where:filtered"] == sum(s["available_rows"] - s["filtered_rows"] for s in srcs)
    assert reasons["curriculum.select:over_budget"] == sum(
        s["filtered_rows"] - s["unique_rows"] for s in srcs
    )
    counters = led.steps[-1].counters
    assert counters["rows_written"] == manifest["counts"]["rows"] == led.kept + counters["repeated_rows"]
    assert saved.rows_in == saved.kept + saved.dropped + saved.rejected
    assert report.reports["curriculum"][0]["source"] == "news"
    assert "## Curriculum" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- selection rules


def test_largest_remainder_and_permutation():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(7, [0.7, 0.3]) == [5, 2]
    assert sum(largest_remainder(1001, [0.1, 0.2, 0.3, 0.4])) == 1001
    p = permutation(1000, 5)
    assert sorted(p.tolist()) == list(range(1000))
    assert p.tolist() == permutation(1000, 5).tolist()
    assert p.tolist() != permutation(1000, 6).tolist()


def test_repeat_off_reports_shortfall(sources, tmp_path):
    cfg = curriculum(
        tmp_path,
        [
            {
                "stage": 1,
                "budget": {"rows": 20},
                "sources": [src("tiny", sources["tiny"]), src("a", sources["a"])],
            }
        ],
    )
    build_curriculum(cfg, output=tmp_path / "o")
    st = read_manifest(tmp_path / "o")["stages"][0]
    tiny, a = st["sources"]
    assert tiny["target_rows"] == 10 and tiny["realized_rows"] == 3 and tiny["repeated_rows"] == 0
    assert a["realized_rows"] == 10 and st["rows"] == 13
    assert st["realized_mix"] == {"tiny": round(3 / 13, 6), "a": round(10 / 13, 6)}
    assert st["target_mix"] == {"tiny": 0.5, "a": 0.5}


def test_rebuild_is_byte_identical(sources, tmp_path):
    stages = [
        {
            "stage": 1,
            "budget": {"rows": 30},
            "sources": [src("a", sources["a"]), src("b", sources["b"], weight=2)],
        }
    ]
    cfg = curriculum(tmp_path, stages, seed=7)
    build_curriculum(cfg, output=tmp_path / "one", shard_rows=8)
    build_curriculum(cfg, output=tmp_path / "two", shard_rows=8)
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert Path("manifest.json") in one and len([p for p in one if p.suffix == ".arrow"]) == 4
    for rel in one:
        if rel.name.startswith("report"):
            continue  # times and the output path live in the report
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_different_seed_changes_order_not_counts(sources, tmp_path):
    stages = [
        {
            "stage": 1,
            "budget": {"rows": 30},
            "sources": [src("a", sources["a"]), src("b", sources["b"], weight=2)],
        }
    ]
    results = []
    for seed in (0, 1):
        cfg = curriculum(tmp_path, stages, seed=seed)
        build_curriculum(cfg, output=tmp_path / f"s{seed}", overwrite=True)
        st = read_manifest(tmp_path / f"s{seed}")["stages"][0]
        results.append((st, read_stage(tmp_path / f"s{seed}", st)))
    (st0, t0), (st1, t1) = results
    assert st0["seed"] != st1["seed"]
    assert (
        [s["realized_rows"] for s in st0["sources"]]
        == [s["realized_rows"] for s in st1["sources"]]
        == [10, 20]
    )
    assert t0["id"].to_pylist() != t1["id"].to_pylist()
    assert Counter(t0["source"].to_pylist()) == Counter(t1["source"].to_pylist())


def test_text_field_renamed(sources, tmp_path):
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("body", sources["body"], text_field="body")]}])
    build_curriculum(cfg, output=tmp_path / "o")
    table = read_shard(tmp_path / "o" / "stage-1" / "part-00000.arrow")
    assert table.num_rows == 8
    assert all(t.startswith("body ") for t in table["text"].to_pylist())


def test_empty_stage_still_has_a_shard(sources, tmp_path):
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("b", sources["b"], where="score > 1000")]}])
    report = build_curriculum(cfg, output=tmp_path / "o")
    st = read_manifest(tmp_path / "o")["stages"][0]
    assert st["rows"] == 0 and len(st["shards"]) == 1 and st["shards"][0]["rows"] == 0
    assert read_shard(tmp_path / "o" / st["shards"][0]["path"]).schema == stage_schema("document")
    assert report.ledger.dropped_by_reason() == {"curriculum.where:filtered": 25}


def test_a_source_whose_run_failed_is_refused_unless_allowed(sources, tmp_path):
    """A source output whose run failed on its input (exit 1) is not used silently."""
    copy = tmp_path / "a-failed"
    shutil.copytree(sources["a"], copy)
    report = json.loads((copy / "report.json").read_text()) if (copy / "report.json").exists() else {}
    (copy / "report.json").write_text(json.dumps({**report, "status": "reject_rate_exceeded"}))
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", copy)]}])
    with pytest.raises(InputError, match=r"source 'a'.*failed on its input \(status reject_rate_exceeded"):
        build_curriculum(cfg, output=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", copy, allow_failed=True)]}])
    build_curriculum(cfg, output=tmp_path / "o")
    lineage = read_manifest(tmp_path / "o")["stages"][0]["sources"][0]["lineage"]
    assert lineage["run_status"] == "reject_rate_exceeded"
    bad = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", copy, allow_failed="yes")]}])
    with pytest.raises(ConfigError, match="allow_failed must be true or false"):
        build_curriculum(bad, output=tmp_path / "p")


def test_corrupted_source_shard_is_a_data_error(sources, tmp_path):
    copy = tmp_path / "a-copy"
    shutil.copytree(sources["a"], copy)
    shard = copy / "data" / "part-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", copy)]}])
    with pytest.raises(DataError, match=r"source 'a': shard .*a-copy/data/part-00001\.arrow does not match"):
        build_curriculum(cfg, output=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".o.partial-*"))


def test_output_rules(sources, tmp_path):
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", sources["a"])]}])
    build_curriculum(cfg, output=tmp_path / "o")
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        build_curriculum(cfg, output=tmp_path / "o")
    build_curriculum(cfg, output=tmp_path / "o", overwrite=True)
    with pytest.raises(ConfigError, match="overlaps source 'a'"):
        build_curriculum(cfg, output=sources["a"] / "cur", overwrite=True)
    with pytest.raises(ConfigError, match="no output folder"):
        build_curriculum(cfg)


# --------------------------------------------------------------------------- configuration errors


def test_stage_schemas():
    doc = stage_schema("document")
    assert doc.names == [*load_schema("document.v1").names, "stage", "source", "tokens", "domain", "fact_ids"]
    assert doc.metadata[b"dataforge.schema"] == b"stage_document.v1"
    ins = stage_schema("instruction")
    assert ins.names == [*load_schema("instruction.v1").names, "source", "tokens"]
    assert not ins.field("tokens").nullable and ins.field("stage").type == pa.int32()


def test_load_curriculum_infers_kinds(sources, tmp_path):
    cfg = curriculum(
        tmp_path,
        [
            {"stage": 3, "sources": [src("t", sources["fin"], part="text")]},
            {"stage": 2, "budget": {"rows": 5}, "sources": [src("q", sources["fin"], part="instruct")]},
        ],
        output="out/x",
    )
    spec = load_curriculum(cfg)
    assert [s.stage for s in spec.stages] == [2, 3]
    assert [s.kind for s in spec.stages] == ["instruction", "document"]
    assert spec.output == str(tmp_path / "out" / "x")
    assert spec.stage_seed(2) != spec.stage_seed(3)


@pytest.mark.parametrize(
    ("stage", "top", "error", "match"),
    [
        ({}, {"stagez": 1}, ConfigError, r"unknown key 'stagez' in the curriculum; valid: .*stages"),
        ({"budgit": 1}, {}, ConfigError, r"unknown key 'budgit' in stage #1; valid: .*budget"),
        (
            {"src": {"wieght": 1}},
            {},
            ConfigError,
            r"unknown key 'wieght' in stage 1: source 'a'; valid: .*weight",
        ),
        ({"src": {"weight": 0}}, {}, ConfigError, r"source 'a': weight must be a positive number, got 0"),
        ({"src": {"weight": -1.5}}, {}, ConfigError, r"weight must be a positive number, got -1.5"),
        ({"budget": {"bytes": 5}}, {}, ConfigError, r"unknown budget 'bytes'; valid: rows, tokens"),
        ({"budget": {"rows": 0}}, {}, ConfigError, r"budget.rows must be a positive integer, got 0"),
        (
            {"budget": {"rows": 1, "tokens": 2}},
            {},
            ConfigError,
            r"budget must be \{rows: N\} or \{tokens: N\}",
        ),
        ({}, {"seed": -1}, ConfigError, r"seed must be an integer >= 0, got -1"),
        ({"src": {"repeat": "yes"}}, {}, ConfigError, r"repeat must be true or false, got 'yes'"),
        (
            {"src": {"where": "score = = 1"}},
            {},
            ConfigError,
            r"source 'a': where 'score = = 1' is not a valid SQL expression",
        ),
        (
            {"src": {"where": "scroe > 1"}},
            {},
            ConfigError,
            r"source 'a': where 'scroe > 1' names column 'scroe'.*columns: id, text",
        ),
        (
            {"src": {"where": "source_row + 1"}},
            {},
            ConfigError,
            r"must be a true/false condition, but it gives Int64",
        ),
        (
            {"src": {"require_steps": ["dedup.minhash"]}},
            {},
            ConfigError,
            r"require_steps names 'dedup.minhash'.*its steps: normalize.text, dedup.exact",
        ),
        (
            {"src": {"require_kind": "records"}},
            {},
            ConfigError,
            r"require_kind is 'records' but .* is a 'documents'",
        ),
        (
            {"src": {"require_kind": "web"}},
            {},
            ConfigError,
            r"unknown require_kind 'web'; valid: documents, labelled",
        ),
        (
            {"src": {"part": "text"}},
            {},
            ConfigError,
            r"unknown part 'text' of documents output .*; valid: data",
        ),
        ({"src": {"text_field": "body"}}, {}, ConfigError, r"has no text column 'body'.*set text_field"),
        (
            {"src": {"path": "/nonexistent/dataforge-out"}},
            {},
            InputError,
            r"source 'a': path .* is not a folder",
        ),
    ],
)
def test_bad_curriculum_errors(sources, tmp_path, stage, top, error, match):
    source = {**src("a", sources["a"]), **stage.pop("src", {})}
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [source], **stage}], **top)
    with pytest.raises(error, match=match):
        load_curriculum(cfg)


def test_structural_errors(sources, tmp_path):
    one = [src("a", sources["a"])]
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": one}, {"stage": 1, "sources": one}])
    with pytest.raises(ConfigError, match="stage 1 appears 2 times; stage numbers must be unique"):
        load_curriculum(cfg)
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", sources["a"]), src("a", sources["b"])]}])
    with pytest.raises(ConfigError, match="source name 'a' appears 2 times"):
        load_curriculum(cfg)
    mixed = [src("docs", sources["a"]), src("pairs", sources["fin"], part="instruct")]
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": mixed}])
    with pytest.raises(
        ConfigError, match="source 'pairs' holds instruction pairs but source 'docs' holds documents"
    ):
        load_curriculum(cfg)
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("fin", sources["fin"])]}])
    with pytest.raises(ConfigError, match="is a records output; set part to one of: instruct, text"):
        load_curriculum(cfg)
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": []}])
    with pytest.raises(ConfigError, match="stage 1 needs 'sources'"):
        load_curriculum(cfg)
    cfg = curriculum(
        tmp_path, [{"stage": 1, "sources": [src("q", sources["fin"], part="instruct", text_field="x")]}]
    )
    with pytest.raises(ConfigError, match="text_field applies to document sources"):
        load_curriculum(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_curriculum(bad)


# --------------------------------------------------------------------------- CLI


def test_cli_curriculum_and_inspect(sources, tmp_path, cli_runner):
    cfg = curriculum(
        tmp_path,
        [
            {
                "stage": 1,
                "budget": {"rows": 12},
                "sources": [src("alpha", sources["a"]), src("beta", sources["b"])],
            },
            {"stage": 2, "budget": {"tokens": 3000}, "sources": [src("qa", sources["fin"], part="instruct")]},
        ],
        output=str(tmp_path / "from-yaml"),
    )
    out = tmp_path / "cli-out"
    result = cli_runner.invoke(cli, ["curriculum", str(cfg), "-o", str(out), "--shard-rows", "5"])
    assert result.exit_code == 0, result.output
    assert "alpha" in result.output and "beta" in result.output and "qa" in result.output
    assert "realized share" in result.output
    assert not (tmp_path / "from-yaml").exists()  # -o overrides the YAML
    st1 = read_manifest(out)["stages"][0]
    assert [s["path"] for s in st1["shards"]] == [f"stage-1/part-0000{i}.arrow" for i in range(3)]
    result = cli_runner.invoke(cli, ["inspect", str(out), "--verify", "--rows", "0"])
    assert result.exit_code == 0, result.output
    assert "curriculum" in result.output and "alpha" in result.output and "0.500" in result.output
    assert "all shards match the manifest" in result.output
    result = cli_runner.invoke(cli, ["inspect", str(out), "--json", "--rows", "0"])
    info = json.loads(result.output)
    stage1 = info["curriculum"][0]
    assert [(s["name"], s["target_share"], s["realized_share"]) for s in stage1["sources"]] == [
        ("alpha", 0.5, 0.5),
        ("beta", 0.5, 0.5),
    ]
    assert info["curriculum"][1]["mix_unit"] == "tokens" and info["curriculum"][1]["tokens"] <= 3000
    again = cli_runner.invoke(cli, ["curriculum", str(cfg), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_cli_bad_config_exit_2(sources, tmp_path, cli_runner):
    cfg = curriculum(tmp_path, [{"stage": 1, "sources": [src("a", sources["a"], weight=0)]}])
    result = cli_runner.invoke(cli, ["curriculum", str(cfg), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "weight must be a positive number, got 0" in result.output


def test_rendered_rows_keep_their_fact_ids(tmp_path, monkeypatch):
    """Stage-3 rows rendered from records keep domain and fact_ids, so a trained-on sentence can be
    traced back to the canonical rows it came from."""
    from dataforge.records.normalize import normalize_finance

    fin = tmp_path / "fin"
    normalize_finance([ROOT / "sample_data" / "finance" / "companyfacts"], output=fin, source="companyfacts",
                      render="text")  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: t\nseed: 0\nstages:\n  - stage: 3\n    sources:\n"
        f"      - {{name: fin, path: {fin}, part: text, weight: 1}}\n"
    )
    out = tmp_path / "cur"
    build_curriculum(cfg, output=out)
    man = json.loads((out / "manifest.json").read_text())
    t = read_shard(out / man["stages"][0]["shards"][0]["path"])
    assert set(t.column("domain").to_pylist()) == {"finance"}
    src = read_shard(fin / read_manifest(fin)["stages"]["text"]["shards"][0]["path"])
    by_id = dict(zip(src.column("id").to_pylist(), src.column("fact_ids").to_pylist(), strict=True))
    for rid, facts in zip(t.column("id").to_pylist(), t.column("fact_ids").to_pylist(), strict=True):
        assert facts and facts == by_id[rid]
