"""Read SEC Financial Statement Data Sets (quarterly zip, or a folder with sub/num/tag/pre .txt).

Files are tab-separated UTF-8 with a header and no quoting. ``num.txt`` rows are the input records
(``source_row`` = 0-based data row of ``num.txt``, ``source_ref`` = ``num:adsh=..,tag=..,ddate=..,
qtrs=..``); ``sub.txt``, ``tag.txt`` and ``pre.txt`` are lookups (``role: "lookup"``) and are not
counted; ``readme.htm`` is listed as skipped.

Decisions:

* Members of a zip are extracted to a temporary folder and read with
  :func:`dataforge.records.model.read_csv_table` (``delimiter="\\t"``, ``quoting=False``), so ragged
  rows and bad UTF-8 are rejected exactly as for other CSV sources. Files are named
  ``<zip>!num.txt`` in provenance.
* Join ``num.adsh = sub.adsh`` for cik, name (``entity``), form, filed, fye (``fye_hint``), fy/fp
  (kept as ``filing_fy``/``filing_fp``, not used for fiscal periods). An adsh missing from sub is a
  reject (``unknown_submission``).
* Join ``(tag, version)`` to ``tag.txt`` for ``datatype`` and ``tlabel`` (``label``). ``taxonomy`` is
  the part of ``version`` before ``/`` (``us-gaap/2009`` -> ``us-gaap``); a version equal to an
  accession number is a filer extension, taxonomy ``custom``.
* Units: FSDS writes the currency alone (``USD``) for per-share tags. When ``tag.datatype`` is
  ``perShare`` and ``uom`` is a currency, the unit becomes ``USD/shares`` like companyfacts and XBRL.
* Periods: ``ddate`` is the end date rounded to a month end; ``qtrs`` the duration in quarters
  (0 = instant). ``end = ddate``; for ``qtrs > 0``, ``start`` = the first day of the month
  ``3*qtrs - 1`` months before ``ddate``'s month (``20090630``/``qtrs=2`` -> 2009-01-01..2009-06-30).
  Dates are therefore month-granular: a 52/53-week filer's true dates may differ by a few days.
* ``segments`` (``Axis=Member;``, sorted, ``;``-joined, trailing ``;`` removed) become ``dimensions``.
  ``coreg`` (a co-registrant, not the consolidated entity) always comes with a ``LegalEntity=...``
  segment in the data; when it does not, ``LegalEntity=<coreg>`` is added, so co-registrant facts are
  never mistaken for consolidated ones (consolidated = ``dimensions`` is null).
* ``pre.txt`` gives ``statement`` (``BS``, ``IS``, ``CF``, ``EQ``, ``CI``...): the first presentation
  line (lowest report, line) of the tag in that submission.
* Each data set (a quarter: one zip or folder) is read on its own, its four files joined
  together; data sets are independent of each other, so a parallel read (:func:`fsds_tasks`)
  reads one data set per task (a single quarter is one task).
* Values: ``value`` stripped of surrounding whitespace is a plain decimal (``-12.5``; no exponent,
  no thousands separators) that fits ``Decimal(38, 10)``; ``value_text`` is that stripped text.
* Rejects: ``unknown_submission``, ``bad_date`` (ddate not a yyyymmdd date), ``bad_qtrs`` (not a
  whole number in 0..400), ``missing_unit``, ``bad_value`` (not a decimal number; out of range;
  more than 10 fractional digits), plus the CSV-level ``ragged_row``/``bad_utf8``/``truncated``.
  A null ``value`` (an XBRL nil fact) is dropped with reason ``nil``.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from dataforge.errors import InputError
from dataforge.records.finance.common import DECIMAL, VALUE_RE, decimal_text_error, expand_paths, fit_raw
from dataforge.records.model import CsvTable, Extract, display_name, read_csv_table

log = logging.getLogger(__name__)

SOURCE = "fsds"
MEMBERS = ("sub.txt", "num.txt", "tag.txt", "pre.txt")
NUM_REQUIRED = ("adsh", "tag", "version", "ddate", "qtrs", "uom", "value")
SUB_REQUIRED = ("adsh", "cik", "name", "form", "filed")
# a duration longer than a century is not a reporting period (and would overflow date arithmetic)
MAX_QTRS = 400


def read_fsds(paths: str | Path | Iterable[str | Path], *, root: str | Path | None = None) -> Extract:
    """Read FSDS quarterly archives (``2009q3.zip``) or folders holding the four ``.txt`` files.

    Args:
        paths: zip files, or folders (a folder with ``num.txt`` is one data set; otherwise its
            ``*.zip`` files are read).
        root: provenance paths are written relative to ``root`` when given.

    Returns:
        An Extract with table ``raw_fact`` (one row per usable ``num.txt`` row).
    """
    extract = Extract.empty(SOURCE)
    frames: list[pl.DataFrame] = []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for p in paths:
        path = Path(p)
        if path.is_dir() and (path / "num.txt").is_file():
            frames.append(_read_dataset(path, display_name(path, root), extract))
            continue
        for file in expand_paths([path], patterns=("*.zip",)):
            name = display_name(file, root)
            if not zipfile.is_zipfile(file):
                msg = f"{name}: not a zip archive (expected an FSDS quarterly zip or a folder with num.txt)"
                raise InputError(msg)
            with tempfile.TemporaryDirectory(prefix="dataforge-fsds-") as tmp:
                with zipfile.ZipFile(file) as zf:
                    members = {Path(m).name: m for m in zf.namelist() if not m.endswith("/")}
                    for member in members:
                        if member not in MEMBERS:
                            extract.inputs.append(
                                {
                                    "path": f"{name}!{member}",
                                    "role": "skipped",
                                    "table": member,
                                    "rows": 0,
                                    "reason": "not a data file (documentation)",
                                }
                            )
                    for member in MEMBERS:
                        if member in members:
                            try:
                                content = zf.read(members[member])
                            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                                msg = f"{name}!{member}: damaged zip member: {exc}"
                                raise InputError(msg) from None
                            (Path(tmp) / member).write_bytes(content)
                frames.append(_read_dataset(Path(tmp), f"{name}!", extract, joiner=""))
    extract.tables["raw_fact"] = pl.concat(frames) if frames else fit_raw(pl.DataFrame())
    log.info("fsds: %d num rows, %d usable", extract.rows_in, extract.tables["raw_fact"].height)
    return extract


def fsds_tasks(
    paths: str | Path | Iterable[str | Path], *, root: str | Path | None = None
) -> tuple[Extract, list[Callable[[], Extract]]]:
    """:func:`read_fsds` as independent tasks, one per data set (zip or folder), for an executor.

    Returns an empty extract and the tasks; :meth:`Extract.concat` of the extract and the tasks'
    results, in order, is what :func:`read_fsds` returns.
    """
    sets: list[Path] = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(p)
        if path.is_dir() and (path / "num.txt").is_file():
            sets.append(path)
        else:
            sets.extend(expand_paths([path], patterns=("*.zip",)))
    return Extract.empty(SOURCE), [functools.partial(read_fsds, [s], root=root) for s in sets]


def _read_dataset(folder: Path, label: str, extract: Extract, *, joiner: str = "/") -> pl.DataFrame:
    """Read one data set (``folder`` holds the .txt files; ``label`` + joiner + member names files)."""

    def name(member: str) -> str:
        return f"{label}{joiner}{member}"

    for member in ("sub.txt", "num.txt"):
        if not (folder / member).is_file():
            msg = f"{name(member)}: missing (an FSDS data set needs sub.txt and num.txt)"
            raise InputError(msg)
    sub = _lookup(folder / "sub.txt", name("sub.txt"), "sub", extract, SUB_REQUIRED)
    tag = (
        _lookup(folder / "tag.txt", name("tag.txt"), "tag", extract, ("tag", "version", "datatype"))
        if (folder / "tag.txt").is_file()
        else None
    )
    pre = (
        _lookup(folder / "pre.txt", name("pre.txt"), "pre", extract, ("adsh", "tag", "version", "stmt"))
        if (folder / "pre.txt").is_file()
        else None
    )
    before = extract.rows_in
    num = read_csv_table(
        folder / "num.txt",
        extract,
        table="num",
        delimiter="\t",
        quoting=False,
        required=NUM_REQUIRED,
        name=name("num.txt"),
    )
    extract.inputs.append(
        {"path": num.path, "role": "records", "table": "num", "rows": extract.rows_in - before}
    )
    return _facts(num, sub, tag, pre, extract)


def _lookup(path: Path, name: str, table: str, extract: Extract, required: tuple[str, ...]) -> pl.DataFrame:
    scratch = Extract.empty(SOURCE)  # lookups are not records: their rows and rejects are not counted
    t = read_csv_table(
        path, scratch, table=table, delimiter="\t", quoting=False, required=required, name=name
    )
    if scratch.rejects.height:
        extract.counters[f"lookup_rejects:{table}"] += scratch.rejects.height
        log.warning("%s: %d unreadable lookup rows ignored", name, scratch.rejects.height)
    extract.inputs.append({"path": name, "role": "lookup", "table": table, "rows": t.frame.height})
    return t.frame


def _facts(
    num: CsvTable, sub: pl.DataFrame, tag: pl.DataFrame | None, pre: pl.DataFrame | None, extract: Extract
) -> pl.DataFrame:
    name = num.path
    f = num.frame
    for col in ("segments", "coreg", "footnote"):
        if col not in f.columns:
            f = f.with_columns(pl.lit(None, dtype=pl.Utf8).alias(col))
    subcols = sub.select(
        "adsh",
        pl.col("cik").cast(pl.Int64, strict=False).alias("cik"),
        pl.col("name").alias("entity"),
        "form",
        pl.col("filed").str.to_date("%Y%m%d", strict=False).alias("filed"),
        (pl.col("fye") if "fye" in sub.columns else pl.lit(None, dtype=pl.Utf8)).alias("fye_hint"),
        (pl.col("fy").cast(pl.Int32, strict=False) if "fy" in sub.columns else pl.lit(None, pl.Int32)).alias(
            "filing_fy"
        ),
        (pl.col("fp") if "fp" in sub.columns else pl.lit(None, dtype=pl.Utf8)).alias("filing_fp"),
        pl.lit(True).alias("_in_sub"),
    ).unique("adsh", keep="first")
    f = f.join(subcols, on="adsh", how="left")
    if tag is not None:
        tagcols = tag.select(
            "tag",
            "version",
            "datatype",
            (pl.col("tlabel") if "tlabel" in tag.columns else pl.lit(None, dtype=pl.Utf8)).alias("label"),
        ).unique(["tag", "version"], keep="first")
        f = f.join(tagcols, on=["tag", "version"], how="left")
    else:
        f = f.with_columns(
            pl.lit(None, dtype=pl.Utf8).alias("datatype"), pl.lit(None, dtype=pl.Utf8).alias("label")
        )
    if pre is not None:
        order = [pl.col("report").cast(pl.Int64, strict=False), pl.col("line").cast(pl.Int64, strict=False)]
        precols = (
            pre.sort(order, nulls_last=True)
            .group_by(["adsh", "tag", "version"], maintain_order=True)
            .agg(pl.col("stmt").first().alias("statement"))
        )
        f = f.join(precols, on=["adsh", "tag", "version"], how="left")
    else:
        f = f.with_columns(pl.lit(None, dtype=pl.Utf8).alias("statement"))

    f = f.with_columns(
        pl.col("ddate").str.to_date("%Y%m%d", strict=False).alias("end"),
        pl.col("qtrs").str.strip_chars().cast(pl.Int64, strict=False).alias("_q"),
        pl.col("value").str.strip_chars().alias("_v"),
    )
    # fractional zeros beyond the 10 kept digits change nothing (1.50000000000000 == 1.5)
    f = f.with_columns(
        pl.when(pl.col("_v").str.contains(r"^[+-]?[0-9]+\.[0-9]+$"))
        .then(pl.col("_v").str.replace(r"\.?0+$", ""))
        .otherwise(pl.col("_v"))
        .alias("_vnum")
    )
    raw = pl.concat_str(
        [pl.col(c).fill_null("") for c in num.header if c in num.frame.columns], separator="\t"
    )
    problems = (
        pl.when(pl.col("_in_sub").is_null())
        .then(pl.lit("unknown_submission"))
        .when(pl.col("end").is_null())
        .then(pl.lit("bad_date"))
        .when(pl.col("_q").is_null() | (pl.col("_q") < 0) | (pl.col("_q") > MAX_QTRS))
        .then(pl.lit("bad_qtrs"))
        .when(pl.col("uom").is_null() | (pl.col("uom").str.strip_chars() == ""))
        .then(pl.lit("missing_unit"))
        .when(pl.col("_v").is_not_null() & ~pl.col("_vnum").str.contains(VALUE_RE))
        .then(pl.lit("bad_value"))
        .otherwise(None)
    )
    f = f.with_columns(problems.alias("_reason"))
    where = pl.format("{} line {}: ", pl.lit(name), pl.col("_line"))

    def cell(c: str) -> pl.Expr:  # pl.format is null when any part is: show an empty cell as ''
        return pl.col(c).fill_null("")

    error = (
        pl.when(pl.col("_reason") == "unknown_submission")
        .then(pl.format("{}adsh {} is not in sub.txt", where, cell("adsh")))
        .when(pl.col("_reason") == "bad_date")
        .then(pl.format("{}ddate '{}' is not a yyyymmdd date", where, cell("ddate")))
        .when(pl.col("_reason") == "bad_qtrs")
        .then(
            pl.format(
                "{}qtrs '{}' is not a whole number of quarters (0..{})", where, cell("qtrs"), pl.lit(MAX_QTRS)
            )
        )
        .when(pl.col("_reason") == "missing_unit")
        .then(pl.format("{}uom is empty (tag {}, value {})", where, cell("tag"), cell("value")))
        .otherwise(pl.format("{}{} (tag {})", where, pl.col("_why"), cell("tag")))
    )
    bad = f.filter(pl.col("_reason").is_not_null())
    bad = bad.with_columns(
        pl.when(pl.col("_reason") == "bad_value")
        .then(pl.col("_v").map_elements(decimal_text_error, return_dtype=pl.Utf8))
        .otherwise(None)
        .alias("_why")
    )
    if bad.height:
        extract.reject_frame(
            bad.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                pl.col("_line").alias("source_line"),
                pl.lit("num").alias("table"),
                pl.col("_reason").alias("reason"),
                error.alias("error"),
                raw.cast(pl.Binary).alias("raw"),
            )
        )
    f = f.filter(pl.col("_reason").is_null())
    ref = pl.format(
        "num:adsh={},tag={},ddate={},qtrs={},uom={}",
        pl.col("adsh"),
        pl.col("tag"),
        pl.col("ddate"),
        pl.col("qtrs"),
        pl.col("uom"),
    )
    nil = f.filter(pl.col("_v").is_null())
    if nil.height:
        extract.drop_frame(
            nil.select(
                pl.lit(name).alias("source_file"),
                pl.col("_row").alias("source_row"),
                ref.alias("source_ref"),
                pl.lit("num").alias("table"),
                pl.lit("nil").alias("reason"),
                pl.lit("value is empty (nil fact)").alias("detail"),
            )
        )
    f = f.filter(pl.col("_v").is_not_null())

    segments = (
        pl.col("segments")
        .str.split(";")
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
        .list.sort()
    )
    f = f.with_columns(segments.alias("_segs"))
    f = f.with_columns(
        pl.when(
            pl.col("coreg").is_not_null()
            & ~pl.col("_segs").fill_null([]).list.contains(pl.format("LegalEntity={}", pl.col("coreg")))
        )
        .then(
            pl.concat_list(
                pl.col("_segs").fill_null([]), pl.format("LegalEntity={}", pl.col("coreg"))
            ).list.sort()
        )
        .otherwise(pl.col("_segs"))
        .alias("_segs")
    )
    dims = pl.when(pl.col("_segs").list.len() > 0).then(pl.col("_segs").list.join(";")).otherwise(None)
    months_back = (pl.col("_q") * 3 - 1).cast(pl.Utf8)
    start = (
        pl.when(pl.col("_q") == 0)
        .then(None)
        .otherwise(pl.col("end").dt.month_start().dt.offset_by(pl.format("-{}mo", months_back)))
    )
    uom = pl.col("uom").str.strip_chars()
    unit = (
        pl.when((pl.col("datatype") == "perShare") & uom.str.contains(r"^[A-Z]{3}$"))
        .then(pl.format("{}/shares", uom))
        .otherwise(uom)
    )
    taxonomy = (
        pl.when(pl.col("version").str.contains("/"))
        .then(pl.col("version").str.split("/").list.first())
        .otherwise(pl.lit("custom"))
    )
    out = f.select(
        "cik",
        "entity",
        taxonomy.alias("taxonomy"),
        pl.col("tag").alias("concept"),
        "label",
        unit.alias("unit"),
        pl.col("_vnum").cast(DECIMAL).alias("value"),
        pl.col("_v").alias("value_text"),
        pl.lit(None, dtype=pl.Utf8).alias("decimals"),
        start.alias("start"),
        "end",
        dims.alias("dimensions"),
        "datatype",
        "statement",
        "form",
        "filed",
        pl.col("adsh").alias("accession"),
        "filing_fy",
        "filing_fp",
        pl.lit(None, dtype=pl.Utf8).alias("frame"),
        "fye_hint",
        pl.lit(SOURCE).alias("source"),
        pl.lit(name).alias("source_file"),
        pl.col("_row").alias("source_row"),
        ref.alias("source_ref"),
    )
    return fit_raw(out)
