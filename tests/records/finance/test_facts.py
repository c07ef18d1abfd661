"""Which filing a fact, a restatement and a dropped report are credited to (facts.resolve_reports).

The inputs are small companyfacts files built from Snowflake's real data points (cik, entity,
concepts, periods, accessions, forms and dates of its 10-Ks), with an amendment added where a test
needs one, and a later FSDS quarter added to the real 2009 Q3 sample.
"""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from dataforge.records.finance import normalize_facts, read_companyfacts, read_fsds

D = decimal.Decimal
FSDS_ZIP = Path(__file__).resolve().parents[3] / "sample_data" / "finance" / "fsds" / "2009q3_sample.zip"
REVENUE = "RevenueFromContractWithCustomerExcludingAssessedTax"
FY23 = ("2022-02-01", "2023-01-31")  # Snowflake's fiscal 2023
K23, K24, K25 = "0001640147-23-000030", "0001640147-24-000101", "0001640147-25-000052"
K23A = "0001640147-23-000150"  # an amendment of the 2023 10-K (not in the real file)


def _real_points(cf_json: dict, concept: str, start: str | None, end: str) -> list[dict]:
    points = cf_json["facts"]["us-gaap"][concept]["units"]["USD"]
    return [dict(p) for p in points if p.get("start") == start and p["end"] == end]


def _normalize(tmp_path, cf_json: dict, concepts: dict[str, list[dict]]):
    doc = {
        "cik": cf_json["cik"],
        "entityName": cf_json["entityName"],
        "facts": {"us-gaap": {c: {"label": c, "units": {"USD": pts}} for c, pts in concepts.items()}},
    }
    path = tmp_path / "CIK0001640147.json.gz"
    path.write_bytes(gzip.compress(json.dumps(doc, default=str).encode(), mtime=0))
    return normalize_facts(read_companyfacts(path, root=tmp_path))


def _amendment(point: dict, *, val: int, filed: str = "2023-06-15") -> dict:
    return {**point, "val": val, "accn": K23A, "form": "10-K/A", "filed": filed}


def test_restatement_is_credited_to_the_amendment_that_made_it(tmp_path, cf_json, ledger_adds_up):
    k23, k24, k25 = _real_points(cf_json, REVENUE, *FY23)
    assert (k23["accn"], k24["accn"], k25["accn"], k25["frame"]) == (K23, K24, K25, "CY2022")
    old = k23["val"]
    new = old + 4_000_000
    # the 10-K/A of June 2023 restates fiscal 2023 revenue; the next two 10-Ks repeat the new value
    points = [{**k24, "val": new}, k23, {**k25, "val": new}, _amendment(k23, val=new)]
    norm = _normalize(tmp_path, cf_json, {REVENUE: points})
    ledger_adds_up(norm)

    fact = norm.tables["fact"].filter(~pl.col("derived")).row(0, named=True)
    assert (fact["value"], fact["accession"], fact["form"], fact["filed"]) == (
        D(new),
        K23A,
        "10-K/A",
        dt.date(2023, 6, 15),
    )
    assert (fact["frame"], fact["n_reports"], fact["restated"]) == ("CY2022", 4, True)

    rest = norm.tables["restatement"].sort("old_filed")
    got = rest.select("old_accession", "new_accession", "changed", "old_value", "new_value").rows()
    assert got == [
        (K23, K23A, True, D(old), D(new)),  # the amendment changed the 10-K's value
        (K24, K23A, False, D(new), D(new)),  # later 10-Ks repeat the amendment's value
        (K25, K23A, False, D(new), D(new)),
    ]
    assert rest["difference"][0] == D(4_000_000)
    assert set(rest["source_ref"]) == {f"us-gaap:{REVENUE}/USD[3]"}  # the amendment's record

    dropped = {r["source_ref"]: r for r in norm.dropped.iter_rows(named=True)}
    assert dropped[f"us-gaap:{REVENUE}/USD[1]"]["reason"] == "superseded"
    assert dropped[f"us-gaap:{REVENUE}/USD[1]"]["detail"].startswith(
        f"value {old} (10-K {K23} filed 2023-03-29) restated as {new} by 10-K/A {K23A} filed 2023-06-15"
    )
    for i, accn, filed in ((0, K24, "2024-03-26"), (2, K25, "2025-03-21")):
        r = dropped[f"us-gaap:{REVENUE}/USD[{i}]"]
        assert r["reason"] == "duplicate"
        assert r["detail"].startswith(
            f"value {new} (10-K {accn} filed {filed}) repeats the value first reported by "
            f"10-K/A {K23A} filed 2023-06-15 (us-gaap:{REVENUE}/USD[3])"
        )


