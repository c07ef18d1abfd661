"""The Python API: one function per CLI command.

Example:
    >>> import dataforge
    >>> report = dataforge.clean(["sample_data/pretraining"], output="out/clean")  # doctest: +SKIP
    >>> report.rows_in == report.kept + report.dropped + report.rejected  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataforge.config import (
    DEFAULT_MAX_REJECT_RATE,
    DEFAULT_SHARD_BYTES,
    DEFAULT_SHARD_ROWS,
    ExecutorSpec,
    OutputSpec,
    Pipeline,
    load_pipeline,
    parse_steps,
    read_yaml,
)
from dataforge.errors import ConfigError, choices
from dataforge.io.inputs import DEFAULT_TASK_BYTES, InputSpec
from dataforge.registry import build_step
from dataforge.report import RunReport
from dataforge.runner import Progress, run_pipeline
from dataforge.step import Step

PRESET_NAMES = ("gopher", "c4", "fineweb", "none")
PII_MODES = ("redact", "detect", "off")


def clean_steps(
    *,
    preset: str = "gopher",
    pii: str = "redact",
    lang: Sequence[str] | str | None = None,
    lang_min_score: float = 0.65,
    dedup: bool = True,
    options: dict[str, dict[str, Any]] | None = None,
) -> list[Step]:
    """The steps ``dataforge clean`` runs: normalize, [language], preset filters, PII, exact dedup.

    Args:
        preset: quality filters: ``gopher`` (quality + repetition), ``c4``, ``fineweb`` or ``none``.
        pii: ``redact`` (default), ``detect`` (count only) or ``off``.
        lang: keep only these languages (ISO 639-1, e.g. ``"en"``); None skips language ID.
        lang_min_score: minimum language probability when ``lang`` is given.
        dedup: drop exact duplicates across all inputs.
        options: per-step option overrides, e.g. ``{"filter.gopher_quality": {"min_doc_words": 20}}``.
    """
    from dataforge.text.quality import PRESETS

    if preset not in PRESETS:
        msg = f"unknown preset {preset!r}; valid: {choices(PRESETS)}"
        raise ConfigError(msg)
    if pii not in PII_MODES:
        msg = f"unknown --pii mode {pii!r}; valid: {choices(PII_MODES)}"
        raise ConfigError(msg)
    plan: list[tuple[str, dict[str, Any]]] = [("normalize.text", {})]
    if lang:
        langs = (lang,) if isinstance(lang, str) else tuple(lang)
        plan.append(("filter.lang", {"languages": langs, "min_score": lang_min_score}))
    plan += [(name, dict(kw)) for name, kw in PRESETS[preset]]
    if pii != "off":
        plan.append(("pii.redact", {"mode": pii}))
    if dedup:
        plan.append(("dedup.exact", {}))
    options = options or {}
    names = [n for n, _ in plan]
    unknown = sorted(set(options) - set(names))
    if unknown:
        msg = f"options given for step {unknown[0]!r}, which this clean run does not use; steps: {', '.join(names)}"
        raise ConfigError(msg)
    return [build_step(name, {**kw, **(options.get(name) or {})}) for name, kw in plan]


def clean(
    inputs: Sequence[str | Path] | str | Path,
    *,
    output: str | Path,
    preset: str = "gopher",
    pii: str = "redact",
    lang: Sequence[str] | str | None = None,
    lang_min_score: float = 0.65,
    dedup: bool = True,
    text_field: str = "text",
    id_field: str = "id",
    format: str | None = None,
    csv_delimiter: str | None = None,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    task_bytes: int = DEFAULT_TASK_BYTES,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    shard_bytes: int | None = DEFAULT_SHARD_BYTES,
    output_format: str = "arrow",
    compression: str = "zstd",
    keep_dropped: bool = True,
    max_reject_rate: float | None = DEFAULT_MAX_REJECT_RATE,
    config: str | Path | None = None,
    overwrite: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Clean documents: normalize text, filter by quality, redact PII, drop exact duplicates.

    Args:
        inputs: files, folders or globs (JSONL, Parquet, CSV, Arrow; plain, .gz or .zst).
        output: output folder (``data/``, ``dropped/``, ``rejects/``, ``manifest.json``, ``report.json``).
        preset: ``gopher``, ``c4``, ``fineweb`` or ``none``.
        pii: ``redact``, ``detect`` or ``off``.
        lang: keep only these languages; None skips language identification.
        csv_delimiter: the delimiter of CSV inputs (one character; default ``,``, tab for ``.tsv``).
        config: a YAML file whose ``steps:`` replace the built steps, and/or whose ``options:``
            (``{step: {option: value}}``) override step options.
        executor, workers, ray_address: where to run (never changes the output bytes).
        task_bytes: the most input (bytes on disk) one task reads; bigger files are split (never
            changes the output bytes; see :func:`dataforge.io.inputs.plan_tasks`).
        shard_rows, shard_bytes: the most rows and uncompressed bytes per output shard
            (``shard_bytes=None``: rows only); see :class:`dataforge.config.OutputSpec`.
        Other arguments: see ``dataforge clean --help``.

    Returns:
        The RunReport: ``rows_in == kept + dropped + rejected``.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    extra: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] | None = None
    steps: list[Step] | None = None
    if config is not None:
        data = read_yaml(config)
        allowed = {"steps", "options", "max_reject_rate", "batch_rows", "name", "description"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            msg = f"{config}: unknown key {unknown[0]!r} for clean --config; valid: {choices(allowed)}"
            raise ConfigError(msg)
        if "steps" in data:
            steps = parse_steps(data["steps"])
        options = data.get("options")
        if options is not None and not isinstance(options, dict):
            msg = f"{config}: options must map step names to option mappings"
            raise ConfigError(msg)
        extra = {k: data[k] for k in ("max_reject_rate", "batch_rows") if k in data}
    if steps is None:
        steps = clean_steps(
            preset=preset, pii=pii, lang=lang, lang_min_score=lang_min_score, dedup=dedup, options=options
        )
    elif options:
        by_name = {s.name: s for s in steps}
        for name in options:
            if name not in by_name:
                msg = f"{config}: options given for step {name!r}, which is not in steps"
                raise ConfigError(msg)
        steps = [build_step(s.name, {**s.options(), **(options.get(s.name) or {})}) for s in steps]
    return _run_documents(
        "clean",
        inputs,
        steps,
        output=output,
        text_field=text_field,
        id_field=id_field,
        format=format,
        csv_delimiter=csv_delimiter,
        shard_rows=shard_rows,
        shard_bytes=shard_bytes,
        output_format=output_format,
        compression=compression,
        keep_dropped=keep_dropped,
        max_reject_rate=extra.get("max_reject_rate", max_reject_rate),
        batch_rows=extra.get("batch_rows", 10_000),
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        task_bytes=task_bytes,
        overwrite=overwrite,
        force=force,
        progress=progress,
    )


def _run_documents(
    name: str,
    inputs: Sequence[str | Path],
    steps: list[Step],
    *,
    output: str | Path,
    text_field: str,
    id_field: str,
    format: str | None,
    csv_delimiter: str | None,
    shard_rows: int,
    shard_bytes: int | None,
    output_format: str,
    compression: str,
    keep_dropped: bool,
    max_reject_rate: float | None,
    executor: str,
    workers: int,
    ray_address: str | None,
    overwrite: bool,
    force: bool,
    progress: Progress | None,
    batch_rows: int = 10_000,
    task_bytes: int = DEFAULT_TASK_BYTES,
) -> RunReport:
    """Build the pipeline the document commands share (input, output, executor) and run it."""
    pipeline = Pipeline(
        name=name,
        input=InputSpec(
            paths=tuple(str(p) for p in inputs),
            format=format,
            text_field=text_field,
            id_field=id_field,
            csv_delimiter=csv_delimiter,
            task_bytes=task_bytes,
        ),
        output=OutputSpec(
            path=str(output),
            format=output_format,
            compression=compression,
            shard_rows=shard_rows,
            shard_bytes=shard_bytes,
            keep_dropped=keep_dropped,
        ),
        steps=steps,
        executor=ExecutorSpec(kind=executor, workers=workers, address=ray_address),
        max_reject_rate=max_reject_rate,
        batch_rows=batch_rows,
    )
    return run_pipeline(pipeline, overwrite=overwrite, force=force, progress=progress)


def dedup(
    inputs: Sequence[str | Path] | str | Path,
    *,
    output: str | Path,
    threshold: float = 0.8,
    num_perm: int = 128,
    bands: int | None = None,
    rows: int | None = None,
    shingle: str = "word:5",
    normalize: bool = True,
    hash: str = "xxh3",
    seed: int = 1,
    keep: str = "first",
    date_field: str = "date",
    date_format: str | None = None,
    verify: str = "exact",
    against: Sequence[str | Path] = (),
    exact_first: bool = False,
    report_clusters: bool = False,
    text_field: str = "text",
    id_field: str = "id",
    format: str | None = None,
    csv_delimiter: str | None = None,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    task_bytes: int = DEFAULT_TASK_BYTES,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    shard_bytes: int | None = DEFAULT_SHARD_BYTES,
    output_format: str = "arrow",
    compression: str = "zstd",
    keep_dropped: bool = True,
    max_reject_rate: float | None = DEFAULT_MAX_REJECT_RATE,
    overwrite: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Remove near-duplicates with MinHash LSH; every kept row gets ``cluster_id`` and ``cluster_size``.

    Args:
        inputs: files, folders or globs (JSONL, Parquet, CSV, Arrow; plain, .gz or .zst).
        output: output folder.
        threshold: Jaccard similarity of shingle sets that makes two documents duplicates.
        num_perm, bands, rows, shingle, normalize, hash, seed: see ``dedup.minhash``.
        keep: which document of a cluster survives (``first``, ``longest``, ``oldest``, ``field:NAME``...).
        date_field, date_format: the metadata field (and strptime format) ``oldest``/``newest`` use.
        verify: ``exact`` (default), ``estimate`` or ``none``.
        against: reference files whose near-duplicates are removed from the input.
        exact_first: run ``dedup.exact`` before MinHash (cheap, and removes exact copies first).
        report_clusters: also write ``clusters/`` and ``cluster_pairs/`` for inspection.
        Other arguments: see :func:`clean`.

    Returns:
        The RunReport; ``report.global_info["dedup.minhash"]`` holds the LSH S-curve and pair counts.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    minhash = build_step(
        "dedup.minhash",
        {
            "threshold": threshold,
            "num_perm": num_perm,
            "bands": bands,
            "rows": rows,
            "shingle": shingle,
            "normalize": normalize,
            "hash": hash,
            "seed": seed,
            "keep": keep,
            "date_field": date_field,
            "date_format": date_format,
            "verify": verify,
            "against": tuple(str(a) for a in against),
            "report_clusters": report_clusters,
        },
    )
    steps = ([build_step("dedup.exact")] if exact_first else []) + [minhash]
    return _run_documents(
        "dedup",
        inputs,
        steps,
        output=output,
        text_field=text_field,
        id_field=id_field,
        format=format,
        csv_delimiter=csv_delimiter,
        shard_rows=shard_rows,
        shard_bytes=shard_bytes,
        output_format=output_format,
        compression=compression,
        keep_dropped=keep_dropped,
        max_reject_rate=max_reject_rate,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        task_bytes=task_bytes,
        overwrite=overwrite,
        force=force,
        progress=progress,
    )


_NOISE_PATH_KEYS = ("output", "fixed_out")


def noise_yaml_options(
    path: str | Path, raw: dict[str, Any] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Validate a ``noise_report:`` pipeline file: (inputs, keyword options), paths resolved."""
    import inspect as _inspect

    from dataforge.config import _check_keys, _resolve, read_yaml
    from dataforge.noise.analyze import noise_report

    raw = read_yaml(path) if raw is None else raw
    _check_keys("the pipeline", raw, {"name", "description", "noise_report"})
    opts = dict(raw.get("noise_report") or {})
    valid = {
        n for n, prm in _inspect.signature(noise_report).parameters.items() if prm.kind is prm.KEYWORD_ONLY
    }
    _check_keys("noise_report", opts, valid | {"inputs"})
    base = Path(path).parent
    inputs = opts.pop("inputs", None)
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not isinstance(inputs, list):
        msg = "noise_report.inputs must be a non-empty list of files, folders or globs"
        raise ConfigError(msg)
    for key in _NOISE_PATH_KEYS:
        if opts.get(key) is not None:
            opts[key] = _resolve(str(opts[key]), base)
    if isinstance(opts.get("pred_probs"), str) and opts["pred_probs"].endswith(".npy"):
        opts["pred_probs"] = _resolve(opts["pred_probs"], base)
    return [_resolve(str(i), base) for i in inputs], opts


