"""Label-noise detection quality: dataforge noise-report against cleanlab's documented default
pipeline and against real, human-verified label errors (20 Newsgroups test set).

Parts (all on /work/shared/data/label_noise, real posts and labels):

1. ``verified``: the 82 label errors confirmed by MTurk workers (fewer than 3 of 5 chose the given
   label). dataforge end to end from the raw texts (its own cross-validated model), and dataforge
   from cleanlab's published pred_probs. For the top-k ranked flags (k = 50, 100, number flagged):
   how many are confirmed errors, and the recall of the 82. Only the paper's own candidates (93 rows)
   have a human verdict, so any other model's flags outside them count as wrong: the precision among
   flags *with* a verdict is reported too.
2. ``injected``: flip 5/10/20/30 % of the labels (uniform: any other class; class-conditional: 70 %
   of the flips go to one fixed partner class per class, the rest uniform), fixed seed. Precision,
   recall and F1 of the flagged rows against the flips, for dataforge (default options) and for
   cleanlab's default pipeline (``TfidfVectorizer()`` + ``LogisticRegression()``, 5-fold
   ``cross_val_predict``, ``find_label_issues`` defaults), run side by side.
3. ``downstream``: split the posts 70/30 (stratified, seed 0); flip 20 % of the training labels
   (uniform); train the same classifier (TF-IDF + logistic regression) on the clean labels, the
   noisy labels, and dataforge's ``--fix drop`` and ``--fix relabel`` outputs; report accuracy on the
   held-out 30 % (its original labels). "Recovered" = (fixed - noisy) / (clean - noisy).
4. ``scale`` (not in the default parts): a default run on 100k short texts (20news post bodies cut
   into 150-400 character pieces, labelled by newsgroup), in a subprocess: seconds and peak RSS.

Usage:
    .venv/bin/python benchmarks/noise_quality.py                 # all parts, ~15 min on 2 cores
    .venv/bin/python benchmarks/noise_quality.py --parts verified downstream
    .venv/bin/python benchmarks/noise_quality.py --rates 0.2 --kinds uniform --parts injected
    .venv/bin/python benchmarks/noise_quality.py --parts scale   # 100k short texts: time and peak RSS
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dataforge  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "label_noise"
OUT = ROOT / "benchmarks" / "_data" / "noise"


def load_posts() -> tuple[list[dict], np.ndarray, list[str]]:
    with gzip.open(SHARED / "20news_test.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    labels = np.array([r["given_label"] for r in rows])
    names = [n for _, n in sorted({(r["given_label"], r["given_label_name"]) for r in rows})]
    return rows, labels, names


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def prf(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((flagged & truth).sum())
    p = tp / max(int(flagged.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {
        "flagged": int(flagged.sum()),
        "tp": tp,
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
    }


def run_dataforge(
    rows: list[dict], labels: np.ndarray, name: str, *, workers: int, **kw
) -> tuple[dict, float]:
    src = write_jsonl(
        OUT / f"{name}.jsonl",
        [{"id": str(i), "text": r["text"], "label": int(labels[i])} for i, r in enumerate(rows)],
    )
    out = OUT / f"{name}-report"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    report = dataforge.noise_report(src, output=out, workers=workers, overwrite=True, **kw)
    secs = time.perf_counter() - t0
    import polars as pl

    issues = pl.read_parquet(out / "issues.parquet").sort(pl.col("id").cast(pl.Int64))
    return {"report": report, "issues": issues, "out": out}, secs


def cleanlab_default(texts: list[str], labels: np.ndarray) -> tuple[np.ndarray, float]:
    """cleanlab's documented text pipeline: TfidfVectorizer() + LogisticRegression(), 5-fold CV."""
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    t0 = time.perf_counter()
    X = TfidfVectorizer().fit_transform(texts)
    probs = cross_val_predict(LogisticRegression(), X, labels, cv=5, method="predict_proba", n_jobs=2)
    flagged = find_label_issues(labels, probs)
    return np.asarray(flagged, dtype=bool), time.perf_counter() - t0