def test_amendment_repeating_a_value_is_a_duplicate_of_the_original(tmp_path, cf_json):
    # real: Snowflake's assets at Jan 31, 2023, in the 10-K of 2023, three 10-Qs and the 2024 10-K
    assets = _real_points(cf_json, "Assets", None, "2023-01-31")
    assert len(assets) == 5 and (assets[0]["accn"], assets[-1]["accn"]) == (K23, K24)
    points = [*assets, _amendment(assets[0], val=assets[0]["val"])]
    norm = _normalize(tmp_path, cf_json, {"Assets": points})
    fact = norm.tables["fact"].row(0, named=True)
    assert (fact["accession"], fact["restated"], fact["frame"]) == (K23, False, "CY2022Q4I")
    assert norm.tables["restatement"].filter(pl.col("changed")).height == 0
    assert set(norm.tables["restatement"]["new_accession"]) == {K23}
    amended = norm.dropped.filter(pl.col("source_ref") == "us-gaap:Assets/USD[5]").row(0, named=True)
    assert amended["reason"] == "duplicate"
    assert f"10-K/A {K23A} filed 2023-06-15" in amended["detail"]
    assert f"first reported by 10-K {K23} filed 2023-03-29" in amended["detail"]


def test_value_history_with_a_reversal(tmp_path, cf_json):
    """v1 (10-K 2023), v1 again (10-K/A), v2 (10-K 2024), back to v1 (10-K 2025): every change is
    credited to the filing that made it, a repeat to the filing it repeats."""
    k23, k24, k25 = _real_points(cf_json, REVENUE, *FY23)
    v1, v2 = k23["val"], k23["val"] - 1_000
    points = [k23, _amendment(k23, val=v1), {**k24, "val": v2}, k25]
    norm = _normalize(tmp_path, cf_json, {REVENUE: points})
    fact = norm.tables["fact"].filter(~pl.col("derived")).row(0, named=True)
    assert (fact["value"], fact["accession"], fact["restated"]) == (D(v1), K25, True)
    got = (
        norm.tables["restatement"]
        .sort("old_filed")
        .select("old_accession", "new_accession", "changed")
        .rows()
    )
    assert got == [(K23, K24, True), (K23A, K23, False), (K24, K25, True)]
    reasons = dict(norm.dropped.select("source_ref", "reason").iter_rows())
    assert reasons == {
        f"us-gaap:{REVENUE}/USD[0]": "superseded",
        f"us-gaap:{REVENUE}/USD[1]": "duplicate",
        f"us-gaap:{REVENUE}/USD[2]": "superseded",
    }


def test_a_repeat_within_an_older_filing_is_not_a_restatement(tmp_path, cf_json):
    k23, k24, _ = _real_points(cf_json, REVENUE, *FY23)
    points = [k23, {**k23, "val": k23["val"] + 1}, k24 | {"val": k23["val"] + 5}]
    norm = _normalize(tmp_path, cf_json, {REVENUE: points})
    assert norm.tables["restatement"].select("old_accession", "new_accession", "changed").rows() == [
        (K23, K24, True)
    ]
    echo = norm.dropped.filter(pl.col("source_ref") == f"us-gaap:{REVENUE}/USD[1]").row(0, named=True)
    assert echo["reason"] == "conflict"
    assert f"us-gaap:{REVENUE}/USD[0]" in echo["detail"] and "same filing" in echo["detail"]


