"""Scheduled runs: the run lock, and incremental releases deduplicated against what was released."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import dataforge
from dataforge.cli import cli
from dataforge.errors import InputError
from dataforge.incremental import LOCKED_EXIT_CODE, RunLockedError, run_lock
from dataforge.io.shards import read_manifest, read_shard, sha256_file, verify_shards

ROOT = Path(__file__).resolve().parent.parent


def _news(n: int, skip: int = 0) -> list[dict]:
    rows = []
    with gzip.open(ROOT / "sample_data" / "news" / "reuters.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < skip:
                continue
            if len(rows) == n:
                break
            rows.append(json.loads(line))
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pipeline(tmp_path: Path, inbox: Path, out: Path) -> Path:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"name: inc\ninput: {{paths: [{inbox}]}}\noutput: {{path: {out}, shard_rows: 50}}\n"
        "steps:\n  - normalize.text: {}\n  - dedup.exact: {}\n  - dedup.minhash: {threshold: 0.8}\n",
        encoding="utf-8",
    )
    return cfg


def _kept_texts(out: Path) -> list[str]:
    texts: list[str] = []
    for s in read_manifest(out)["shards"]:
        texts += read_shard(out / s["path"]).column("text").to_pylist()
    return texts


def test_lock_blocks_a_second_run(tmp_path, cli_runner):
    inbox = tmp_path / "in"
    inbox.mkdir()
    _write(inbox / "a.jsonl", _news(20))
    out = tmp_path / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    with run_lock(out):
        with pytest.raises(RunLockedError, match="another dataforge run"):
            dataforge.run(cfg)
        res = cli_runner.invoke(cli, ["run", str(cfg)])
        assert res.exit_code == LOCKED_EXIT_CODE, res.output
        assert "lock" in res.output and str(__import__("os").getpid()) in res.output
    assert not out.exists()  # nothing was done while locked
    assert dataforge.run(cfg).kept > 0  # the lock is released with its holder
    # the same folder through a symlink is the same lock
    link = tmp_path / "link"
    link.symlink_to(out, target_is_directory=True)
    with run_lock(link), pytest.raises(RunLockedError):
        dataforge.run(cfg)


def test_a_missing_input_fails_before_the_lock_creates_anything(tmp_path, cli_runner):
    inbox = tmp_path / "not-there"
    out = tmp_path / "new" / "deeper" / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    with pytest.raises(InputError, match="not-there"):
        dataforge.run(cfg)
    res = cli_runner.invoke(cli, ["run", str(cfg)])
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "new").exists()  # neither the output's parent folder nor a lock file


def test_incremental_release(tmp_path, cli_runner):
    inbox = tmp_path / "in"
    inbox.mkdir()
    first = _news(60)
    _write(inbox / "a.jsonl", first[:30])
    _write(inbox / "b.jsonl", first[30:])
    out = tmp_path / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    res = cli_runner.invoke(cli, ["run", str(cfg), "--incremental"])
    assert res.exit_code == 0, res.output
    m1 = read_manifest(out)
    assert m1["release"]["version"] == 1
    v1_shards = {s["path"]: s["sha256"] for s in m1["shards"]}
    v1_ids = set()
    for sh in m1["shards"]:
        v1_ids.update(read_shard(out / sh["path"]).column("id").to_pylist())

    # nothing new: nothing done, and it says so
    res = cli_runner.invoke(cli, ["run", str(cfg), "--incremental"])
    assert res.exit_code == 0 and "no new input files" in res.output
    assert read_manifest(out) == m1

    # a new file: 20 new stories, 5 exact copies of released stories (one with changed case and
    # spacing), 2 copies of stories of the same new file
    fresh = _news(20, skip=200)
    released = [r for r in first if r["id"] in v1_ids][:5]
    assert len(released) == 5
    copies = [{**r, "id": f"copy-{i}"} for i, r in enumerate(released)]
    copies[0]["text"] = "  " + copies[0]["text"].upper().replace(" ", "   ")
    inner = [{**fresh[0], "id": "inner-0"}, {**fresh[1], "id": "inner-1"}]
    _write(inbox / "c.jsonl", fresh + copies + inner)
    res = cli_runner.invoke(cli, ["run", str(cfg), "--incremental"])
    assert res.exit_code == 0, res.output
    assert "release v2" in res.output
    m2 = read_manifest(out)
    assert m2["release"]["version"] == 2 and len(m2["release"]["increments"]) == 2
    # released shards are untouched; the increment is appended
    for path, sha in v1_shards.items():
        assert sha256_file(out / path) == sha
        assert any(s["path"] == path and s["sha256"] == sha for s in m2["shards"])
    assert len(m2["shards"]) > len(m1["shards"])
    assert verify_shards(out) == []
    # counts add up over the release
    rep = json.loads((out / "report.json").read_text())
    c = rep["counts"]
    assert c["rows_in"] == 60 + 27 == c["kept"] + c["dropped"] + c["rejected"]
    assert m2["counts"] == c
    inc = m2["release"]["increments"][-1]["counts"]
    assert inc["rows_in"] == 27
    # step details (and the printed MinHash line) are the increment's, not release v1's
    v2_report = json.loads((out / "increments" / "v0002" / "report.json").read_text())
    assert rep["global_info"]["dedup.minhash"] == v2_report["global_info"]["dedup.minhash"]
    assert rep["global_info"]["release"]["step_info_of"] == "v2"
    assert (out / "report.html").exists() and "release" in res.output
    # the copies of released stories are dropped as duplicates of the reference; no text twice
    texts = _kept_texts(out)
    norm = [" ".join(t.lower().split()) for t in texts]
    assert len(norm) == len(set(norm))
    dropped = []
    for s in m2["dropped"]:
        t = read_shard(out / s["path"])
        dropped += list(zip(t.column("id").to_pylist(), t.column("drop_reason").to_pylist(), strict=True))
    reasons = dict(dropped)
    for r in copies:
        assert reasons.get(r["id"]) == "exact_duplicate_of_reference", r["id"]
    assert reasons.get("inner-0") == "exact_duplicate" and reasons.get("inner-1") == "exact_duplicate"
    # the same release content as a full rebuild from all files
    full = tmp_path / "full"
    dataforge.run(cfg, output=full)
    assert sorted(norm) == sorted(" ".join(t.lower().split()) for t in _kept_texts(full))


def test_changed_input_needs_a_rebuild(tmp_path, cli_runner):
    inbox = tmp_path / "in"
    inbox.mkdir()
    _write(inbox / "a.jsonl", _news(10))
    out = tmp_path / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    dataforge.run(cfg, incremental=True)
    _write(inbox / "a.jsonl", _news(12))
    with pytest.raises(InputError, match="changed since release v1"):
        dataforge.run(cfg, incremental=True)
    res = cli_runner.invoke(cli, ["run", str(cfg), "--incremental", "--force"])
    assert res.exit_code == 0, res.output
    assert read_manifest(out)["counts"]["rows_in"] == 12


def test_incremental_only_for_document_pipelines(cli_runner):
    res = cli_runner.invoke(cli, ["run", str(ROOT / "pipelines" / "finance.yaml"), "--incremental"])
    assert res.exit_code == 2 and "document pipelines" in res.output


def test_same_size_rewrite_is_caught_and_gone_files_are_kept(tmp_path):
    import os

    inbox = tmp_path / "in"
    inbox.mkdir()
    a = _write(inbox / "a.jsonl", _news(10))
    b = _write(inbox / "b.jsonl", _news(5, skip=10))
    out = tmp_path / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    dataforge.run(cfg, incremental=True)
    assert all("mtime_ns" in i for i in read_manifest(out)["release"]["inputs"])
    # same bytes count, other content, newer mtime (a re-exported file): refused
    rows = _news(10)
    rows[0], rows[1] = rows[1], rows[0]
    _write(a, rows)
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert a.stat().st_size == read_manifest(out)["release"]["inputs"][0]["bytes"]
    with pytest.raises(InputError, match="a.jsonl changed since release v1 \\(same size, modified since\\)"):
        dataforge.run(cfg, incremental=True)
    # put the old mtime back: unchanged again; then a processed file disappears: kept, warned
    old = next(i for i in read_manifest(out)["release"]["inputs"] if i["path"].endswith("a.jsonl"))
    os.utime(a, ns=(st.st_atime_ns, old["mtime_ns"]))
    b.unlink()
    _write(inbox / "c.jsonl", _news(5, skip=20))
    rep = dataforge.run(cfg, incremental=True)
    release = read_manifest(out)["release"]
    assert rep.status == "ok" and release["version"] == 2
    assert [Path(p).name for p in release["increments"][-1]["gone_inputs"]] == ["b.jsonl"]
    assert read_manifest(out)["counts"]["rows_in"] == 20  # a + b from v1, c from v2


def test_a_changed_pipeline_is_refused(tmp_path):
    from dataforge.errors import ConfigError

    inbox = tmp_path / "in"
    inbox.mkdir()
    _write(inbox / "a.jsonl", _news(10))
    out = tmp_path / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    dataforge.run(cfg, incremental=True)
    cfg.write_text(cfg.read_text().replace("threshold: 0.8", "threshold: 0.7"), encoding="utf-8")
    _write(inbox / "b.jsonl", _news(5, skip=10))
    with pytest.raises(ConfigError, match="the pipeline's steps changed since release v1"):
        dataforge.run(cfg, incremental=True)


def test_a_release_from_before_shard_bytes_takes_increments(tmp_path):
    """A release whose manifest predates ``output.shard_bytes`` (no such key) takes increments
    whatever their byte limit; on a newer release a changed shard_bytes is a changed output."""
    from dataforge.errors import ConfigError

    inbox = tmp_path / "in"
    inbox.mkdir()
    _write(inbox / "a.jsonl", _news(10))
    out = tmp_path / "out"
    cfg = _pipeline(tmp_path, inbox, out)
    dataforge.run(cfg, incremental=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["output"]["shard_bytes"] == 64 << 20
    del manifest["config"]["output"]["shard_bytes"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    _write(inbox / "b.jsonl", _news(5, skip=10))
    report = dataforge.run(cfg, incremental=True)
    assert report.global_info["release"]["increment"]["rows_in"] == 5
    assert len(_kept_texts(out)) == report.kept == 15

    newer = tmp_path / "newer"
    cfg2 = _pipeline(tmp_path, inbox, newer)
    dataforge.run(cfg2, incremental=True)
    cfg2.write_text(
        cfg2.read_text().replace("shard_rows: 50", "shard_rows: 50, shard_bytes: 4096"), encoding="utf-8"
    )
    _write(inbox / "c.jsonl", _news(5, skip=15))
    with pytest.raises(ConfigError, match="the pipeline's output changed since release v1"):
        dataforge.run(cfg2, incremental=True)


def test_an_increment_killed_before_its_commit_is_redone_exactly(tmp_path, monkeypatch):
    """Killed after moving its shards and rewriting report.json but before the manifest: the next
    run removes what the unfinished increment left and gives the release an uninterrupted run
    gives (its rows were dropped as duplicates of their own leftover copies before)."""
    import dataforge.incremental as inc

    results = {}
    for name in ("clean", "killed"):
        inbox = tmp_path / name / "in"
        inbox.mkdir(parents=True)
        _write(inbox / "a.jsonl", _news(30))
        out = tmp_path / name / "out"
        cfg = _pipeline(tmp_path / name, inbox, out)
        dataforge.run(cfg, incremental=True)
        _write(inbox / "b.jsonl", _news(20, skip=30))
        if name == "killed":
            real = inc.write_json_atomic

            def die_at_commit(path, *a, real=real, **k):
                if Path(path).name == "manifest.json":
                    raise KeyboardInterrupt  # SIGKILL right before the commit
                return real(path, *a, **k)

            monkeypatch.setattr(inc, "write_json_atomic", die_at_commit)
            with pytest.raises(KeyboardInterrupt):
                dataforge.run(cfg, incremental=True)
            monkeypatch.setattr(inc, "write_json_atomic", real)
            assert json.loads((out / "report.json").read_text())["global_info"]["release"]["version"] == 2
        report = dataforge.run(cfg, incremental=True)
        manifest = read_manifest(out)
        assert manifest["release"]["version"] == 2
        assert report.rows_in == report.kept + report.dropped + report.rejected == 50
        assert manifest["counts"] == json.loads((out / "report.json").read_text())["counts"]
        assert verify_shards(out) == []
        listed = {s["path"] for g in ("shards", "dropped", "rejects") for s in manifest[g]}
        on_disk = {f"{p.parent.name}/{p.name}" for p in out.glob("*/part-*")}
        assert on_disk == listed
        # the same rows and counts (the shard bytes differ only by the input folder's path)
        results[name] = (_kept_texts(out), manifest["counts"], [s["rows"] for s in manifest["shards"]])
    assert results["killed"] == results["clean"]
