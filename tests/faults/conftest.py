"""Shared helpers of the fault tests: inputs, subprocess runs, pausing and killing, byte digests,
leftover detection and small tmpfs mounts (for a full or read-only disk as root)."""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "sample_data"
DRIVER = Path(__file__).resolve().parent / "pause_driver.py"
# Files whose bytes legitimately differ between runs (timings, peak memory, output path).
TIMED = {"report.json", "report.md", "report.html"}


# --------------------------------------------------------------------------- comparing outputs


def digests(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out`` (relative path -> digest), report files excepted."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in TIMED
    }


def leftovers(out: Path) -> list[str]:
    """Temporary files and folders a run may leave in or next to ``out``: ``*.tmp-*`` files,
    ``.OUT.partial-*`` / ``.OUT.old-*`` folders, the ``_work`` folder, ``.write-test-*`` probes."""
    found: list[Path] = []
    if out.exists():
        for p in out.rglob("*"):
            if ".tmp" in p.name or ".partial-" in p.name or p.name == "_work" or ".write-test" in p.name:
                found.append(p)
    if out.parent.exists():
        found += [p for p in out.parent.glob(f".{out.name}.*")]
    return sorted(str(p) for p in found)


# --------------------------------------------------------------------------- running the CLI


def cli_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "dataforge", "-q", *map(str, args)]


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess[str]:
    """Run ``dataforge -q ARGS`` in a subprocess (text output captured)."""
    return subprocess.run(
        cli_cmd(*args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


@dataclass
class Paused:
    """A dataforge process stopped at a chosen point (see ``pause_driver.py``)."""

    proc: subprocess.Popen[bytes]
    sentinel: Path
    point: str  # what the driver says it stopped at

    def kill(self) -> None:
        """SIGKILL the process group (the CLI and any worker it started) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL, self.proc.returncode

    def resume(self, timeout: float = 300) -> tuple[int, str]:
        """Let the paused process go on; returns (exit code, stderr)."""
        Path(f"{self.sentinel}.go").write_text("go")
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err.decode(errors="replace")


def pause_at(
    args: Sequence[str | Path],
    tmp_path: Path,
    *,
    rename: str | None = None,
    call: str | None = None,
    nth: int = 1,
    timeout: float = 120,
) -> Paused:
    """Start ``dataforge -q ARGS`` under the pause driver and wait until it stops at the ``nth``
    rename whose destination matches ``rename`` (fnmatch), or the ``nth`` call of ``call``
    (``module:function``). Fails the test when the run ends before reaching the point."""
    sentinel = tmp_path / f"paused-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FAULT_SENTINEL": str(sentinel), "FAULT_NTH": str(nth)}
    if rename:
        env["FAULT_RENAME"] = rename
    if call:
        env["FAULT_CALL"] = call
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "-q", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not sentinel.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before reaching {rename or call} #{nth}: {err}"
            )
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"timed out waiting for {rename or call} #{nth}")
        time.sleep(0.01)
    return Paused(proc, sentinel, sentinel.read_text())


def kill_at(args: Sequence[str | Path], tmp_path: Path, **where) -> str:
    """Pause the run at a point (see :func:`pause_at`), SIGKILL it there; returns the point."""
    paused = pause_at(args, tmp_path, **where)
    paused.kill()
    return paused.point


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="session")
def news_rows() -> list[dict]:
    with gzip.open(SAMPLE / "news" / "reuters.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def news_parts(news_rows, tmp_path_factory) -> Path:
    """The news sample as 6 JSONL files of 300 rows (6 tasks), plus ``ref/``: the last 200 rows,
    the reference set of ``dedup --against``."""
    d = tmp_path_factory.mktemp("news-parts")
    (d / "in").mkdir()
    for i in range(6):
        part = news_rows[i * 300 : (i + 1) * 300]
        (d / "in" / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (d / "ref").mkdir()
    (d / "ref" / "ref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in news_rows[1800:]))
    return d


def clean_args(parts: Path, out: Path, *extra: str) -> list[str | Path]:
    return ["clean", parts / "in", "-o", out, "--shard-rows", "400", *extra]


def dedup_args(parts: Path, out: Path, *extra: str) -> list[str | Path]:
    return [
        "dedup",
        parts / "in",
        "-o",
        out,
        "--against",
        parts / "ref",
        "--report-clusters",
        "--shard-rows",
        "400",
        *extra,
    ]


CURRICULUM_YAML = """\
name: fault-curriculum
seed: 0
output: {{shard_rows: 300}}
stages:
  - stage: 1
    name: pretraining
    budget: {{rows: 900}}
    sources:
      - {{name: news, path: {news}, weight: 0.8}}
      - {{name: newsgroups, path: {fixed}, weight: 0.2, where: "label_issue = false"}}
  - stage: 2
    name: instructions
    budget: {{rows: 400}}
    sources:
      - {{name: fin_qa, path: {fin}, part: instruct, weight: 1, repeat: true}}
  - stage: 3
    name: domain
    sources:
      - {{name: fin_text, path: {fin}, part: text, weight: 1}}
"""


@pytest.fixture(scope="session")
def curriculum_sources(tmp_path_factory) -> Path:
    """Real sources for a 3-stage curriculum: ``clean`` of the news sample (3 shards), the fixed
    output of ``noise-report --fix drop`` (labelled), ``normalize finance`` (text + instruct);
    returns the folder holding them and ``cur.yaml``."""
    d = tmp_path_factory.mktemp("cur-sources")
    steps = [
        ("clean", SAMPLE / "news", "-o", d / "news", "--shard-rows", "500"),
        (
            "noise-report",
            SAMPLE / "labels" / "20news.jsonl.gz",
            "-o",
            d / "noise",
            "--pred-probs",
            SAMPLE / "labels" / "20news_pred_probs.npy",
            "--fix",
            "drop",
            "--fixed-out",
            d / "fixed",
        ),
        (
            "normalize",
            "finance",
            SAMPLE / "finance" / "companyfacts",
            "-o",
            d / "fin",
            "--source",
            "companyfacts",
            "--render",
            "text,instruct",
        ),
    ]
    for args in steps:
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
    (d / "cur.yaml").write_text(CURRICULUM_YAML.format(news=d / "news", fixed=d / "fixed", fin=d / "fin"))
    return d


# --------------------------------------------------------------------------- small file systems


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "32m") -> Iterator[Path]:
    """Mount a private tmpfs of ``size`` at ``path`` (skips the test when mounting is not allowed:
    not root, or no CAP_SYS_ADMIN in a container). Unmounted (lazily) afterwards."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (used for a full or read-only disk)")
    path.mkdir(parents=True, exist_ok=True)
    r = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, options: str) -> None:
    """``mount -o remount,OPTIONS`` (e.g. ``ro``, ``rw``, ``size=64m``)."""
    r = _mount("-o", f"remount,{options}", str(path))
    assert r.returncode == 0, r.stderr


def fill_disk(folder: Path) -> Path:
    """Write a ballast file in ``folder`` until the file system is full (ENOSPC); returns it."""
    ballast = folder / "ballast.bin"
    block = b"\0" * (1 << 16)
    # unbuffered: a buffered file would try to flush its rest again on close and raise ENOSPC
    # there, depending on how the free space divides by the block size
    with open(ballast, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)  # a short write returns a count; the next one raises ENOSPC
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    # tmpfs keeps a few pages per file: fill those too with small writes
    with contextlib.suppress(OSError), open(folder / "ballast-small.bin", "wb", buffering=0) as fh:
        while True:
            fh.write(b"\0" * 512)
    return ballast


def free_disk(folder: Path) -> None:
    for name in ("ballast.bin", "ballast-small.bin"):
        (folder / name).unlink(missing_ok=True)
