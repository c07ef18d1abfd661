"""Ray faults and real clusters: a Ray worker SIGKILLed during a task is retried and the output is
the local executor's bytes; ``clean`` and ``dedup`` with ``--executor ray --ray-address ADDR`` on a
simulated two-node cluster (``ray.cluster_utils.Cluster``) and on a cluster started by
``ray start --head`` give the local bytes too.

The ``ray start`` cluster runs with ``--block`` in its own session; teardown kills that process
group and every process it started, by PID (not ``ray stop``, which would also stop any other Ray
cluster on the machine, e.g. another test run's). Ray 2.59+ turns token authentication on by
default for clusters started on this machine, while a client joining by address does not use it
unless ``RAY_AUTH_MODE=token`` is set in its environment; the test cluster is started with
``RAY_AUTH_MODE=disabled`` and bound to 127.0.0.1 instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataforge.config import ExecutorSpec, OutputSpec, Pipeline
from dataforge.io.inputs import InputSpec
from dataforge.registry import build_step
from dataforge.runner import run_pipeline

from . import crash_step
from .conftest import ROOT, clean_args, dedup_args, digests, leftovers, run_cli

pytestmark = pytest.mark.ray

RAY = Path(sys.executable).parent / "ray"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False  # a zombie: dead, not yet reaped
    return True


# --------------------------------------------------------------------------- worker killed


def crash_pipeline(inputs: Path, out: Path, flag_dir: Path, victim: str) -> Pipeline:
    return Pipeline(
        name="ray-worker-kill",
        input=InputSpec(paths=(str(inputs),)),
        output=OutputSpec(path=str(out), shard_rows=400),
        steps=[
            build_step("normalize.text"),
            crash_step.CrashOnce(flag_dir=str(flag_dir), victim=victim),
            build_step("filter.gopher_quality"),
            build_step("dedup.exact"),
            build_step("dedup.minhash", {"report_clusters": True, "band_partitions": 4}),
        ],
        executor=ExecutorSpec(),
        max_reject_rate=None,
    )


def test_killed_ray_worker_is_retried_and_output_is_identical(news_parts, two_node_cluster, tmp_path):
    """A step SIGKILLs the Ray worker running the task of ``part-3.jsonl`` on its first attempt
    (mid-task: its work files are half written). Ray retries the task (``max_retries``) in a new
    worker; the run succeeds with the local executor's bytes and no temp file left."""
    import ray
    import ray.cloudpickle

    from dataforge.executors.ray import RayExecutor

    ray.cloudpickle.register_pickle_by_value(crash_step)
    flags = tmp_path / "flags"
    flags.mkdir()
    victim = "part-3.jsonl"
    ref = tmp_path / "local"
    run_pipeline(crash_pipeline(news_parts / "in", ref, flags, victim))
    assert not (flags / f"killed-{victim}").exists()

    (flags / "armed").write_text("")
    out = tmp_path / "ray"
    ray.init(address=two_node_cluster, include_dashboard=False, log_to_driver=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        ex = RayExecutor(address=two_node_cluster)
        assert ex.max_retries >= 1
        report = run_pipeline(crash_pipeline(news_parts / "in", out, flags, victim), executor=ex)
        ex.close()
    finally:
        ray.shutdown()
    killed_pid = int((flags / f"killed-{victim}").read_text())
    retried = [p for p in flags.glob(f"done-{victim}-*") if p.name != f"done-{victim}-{os.getpid()}"]
    assert retried, "the task should have been run again after its worker died"
    assert all(int(p.name.rsplit("-", 1)[1]) != killed_pid for p in retried)
    assert not _pid_alive(killed_pid), "the first worker should really be dead"
    assert report.executor == "ray"
    assert digests(out) == digests(ref)
    assert leftovers(out) == []


# --------------------------------------------------------------------------- CLI on clusters


@pytest.fixture(scope="module")
def local_refs(news_parts, tmp_path_factory) -> dict[str, Path]:
    """``clean`` and ``dedup`` outputs of the local executor."""
    base = tmp_path_factory.mktemp("ray-local-ref")
    refs = {}
    for name, args in (("clean", clean_args), ("dedup", dedup_args)):
        r = run_cli(*args(news_parts, base / name))
        assert r.returncode == 0, r.stderr
        refs[name] = base / name
    return refs


def _run_on(address: str, news_parts: Path, out_dir: Path, local_refs: dict[str, Path]) -> None:
    for name, args in (("clean", clean_args), ("dedup", dedup_args)):
        out = out_dir / name
        r = run_cli(*args(news_parts, out, "--executor", "ray", "--ray-address", address), timeout=600)
        assert r.returncode == 0, r.stderr
        report = (out / "report.json").read_text()
        assert '"executor": "ray"' in report
        assert digests(out) == digests(local_refs[name]), name
        assert leftovers(out) == []


def test_cli_on_simulated_two_node_cluster(news_parts, two_node_cluster, local_refs, tmp_path):
    """``dataforge clean|dedup --executor ray --ray-address <Cluster address>`` (head + 1 node):
    the local executor's bytes."""
    _run_on(two_node_cluster, news_parts, tmp_path, local_refs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((d / "stat").read_text().rsplit(") ", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


@pytest.fixture(scope="module")
def ray_start_cluster() -> Iterator[str]:
    """``ray start --head --port=<free> --num-cpus=2 --block`` in a subprocess; yields
    ``127.0.0.1:<port>``. Teardown: SIGKILL of its process group and of its descendants, by PID."""
    if not RAY.exists():
        pytest.skip(f"no ray command at {RAY}")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayf-", dir="/tmp")  # short: Ray's socket paths are limited
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            "--block",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            status = subprocess.run(
                [str(RAY), "status", f"--address={address}"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if status.returncode == 0 and "node_" in status.stdout:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the ray start cluster did not come up: {status.stderr[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        pids = _descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:  # any that left the process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_cli_on_ray_start_cluster(news_parts, ray_start_cluster, local_refs, tmp_path):
    """``dataforge clean|dedup --executor ray --ray-address 127.0.0.1:<port>`` on a cluster started
    with ``ray start --head`` by the test: the local executor's bytes."""
    _run_on(ray_start_cluster, news_parts, tmp_path, local_refs)


def test_relative_paths_and_ray_address_env_on_ray_start_cluster(news_parts, ray_start_cluster, tmp_path):
    """Run from another folder than the cluster's (``ray start`` ran in the repo root) with relative
    paths, the cluster given only by ``$RAY_ADDRESS``: the workers resolve the paths in the driver's
    folder, and the bytes equal the local executor's run of the same command."""
    from .conftest import cli_cmd

    work = tmp_path / "work"
    shutil.copytree(news_parts / "in", work / "in")

    def run(out: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_cmd("clean", "in", "-o", out, *extra),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **(env or {})},
            check=False,
        )

    local = run("out-local")
    assert local.returncode == 0, local.stderr
    on_ray = run(
        "out-ray", "--executor", "ray", env={"RAY_ADDRESS": ray_start_cluster, "RAY_AUTH_MODE": "disabled"}
    )
    assert on_ray.returncode == 0, on_ray.stderr
    report = json.loads((work / "out-ray" / "report.json").read_text())
    assert report["executor"] == "ray" and report["workers"] == 2  # the cluster's CPUs
    assert digests(work / "out-ray") == digests(work / "out-local")
    assert leftovers(work / "out-ray") == []