def _fsds_later_quarter(folder, *, adsh: str, repeat_of: str, tag: str, ddate: str, segments: str) -> None:
    """A 2009 Q4 data set with one later AES 10-Q whose ``num`` repeats a row of ``repeat_of``."""
    with zipfile.ZipFile(FSDS_ZIP) as zf:
        files = {m: zf.read(m).decode().splitlines() for m in ("sub.txt", "num.txt", "tag.txt")}
    folder.mkdir()
    sub_h = files["sub.txt"][0].split("\t")
    q2 = next(
        dict(zip(sub_h, ln.split("\t"))) for ln in files["sub.txt"] if ln.startswith("0001193125-09-167427")
    )
    q3 = {**q2, "adsh": adsh, "period": "20090930", "fp": "Q3", "filed": "20091106", "accepted": ""}
    (folder / "sub.txt").write_text("\n".join(["\t".join(sub_h), "\t".join(q3[c] for c in sub_h)]) + "\n")
    num_h = files["num.txt"][0].split("\t")
    rows = [dict(zip(num_h, ln.split("\t"))) for ln in files["num.txt"][1:]]
    (row,) = [
        r
        for r in rows
        if (r["adsh"], r["tag"], r["ddate"], r["qtrs"], r["segments"])
        == (repeat_of, tag, ddate, "0", segments)
    ]
    (folder / "num.txt").write_text(
        "\n".join(["\t".join(num_h), "\t".join({**row, "adsh": adsh}[c] for c in num_h)]) + "\n"
    )
    (folder / "tag.txt").write_text(
        "\n".join([files["tag.txt"][0], *(t for t in files["tag.txt"] if t.startswith(tag + "\t"))]) + "\n"
    )


def test_fsds_restatement_is_credited_to_the_filing_that_made_it(tmp_path, ledger_adds_up):
    """Real: AES's 10-Q (Aug 2009) reports noncontrolling interest at Dec 31, 2007 as 3,241 million;
    its 8-K of Sep 2009 recasts it as 3,181 million. Added: a 10-Q of the next quarter repeating
    3,181 million as a comparative. The change stays credited to the 8-K."""
    q10, k8, later = "0001193125-09-167427", "0001193125-09-191566", "0001193125-09-250001"
    tag = "StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest"
    seg = "EquityComponents=NoncontrollingInterest;"
    _fsds_later_quarter(
        tmp_path / "2009q4", adsh=later, repeat_of=k8, tag=tag, ddate="20071231", segments=seg
    )
    norm = normalize_facts(read_fsds([FSDS_ZIP, tmp_path / "2009q4"]))
    ledger_adds_up(norm)
    key = (
        (pl.col("concept") == tag)
        & (pl.col("dimensions") == "EquityComponents=NoncontrollingInterest")
        & (pl.col("end") == dt.date(2007, 12, 31))
    )
    fact = norm.tables["fact"].filter(key).row(0, named=True)
    assert (fact["value"], fact["accession"], fact["form"], fact["n_reports"]) == (
        D(3181000000),
        k8,
        "8-K",
        3,
    )
    rest = norm.tables["restatement"].filter(key).sort("old_filed")
    assert rest.select("old_accession", "new_accession", "changed").rows() == [
        (q10, k8, True),
        (later, k8, False),
    ]
    assert rest["difference"].to_list() == [D(-60000000), D(0)]
    later_ref = f"num:adsh={later},tag={tag},ddate=20071231,qtrs=0,uom=USD"
    dropped = norm.dropped.filter(pl.col("source_ref") == later_ref).row(0, named=True)
    assert dropped["reason"] == "duplicate"
    assert f"first reported by 8-K {k8} filed 2009-09-15" in dropped["detail"]


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_input_order_does_not_matter(tmp_path, cf_json, order):
    k23, k24, k25 = _real_points(cf_json, REVENUE, *FY23)
    points = [k23, {**k24, "val": k23["val"] + 7}, {**k25, "val": k23["val"] + 7}]
    norm = _normalize(tmp_path, cf_json, {REVENUE: [points[i] for i in order]})
    fact = norm.tables["fact"].filter(~pl.col("derived")).row(0, named=True)
    assert (fact["accession"], fact["value"], fact["frame"]) == (K24, D(k23["val"] + 7), "CY2022")
    assert norm.tables["restatement"].filter(pl.col("changed"))["new_accession"].to_list() == [K24]
