"""noise_report end to end on the real sample slices: detection, report files, fixes, errors."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import dataforge
from dataforge.errors import ConfigError, DataError, InputError, OutputError
from dataforge.io.shards import read_manifest, read_shard, verify_shards

from ..conftest import SAMPLE, read_jsonl_gz, write_jsonl

NEWS = SAMPLE / "labels" / "20news.jsonl.gz"
WINE = SAMPLE / "labels" / "wine.csv"
WINE_FEATURES = [
    "alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols", "flavanoids",
    "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue", "od280_od315", "proline",
]  # fmt: skip
FLIPS = json.loads((SAMPLE / "labels" / "flips.json").read_text())


def _detection(out: Path, flips: dict) -> tuple[float, float, int]:
    df = pl.read_parquet(out / "issues.parquet")
    flagged = set(df.filter(pl.col("is_issue"))["id"].to_list())
    tp = len(flagged & set(flips))
    return tp / max(len(flagged), 1), tp / len(flips), len(flagged)


@pytest.fixture(scope="module")
def news_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("news") / "report"
    report = dataforge.noise_report(NEWS, output=out, fix="relabel", min_confidence=0.6, seed=0)
    return report, out


def test_text_default_model_finds_injected_flips(news_run):
    report, out = news_run
    precision, recall, n = _detection(out, FLIPS["20news.jsonl.gz"]["flips"])
    assert recall >= 0.75, (precision, recall, n)
    assert precision >= 0.6, (precision, recall, n)
    assert report.num_flagged == n
    assert report.rows_in == report.rows_used + report.rejected == 600


def test_issues_parquet_has_every_row(news_run):
    report, out = news_run
    df = pl.read_parquet(out / "issues.parquet")
    assert df.height == report.rows_used
    for col in ("id", "given_label", "suggested_label", "label_quality", "is_issue", "rank", "source_line"):
        assert col in df.columns
    assert sorted(df["rank"].to_list()) == list(range(1, df.height + 1))
    assert df["label_quality"].is_between(0, 1).all()
    assert set(df["suggested_label"].unique().to_list()) <= set(df["given_label"].unique().to_list())


def test_report_json_counts_add_up(news_run):
    report, out = news_run
    d = json.loads((out / "report.json").read_text())
    c = d["counts"]
    assert c["rows_in"] == c["rows_used"] + c["rejected"]
    assert c["flagged"] == report.num_flagged == len(d["top_issues"])
    health = d["health"]
    assert len(health["noise_matrix"]) == len(health["classes"]) == 6
    assert sum(health["class_counts"]) == c["rows_used"]
    assert sum(p["flagged"] for p in health["per_class"]) == c["flagged"]
    assert sum(d["quality_histogram"]["all"]) == c["rows_used"]
    assert sum(d["quality_histogram"]["flagged"]) == c["flagged"]
    assert d["model"]["members"] and all(0.5 < a <= 1 for a in d["model"]["accuracy_vs_given"].values())
    fix = d["fix"]
    assert fix["kept"] + fix["dropped"] == c["rows_used"]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.ids: set[str] = set()
        self.rows_in_issues = 0
        self._in_issues = False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
            self._in_issues = a["id"] == "issues" or self._in_issues
        if tag == "tr" and self._in_issues:
            self.rows_in_issues += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_issues = False


def test_html_report_is_self_contained_with_plots_and_table(news_run):
    report, out = news_run
    text = (out / "report.html").read_text()
    p = _Collect()
    p.feed(text)
    assert p.tags.get("svg", 0) >= 3  # class bars, noise matrix heatmap, quality histogram
    assert "issues" in p.ids and "q" in p.ids  # the flagged table and its search box
    assert p.rows_in_issues == report.num_flagged + 1  # header row + one per flagged row
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text
    assert "<script src" not in text and "<link" not in text


def test_relabel_fix_writes_shards_with_ledger(news_run):
    report, out = news_run
    fixed = out / "fixed"
    assert verify_shards(fixed) == []
    manifest = read_manifest(fixed)
    c = manifest["counts"]
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"] == 600
    data = pa.concat_tables([read_shard(fixed / s["path"]) for s in manifest["shards"]])
    assert data.num_rows == c["kept"]
    df = pl.from_arrow(data)
    relabelled = df.filter(pl.col("label_original").is_not_null())
    assert relabelled.height == report.fix["relabelled"] > 0
    assert (relabelled["label"] != relabelled["label_original"]).all()
    issues = pl.read_parquet(out / "issues.parquet").select("id", "suggested_label", "suggested_prob")
    joined = relabelled.join(issues, on="id")
    assert (joined["label"] == joined["suggested_label"]).all()
    assert (joined["suggested_prob"] >= 0.6).all()
    if c["dropped"]:
        dropped = pl.from_arrow(
            pa.concat_tables([read_shard(fixed / s["path"]) for s in manifest["dropped"]])
        )
        assert set(dropped["drop_reason"].to_list()) == {"label_issue"}
        assert dropped["label_original"].is_null().all()
    # the fix moved most injected flips back to their original label
    flips = FLIPS["20news.jsonl.gz"]["flips"]
    fixed_ok = sum(
        1 for r in relabelled.iter_rows(named=True) if flips.get(r["id"], {}).get("original") == r["label"]
    )
    assert fixed_ok >= 0.8 * relabelled.height


def test_same_seed_same_report_and_shards(tmp_path):
    kw = dict(label_col="cultivar", text_col=None, feature_cols=WINE_FEATURES, model="ensemble", fix="drop")
    a = dataforge.noise_report(WINE, output=tmp_path / "a", seed=3, **kw)
    b = dataforge.noise_report(WINE, output=tmp_path / "b", seed=3, **kw)
    pa_ = pl.read_parquet(tmp_path / "a" / "issues.parquet")
    pb_ = pl.read_parquet(tmp_path / "b" / "issues.parquet")
    assert pa_.equals(pb_)
    sa = read_manifest(tmp_path / "a" / "fixed")["shards"]
    sb = read_manifest(tmp_path / "b" / "fixed")["shards"]
    assert [s["sha256"] for s in sa] == [s["sha256"] for s in sb]
    assert a.num_flagged == b.num_flagged


def test_tabular_mode_finds_wine_flips(tmp_path):
    out = tmp_path / "wine"
    report = dataforge.noise_report(
        WINE, output=out, label_col="cultivar", feature_cols=WINE_FEATURES, model="hgb", fix="drop"
    )
    precision, recall, _ = _detection(out, FLIPS["wine.csv"]["flips"])
    assert recall >= 0.6 and precision >= 0.7, (precision, recall)
    assert report.mode == "tabular" and report.members == ["hgb"]
    fixed = read_manifest(out / "fixed")
    assert fixed["counts"]["dropped"] == report.num_flagged
    # the original column name is kept in the fixed shards
    assert "cultivar" in [f["name"] for f in fixed["schema"]["fields"]]


def test_published_pred_probs_file(tmp_path):
    out = tmp_path / "pp"
    report = dataforge.noise_report(
        NEWS, output=out, pred_probs=str(SAMPLE / "labels" / "20news_pred_probs.npy")
    )
    precision, recall, _ = _detection(out, FLIPS["20news.jsonl.gz"]["flips"])
    assert recall >= 0.9 and precision >= 0.8
    assert report.mode == "pred_probs" and report.members == []
    # the estimate of wrong labels is cleanlab's calibrated one, and says so
    d = json.loads((out / "report.json").read_text())
    assert d["counts"]["issues_estimate"] == report.num_issues_estimate == 66  # "off_diagonal" says 55
    assert d["health"]["issues_estimate_method"] == "off_diagonal_calibrated"
    assert "cleanlab estimate 66 wrong labels, calibrated" in report.summary_lines()[2]


def test_pred_probs_shape_mismatch_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((10, 6), 1 / 6))
    with pytest.raises(InputError, match="pred_probs has 10 rows but the input has 600 records"):
        dataforge.noise_report(NEWS, output=tmp_path / "o", pred_probs=str(bad))
    np.save(bad, np.full((600, 4), 0.25))
    with pytest.raises(InputError, match="4 columns but the labels have 6 classes"):
        dataforge.noise_report(NEWS, output=tmp_path / "o", pred_probs=str(bad))
    arr = np.full((600, 6), 1 / 6)
    arr[5] = [0.5, 0.5, 0.5, 0, 0, 0]
    np.save(bad, arr)
    with pytest.raises(InputError, match="row 5 is not a probability distribution"):
        dataforge.noise_report(NEWS, output=tmp_path / "o", pred_probs=str(bad))
    assert not (tmp_path / "o" / "report.json").exists()


def test_single_class_and_tiny_inputs_are_errors(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": f"doc {i}", "label": "a"} for i in range(20)])
    with pytest.raises(InputError, match="single class 'a'"):
        dataforge.noise_report(path, output=tmp_path / "o")
    path = write_jsonl(tmp_path / "tiny.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    with pytest.raises(InputError, match="at least 10 are needed"):
        dataforge.noise_report(path, output=tmp_path / "o")


def _rare_rows(rows: list[dict], text: str) -> list[dict]:
    """Rows of two classes smaller than the 5 folds: 'misc.rare' (1 row) and 'misc.rarer' (2)."""
    return [
        {**rows[0], "id": "rare-1", text: rows[0][text], "label": "misc.rare"},
        {**rows[1], "id": "rare-2", text: rows[1][text], "label": "misc.rarer"},
        {**rows[2], "id": "rare-3", text: rows[2][text], "label": "misc.rarer"},
    ]


def _check_not_assessed(report, out: Path, *, rare_ids: set[str], fix: bool) -> None:
    """The rare rows are reported as not assessed and every count adds up."""
    d = json.loads((out / "report.json").read_text())
    c, health = d["counts"], d["health"]
    assert c["rows_in"] == c["rows_used"] + c["rejected"]
    assert c["rows_used"] == c["assessed"] + c["not_assessed"] and c["not_assessed"] == len(rare_ids) == 3
    assert sum(health["class_counts"]) == c["assessed"]
    assert not {"misc.rare", "misc.rarer"} & set(health["classes"])
    assert len(health["noise_matrix"]) == len(health["classes"])
    assert health["not_assessed_classes"] == [
        {"class": "misc.rare", "examples": 1, "reason": "class_too_small"},
        {"class": "misc.rarer", "examples": 2, "reason": "class_too_small"},
    ]
    assert sum(p["examples"] for p in health["per_class"]) == c["assessed"]
    assert sum(p["flagged"] for p in health["per_class"]) == c["flagged"] == len(d["top_issues"])
    assert sum(d["quality_histogram"]["all"]) == c["assessed"]
    assert any("'misc.rare' (1), 'misc.rarer' (2)" in w and "not assessed" in w for w in report.warnings)
    issues = pl.read_parquet(out / "issues.parquet")
    assert issues.height == c["rows_used"]
    rare = issues.filter(~pl.col("assessed"))
    assert set(rare["id"].to_list()) == rare_ids
    assert rare["not_assessed_reason"].to_list() == ["class_too_small"] * 3
    assert (
        not rare["is_issue"].any() and rare["rank"].is_null().all() and rare["label_quality"].is_null().all()
    )
    # the closest assessed class is still suggested
    assert set(rare["suggested_label"].to_list()) <= set(health["classes"])
    ranked = issues.filter(pl.col("assessed"))
    assert sorted(ranked["rank"].to_list()) == list(range(1, c["assessed"] + 1))
    assert issues.filter(pl.col("assessed"))["not_assessed_reason"].is_null().all()
    if fix:
        manifest = read_manifest(out / "fixed")
        m = manifest["counts"]
        assert m["rows_in"] == m["kept"] + m["dropped"] + m["rejected"]
        assert m["dropped"] == c["flagged"]
        kept = pl.from_arrow(
            pa.concat_tables([read_shard(out / "fixed" / s["path"]) for s in manifest["shards"]])
        )
        assert rare_ids <= set(kept["id"].to_list())  # kept as given, not dropped or relabelled


@pytest.mark.parametrize("model", ["auto", "tfidf-logreg", "ensemble"])
def test_rare_text_classes_are_not_assessed_with_every_model(tmp_path, model):
    # `--model auto` used to fail (exit 3) in the svm's calibrator; tfidf-logreg ran, with the
    # other classes' flags corrupted by the rare ones (see the test below)
    rows = _news_rows()[:200]
    path = write_jsonl(tmp_path / "r.jsonl", rows[:100] + _rare_rows(rows, "text") + rows[100:])
    report = dataforge.noise_report(path, output=tmp_path / "o", model=model, rounds=1, fix="drop")
    _check_not_assessed(report, tmp_path / "o", rare_ids={"rare-1", "rare-2", "rare-3"}, fix=True)
    assert "misc.rare" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.parametrize("model", ["auto", "hgb", "ensemble"])
def test_rare_tabular_classes_are_not_assessed_with_every_model(tmp_path, model):
    rows = pl.read_csv(WINE).rename({"cultivar": "label"}).to_dicts()
    path = write_jsonl(tmp_path / "w.jsonl", _rare_rows(rows, "alcohol") + rows)
    report = dataforge.noise_report(
        path, output=tmp_path / "o", feature_cols=WINE_FEATURES, model=model, rounds=1
    )
    _check_not_assessed(report, tmp_path / "o", rare_ids={"rare-1", "rare-2", "rare-3"}, fix=False)


def test_too_few_classes_as_large_as_the_folds_is_an_error(tmp_path):
    rows = _news_rows()
    a = [r for r in rows if r["label"] == "sci.med"][:30]
    b = [r for r in rows if r["label"] == "sci.space"][:4]
    path = write_jsonl(tmp_path / "d.jsonl", a + b)
    with pytest.raises(
        InputError, match=r"got 1: 'sci.med' \(30\); too small: 'sci.space' \(4\); lower folds"
    ):
        dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg")
    report = dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg", folds=4)
    assert report.num_not_assessed == 0 and report.classes == ["sci.med", "sci.space"]


@pytest.fixture(scope="module")
def news_flags(tmp_path_factory):
    """The flags on the 600 posts (61 planted flips), tfidf-logreg, default rounds."""
    out = tmp_path_factory.mktemp("news_flags")
    dataforge.noise_report(NEWS, output=out, model="tfidf-logreg")
    return pl.read_parquet(out / "issues.parquet")


def test_rare_class_rows_added_do_not_change_the_other_flags(tmp_path, news_flags):
    # A class smaller than the folds has rows in no training fold: their probability of their own
    # class was ~0, cleanlab's threshold for it fell to ~0 and rows of every other class counted as
    # "truly" that class (58 flags became 111 here). Its rows are now left out of the features, the
    # folds, the models and cleanlab, so the other rows' verdicts are exactly those without them.
    rows = _news_rows()
    rare = _rare_rows(rows, "text")
    path = write_jsonl(tmp_path / "r.jsonl", rows[:50] + rare[:1] + rows[50:300] + rare[1:] + rows[300:])
    report = dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg")
    issues = pl.read_parquet(tmp_path / "o" / "issues.parquet")
    cols = ["id", "given_label", "suggested_label", "label_quality", "is_issue", "rank"]
    others = issues.filter(~pl.col("id").str.starts_with("rare-"))
    assert others.select(cols).equals(news_flags.select(cols))
    assert report.num_flagged == int(news_flags["is_issue"].sum())
    assert others["assessed"].all() and report.num_not_assessed == 3
    precision, recall, _ = _detection(tmp_path / "o", FLIPS["20news.jsonl.gz"]["flips"])
    assert precision >= 0.6 and recall >= 0.75, (precision, recall)


def test_rare_class_relabelled_rows_change_the_other_flags_only_by_cv_noise(tmp_path, news_flags):
    # The tester's case: 3 existing rows relabelled into 2 tiny classes. The other 597 rows get new
    # folds (3 rows fewer), so their flags move by cross-validation noise: re-drawing the folds of
    # the 600 rows (seed 1, seed 2) changes 12-13 of its 58 flags; we allow 40 % of the flags. With
    # the rare classes scored, 53 flags changed (111 flagged).
    rows = _news_rows()
    relabelled = [dict(r) for r in rows]
    for i, label in ((5, "misc.rare"), (6, "misc.rarer"), (7, "misc.rarer")):
        relabelled[i]["label"] = label
    path = write_jsonl(tmp_path / "r.jsonl", relabelled)
    report = dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg")
    moved = {rows[i]["id"] for i in (5, 6, 7)}
    before = set(news_flags.filter(pl.col("is_issue"))["id"].to_list()) - moved
    issues = pl.read_parquet(tmp_path / "o" / "issues.parquet")
    after = set(issues.filter(pl.col("is_issue"))["id"].to_list())
    assert len(before ^ after) <= 0.4 * len(before), (len(before), len(after), len(before ^ after))
    assert report.num_not_assessed == 3


def test_rejects_are_counted_and_reject_rate_enforced(tmp_path):
    rows = _news_rows()[:120]
    bad = [b'{"text": "cut', {"text": "no label at all"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows[:60] + bad + rows[60:])
    report = dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg", fix="drop")
    assert report.rows_in == 122 and report.rejected == 2
    assert report.rejected_by_reason == {"bad_json": 1, "missing_label": 1}
    assert {s["line"] for s in report.reject_samples} == {61, 62}
    m = read_manifest(tmp_path / "o" / "fixed")
    assert m["counts"]["rejected"] == 2
    assert m["counts"]["rows_in"] == m["counts"]["kept"] + m["counts"]["dropped"] + 2
    with pytest.raises(DataError, match=r"2 of 122 records \(1.6%\) are malformed"):
        dataforge.noise_report(path, output=tmp_path / "o2", max_reject_rate=0.01)


def test_a_truncated_input_file_is_an_error(tmp_path):
    """A gzip file cut short lost an unknown number of rows: not analysed as if complete."""
    import gzip
    import json as _json

    rows = _news_rows()[:200]
    data = gzip.compress(b"".join(_json.dumps(r).encode() + b"\n" for r in rows), mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(DataError, match=r"1 input file\(s\) end early.*cut\.jsonl\.gz"):
        dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg")
    report = dataforge.noise_report(path, output=tmp_path / "o", model="tfidf-logreg", max_reject_rate=1)
    assert report.rejected_by_reason.get("truncated") == 1


def test_fixed_output_is_not_overwritten_silently(tmp_path):
    kw = dict(
        label_col="cultivar", feature_cols=WINE_FEATURES, model="hgb", fix="drop", fixed_out=tmp_path / "f"
    )
    dataforge.noise_report(WINE, output=tmp_path / "o", **kw)
    with pytest.raises(OutputError, match="not empty; pass --overwrite"):
        dataforge.noise_report(WINE, output=tmp_path / "o", **kw)
    dataforge.noise_report(WINE, output=tmp_path / "o", overwrite=True, **kw)
    assert not list(tmp_path.glob(".f.partial-*"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(OutputError, match="not a dataforge output folder"):
        dataforge.noise_report(
            WINE, output=tmp_path / "o", **{**kw, "fixed_out": tmp_path / "other"}, overwrite=True
        )
    assert (tmp_path / "other" / "precious.txt").exists()


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="valid: auto, ensemble, hgb, tfidf-logreg"):
        dataforge.noise_report(NEWS, output=tmp_path / "o", model="bert")
    with pytest.raises(ConfigError, match="valid: drop, none, relabel"):
        dataforge.noise_report(NEWS, output=tmp_path / "o", fix="maybe")
    with pytest.raises(ConfigError, match="needs feature columns"):
        dataforge.noise_report(NEWS, output=tmp_path / "o", model="hgb")


def _news_rows() -> list[dict]:
    return read_jsonl_gz(SAMPLE / "labels" / "20news.jsonl.gz")


def test_pred_probs_index_column_selects_rows_of_a_larger_file(tmp_path):
    probs = np.load(SAMPLE / "labels" / "20news_pred_probs.npy")
    rows = _news_rows()
    rng = np.random.default_rng(0)
    where = rng.permutation(1500)[: len(rows)]  # each row's position in a larger probability file
    big = np.full((1500, probs.shape[1]), 1 / probs.shape[1])
    big[where] = probs
    np.save(tmp_path / "big.npy", big)
    path = write_jsonl(
        tmp_path / "d.jsonl", [{**r, "row_in_probs": int(w)} for r, w in zip(rows, where, strict=True)]
    )
    a = dataforge.noise_report(
        path, output=tmp_path / "a", pred_probs=str(tmp_path / "big.npy"), pred_probs_index="row_in_probs"
    )
    b = dataforge.noise_report(
        NEWS, output=tmp_path / "b", pred_probs=str(SAMPLE / "labels" / "20news_pred_probs.npy")
    )
    assert a.num_flagged == b.num_flagged
    ia = pl.read_parquet(tmp_path / "a" / "issues.parquet").select("id", "label_quality", "is_issue")
    ib = pl.read_parquet(tmp_path / "b" / "issues.parquet").select("id", "label_quality", "is_issue")
    assert ia.equals(ib)
    bad_rows = [{**r, "row_in_probs": int(w)} for r, w in zip(rows[:20], where, strict=False)]
    bad_rows[0]["row_in_probs"] = 99999
    bad = write_jsonl(tmp_path / "bad.jsonl", bad_rows)
    with pytest.raises(InputError, match="value 99999 is outside the 1,500 rows"):
        dataforge.noise_report(
            bad, output=tmp_path / "c", pred_probs=str(tmp_path / "big.npy"), pred_probs_index="row_in_probs"
        )