def flip_labels(
    labels: np.ndarray, rate: float, kind: str, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = rng.random(len(labels)) < rate
    noisy = labels.copy()
    uniform = (labels[flip] + rng.integers(1, k, int(flip.sum()))) % k
    if kind == "uniform":
        noisy[flip] = uniform
    else:
        partner = rng.permutation(k)
        partner = np.where(partner == np.arange(k), (partner + 1) % k, partner)
        to_partner = rng.random(int(flip.sum())) < 0.7
        noisy[flip] = np.where(to_partner, partner[labels[flip]], uniform)
    return noisy, noisy != labels


# --------------------------------------------------------------------------- parts


def part_verified(args: argparse.Namespace, results: dict) -> None:
    rows, labels, _names = load_posts()
    mturk = json.loads((SHARED / "20news_test_mturk_verified.json").read_text())
    confirmed = {m["id"] for m in mturk if m["mturk"]["given"] < 3}
    strict = {m["id"] for m in mturk if m["mturk"]["given"] + m["mturk"]["both"] < 3}
    published = np.load(SHARED / "20news_test_pred_probs.npy")
    out: dict[str, dict] = {}
    for name, kw in (
        ("dataforge (own model)", {}),
        ("dataforge (published pred_probs)", {"pred_probs": published}),
    ):
        res, secs = run_dataforge(rows, labels, "verified", workers=args.workers, **kw)
        issues = res["issues"]
        flagged_ids = issues.filter(issues["is_issue"]).sort("rank")["id"].cast(int).to_list()
        ranked_all = issues.sort("rank")["id"].cast(int).to_list()
        row = {
            "seconds": round(secs, 1),
            "flagged": len(flagged_ids),
            "accuracy": res["report"].member_accuracy,
        }
        for k in (50, 100, len(flagged_ids)):
            top = ranked_all[:k]
            row[f"top{k if k in (50, 100) else '_flagged'}"] = {
                "k": k,
                "confirmed": sum(i in confirmed for i in top),
                "precision": round(sum(i in confirmed for i in top) / max(k, 1), 4),
                "strict_confirmed": sum(i in strict for i in top),
            }
        row["recall_of_82"] = round(sum(i in confirmed for i in flagged_ids) / len(confirmed), 4)
        checked = {m["id"] for m in mturk}
        in_checked = [i for i in flagged_ids if i in checked]
        row["flagged_with_verdict"] = len(in_checked)
        row["precision_among_flags_with_verdict"] = round(
            sum(i in confirmed for i in in_checked) / max(len(in_checked), 1), 4
        )
        out[name] = row
        print(f"  {name}: {json.dumps(row)}", flush=True)
    results["verified"] = {"confirmed": len(confirmed), "strict": len(strict), "runs": out}


def part_injected(args: argparse.Namespace, results: dict) -> None:
    rows, labels, names = load_posts()
    texts = [r["text"] for r in rows]
    k = len(names)
    table = []
    for kind in args.kinds:
        for rate in args.rates:
            noisy, truth = flip_labels(labels, rate, kind, k, seed=args.seed)
            base_flag, base_secs = cleanlab_default(texts, noisy)
            base = prf(base_flag, truth)
            res, secs = run_dataforge(
                rows, noisy, f"inj-{kind}-{rate}", workers=args.workers, filter_by=args.filter_by
            )
            ours = prf(res["issues"]["is_issue"].to_numpy(), truth)
            row = {
                "kind": kind,
                "rate": rate,
                "flips": int(truth.sum()),
                "cleanlab_default": {**base, "seconds": round(base_secs, 1)},
                "dataforge": {**ours, "seconds": round(secs, 1)},
                "f1_gain": round(ours["f1"] - base["f1"], 4),
            }
            table.append(row)
            print(
                f"  {kind:17s} {rate:.0%}: cleanlab default P {base['precision']:.3f} R {base['recall']:.3f} F1 {base['f1']:.3f}"
                f" ({base_secs:.0f} s) | dataforge P {ours['precision']:.3f} R {ours['recall']:.3f} F1 {ours['f1']:.3f}"
                f" ({secs:.0f} s) | gain {row['f1_gain']:+.3f}",
                flush=True,
            )
    results["injected"] = table


def part_downstream(args: argparse.Namespace, results: dict) -> None:
    import polars as pl
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from dataforge.io.shards import read_manifest, read_shard

    rows, labels, names = load_posts()
    k = len(names)
    idx = np.arange(len(rows))
    tr, te = train_test_split(idx, test_size=0.3, stratify=labels, random_state=0)
    tr = np.sort(tr)
    noisy, _truth = flip_labels(labels[tr], 0.2, "uniform", k, seed=args.seed)
    train_rows = [rows[i] for i in tr]
    texts_te = [rows[i]["text"] for i in te]

    def accuracy(texts: list[str], y: np.ndarray) -> float:
        vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
        clf = LogisticRegression(C=10.0, max_iter=1000)
        clf.fit(vec.fit_transform(texts), y)
        return float((clf.predict(vec.transform(texts_te)) == labels[te]).mean())

    train_texts = [r["text"] for r in train_rows]
    acc = {
        "clean labels": accuracy(train_texts, labels[tr]),
        "20% noisy labels": accuracy(train_texts, noisy),
    }
    for fix in ("drop", "relabel"):
        res, secs = run_dataforge(
            train_rows,
            noisy,
            f"down-{fix}",
            workers=args.workers,
            fix=fix,
            min_confidence=args.min_confidence,
        )
        fixed = res["out"] / "fixed"
        m = read_manifest(fixed)
        df = pl.concat([pl.from_arrow(read_shard(fixed / s["path"])) for s in m["shards"]])
        acc[f"dataforge --fix {fix}"] = accuracy(df["text"].to_list(), df["label"].to_numpy())
        kept_ids = df["id"].cast(int).to_numpy()
        acc[f"_{fix}_rows"] = int(df.height)
        acc[f"_{fix}_kept_noise"] = round(float((df["label"].to_numpy() != labels[tr][kept_ids]).mean()), 4)
        acc[f"_{fix}_seconds"] = round(secs, 1)
    lost = acc["clean labels"] - acc["20% noisy labels"]
    for fix in ("drop", "relabel"):
        got = acc[f"dataforge --fix {fix}"] - acc["20% noisy labels"]
        acc[f"recovered_{fix}"] = round(got / lost, 3) if lost > 0 else None
    for key, v in acc.items():
        print(f"  {key}: {v if not isinstance(v, float) else round(v, 4)}", flush=True)
    results["downstream"] = {"train_rows": len(tr), "test_rows": len(te), **acc}


def part_scale(args: argparse.Namespace, results: dict) -> None:
    """Time and peak memory of a default run on --scale-rows short texts (20news posts cut into pieces).

    The pieces re-use the same posts (several passes with other cut points), so the model's accuracy
    here is inflated by overlap between folds: this part measures time and memory, not quality.
    """
    import subprocess

    rows, labels, _ = load_posts()
    rng = np.random.default_rng(args.seed)
    out_rows: list[dict] = []
    passes = 0
    while len(out_rows) < args.scale_rows:
        passes += 1
        for i in rng.permutation(len(rows)):
            body = rows[i]["text"].split("\n\n", 1)[-1]  # without the header block
            pos = int(rng.integers(0, 120))
            while pos < len(body) and len(out_rows) < args.scale_rows:
                size = int(rng.integers(150, 400))
                piece = " ".join(body[pos : pos + size].split())
                pos += size
                if len(piece) >= 60:
                    out_rows.append({"id": f"s{len(out_rows)}", "text": piece, "label": int(labels[i])})
    src = write_jsonl(OUT / f"scale-{args.scale_rows}.jsonl", out_rows)
    mb = src.stat().st_size / 1e6
    code = (
        "import json, resource, sys, time, dataforge; t = time.perf_counter();"
        f" r = dataforge.noise_report({str(src)!r}, output={str(OUT / 'scale-report')!r}, workers={args.workers});"
        " print(json.dumps({'seconds': round(time.perf_counter() - t, 1), 'timings': r.timings, 'flagged': r.num_flagged,"
        " 'accuracy': r.member_accuracy, 'peak_rss_mb_driver': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),"
        " 'peak_rss_mb_children': round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    row = {
        "rows": len(out_rows),
        "mb": round(mb, 1),
        "passes": passes,
        **json.loads(proc.stdout.strip().splitlines()[-1]),
    }
    print(f"  {json.dumps(row)}", flush=True)
    results["scale"] = row


def markdown(results: dict) -> str:
    """The results as Markdown tables (written next to the JSON and into benchmarks/results/)."""
    v = results.get("versions", {})
    lines = [
        f"Run {results.get('when', '?')}, Python {results.get('python', '?')}, dataforge {v.get('dataforge')},"
        f" cleanlab {v.get('cleanlab')}, scikit-learn {v.get('scikit-learn')}; options {results.get('args', {})}.",
        "",
    ]
    if "injected" in results:
        lines += [
            "### Injected noise: detection against cleanlab's default pipeline (same data, same run)",
            "",
            "| noise | rate | flips | cleanlab default P / R / F1 | s | dataforge P / R / F1 | s | F1 gain |",
            "|---|---:|---:|---|---:|---|---:|---:|",
        ]
        for r in results["injected"]:
            b, d = r["cleanlab_default"], r["dataforge"]
            lines.append(
                f"| {r['kind']} | {r['rate']:.0%} | {r['flips']:,} | {b['precision']:.3f} / {b['recall']:.3f} / {b['f1']:.3f}"
                f" | {b['seconds']:.0f} | {d['precision']:.3f} / {d['recall']:.3f} / **{d['f1']:.3f}** | {d['seconds']:.0f}"
                f" | {r['f1_gain']:+.3f} |"
            )
        lines.append("")
    if "verified" in results:
        ver = results["verified"]
        lines += [
            f"### 20news human-verified label errors ({ver['confirmed']} confirmed of 93 checked)",
            "",
            "| probabilities | flagged | confirmed in top 50 | in top 100 | recall of the 82 (flagged) | flags with a verdict | precision among them |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in ver["runs"].items():
            lines.append(
                f"| {name} | {r['flagged']} | {r['top50']['confirmed']} ({r['top50']['precision']:.2f}) |"
                f" {r['top100']['confirmed']} ({r['top100']['precision']:.2f}) | {r['recall_of_82']:.3f} |"
                f" {r['flagged_with_verdict']} | {r['precision_among_flags_with_verdict']:.3f} |"
            )
        lines.append("")
    if "downstream" in results:
        d = results["downstream"]
        lines += [
            f"### Downstream: test accuracy after cleaning ({d['train_rows']:,} training posts, {d['test_rows']:,} held out)",
            "",
            "| training labels | rows | label noise left | held-out accuracy |",
            "|---|---:|---:|---:|",
            f"| clean (original) | {d['train_rows']:,} | – | {d['clean labels']:.4f} |",
            f"| 20 % flipped | {d['train_rows']:,} | 0.20 | {d['20% noisy labels']:.4f} |",
            f"| dataforge --fix drop | {d['_drop_rows']:,} | {d['_drop_kept_noise']:.3f} | {d['dataforge --fix drop']:.4f} |",
            f"| dataforge --fix relabel | {d['_relabel_rows']:,} | {d['_relabel_kept_noise']:.3f} | {d['dataforge --fix relabel']:.4f} |",
            "",
            f"Accuracy recovered (share of the loss to noise): drop {d['recovered_drop']:.0%}, relabel {d['recovered_relabel']:.0%}.",
            "",
        ]
    if "scale" in results:
        r = results["scale"]
        lines += [
            "### Scale",
            "",
            f"{r['rows']:,} short texts ({r['mb']} MB JSONL): {r['seconds']} s end to end with 2 workers"
            f" ({', '.join(f'{k} {v:.1f} s' for k, v in r['timings'].items())}); peak RSS driver {r['peak_rss_mb_driver']} MB, largest worker {r['peak_rss_mb_children']} MB.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="*", default=["verified", "injected", "downstream"])
    ap.add_argument("--rates", nargs="*", type=float, default=[0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--kinds", nargs="*", default=["uniform", "class-conditional"])
    ap.add_argument("--filter-by", default="prune_by_class")
    ap.add_argument("--min-confidence", type=float, default=0.6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-rows", type=int, default=100_000, help="rows for --parts scale")
    ap.add_argument("--json", type=Path, default=OUT / "results.json")
    ap.add_argument(
        "--render", type=Path, nargs="*", help="only print the Markdown of these result files (merged)"
    )
    args = ap.parse_args()
    if args.render:
        merged: dict = {}
        for f in args.render:
            merged.update(json.loads(f.read_text()))
        print(markdown(merged))
        return
    logging.basicConfig(level=logging.WARNING)
    OUT.mkdir(parents=True, exist_ok=True)
    import cleanlab
    import sklearn

    results: dict = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "versions": {
            "dataforge": dataforge.__version__,
            "cleanlab": cleanlab.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    t0 = time.perf_counter()
    for part in args.parts:
        print(f"== {part}", flush=True)
        parts = {
            "verified": part_verified,
            "injected": part_injected,
            "downstream": part_downstream,
            "scale": part_scale,
        }
        if part not in parts:
            ap.error(f"unknown part {part!r}; valid: {', '.join(parts)}")
        parts[part](args, results)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    args.json.with_suffix(".md").write_text(markdown(results) + "\n")
    print(markdown(results))
    print(f"results: {args.json} ({results['seconds']} s)")


if __name__ == "__main__":
    main()
