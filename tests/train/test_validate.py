"""`dataforge validate`: shard checks against the manifest, and the tiny training run through the
loader, which must beat the unigram baseline on real text and must not on noise."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

import dataforge
from dataforge.cli import cli
from dataforge.curriculum import build_curriculum
from dataforge.io.shards import read_manifest, write_json_atomic, write_shard
from dataforge.train.validate import check_shards, validate

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def _source(folder: Path, texts: list[str]) -> Path:
    rows = [
        {
            "id": f"d{i}",
            "text": t,
            "meta": None,
            "source_file": "x.jsonl",
            "source_row": i,
            "source_line": i + 1,
        }
        for i, t in enumerate(texts)
    ]
    info = write_shard(pa.Table.from_pylist(rows), folder / "data" / "part-00000.arrow", relative_to=folder)
    write_json_atomic(
        folder / "manifest.json",
        {
            "manifest_version": 1,
            "kind": "documents",
            "name": folder.name,
            "config": {"steps": []},
            "config_fingerprint": f"sha256:{folder.name}",
            "schema": {"name": "document.v1", "fields": []},
            "shards": [info.to_dict()],
        },
    )
    return folder


def _curriculum(tmp_path: Path, source: Path, name: str = "cur") -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"name": name, "seed": 0, "output": {"path": name, "shard_rows": 40},
             "stages": [{"stage": 1, "sources": [{"name": "s", "path": str(source), "weight": 1}]}]}
        )
    )  # fmt: skip
    out = tmp_path / f"{name}-out"
    build_curriculum(cfg, output=out)
    return out


@pytest.fixture(scope="module")
def news_curriculum(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("validate")
    dataforge.clean([ROOT / "sample_data" / "news"], output=base / "news", shard_rows=400)
    return _curriculum(base, base / "news")


def test_real_text_beats_the_unigram_baseline(news_curriculum):
    result = validate(news_curriculum, train_steps=150, seq_len=48, batch_size=8)
    assert result.problems == []
    assert result.shards_checked == len(read_manifest(news_curriculum)["shards"]) >= 2
    t = result.train
    assert t is not None and t.passed and result.ok
    assert t.final_loss < t.unigram_baseline < t.first_loss
    assert 4.5 < t.first_loss < 6.5  # about ln(258) at the start: the model knows nothing
    assert 0.9 * 150 * 8 * 48 < t.tokens <= 150 * 8 * 48  # target tokens seen (padding excluded)


def test_noise_does_not_beat_the_unigram_baseline(tmp_path):
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits
    texts = ["".join(rng.choice(alphabet) for _ in range(400)) for _ in range(120)]
    out = _curriculum(tmp_path, _source(tmp_path / "noise", texts), name="noise")
    result = validate(out, train_steps=120, seq_len=48, batch_size=8)
    assert result.problems == []
    t = result.train
    assert t is not None and not t.passed and not result.ok
    # uniform over 62 symbols (+ EOS): the baseline is about ln(62)
    assert abs(t.unigram_baseline - 4.13) < 0.1


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "rows"])
def test_damaged_shards_are_named(news_curriculum, tmp_path, damage, cli_runner):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(news_curriculum, out)
    man = read_manifest(out)
    shard = out / man["stages"][0]["shards"][-1]["path"]
    rel = man["stages"][0]["shards"][-1]["path"]
    if damage == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif damage == "delete":
        shard.unlink()
    else:  # a manifest that disagrees with its shard
        man["stages"][0]["shards"][-1]["rows"] += 1
        (out / "manifest.json").write_text(json.dumps(man))
    result = check_shards(out)
    assert result.problems and all(rel in p for p in result.problems)
    res = cli_runner.invoke(cli, ["validate", str(out), "--train-steps", "5"])
    assert res.exit_code == 1, res.output
    assert rel in res.output and "validation failed" in res.output


def test_cli_validate_ok_and_json(news_curriculum, cli_runner):
    res = cli_runner.invoke(cli, ["validate", str(news_curriculum), "--train-steps", "60", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["ok"] is True and d["train"]["steps"] == 60 and len(d["train"]["losses"]) == 60
    res = cli_runner.invoke(cli, ["validate", str(news_curriculum), "--train-steps", "0"])
    assert res.exit_code == 0 and "checked against the manifest: ok" in res.output
    res = cli_runner.invoke(cli, ["validate", str(news_curriculum), "--stage", "7"])
    assert res.exit_code == 2 and "valid: 1" in res.output


def test_validate_refuses_other_outputs(tmp_path, cli_runner):
    src = _source(tmp_path / "docs", ["some text"] * 3)
    res = cli_runner.invoke(cli, ["validate", str(src)])
    assert res.exit_code == 1 and "not 'curriculum'" in res.output


def test_shard_lists_that_disagree_are_named(news_curriculum, tmp_path, cli_runner):
    """Every sha256 of the top-level `shards` list zeroed, the stage lists (and the files) intact:
    validate names each shard, says which entry does not match the file, and exits 1."""
    import shutil

    out = tmp_path / "lists"
    shutil.copytree(news_curriculum, out)
    man = read_manifest(out)
    for entry in man["shards"]:
        entry["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(man))
    result = check_shards(out)
    paths = [e["path"] for e in man["stages"][0]["shards"]]
    assert len(result.problems) == len(paths) >= 2
    for rel, problem in zip(paths, result.problems):
        assert problem.startswith(f"{rel}: the manifest's shard lists disagree: sha256 0000000000000000...")
        assert "(the top-level `shards` entry does not match the file)" in problem
    res = cli_runner.invoke(cli, ["validate", str(out), "--train-steps", "0"])
    assert res.exit_code == 1, res.output
    assert all(rel in res.output for rel in paths) and "validation failed" in res.output
    # the other way round: a stage entry edited, the top-level one intact
    man = read_manifest(news_curriculum)
    man["stages"][0]["shards"][0]["bytes"] += 1
    (out / "manifest.json").write_text(json.dumps(man))
    problems = check_shards(out).problems
    assert any("stage 1's entry does not match the file" in p and paths[0] in p for p in problems)
    assert any(p.startswith(f"{paths[0]}: ") and "manifest says" in p for p in problems)
