"""A real crash: SIGKILL a running `dataforge clean`, rerun it, and get the same bytes."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def digests(out: Path) -> dict[str, str]:
    files = sorted(
        p for p in out.rglob("*") if p.is_file() and p.parent.name in ("data", "dropped", "rejects")
    )
    files.append(out / "manifest.json")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def clean_cmd(inputs: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dataforge",
        "-q",
        "clean",
        str(inputs),
        "-o",
        str(out),
        "--shard-rows",
        "500",
    ]


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("many")
    with gzip.open(ROOT / "sample_data" / "news" / "reuters.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    for i in range(20):
        part = rows[i * 100 : (i + 1) * 100]
        (d / f"part-{i:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return d


@pytest.fixture(scope="module")
def reference(many_files, tmp_path_factory) -> Path:
    ref = tmp_path_factory.mktemp("ref") / "out"
    subprocess.run(clean_cmd(many_files, ref), check=True, cwd=ROOT)
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_markers", [1, 8, 21])
def test_sigkill_then_rerun_gives_identical_bytes(many_files, reference, tmp_path, kill_after_markers):
    ref = reference
    out = tmp_path / "killed"
    proc = subprocess.Popen(clean_cmd(many_files, out), cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        markers = list((out / "_work").rglob("*.done.json")) if (out / "_work").exists() else []
        if len(markers) >= kill_after_markers:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.wait()
    if not killed:
        pytest.fail(f"the run finished before {kill_after_markers} markers appeared; make the input bigger")
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(clean_cmd(many_files, out), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert digests(out) == digests(ref)
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
