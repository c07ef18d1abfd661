"""A read-only or full output disk: a clear error naming the path, exit code != 0, nothing that
looks complete, and after space is freed the rerun writes the reference bytes.

Mechanisms (the tests run as root, where ``chmod 0o555`` does not stop writes):

* **read-only**: the output's parent is on a private tmpfs remounted ``ro`` (EROFS). Not root:
  ``chmod 0o555`` of the parent instead.
* **full disk**: the output is on a private tmpfs (``mount -t tmpfs -o size=32m``). The command
  runs under ``pause_driver.py``, stops just before a chosen rename (first shard written), the test
  fills the tmpfs with a ballast file until ENOSPC, and lets the run go on: its next write fails.
  Deleting the ballast frees the space for the rerun.
* **file size limit** (no mount needed): ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so a write past the
  limit fails with EFBIG instead of killing the process.

Tests that need a mount skip where mounting is not allowed.
"""

from __future__ import annotations

import json
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataforge.io.shards import verify_shards

from .conftest import (
    SAMPLE,
    clean_args,
    dedup_args,
    digests,
    fill_disk,
    free_disk,
    leftovers,
    pause_at,
    remount,
    run_cli,
    tmpfs,
)


def normalize_args(out: Path) -> list:
    return [
        "normalize",
        "finance",
        SAMPLE / "finance" / "companyfacts",
        "-o",
        out,
        "--source",
        "companyfacts",
        "--render",
        "text,instruct",
    ]


def noise_fix_args(out: Path, report: Path) -> list:
    return [
        "noise-report",
        SAMPLE / "labels" / "20news.jsonl.gz",
        "-o",
        report,
        "--pred-probs",
        SAMPLE / "labels" / "20news_pred_probs.npy",
        "--fix",
        "drop",
        "--fixed-out",
        out,
        "--shard-rows",
        "2000",
    ]


def command(name: str, out: Path, *, news_parts: Path, cur: Path, report: Path) -> list:
    """The CLI arguments of command ``name`` writing to ``out``."""
    if name == "clean":
        return clean_args(news_parts, out)
    if name == "dedup":
        return dedup_args(news_parts, out)
    if name == "normalize":
        return normalize_args(out)
    if name == "noise-fix":
        return noise_fix_args(out, report)
    if name == "curriculum":
        return ["curriculum", cur / "cur.yaml", "-o", out]
    raise AssertionError(name)


COMMANDS = ["clean", "dedup", "normalize", "noise-fix", "curriculum"]


@pytest.fixture(scope="module")
def references(news_parts, curriculum_sources, tmp_path_factory) -> dict[str, Path]:
    """Each command's output on a healthy disk."""
    base = tmp_path_factory.mktemp("disk-ref")
    refs = {}
    for name in COMMANDS:
        out = base / name
        args = command(
            name, out, news_parts=news_parts, cur=curriculum_sources, report=base / f"{name}-report"
        )
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        refs[name] = out
    return refs


def assert_clear_error(rc: int, stderr: str, path: Path) -> None:
    """Exit 2 (OutputError), an ``error:`` line naming a file under ``path``, no traceback."""
    assert rc == 2, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    assert "error:" in stderr, stderr
    assert str(path) in stderr, f"the message should name a path under {path}: {stderr}"


def assert_nothing_complete(out: Path) -> None:
    """No output looks complete: no manifest, or a manifest whose every shard verifies."""
    manifest = out / "manifest.json"
    if manifest.exists():
        json.loads(manifest.read_text())
        assert verify_shards(out) == [], "a manifest lists a shard that is not complete"
    for p in out.parent.glob(f".{out.name}.partial-*"):
        raise AssertionError(f"partial folder left behind: {p}")


# --------------------------------------------------------------------------- read-only


