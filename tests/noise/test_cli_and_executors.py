"""noise-report from the CLI and from a pipeline file; folds on a process pool and on a real local Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from dataforge.cli import cli

from ..conftest import SAMPLE

ROOT = Path(__file__).resolve().parent.parent.parent
WINE = SAMPLE / "labels" / "wine.csv"
FEATURES = "alcohol,malic_acid,ash,alcalinity_of_ash,magnesium,total_phenols,flavanoids,nonflavanoid_phenols,proanthocyanins,color_intensity,hue,od280_od315,proline"


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_tabular_run_prints_summary_and_writes_files(cli_runner, tmp_path):
    out = tmp_path / "r"
    result = invoke(
        cli_runner, "noise-report", WINE, "-o", out, "--label-col", "cultivar", "--feature-cols", FEATURES,
        "--model", "hgb", "--fix", "drop",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rows in 178 = used 178 + rejected 0" in result.output
    assert "fix drop: kept" in result.output
    for name in ("report.json", "report.html", "issues.parquet", "fixed/manifest.json"):
        assert (out / name).is_file()


def test_cli_errors_exit_2_with_the_reason(cli_runner, tmp_path):
    result = invoke(
        cli_runner, "noise-report", WINE, "-o", tmp_path / "r", "--label-col", "nope", "--feature-cols", "ash"
    )
    assert result.exit_code == 2
    assert "no column(s) 'nope'" in result.output
    result = invoke(cli_runner, "noise-report", tmp_path / "missing.jsonl", "-o", tmp_path / "r")
    assert result.exit_code == 2
    assert "does not exist" in result.output
    result = invoke(cli_runner, "noise-report", WINE, "-o", tmp_path / "r", "--model", "bert")
    assert result.exit_code == 2
    assert not (tmp_path / "r" / "report.json").exists()


def test_pipeline_file_runs_with_relative_paths(cli_runner, tmp_path):
    pipe = tmp_path / "p" / "noise.yaml"
    pipe.parent.mkdir()
    shutil.copy(WINE, tmp_path / "p" / "wine.csv")
    pipe.write_text(
        "name: n\nnoise_report:\n  inputs: [wine.csv]\n  output: out\n  label_col: cultivar\n"
        f"  feature_cols: [{FEATURES}]\n  model: hgb\n  fix: drop\n"
    )
    result = invoke(cli_runner, "run", pipe)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "out" / "fixed" / "manifest.json").is_file()
    assert "flagged" in result.output
    pipe.write_text(pipe.read_text() + "  colour: red\n")
    result = invoke(cli_runner, "run", pipe)
    assert result.exit_code == 2
    assert "unknown key 'colour' in noise_report; valid:" in result.output


def test_shipped_noise_pipeline_is_valid():
    from dataforge.api import run_noise_yaml  # noqa: F401  (the dispatcher exists)
    from dataforge.config import read_yaml

    raw = read_yaml(ROOT / "pipelines" / "noise.yaml")
    assert (ROOT / "pipelines" / raw["noise_report"]["inputs"][0]).resolve().is_file()


def _issues(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "issues.parquet")


def test_two_workers_give_the_same_report(tmp_path):
    import dataforge

    kw = dict(label_col="cultivar", feature_cols=FEATURES.split(","), model="ensemble", seed=1)
    dataforge.noise_report(WINE, output=tmp_path / "a", workers=1, **kw)
    dataforge.noise_report(WINE, output=tmp_path / "b", workers=2, **kw)
    assert _issues(tmp_path / "a").equals(_issues(tmp_path / "b"))
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a["health"] == b["health"] and a["top_issues"] == b["top_issues"]


@pytest.mark.ray
def test_ray_folds_give_the_same_report(tmp_path):
    pytest.importorskip("ray")
    import dataforge

    kw = dict(label_col="cultivar", feature_cols=FEATURES.split(","), model="hgb", seed=2)
    dataforge.noise_report(WINE, output=tmp_path / "local", **kw)
    dataforge.noise_report(WINE, output=tmp_path / "ray", executor="ray", workers=2, **kw)
    assert _issues(tmp_path / "local").equals(_issues(tmp_path / "ray"))


def _news_with_rare_classes(tmp_path: Path) -> Path:
    from ..conftest import read_jsonl_gz, write_jsonl

    rows = read_jsonl_gz(SAMPLE / "labels" / "20news.jsonl.gz")[:200]
    rare = [
        {**rows[i], "id": f"rare-{i}", "label": label}
        for i, label in ((0, "misc.rare"), (1, "misc.rarer"), (2, "misc.rarer"))
    ]
    return write_jsonl(tmp_path / "rare.jsonl", rows[:100] + rare + rows[100:])


def test_cli_default_model_with_a_rare_class_reports_it_not_assessed(cli_runner, tmp_path):
    # was exit 3 ("internal error"): the svm's calibrator could not split a class of 1-2 examples
    out = tmp_path / "r"
    result = invoke(cli_runner, "noise-report", _news_with_rare_classes(tmp_path), "-o", out, "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert "rows in 203 = used 203 (assessed 200 + not assessed 3) + rejected 0" in result.output
    assert "'misc.rare' (1), 'misc.rarer' (2)" in " ".join(result.output.split())
    assert json.loads((out / "report.json").read_text())["counts"]["not_assessed"] == 3


def test_two_workers_give_the_same_report_with_rows_not_assessed(tmp_path):
    import dataforge

    path = _news_with_rare_classes(tmp_path)
    kw = dict(model="ensemble", rounds=2, seed=1)
    dataforge.noise_report(path, output=tmp_path / "a", workers=1, **kw)
    dataforge.noise_report(path, output=tmp_path / "b", workers=2, **kw)
    a, b = _issues(tmp_path / "a"), _issues(tmp_path / "b")
    assert a.equals(b)
    assert a.filter(~pl.col("assessed"))["suggested_label"].null_count() == 0
