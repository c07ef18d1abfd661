"""Pipeline YAML -> a typed :class:`Pipeline`, with strict validation.

A pipeline file looks like this (relative paths are relative to the YAML file's folder)::

    name: clean_web
    input:
      paths: [../sample_data/pretraining]
      text_field: text
    output:
      path: ../out/clean_web
      shard_rows: 50000          # and at most shard_bytes (default 64 MiB) per shard
    executor: {kind: local, workers: 1}
    steps:
      - normalize.text: {form: NFC}
      - filter.gopher_quality: {}
      - pii.redact: {}
      - dedup.exact: {}

Unknown keys and unknown steps are errors that list the valid ones. YAML is loaded with
``yaml.safe_load`` only (a ``!!python/object`` tag is a ConfigError).

**Write paths.** Each config declares one output folder: ``output.path`` (pipelines, curricula),
``noise_report.output``, ``normalize.output``; it may be anywhere. Every other path a config makes
dataforge write must be that folder or inside it, after resolving it like every config path
(relative to the YAML file's folder) and following symlinks (:func:`check_write_path`); otherwise
it is a ConfigError naming the key and the path. Today that is ``noise_report.fixed_out`` (checked
by :func:`read_yaml`), and the fixed entries dataforge writes under a pipeline's ``output.path``
(``data/``, ``dropped/``, ``rejects/``, ``_work/``, ``clusters/``, ``cluster_pairs/``, the manifest
and reports), which must not be symlinks leading out of it (checked by :class:`OutputSpec`).
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
#: Most uncompressed bytes per output shard (MosaicML MDS's default ``size_limit``, 1 << 26):
#: shards of long documents stay small enough to stream, and a run's shards are written in
#: parallel once its output passes this size.
DEFAULT_SHARD_BYTES = 64 << 20
DEFAULT_MAX_REJECT_RATE = 0.05
# what a pipeline run writes (or removes) directly under output.path; see runner.py
OUTPUT_ENTRIES = (
    "data",
    "dropped",
    "rejects",
    "_work",
    "clusters",
    "cluster_pairs",
    "manifest.json",
    "report.json",
    "report.md",
    "report.html",
)
# keys of a noise_report: mapping that name folders written besides its output
_NOISE_WRITE_KEYS = ("fixed_out",)


def check_write_path(key: str, path: str | os.PathLike[str], output: str | os.PathLike[str]) -> str:
    """``path`` if it is the output folder ``output`` or inside it, symlinks followed.

    Both are compared as real paths (``os.path.realpath``: ``..`` and symlinks resolved, missing
    parts kept as written), so ``../x``, an absolute path elsewhere, or a symlink inside the output
    that leads out of it are refused.

    Raises:
        ConfigError: naming ``key``, ``path`` and the output folder.
    """
    real_out = os.path.realpath(output)
    real = os.path.realpath(path)
    if real != real_out and os.path.commonpath([real_out, real]) != real_out:
        via = f" (resolves to {real!r})" if os.path.abspath(path) != real else ""
        msg = (
            f"{key} {os.fspath(path)!r}{via} is outside the output folder {os.fspath(output)!r}; "
            "dataforge writes only inside the declared output folder"
        )
        raise ConfigError(msg)
    return os.fspath(path)


@dataclass(kw_only=True)
class OutputSpec:
    """Where and how shards are written.

    Args:
        path: output folder.
        format: ``arrow`` (Arrow IPC file, default) or ``parquet``.
        compression: ``zstd`` (default), ``lz4`` or ``none``.
        shard_rows: most rows per shard.
        shard_bytes: most uncompressed bytes per shard (the row sizes of
            :func:`dataforge.stages.row_bytes`; a single bigger row gets a shard of its own);
            None for no limit. Shards are filled in order: a shard is closed when it holds
            ``shard_rows`` rows or when the next row would take it over ``shard_bytes``, so the
            layout depends only on the rows, never on the executor or the task split.
        keep_dropped: also write dropped rows with their reason under ``dropped/``.
    """

    path: str
    format: str = "arrow"
    compression: str = "zstd"
    shard_rows: int = DEFAULT_SHARD_ROWS
    shard_bytes: int | None = DEFAULT_SHARD_BYTES
    keep_dropped: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            msg = f"output path must be a non-empty string, got {self.path!r}"
            raise ConfigError(msg)
        check_output_options(format=self.format, compression=self.compression)
        if not isinstance(self.shard_rows, int) or isinstance(self.shard_rows, bool) or self.shard_rows < 1:
            msg = f"shard_rows must be a positive integer, got {self.shard_rows!r}"
            raise ConfigError(msg)
        sb = self.shard_bytes
        if sb is not None and (not isinstance(sb, int) or isinstance(sb, bool) or sb < 1):
            msg = f"shard_bytes must be a positive integer (bytes) or null for no limit, got {sb!r}"
            raise ConfigError(msg)
        if not isinstance(self.keep_dropped, bool):  # "false" (a string) would read as true
            msg = f"keep_dropped must be true or false, got {self.keep_dropped!r}"
            raise ConfigError(msg)
        for entry in OUTPUT_ENTRIES:
            check_write_path(f"output.path ({entry})", os.path.join(self.path, entry), self.path)


@dataclass(kw_only=True)
class ExecutorSpec:
    """Which executor runs the tasks (the ``executor:`` section; it never changes the output bytes).

    Args:
        kind: ``local`` (this process, or a process pool when ``workers`` > 1) or ``ray``.
        workers: local processes, or the CPUs of the Ray instance dataforge starts when no
            ``address`` is given (ignored when joining a cluster: Ray schedules one task per CPU
            of the cluster).
        address: Ray cluster to join (``auto``, ``host:6379`` or ``ray://host:10001``; ``ray``
            only); None starts a Ray instance for the run and stops it afterwards.
    """

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
    """A resolved pipeline: input, steps, output, executor (what a pipeline YAML file holds).

    Args:
        name: the run's name (in the manifest and reports; default: the YAML file's stem).
        input: where the documents come from (the ``input:`` section).
        output: where and how shards are written (the ``output:`` section).
        steps: the steps, in order (build them with :func:`dataforge.registry.build_step`).
        executor: where the tasks run (the ``executor:`` section).
        max_reject_rate: the share of malformed input above which the run fails (exit code 1)
            after writing its outputs; None disables the check.
        batch_rows: rows per batch inside a task.
        description: free text, kept in the manifest's config.
    """

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


def _section(where: str, value: Any) -> dict[str, Any]:
    """A copy of a mapping section (empty when null); ConfigError naming the section otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        msg = f"{where} must be a mapping, got {type(value).__name__} {value!r:.60}"
        raise ConfigError(msg)
    return dict(value)