def run_noise_yaml(
    path: str | Path,
    raw: dict[str, Any] | None = None,
    *,
    output: str | Path | None = None,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    overwrite: bool = False,
) -> Any:
    """Run a ``noise_report:`` pipeline file (see pipelines/noise.yaml); paths are relative to it."""
    from dataforge.noise.analyze import noise_report

    inputs, opts = noise_yaml_options(path, raw)
    if "output" not in opts and output is None:
        msg = "noise_report.output is required"
        raise ConfigError(msg)
    if output is not None:
        declared = opts.get("output")
        opts["output"] = str(output)
        if opts.get("fixed_out") is not None:
            # the fixed shards were inside the declared output: move them along into the new one
            from dataforge.config import check_write_path

            if declared is not None:
                rel = os.path.relpath(os.path.realpath(opts["fixed_out"]), os.path.realpath(declared))
                if not rel.startswith(".."):
                    opts["fixed_out"] = os.path.normpath(os.path.join(str(output), rel))
            check_write_path("noise_report.fixed_out", str(opts["fixed_out"]), str(output))
    for key, value in (("executor", executor), ("workers", workers), ("ray_address", ray_address)):
        if value is not None:
            opts[key] = value
    if overwrite:
        opts["overwrite"] = True
    return noise_report(inputs, **opts)


