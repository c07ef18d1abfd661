"""Scheduled runs: a lock against overlapping runs, and incremental releases.

``dataforge run PIPELINE`` from cron must be safe to start while the previous run is still going,
and cheap when nothing arrived. Two mechanisms:

**Lock.** Every ``dataforge run`` takes an exclusive, non-blocking ``flock`` on
``<output parent>/.<output name>.lock`` (the output folder itself is replaced atomically, so the
lock lives beside it). A second run of the same pipeline exits at once with :class:`RunLockedError`
(exit code 75, ``EX_TEMPFAIL``: "try again later") naming the lock file and the PID holding it. The
kernel drops the lock when the holder dies, so a killed run never leaves a stale lock.

**Incremental releases** (``dataforge run PIPELINE --incremental``). The output folder is a release:
append-only shards plus a manifest with a ``release`` section (version, every input file processed
with its size, one entry per increment). An incremental run:

1. checks that the pipeline still processes documents as the release did (its input, output and
   steps sections; a change -> ConfigError: rebuild with ``--force``), then discovers the inputs
   and compares them with the release: no new file -> nothing is done, the run says so (status
   ``up_to_date``); a processed file whose size or modification time changed (rsync's quick check)
   -> InputError (an increment only adds files; rebuild with ``--force``); a processed file that is
   gone is kept in the release and logged as a warning (sources are often rotated away);
2. runs the pipeline on the new files only, into ``.<name>.increment`` beside the output, with every
   dedup step (``dedup.exact``, ``dedup.minhash``) given the release's kept documents as ``against``,
   so a new document that duplicates a released one is dropped (``exact_duplicate_of_reference`` /
   near-duplicate of the reference) and the release stays free of duplicates;
3. moves the increment's shards into the release under the next free part numbers (earlier shards
   are never rewritten: their bytes and sha256 stay valid for anyone who copied them), puts the
   increment's own reports under ``increments/v<NNNN>/``, and writes the new manifest (release
   version + 1, shards and counts appended) last. A crash before the manifest is written leaves
   unlisted files only, which the rerun overwrites; the release as listed is never half-updated.

The release's ``report.json`` holds the cumulative ledger (rows in = kept + dropped + rejected over
all increments); each increment's own report is kept under ``increments/``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataforge.config import Pipeline
from dataforge.errors import ConfigError, DataforgeError, InputError, OutputError
from dataforge.html import write_report_or_log
from dataforge.io.inputs import discover
from dataforge.io.shards import MANIFEST, read_manifest, write_bytes_atomic, write_json_atomic
from dataforge.report import REPORT_JSON, REPORT_MD, RunReport

log = logging.getLogger(__name__)

LOCKED_EXIT_CODE = 75
DEDUP_STEPS = ("dedup.exact", "dedup.minhash")
_PART = re.compile(r"part-(\d+)\.(arrow|parquet)$")


class RunLockedError(DataforgeError):
    """Another run of the same pipeline output holds the lock; nothing was done."""

    exit_code = LOCKED_EXIT_CODE


def lock_path(out: str | Path) -> Path:
    """The lock file of output folder ``out``, beside its real path (symlinks resolved, so two
    names of one folder share one lock)."""
    out = Path(os.path.realpath(out))
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of output folder ``out`` for the duration of the block."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            msg = (
                f"another dataforge run is writing {out} (lock {path} held by PID {holder}); "
                f"nothing done, try again when it has finished"
            )
            raise RunLockedError(msg) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _real(path: str) -> str:
    return os.path.realpath(path)


def _release(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's release section (built from its inputs for an output of a plain run)."""
    if "release" in manifest:
        return manifest["release"]
    return {
        "version": 1,
        "inputs": [{"path": _real(i["path"]), "bytes": i["bytes"]} for i in manifest.get("inputs", [])],
        "increments": [
            {"version": 1, "inputs": len(manifest.get("inputs", [])), "counts": manifest.get("counts", {})}
        ],
    }


def _with_reference(pipeline: Pipeline, reference: str) -> Pipeline:
    steps = []
    for step in pipeline.steps:
        if step.name in DEDUP_STEPS:
            step = dataclasses.replace(step, against=(*tuple(getattr(step, "against", ())), reference))
        steps.append(step)
    p = copy.copy(pipeline)
    p.steps = steps
    return p


def _next_part(folder: Path) -> int:
    nums = (
        [int(m.group(1)) for f in folder.glob("part-*") if (m := _PART.search(f.name))]
        if folder.is_dir()
        else []
    )
    return max(nums) + 1 if nums else 0


