"""The ``dataforge`` command line: a thin layer over the library.

Each command parses its options and calls one library function. Errors are mapped to messages and
exit codes in one place (:func:`_errors`):

====  ================================================================================
0     success (or: nothing to do, the output is up to date)
1     data errors: more malformed input than ``--max-reject-rate``, a corrupt shard
2     usage, configuration, input or output errors (bad option, missing path, ...), and what
      the machine refuses (no permission, read-only or full file system)
3     internal error (a bug: please report it; ``-v`` shows the traceback)
====  ================================================================================
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click

import dataforge
from dataforge.errors import DataError, DataforgeError, OutputError

log = logging.getLogger("dataforge")

# Choices repeated here so that --help does not import the heavy modules.
MODEL_CHOICES = ("auto", "tfidf-logreg", "hgb", "ensemble")
FILTER_CHOICES = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)
RANK_CHOICES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
FORMAT_CHOICES = ("jsonl", "parquet", "csv", "arrow")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --------------------------------------------------------------------------- plumbing


class _State:
    def __init__(self) -> None:
        self.verbose = 0
        self.quiet = False


pass_state = click.make_pass_decorator(_State, ensure=True)


def _setup_logging(verbose: int, quiet: bool, log_json: str | None) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    root = logging.getLogger("dataforge")
    root.setLevel(min(level, logging.INFO) if log_json else level)
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if log_json:
        try:  # a scheduled job's log folder may not exist yet: make it
            Path(log_json).parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(log_json, encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"cannot write {log_json}: {exc.strerror or exc}", param_hint="--log-json"
            ) from None
        fh.setFormatter(_JsonFormatter())
        fh.setLevel(logging.INFO)
        # a record meant for the terminal only (a real file name beside its de-identified
        # pseudonym) is not written to a file that outlives the run
        fh.addFilter(lambda record: not getattr(record, "console_only", False))
        root.addHandler(fh)
    root.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


@contextlib.contextmanager
def _errors(state: _State) -> Iterator[None]:
    """Map library errors to a message and an exit code, once for every command."""
    try:
        yield
    except DataforgeError as exc:
        report = getattr(exc, "report", None)
        if report is not None and not state.quiet:
            _print_summary(report)
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.secho("interrupted; rerun the same command to resume", fg="yellow", err=True)
        sys.exit(130)
    except (click.exceptions.Exit, click.ClickException, SystemExit):
        raise
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            _internal(state, exc)
        # the machine said no (permissions, read-only or full file system): not a bug
        where = f" {exc.filename}" if exc.filename else ""
        click.secho(f"error: cannot access{where}: {exc.strerror or exc}", fg="red", err=True)
        sys.exit(2)
    except Exception as exc:
        _internal(state, exc)


_ENVIRONMENT_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EMFILE,
    errno.ENFILE,
    errno.ENAMETOOLONG,
    errno.ELOOP,
}


def _internal(state: _State, exc: BaseException) -> NoReturn:
    """Exit 3 for an exception no library code expected (called while it is being handled)."""
    if state.verbose:
        traceback.print_exc()
    click.secho(f"internal error: {type(exc).__name__}: {exc}", fg="red", err=True)
    click.secho("this is a bug in dataforge; rerun with -v for the traceback", err=True)
    sys.exit(3)


class _RichProgress:
    """Progress bars on a terminal (rich); nothing when output is not a TTY."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None

    def start(self, label: str, total: int) -> None:
        log.info("%s: %d task(s)", label, total)
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
            console=_console(stderr=True),
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Pipes and cron logs get a fixed, wide layout instead of rich's 80-column default.
    width = None if stream.isatty() else 120
    return Console(stderr=stderr, highlight=False, width=width)


def _progress(state: _State) -> _RichProgress:
    return _RichProgress(enabled=sys.stderr.isatty() and not state.quiet)