_NORMALIZE_DOMAINS = ("ehr", "finance")


def normalize_yaml_options(
    path: str | Path, raw: dict[str, Any] | None = None
) -> tuple[str, list[str], dict[str, Any]]:
    """Validate a ``normalize:`` pipeline file: (domain, inputs, keyword options), paths resolved.

    The ``normalize`` mapping holds ``domain`` (``ehr`` or ``finance``), ``inputs`` and the keyword
    arguments of :func:`dataforge.normalize_ehr` / :func:`dataforge.normalize_finance`.
    """
    import inspect as _inspect

    from dataforge.config import _check_keys, _resolve, read_yaml
    from dataforge.records.normalize import normalize_ehr, normalize_finance

    raw = read_yaml(path) if raw is None else raw
    _check_keys("the pipeline", raw, {"name", "description", "normalize"})
    opts = dict(raw.get("normalize") or {})
    domain = opts.pop("domain", None)
    if domain not in _NORMALIZE_DOMAINS:
        msg = f"normalize.domain must be one of {choices(_NORMALIZE_DOMAINS)}, got {domain!r}"
        raise ConfigError(msg)
    fn = normalize_ehr if domain == "ehr" else normalize_finance
    valid = {n for n, prm in _inspect.signature(fn).parameters.items() if prm.kind is prm.KEYWORD_ONLY}
    _check_keys(f"normalize ({domain})", opts, (valid - {"now"}) | {"inputs"})
    base = Path(path).parent
    inputs = opts.pop("inputs", None)
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs or not isinstance(inputs, list):
        msg = "normalize.inputs must be a non-empty list of files or folders"
        raise ConfigError(msg)
    if opts.get("output") is not None:
        opts["output"] = _resolve(str(opts["output"]), base)
    return domain, [_resolve(str(i), base) for i in inputs], opts


