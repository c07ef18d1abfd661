"""Curriculum builds: stage-tagged training shards mixed from the outputs of other dataforge commands.

A curriculum YAML names the stages of a training run (1 general pretraining text, 2 instruction
pairs, 3 domain adaptation, ...). Each stage lists its sources (output folders of ``dataforge run``,
``clean``, ``noise-report --fixed-out``, ``normalize ehr|finance``), their mixture weights, an
optional budget and quality requirements::

    name: demo-curriculum
    seed: 0
    output: {path: ../out/demo-curriculum, shard_rows: 100000}
    stages:
      - stage: 1
        name: pretraining
        budget: {tokens: 1000000}
        sources:
          - {name: web, path: ../out/demo, weight: 0.75, where: "cluster_size = 1",
             require_steps: [dedup.exact, dedup.minhash]}
          - {name: newsgroups, path: ../out/demo-noise/fixed, weight: 0.25,
             where: "label_issue = false", require_kind: labelled}
      - stage: 2
        name: instructions
        budget: {rows: 400}
        sources:
          - {name: ehr_qa, path: ../out/demo-ehr, part: instruct, weight: 0.1, repeat: true}
          - {name: finance_qa, path: ../out/demo-finance, part: instruct, weight: 0.9}

``docs/curriculum.md`` is the contract for the output (layout, schemas, manifest fields) shared
with the loader in ``dataforge.train``. Decisions made here:

- **Validation happens at load time.** :func:`load_curriculum` reads every source's
  ``manifest.json`` (small JSON) and the Arrow schema of its first shard, so a wrong ``part``, a
  missing ``require_steps`` step, a ``where`` that names an unknown column or is not boolean, or a
  stage that mixes documents with instruction pairs is a ConfigError before any data is read.
  A stage's kind (documents or instruction pairs) is inferred from its sources' columns:
  ``prompt`` + ``response`` means instruction pairs, otherwise the ``text_field`` column must exist.
- **Selection.** Per source: the rows passing ``where`` ("filtered rows") are put in a seeded
  permutation and the first ``target`` rows are taken; with ``repeat: true`` and a target above the
  filtered rows, further permutations (new seeds) follow, so every row appears either ``k`` or
  ``k + 1`` times (cycling without replacement). A row budget is split over the sources by largest
  remainder on the weights. A token budget is split the same way into per-source token targets;
  ``target_rows`` is then the estimate ``target_tokens / mean tokens per filtered row``, and the
  selection walks the permutation and stops before the first row that would exceed the source's
  token target (no skipping ahead to shorter rows, which would bias towards short documents), so
  a stage never exceeds its token budget. Without a budget the stage takes everything available
  at the given weights: the largest total that no non-repeating source runs out of.
  All chosen rows of a stage are then interleaved by one seeded permutation.
- **Permutations are SplitMix64 sort keys**, not numpy's RNG: ``argsort(mix64(i ^ mix64(seed)))``
  is a bijection of the row index, so the order cannot change with a numpy upgrade. Seeds are
  derived from the curriculum seed by sha256 (stage seeds are 31-bit so every JSON reader keeps
  them exact); the stage seed, the source name and the cycle number seed a source's permutations.
- **Determinism.** Same config + same source bytes -> byte-identical shards and manifest. The
  manifest holds no times and not the output path (so ``-o`` does not change it); times, the
  output path and peak memory go to ``report.json`` only.
- **Accounting.** The run's ledger counts rows of every (stage, source) part: ``rows_in`` = rows of
  the part; ``curriculum.where`` drops ``filtered``, ``curriculum.select`` drops ``over_budget``
  (filtered rows not selected); ``kept`` = distinct source rows written. Rows written more than
  once (``repeat``) are counted separately (``repeated_rows``), so ``rows written = kept +
  repeated``. :meth:`Ledger.check` is run before anything is renamed into place.
- **Integrity.** Every source shard's size and sha256 are checked against the source's manifest
  before it is used (DataError naming the shard), and the sha256 of the source's ``manifest.json``
  is recorded in the lineage.
- **Memory (limitation).** Each source part is read with pyarrow (memory-mapped IPC, zstd blocks
  are decompressed into memory) and rows are selected with ``Table.take``; only the columns named
  by ``where`` and the training text are converted, batch by batch (polars for the filter, Python
  strings for token counts). In one process a part must therefore fit in memory once
  decompressed; on an executor a task holds one source shard, and the driver one stage's output.
- **Executors.** With one local worker everything runs in this process, stage by stage, as above.
  With more workers or ``executor="ray"`` the reading runs as tasks whose unit is one source shard
  (a manifest entry of the part), in two maps:

  1. *scan* (one map for the whole curriculum): a task verifies its shard against the source
     manifest, reads it, evaluates ``where`` and counts the tokens of the passing rows, for every
     source that selects from that shard (sources with the same filter share the result); it
     returns row indices and token counts, not rows. The driver puts each part's shards together
     (indices offset by the rows of the shards before), which gives exactly the arrays one read of
     the whole part gives, because ``where`` and token counts are per row. A ``where`` whose value
     for a row may depend on other rows (an aggregate such as ``AVG(score)``, a window, a row
     number; anything :func:`is_row_condition` does not know to be per row) is evaluated over the
     whole part: the part's shards are then one task.
  2. *take* (one map per stage): after the driver's selection, a task reads one source shard
     again and returns its chosen rows as stage rows (renamed, tagged, conformed to the stage
     schema), in stage order.

  Everything that depends on several sources stays in the driver: budgets split over sources,
  seeded permutations, repeats, the interleave, the ledger, shard boundaries and ``manifest.json``.
  The driver writes each output shard from the pieces of the take tasks, in stage order, as
  before (temporary names inside the run's ``.OUT.partial-*`` folder, renamed into place with the
  manifest last), and shards are written from their rows alone, so the bytes do not depend on the
  executor or the number of workers; ``report.json`` records which ran. The tokenizer is shipped
  to the tasks, so it must pickle (as :class:`~dataforge.train.tokenizer.ByteTokenizer` does).

Example:
    >>> from dataforge.curriculum import build_curriculum
    >>> build_curriculum("pipelines/curriculum.yaml", output="out/curriculum")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

import dataforge
from dataforge.config import ExecutorSpec, _check_keys, _resolve, executor_spec, read_yaml
from dataforge.errors import ConfigError, DataError, InputError, OutputError, choices
from dataforge.executors.base import Executor, make_executor
from dataforge.html import write_report_or_log
from dataforge.io.shards import (
    MANIFEST,
    arrow_indices,
    atomic_folder,
    check_replaceable,
    read_manifest,
    read_shard,
    sha256_file,
    write_bytes_atomic,
    write_json_atomic,
    write_shard,
)
from dataforge.ledger import Ledger, StepCounts
from dataforge.report import REPORT_JSON, REPORT_MD, RunReport, peak_rss_mb
from dataforge.runner import fingerprint
from dataforge.schemas import conform, extend, load_schema, schema_to_json
from dataforge.train.tokenizer import ByteTokenizer, tokenizer_spec, training_text

log = logging.getLogger(__name__)

DEFAULT_SHARD_ROWS = 100_000
KIND = "curriculum"
SOURCE_KINDS = ("documents", "labelled", "records")
ROW_KINDS = ("document", "instruction")
BASE_SCHEMAS = {"document": "document.v1", "instruction": "instruction.v1"}
STAGE_SCHEMAS = {"document": "stage_document.v1", "instruction": "stage_instruction.v1"}
BUDGET_KEYS = ("rows", "tokens")
ADDED_COLUMNS = ("stage", "source", "tokens")
TOKEN_BATCH_ROWS = 8192

_TOP_KEYS = {"name", "description", "seed", "output", "stages", "executor"}
_OUTPUT_KEYS = {"path", "shard_rows"}
_STAGE_KEYS = {"stage", "name", "description", "budget", "sources"}
_SOURCE_KEYS = {
    "name",
    "path",
    "part",
    "weight",
    "where",
    "require_steps",
    "require_kind",
    "repeat",
    "text_field",
    "allow_failed",
}


def stage_schema(kind: str) -> pa.Schema:
    """The declared schema of a stage holding ``document`` or ``instruction`` rows."""
    name = STAGE_SCHEMAS[kind]
    return extend(load_schema(BASE_SCHEMAS[kind]), list(load_schema(name)), name=name)


# --------------------------------------------------------------------------- the spec


@dataclass(kw_only=True)
class SourceSpec:
    """One source of a stage: a part of a dataforge output folder, its weight and requirements.

    The fields after ``text_field`` are read from the source folder by :func:`load_curriculum`.
    """

    name: str
    path: str
    part: str
    weight: float = 1.0
    where: str | None = None
    require_steps: list[str] = field(default_factory=list)
    require_kind: str | None = None
    repeat: bool = False
    text_field: str = "text"
    allow_failed: bool = False  # use an output whose run failed on its input (status not ok)
    # resolved from the source folder
    kind: str = "document"  # document | instruction (what its rows are)
    source_kind: str = ""  # the source manifest's kind: documents | labelled | records
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)
    manifest_sha256: str = ""
    shards: list[dict[str, Any]] = field(default_factory=list, repr=False)
    schema: pa.Schema | None = field(default=None, repr=False)
    run_status: str | None = None  # the source run's report.json status

    def config(self) -> dict[str, Any]:
        """The source as configured (what the manifest's ``config`` records)."""
        cfg: dict[str, Any] = {
            "name": self.name,
            "path": self.path,
            "part": self.part,
            "weight": self.weight,
            "where": self.where,
            "require_steps": list(self.require_steps),
            "require_kind": self.require_kind,
            "repeat": self.repeat,
            "text_field": self.text_field,
        }
        if self.allow_failed:  # only when set: configs from before the key keep their fingerprint
            cfg["allow_failed"] = True
        return cfg

    def lineage(self) -> dict[str, Any]:
        """Which run and config produced this source (from its manifest)."""
        m = self.manifest
        cfg = m.get("config") or {}
        lineage: dict[str, Any] = {
            "manifest_sha256": self.manifest_sha256,
            "name": m.get("name"),
            "kind": m.get("kind"),
            "config_fingerprint": m.get("config_fingerprint") or fingerprint(cfg),
            "dataforge_version": m.get("dataforge_version"),
            "steps": step_names(m),
            "inputs": [i.get("path") for i in m.get("inputs", []) if isinstance(i, dict)],
        }
        if cfg.get("command"):
            lineage["command"] = cfg["command"]
        if self.run_status is not None:
            lineage["run_status"] = self.run_status
        return lineage


@dataclass(kw_only=True)
class StageSpec:
    """One stage: its number, name, budget and sources (all of one row kind)."""

    stage: int
    name: str
    sources: list[SourceSpec]
    budget: dict[str, int] | None = None
    description: str = ""
    kind: str = "document"

    @property
    def schema_name(self) -> str:
        return STAGE_SCHEMAS[self.kind]

    def schema(self) -> pa.Schema:
        return stage_schema(self.kind)

    def config(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "name": self.name,
            "description": self.description,
            "budget": dict(self.budget) if self.budget else None,
            "sources": [s.config() for s in self.sources],
        }


@dataclass(kw_only=True)
class CurriculumSpec:
    """A loaded, validated curriculum: stages in stage order, the seed and the output."""

    name: str
    stages: list[StageSpec]
    seed: int = 0
    output: str | None = None
    shard_rows: int = DEFAULT_SHARD_ROWS
    description: str = ""
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)

    def config(self, *, shard_rows: int | None = None) -> dict[str, Any]:
        """What the manifest records as ``config``: the YAML as loaded, paths resolved, without the
        output path and the executor (neither changes the shards)."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "output": {"shard_rows": shard_rows or self.shard_rows},
            "stages": [s.config() for s in self.stages],
        }

    def stage_seed(self, stage: int) -> int:
        """The seed of stage ``stage``, derived from the curriculum seed (31 bits)."""
        return _derive("dataforge.curriculum", self.seed, "stage", stage) & 0x7FFF_FFFF


# --------------------------------------------------------------------------- loading


def load_curriculum(path: str | Path) -> CurriculumSpec:
    """Load and validate a curriculum YAML (paths relative to the file's folder).

    Raises:
        ConfigError: unknown keys, bad values, a source that lacks a required step or kind, a bad
            ``where``, a stage mixing documents with instruction pairs.
        InputError: a source folder that does not exist or holds no dataforge output.
    """
    data = read_yaml(path)
    return curriculum_from_dict(data, base_dir=Path(path).parent, name=Path(path).stem)


def curriculum_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, name: str = "curriculum"
) -> CurriculumSpec:
    """Build a CurriculumSpec from a parsed YAML mapping (see :func:`load_curriculum`)."""
    _check_keys("the curriculum", data, _TOP_KEYS)
    seed = _int("seed", data.get("seed", 0), minimum=0)
    output, shard_rows = _output(data.get("output"), base_dir)
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        msg = "the curriculum needs 'stages': a non-empty list of stages (each with stage, sources)"
        raise ConfigError(msg)
    stages = [_stage(raw, i, base_dir) for i, raw in enumerate(raw_stages, start=1)]
    executor = executor_spec(data.get("executor"))
    numbers = [s.stage for s in stages]
    for n in numbers:
        if numbers.count(n) > 1:
            msg = f"stage {n} appears {numbers.count(n)} times; stage numbers must be unique"
            raise ConfigError(msg)
    return CurriculumSpec(
        name=_str("name", data.get("name") or name),
        description=_str("description", data.get("description") or ""),
        seed=seed,
        output=output,
        shard_rows=shard_rows,
        stages=sorted(stages, key=lambda s: s.stage),
        executor=executor,
    )


def _output(raw: Any, base_dir: Path | None) -> tuple[str | None, int]:
    if raw is None:
        return None, DEFAULT_SHARD_ROWS
    if isinstance(raw, str):
        raw = {"path": raw}
    _check_keys("output", raw, _OUTPUT_KEYS)
    path = raw.get("path")
    if path is not None:
        path = _resolve(_str("output.path", path), base_dir)
    return path, _int("output.shard_rows", raw.get("shard_rows", DEFAULT_SHARD_ROWS), minimum=1)


def _stage(raw: Any, index: int, base_dir: Path | None) -> StageSpec:
    _check_keys(f"stage #{index}", raw, _STAGE_KEYS)
    if "stage" not in raw:
        msg = f"stage #{index} has no 'stage' number (1 pretraining, 2 instructions, 3 domain, ...)"
        raise ConfigError(msg)
    n = _int(f"stage #{index}: stage", raw["stage"], minimum=1)
    where = f"stage {n}"
    budget = _budget(where, raw.get("budget"))
    raw_sources = raw.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        msg = f"{where} needs 'sources': a non-empty list of sources (each with name, path)"
        raise ConfigError(msg)
    sources = [_source(s, where, i, base_dir) for i, s in enumerate(raw_sources, start=1)]
    names = [s.name for s in sources]
    for s in names:
        if names.count(s) > 1:
            msg = f"{where}: source name {s!r} appears {names.count(s)} times; names must be unique"
            raise ConfigError(msg)
    first = sources[0]
    for s in sources[1:]:
        if s.kind != first.kind:
            msg = (
                f"{where}: source {s.name!r} holds {_kind_label(s.kind)} but source {first.name!r} "
                f"holds {_kind_label(first.kind)}; a stage holds one kind "
                f"(documents -> {STAGE_SCHEMAS['document']}, instruction pairs -> "
                f"{STAGE_SCHEMAS['instruction']})"
            )
            raise ConfigError(msg)
    return StageSpec(
        stage=n,
        name=_str(f"{where}: name", raw.get("name") or f"stage-{n}"),
        description=_str(f"{where}: description", raw.get("description") or ""),
        budget=budget,
        sources=sources,
        kind=first.kind,
    )


def _budget(where: str, raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        msg = (
            f"{where}: budget must be {{rows: N}} or {{tokens: N}} (or omitted: take everything), got {raw!r}"
        )
        raise ConfigError(msg)
    key, value = next(iter(raw.items()))
    if key not in BUDGET_KEYS:
        msg = f"{where}: unknown budget {key!r}; valid: {choices(BUDGET_KEYS)}"
        raise ConfigError(msg)
    return {key: _int(f"{where}: budget.{key}", value, minimum=1)}


def _source(raw: Any, where: str, index: int, base_dir: Path | None) -> SourceSpec:
    if isinstance(raw, dict) and "name" in raw:
        where_src = f"{where}: source {raw['name']!r}"
    else:
        where_src = f"{where}: source #{index}"
    _check_keys(where_src, raw, _SOURCE_KEYS)
    for key in ("name", "path"):
        if key not in raw:
            msg = f"{where_src} has no {key!r}"
            raise ConfigError(msg)
    name = _str(f"{where_src}: name", raw["name"])
    if not name:
        msg = f"{where_src}: name must be a non-empty string"
        raise ConfigError(msg)
    weight = raw.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight <= 0
    ):
        msg = f"{where_src}: weight must be a positive number, got {weight!r}"
        raise ConfigError(msg)
    steps = raw.get("require_steps") or []
    if isinstance(steps, str):
        steps = [steps]
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        msg = f"{where_src}: require_steps must be a list of step names, got {steps!r}"
        raise ConfigError(msg)
    require_kind = raw.get("require_kind")
    if require_kind is not None and require_kind not in SOURCE_KINDS:
        msg = f"{where_src}: unknown require_kind {require_kind!r}; valid: {choices(SOURCE_KINDS)}"
        raise ConfigError(msg)
    repeat = raw.get("repeat", False)
    if not isinstance(repeat, bool):
        msg = f"{where_src}: repeat must be true or false, got {repeat!r}"
        raise ConfigError(msg)
    cond = raw.get("where")
    if cond is not None and (not isinstance(cond, str) or not cond.strip()):
        msg = f"{where_src}: where must be a non-empty SQL expression string, got {cond!r}"
        raise ConfigError(msg)
    text_field = _str(f"{where_src}: text_field", raw.get("text_field", "text"))
    allow_failed = raw.get("allow_failed", False)
    if not isinstance(allow_failed, bool):
        msg = f"{where_src}: allow_failed must be true or false, got {allow_failed!r}"
        raise ConfigError(msg)
    src = SourceSpec(
        name=name,
        path=_resolve(_str(f"{where_src}: path", raw["path"]), base_dir),
        part=_str(f"{where_src}: part", raw["part"]) if raw.get("part") is not None else "",
        weight=float(weight),
        where=cond,
        require_steps=list(steps),
        require_kind=require_kind,
        repeat=repeat,
        text_field=text_field,
        allow_failed=allow_failed,
    )
    _open_source(src, where_src, text_field_given="text_field" in raw)
    return src


def _run_status(folder: Path) -> str | None:
    """The ``status`` of the run that wrote ``folder`` (its report.json), None when unknown."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    status = report.get("status") if isinstance(report, dict) else None
    return status if isinstance(status, str) else None


def _open_source(src: SourceSpec, where: str, *, text_field_given: bool) -> None:
    """Read the source's manifest and schema; check kind, part, steps, columns and ``where``."""
    folder = Path(src.path)
    if not folder.is_dir():
        msg = f"{where}: path {src.path!r} is not a folder (expected a dataforge output folder)"
        raise InputError(msg)
    if not (folder / MANIFEST).is_file():
        msg = f"{where}: {src.path!r} has no {MANIFEST} (not a dataforge output, or its run did not finish)"
        raise InputError(msg)
    manifest_bytes = (folder / MANIFEST).read_bytes()
    manifest = read_manifest(folder)
    src.manifest = manifest
    src.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
    src.run_status = _run_status(folder)
    if src.run_status not in (None, "ok", "up_to_date") and not src.allow_failed:
        msg = (
            f"{where}: {src.path!r} is the output of a run that failed on its input (status "
            f"{src.run_status}; see its report.md): rerun it on clean input, or set allow_failed: true "
            "on this source to use it anyway (the lineage records the status)"
        )
        raise InputError(msg)
    kind = manifest.get("kind")
    src.source_kind = str(kind)
    if kind not in SOURCE_KINDS:
        msg = f"{where}: {src.path!r} is a {kind!r} output; valid source kinds: {choices(SOURCE_KINDS)}"
        raise ConfigError(msg)
    if src.require_kind and kind != src.require_kind:
        msg = f"{where}: require_kind is {src.require_kind!r} but {src.path!r} is a {kind!r} output"
        raise ConfigError(msg)
    if kind == "records":
        parts = manifest.get("stages") or {}
        if not src.part:
            msg = (
                f"{where}: {src.path!r} is a records output; set part to one of: "
                f"{choices(parts) or '(none: it was normalized without --render)'}"
            )
            raise ConfigError(msg)
        if src.part not in parts:
            msg = f"{where}: unknown part {src.part!r} of records output {src.path!r}; valid: {choices(parts) or '(none)'}"
            raise ConfigError(msg)
        src.shards = list(parts[src.part].get("shards", []))
    else:
        src.part = src.part or "data"
        if src.part != "data":
            msg = f"{where}: unknown part {src.part!r} of {kind} output {src.path!r}; valid: data"
            raise ConfigError(msg)
        src.shards = list(manifest.get("shards", []))
    have = step_names(manifest)
    for step in src.require_steps:
        if step not in have:
            msg = (
                f"{where}: require_steps names {step!r}, but {src.path!r} was not produced by it; "
                f"its steps: {', '.join(have) or '(none)'}"
            )
            raise ConfigError(msg)
    src.schema = _part_schema(src)
    columns = list(src.schema.names)
    if "prompt" in columns and "response" in columns:
        if text_field_given:
            msg = f"{where}: text_field applies to document sources; {src.path!r} [{src.part}] holds instruction pairs"
            raise ConfigError(msg)
        src.kind = "instruction"
    elif src.text_field in columns:
        src.kind = "document"
    else:
        msg = (
            f"{where}: {src.path!r} [{src.part}] has no text column {src.text_field!r} and no "
            f"prompt/response columns; columns: {', '.join(columns)} (set text_field)"
        )
        raise ConfigError(msg)
    if src.where:
        _check_where(src, where)


def _part_schema(src: SourceSpec) -> pa.Schema:
    """The Arrow schema of the part's first shard (the manifest's JSON when it has no shards)."""
    if src.shards:
        p = Path(src.path) / src.shards[0]["path"]
        try:
            if p.suffix == ".parquet":
                return pq.read_schema(p)
            with pa.memory_map(str(p)) as f:
                return ipc.open_file(f).schema
        except (pa.ArrowInvalid, OSError) as exc:
            msg = f"source {src.name!r}: cannot read shard {p}: {exc}"
            raise DataError(msg) from None
    m = src.manifest
    spec = m["stages"][src.part]["schema"] if src.source_kind == "records" else m.get("schema", {})
    return pa.schema([pa.field(f["name"], pa.null()) for f in spec.get("fields", [])])


def _check_where(src: SourceSpec, where: str) -> None:
    assert src.schema is not None and src.where
    try:
        expr = pl.sql_expr(src.where)
        cols = list(dict.fromkeys(expr.meta.root_names()))  # a column named twice is read once
    except pl.exceptions.PolarsError as exc:
        msg = f"{where}: where {src.where!r} is not a valid SQL expression: {_first_line(exc)}"
        raise ConfigError(msg) from None
    missing = [c for c in cols if c not in src.schema.names]
    if missing:
        msg = (
            f"{where}: where {src.where!r} names column {missing[0]!r}, which {src.path!r} "
            f"[{src.part}] does not have; columns: {', '.join(src.schema.names)}"
        )
        raise ConfigError(msg)
    if any(pa.types.is_null(src.schema.field(c).type) for c in cols):
        return  # schema from JSON names only (empty part): nothing more to check
    empty = pl.from_arrow(src.schema.empty_table().select(cols)) if cols else pl.DataFrame({"_": [0]})
    try:
        dtype = empty.select(expr).to_series().dtype  # type: ignore[union-attr]
    except pl.exceptions.PolarsError as exc:
        msg = f"{where}: where {src.where!r} cannot be evaluated on {src.path!r}: {_first_line(exc)}"
        raise ConfigError(msg) from None
    if dtype != pl.Boolean:
        msg = f"{where}: where {src.where!r} must be a true/false condition, but it gives {dtype}"
        raise ConfigError(msg)


def step_names(manifest: dict[str, Any]) -> list[str]:
    """Names of the steps in a manifest's ``config.steps`` (``[{name: options}]`` or names)."""
    out = []
    for s in (manifest.get("config") or {}).get("steps") or []:
        if isinstance(s, dict):
            out.extend(str(k) for k in s)
        else:
            out.append(str(s))
    return out


def _kind_label(kind: str) -> str:
    return "instruction pairs" if kind == "instruction" else "documents"


def _int(where: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        msg = f"{where} must be {what}, got {value!r}"
        raise ConfigError(msg)
    return value


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        msg = f"{where} must be a string, got {value!r}"
        raise ConfigError(msg)
    return value


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------- seeds and permutations

_MASK64 = (1 << 64) - 1


def _derive(*parts: Any) -> int:
    """A 64-bit seed from any parts (sha256 of their text)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64 values (a bijection)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def permutation(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` that depends on nothing but ``(n, seed)``."""
    key = _mix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
    return np.argsort(_mix64(np.arange(n, dtype=np.uint64) ^ key), kind="stable")


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights``: floors, then the largest remainders get +1
    (ties to the earlier entry). Exact arithmetic, so the split never depends on float rounding."""
    fw = [Fraction(w) for w in weights]
    whole = sum(fw)
    quotas = [total * w / whole for w in fw]
    floors = [q.numerator // q.denominator for q in quotas]
    order = sorted(range(len(fw)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in order[: total - sum(floors)]:
        floors[i] += 1
    return floors


# --------------------------------------------------------------------------- selection


@dataclass
class _Group:
    """Shards of a source part read by one task (see "Executors" in the module docstring)."""

    folder: str
    shards: tuple[dict[str, Any], ...]  # manifest entries, in part order
    first_row: int = 0  # the part's row index of the group's first row
    rows: int = 0


@dataclass
class _Pool:
    """One source's rows for one stage and what was chosen from them."""

    src: SourceSpec
    available: int  # rows of the part
    eligible: np.ndarray  # row indices passing `where`, ascending
    tokens: np.ndarray  # tokens of each eligible row (aligned with `eligible`)
    table: pa.Table | None = None  # the whole part (read in this process), else None
    groups: list[_Group] = field(default_factory=list)  # the part's read tasks (executor path)
    target_rows: int = 0
    target_tokens: int | None = None
    chosen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # into eligible

    @property
    def unique(self) -> int:
        return int(np.unique(self.chosen).size)


def _read_source_shard(folder: str, entry: dict[str, Any], name: str, *, verify: bool) -> pa.Table:
    """Read one shard of source ``name``; first check its size and sha256 against the manifest's
    ``entry`` when ``verify``."""
    p = Path(folder) / entry["path"]
    if verify:
        if not p.is_file():
            msg = f"source {name!r}: shard {p} is listed in its manifest but missing"
            raise DataError(msg)
        size = p.stat().st_size
        if size != entry["bytes"]:
            msg = f"source {name!r}: shard {p} has {size} bytes, its manifest says {entry['bytes']}"
            raise DataError(msg)
        digest = sha256_file(p)
        if digest != entry["sha256"]:
            msg = (
                f"source {name!r}: shard {p} does not match its manifest (sha256 "
                f"{digest[:12]}..., manifest says {entry['sha256'][:12]}...); rebuild the source"
            )
            raise DataError(msg)
    return read_shard(p)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _read_part(src: SourceSpec, verified: set[tuple[str, str]]) -> pa.Table:
    """Verify the part's shards against the source manifest, then read them (memory-mapped)."""
    tables = []
    for entry in src.shards:
        key = (str(Path(src.path).resolve()), entry["path"])
        tables.append(_read_source_shard(src.path, entry, src.name, verify=key not in verified))
        verified.add(key)
    if not tables:
        assert src.schema is not None
        return src.schema.empty_table()
    return _concat(tables)


def _eligible(table: pa.Table, src: SourceSpec) -> np.ndarray:
    n = table.num_rows
    if not src.where:
        return np.arange(n, dtype=np.int64)
    expr = pl.sql_expr(src.where)
    cols = list(dict.fromkeys(expr.meta.root_names()))
    frame = pl.from_arrow(table.select(cols)) if cols else pl.DataFrame({"_": np.zeros(n)})
    try:
        mask = frame.select(expr.fill_null(False)).to_series()  # type: ignore[union-attr]
    except pl.exceptions.PolarsError as exc:
        msg = f"source {src.name!r}: where {src.where!r} failed on the data: {_first_line(exc)}"
        raise ConfigError(msg) from None
    values = mask.to_numpy().astype(bool)
    if values.size == 1 and n != 1:  # a constant condition
        values = np.full(n, bool(values[0]))
    return np.flatnonzero(values).astype(np.int64)


def _text_view(table: pa.Table, src: SourceSpec) -> pa.Table:
    """Only the columns :func:`training_text` reads, named as it expects."""
    if src.kind == "instruction":
        return table.select([c for c in ("prompt", "response", "context") if c in table.column_names])
    return table.select([src.text_field]).rename_columns(["text"])


def _count_tokens(view: pa.Table, rows: np.ndarray, tokenizer: Any) -> np.ndarray:
    """Tokens of the training text of ``rows`` of ``view``, a batch at a time."""
    counts = []
    for start in range(0, rows.size, TOKEN_BATCH_ROWS):
        texts = training_text(view.take(arrow_indices(rows[start : start + TOKEN_BATCH_ROWS])))
        if hasattr(tokenizer, "count"):
            n = tokenizer.count(texts)
        else:
            n = [len(tokenizer.encode(t)) for t in texts]
        counts.append(np.asarray(n, dtype=np.int64))
    return np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)


def _source_seed(stage_seed: int, name: str, cycle: int) -> int:
    return _derive("source", stage_seed, name, cycle)


def _choose_rows(pool: _Pool, stage_seed: int, target: int) -> np.ndarray:
    """The first ``target`` rows of the source's seeded permutation(s) (positions in eligible)."""
    n = pool.eligible.size
    if n == 0 or target <= 0:
        return np.zeros(0, dtype=np.int64)
    if not pool.src.repeat:
        return permutation(n, _source_seed(stage_seed, pool.src.name, 0))[: min(target, n)]
    parts, left, cycle = [], target, 0
    while left > 0:
        perm = permutation(n, _source_seed(stage_seed, pool.src.name, cycle))
        parts.append(perm[:left])
        left -= min(left, n)
        cycle += 1
    return np.concatenate(parts)


def _choose_tokens(pool: _Pool, stage_seed: int, target_tokens: int) -> np.ndarray:
    """Rows in permutation order until the next one would exceed ``target_tokens``."""
    n = pool.eligible.size
    parts, left, cycle = [], target_tokens, 0
    while n and left > 0:
        perm = permutation(n, _source_seed(stage_seed, pool.src.name, cycle))
        cum = np.cumsum(pool.tokens[perm])
        take = int(np.searchsorted(cum, left, side="right"))
        parts.append(perm[:take])
        if take < n or not pool.src.repeat or cum[-1] <= 0:
            break
        left -= int(cum[-1])
        cycle += 1
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _no_budget_total(pools: list[_Pool]) -> int:
    """The largest stage size at the given weights that no non-repeating source runs out of."""
    whole = sum(Fraction(p.src.weight) for p in pools)
    with_rows = [p for p in pools if p.eligible.size]
    if not with_rows:
        return 0
    limits = [p for p in with_rows if not p.src.repeat]
    if limits:
        return min(math.floor(p.eligible.size * whole / Fraction(p.src.weight)) for p in limits)
    # every source repeats: use each row at least once
    return max(math.ceil(p.eligible.size * whole / Fraction(p.src.weight)) for p in with_rows)


def _read_pools(stage: StageSpec, tokenizer: Any, verified: set[tuple[str, str]]) -> list[_Pool]:
    """Read, filter and count the sources of one stage in this process."""
    pools = []
    for src in stage.sources:
        table = _read_part(src, verified)
        eligible = _eligible(table, src)
        tokens = _count_tokens(_text_view(table, src), eligible, tokenizer)
        pools.append(_Pool(src, table.num_rows, eligible, tokens, table=table))
    return pools


def _select_stage(
    spec: CurriculumSpec, stage: StageSpec, pools: list[_Pool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose the rows of one stage from its pools: (source index, row index, tokens) in stage
    order; sets each pool's targets and ``chosen``."""
    seed = spec.stage_seed(stage.stage)
    weights = [p.src.weight for p in pools]
    budget = stage.budget or {}
    if "tokens" in budget:
        for pool, t in zip(pools, largest_remainder(budget["tokens"], weights), strict=True):
            mean = float(pool.tokens.mean()) if pool.tokens.size else 0.0
            pool.target_tokens = t
            pool.target_rows = round(t / mean) if mean else 0
            pool.chosen = _choose_tokens(pool, seed, t)
    else:
        total = budget["rows"] if "rows" in budget else _no_budget_total(pools)
        for pool, t in zip(pools, largest_remainder(total, weights), strict=True):
            pool.target_rows = t
            pool.chosen = _choose_rows(pool, seed, t)
    for pool in pools:
        short = pool.target_rows - pool.chosen.size
        if "tokens" not in budget and short > 0:
            log.warning(
                "stage %d, source %r: %d of %d target rows available (%s); realized below target",
                stage.stage,
                pool.src.name,
                pool.chosen.size,
                pool.target_rows,
                "no rows pass `where`" if not pool.eligible.size else "set repeat: true to upsample",
            )
    src_idx = np.concatenate([np.full(p.chosen.size, i, dtype=np.int32) for i, p in enumerate(pools)])
    row_idx = np.concatenate([p.eligible[p.chosen] for p in pools])
    toks = np.concatenate([p.tokens[p.chosen] for p in pools])
    order = permutation(src_idx.size, _derive("interleave", seed))
    return src_idx[order], row_idx[order], toks[order]


# --------------------------------------------------------------------------- tasks (executor path)

# Functions of a serialized Polars expression (``Kind.Name``) that compute a row's value from that
# row alone; an aggregate, a window, ``len`` or any function not listed may use the other rows.
_ROW_FUNCTIONS = frozenset(
    {
        "Abs", "Ceil", "Floor", "Sign", "Log", "Coalesce", "FillNull", "MaxHorizontal",
        "MinHorizontal", "Pow.Sqrt", "Pow.Generic", "Sql.IsIn", "Sql.Round", "Sql.ToFloat",
        "Sql.Binary.Rem", "Sql.Binary.Div", "Sql.Binary.Mul", "Boolean.Not", "Boolean.IsNull",
        "Boolean.IsNotNull", "Boolean.IsNan", "Boolean.IsNotNan", "Boolean.IsFinite",
        "Boolean.IsInfinite", "StringExpr.LenChars", "StringExpr.LenBytes", "StringExpr.Contains",
        "StringExpr.StartsWith", "StringExpr.EndsWith", "StringExpr.Lowercase",
        "StringExpr.Uppercase", "StringExpr.Slice", "StringExpr.StripChars",
        "StringExpr.StripCharsStart", "StringExpr.StripCharsEnd", "StringExpr.Replace",
        "StringExpr.Find", "StringExpr.Reverse", "StringExpr.ConcatHorizontal",
    }
)  # fmt: skip


def is_row_condition(where: str | None) -> bool:
    """Whether ``where`` gives each row a value computed from that row alone, so that it can be
    evaluated shard by shard (True for no condition).

    Conservative: True only for column references, literals, operators, casts, ``CASE`` and a known
    list of functions (string length, ``LIKE``, ``LOWER``, ``IN``, ``IS NULL``, ``COALESCE``,
    arithmetic...); an aggregate, a window, a row number or any other function gives False.

    Example:
        >>> is_row_condition("cluster_size = 1 AND LENGTH(text) > 200")
        True
        >>> is_row_condition("score > AVG(score)")
        False
    """
    if not where:
        return True
    try:
        return _row_node(json.loads(pl.sql_expr(where).meta.serialize(format="json")))
    except (pl.exceptions.PolarsError, ValueError, KeyError, TypeError):
        return False


def _row_node(node: Any, *, in_list: bool = False) -> bool:
    if not isinstance(node, dict) or len(node) != 1:
        return False
    ((kind, body),) = node.items()
    if kind == "Column":
        return isinstance(body, str)
    if kind == "Literal":  # a Series literal is an IN list, or a column of its own length
        return in_list or not (isinstance(body, dict) and "Series" in body)
    if kind == "BinaryExpr":
        return _row_node(body["left"]) and _row_node(body["right"])
    if kind == "Cast":
        return _row_node(body["expr"])
    if kind == "Ternary":
        return all(_row_node(body[k]) for k in ("predicate", "truthy", "falsy"))
    if kind == "Function":
        name = _function_name(body["function"])
        return name in _ROW_FUNCTIONS and all(
            _row_node(arg, in_list=name == "Sql.IsIn" and i > 0) for i, arg in enumerate(body["input"])
        )
    return False


def _function_name(fn: Any) -> str:
    """``{"StringExpr": {"Contains": {"literal": true}}}`` -> ``StringExpr.Contains``."""
    parts = []
    while isinstance(fn, dict) and len(fn) == 1:
        ((key, inner),) = fn.items()
        if not key[:1].isupper():
            break
        parts.append(key)
        fn = inner
    if isinstance(fn, str):
        parts.append(fn)
    return ".".join(parts)


def _slim(src: SourceSpec) -> SourceSpec:
    """The source without its manifest and shard list (what a task needs, small to pickle)."""
    return replace(src, manifest={}, shards=[], schema=None)


def _groups(src: SourceSpec) -> list[tuple[dict[str, Any], ...]]:
    """The part's shards as read tasks: one shard each, or all together when ``where`` is not a
    row condition (see :func:`is_row_condition`)."""
    if is_row_condition(src.where):
        return [(entry,) for entry in src.shards]
    return [tuple(src.shards)] if src.shards else []


@dataclass
class _Scan:
    """A scan task: shards read together, then filtered and counted for each of ``sources`` (one
    entry per distinct ``where``, kind and text field among the sources that use the shards)."""

    folder: str
    shards: tuple[dict[str, Any], ...]
    sources: list[SourceSpec] = field(default_factory=list)

    def consumer(self, src: SourceSpec) -> int:
        """The index of ``src``'s filter in ``sources`` (added when new)."""
        sig = (src.where, src.kind, src.text_field)
        for i, s in enumerate(self.sources):
            if (s.where, s.kind, s.text_field) == sig:
                return i
        self.sources.append(_slim(src))
        return len(self.sources) - 1


def _scan(task: _Scan, *, tokenizer: Any) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Verify and read the task's shards: their rows, and for each source the rows (of the shards
    together) passing its ``where`` with their tokens."""
    name = task.sources[0].name
    table = _concat([_read_source_shard(task.folder, e, name, verify=True) for e in task.shards])
    counted = []
    for src in task.sources:
        eligible = _eligible(table, src)
        counted.append((eligible, _count_tokens(_text_view(table, src), eligible, tokenizer)))
    return table.num_rows, counted


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def _scan_pools(spec: CurriculumSpec, tokenizer: Any, ex: Executor) -> dict[int, list[_Pool]]:
    """The pools of every stage from scan tasks on ``ex``, one map for the whole curriculum; a
    part's groups are put together in part order, which gives the arrays of :func:`_read_pools`."""
    index: dict[tuple[str, tuple[str, ...]], int] = {}
    items: list[_Scan] = []
    refs: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (stage, source) -> (task, consumer)
    for stage in spec.stages:
        for j, src in enumerate(stage.sources):
            refs[stage.stage, j] = []
            for shards in _groups(src):
                key = (str(Path(src.path).resolve()), tuple(e["path"] for e in shards))
                if key not in index:
                    index[key] = len(items)
                    items.append(_Scan(src.path, shards))
                refs[stage.stage, j].append((index[key], items[index[key]].consumer(src)))
    log.info("curriculum: %d scan task(s) on the %s executor", len(items), ex.name)
    results = ex.map(functools.partial(_scan, tokenizer=tokenizer), items)
    pools: dict[int, list[_Pool]] = {}
    for stage in spec.stages:
        pools[stage.stage] = []
        for j, src in enumerate(stage.sources):
            groups, eligible, tokens, first = [], [], [], 0
            for t, c in refs[stage.stage, j]:
                rows, counted = results[t]
                groups.append(_Group(src.path, items[t].shards, first, rows))
                eligible.append(counted[c][0] + first)
                tokens.append(counted[c][1])
                first += rows
            pools[stage.stage].append(_Pool(src, first, _cat(eligible), _cat(tokens), groups=groups))
    return pools


@dataclass(frozen=True)
class _Take:
    """A take task: rows ``rows`` (in stage order, of the shards together) with their tokens."""

    folder: str
    shards: tuple[dict[str, Any], ...]
    source: SourceSpec
    rows: np.ndarray
    tokens: np.ndarray


def _take(task: _Take, *, stage: int, schema: pa.Schema) -> pa.Table:
    """The task's rows as stage rows (the shards were verified by the scan)."""
    table = _concat([read_shard(Path(task.folder) / e["path"]) for e in task.shards])
    return _stage_piece(table, task.rows, task.tokens, task.source, stage, schema)


# --------------------------------------------------------------------------- writing


def _stage_piece(
    table: pa.Table,
    rows: np.ndarray,
    tokens: np.ndarray,
    src: SourceSpec,
    stage: int,
    schema: pa.Schema,
) -> pa.Table:
    """Rows ``rows`` of a source part as stage rows: text column renamed, stage/source/tokens set."""
    sub = table.take(arrow_indices(rows))
    drop = [c for c in ADDED_COLUMNS if c in sub.column_names]
    if src.kind == "document" and src.text_field != "text":
        if "text" in sub.column_names:
            drop.append("text")
        sub = sub.drop_columns(drop)
        sub = sub.rename_columns(["text" if c == src.text_field else c for c in sub.column_names])
    else:
        sub = sub.drop_columns(drop)
    n = sub.num_rows
    sub = sub.append_column("stage", pa.array(np.full(n, stage, dtype=np.int32)))
    sub = sub.append_column("source", pa.repeat(pa.scalar(src.name, pa.large_string()), n))
    sub = sub.append_column("tokens", pa.array(tokens, type=pa.int64()))
    try:
        return conform(sub, schema)
    except DataError as exc:
        msg = f"stage {stage}, source {src.name!r} ({src.path} [{src.part}]): {exc}"
        raise DataError(msg) from None


@dataclass
class _Part:
    """Rows of a stage from one source (or one read task of it): their stage positions, ascending,
    and ``rows(lo, hi)``, the stage rows at ``positions[lo:hi]``."""

    positions: np.ndarray
    rows: Callable[[int, int], pa.Table]


def _pool_rows(pool: _Pool, rows: np.ndarray, tokens: np.ndarray, stage: int, schema: pa.Schema,
               lo: int, hi: int) -> pa.Table:  # fmt: skip
    assert pool.table is not None
    return _stage_piece(pool.table, rows[lo:hi], tokens[lo:hi], pool.src, stage, schema)


def _local_parts(
    stage: StageSpec, pools: list[_Pool], src_idx: np.ndarray, row_idx: np.ndarray, toks: np.ndarray
) -> list[_Part]:
    """One part per source, its rows taken from the part read in this process."""
    schema = stage.schema()
    parts = []
    for j, pool in enumerate(pools):
        pos = np.flatnonzero(src_idx == j)
        rows = functools.partial(_pool_rows, pool, row_idx[pos], toks[pos], stage.stage, schema)
        parts.append(_Part(pos, rows))
    return parts


def _slice(table: pa.Table, lo: int, hi: int) -> pa.Table:
    return table.slice(lo, hi - lo)


def _take_parts(
    stage: StageSpec, pools: list[_Pool], src_idx: np.ndarray, row_idx: np.ndarray, toks: np.ndarray,
    ex: Executor,
) -> list[_Part]:  # fmt: skip
    """One part per read task of each source, its rows taken by a take task on ``ex``."""
    positions, items = [], []
    for j, pool in enumerate(pools):
        pos = np.flatnonzero(src_idx == j)
        rows = row_idx[pos]
        # the group of each row (the last one starting at or before it: groups may be empty), then
        # the rows of each group, still in stage order
        which = np.searchsorted([g.first_row for g in pool.groups], rows, side="right") - 1
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(pool.groups) + 1))
        for k, g in enumerate(pool.groups):
            mine = order[bounds[k] : bounds[k + 1]]
            if mine.size:
                positions.append(pos[mine])
                items.append(
                    _Take(g.folder, g.shards, _slim(pool.src), rows[mine] - g.first_row, toks[pos[mine]])
                )
    log.info("stage %d: %d take task(s) on the %s executor", stage.stage, len(items), ex.name)
    pieces = ex.map(functools.partial(_take, stage=stage.stage, schema=stage.schema()), items)
    return [_Part(p, functools.partial(_slice, t)) for p, t in zip(positions, pieces, strict=True)]


