"""``normalize_ehr`` and ``normalize_finance``: read, validate, normalize, de-identify, render, write.

EHR::

    reader (fhir | synthea | mimic | omop) -> units -> validate -> de-identify -> render -> write

Finance::

    reader (companyfacts | fsds | xbrl) -> fact dedup, restatements, Q4, synonyms -> checks -> render -> write

Both write the layout described in :mod:`dataforge.records.output` and return the run report, whose
ledger (in input records) is checked before anything is written.

**Executors.** With one local worker the reader reads every input in this process. With more
workers or ``executor="ray"`` the reading runs on a dataforge executor as independent tasks whose
extracts are merged, in input order, into exactly what the one call returns (so the output bytes do
not depend on the executor); the rest (units, validation, de-identification, facts, rendering,
writing) runs in the driver. The unit of a task, per source (:data:`READ_TASKS`):

* ``fhir``: one file (a Bundle, a resource, an NDJSON file). References are resolved across all
  inputs, so the files are merged only when none references or repeats what another defines (true
  of Synthea's one-Bundle-per-patient export); otherwise (an NDJSON bulk export, whose
  ``Observation.ndjson`` references ``Patient.ndjson``) they are read again as one task.
* ``companyfacts``: one file (one company). ``xbrl``: one instance document (the folders are
  listed in the driver). ``fsds``: one quarter (a zip or a folder), whose four files are joined.
* ``synthea``, ``mimic``, ``omop``: one task for all inputs: their tables join each other
  (patients, encounters or admissions, dictionaries), so the files are not independent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import importlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from dataforge.errors import ConfigError, InputError, choices
from dataforge.executors.base import Executor, make_executor
from dataforge.records.model import Extract
from dataforge.records.output import RecordsRun, write_records
from dataforge.report import RunReport

log = logging.getLogger(__name__)

EHR_SOURCES = {
    "fhir": ("dataforge.records.ehr.fhir", "read_fhir"),
    "synthea": ("dataforge.records.ehr.synthea", "read_synthea"),
    "mimic": ("dataforge.records.ehr.mimic", "read_mimic"),
    "omop": ("dataforge.records.ehr.omop", "read_omop"),
}
FINANCE_SOURCES = {
    "companyfacts": ("dataforge.records.finance.companyfacts", "read_companyfacts"),
    "fsds": ("dataforge.records.finance.fsds", "read_fsds"),
    "xbrl": ("dataforge.records.finance.xbrl", "read_xbrl"),
}
# Sources whose inputs split into independent read tasks: source -> (module, function listing the
# tasks as ``(head extract, tasks)``, function merging ``(head, results)`` or None for Extract.concat)
READ_TASKS = {
    "fhir": ("dataforge.records.ehr.fhir", "fhir_tasks", "merge_fhir_parts"),
    "companyfacts": ("dataforge.records.finance.companyfacts", "companyfacts_tasks", None),
    "fsds": ("dataforge.records.finance.fsds", "fsds_tasks", None),
    "xbrl": ("dataforge.records.finance.xbrl", "xbrl_tasks", None),
}
RENDER_KINDS = ("text", "instruct")


def _reader(sources: dict[str, tuple[str, str]], source: str, what: str) -> Any:
    if source not in sources:
        msg = f"unknown {what} source {source!r}; valid: {choices(sources)}"
        raise ConfigError(msg)
    module, name = sources[source]
    return getattr(importlib.import_module(module), name)


def _render_kinds(render: Sequence[str] | str | None) -> tuple[str, ...]:
    if render is None:
        return ()
    items = [r.strip() for r in (render.split(",") if isinstance(render, str) else render) if r and r.strip()]
    bad = [r for r in items if r not in RENDER_KINDS]
    if bad:
        msg = f"unknown --render kind {bad[0]!r}; valid: {choices(RENDER_KINDS)}"
        raise ConfigError(msg)
    return tuple(dict.fromkeys(items))


def _paths(inputs: Sequence[str | Path] | str | Path) -> list[str]:
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if not items:
        msg = "no input paths given"
        raise InputError(msg)
    for p in items:
        if not Path(p).exists():
            msg = f"input path {str(p)!r} does not exist"
            raise InputError(msg)
    return [str(p) for p in items]


def _common_root(paths: list[str]) -> str | None:
    parents = [Path(p).resolve() if Path(p).is_dir() else Path(p).resolve().parent for p in paths]
    try:
        import os

        return os.path.commonpath([str(p) for p in parents])
    except ValueError:
        return None


def _call(task: Callable[[], Any]) -> Any:
    """Run one read task (a ``functools.partial`` of a reader function) on an executor."""
    return task()


def _read(source: str, read: Callable[..., Extract], paths: list[str], ex: Executor) -> Extract:
    """``read(paths)``: in this process on one local worker, else as tasks on ``ex`` (see the
    module docstring), merged into the same extract."""
    root = _common_root(paths)
    if ex.name == "local" and ex.workers == 1:
        return read(paths, root=root)
    whole = functools.partial(read, paths, root=root)
    if source not in READ_TASKS:
        return ex.map(_call, [whole])[0]
    module, split_name, merge_name = READ_TASKS[source]
    mod = importlib.import_module(module)
    head, tasks = getattr(mod, split_name)(paths, root=root)
    log.info("%s: reading %d task(s) on the %s executor", source, len(tasks), ex.name)
    results = ex.map(_call, tasks)
    merged = getattr(mod, merge_name)(head, results) if merge_name else Extract.concat([head, *results])
    return merged if merged is not None else ex.map(_call, [whole])[0]


def extract_ehr(
    inputs: Sequence[str | Path] | str | Path,
    *,
    source: str,
    now: dt.datetime | None = None,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> tuple[Extract, dict[str, Any], dict[str, float]]:
    """Read, normalize units and validate: the raw (identified) canonical tables of ``inputs``.

    Args:
        inputs: files or folders of one source.
        source: ``fhir``, ``synthea``, ``mimic`` or ``omop``.
        now: reference time for the future-date rule (default: the current time).
        executor: where the files are read: ``local`` or ``ray`` (never changes the result).
        workers: parallel workers (processes, or the CPUs of a Ray started for the run).
        ray_address: the Ray cluster to join (``ray`` only).

    Returns:
        The extract, step counters and timings. Nothing is de-identified yet: use
        :func:`normalize_ehr` to write output.
    """
    with contextlib.closing(make_executor(executor, workers=workers, address=ray_address)) as ex:
        return _extract_ehr(inputs, source=source, now=now, ex=ex)


def _extract_ehr(
    inputs: Sequence[str | Path] | str | Path, *, source: str, now: dt.datetime | None, ex: Executor
) -> tuple[Extract, dict[str, Any], dict[str, float]]:
    from dataforge.records.ehr.units import normalize_units
    from dataforge.records.ehr.validate import validate

    read = _reader(EHR_SOURCES, source, "EHR")
    paths = _paths(inputs)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    extract = _read(source, read, paths, ex)
    timings["read"] = time.perf_counter() - t0
    counters: dict[str, Any] = dict(extract.counters)
    t0 = time.perf_counter()
    if "measurement" in extract.tables:
        m, c = normalize_units(extract.tables["measurement"])
        extract.tables["measurement"] = m
        for k, v in c.items():
            counters[k] = counters.get(k, 0) + v
    timings["units"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k, v in validate(extract, now=now).items():
        counters[f"validate:{k}"] = v
    timings["validate"] = time.perf_counter() - t0
    return extract, counters, timings


def normalize_ehr(
    inputs: Sequence[str | Path] | str | Path,
    *,
    output: str | Path,
    source: str,
    deid: str = "safe-harbor",
    salt_env: str | None = None,
    render: Sequence[str] | str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    shard_rows: int = 100_000,
    compression: str = "zstd",
    max_reject_rate: float | None = 0.05,
    now: dt.datetime | None = None,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> RunReport:
    """Normalize EHR files into canonical, de-identified tables (and rendered text) in ``output``.

    Args:
        inputs: files or folders of one source.
        output: output folder (must be empty or a previous dataforge output with ``overwrite``).
        source: ``fhir``, ``synthea``, ``mimic`` or ``omop``.
        deid: ``safe-harbor`` (default), ``date-shift`` or ``off``; see :mod:`dataforge.records.ehr.deid`.
        salt_env: environment variable holding the pseudonym salt (default ``DATAFORGE_DEID_SALT``).
        render: ``text`` (patient timelines, stage 3) and/or ``instruct`` (grounded Q/A, stage 2).
        seed: chooses the instruction questions.
        overwrite: replace an existing dataforge output folder.
        shard_rows: rows per output shard.
        compression: ``zstd``, ``lz4`` or ``none``.
        max_reject_rate: above this share of rejected input records the output is still written
            but the run fails (DataError, exit code 1); None disables the check.
        now: reference time for the future-date rule (default: the current time).
        executor: where the files are read: ``local`` or ``ray``; the rest runs in this process.
            The output bytes are the same whichever runs; ``report.json`` records which did.
        workers: parallel workers (processes, or the CPUs of a Ray started for the run).
        ray_address: the Ray cluster to join (``ray`` only; default ``$RAY_ADDRESS``, else a Ray
            started for the run).

    Returns:
        The run report (also written to ``output/report.json``).
    """
    from dataforge.records.ehr.deid import DeidConfig, all_phi, deidentify, describe, scrub_text
    from dataforge.records.ehr.render import render_instruct, render_text

    kinds = _render_kinds(render)
    cfg = DeidConfig.from_env(deid, salt_env=salt_env)
    with contextlib.closing(make_executor(executor, workers=workers, address=ray_address)) as ex:
        extract, counters, timings = _extract_ehr(inputs, source=source, now=now, ex=ex)
    t0 = time.perf_counter()
    raw_patients = extract.tables.get("patient", pl.DataFrame(schema={"patient_id": pl.Utf8}))
    tables, deid_counts = deidentify(extract.tables, source=source, cfg=cfg)
    counters.update({f"deid:{k}": v for k, v in deid_counts.items()})
    rejects = extract.rejects
    dropped = extract.dropped
    if cfg.mode != "off":
        # rejects and dropped records must not carry PHI either: no raw bytes, scrubbed messages,
        # pseudonymous file names and record keys
        from dataforge.records.ehr.deid import pseudonym

        phi = all_phi(raw_patients)
        files = {
            f: f"file-{pseudonym(cfg, 'file', f)}"
            for f in set(rejects["source_file"].to_list()) | set(dropped["source_file"].to_list())
        }
        # file names first (a path must not be read as a reference), then PHI, record ids, dates
        rejects = rejects.with_columns(
            pl.lit(None, dtype=pl.Binary).alias("raw"),
            pl.col("source_file").replace_strict(files, return_dtype=pl.Utf8),
            pl.col("error")
            .str.replace_many(  # longest name first: a path that begins another is not cut short
                sorted(files, key=lambda f: (-len(f), f)),
                [files[f] for f in sorted(files, key=lambda f: (-len(f), f))],
            )
            .map_elements(lambda e: scrub_text(e, phi=phi, mode=cfg.mode), return_dtype=pl.Utf8),
        )
        dropped = dropped.with_columns(
            pl.col("source_file").replace_strict(files, return_dtype=pl.Utf8),
            pl.col("source_ref").map_elements(lambda r: pseudonym(cfg, "ref", r), return_dtype=pl.Utf8),
            pl.lit(None, dtype=pl.Utf8).alias("detail"),
        )
        inputs_meta = [
            {**i, "path": f"file-{pseudonym(cfg, 'file', str(i['path']))}"}
            if i.get("role") == "records"
            else i
            for i in extract.inputs
        ]
        extract.inputs = inputs_meta
        _log_rejected_files(extract.rejects, files, root=_common_root(_paths(inputs)))
    timings["deid"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = render_text(tables) if "text" in kinds else None
    instruct = render_instruct(tables, seed=seed) if "instruct" in kinds else None
    timings["render"] = time.perf_counter() - t0
    for name, frame in tables.items():
        counters[f"rows:{name}"] = frame.height
    for kind, frame in (("text", text), ("instruct", instruct)):
        if frame is not None:
            counters[f"rendered:{kind}"] = frame.height
    config = {
        "command": "normalize ehr",
        "source": source,
        "deid": cfg.mode,
        "salt_env": salt_env if cfg.mode != "off" else None,
        "render": list(kinds),
        "seed": seed,
    }
    run = RecordsRun(
        name="normalize-ehr",
        domain="ehr",
        extract=extract,
        tables={name: (frame, f"ehr.{name}.v1") for name, frame in tables.items()},
        text=text,
        instruct=instruct,
        rejects=rejects,
        dropped=dropped,
        config=config,
        manifest_extra={"deid": describe(cfg), "source": source},
        counters=counters,  # type: ignore[arg-type]
        timings=timings,
        max_reject_rate=max_reject_rate,
        executor=ex.name,
        workers=ex.workers,
    )
    return write_records(run, output, overwrite=overwrite, shard_rows=shard_rows, compression=compression)


#: files with rejected records named one by one at WARNING level (the rest at INFO, ``-v``)
LOG_REJECTED_FILES = 10


def _log_rejected_files(rejects: pl.DataFrame, files: dict[str, str], *, root: str | None) -> None:
    """Log each input file with rejected records under its real path, next to the pseudonym that
    rejects/, report.json and the console summary give it when the run is de-identified (file names
    can carry patient names, so the output never holds them; the log goes to the user's terminal).
    The records carry ``console_only``: the CLI's ``--log-json`` file handler drops them.
    """
    if not rejects.height:
        return
    per_file = rejects.group_by("source_file", maintain_order=True).agg(pl.col("reason"))
    for i, (name, reasons) in enumerate(per_file.iter_rows()):
        path = Path(name)
        if not path.is_absolute() and not path.exists() and root is not None and (Path(root) / path).exists():
            path = Path(root) / path
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(Counter(reasons).items()))
        log.log(
            logging.WARNING if i < LOG_REJECTED_FILES else logging.INFO,
            "rejected %d record(s) of %s (%s); rejects/ and the report name the file %s",
            len(reasons), path, by_reason, files.get(name, name),
            extra={"console_only": True},  # never to a log file (--log-json): it keeps the pair
        )  # fmt: skip
    if per_file.height > LOG_REJECTED_FILES:
        log.warning(
            "%d more file(s) with rejected records; -v names them all", per_file.height - LOG_REJECTED_FILES
        )


def normalize_finance(
    inputs: Sequence[str | Path] | str | Path,
    *,
    output: str | Path,
    source: str,
    render: Sequence[str] | str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    shard_rows: int = 100_000,
    compression: str = "zstd",
    max_reject_rate: float | None = 0.05,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> RunReport:
    """Normalize SEC filings into a de-duplicated fact table, restatements and checks in ``output``.

    Args:
        inputs: files or folders of one source.
        output: output folder.
        source: ``companyfacts``, ``fsds`` or ``xbrl``.
        render: ``text`` (company period summaries, stage 3) and/or ``instruct`` (grounded Q/A, stage 2).
        seed: chooses the instruction questions.
        overwrite: replace an existing dataforge output folder.
        shard_rows: rows per output shard.
        compression: ``zstd``, ``lz4`` or ``none``.
        max_reject_rate: above this share of rejected input records the run fails after writing.
        executor: where the files are read: ``local`` or ``ray``; the rest runs in this process.
            The output bytes are the same whichever runs; ``report.json`` records which did.
        workers: parallel workers (processes, or the CPUs of a Ray started for the run).
        ray_address: the Ray cluster to join (``ray`` only; default ``$RAY_ADDRESS``, else a Ray
            started for the run).

    Returns:
        The run report (also written to ``output/report.json``).
    """
    from dataforge.records.finance.facts import normalize_facts
    from dataforge.records.finance.render import render_instruct, render_text

    kinds = _render_kinds(render)
    read = _reader(FINANCE_SOURCES, source, "finance")
    paths = _paths(inputs)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with contextlib.closing(make_executor(executor, workers=workers, address=ray_address)) as ex:
        extract = _read(source, read, paths, ex)
    timings["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    extract = normalize_facts(extract)
    timings["facts"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = render_text(extract.tables) if "text" in kinds else None
    instruct = render_instruct(extract.tables, seed=seed) if "instruct" in kinds else None
    timings["render"] = time.perf_counter() - t0
    counters: dict[str, Any] = dict(extract.counters)
    for name, frame in extract.tables.items():
        counters[f"rows:{name}"] = frame.height
    for kind, frame in (("text", text), ("instruct", instruct)):
        if frame is not None:
            counters[f"rendered:{kind}"] = frame.height
    config = {"command": "normalize finance", "source": source, "render": list(kinds), "seed": seed}
    run = RecordsRun(
        name="normalize-finance",
        domain="finance",
        extract=extract,
        tables={name: (frame, f"fin.{name}.v1") for name, frame in extract.tables.items()},
        text=text,
        instruct=instruct,
        config=config,
        manifest_extra={"source": source},
        counters=counters,  # type: ignore[arg-type]
        timings=timings,
        max_reject_rate=max_reject_rate,
        executor=ex.name,
        workers=ex.workers,
    )
    return write_records(run, output, overwrite=overwrite, shard_rows=shard_rows, compression=compression)