@pytest.fixture
def readonly_dir(tmp_path) -> Iterator[Path]:
    """An empty folder nobody can write to: a tmpfs remounted read-only as root, else chmod 0o555."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    with tmpfs(tmp_path / "ro", size="4m") as d:
        remount(d, "ro")
        with pytest.raises(OSError):
            (d / "probe").write_bytes(b"")
        yield d


@pytest.mark.parametrize("name", COMMANDS)
def test_read_only_parent_is_a_clear_error(name, readonly_dir, news_parts, curriculum_sources, tmp_path):
    """Output folder under a read-only parent: exit 2, ``error: cannot write ...`` naming the
    output path, and nothing created."""
    out = readonly_dir / "out"
    args = command(name, out, news_parts=news_parts, cur=curriculum_sources, report=tmp_path / "report")
    r = run_cli(*args)
    assert_clear_error(r.returncode, r.stderr, out)
    assert list(readonly_dir.iterdir()) == []


def test_read_only_noise_report_folder(readonly_dir):
    """``noise-report -o`` on a read-only disk: exit 2 naming the folder, nothing written."""
    out = readonly_dir / "noise"
    r = run_cli(
        "noise-report",
        SAMPLE / "labels" / "20news.jsonl.gz",
        "-o",
        out,
        "--pred-probs",
        SAMPLE / "labels" / "20news_pred_probs.npy",
    )
    assert_clear_error(r.returncode, r.stderr, out)
    assert list(readonly_dir.iterdir()) == []


# --------------------------------------------------------------------------- full disk

# Where the disk fills: just before this rename (so earlier files are written, later ones fail).
FULL_POINTS = {
    "clean": "*/data/part-00000.arrow",
    "dedup": "*/data/part-00001.arrow",
    "normalize": "*/.out.partial-*/tables/*",
    "noise-fix": "*/.out.partial-*/data/part-00000.arrow",
    "curriculum": "*/.out.partial-*/stage-1/part-00000.arrow",
}


@pytest.mark.parametrize("name", COMMANDS)
def test_full_disk_is_a_clear_error_and_rerun_recovers(
    name, references, news_parts, curriculum_sources, tmp_path
):
    """The output disk fills up after the first shard is written: exit 2 with ``No space left``
    naming the file, no manifest listing an incomplete shard, no partial folder; once space is
    freed, the same command writes the reference bytes and leaves no temporary file."""
    with tmpfs(tmp_path / "mnt", size="32m") as mnt:
        out = mnt / "out"
        args = command(name, out, news_parts=news_parts, cur=curriculum_sources, report=tmp_path / "report")
        paused = pause_at(args, tmp_path, rename=FULL_POINTS[name])
        fill_disk(mnt)
        rc, err = paused.resume()
        assert_clear_error(rc, err, mnt)
        assert "No space left on device" in err, err
        assert_nothing_complete(out)
        assert not (out / "manifest.json").exists()
        free_disk(mnt)
        rerun = run_cli(*args)
        assert rerun.returncode == 0, rerun.stderr
        assert digests(out) == digests(references[name])
        assert leftovers(out) == []


@pytest.mark.parametrize("name", ["clean", "dedup"])
def test_full_disk_during_stage_tasks_recovers(name, references, news_parts, curriculum_sources, tmp_path):
    """The disk fills while stage-0 tasks write their work files: the run fails (exit != 0)
    without a manifest, and after space is freed the rerun resumes to the reference bytes."""
    with tmpfs(tmp_path / "mnt", size="32m") as mnt:
        out = mnt / "out"
        args = command(name, out, news_parts=news_parts, cur=curriculum_sources, report=tmp_path / "report")
        paused = pause_at(args, tmp_path, rename="*/_work/*/s0/t*.done.json", nth=2)
        fill_disk(mnt)
        rc, err = paused.resume()
        assert rc != 0, err
        assert "No space left on device" in err or "written" in err, err
        assert_nothing_complete(out)
        assert not (out / "manifest.json").exists()
        free_disk(mnt)
        rerun = run_cli(*args)
        assert rerun.returncode == 0, rerun.stderr
        assert digests(out) == digests(references[name])
        assert leftovers(out) == []


@pytest.mark.parametrize("name", ["clean", "dedup"])
def test_full_disk_during_stage_tasks_is_a_clear_error(name, news_parts, curriculum_sources, tmp_path):
    """The disk fills during stage-0 tasks: the error should be an OutputError (exit 2) naming the
    work file, like a full disk during assembly."""
    with tmpfs(tmp_path / "mnt", size="32m") as mnt:
        out = mnt / "out"
        args = command(name, out, news_parts=news_parts, cur=curriculum_sources, report=tmp_path / "report")
        paused = pause_at(args, tmp_path, rename="*/_work/*/s0/t*.done.json", nth=2)
        fill_disk(mnt)
        rc, err = paused.resume()
        assert_clear_error(rc, err, out)


# --------------------------------------------------------------------------- file size limit


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize("name", ["normalize", "curriculum", "noise-fix"])
def test_file_size_limit_is_a_clear_error(name, news_parts, curriculum_sources, tmp_path):
    """Writes past RLIMIT_FSIZE (64 KiB) fail with EFBIG: exit 2 naming the shard, and neither the
    output nor its partial folder is left (works without root or mounts)."""
    out = tmp_path / "out"
    args = command(name, out, news_parts=news_parts, cur=curriculum_sources, report=tmp_path / "report")
    r = run_cli(*args, preexec_fn=_limit_file_size(64 * 1024))
    assert_clear_error(r.returncode, r.stderr, tmp_path)
    assert "File too large" in r.stderr, r.stderr
    assert not out.exists()
    assert leftovers(out) == []