def _move_shards(entries: list[dict[str, Any]], src: Path, dst: Path, folder: str) -> list[dict[str, Any]]:
    start = _next_part(dst / folder)
    moved = []
    for i, e in enumerate(sorted(entries, key=lambda e: e["path"])):
        ext = Path(e["path"]).suffix
        rel = f"{folder}/part-{start + i:05d}{ext}"
        (dst / folder).mkdir(parents=True, exist_ok=True)
        os.replace(src / e["path"], dst / rel)
        moved.append({**e, "path": rel})
    return moved


def _check_same_config(pipeline: Pipeline, manifest: dict[str, Any], version: int) -> None:
    """An increment must be processed like the release: same input, output and steps settings
    (the dataforge version may differ)."""
    from dataforge.runner import config_of, fingerprint

    was = manifest.get("config") or {}
    now = config_of(pipeline)
    if "shard_bytes" not in (was.get("output") or {"shard_bytes": None}):
        # a release made before output.shard_bytes existed: any byte limit may cut the
        # increment's shards (it changes the shard layout, not which rows are kept)
        now = {**now, "output": {k: v for k, v in now["output"].items() if k != "shard_bytes"}}
    changed = [
        k for k in ("input", "output", "steps") if k in was and fingerprint(now[k]) != fingerprint(was[k])
    ]
    if changed:
        msg = (
            f"{pipeline.output.path}: the pipeline's {' and '.join(changed)} changed since release v{version}; "
            "an increment must be processed like the release: undo the change, or rebuild the release "
            "with `dataforge run --incremental --force`"
        )
        raise ConfigError(msg)


PREVIOUS_REPORT = "release-report-before.json"


