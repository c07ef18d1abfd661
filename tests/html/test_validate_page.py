"""`dataforge validate --report FILE` writes a page with the shard checks and the loss curve."""

from __future__ import annotations

import json
import re

import pytest


@pytest.fixture(scope="module")
def validated(demo_outputs, tmp_path_factory):
    from click.testing import CliRunner

    from dataforge.cli import cli

    page = tmp_path_factory.mktemp("validate") / "validation.html"
    res = CliRunner().invoke(
        cli,
        [
            "validate",
            str(demo_outputs["curriculum"]),
            "--train-steps",
            "150",
            "--json",
            "--report",
            str(page),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    return json.loads(res.output), page


def test_page_has_one_point_per_step_and_the_baseline(validated):
    result, page = validated
    text = page.read_text(encoding="utf-8")
    t = result["train"]
    line = re.search(r'<polyline points="([^"]+)"', text).group(1)
    assert len(line.split()) == t["steps"] == 150
    assert f"unigram baseline {t['unigram_baseline']:.3f}" in text
    assert f"{result['shards_checked']:,}" in text and "every shard matches the manifest" in text
    assert f"<b>{t['final_loss']:.3f}</b>" in text


def test_page_loads_in_chromium(validated, open_report):
    _, page = validated
    seen = open_report(page, shot="validate.png")
    assert seen.errors == [] and [m for m in seen.console if m[0] == "error"] == []
    assert seen.requests == [page.resolve().as_uri()]
    assert seen.page.locator("svg.plot").count() == 1


def test_a_tampered_shard_is_listed_as_a_problem(demo_outputs, tmp_path):
    import shutil

    from click.testing import CliRunner

    from dataforge.cli import cli

    cur = tmp_path / "cur"
    shutil.copytree(demo_outputs["curriculum"], cur)
    shard = next(cur.glob("stage-1/*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10])
    page = tmp_path / "v.html"
    res = CliRunner().invoke(cli, ["validate", str(cur), "--train-steps", "0", "--report", str(page)])
    assert res.exit_code == 1
    text = page.read_text(encoding="utf-8")
    assert "FAIL" in text and shard.name in text and "class='bad'" in text
