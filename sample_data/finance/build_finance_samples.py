"""Build ``sample_data/finance/`` from the shared SEC data (``../shared/data/financial``).

Run from the repository root: ``.venv/bin/python sample_data/finance/build_finance_samples.py``
(``--shared PATH`` to point elsewhere). The output is deterministic (sorted choices, fixed zip
timestamps), so re-running it gives byte-identical files.

* ``companyfacts/CIK0001640147_snowflake.json.gz``: copied as is.
* ``xbrl/aapl_10k_fy2023/aapl-20230930_htm.xml.gz`` (the instance) and ``metadata.json.gz``
  (accession number and filing date, which the instance lacks): copied as is. Linkbases are not used.
* ``fsds/2009q3_sample.zip``: the 2009q3 Financial Statement Data Set cut to 40 submissions, with all
  their ``num``/``pre`` rows, the ``tag`` rows those use, and the full ``readme.htm``. Lines are copied
  byte for byte in their original order. Submissions are chosen by rules, each for a test:

  1. every submission of a CIK with more than one submission (10-Q + 10-Q/A: dedup and restatements);
  2. the one 10-K;
  3. the smallest filer with co-registrant (``coreg``) rows;
  4. filers whose ``LiabilitiesAndStockholdersEquity`` is negative somewhere (a real tagging error the
     balance-sheet check must fail);
  5. the smallest filer reporting in CAD;
  6. the smallest filer with a fiscal year end other than December;
  7. then the smallest 10-Qs (by num rows) tagging consolidated ``Assets``, ``Liabilities`` and
     ``StockholdersEquity`` and ``EarningsPerShareBasic`` (identity and EPS checks on real balance
     sheets), until there are 40 submissions.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

log = logging.getLogger("build_finance_samples")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
N_SUBMISSIONS = 40
ZIP_TIME = (2024, 11, 22, 0, 0, 0)


def _lines(data: bytes) -> tuple[bytes, list[bytes]]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines[0], lines[1:]


def _cols(header: bytes) -> dict[str, int]:
    return {name.decode().strip(): i for i, name in enumerate(header.rstrip(b"\r").split(b"\t"))}


def choose(sub: list[list[str]], num: list[list[str]], sc: dict[str, int], nc: dict[str, int]) -> list[str]:
    rows_per = Counter(r[nc["adsh"]] for r in num)
    by_cik: dict[str, list[str]] = defaultdict(list)
    form = {}
    fye = {}
    for r in sub:
        by_cik[r[sc["cik"]]].append(r[sc["adsh"]])
        form[r[sc["adsh"]]] = r[sc["form"]]
        fye[r[sc["adsh"]]] = r[sc["fye"]]

    def smallest(adshs: set[str]) -> list[str]:
        return sorted(adshs, key=lambda a: (rows_per[a], a))

    chosen: list[str] = []

    def take(adshs: list[str]) -> None:
        for a in adshs:
            if a not in chosen and len(chosen) < N_SUBMISSIONS:
                chosen.append(a)

    for cik in sorted(by_cik):
        if len(by_cik[cik]) > 1:
            take(sorted(by_cik[cik]))
    take(sorted(a for a, f in form.items() if f == "10-K"))
    coreg = {r[nc["adsh"]] for r in num if r[nc["coreg"]]}
    take(smallest(coreg)[:1])
    negative = {
        r[nc["adsh"]]
        for r in num
        if r[nc["tag"]] == "LiabilitiesAndStockholdersEquity" and r[nc["value"]].startswith("-")
    }
    take(smallest(negative)[:1])
    cad = {r[nc["adsh"]] for r in num if r[nc["uom"]] == "CAD"}
    take(smallest(cad)[:1])
    take(smallest({a for a, f in fye.items() if f and f != "1231"})[:1])
    tags: dict[str, set[str]] = defaultdict(set)
    for r in num:
        if not r[nc["segments"]] and not r[nc["coreg"]]:
            tags[r[nc["adsh"]]].add(r[nc["tag"]])
    need = {"Assets", "Liabilities", "StockholdersEquity", "EarningsPerShareBasic"}
    take(smallest({a for a, t in tags.items() if need <= t and form[a] == "10-Q"}))
    return chosen


def build_fsds(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zf:
        data = {Path(n).name: zf.read(n) for n in zf.namelist()}
    out: dict[str, bytes] = {}
    sub_h, sub_l = _lines(data["sub.txt"])
    num_h, num_l = _lines(data["num.txt"])
    pre_h, pre_l = _lines(data["pre.txt"])
    tag_h, tag_l = _lines(data["tag.txt"])
    sc, nc, pc, tc = _cols(sub_h), _cols(num_h), _cols(pre_h), _cols(tag_h)

    def split(lines: list[bytes]) -> list[list[str]]:
        return [ln.rstrip(b"\r").decode("utf-8").split("\t") for ln in lines]

    sub, num, pre = split(sub_l), split(num_l), split(pre_l)
    keep = set(choose(sub, num, sc, nc))
    log.info("fsds: %d submissions kept", len(keep))
    sub_keep = [ln for ln, r in zip(sub_l, sub) if r[sc["adsh"]] in keep]
    num_keep = [ln for ln, r in zip(num_l, num) if r[nc["adsh"]] in keep]
    pre_keep = [ln for ln, r in zip(pre_l, pre) if r[pc["adsh"]] in keep]
    used = {(r[nc["tag"]], r[nc["version"]]) for r in num if r[nc["adsh"]] in keep}
    used |= {(r[pc["tag"]], r[pc["version"]]) for r in pre if r[pc["adsh"]] in keep}
    tag_keep = [ln for ln, r in zip(tag_l, split(tag_l)) if (r[tc["tag"]], r[tc["version"]]) in used]
    out["sub.txt"] = b"\n".join([sub_h, *sub_keep]) + b"\n"
    out["num.txt"] = b"\n".join([num_h, *num_keep]) + b"\n"
    out["pre.txt"] = b"\n".join([pre_h, *pre_keep]) + b"\n"
    out["tag.txt"] = b"\n".join([tag_h, *tag_keep]) + b"\n"
    out["readme.htm"] = data["readme.htm"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dst, "w") as zf:
        for name in ("sub.txt", "num.txt", "tag.txt", "pre.txt", "readme.htm"):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, out[name], compresslevel=9)
    log.info(
        "fsds: num %d rows, pre %d, tag %d -> %s (%d bytes)",
        len(num_keep),
        len(pre_keep),
        len(tag_keep),
        dst,
        dst.stat().st_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "financial")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    src = args.shared
    cf = HERE / "companyfacts"
    cf.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        src / "companyfacts" / "CIK0001640147_snowflake.json.gz", cf / "CIK0001640147_snowflake.json.gz"
    )
    xb = HERE / "xbrl" / "aapl_10k_fy2023"
    xb.mkdir(parents=True, exist_ok=True)
    for name in ("aapl-20230930_htm.xml.gz", "metadata.json.gz"):
        shutil.copyfile(src / "xbrl" / "aapl_10k_fy2023" / name, xb / name)
    build_fsds(src / "fsds" / "2009q3.zip", HERE / "fsds" / "2009q3_sample.zip")


if __name__ == "__main__":
    main()
