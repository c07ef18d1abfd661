"""Rebuild sample_data/ from the shared real datasets (deterministic; committed outputs).

Usage:
    python sample_data/build_sample_data.py [--shared ../shared/data]

Writes:
    pretraining/prose.jsonl.gz   30 State of the Union addresses + 2 Gutenberg texts (public domain)
    news/reuters.jsonl.gz        2,000 Reuters-21578 stories with a body (research use)
    defects/planted.jsonl        real Reuters paragraphs with planted defects, see defects/expected.json
    labels/20news.jsonl.gz       600 20 Newsgroups test posts (6 groups) with 10% of labels flipped, see
                                 labels/flips.json (the injected flips, by id)
    labels/20news_pred_probs.npy the paper's published pred_probs for those 600 rows (6 columns, renormalized)
    labels/wine.csv              UCI Wine (178 rows, 13 features) with 10% of labels flipped, see flips.json

The defects file is built from Reuters stories that are *not* in news/reuters.jsonl.gz, chosen so
that each base story passes dataforge's normalize + Gopher filters and holds no PII; the planted
defects are then added one by one, and their expected effect is written to defects/expected.json
(by construction, not by running the pipeline). The tests check a clean run against it exactly.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def build_prose(shared: Path) -> None:
    rows = read_jsonl_gz(shared / "pretraining_text" / "public_domain_prose.jsonl.gz")
    union = [r for r in rows if r["collection"] == "state_union"][:30]
    books = [r for r in rows if r["id"] in ("gutenberg/blake-poems.txt", "gutenberg/shakespeare-macbeth.txt")]
    out = [
        {"id": r["id"], "text": r["text"], "collection": r["collection"], "title": r["title"]}
        for r in union + books
    ]
    write_jsonl_gz(HERE / "pretraining" / "prose.jsonl.gz", out)


def reuters_rows(shared: Path) -> list[dict]:
    return read_jsonl_gz(shared / "near_dup" / "reuters21578_reut2-000_to_010.jsonl.gz")


def to_doc(r: dict) -> dict:
    return {
        "id": f"reuters-{r['newid']}",
        "text": r["body"],
        "title": r["title"],
        "date": r["date"],
        "topics": r["topics"],
        "places": r["places"],
    }


def build_news(rows: list[dict]) -> set[str]:
    with_body = [r for r in rows if r.get("body")]
    news = [to_doc(r) for r in with_body[:2000]]
    write_jsonl_gz(HERE / "news" / "reuters.jsonl.gz", news)
    return {d["text"] for d in news}


# Planted PII: each value is (text to insert, expected type or None when it must NOT be redacted).
PII_PLANTS = [
    ("Contact the desk at press.office@example-news.com for details.", "email"),
    ("Questions may be sent to j.smith+reuters@mail.example.org today.", "email"),
    ("Call the trading desk on (212) 555-0142 before noon.", "phone"),
    ("The London office can be reached at +44 20 7946 0958.", "phone"),
    ("The card used was 4111 1111 1111 1111 according to the filing.", "credit_card"),
    ("A second card number 4111 1111 1111 1112 was rejected as invalid.", None),
    ("His social security number 536-22-8145 appeared in the complaint.", "ssn"),
    ("The form listed 000-12-3456, which is not a valid number.", None),
    ("Payment went to IBAN GB82 WEST 1234 5698 7654 32 on Friday.", "iban"),
    ("A mistyped IBAN GB82 WEST 1234 5698 7654 33 bounced.", None),
    ("The attack came from 203.0.113.195 over the weekend.", "ip"),
    ("Traffic also arrived from 2001:db8:85a3::8a2e:370:7334 later.", "ip"),
]

MALFORMED = [
    (b'{"id": "bad-json-1", "text": "unterminated', "bad_json"),
    (b'{"id": "bad-utf8-1", "text": "caf\xe9 au lait"}', "bad_utf8"),
    (b'{"id": "missing-text-1", "title": "no text field"}', "missing_text"),
    (b'{"id": "wrong-type-1", "text": 12345}', "wrong_type"),
    (b'["not", "an", "object"]', "not_object"),
    (b"", "blank_line"),
    (b'{"id": {"not": "a string"}, "text": "id has the wrong type"}', "wrong_type"),
]


def build_defects(rows: list[dict], exclude: set[str], seed: int = 7) -> None:
    import polars as pl

    from dataforge.registry import build_step

    rng = random.Random(seed)
    pool = [
        r
        for r in rows[4000:]
        if r.get("body")
        and 900 <= len(r["body"]) <= 2500
        and r["body"] not in exclude
        and r["text_type"] == "NORM"
    ]
    seen: set[str] = set()
    unique = []
    for r in pool:
        key = " ".join(r["body"].lower().split())
        if key not in seen:
            seen.add(key)
            unique.append(r)
    # Keep only stories the pipeline keeps unchanged apart from normalization and that hold no PII.
    frame = pl.DataFrame(
        {"id": [f"reuters-{r['newid']}" for r in unique], "text": [r["body"] for r in unique]}
    )
    frame = build_step("normalize.text", {}).apply(frame).frame
    keep = pl.Series([True] * frame.height)
    for name in ("filter.gopher_quality", "filter.gopher_repetition"):
        out = build_step(name, {}).apply(frame)
        keep &= out.reason.is_null()
    pii = build_step("pii.redact", {"mode": "detect"}).apply(frame).frame
    keep &= pii["pii_count"] == 0
    bases = [r for r, k in zip(unique, keep.to_list()) if k]
    rng.shuffle(bases)
    clean, pii_bases, dup_sources = bases[:40], bases[40:52], bases[:6]

    records: list[bytes] = []
    expect_drop: dict[str, int] = {}
    expect_pii: dict[str, int] = {}

    def add(obj: dict) -> None:
        records.append(json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    for r in clean:
        add(to_doc(r))
    # Exact duplicates (equal after lowercasing and whitespace collapsing): 6 planted.
    variants = [
        lambda t: t,
        lambda t: t,
        lambda t: t,
        lambda t: t.lower(),
        lambda t: "  " + t.replace(" ", "   ") + "\n\n",
        lambda t: t.replace("\n", " \n "),
    ]
    for i, (r, change) in enumerate(zip(dup_sources, variants)):
        d = to_doc(r)
        d["id"] = f"dup-{i}-of-{d['id']}"
        d["text"] = change(d["text"])
        add(d)
    expect_drop["dedup.exact:exact_duplicate"] = len(variants)
    # PII planted into otherwise clean stories (kept; redacted or deliberately left alone).
    for i, ((sentence, kind), r) in enumerate(zip(PII_PLANTS, pii_bases)):
        d = to_doc(r)
        d["id"] = f"pii-{i}-{kind or 'none'}"
        paras = d["text"].split("\n")
        d["text"] = "\n".join([*paras[:2], "    " + sentence, *paras[2:]])
        add(d)
        if kind:
            expect_pii[kind] = expect_pii.get(kind, 0) + 1
    # Junk documents, each failing one Gopher rule by construction.
    junk = [
        ("junk-short", "Too short to be a document.", "filter.gopher_quality:gopher_short_doc"),
        (
            "junk-symbols",
            " ".join(
                ["#tag"] * 30 + ["the market was quiet and the traders were at home with their families"] * 3
            ),
            "filter.gopher_quality:gopher_too_many_hashes",
        ),
        (
            "junk-repeated-lines",
            "\n".join(["Click here to subscribe to our newsletter and get the news."] * 40),
            "filter.gopher_repetition:gopher_rep_dup_line_frac",
        ),
    ]
    for jid, text, reason in junk:
        add({"id": jid, "text": text})
        expect_drop[reason] = expect_drop.get(reason, 0) + 1
    # Empty after normalization: whitespace and zero-width characters only.
    add({"id": "junk-empty", "text": " \u200b\t\u200b \n "})
    expect_drop["normalize.text:empty_text"] = 1
    # A decomposed (NFD) story: kept, normalized to NFC.
    d = to_doc(bases[52])
    d["id"] = "nfd-story"
    d["text"] = unicodedata.normalize("NFD", d["text"] + " Café society in Zürich reacted calmly.")
    add(d)
    # Malformed lines: rejected with file and line.
    expect_reject: dict[str, int] = {}
    for raw, reason in MALFORMED:
        records.append(raw)
        expect_reject[reason] = expect_reject.get(reason, 0) + 1

    order = list(range(len(records)))
    rng.shuffle(order)
    lines = [records[i] for i in order]
    path = HERE / "defects" / "planted.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    n_rows = len(lines)
    n_rejected = sum(expect_reject.values())
    n_dropped = sum(expect_drop.values())
    expected = {
        "file": "defects/planted.jsonl",
        "pipeline": "dataforge clean --preset gopher --pii redact (default options)",
        "rows_in": n_rows,
        "rejected": n_rejected,
        "rejected_by_reason": dict(sorted(expect_reject.items())),
        "dropped": n_dropped,
        "dropped_by_reason": dict(sorted(expect_drop.items())),
        "kept": n_rows - n_rejected - n_dropped,
        "pii_redacted": dict(sorted(expect_pii.items())),
        "pii_not_redacted_ids": [f"pii-{i}-none" for i, (_, k) in enumerate(PII_PLANTS) if k is None],
        "nfd_id": "nfd-story",
    }
    (HERE / "defects" / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


LABEL_GROUPS = (
    "comp.graphics",
    "rec.autos",
    "rec.sport.hockey",
    "sci.med",
    "sci.space",
    "talk.politics.guns",
)


def build_labels(shared: Path, *, per_group: int = 100, flip_rate: float = 0.10, seed: int = 11) -> None:
    """A labelled text slice and a labelled table, each with known injected label flips."""
    rows = read_jsonl_gz(shared / "label_noise" / "20news_test.jsonl.gz")
    rng = random.Random(seed)
    picked: list[dict] = []
    for group in LABEL_GROUPS:
        members = [r for r in rows if r["given_label_name"] == group]
        picked += members[:per_group]  # file order (scikit-learn's shuffled test order)
    picked.sort(key=lambda r: r["idx"])
    out_rows = []
    flips: dict[str, dict] = {}
    for r in picked:
        rid = f"20news-test-{r['idx']}"
        label = r["given_label_name"]
        if rng.random() < flip_rate:
            new = rng.choice([g for g in LABEL_GROUPS if g != label])
            flips[rid] = {"given": new, "original": label}
            label = new
        text = r["text"]
        if len(text) > 2500:  # keep the slice small; posts are cut at a line break
            cut = text.rfind("\n", 0, 2500)
            text = text[: cut if cut > 500 else 2500]
        out_rows.append({"id": rid, "text": text, "label": label, "newsgroup_file": r["newsgroup_file"]})
    write_jsonl_gz(HERE / "labels" / "20news.jsonl.gz", out_rows)
    import numpy as np

    # The paper's published out-of-sample probabilities for these rows, restricted to the six
    # groups (columns in sorted group order, like the labels) and renormalized.
    probs = np.load(shared / "label_noise" / "20news_test_pred_probs.npy")
    names = sorted({r["given_label_name"] for r in rows})
    cols = [names.index(g) for g in sorted(LABEL_GROUPS)]
    sub = probs[[r["idx"] for r in picked]][:, cols]
    sub = sub / sub.sum(axis=1, keepdims=True)
    np.save(HERE / "labels" / "20news_pred_probs.npy", sub.astype(np.float64))
    import csv

    import sklearn.datasets

    wine_src = Path(sklearn.datasets.__file__).parent / "data" / "wine_data.csv"
    with wine_src.open() as fh:
        raw = list(csv.reader(fh))[1:]
    names = [
        "alcohol",
        "malic_acid",
        "ash",
        "alcalinity_of_ash",
        "magnesium",
        "total_phenols",
        "flavanoids",
        "nonflavanoid_phenols",
        "proanthocyanins",
        "color_intensity",
        "hue",
        "od280_od315",
        "proline",
    ]
    wine_flips: dict[str, dict] = {}
    rng = random.Random(seed + 1)
    with (HERE / "labels" / "wine.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *names, "cultivar"])
        for i, rec in enumerate(raw):
            label = f"cultivar_{int(rec[-1]) + 1}"
            if rng.random() < flip_rate:
                new = rng.choice([c for c in ("cultivar_1", "cultivar_2", "cultivar_3") if c != label])
                wine_flips[f"wine-{i}"] = {"given": new, "original": label}
                label = new
            w.writerow([f"wine-{i}", *rec[:-1], label])
    (HERE / "labels" / "flips.json").write_text(
        json.dumps(
            {
                "20news.jsonl.gz": {"rows": len(out_rows), "label_col": "label", "flips": flips},
                "wine.csv": {"rows": len(raw), "label_col": "cultivar", "flips": wine_flips},
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = ap.parse_args()
    build_prose(args.shared)
    rows = reuters_rows(args.shared)
    news_texts = build_news(rows)
    build_defects(rows, news_texts)
    build_labels(args.shared)


if __name__ == "__main__":
    main()
