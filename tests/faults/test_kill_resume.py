"""SIGKILL in the middle of every stage of ``clean``, ``dedup`` and ``curriculum``, rerun, and get
the bytes of an uninterrupted run with no temporary file left behind.

How the kill is placed: the command runs under ``pause_driver.py``, which stops the process just
before the Nth ``os.replace`` whose destination matches a pattern (the file is completely written
under its temporary name, not yet renamed), or on entry to the Nth call of a function. The test
polls the file system for the driver's sentinel, checks that the run really is mid-way (the
temporary file exists, the manifest does not), then SIGKILLs the whole process group: no
``except``/``finally`` of dataforge runs. The rerun is the plain command, without the driver.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from .conftest import (
    clean_args,
    dedup_args,
    digests,
    kill_at,
    leftovers,
    pause_at,
    run_cli,
)

SLOW = pytest.mark.slow

# Where to stop the run. Patterns match the destination path of a rename.
CLEAN_POINTS = [
    pytest.param({"rename": "*/_work/*/s0/t*.live.arrow", "nth": 3}, id="stage0-task-outputs"),
    pytest.param({"rename": "*/_work/*/s0/t*.done.json", "nth": 4}, id="stage0-marker", marks=SLOW),
    pytest.param({"rename": "*/_work/*/g0/decisions.arrow"}, id="exact-dedup-decide", marks=SLOW),
    pytest.param({"rename": "*/_work/*/s1/t*.done.json", "nth": 2}, id="stage1-annotate", marks=SLOW),
    pytest.param({"rename": "*/data/part-00001.arrow"}, id="assembly-data-shard"),
    pytest.param({"rename": "*/dropped/part-00000.arrow"}, id="assembly-dropped-shard", marks=SLOW),
    pytest.param({"rename": "*/manifest.json"}, id="before-manifest"),
]

DEDUP_POINTS = [
    pytest.param({"rename": "*/_work/*/g0/sig/*.npy", "nth": 2}, id="signature-side-file", marks=SLOW),
    pytest.param({"rename": "*/_work/*/s0/t*.done.json", "nth": 3}, id="signature-task-marker"),
    pytest.param({"rename": "*/_work/*/g0/ref/bands-*.arrow", "nth": 5}, id="minhash-reference", marks=SLOW),
    pytest.param({"rename": "*/_work/*/g0/candidates-*.done.json", "nth": 6}, id="minhash-candidates"),
    pytest.param({"rename": "*/_work/*/g0/verified-v*.json"}, id="minhash-verify"),
    pytest.param({"rename": "*/_work/*/g0/clusters.arrow"}, id="minhash-finalize"),
    pytest.param({"rename": "*/_work/*/s1/t*.done.json", "nth": 2}, id="annotate-stage", marks=SLOW),
    pytest.param({"rename": "*/data/part-00002.arrow"}, id="assembly-data-shard"),
    pytest.param({"rename": "*/clusters/part-00000.arrow"}, id="publish-clusters", marks=SLOW),
    pytest.param({"rename": "*/manifest.json"}, id="before-manifest"),
]

CURRICULUM_POINTS = [
    pytest.param({"call": "dataforge.curriculum:sha256_file", "nth": 2}, id="source-verification"),
    pytest.param({"call": "dataforge.curriculum:_count_tokens", "nth": 2}, id="selection", marks=SLOW),
    pytest.param({"rename": "*/stage-1/part-00001.arrow"}, id="stage1-shard"),
    pytest.param({"rename": "*/stage-2/part-00000.arrow"}, id="stage2-shard", marks=SLOW),
    pytest.param({"rename": "*/.out.partial-*/manifest.json"}, id="manifest-in-partial", marks=SLOW),
    pytest.param({"rename": "{out}"}, id="just-before-rename"),
]


def _check_mid_run(point: str, out: Path) -> None:
    """The process was really stopped mid-way: the file being renamed is still under its temporary
    name, and the output is not complete (no manifest)."""
    if point.startswith("rename "):
        src, dst = point[len("rename ") :].split(" -> ")
        assert Path(src).exists(), f"the temporary {src} should exist at the kill"
        assert not Path(dst).exists(), f"{dst} should not be in place yet"
    assert not (out / "manifest.json").exists(), "the killed run must not look complete"


@pytest.fixture(scope="module")
def clean_ref(news_parts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean-ref") / "out"
    r = run_cli(*clean_args(news_parts, out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def dedup_ref(news_parts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dedup-ref") / "out"
    r = run_cli(*dedup_args(news_parts, out))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["dropped"] > 0, "the dedup reference should drop near-duplicates"
    assert len(manifest["shards"]) >= 3
    return out


@pytest.fixture(scope="module")
def curriculum_ref(curriculum_sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cur-ref") / "out"
    r = run_cli("curriculum", curriculum_sources / "cur.yaml", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


def _kill_rerun_compare(args: list, out: Path, ref: Path, tmp_path: Path, where: dict) -> None:
    point = kill_at(args, tmp_path, **where)
    _check_mid_run(point, out)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(ref)
    assert leftovers(out) == []


@pytest.mark.parametrize("where", CLEAN_POINTS)
def test_clean_killed_then_rerun_is_identical(news_parts, clean_ref, tmp_path, where):
    """SIGKILL ``clean`` at ``where`` (stage 0 task, exact-dedup decision, annotate stage, final
    shards, manifest); the rerun resumes and writes the reference bytes, leaving no temp file."""
    out = tmp_path / "out"
    _kill_rerun_compare(clean_args(news_parts, out), out, clean_ref, tmp_path, where)


@pytest.mark.parametrize("where", DEDUP_POINTS)
def test_dedup_killed_then_rerun_is_identical(news_parts, dedup_ref, tmp_path, where):
    """SIGKILL ``dedup --against`` in the signature stage, each MinHash phase (reference,
    candidates, verify, finalize), the annotate stage, assembly and before the manifest; the rerun gives
    the reference bytes (shards, dropped, clusters, manifest) and no temp file."""
    out = tmp_path / "out"
    _kill_rerun_compare(dedup_args(news_parts, out), out, dedup_ref, tmp_path, where)


@pytest.mark.slow
def test_dedup_killed_twice_then_rerun_is_identical(news_parts, dedup_ref, tmp_path):
    """Two crashes in a row (signature stage, then candidates phase of the resumed run) before a
    run completes: still the reference bytes."""
    out = tmp_path / "out"
    args = dedup_args(news_parts, out)
    _check_mid_run(kill_at(args, tmp_path, rename="*/_work/*/s0/t*.done.json", nth=2), out)
    _check_mid_run(kill_at(args, tmp_path, rename="*/_work/*/g0/candidates-*.done.json", nth=3), out)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(dedup_ref)
    assert leftovers(out) == []


@pytest.mark.parametrize("where", CURRICULUM_POINTS)
def test_curriculum_killed_then_rerun_is_identical(curriculum_sources, curriculum_ref, tmp_path, where):
    """SIGKILL ``curriculum`` while verifying source checksums, selecting rows, writing stage
    shards, after the manifest and just before the partial folder is renamed into place: the
    output is absent (never half-visible), and the rerun gives the reference bytes with no
    ``.out.partial-*`` folder left next to it."""
    out = tmp_path / "out"
    args = ["curriculum", curriculum_sources / "cur.yaml", "-o", out]
    where = {k: (v.format(out=out) if isinstance(v, str) else v) for k, v in where.items()}
    point = kill_at(args, tmp_path, **where)
    assert not out.exists(), f"a killed curriculum build must leave no output ({point})"
    partial = list(tmp_path.glob(".out.partial-*"))
    assert partial, "the killed build should have been mid-way in its partial folder"
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(curriculum_ref)
    assert leftovers(out) == []


def test_curriculum_overwrite_killed_between_renames(curriculum_sources, curriculum_ref, tmp_path):
    """``curriculum --overwrite`` over an earlier output, SIGKILLed after the old output was moved
    aside and before the new one is renamed in: ``out`` holds no mix of two runs, and the rerun
    gives the reference bytes and removes the moved-aside and partial folders."""
    out = tmp_path / "out"
    args = ["curriculum", curriculum_sources / "cur.yaml", "-o", out, "--overwrite"]
    first = run_cli(*args[:-1], "--shard-rows", "100")  # a different earlier output
    assert first.returncode == 0, first.stderr
    point = kill_at(args, tmp_path, rename=str(out))
    assert ".out.partial-" in point
    assert not out.exists()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(curriculum_ref)
    assert leftovers(out) == []


def test_clean_killed_before_report_json(news_parts, clean_ref, tmp_path):
    """SIGKILL ``clean`` as report.json is renamed in: the manifest (written last) is not there
    yet, so the folder is not a finished run, and the rerun resumes and finishes it."""
    out = tmp_path / "out"
    args = clean_args(news_parts, out)
    kill_at(args, tmp_path, rename="*/report.json")
    assert not (out / "manifest.json").exists()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(clean_ref)
    assert leftovers(out) == []


def test_clean_killed_before_report_md(news_parts, clean_ref, tmp_path):
    """SIGKILL ``clean`` just before report.md is renamed in: the rerun leaves nothing behind."""
    out = tmp_path / "out"
    args = clean_args(news_parts, out)
    kill_at(args, tmp_path, rename="*/report.md")
    assert not (out / "manifest.json").exists()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(clean_ref)
    assert (out / "report.md").exists()
    assert leftovers(out) == []


def test_clean_killed_after_manifest_before_cleanup(news_parts, clean_ref, tmp_path):
    """SIGKILL ``clean`` after its manifest is in place but before the work folder is removed:
    the rerun is up to date and removes what the killed run left."""
    out = tmp_path / "out"
    args = clean_args(news_parts, out)
    kill_at(args, tmp_path, call="shutil:rmtree")
    assert (out / "manifest.json").exists() and (out / "_work").exists()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(clean_ref)
    assert leftovers(out) == []


def test_pause_driver_really_kills(news_parts, tmp_path):
    """The harness itself: a paused run is SIGKILLed (not exited), mid-way, with work files left."""
    out = tmp_path / "out"
    paused = pause_at(clean_args(news_parts, out), tmp_path, rename="*/_work/*/s0/t*.done.json", nth=2)
    assert paused.proc.poll() is None, "the run should be paused, alive"
    paused.kill()
    assert paused.proc.returncode == -signal.SIGKILL
    assert len(list((out / "_work").rglob("*.done.json"))) == 1
    assert list((out / "_work").rglob(".*.tmp-*")), "the marker being renamed stays as a temp file"
