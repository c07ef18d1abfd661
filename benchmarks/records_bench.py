"""Records per second of ``dataforge normalize`` for each source, against plain parsing of the same files.

For every source it times, in this process:

* ``parse``: the baseline, reading the same files with no mapping at all: ``pyarrow.csv`` for CSV
  tables (all columns as strings), ``json.loads`` for FHIR bundles and companyfacts, ``zipfile`` +
  ``pyarrow.csv`` for FSDS, ``xml.etree`` for XBRL;
* ``read``: the dataforge reader (parse + map to canonical rows + accounting);
* ``e2e``: the whole ``normalize_ehr`` / ``normalize_finance`` run (units, validation,
  de-identification, text and instruction rendering, shards, manifest, report).

Records are input records (CSV rows, FHIR resources, companyfacts data points, FSDS num rows,
XBRL facts), the ledger's unit. Usage::

    .venv/bin/python benchmarks/records_bench.py                 # ../shared/data (full files)
    .venv/bin/python benchmarks/records_bench.py --data sample   # sample_data/ (what CI has)
    .venv/bin/python benchmarks/records_bench.py --repeat 3

Prints a Markdown table; figures are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

import dataforge
from dataforge.records.normalize import EHR_SOURCES, FINANCE_SOURCES, _reader

ROOT = Path(__file__).resolve().parent.parent


def _csv_rows(folder: Path) -> int:
    n = 0
    for f in sorted(folder.glob("*.csv*")):
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        n += pacsv.read_csv(pa.BufferReader(data)).num_rows
    return n


def _fhir_parse(folder: Path) -> int:
    n = 0
    for f in sorted(folder.rglob("*.json*")):
        b = json.loads(gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes())
        n += len(b.get("entry", [])) if b.get("resourceType") == "Bundle" else 1
    return n


def _companyfacts_parse(folder: Path) -> int:
    n = 0
    for f in sorted(folder.rglob("*.json*")):
        d = json.loads(gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes())
        for concepts in d.get("facts", {}).values():
            for c in concepts.values():
                for pts in c.get("units", {}).values():
                    n += len(pts)
    return n


def _fsds_parse(folder: Path) -> int:
    n = 0
    for z in sorted(folder.glob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            data = zf.read("num.txt")
        t = pacsv.read_csv(
            pa.BufferReader(data),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
        n += t.num_rows
    return n


def _xbrl_parse(folder: Path) -> int:
    n = 0
    for f in sorted(folder.rglob("*_htm.xml*")) or sorted(folder.rglob("*.xml*")):
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        root = ET.fromstring(data)
        n += sum(1 for el in root if el.get("contextRef") is not None)
    return n


def sources(data: str) -> list[tuple[str, str, Path, Callable[[Path], int]]]:
    if data == "sample":
        ehr, fin = ROOT / "sample_data" / "ehr", ROOT / "sample_data" / "finance"
        omop = ehr / "omop"
    else:
        ehr, fin = ROOT.parent / "shared" / "data" / "ehr", ROOT.parent / "shared" / "data" / "financial"
        omop = ehr / "omop_synthea27nj"
    return [
        ("ehr", "fhir", ehr / "synthea_fhir", _fhir_parse),
        ("ehr", "synthea", ehr / "synthea_csv", _csv_rows),
        ("ehr", "mimic", ehr / "mimic_iv_demo", _csv_rows),
        ("ehr", "omop", omop, _csv_rows),
        ("finance", "companyfacts", fin / "companyfacts", _companyfacts_parse),
        ("finance", "fsds", fin / "fsds", _fsds_parse),
        ("finance", "xbrl", fin / "xbrl", _xbrl_parse),
    ]


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def bench_one(
    domain: str, source: str, path: Path, baseline: Callable[[Path], int], repeat: int
) -> tuple[str, int, int, float, float, float, float]:
    t_parse, _ = best(lambda: baseline(path), repeat)
    read = _reader(EHR_SOURCES if domain == "ehr" else FINANCE_SOURCES, source, domain)
    t_read, ex = best(lambda: read([str(path)], root=str(path)), repeat)
    out = Path(tempfile.mkdtemp(prefix="records-bench-"))

    def e2e() -> object:
        kw = {"output": out / "o", "source": source, "render": "text,instruct", "overwrite": True}
        if domain == "ehr":
            return dataforge.normalize_ehr([str(path)], **kw)
        return dataforge.normalize_finance([str(path)], **kw)

    try:
        t_e2e, report = best(e2e, repeat)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    n = ex.rows_in  # type: ignore[attr-defined]
    return (source, n, report.kept, n / t_parse, n / t_read, n / t_e2e, t_read / t_parse)  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("shared", "sample"), default="shared")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("DATAFORGE_DEID_SALT", "benchmark-salt-not-secret")
    rows = []
    for domain, source, path, baseline in sources(args.data):
        if not path.exists():
            print(f"skip {source}: {path} not found")
            continue
        rows.append(bench_one(domain, source, path, baseline, args.repeat))
    print(f"data: {args.data}; best of {args.repeat}; records = input records (the ledger's unit)\n")
    print(
        "| source | records | kept | parse-only rec/s (baseline) | reader rec/s | end-to-end rec/s | reader time / parse time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s, n, kept, p, r, e, ratio in rows:
        print(f"| {s} | {n:,} | {kept:,} | {p:,.0f} | {r:,.0f} | {e:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