def executor_spec(raw: Any) -> ExecutorSpec:
    """The ``executor:`` section of a pipeline or curriculum file (``kind``, ``workers``,
    ``address``; null = the local default)."""
    section = _section("executor", raw)
    _check_keys("executor", section, _EXEC_KEYS)
    return ExecutorSpec(**section)


def pipeline_from_dict(
    data: dict[str, Any], *, base_dir: Path | None = None, name: str = "pipeline"
) -> Pipeline:
    """Build a Pipeline from a parsed YAML mapping; relative paths resolve against ``base_dir``."""
    _check_keys("the pipeline", data, _TOP_KEYS)
    for key in ("input", "output", "steps"):
        if key not in data:
            msg = f"the pipeline has no {key!r} section"
            raise ConfigError(msg)
    raw_in = _section("input", data["input"])
    _check_keys("input", raw_in, _INPUT_KEYS)
    paths = raw_in.get("paths")
    if isinstance(paths, str):
        paths = [paths]
    if not paths or not isinstance(paths, list):
        msg = "input.paths must be a non-empty list of files, folders or globs"
        raise ConfigError(msg)
    raw_in["paths"] = tuple(_resolve(str(p), base_dir) for p in paths)
    raw_out = _section("output", data["output"])
    _check_keys("output", raw_out, _OUTPUT_KEYS)
    if "path" not in raw_out:
        msg = "output.path is required"
        raise ConfigError(msg)
    raw_out["path"] = _resolve(str(raw_out["path"]), base_dir)
    extra = {k: data[k] for k in ("max_reject_rate", "batch_rows", "description") if k in data}
    try:
        return Pipeline(
            name=str(data.get("name") or name),
            input=InputSpec(**raw_in),
            output=OutputSpec(**raw_out),
            steps=parse_steps(data["steps"], base_dir=base_dir),
            executor=executor_spec(data.get("executor")),
            **extra,
        )
    except TypeError as exc:
        msg = f"invalid pipeline: {exc}"
        raise ConfigError(msg) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's SafeLoader, except that a key given twice in one mapping is an error (the safe loader
    keeps the last one silently: a second ``steps:`` would drop the first list)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key: the constructor reports it
            break
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _load_unique(text: str) -> Any:
    """``yaml.safe_load`` with :class:`_UniqueKeyLoader` (a SafeLoader subclass)."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; ConfigError naming the file and line on failure."""
    p = Path(path)
    if not p.is_file():
        msg = f"pipeline file {str(path)!r} does not exist"
        raise ConfigError(msg)
    try:
        data = _load_unique(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        msg = f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"
        raise ConfigError(msg) from None
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        msg = f"{path}:{line}: invalid UTF-8 byte(s) {exc.object[exc.start : exc.start + 4]!r}; save the file as UTF-8"
        raise ConfigError(msg) from None
    except RecursionError:
        msg = f"{path}: invalid YAML: nested too deeply"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"{path}: cannot read the pipeline file: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path}: a pipeline must be a YAML mapping, got {type(data).__name__}"
        raise ConfigError(msg)
    for section in ("noise_report", "normalize"):  # the sections api.py reads as mappings
        if section in data and data[section] is not None and not isinstance(data[section], dict):
            msg = f"{path}: {section} must be a mapping, got {type(data[section]).__name__}"
            raise ConfigError(msg)
    _check_noise_write_paths(data, p)
    return data


def _check_noise_write_paths(data: dict[str, Any], path: Path) -> None:
    """``noise_report.fixed_out`` must be inside ``noise_report.output`` (both relative to the file)."""
    opts = data.get("noise_report")
    if not isinstance(opts, dict) or opts.get("output") is None:
        return
    output = _resolve(str(opts["output"]), path.parent)
    for key in _NOISE_WRITE_KEYS:
        if opts.get(key) is not None:
            try:
                check_write_path(f"noise_report.{key}", _resolve(str(opts[key]), path.parent), output)
            except ConfigError as exc:
                msg = f"{path}: {exc}"
                raise ConfigError(msg) from None


def load_pipeline(path: str | Path) -> Pipeline:
    """Load and validate a pipeline YAML file (paths in it are relative to the file's folder).

    Args:
        path: the YAML file.

    Returns:
        The Pipeline; :func:`dataforge.run_pipeline` runs it.

    Raises:
        ConfigError: the file is missing or not valid YAML; an unknown key, step or option (the
            message lists the valid ones); a bad value; a write path outside the output folder.
            Input paths are checked when the pipeline runs (InputError), not here.

    Example:
        >>> p = dataforge.load_pipeline("pipelines/clean_web.yaml")
        >>> [s.name for s in p.steps][:3]
        ['normalize.text', 'filter.lang', 'filter.gopher_repetition']
        >>> p.executor
        ExecutorSpec(kind='local', workers=1, address=None)
    """
    data = read_yaml(path)
    return pipeline_from_dict(data, base_dir=Path(path).parent, name=Path(path).stem)