def _write_stage(
    stage: StageSpec, parts: list[_Part], toks: np.ndarray, *, tmp: Path, shard_rows: int
) -> list[dict[str, Any]]:
    """Write the stage's rows (``toks``: tokens in stage order) as shards of ``shard_rows`` rows,
    each put together from the parts' rows in its range of stage positions."""
    schema = stage.schema()
    starts = np.arange(0, max(toks.size, 1), shard_rows)
    cuts = [
        (np.searchsorted(p.positions, starts), np.searchsorted(p.positions, starts + shard_rows))
        for p in parts
    ]
    shards = []
    for i, start in enumerate(starts.tolist()):
        pieces, positions = [], []
        for part, (los, his) in zip(parts, cuts, strict=True):
            lo, hi = int(los[i]), int(his[i])
            if hi > lo:
                pieces.append(part.rows(lo, hi))
                positions.append(part.positions[lo:hi] - start)
        if pieces:
            combined = pa.concat_tables(pieces)
            table = combined.take(arrow_indices(np.argsort(np.concatenate(positions), kind="stable")))
        else:
            table = schema.empty_table()
        info = write_shard(
            table,
            tmp / f"stage-{stage.stage}" / f"part-{i:05d}.arrow",
            format="arrow",
            compression="zstd",
            relative_to=tmp,
        )
        shards.append(
            {
                "path": info.path,
                "rows": info.rows,
                "bytes": info.bytes,
                "tokens": int(toks[start : start + shard_rows].sum()),
                "sha256": info.sha256,
                "first_row": start,
                "schema": stage.schema_name,
            }
        )
    return shards


