"""Build the MIMIC-IV demo and OMOP samples in ``sample_data/ehr/`` from ``../shared/data/ehr``.

Run from the repository root: ``python sample_data/ehr/build_ehr_samples.py``. Rows are kept
verbatim (values unchanged, only the CSV quoting is re-written), patients are chosen by fixed
rules, dictionaries are cut to the codes the kept rows use, and gzip is written with mtime=0 so a
rebuild gives identical bytes.

* MIMIC-IV demo: 15 of the 80 ``subject_id``s (every table the MIMIC reader reads, mapped or
  dropped); ``d_labitems`` / ``d_icd_*_used`` / ``d_items`` cut to the codes used.
* OMOP (Eunomia Synthea27Nj): 10 of the 28 ``person_id``s (including the persons with a DEATH
  row); ``CONCEPT`` cut to the concept ids the kept rows reference.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("build_ehr_samples")

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO.parent / "shared" / "data" / "ehr"
OUT = Path(__file__).resolve().parent

MIMIC_TABLES = (
    "patients",
    "admissions",
    "diagnoses_icd",
    "procedures_icd",
    "labevents",
    "prescriptions",
    "omr",
    "transfers",
    "services",
    "icustays",
    "microbiologyevents",
    "outputevents",
)
MIMIC_PATIENTS = 15
OMOP_TABLES = (
    "PERSON",
    "DEATH",
    "VISIT_OCCURRENCE",
    "VISIT_DETAIL",
    "CONDITION_OCCURRENCE",
    "CONDITION_ERA",
    "PROCEDURE_OCCURRENCE",
    "DRUG_EXPOSURE",
    "MEASUREMENT",
    "OBSERVATION",
    "OBSERVATION_PERIOD",
    "DEVICE_EXPOSURE",
)
OMOP_COPY = ("VOCABULARY", "CDM_SOURCE")
OMOP_PERSONS = 10


def read(path: Path) -> tuple[list[str], list[list[str]]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def write(path: Path, header: list[str], rows: Iterable[list[str]]) -> int:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    n = 0
    for r in rows:
        w.writerow(r)
        n += 1
    data = buf.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(data)
    log.info("%s: %d rows, %d bytes", path.relative_to(REPO), n, path.stat().st_size)
    return n


def keep(
    header: list[str], rows: list[list[str]], column: str, pred: Callable[[str], bool]
) -> list[list[str]]:
    i = header.index(column)
    return [r for r in rows if pred(r[i])]


def build_mimic() -> None:
    src = SOURCE / "mimic_iv_demo"
    dst = OUT / "mimic_iv_demo"
    dst.mkdir(parents=True, exist_ok=True)
    tables = {t: read(src / f"{t}.csv.gz") for t in MIMIC_TABLES}
    header, rows = tables["patients"]
    ids = sorted(r[header.index("subject_id")] for r in rows)
    # every 5th subject in id order, then the first one with ICD-10 diagnoses and an omr blood
    # pressure if those are not yet among them (so every mapping path has real rows)
    chosen = set(ids[::5][: MIMIC_PATIENTS - 2])
    dh, drows = tables["diagnoses_icd"]
    icd10 = sorted({r[dh.index("subject_id")] for r in drows if r[dh.index("icd_version")] == "10"})
    oh, orows = tables["omr"]
    bp = sorted({r[oh.index("subject_id")] for r in orows if r[oh.index("result_name")] == "Blood Pressure"})
    for pool in (icd10, bp):
        if not chosen.intersection(pool):
            chosen.add(next(s for s in pool if s not in chosen))
    for s in ids:
        if len(chosen) >= MIMIC_PATIENTS:
            break
        chosen.add(s)
    kept: dict[str, tuple[list[str], list[list[str]]]] = {}
    for t, (h, rs) in tables.items():
        kept[t] = (h, keep(h, rs, "subject_id", chosen.__contains__))
        write(dst / f"{t}.csv.gz", *kept[t])

    def used(table: str, *cols: str) -> set[tuple[str, ...]]:
        h, rs = kept[table]
        idx = [h.index(c) for c in cols]
        return {tuple(r[i] for i in idx) for r in rs}

    h, rs = read(src / "d_labitems.csv.gz")
    items = {k[0] for k in used("labevents", "itemid")}
    write(dst / "d_labitems.csv.gz", h, keep(h, rs, "itemid", items.__contains__))
    h, rs = read(src / "d_items.csv.gz")
    items = {k[0] for k in used("outputevents", "itemid")}
    write(dst / "d_items.csv.gz", h, keep(h, rs, "itemid", items.__contains__))
    for table, d in (("diagnoses_icd", "d_icd_diagnoses_used"), ("procedures_icd", "d_icd_procedures_used")):
        h, rs = read(src / f"{d}.csv.gz")
        codes = used(table, "icd_code", "icd_version")
        ci, vi = h.index("icd_code"), h.index("icd_version")
        write(dst / f"{d}.csv.gz", h, [r for r in rs if (r[ci], r[vi]) in codes])
    shutil.copyfile(src / "LICENSE_ODbL.txt", dst / "LICENSE_ODbL.txt")


def build_omop() -> None:
    src = SOURCE / "omop_synthea27nj"
    dst = OUT / "omop"
    dst.mkdir(parents=True, exist_ok=True)
    tables = {t: read(src / f"{t}.csv.gz") for t in OMOP_TABLES}
    dh, drows = tables["DEATH"]
    dead = sorted({r[dh.index("person_id")] for r in drows}, key=int)
    vh, vrows = tables["VISIT_OCCURRENCE"]
    inpatient = sorted(
        {r[vh.index("person_id")] for r in vrows if r[vh.index("visit_concept_id")] == "9201"}, key=int
    )
    ph, prows = tables["PERSON"]
    everyone = sorted((r[ph.index("person_id")] for r in prows), key=int)
    chosen: list[str] = []
    for s in [*dead, *inpatient[:2], *everyone[::3]]:
        if s not in chosen and len(chosen) < OMOP_PERSONS:
            chosen.append(s)
    keep_ids = set(chosen)
    concepts: set[str] = set()
    for t, (h, rs) in tables.items():
        rows = keep(h, rs, "person_id", keep_ids.__contains__)
        cols = [i for i, c in enumerate(h) if c.endswith("concept_id")]
        for r in rows:
            concepts.update(r[i] for i in cols if r[i] not in ("", "0"))
        write(dst / f"{t}.csv.gz", h, rows)
    h, rs = read(src / "CONCEPT.csv.gz")
    write(dst / "CONCEPT.csv.gz", h, keep(h, rs, "concept_id", concepts.__contains__))
    for t in OMOP_COPY:
        write(dst / f"{t}.csv.gz", *read(src / f"{t}.csv.gz"))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not SOURCE.is_dir():
        log.error("source folder not found: %s", SOURCE)
        return 2
    build_mimic()
    build_omop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
