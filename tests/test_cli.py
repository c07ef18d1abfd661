"""The CLI: help with examples on every command, exit codes, summaries, inspect, steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataforge.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DEFECTS = ROOT / "sample_data" / "defects" / "planted.jsonl"
EXPECTED = json.loads((ROOT / "sample_data" / "defects" / "expected.json").read_text())


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_examples(cli_runner, name):
    result = invoke(cli_runner, name, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert cli.commands[name].help


def test_group_help_and_version(cli_runner):
    assert "Examples:" in invoke(cli_runner, "--help").output
    result = invoke(cli_runner, "--version")
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_clean_ok_prints_summary(cli_runner, tmp_path):
    out = tmp_path / "o"
    result = invoke(cli_runner, "clean", DEFECTS, "-o", out, "--max-reject-rate", "0.2")
    assert result.exit_code == 0, result.output
    assert f"kept {EXPECTED['kept']}" in result.output
    assert "gopher_short_doc=1" in result.output
    assert (out / "manifest.json").exists()


def test_clean_reject_rate_exit_1(cli_runner, tmp_path):
    result = invoke(cli_runner, "clean", DEFECTS, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert "7 of 70 input rows were malformed" in result.output
    assert "status: reject_rate_exceeded" in result.output
    assert "rejected bad_json=1" in result.output


def test_clean_up_to_date_second_time(cli_runner, tmp_path):
    args = ("clean", DEFECTS, "-o", tmp_path / "o", "--max-reject-rate", "0.5")
    assert invoke(cli_runner, *args).exit_code == 0
    again = invoke(cli_runner, *args)
    assert again.exit_code == 0
    assert "up to date" in again.output


def test_csv_delimiter_option(cli_runner, tmp_path):
    src = tmp_path / "semi.csv"
    src.write_text(
        "id;text;tag\n"
        + "".join(f"{i};document number {i} about the river and the market;t{i}\n" for i in range(5))
    )
    out = tmp_path / "o"
    result = invoke(cli_runner, "dedup", src, "-o", out, "--csv-delimiter", ";")
    assert result.exit_code == 0, result.output
    assert "rows in 5 = kept" in result.output
    assert invoke(cli_runner, "dedup", src, "-o", tmp_path / "p").exit_code == 2  # no 'text' column with ","
    bad = invoke(cli_runner, "dedup", src, "-o", tmp_path / "q", "--csv-delimiter", ";;")
    assert bad.exit_code == 2 and "one character" in bad.output


def test_output_on_a_read_only_file_system_exit_2_not_a_bug(cli_runner, tmp_path, monkeypatch):
    """The machine refusing a write (read-only or full file system, no permission) is exit 2 with
    the path, wherever it happens; the previous output being impossible to clear is an OutputError."""
    import errno

    args = ("clean", DEFECTS, "-o", tmp_path / "o", "--max-reject-rate", "0.5")
    assert invoke(cli_runner, *args).exit_code == 0
    real_unlink = Path.unlink

    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    result = invoke(cli_runner, *args, "--force")
    assert result.exit_code == 2, result.output
    assert "cannot replace the previous output" in result.output and "Read-only file system" in result.output
    monkeypatch.setattr(Path, "unlink", real_unlink)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/part-00000.arrow")

    monkeypatch.setattr("dataforge.api.run_pipeline", full)
    result = invoke(cli_runner, *args, "--force")
    assert result.exit_code == 2, result.output
    assert "/somewhere/part-00000.arrow" in result.output and "No space left" in result.output
    assert "internal error" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("clean", "nope.jsonl", "-o", "x"), "input path 'nope.jsonl' does not exist"),
        (("clean", DEFECTS, "-o", "x", "--preset", "dolma"), "'dolma' is not one of"),
        (("clean", DEFECTS), "Missing option '-o'"),
        (("clean", DEFECTS, "-o", "x", "--workers", "0"), "0 is not in the range"),
        (("clean", DEFECTS, "-o", "x", "--ray-address", "auto"), "needs --executor ray"),
        (("run", "nope.yaml"), "does not exist"),
        (("steps", "filter.gopher"), "unknown step 'filter.gopher'; valid: "),
    ],
)
def test_usage_errors_exit_2(cli_runner, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(cli_runner, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_run_pipeline_with_unknown_step_exit_2(cli_runner, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        f"input: {{paths: [{DEFECTS}]}}\noutput: {{path: out}}\nsteps:\n  - filter.gopher_qualty: {{}}\n"
    )
    result = invoke(cli_runner, "run", f)
    assert result.exit_code == 2
    assert "unknown step 'filter.gopher_qualty'; valid: " in result.output
    assert "filter.gopher_quality" in result.output


def test_run_demo_pipeline_and_inspect(cli_runner, tmp_path):
    out = tmp_path / "demo"
    result = invoke(cli_runner, "run", ROOT / "pipelines" / "demo.yaml", "-o", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["rows_in"] == c["kept"] + c["dropped"] + c["rejected"]
    shown = invoke(cli_runner, "inspect", out, "--verify")
    assert shown.exit_code == 0
    assert "all shards match the manifest" in shown.output
    assert f"kept {c['kept']:,}" in shown.output
    # the same summary as report.html: PII matches per type, the MinHash line, where the page is
    report = json.loads((out / "report.json").read_text())
    pii = next(s for s in report["ledger"]["steps"] if s["step"] == "pii.redact")["counters"]
    assert "pii.redact: " + ", ".join(f"{k}={v:,}" for k, v in sorted(pii.items())) in shown.output
    lsh = report["global_info"]["dedup.minhash"]["finalize"]["lsh"]
    assert f"minhash: {lsh['bands']} bands x {lsh['rows']} rows" in shown.output
    assert f"report: {out}/report.html" in shown.output.replace("\n", "")
    as_json = json.loads(invoke(cli_runner, "inspect", out, "--json", "--rows", "2").output)
    assert as_json["counts"] == c
    assert len(as_json["samples"]) == 2
    assert [s["step"] for s in as_json["ledger"]["steps"]][:2] == ["normalize.text", "filter.gopher_quality"]


def test_inspect_detects_corrupt_shard_exit_1(cli_runner, tmp_path):
    out = tmp_path / "o"
    assert invoke(cli_runner, "clean", DEFECTS, "-o", out, "--max-reject-rate", "1").exit_code == 0
    shard = next((out / "data").glob("part-*"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    result = invoke(cli_runner, "inspect", out, "--verify")
    assert result.exit_code == 1
    assert "do not match the manifest" in result.output and "sha256" in result.output


def test_inspect_not_an_output_exit_1(cli_runner, tmp_path):
    result = invoke(cli_runner, "inspect", tmp_path)
    assert result.exit_code == 1
    assert "no manifest.json" in result.output


def test_steps_list_and_detail(cli_runner):
    listing = invoke(cli_runner, "steps").output
    for name in (
        "normalize.text",
        "filter.gopher_quality",
        "filter.c4",
        "filter.fineweb",
        "pii.redact",
        "dedup.exact",
    ):
        assert name in listing
    detail = invoke(cli_runner, "steps", "filter.gopher_quality").output
    assert "min_doc_words = 50" in detail


def test_log_json_writes_json_lines(cli_runner, tmp_path):
    log = tmp_path / "log.jsonl"
    result = invoke(
        cli_runner, "--log-json", log, "clean", DEFECTS, "-o", tmp_path / "o", "--max-reject-rate", "1"
    )
    assert result.exit_code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and all({"time", "level", "message"} <= set(r) for r in records)


def test_log_json_makes_its_folder_or_says_why_not(cli_runner, tmp_path):
    log = tmp_path / "logs" / "nightly" / "run.jsonl"
    result = invoke(
        cli_runner, "--log-json", log, "clean", DEFECTS, "-o", tmp_path / "o", "--max-reject-rate", "1"
    )
    assert result.exit_code == 0 and log.read_text().strip()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bad = cli_runner.invoke(cli, ["--log-json", str(blocker / "run.jsonl"), "steps"])
    assert bad.exit_code == 2
    assert "--log-json" in bad.output and str(blocker / "run.jsonl") in bad.output


def test_cli_choices_match_the_library():
    from dataforge.api import PII_MODES, PRESET_NAMES
    from dataforge.io.inputs import FORMATS
    from dataforge.io.shards import COMPRESSIONS, OUTPUT_FORMATS
    from dataforge.text.quality import PRESETS

    params = {p.name: p for p in cli.commands["clean"].params}
    assert set(params["preset"].type.choices) == set(PRESET_NAMES) == set(PRESETS)
    assert set(params["pii"].type.choices) == set(PII_MODES)
    assert set(params["fmt"].type.choices) == set(FORMATS)
    assert set(params["output_format"].type.choices) == set(OUTPUT_FORMATS)
    assert set(params["compression"].type.choices) == set(COMPRESSIONS)


@pytest.mark.parametrize(
    ("text", "value"), [("65536", 65536), ("64k", 65536), ("64KiB", 65536), ("2M", 2 << 20), ("1g", 1 << 30)]
)
def test_byte_sizes(text, value):
    from dataforge.cli import ByteSize

    assert ByteSize().convert(text, None, None) == value


def test_task_bytes_splits_the_input_and_changes_no_byte(cli_runner, tmp_path):
    import gzip
    import hashlib

    src = tmp_path / "news.jsonl"  # real Reuters stories, uncompressed so the file can be cut
    src.write_bytes(gzip.decompress((ROOT / "sample_data" / "news" / "reuters.jsonl.gz").read_bytes()))
    assert src.stat().st_size > 200_000

    def run(out, *extra):
        log = tmp_path / f"{out}.jsonl"
        res = invoke(cli_runner, "--log-json", log, "clean", src, "-o", tmp_path / out, *extra)
        assert res.exit_code == 0, res.output
        tasks = [json.loads(line)["message"] for line in log.read_text().splitlines()]
        return [m for m in tasks if m.startswith("planned ")], {
            p.relative_to(tmp_path / out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((tmp_path / out).rglob("*.arrow"))
        }

    whole, digests_whole = run("whole")
    cut, digests_cut = run("cut", "--task-bytes", "32k")
    assert whole == ["planned 1 task(s) of <= 67108864 bytes from 1 file(s) (0 split)"]
    n = int(cut[0].split()[1])
    assert cut == [f"planned {n} task(s) of <= 32768 bytes from 1 file(s) (1 split)"]
    assert n >= src.stat().st_size // (32 << 10)
    assert digests_cut == digests_whole
    bad = cli_runner.invoke(cli, ["clean", str(src), "-o", str(tmp_path / "x"), "--task-bytes", "lots"])
    assert bad.exit_code == 2 and "'lots' is not a size" in bad.output


def test_shard_bytes_cuts_the_output_into_more_shards_with_the_same_rows(cli_runner, tmp_path):
    """``--shard-bytes`` bounds each shard's uncompressed bytes: the rows, their order and the
    ledger stay those of one big shard; a bad size is a usage error."""
    import polars as pl

    from dataforge.io.shards import read_manifest, read_shard
    from dataforge.stages import row_bytes

    src = ROOT / "sample_data" / "news" / "reuters.jsonl.gz"
    one, cut = tmp_path / "one", tmp_path / "cut"
    assert invoke(cli_runner, "dedup", src, "-o", one, "--shard-bytes", "1G").exit_code == 0
    res = invoke(cli_runner, "dedup", src, "-o", cut, "--shard-bytes", "200k")
    assert res.exit_code == 0, res.output

    def rows(out):
        return pl.concat([pl.from_arrow(read_shard(out / s["path"])) for s in read_manifest(out)["shards"]])

    shards = read_manifest(cut)["shards"]
    assert len(read_manifest(one)["shards"]) == 1 and len(shards) > 3
    for s in shards:
        assert row_bytes(cut / s["path"]).sum() <= 200 << 10
    assert rows(cut).equals(rows(one))
    assert read_manifest(cut)["counts"] == read_manifest(one)["counts"]
    assert read_manifest(cut)["config"]["output"]["shard_bytes"] == 200 << 10
    bad = cli_runner.invoke(cli, ["dedup", str(src), "-o", str(tmp_path / "x"), "--shard-bytes", "0"])
    assert bad.exit_code == 2 and "'0' is not a size" in bad.output


def test_run_task_bytes_overrides_the_file_and_is_refused_for_other_kinds(cli_runner, tmp_path):
    import gzip

    (tmp_path / "news.jsonl").write_bytes(
        gzip.decompress((ROOT / "sample_data" / "news" / "reuters.jsonl.gz").read_bytes())
    )
    (tmp_path / "p.yaml").write_text(
        "name: p\ninput: {paths: [news.jsonl], task_bytes: 1000000000}\noutput: {path: out}\nsteps:\n  - normalize.text: {}\n"
    )
    log = tmp_path / "log.jsonl"
    res = invoke(cli_runner, "--log-json", log, "run", tmp_path / "p.yaml", "--task-bytes", "64k")
    assert res.exit_code == 0, res.output
    planned = [json.loads(x)["message"] for x in log.read_text().splitlines() if '"planned ' in x]
    assert len(planned) == 1 and "of <= 65536 bytes" in planned[0] and "(1 split)" in planned[0]
    res = cli_runner.invoke(cli, ["run", str(ROOT / "pipelines" / "noise.yaml"), "--task-bytes", "1M"])
    assert res.exit_code == 2 and "--task-bytes applies to document pipelines" in res.output
