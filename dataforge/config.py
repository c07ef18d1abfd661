"""Pipeline YAML -> a typed :class:`Pipeline`, with strict validation.

A pipeline file looks like this (relative paths are relative to the YAML file's folder)::

    name: clean_web
    input:
      paths: [../sample_data/pretraining]
      text_field: text
    output:
      path: ../out/clean_web
      shard_rows: 50000
    executor: {kind: local, workers: 1}
    steps:
      - normalize.text: {form: NFC}
      - filter.gopher_quality: {}
      - pii.redact: {}
      - dedup.exact: {}

Unknown keys and unknown steps are errors that list the valid ones. YAML is loaded with
``yaml.safe_load`` only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dataforge.errors import ConfigError, choices
from dataforge.executors.base import EXECUTORS
from dataforge.io.inputs import InputSpec
from dataforge.io.shards import check_output_options
from dataforge.registry import build_step
from dataforge.step import Step

DEFAULT_SHARD_ROWS = 100_000
DEFAULT_MAX_REJECT_RATE = 0.05


@dataclass(kw_only=True)
class OutputSpec:
    """Where and how shards are written.

    Args:
        path: output folder.
        format: ``arrow`` (Arrow IPC file, default) or ``parquet``.
        compression: ``zstd`` (default), ``lz4`` or ``none``.
        shard_rows: rows per shard (the last shard may hold fewer).
        keep_dropped: also write dropped rows with their reason under ``dropped/``.
    """

    path: str
    format: str = "arrow"
    compression: str = "zstd"
    shard_rows: int = DEFAULT_SHARD_ROWS
    keep_dropped: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            msg = f"output path must be a non-empty string, got {self.path!r}"
            raise ConfigError(msg)
        check_output_options(format=self.format, compression=self.compression)
        if not isinstance(self.shard_rows, int) or isinstance(self.shard_rows, bool) or self.shard_rows < 1:
            msg = f"shard_rows must be a positive integer, got {self.shard_rows!r}"
            raise ConfigError(msg)


@dataclass(kw_only=True)
class ExecutorSpec:
    """Which executor runs the tasks (does not change the output bytes)."""

    kind: str = "local"
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            msg = f"unknown executor {self.kind!r}; valid: {choices(EXECUTORS)}"
            raise ConfigError(msg)
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            msg = f"workers must be a positive integer, got {self.workers!r}"
            raise ConfigError(msg)


@dataclass(kw_only=True)
class Pipeline:
    """A resolved pipeline: input, steps, output, executor."""

    name: str
    input: InputSpec
    output: OutputSpec
    steps: list[Step]
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    max_reject_rate: float | None = DEFAULT_MAX_REJECT_RATE
    batch_rows: int = 10_000
    description: str = ""

    def __post_init__(self) -> None:
        r = self.max_reject_rate
        if r is not None and (isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r <= 1):
            msg = f"max_reject_rate must be a number in [0, 1] or null, got {r!r}"
            raise ConfigError(msg)
        if not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            msg = f"batch_rows must be a positive integer, got {self.batch_rows!r}"
            raise ConfigError(msg)

    def steps_spec(self) -> list[dict[str, Any]]:
        """The steps as ``[{name: options}]`` (what a YAML file would hold)."""
        return [{s.name: s.options()} for s in self.steps]


_TOP_KEYS = {f.name for f in dataclasses.fields(Pipeline)}
_INPUT_KEYS = {f.name for f in dataclasses.fields(InputSpec)}
_OUTPUT_KEYS = {f.name for f in dataclasses.fields(OutputSpec)}
_EXEC_KEYS = {f.name for f in dataclasses.fields(ExecutorSpec)}


def _check_keys(where: str, given: dict[str, Any], valid: set[str]) -> None:
    if not isinstance(given, dict):
        msg = f"{where} must be a mapping, got {type(given).__name__}"
        raise ConfigError(msg)
    unknown = sorted(set(given) - valid)
    if unknown:
        msg = f"unknown key {unknown[0]!r} in {where}; valid: {choices(valid)}"
        raise ConfigError(msg)


def _resolve(path: str, base_dir: Path | None) -> str:
    if base_dir is None or os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(base_dir, path))


def parse_steps(raw: Any, *, base_dir: Path | None = None) -> list[Step]:
    """``[{name: {kwargs}}, ...]`` -> step objects (strict). Options a step lists in
    ``path_options`` are resolved relative to ``base_dir``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        msg = f"steps must be a list of one-key mappings like '- filter.c4: {{}}', got {type(raw).__name__}"
        raise ConfigError(msg)
    steps: list[Step] = []
    for i, entry in enumerate(raw, start=1):
        if isinstance(entry, str):
            name, kwargs = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, kwargs = next(iter(entry.items()))
        else:
            msg = f"step #{i} must be a one-key mapping like '- filter.c4: {{}}', got {entry!r}"
            raise ConfigError(msg)
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            msg = f"step #{i} ({name}): options must be a mapping, got {kwargs!r}"
            raise ConfigError(msg)
        kwargs = _resolve_path_options(str(name), kwargs, base_dir)
        steps.append(build_step(str(name), kwargs))
    names = [s.name for s in steps]
    for n in set(names):
        if names.count(n) > 1:
            msg = f"step {n!r} appears {names.count(n)} times; each step may appear once"
            raise ConfigError(msg)
    return steps