def _mix(values: dict[str, int]) -> dict[str, float]:
    total = sum(values.values())
    return {k: round(v / total, 6) if total else 0.0 for k, v in values.items()}


def _stage_entry(
    spec: CurriculumSpec, stage: StageSpec, pools: list[_Pool], toks: np.ndarray, src_idx: np.ndarray,
    shards: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    unit = "tokens" if stage.budget and "tokens" in stage.budget else "rows"
    whole = sum(p.src.weight for p in pools)
    sources = []
    realized: dict[str, int] = {}
    for j, p in enumerate(pools):
        rows = int(p.chosen.size)
        tokens = int(toks[src_idx == j].sum())
        realized[p.src.name] = tokens if unit == "tokens" else rows
        filtered_out = p.available - p.eligible.size
        sources.append(
            {
                **p.src.config(),
                "available_rows": p.available,
                "filtered_rows": int(p.eligible.size),
                "target_rows": p.target_rows,
                "target_tokens": p.target_tokens,
                "realized_rows": rows,
                "unique_rows": p.unique,
                "repeated_rows": rows - p.unique,
                "tokens": tokens,
                "dropped": {"filtered": filtered_out, "over_budget": int(p.eligible.size) - p.unique},
                "lineage": p.src.lineage(),
            }
        )
    return {
        "stage": stage.stage,
        "name": stage.name,
        "description": stage.description,
        "kind": stage.kind,
        "schema": {"name": stage.schema_name, "fields": schema_to_json(stage.schema())},
        "budget": dict(stage.budget) if stage.budget else None,
        "seed": spec.stage_seed(stage.stage),
        "rows": int(src_idx.size),
        "tokens": int(toks.sum()),
        "bytes": sum(s["bytes"] for s in shards),
        "mix_unit": unit,
        "target_mix": {p.src.name: round(p.src.weight / whole, 6) for p in pools},
        "realized_mix": _mix(realized),
        "sources": sources,
        "shards": shards,
    }


def _ledger(stages: list[dict[str, Any]]) -> Ledger:
    srcs = [s for st in stages for s in st["sources"]]
    rows_in = sum(s["available_rows"] for s in srcs)
    eligible = sum(s["filtered_rows"] for s in srcs)
    kept = sum(s["unique_rows"] for s in srcs)
    filtered = Counter({"filtered": rows_in - eligible} if rows_in - eligible else {})
    over = Counter({"over_budget": eligible - kept} if eligible - kept else {})
    counters = Counter(
        {
            "rows_written": sum(s["realized_rows"] for s in srcs),
            "repeated_rows": sum(s["repeated_rows"] for s in srcs),
            "tokens_written": sum(s["tokens"] for s in srcs),
        }
    )
    ledger = Ledger(
        rows_in=rows_in,
        kept=kept,
        steps=[
            StepCounts("curriculum.where", rows_in=rows_in, kept=eligible, dropped=filtered),
            StepCounts("curriculum.select", rows_in=eligible, kept=kept, dropped=over, counters=counters),
        ],
    )
    ledger.check(KIND)
    return ledger


def _summary_rows(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (stage, source): what the CLI and report.md show."""
    rows = []
    for st in stages:
        for s in st["sources"]:
            rows.append(
                {
                    "stage": st["stage"],
                    "stage_name": st["name"],
                    "source": s["name"],
                    "weight": s["weight"],
                    "mix_unit": st["mix_unit"],
                    "target_share": st["target_mix"][s["name"]],
                    "realized_share": st["realized_mix"][s["name"]],
                    "target_rows": s["target_rows"],
                    "target_tokens": s["target_tokens"],
                    "realized_rows": s["realized_rows"],
                    "repeated_rows": s["repeated_rows"],
                    "available_rows": s["available_rows"],
                    "filtered_rows": s["filtered_rows"],
                    "tokens": s["tokens"],
                }
            )
    return rows


def _markdown(report: RunReport, stages: list[dict[str, Any]]) -> str:
    lines = [
        "",
        "## Curriculum",
        "",
        "| stage | source | weight | target share | realized share | available | passed where | "
        "target rows | realized rows | repeated | tokens |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for st in stages:
        for s in st["sources"]:
            lines.append(
                f"| {st['stage']} {st['name']} | {s['name']} | {s['weight']:g} | "
                f"{st['target_mix'][s['name']]:.3f} | {st['realized_mix'][s['name']]:.3f} ({st['mix_unit']}) | "
                f"{s['available_rows']:,} | {s['filtered_rows']:,} | {s['target_rows']:,} | "
                f"{s['realized_rows']:,} | {s['repeated_rows']:,} | {s['tokens']:,} |"
            )
    lines += [
        "",
        "| stage | budget | seed | rows | tokens | bytes | shards |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for st in stages:
        budget = ", ".join(f"{k} {v:,}" for k, v in (st["budget"] or {}).items()) or "all available"
        lines.append(
            f"| {st['stage']} {st['name']} | {budget} | {st['seed']} | {st['rows']:,} | {st['tokens']:,} | "
            f"{st['bytes']:,} | {len(st['shards'])} |"
        )
    return report.markdown() + "\n".join(lines) + "\n"


def _check_output(out: Path, spec: CurriculumSpec, *, overwrite: bool) -> None:
    resolved = out.resolve()
    for stage in spec.stages:
        for src in stage.sources:
            s = Path(src.path).resolve()
            if s == resolved or resolved in s.parents or s in resolved.parents:
                msg = f"output {str(out)!r} overlaps source {src.name!r} ({src.path}); choose another output"
                raise ConfigError(msg)
    if out.exists() and not out.is_dir():
        msg = f"output {str(out)!r} exists and is not a folder"
        raise OutputError(msg)
    check_replaceable(out, overwrite=overwrite)


def build_curriculum(
    spec_or_path: CurriculumSpec | str | Path,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    shard_rows: int | None = None,
    tokenizer: Any = None,
    executor: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> RunReport:
    """Build the stage shards, ``manifest.json`` and the run report of a curriculum.

    Args:
        spec_or_path: a curriculum YAML file or a loaded :class:`CurriculumSpec`.
        output: output folder (default: the YAML's ``output.path``).
        overwrite: replace an existing dataforge output folder.
        shard_rows: rows per shard (default: the YAML's ``output.shard_rows``, else 100,000).
        tokenizer: counts tokens (``encode``, ``vocab_size``, ``eos_id``, ``pad_id``; an optional
            vectorized ``count``); default :class:`~dataforge.train.tokenizer.ByteTokenizer`. It
            must pickle when the sources are read on an executor.
        executor: where the source shards are read, filtered, counted and their chosen rows taken:
            ``local`` or ``ray``; the selection and the writing run in this process. The output
            bytes are the same whichever runs; ``report.json`` records which did. Default: the
            curriculum's ``executor:`` section (``kind``, ``workers``, ``address``), else local.
        workers: parallel workers (processes, or the CPUs of a Ray started for the run); default:
            the ``executor:`` section's, else 1.
        ray_address: the Ray cluster to join (``ray`` only; default: the section's ``address``,
            else ``$RAY_ADDRESS``, else a Ray started for the run).

    Returns:
        The RunReport (also written to ``OUT/report.json``); ``report.reports["curriculum"]`` has
        one row per (stage, source) with target vs realized rows, tokens and shares.

    Raises:
        ConfigError: invalid curriculum, or no output given.
        DataError: a source shard does not match its manifest; a row does not fit the stage schema.
        OutputError: the output folder is not empty (without ``overwrite``) or cannot be written.
    """
    spec = spec_or_path if isinstance(spec_or_path, CurriculumSpec) else load_curriculum(spec_or_path)
    target = output if output is not None else spec.output
    if not target:
        msg = "no output folder: set output.path in the curriculum or pass -o/--output"
        raise ConfigError(msg)
    out = Path(target)
    rows_per_shard = _int("shard_rows", shard_rows if shard_rows is not None else spec.shard_rows, minimum=1)
    tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
    _check_output(out, spec, overwrite=overwrite)
    kind = executor or spec.executor.kind
    address = ray_address if ray_address is not None else (spec.executor.address if kind == "ray" else None)
    n_workers = workers if workers is not None else spec.executor.workers
    with contextlib.closing(make_executor(kind, workers=n_workers, address=address)) as ex:
        return _build(spec, out, rows_per_shard, tokenizer, ex)


def _build(spec: CurriculumSpec, out: Path, rows_per_shard: int, tokenizer: Any, ex: Executor) -> RunReport:
    """Build the curriculum into ``out``: in this process on one local worker, else reading on
    ``ex`` (see "Executors" in the module docstring)."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    verified: set[tuple[str, str]] = set()
    in_process = ex.name == "local" and ex.workers == 1
    with atomic_folder(out) as tmp:
        scanned: dict[int, list[_Pool]] = {}
        if not in_process:
            scanned = _scan_pools(spec, tokenizer, ex)
            timings["scan"] = time.perf_counter() - t0
        stages = []
        for stage in spec.stages:
            t = time.perf_counter()
            pools = _read_pools(stage, tokenizer, verified) if in_process else scanned.pop(stage.stage)
            src_idx, row_idx, toks = _select_stage(spec, stage, pools)
            timings[f"stage-{stage.stage}:select"] = time.perf_counter() - t
            t = time.perf_counter()
            if in_process:
                parts = _local_parts(stage, pools, src_idx, row_idx, toks)
            else:
                parts = _take_parts(stage, pools, src_idx, row_idx, toks, ex)
            shards = _write_stage(stage, parts, toks, tmp=tmp, shard_rows=rows_per_shard)
            timings[f"stage-{stage.stage}:write"] = time.perf_counter() - t
            entry = _stage_entry(spec, stage, pools, toks, src_idx, shards)
            stages.append(entry)
            log.info(
                "stage %d (%s): %d rows, %d tokens in %d shard(s)",
                stage.stage,
                stage.name,
                entry["rows"],
                entry["tokens"],
                len(shards),
            )
            del pools, parts
        ledger = _ledger(stages)
        config = spec.config(shard_rows=rows_per_shard)
        config_fp = fingerprint(config)
        all_shards = [s for st in stages for s in st["shards"]]
        counts = {
            "rows": sum(st["rows"] for st in stages),
            "tokens": sum(st["tokens"] for st in stages),
            "bytes": sum(st["bytes"] for st in stages),
            "rows_in": ledger.rows_in,
            "kept": ledger.kept,
            "dropped": ledger.dropped_total,
            "rejected": ledger.rejected_total,
            "repeated": sum(s["repeated_rows"] for st in stages for s in st["sources"]),
        }
        manifest = {
            "manifest_version": 1,
            "kind": KIND,
            "name": spec.name,
            "dataforge_version": dataforge.__version__,
            "config": config,
            "config_fingerprint": config_fp,
            "seed": spec.seed,
            "tokenizer": tokenizer_spec(tokenizer),
            "format": "arrow",
            "compression": "zstd",
            "stages": stages,
            "shards": all_shards,
            "counts": counts,
        }
        timings["total"] = time.perf_counter() - t0
        report = RunReport(
            name=spec.name,
            output=str(out),
            ledger=ledger,
            shards=all_shards,
            per_input=[
                {
                    "path": f"stage-{st['stage']}/{s['name']}: {s['path']} [{s['part']}]",
                    "stage": st["stage"],
                    "source": s["name"],
                    "rows_in": s["available_rows"],
                    "kept": s["unique_rows"],
                    "dropped": s["available_rows"] - s["unique_rows"],
                    "rejected": 0,
                    "filtered": s["dropped"]["filtered"],
                    "over_budget": s["dropped"]["over_budget"],
                    "repeated": s["repeated_rows"],
                }
                for st in stages
                for s in st["sources"]
            ],
            timings=timings,
            executor=ex.name,
            workers=ex.workers,
            started_at=started,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            peak_rss_mb=peak_rss_mb(),
            config_fingerprint=config_fp,
            dataforge_version=dataforge.__version__,
            config=config,
            reports={"curriculum": _summary_rows(stages)},
        )
        write_json_atomic(tmp / REPORT_JSON, report.to_dict())
        write_bytes_atomic(tmp / REPORT_MD, _markdown(report, stages).encode())
        write_report_or_log(tmp)
        write_json_atomic(tmp / MANIFEST, manifest)
    log.info("%s: wrote %s (%d rows, %d tokens)", spec.name, out, counts["rows"], counts["tokens"])
    return report