def _print_summary(report: Any) -> None:
    from rich.table import Table

    table = Table(title=f"dataforge {report.name}: {report.output}", title_justify="left")
    for col, justify in (
        ("step", "left"),
        ("rows in", "right"),
        ("kept", "right"),
        ("dropped / rejected", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in report.summary_rows():
        table.add_row(*row)
    console = _console()
    console.print(table)
    console.print(
        f"rows in {report.rows_in:,} = kept {report.kept:,} + dropped {report.dropped:,} + "
        f"rejected {report.rejected:,}   status: {report.status}   "
        f"shards: {len(report.shards)}   report: {report.output}/report.html"
    )


def _common_run_options(f: Any) -> Any:
    options = [
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default=None,
            help="Where tasks run (default local).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Parallel workers (processes or Ray CPUs).",
        ),
        click.option(
            "--ray-address", default=None, help="Join this Ray cluster instead of starting a local Ray."
        ),
        click.option("--overwrite", is_flag=True, help="Replace the output of a different earlier run."),
        click.option("--force", is_flag=True, help="Rerun even if the output is up to date."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _executor_options(where: str, workers: str, *, from_file: bool = False) -> Any:
    """``--executor``, ``--workers`` and ``--ray-address`` of a command with its own defaults
    (``local``, 1); ``where`` and ``workers`` are the first two options' help. With ``from_file``
    the options default to None: the command's config file (its ``executor:`` section) decides."""

    def decorate(f: Any) -> Any:
        note = " [default: the file's executor section, else local]" if from_file else ""
        options = [
            click.option(
                "--executor",
                type=click.Choice(("local", "ray")),
                default=None if from_file else "local",
                show_default=not from_file,
                help=where + note,
            ),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=None if from_file else 1,
                show_default=not from_file,
                help=workers + (" [default: the file's executor section, else 1]" if from_file else ""),
            ),
            click.option("--ray-address", default=None, help="Join this Ray cluster (with --executor ray)."),
        ]
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


# --------------------------------------------------------------------------- commands


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(dataforge.__version__, prog_name="dataforge")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option(
    "--log-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write logs as JSON lines to this file.",
)
@pass_state
def cli(state: _State, verbose: int, quiet: bool, log_json: str | None) -> None:
    """dataforge: clean, deduplicate and account for training data.

    Every run writes shards, a manifest and a report whose counts add up:
    rows in = kept + dropped (with a reason) + rejected (malformed, with file and line).

    \b
    Examples:
      dataforge clean sample_data/pretraining -o out/clean
      dataforge run pipelines/demo.yaml
      dataforge inspect out/clean
    """
    state.verbose = verbose
    state.quiet = quiet
    _setup_logging(verbose, quiet, log_json)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class ByteSize(click.ParamType):
    """A size in bytes: ``67108864``, ``64M``, ``64MiB``, ``1G``, ``512k`` (binary units)."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        import re

        m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", str(value), flags=re.I)
        if not m or int(m.group(1)) < 1:
            self.fail(
                f"{value!r} is not a size: give bytes or a number with k, M, G or T (e.g. 64M)", param, ctx
            )
        return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


TASK_BYTES_HELP = (
    "Most input (bytes on disk) one task reads, e.g. 64M: bigger files are split, small ones grouped; "
    "the output bytes do not depend on it.  [default: 64M]"
)


def _io_options(f: Any) -> Any:
    """Input, output and run options shared by the commands that process documents."""
    options = [
        click.option(
            "--text-field", default="text", show_default=True, help="Field or column holding the text."
        ),
        click.option("--id-field", default="id", show_default=True, help="Field or column holding the id."),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["jsonl", "parquet", "csv", "arrow"]),
            default=None,
            help="Input format (default: from file names).",
        ),
        click.option(
            "--csv-delimiter",
            default=None,
            help="Delimiter of CSV inputs, one character (default: comma; tab for .tsv files).",
        ),
        click.option("--task-bytes", type=ByteSize(), default=None, help=TASK_BYTES_HELP),
        click.option(
            "--shard-rows",
            type=click.IntRange(min=1),
            default=100_000,
            show_default=True,
            help="Most rows per output shard.",
        ),
        click.option(
            "--shard-bytes",
            type=ByteSize(),
            default="64M",
            show_default=True,
            help="Most uncompressed bytes per output shard, e.g. 256M (a single bigger row gets a shard of its own).",
        ),
        click.option(
            "--output-format",
            type=click.Choice(["arrow", "parquet"]),
            default="arrow",
            show_default=True,
            help="Shard format.",
        ),
        click.option(
            "--compression",
            type=click.Choice(["zstd", "lz4", "none"]),
            default="zstd",
            show_default=True,
            help="Shard compression.",
        ),
        click.option(
            "--keep-dropped/--no-keep-dropped",
            default=True,
            show_default=True,
            help="Write dropped rows with their reason to dropped/.",
        ),
        click.option(
            "--max-reject-rate",
            type=click.FloatRange(0, 1),
            default=0.05,
            show_default=True,
            help="Exit 1 if more input than this is malformed.",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return _common_run_options(f)


def _prestart(executor: str | None, workers: int | None) -> None:
    """Start a local run's worker processes before this process imports the library: they import
    Polars, Arrow and Numba (~1 s) while it does, instead of after (see
    ``dataforge.executors.local.prestart``)."""
    if (executor or "local") == "local" and isinstance(workers, int) and workers > 1:
        from dataforge.executors.local import prestart

        prestart(workers)


def _prestart_pipeline(path: str, executor: str | None, workers: int | None) -> None:
    """:func:`_prestart` for ``dataforge run``: a document pipeline file on the local executor
    (options override the file's ``executor:``); anything unreadable is left to the run to report."""
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    if not isinstance(spec, dict) or "steps" not in spec:
        return
    section = spec.get("executor") or {}
    if not isinstance(section, dict):
        return
    _prestart(executor or section.get("kind"), workers if workers is not None else section.get("workers"))


def _api_kwargs(state: _State, opts: dict[str, Any]) -> dict[str, Any]:
    """The shared options as keyword arguments of ``dataforge.clean`` / ``dataforge.dedup``."""
    return {
        "text_field": opts["text_field"],
        "id_field": opts["id_field"],
        "format": opts["fmt"],
        "csv_delimiter": opts["csv_delimiter"],
        "shard_rows": opts["shard_rows"],
        "shard_bytes": opts["shard_bytes"],
        **({"task_bytes": opts["task_bytes"]} if opts["task_bytes"] is not None else {}),
        "output_format": opts["output_format"],
        "compression": opts["compression"],
        "keep_dropped": opts["keep_dropped"],
        "max_reject_rate": opts["max_reject_rate"],
        "executor": opts["executor"] or "local",
        "workers": opts["workers"] or 1,
        "ray_address": opts["ray_address"],
        "overwrite": opts["overwrite"],
        "force": opts["force"],
        "progress": _progress(state),
    }


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--preset",
    type=click.Choice(["gopher", "c4", "fineweb", "none"]),
    default="gopher",
    show_default=True,
    help="Quality filters.",
)
@click.option(
    "--pii",
    type=click.Choice(["redact", "detect", "off"]),
    default="redact",
    show_default=True,
    help="PII redaction.",
)
@click.option("--lang", multiple=True, help="Keep only this language (ISO 639-1); repeat for several.")
@click.option(
    "--lang-min-score",
    type=click.FloatRange(0, 1),
    default=0.65,
    show_default=True,
    help="Minimum language probability.",
)
@click.option(
    "--dedup/--no-dedup", default=True, show_default=True, help="Drop exact duplicates across all inputs."
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML with steps: and/or options: {step: {option: value}}.",
)
@_io_options
@pass_state
def clean(state: _State, inputs: tuple[str, ...], output: str, preset: str, pii: str, lang: tuple[str, ...],
          lang_min_score: float, dedup: bool, config: str | None, **opts: Any) -> None:  # fmt: skip
    """Normalize text, filter by quality, redact PII and drop exact duplicates.

    INPUTS are files, folders or globs of JSONL, Parquet, CSV or Arrow (plain, .gz or .zst).

    \b
    Examples:
      dataforge clean sample_data/pretraining -o out/clean
      dataforge clean 'data/*.jsonl.zst' -o out/c4 --preset c4 --lang en
      dataforge clean data/ -o out/x --text-field body --id-field newid --workers 2
      dataforge clean data/ -o out/x --executor ray --ray-address auto
    """
    with _errors(state):
        _prestart(opts["executor"], opts["workers"])
        report = dataforge.clean(
            list(inputs),
            output=output,
            preset=preset,
            pii=pii,
            lang=list(lang) or None,
            lang_min_score=lang_min_score,
            dedup=dedup,
            config=config,
            **_api_kwargs(state, opts),
        )
        _finish(state, report)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.8,
    show_default=True,
    help="Jaccard similarity that makes two documents duplicates.",
)
@click.option(
    "--num-perm", type=click.IntRange(2, 1024), default=128, show_default=True, help="MinHash permutations."
)
@click.option(
    "--bands",
    type=click.IntRange(min=1),
    default=None,
    help="LSH bands (with --rows; default: from the threshold).",
)
@click.option("--rows", type=click.IntRange(min=1), default=None, help="LSH rows per band (with --bands).")
@click.option("--shingle", default="word:5", show_default=True, help="word:N or char:N shingles.")
@click.option(
    "--normalize/--no-normalize",
    default=True,
    show_default=True,
    help="Lowercase, strip accents, punctuation and digits before shingling.",
)
@click.option(
    "--hash",
    "hash_",
    type=click.Choice(["xxh3", "sha1"]),
    default="xxh3",
    show_default=True,
    help="Shingle hash; sha1 gives datasketch-identical signatures.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Permutation seed (datasketch's seed).",
)
@click.option(
    "--keep",
    default="first",
    show_default=True,
    help="Kept document per cluster: first|last|longest|shortest|oldest|newest|field:NAME|field:-NAME.",
)
@click.option(
    "--date-field", default="date", show_default=True, help="Metadata field --keep oldest/newest reads."
)
@click.option(
    "--date-format",
    default=None,
    help="strptime format of --date-field (default: ISO 8601 and common layouts).",
)
@click.option(
    "--verify",
    type=click.Choice(["none", "estimate", "exact"]),
    default="exact",
    show_default=True,
    help="Check candidate pairs by exact or estimated Jaccard.",
)
@click.option(
    "--against", multiple=True, help="Reference files (repeatable): remove documents near-duplicating them."
)
@click.option(
    "--exact-first/--no-exact-first",
    default=False,
    show_default=True,
    help="Drop exact duplicates first (dedup.exact).",
)
@click.option(
    "--report-clusters", is_flag=True, help="Also write clusters/ and cluster_pairs/ tables for inspection."
)
@_io_options
@pass_state
def dedup(state: _State, inputs: tuple[str, ...], output: str, threshold: float, num_perm: int, bands: int | None,
          rows: int | None, shingle: str, normalize: bool, hash_: str, seed: int, keep: str, date_field: str,
          date_format: str | None, verify: str, against: tuple[str, ...], exact_first: bool, report_clusters: bool,
          **opts: Any) -> None:  # fmt: skip
    """Remove near-duplicate documents with MinHash LSH.

    Every kept row gets cluster_id and cluster_size; removed rows go to dropped/ with dup_of (the
    kept document's id), the similarity, and the reason near_duplicate or reference_duplicate.

    \b
    Examples:
      dataforge dedup sample_data/news -o out/news-dedup
      dataforge dedup data/ -o out/d --threshold 0.7 --shingle char:24 --keep longest --report-clusters
      dataforge dedup data/ -o out/d --hash sha1      # signatures identical to datasketch
      dataforge dedup train/ -o out/d --against eval/ # remove eval-set near-duplicates from train
      dataforge dedup data/ -o out/d --executor ray --workers 2
    """
    with _errors(state):
        _prestart(opts["executor"], opts["workers"])
        report = dataforge.dedup(
            list(inputs),
            output=output,
            threshold=threshold,
            num_perm=num_perm,
            bands=bands,
            rows=rows,
            shingle=shingle,
            normalize=normalize,
            hash=hash_,
            seed=seed,
            keep=keep,
            date_field=date_field,
            date_format=date_format,
            verify=verify,
            against=list(against),
            exact_first=exact_first,
            report_clusters=report_clusters,
            **_api_kwargs(state, opts),
        )
        _finish(state, report)


@cli.command("noise-report", context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--label-col", default="label", show_default=True, help="Column holding the given label.")
@click.option("--text-col", default=None, help="Text column (text mode; default 'text').")
@click.option("--feature-cols", default=None, help="Comma-separated feature columns (tabular mode).")
@click.option(
    "--pred-probs",
    default=None,
    help="Precomputed out-of-sample probabilities: FILE.npy or an input column holding lists (skips the model).",
)
@click.option(
    "--pred-probs-index",
    default=None,
    help="Column holding each row's row number in --pred-probs (when the file covers a larger set).",
)
@click.option(
    "--model", type=click.Choice(MODEL_CHOICES), default="auto", show_default=True, help="Model family."
)
@click.option(
    "--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Cross-validation folds."
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 5),
    default=2,
    show_default=True,
    help="Cross-validation rounds; later rounds train without the rows the previous round flagged.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Fold and model seed.")
@click.option(
    "--filter-by",
    type=click.Choice(FILTER_CHOICES),
    default="prune_by_class",
    show_default=True,
    help="cleanlab find_label_issues method.",
)
@click.option(
    "--rank-by",
    type=click.Choice(RANK_CHOICES),
    default="normalized_margin",
    show_default=True,
    help="cleanlab label quality score.",
)
@click.option("--outliers", is_flag=True, help="Also score outliers (cleanlab OutOfDistribution).")
@click.option(
    "--fix",
    type=click.Choice(("none", "drop", "relabel")),
    default="none",
    show_default=True,
    help="Write cleaned shards: drop flagged rows, or relabel confident ones (and drop the rest).",
)
@click.option(
    "--fixed-out",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for fixed shards [OUTPUT/fixed].",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="--fix relabel: relabel only when the suggested label's probability is at least this.",
)
@click.option(
    "--id-field", default="id", show_default=True, help="Id column (generated from file and line if absent)."
)
@click.option(
    "--format", "format_", type=click.Choice(FORMAT_CHOICES), default=None, help="Force the input format."
)
@_executor_options("Where folds run.", "Parallel folds.")
@click.option(
    "--shard-rows",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Rows per fixed shard.",
)
@click.option("--output-format", type=click.Choice(("arrow", "parquet")), default="arrow", show_default=True)
@click.option(
    "--max-reject-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Fail (exit 1) when more input than this is malformed.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing fixed output folder.")
@pass_state
def noise_report(state: _State, inputs: tuple[str, ...], output: str, label_col: str, text_col: str | None,
                 feature_cols: str | None, pred_probs: str | None, pred_probs_index: str | None, model: str, folds: int, rounds: int, seed: int,
                 filter_by: str, rank_by: str, outliers: bool, fix: str, fixed_out: str | None,
                 min_confidence: float, id_field: str, format_: str | None, executor: str, workers: int,
                 ray_address: str | None, shard_rows: int, output_format: str, max_reject_rate: float,
                 overwrite: bool) -> None:  # fmt: skip
    """Find label errors with cleanlab on out-of-sample probabilities, and optionally fix them.

    Writes OUTPUT/report.json, OUTPUT/report.html (open it in a browser: summary, noise matrix,
    score histogram, searchable table of flagged rows) and OUTPUT/issues.parquet (every row with
    its label quality score, is_issue and suggested label).

    \b
    Examples:
      dataforge noise-report sample_data/labels/20news.jsonl.gz -o out/noise
      dataforge noise-report data.jsonl -o out/noise --fix drop --fixed-out out/clean
      dataforge noise-report table.csv -o out/n --label-col y --feature-cols a,b,c --model hgb
      dataforge noise-report test.jsonl -o out/n --pred-probs probs.npy --filter-by both
    """
    with _errors(state):
        report = dataforge.noise_report(
            list(inputs),
            output=output,
            label_col=label_col,
            text_col=text_col,
            feature_cols=[c.strip() for c in feature_cols.split(",") if c.strip()] if feature_cols else None,
            pred_probs=pred_probs,
            pred_probs_index=pred_probs_index,
            id_field=id_field,
            format=format_,
            model=model,
            folds=folds,
            rounds=rounds,
            seed=seed,
            filter_by=filter_by,
            rank_by=rank_by,
            outliers=outliers,
            fix=fix,
            fixed_out=fixed_out,
            min_confidence=min_confidence,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            shard_rows=shard_rows,
            output_format=output_format,
            max_reject_rate=max_reject_rate,
            overwrite=overwrite,
        )
        if not state.quiet:
            for line in report.summary_lines():
                click.echo(line)
            click.echo(
                f"report: {report.output}/report.html, {report.output}/report.json, {report.output}/issues.parquet"
            )


@cli.group(context_settings=CONTEXT_SETTINGS)
def normalize() -> None:
    """Normalize structured records (EHR, SEC filings) into canonical Arrow tables and text.

    \b
    Examples:
      export DATAFORGE_DEID_SALT=$(openssl rand -hex 32)
      dataforge normalize ehr sample_data/ehr/synthea_fhir -o out/ehr --source fhir --render text,instruct
      dataforge normalize ehr sample_data/ehr/mimic_iv_demo -o out/mimic --source mimic --deid off
      dataforge normalize finance sample_data/finance/companyfacts -o out/fin --source companyfacts --render text
    """


def _records_summary(report: Any) -> None:
    _print_summary(report)
    tables = report.reports.get("tables", [])
    if tables:
        click.echo("tables: " + ", ".join(f"{t['table']} {t['rows']:,}" for t in tables))
    counters = report.global_info.get("counters", {})
    rendered = {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("rendered:")}
    if rendered:
        click.echo("rendered: " + ", ".join(f"{k} {v:,}" for k, v in sorted(rendered.items())))
    groups: dict[str, int] = {}
    for k, v in counters.items():
        head = k.split(":", 1)[0]
        if head not in ("rows", "rendered") and isinstance(v, int):
            groups[head] = groups.get(head, 0) + v
    if groups:
        click.echo(
            "counters: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(groups.items()))
            + " (details in report.html)"
        )
    for r in report.reject_samples[:3]:
        click.echo(f"  rejected ({r['reason']}): {r['error']}")


_RENDER_HELP = "Also render: text (stage-3 documents), instruct (stage-2 Q/A pairs); comma-separated."
_READ_WHERE = "Where the input files are read (the rest runs in this process)."
_READ_WORKERS = "Parallel file readers (processes, or Ray CPUs)."


@normalize.command("ehr", context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--source",
    required=True,
    type=click.Choice(["fhir", "synthea", "mimic", "omop"]),
    help="Input format: FHIR R4 bundles/NDJSON, Synthea CSV, MIMIC-IV tables or OMOP CDM CSV.",
)
@click.option(
    "--deid",
    type=click.Choice(["safe-harbor", "date-shift", "off"]),
    default="safe-harbor",
    show_default=True,
    help="De-identification: HIPAA Safe Harbor, per-patient date shift, or none.",
)
@click.option(
    "--salt-env",
    default=None,
    metavar="VAR",
    help="Environment variable holding the pseudonym salt [default: DATAFORGE_DEID_SALT].",
)
@click.option("--render", default=None, help=_RENDER_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the instruction questions.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option(
    "--max-reject-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Exit 1 (after writing) when more input records than this are rejected.",
)
@_executor_options(_READ_WHERE, _READ_WORKERS)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataforge output folder.")
@pass_state
def normalize_ehr(state: _State, inputs: tuple[str, ...], output: str, source: str, deid: str,
                  salt_env: str | None, render: str | None, seed: int, shard_rows: int,
                  max_reject_rate: float, executor: str, workers: int, ray_address: str | None,
                  overwrite: bool) -> None:  # fmt: skip
    """Normalize EHR records into canonical, de-identified tables (patient, encounter, condition,
    measurement, medication, procedure, note) with UCUM units, plus rendered text.

    Every input record ends kept, dropped with a reason, or rejected with file, row and value;
    OUTPUT/report.json holds the counts. The salt is read from the environment and never written.
    With --workers N or --executor ray, FHIR files are read in parallel (one task per file); the
    output is the same bytes.

    \b
    Examples:
      dataforge normalize ehr sample_data/ehr/synthea_fhir -o out/ehr --source fhir --workers 2
      dataforge normalize ehr bundles/ -o out/ehr --source fhir --executor ray --ray-address auto
    """
    with _errors(state):
        report = dataforge.normalize_ehr(
            list(inputs),
            output=output,
            source=source,
            deid=deid,
            salt_env=salt_env,
            render=render,
            seed=seed,
            shard_rows=shard_rows,
            max_reject_rate=max_reject_rate,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            overwrite=overwrite,
        )
        if not state.quiet:
            _records_summary(report)


@normalize.command("finance", context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--source",
    required=True,
    type=click.Choice(["companyfacts", "fsds", "xbrl"]),
    help="Input format: SEC companyfacts JSON, Financial Statement Data Sets, XBRL instance.",
)
@click.option("--render", default=None, help=_RENDER_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the instruction questions.")
@click.option("--shard-rows", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option(
    "--max-reject-rate",
    type=click.FloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="Exit 1 (after writing) when more input records than this are rejected.",
)
@_executor_options(_READ_WHERE, _READ_WORKERS)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataforge output folder.")
@pass_state
def normalize_finance(state: _State, inputs: tuple[str, ...], output: str, source: str,
                      render: str | None, seed: int, shard_rows: int, max_reject_rate: float,
                      executor: str, workers: int, ray_address: str | None, overwrite: bool) -> None:  # fmt: skip
    """Normalize SEC filings into one fact per (entity, concept, unit, period) with its latest value,
    credited to the first filing that reported that value, plus restatements (which filing changed
    what), derived Q4 values, accounting checks and rendered text.

    With --workers N or --executor ray, the files are read in parallel (one task per companyfacts
    file, XBRL instance or FSDS quarter); the output is the same bytes.
    """
    with _errors(state):
        report = dataforge.normalize_finance(
            list(inputs),
            output=output,
            source=source,
            render=render,
            seed=seed,
            shard_rows=shard_rows,
            max_reject_rate=max_reject_rate,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            overwrite=overwrite,
        )
        if not state.quiet:
            _records_summary(report)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(file_okay=False),
    help="Override the pipeline's output folder.",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Add only new input files to the output release (deduplicated against it); new release version.",
)
@click.option(
    "--task-bytes",
    type=ByteSize(),
    default=None,
    help="Override the file's input.task_bytes (most input one task reads, e.g. 64M; the output bytes do not depend on it).",
)
@_common_run_options
@pass_state
def run(state: _State, pipeline: str, output: str | None, incremental: bool, task_bytes: int | None,
        executor: str | None, workers: int | None, ray_address: str | None, overwrite: bool, force: bool) -> None:  # fmt: skip
    """Run a pipeline YAML file (paths in it are relative to the file).

    Document pipelines (input/steps/output): a rerun with the same inputs and config does
    nothing and says so; a rerun after a crash resumes and ends with the same bytes;
    --incremental processes only the new input files. normalize:, noise_report: and curriculum
    (stages:) files do the whole work each time and need --force to replace their output. Safe
    under cron: a second run of the same pipeline while one is going exits at once with code 75.

    \b
    Examples:
      dataforge run pipelines/demo.yaml
      dataforge run pipelines/clean_web.yaml --workers 2
      dataforge run pipelines/clean_web.yaml --executor ray --ray-address auto
      dataforge --log-json logs/run.jsonl run pipelines/clean_web.yaml --incremental   # from cron
    """
    with _errors(state):
        _prestart_pipeline(pipeline, executor, workers)
        report = dataforge.run(
            pipeline,
            output=output,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            task_bytes=task_bytes,
            overwrite=overwrite,
            force=force,
            incremental=incremental,
            progress=_progress(state),
        )
        _finish(state, report)


def _manifest_of(out: str) -> dict[str, Any]:
    try:
        return json.loads((Path(out) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _finish(state: _State, report: Any) -> None:
    if state.quiet:
        return
    if hasattr(report, "summary_lines"):  # a noise report (noise_report: pipeline file)
        for line in report.summary_lines():
            click.echo(line)
        click.echo(f"report: {report.output}/report.html")
        return
    if report.status == "up_to_date":
        rel = report.global_info.get("release") if isinstance(report.global_info, dict) else None
        if rel is not None or "release" in _manifest_of(report.output):
            click.echo(f"{report.output}: no new input files since the last release; nothing to do")
        else:
            click.echo(f"{report.output} is up to date (same inputs and config); nothing to do")
        return
    release = report.global_info.get("release") if isinstance(report.global_info, dict) else None
    if release and "increment" in release:
        inc = release["increment"]
        click.echo(
            f"release v{release['version']} of {report.output}: +{release['new_inputs']} input file(s), "
            f"rows in {inc['rows_in']:,} = kept {inc['kept']:,} + dropped {inc['dropped']:,} + rejected {inc['rejected']:,}"
        )
    if report.name.startswith("normalize-"):
        _records_summary(report)
        return
    _print_summary(report)
    line = _minhash_line(report.global_info)
    if line:
        click.echo(line)


def _minhash_line(global_info: dict[str, Any]) -> str:
    """One line on the MinHash step: LSH parameters, candidate and verified pairs, clusters."""
    mh = global_info.get("dedup.minhash") if isinstance(global_info, dict) else None
    if not mh:
        return ""
    fin = mh.get("finalize", {})
    lsh = fin.get("lsh", {})
    at = lsh.get("probability", {}).get(f"{lsh.get('threshold', 0):.2f}")
    return (
        f"minhash: {lsh.get('bands')} bands x {lsh.get('rows')} rows (S-curve midpoint {lsh.get('midpoint')}, "
        f"P(candidate | J={lsh.get('threshold')}) = {at}); {fin.get('candidate_pairs', 0):,} candidate pairs, "
        f"{fin.get('verified_pairs', 0):,} verified, {fin.get('clusters', 0):,} clusters"
    )


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(file_okay=False),
    help="Output folder (overrides the curriculum's output.path).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataforge output folder.")
@click.option(
    "--shard-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows per stage shard (overrides output.shard_rows; default 100000).",
)
@_executor_options(
    "Where source shards are read, filtered, counted and taken (selection and writing run in this process).",
    "Parallel shard readers (processes, or Ray CPUs).",
    from_file=True,
)
@pass_state
def curriculum(state: _State, config: str, output: str | None, overwrite: bool, shard_rows: int | None,
               executor: str | None, workers: int | None, ray_address: str | None) -> None:  # fmt: skip
    """Build stage-tagged training shards from the outputs of other dataforge commands.

    CONFIG is a curriculum YAML: stages (1 pretraining, 2 instruction pairs, 3 domain), each with
    sources (dataforge output folders), weights, a row or token budget and quality requirements
    (where, require_steps). Writes OUT/stage-<n>/part-*.arrow, manifest.json and report.json
    (format: docs/curriculum.md). With --workers N or --executor ray, the source shards are read in
    parallel (one task per shard); the output is the same bytes.

    \b
    Examples:
      dataforge curriculum pipelines/curriculum.yaml
      dataforge curriculum pipelines/curriculum.yaml -o out/cur --overwrite --shard-rows 10000
      dataforge curriculum pipelines/curriculum.yaml -o out/cur --overwrite --workers 2
      dataforge inspect out/demo-curriculum
    """
    from dataforge.curriculum import build_curriculum

    with _errors(state):
        report = build_curriculum(
            config,
            output=output,
            overwrite=overwrite,
            shard_rows=shard_rows,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
        )
        if not state.quiet:
            _print_curriculum(report)


def _print_curriculum(report: Any) -> None:
    _print_summary(report)
    rows = report.reports.get("curriculum", [])
    _console().print(_curriculum_table([_curriculum_row(r) for r in rows], "stages"))
    written = report.ledger.steps[-1].counters if report.ledger.steps else {}
    click.echo(
        f"written: {written.get('rows_written', 0):,} rows ({written.get('repeated_rows', 0):,} repeats), "
        f"{written.get('tokens_written', 0):,} tokens; manifest: {report.output}/manifest.json"
    )


def _curriculum_row(r: dict[str, Any]) -> tuple[str, ...]:
    unit = " (tokens)" if r.get("mix_unit") == "tokens" else ""
    target = f"{r['target_rows']:,}"
    if r.get("target_tokens") is not None:
        target += f" (~{r['target_tokens']:,} tok)"
    realized = f"{r['realized_rows']:,}"
    if r.get("repeated_rows"):
        realized += f" ({r['repeated_rows']:,} rep)"
    return (
        f"{r['stage']} {r.get('stage_name') or ''}".strip(),
        str(r["source"]),
        f"{r['weight']:g} ({r['target_share']:.3f})",
        target,
        realized,
        f"{r['tokens']:,}",
        f"{r['realized_share']:.3f}{unit}",
    )


def _curriculum_table(rows: list[tuple[str, ...]], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("stage", "source", "weight (target share)", "target rows", "realized rows", "tokens",
                "realized share"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("stage", "source") else "right")  # type: ignore[arg-type]
    for row in rows:
        t.add_row(*row)
    return t


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--train-steps",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Steps of the tiny training run through the loader; 0 checks the shards only.",
)
@click.option("--stage", type=int, default=None, help="Stage to train on [default: the first].")
@click.option("--seq-len", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write an HTML page (shard checks, loss curve vs the unigram baseline) to this file.",
)
@pass_state
def validate(state: _State, out: str, train_steps: int, stage: int | None, seq_len: int, batch_size: int,
             seed: int, as_json: bool, report_path: str | None) -> None:  # fmt: skip
    """Check a curriculum output and train a tiny model on it through the loader.

    Every shard's size, sha256, schema, rows and tokens are checked against the manifest; then a
    byte-level language model (CPU torch, optional extra) trains for --train-steps steps through
    dataforge.train.ShardDataset and must reach a loss below the unigram baseline. Exit 1 when a
    check fails.

    \b
    Examples:
      dataforge validate out/demo-curriculum
      dataforge validate out/demo-curriculum --stage 3 --train-steps 300
      dataforge validate out/demo-curriculum --train-steps 0      # checksums and schemas only
      dataforge validate out/demo-curriculum --report validation.html
    """
    from dataforge.train.validate import validate as run_validate

    with _errors(state):
        result = run_validate(
            out, train_steps=train_steps, stage=stage, seq_len=seq_len, batch_size=batch_size, seed=seed
        )
        if report_path is not None:  # written before the verdict: a failing run is the one to look at
            from dataforge.html.validate import render_validation
            from dataforge.io.shards import write_bytes_atomic

            page = render_validation(json.loads(json.dumps(result.to_dict(), default=str)))
            try:
                write_bytes_atomic(report_path, page.encode("utf-8"))
            except OSError as exc:
                raise OutputError(f"cannot write {report_path}: {exc.strerror or exc}") from None
        if as_json:
            click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        elif not state.quiet:
            click.echo(
                f"{out}: {result.shards_checked} shard(s), {result.rows:,} rows, {result.tokens:,} tokens checked "
                f"against the manifest: {'ok' if not result.problems else f'{len(result.problems)} problem(s)'}"
            )
            for p in result.problems:
                click.secho(f"  {p}", fg="red")
            t = result.train
            if t is not None:
                verdict = "below" if t.passed else "NOT below"
                click.echo(
                    f"training (stage {t.stage}, {t.steps} steps x {t.batch_size} x {t.seq_len} tokens): loss "
                    f"{t.first_loss:.3f} -> {t.final_loss:.3f} nats/token, {verdict} the unigram baseline "
                    f"{t.unigram_baseline:.3f}; {t.tokens_per_s:,.0f} tokens/s"
                )
        if not result.ok:
            what = (
                "shard checks failed"
                if result.problems
                else "the loss did not fall below the unigram baseline"
            )
            raise DataError(f"{out}: validation failed: {what}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--rows", type=click.IntRange(min=0), default=3, show_default=True, help="Sample rows to show.")
@click.option("--verify", is_flag=True, help="Check every shard's size and sha256 against the manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_state
def inspect(state: _State, out: str, rows: int, verify: bool, as_json: bool) -> None:
    """Show an output folder: counts, steps, shards, schema and sample rows.

    \b
    Examples:
      dataforge inspect out/demo
      dataforge inspect out/demo --verify --rows 0
      dataforge inspect out/demo --json | jq .counts
    """
    from dataforge.inspect import inspect_output

    with _errors(state):
        info = inspect_output(out, rows=rows, verify=verify)
        if as_json:
            click.echo(json.dumps(info, indent=2, default=str))
            return
        _print_inspect(info)


def _print_inspect(info: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    c = info["counts"]
    if info.get("kind") == "noise_report":
        _print_noise_inspect(info)
        return
    console.print(
        f"[bold]{info['path']}[/bold]  ({info.get('name')}, dataforge {info.get('dataforge_version')})"
    )
    console.print(
        f"rows in {c.get('rows_in', 0):,} = kept {c.get('kept', 0):,} + dropped {c.get('dropped', 0):,} + "
        f"rejected {c.get('rejected', 0):,}"
    )
    if "verified" in info:
        console.print("checksums: [green]all shards match the manifest[/green]")
    led = info.get("ledger")
    if led:
        t = Table(title="steps", title_justify="left")
        for col in ("step", "rows in", "kept", "dropped by reason"):
            t.add_column(col)
        for s in led["steps"]:
            why = ", ".join(f"{r}={n}" for r, n in sorted(s["dropped"].items(), key=lambda kv: -kv[1])) or "-"
            t.add_row(s["step"], f"{s['rows_in']:,}", f"{s['kept']:,}", why)
        console.print(t)
        if led.get("rejected_by_reason"):
            console.print("rejected: " + ", ".join(f"{r}={n}" for r, n in led["rejected_by_reason"].items()))
        for s in led["steps"]:  # what a step found without dropping (PII matches, ...)
            if s.get("counters") and not s["step"].startswith(("normalize.ehr", "normalize.finance")):
                console.print(
                    f"{s['step']}: " + ", ".join(f"{k}={v:,}" for k, v in sorted(s["counters"].items()))
                )
    line = _minhash_line(info.get("global_info", {}))
    if line:
        console.print(line)
    t = Table(title="shards", title_justify="left")
    for col in ("group", "shards", "rows", "bytes"):
        t.add_column(col)
    for group in ("shards", "dropped", "rejects"):
        entries = info.get(group, [])
        t.add_row(
            group,
            str(len(entries)),
            f"{sum(e['rows'] for e in entries):,}",
            f"{sum(e['bytes'] for e in entries):,}",
        )
    console.print(t)
    if info.get("tables"):  # a records output: canonical tables and rendered stages
        t = Table(title="tables", title_justify="left")
        for col in ("table", "schema", "rows"):
            t.add_column(col)
        for name, tinfo in info["tables"].items():
            t.add_row(name, tinfo["schema"], f"{tinfo['rows']:,}")
        for name, sinfo in info.get("stages", {}).items():
            t.add_row(f"{name} (stage {sinfo['stage']})", sinfo["schema"], f"{sinfo['rows']:,}")
        console.print(t)
    if info.get("curriculum"):  # a curriculum output: stages, sources, target vs realized mix
        rows = [
            _curriculum_row(
                {**src, "stage": st["stage"], "stage_name": st["name"], "mix_unit": st["mix_unit"]}
                | {"source": src["name"], "target_tokens": None}
            )
            for st in info["curriculum"]
            for src in st["sources"]
        ]
        console.print(_curriculum_table(rows, "curriculum"))
        for st in info["curriculum"]:
            budget = ", ".join(f"{k} {v:,}" for k, v in (st["budget"] or {}).items()) or "all available"
            console.print(
                f"stage {st['stage']} ({st['name']}, {st['schema']}): {st['rows']:,} rows, {st['tokens']:,} tokens, "
                f"{st['shards']} shard(s); budget {budget}; seed {st['seed']}"
            )
    fields = info.get("schema", {}).get("fields", [])
    if fields:
        console.print("schema: " + ", ".join(f"{f['name']}: {f['type']}" for f in fields))
    if info.get("timings"):
        t = info["timings"]
        console.print(
            f"run: {t.get('total', sum(t.values())):.1f} s, peak memory {info.get('peak_rss_mb', 0):,.0f} MiB; "
            f"report: {info['path']}/report.html"
        )
    for rec in info.get("samples", []):
        console.print({k: v for k, v in rec.items() if v is not None})


def _print_noise_inspect(info: dict[str, Any]) -> None:
    from rich.table import Table

    console = _console()
    c = info["counts"]
    console.print(f"[bold]{info['path']}[/bold]  (noise report, dataforge {info.get('dataforge_version')})")
    console.print(
        f"rows in {c['rows_in']:,} = used {c['rows_used']:,} + rejected {c['rejected']:,}; flagged {c['flagged']:,}"
        f" (cleanlab estimate {c['issues_estimate']:,}); label health {info['health']['overall_label_health_score']:.3f}"
    )
    t = Table(title="issues by class", title_justify="left")
    for col in ("class", "examples", "flagged", "label noise", "label quality"):
        t.add_column(col)
    for r in info["per_class"]:
        t.add_row(
            str(r["class"]),
            f"{r['examples']:,}",
            f"{r['flagged']:,}",
            f"{r['label_noise']:.3f}",
            f"{r['label_quality']:.3f}",
        )
    console.print(t)
    if info["top_issues"]:
        t = Table(title="lowest label quality", title_justify="left")
        for col in ("rank", "id", "given", "suggested", "quality"):
            t.add_column(col)
        for r in info["top_issues"]:
            t.add_row(
                str(r["rank"]),
                str(r["id"]),
                str(r["given_label"]),
                str(r["suggested_label"]),
                f"{r['label_quality']:.4f}",
            )
        console.print(t)
    for w in info.get("warnings", []):
        console.print(f"warning: {w}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser afterwards.")
@pass_state
def report(state: _State, out: str, open_browser: bool) -> None:
    """Rebuild OUT/report.html from the run's files (report.json and the shards it lists).

    Works on every output folder: clean, dedup, run, normalize, curriculum and noise-report.
    The page is self-contained (no network): open it in any browser. Use it after upgrading
    dataforge, or when a run could not write its page.

    \b
    Examples:
      dataforge report out/demo
      dataforge report out/noise --open
    """
    from dataforge.html import write_report

    with _errors(state):
        path = write_report(out)
        click.echo(f"wrote {path}")
        if open_browser:
            import webbrowser

            webbrowser.open(path.resolve().as_uri())


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("name", required=False)
@pass_state
def steps(state: _State, name: str | None) -> None:
    """List the pipeline steps, or show one step's options and defaults.

    \b
    Examples:
      dataforge steps
      dataforge steps filter.gopher_quality
    """
    import dataclasses

    from dataforge.registry import step_class, step_names, step_options

    with _errors(state):
        if name is None:
            for n in step_names():
                cls = step_class(n)
                click.echo(
                    f"{n:28s} {cls.scope:6s} {cls.summary or (cls.__doc__ or '').strip().splitlines()[0]}"
                )
            return
        cls = step_class(name)
        click.echo(f"{name} ({cls.scope} step)\n")
        click.echo((cls.__doc__ or "").strip() + "\n")
        for f in step_options(name):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            click.echo(f"  {f.name} = {default!r}")


def main() -> None:
    """Console-script entry point."""
    # one run per process: a pool kept for a next run would only delay the exit
    os.environ.setdefault("DATAFORGE_POOL_IDLE", "0")
    try:
        cli(prog_name="dataforge")
    finally:
        if "dataforge.executors.local" in sys.modules:  # workers started ahead and not used
            sys.modules["dataforge.executors.local"].release_idle_pools()


if __name__ == "__main__":  # pragma: no cover
    main()