def run_normalize_yaml(
    path: str | Path,
    raw: dict[str, Any] | None = None,
    *,
    output: str | Path | None = None,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    overwrite: bool = False,
) -> RunReport:
    """Run a ``normalize:`` pipeline file (see pipelines/ehr.yaml); paths are relative to it.

    ``executor``, ``workers`` and ``ray_address`` override the file's keys of the same names.
    """
    from dataforge.records.normalize import normalize_ehr, normalize_finance

    domain, inputs, opts = normalize_yaml_options(path, raw)
    if output is not None:
        opts["output"] = str(output)
    if "output" not in opts:
        msg = "normalize.output is required"
        raise ConfigError(msg)
    if executor is not None:
        opts["executor"] = executor
        if executor != "ray":
            opts.pop("ray_address", None)
    for key, value in (("workers", workers), ("ray_address", ray_address)):
        if value is not None:
            opts[key] = value
    if overwrite:
        opts["overwrite"] = True
    fn = normalize_ehr if domain == "ehr" else normalize_finance
    return fn(inputs, **opts)


def _declared_output(path: str | Path, raw: dict[str, Any], output: str | Path | None) -> Path | None:
    """The output folder a pipeline file writes (for the run lock), without running anything."""
    from dataforge.config import _resolve

    if output is not None:
        return Path(output)
    base = Path(path).parent
    for key in ("noise_report", "normalize"):
        if key in raw:
            out = (raw.get(key) or {}).get("output")
            return Path(_resolve(str(out), base)) if out else None
    out = raw.get("output")
    if isinstance(out, dict) and out.get("path"):
        return Path(_resolve(str(out["path"]), base))
    return None