def _resolve_path_options(name: str, kwargs: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    from dataforge.registry import step_class

    cls = step_class(name)
    out = dict(kwargs)
    for opt in getattr(cls, "path_options", ()):
        value = out.get(opt)
        if isinstance(value, str):
            out[opt] = _resolve(value, base_dir)
        elif isinstance(value, list | tuple):
            out[opt] = [_resolve(str(v), base_dir) for v in value]
    return out


def pipeline_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, name: str = "pipeline"
) -> Pipeline:
    """Build a Pipeline from a parsed YAML mapping; relative paths resolve against ``base_dir``."""
    _check_keys("the pipeline", data, _TOP_KEYS)
    for key in ("input", "output", "steps"):
        if key not in data:
            msg = f"the pipeline has no {key!r} section"
            raise ConfigError(msg)
    raw_in = dict(data["input"] or {})
    _check_keys("input", raw_in, _INPUT_KEYS)
    paths = raw_in.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    if not paths or not isinstance(paths, list):
        msg = "input.paths must be a non-empty list of files, folders or globs"
        raise ConfigError(msg)
    raw_in["paths"] = tuple(_resolve(str(p), base_dir) for p in paths)
    raw_out = dict(data["output"] or {})
    _check_keys("output", raw_out, _OUTPUT_KEYS)
    if "path" not in raw_out:
        msg = "output.path is required"
        raise ConfigError(msg)
    raw_out["path"] = _resolve(str(raw_out["path"]), base_dir)
    raw_exec = dict(data.get("executor") or {})
    _check_keys("executor", raw_exec, _EXEC_KEYS)
    extra = {k: data[k] for k in ("max_reject_rate", "batch_rows", "description") if k in data}
    try:
        return Pipeline(
            name=str(data.get("name") or name),
            input=InputSpec(**raw_in),
            output=OutputSpec(**raw_out),
            steps=parse_steps(data["steps"], base_dir=base_dir),
            executor=ExecutorSpec(**raw_exec),
            **extra,
        )
    except TypeError as exc:
        msg = f"invalid pipeline: {exc}"
        raise ConfigError(msg) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; ConfigError naming the file and line on failure."""
    p = Path(path)
    if not p.is_file():
        msg = f"pipeline file {str(path)!r} does not exist"
        raise ConfigError(msg)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        msg = f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"
        raise ConfigError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path}: a pipeline must be a YAML mapping, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def load_pipeline(path: str | Path) -> Pipeline:
    """Load and validate a pipeline YAML file."""
    data = read_yaml(path)
    return pipeline_from_dict(data, base_dir=Path(path).parent, name=Path(path).stem)