def _discard_uncommitted(out: Path, manifest: dict[str, Any], version: int) -> None:
    """Undo what an increment killed before its manifest (the commit) left in the release: shards
    the manifest does not list (they would be read as the reference and drop the increment's rows
    as duplicates of themselves), its ``increments/vNNNN`` folder, temporary files, and a
    ``report.json`` already rewritten for the uncommitted release (put back from the copy the
    increment saved first)."""
    listed = {e["path"] for g in ("shards", "dropped", "rejects") for e in manifest.get(g, []) if "path" in e}
    for sub in ("data", "dropped", "rejects"):
        for f in sorted((out / sub).glob("*")) if (out / sub).is_dir() else []:
            rel = f"{sub}/{f.name}"
            if f.is_file() and rel not in listed:
                log.warning("%s: removing %s, left by an increment that did not finish", out, rel)
                f.unlink()
    try:
        stored = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    reported = ((stored.get("global_info") or {}).get("release") or {}).get("version", 1)
    if isinstance(reported, int) and reported > version:
        backup = out / f"increments/v{reported:04d}" / PREVIOUS_REPORT
        if not backup.is_file():
            msg = (
                f"{out}: report.json is of release v{reported} but the manifest of v{version}: an "
                "increment was interrupted; rebuild the release with `dataforge run --incremental --force`"
            )
            raise OutputError(msg)
        shutil.copyfile(backup, out / REPORT_JSON)
        log.warning("%s: release v%d did not finish; report.json of v%d restored", out, reported, version)
    for d in sorted((out / "increments").glob("v*")) if (out / "increments").is_dir() else []:
        m = re.fullmatch(r"v(\d+)", d.name)
        if m and int(m.group(1)) > version:
            shutil.rmtree(d, ignore_errors=True)
    for tmp in out.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def run_incremental(pipeline: Pipeline, *, progress: Any = None, force_full: bool = False) -> RunReport:
    """Add the pipeline's new input files to its output release (see the module docstring)."""
    from dataforge.runner import run_pipeline

    out = Path(pipeline.output.path)
    if force_full or not (out / MANIFEST).exists():
        report = run_pipeline(pipeline, overwrite=force_full, force=force_full, progress=progress)
        manifest = read_manifest(out)
        manifest["release"] = _release(manifest)
        # the release remembers each file's modification time too (not the plain manifest, whose
        # bytes must not depend on when the inputs were copied)
        mtimes = {_real(f.path): f.mtime_ns for f in discover(pipeline.input)}
        for i in manifest["release"]["inputs"]:
            if i["path"] in mtimes:
                i["mtime_ns"] = mtimes[i["path"]]
        write_json_atomic(out / MANIFEST, manifest)
        return report
    manifest = read_manifest(out)
    release = _release(manifest)
    _discard_uncommitted(out, manifest, release["version"])
    _check_same_config(pipeline, manifest, release["version"])
    processed = {i["path"]: i for i in release["inputs"]}
    files = discover(pipeline.input)
    for f in files:
        old = processed.get(_real(f.path))
        if old is None:
            continue
        if old["bytes"] != f.size:
            what = f"{old['bytes']:,} -> {f.size:,} bytes"
        elif old.get("mtime_ns", f.mtime_ns) != f.mtime_ns:
            what = "same size, modified since"
        else:
            continue
        msg = (
            f"input {f.path} changed since release v{release['version']} ({what}); "
            f"an incremental run only adds new files: rebuild the release with `dataforge run --incremental --force`"
        )
        raise InputError(msg)
    seen = {_real(f.path) for f in files}
    gone = sorted(p for p in processed if p not in seen)
    if gone:
        log.warning(
            "%s: %d input file(s) of release v%d are gone (kept in the release): %s",
            out, len(gone), release["version"], ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else ""),
        )  # fmt: skip
    new = [f for f in files if _real(f.path) not in processed]
    stored = RunReport.load(out)
    if not new:
        log.info("%s: no new input files since release v%d; nothing to do", out, release["version"])
        stored.status = "up_to_date"
        return stored
    version = release["version"] + 1
    log.info("%s: %d new input file(s) -> release v%d", out, len(new), version)
    inc = out.parent / f".{out.name}.increment"
    if inc.exists():
        shutil.rmtree(inc)
    p = _with_reference(pipeline, str(out / "data"))
    p.input = dataclasses.replace(pipeline.input, paths=tuple(f.path for f in new))
    p.output = dataclasses.replace(pipeline.output, path=str(inc))
    report = run_pipeline(p, overwrite=True, progress=progress)
    inc_manifest = read_manifest(inc)
    shards = _move_shards(inc_manifest.get("shards", []), inc, out, "data")
    dropped = _move_shards(inc_manifest.get("dropped", []), inc, out, "dropped")
    rejects = _move_shards(inc_manifest.get("rejects", []), inc, out, "rejects")
    inc_dir = f"increments/v{version:04d}"
    (out / inc_dir).mkdir(parents=True, exist_ok=True)
    reports: dict[str, list[dict[str, Any]]] = dict(manifest.get("reports", {}))
    for name, entries in inc_manifest.get("reports", {}).items():
        moved = []
        for e in entries:
            rel = f"{inc_dir}/{e['path']}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(inc / e["path"], out / rel)
            moved.append({**e, "path": rel})
        reports[f"{name}@v{version:04d}"] = moved
    for f in (REPORT_JSON, REPORT_MD):
        shutil.copyfile(inc / f, out / inc_dir / f)
    # the release's report before this increment: what a run interrupted before the manifest (the
    # commit) puts back (see _discard_uncommitted)
    shutil.copyfile(out / REPORT_JSON, out / inc_dir / PREVIOUS_REPORT)
    counts = {
        k: manifest.get("counts", {}).get(k, 0) + report.to_dict()["counts"][k]
        for k in report.to_dict()["counts"]
    }
    new_manifest = dict(manifest)
    new_manifest.update(
        shards=[*manifest.get("shards", []), *shards],
        dropped=[*manifest.get("dropped", []), *dropped],
        rejects=[*manifest.get("rejects", []), *rejects],
        reports=reports,
        inputs=[*manifest.get("inputs", []), *inc_manifest.get("inputs", [])],
        counts=counts,
        release={
            "version": version,
            "inputs": [
                *release["inputs"],
                *({"path": _real(f.path), "bytes": f.size, "mtime_ns": f.mtime_ns} for f in new),
            ],
            "increments": [
                *release["increments"],
                {
                    "version": version,
                    "inputs": len(new),
                    "gone_inputs": gone,
                    "counts": report.to_dict()["counts"],
                    "config_fingerprint": inc_manifest.get("config_fingerprint"),
                    "report": f"{inc_dir}/{REPORT_JSON}",
                },
            ],
        },
    )
    cumulative = RunReport.load(out)
    cumulative.ledger.add(report.ledger)
    cumulative.shards = new_manifest["shards"]
    cumulative.dropped_shards = new_manifest["dropped"]
    cumulative.reject_shards = new_manifest["rejects"]
    cumulative.per_input = [*cumulative.per_input, *report.per_input]
    cumulative.status = report.status
    # per-step details (LSH, candidate pairs, clusters...) are those of the latest increment; the
    # ledger and the shards are the whole release's
    cumulative.global_info = {
        **report.global_info,
        "release": {"version": version, "new_inputs": len(new), "step_info_of": f"v{version}"},
    }
    write_json_atomic(out / REPORT_JSON, cumulative.to_dict())
    write_bytes_atomic(out / REPORT_MD, cumulative.markdown().encode("utf-8"))
    write_report_or_log(out)
    write_json_atomic(out / MANIFEST, new_manifest)  # last: the release now lists the increment
    shutil.rmtree(inc, ignore_errors=True)
    log.info(
        "%s: release v%d: +%d kept rows (%s)",
        out,
        version,
        report.kept,
        json.dumps(report.to_dict()["counts"]),
    )
    cumulative.global_info["release"]["increment"] = report.to_dict()["counts"]
    return cumulative