def run(
    pipeline: str | Path | Pipeline,
    *,
    output: str | Path | None = None,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    task_bytes: int | None = None,
    overwrite: bool = False,
    force: bool = False,
    incremental: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Run a pipeline YAML file (or a Pipeline object); keyword arguments override its settings.

    The file may be a document pipeline (``input``/``steps``/``output``), a ``noise_report:``,
    ``normalize:`` or curriculum (``stages:``) file; paths in it are relative to the file. Every run
    holds an exclusive lock on its output folder (see :mod:`dataforge.incremental`): a second run of
    the same pipeline while one is going raises RunLockedError (exit code 75). A rerun with the
    same inputs and config does nothing and returns the stored report (``status == "up_to_date"``).

    Args:
        pipeline: a YAML file, or a :class:`Pipeline` built in Python.
        output: write here instead of the file's output folder.
        executor, workers, ray_address: where the tasks run (``local`` or ``ray``); override the
            file's ``executor:`` section and never change the output bytes.
        task_bytes: override the file's ``input.task_bytes`` (document pipelines; the output bytes
            do not depend on it).
        overwrite: replace the output of a different earlier run in the output folder.
        force: run again even if the output is up to date.
        incremental: for document pipelines, add only the input files not yet in the output release
            (deduplicated against it) and write a new release version; nothing to do when no file is
            new. With ``force``, rebuild the release from all inputs.
        progress: receives stage starts and task completions (the CLI's progress bar).

    Returns:
        The RunReport (a NoiseReport for a ``noise_report:`` file), also written to
        ``OUT/report.json``.

    Raises:
        ConfigError, InputError, OutputError: before any work starts (exit code 2).
        DataError: after writing, when more input than ``max_reject_rate`` was malformed (exit code 1).

    Example:
        >>> report = dataforge.run("pipelines/demo.yaml")
        >>> report.status in ("ok", "up_to_date")
        True
        >>> report.rows_in == report.kept + report.dropped + report.rejected
        True
    """
    from dataforge.incremental import run_incremental, run_lock

    if not isinstance(pipeline, Pipeline):
        from dataforge.config import read_yaml

        raw = read_yaml(pipeline)
        kind = next((k for k in ("noise_report", "normalize", "stages") if k in raw), None)
        if kind is not None:
            if incremental or task_bytes is not None:
                flag = "--incremental" if incremental else "--task-bytes"
                msg = f"{flag} applies to document pipelines (input/steps/output files), not to this file"
                raise ConfigError(msg)
            target = _declared_output(pipeline, raw, output)
            with run_lock(target) if target is not None else contextlib.nullcontext():
                if kind == "noise_report":
                    return run_noise_yaml(
                        pipeline, raw, output=output, executor=executor, workers=workers,
                        ray_address=ray_address, overwrite=overwrite or force,
                    )  # fmt: skip
                if kind == "normalize":
                    return run_normalize_yaml(
                        pipeline, raw, output=output, executor=executor, workers=workers,
                        ray_address=ray_address, overwrite=overwrite or force,
                    )  # fmt: skip
                from dataforge.curriculum import build_curriculum

                placement = {"executor": executor, "workers": workers, "ray_address": ray_address}
                return build_curriculum(
                    pipeline, output=output, overwrite=overwrite or force,
                    **{k: v for k, v in placement.items() if v is not None},
                )  # fmt: skip
    p = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    if task_bytes is not None:
        p.input = dataclasses.replace(p.input, task_bytes=task_bytes)
    if output is not None:
        p.output = OutputSpec(**{**p.output.__dict__, "path": str(output)})
    if executor is not None or workers is not None or ray_address is not None:
        kind = executor or p.executor.kind
        keep_address = p.executor.address if kind == "ray" else None
        p.executor = ExecutorSpec(
            kind=kind,
            workers=workers or p.executor.workers,
            address=ray_address if ray_address is not None else keep_address,
        )
    # the input first: a missing or unreadable input path fails before the lock (and the output's
    # parent folder it would create) exists
    from dataforge.io.inputs import discover

    discover(p.input)
    with run_lock(p.output.path):
        if incremental:
            return run_incremental(p, progress=progress, force_full=force)
        return run_pipeline(p, overwrite=overwrite, force=force, progress=progress)
