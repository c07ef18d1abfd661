"""`normalize` reads its files on an executor: the tasks' extracts merge into exactly what one reader
call returns (every splittable source, FHIR files that depend on each other read together), and the
output folder is byte-identical for 1 and 2 local workers, a local Ray and a two-node Ray cluster
(report.json apart from the executor, workers, timings and output path). CLI and pipeline-file
options, and their errors."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import dataforge
from dataforge.cli import cli
from dataforge.errors import ConfigError
from dataforge.io.shards import read_shard
from dataforge.records import normalize
from dataforge.records.ehr.fhir import fhir_tasks, merge_fhir_parts, read_fhir
from dataforge.records.model import Extract

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SALT = "unit-test-salt-0123456789"
# report.json fields that record how and when the run went, not what it wrote
VOLATILE = ("output", "executor", "workers", "timings", "started_at", "finished_at", "peak_rss_mb")
RENDER = "text,instruct"
MAX_REJECT_RATE = 1.0  # the inputs hold malformed files on purpose (and the CLI cannot say None)


@pytest.fixture(scope="module", autouse=True)
def salt():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATAFORGE_DEID_SALT", SALT)
        yield


class PickledSerial:
    """An executor running tasks one after another in this process, each task and result through
    pickle as between processes; counts the tasks."""

    name = "serial"
    workers = 2

    def __init__(self) -> None:
        self.tasks = 0

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, on_done: Any = None) -> list[Any]:
        self.tasks += len(items)
        return [pickle.loads(pickle.dumps(fn(pickle.loads(pickle.dumps(i))))) for i in items]

    def close(self) -> None:
        pass


def assert_same_extract(got: Extract, want: Extract) -> None:
    assert list(got.tables) == list(want.tables)
    for name, frame in want.tables.items():
        assert_frame_equal(got.tables[name], frame)
    assert got.rows_in == want.rows_in
    assert got.inputs == want.inputs
    assert dict(got.counters) == dict(want.counters)
    assert_frame_equal(got.rejects, want.rejects)
    assert_frame_equal(got.dropped, want.dropped)


# --------------------------------------------------------------------------- inputs


def _json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _bundle(*resources: dict | None) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} if r is not None else {"request": {"method": "DELETE"}} for r in resources],
    }


def _patient(pid: str, **extra: Any) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-02-03", **extra}


def _observation(oid: str, patient: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2020-01-01T10:00:00Z",
        "valueQuantity": {"value": 170, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
    }


def fhir_folder(d: Path) -> Path:
    """The 3 real Synthea Bundles plus files whose rejects and drops fall in every phase of the
    reader, in an order that differs from the file order: x1 rejects an Observation and drops an
    entry without resource and a Claim; x2 rejects a Patient (bad date), then its Encounter; x3 is
    not JSON; x4 (NDJSON) has a bad line 2."""
    d.mkdir()
    for f in sorted((SAMPLE / "ehr" / "synthea_fhir").glob("*.json.gz")):
        shutil.copy(f, d / f.name)
    _json(
        d / "x1_obs.json",
        _bundle(_patient("p-a"), _observation("o-a", "nobody"), None, {"resourceType": "Claim", "id": "c"}),
    )
    encounter = {"resourceType": "Encounter", "id": "e-b", "subject": {"reference": "Patient/p-b"}}
    _json(d / "x2_pat.json", _bundle(_patient("p-b", birthDate="1980-02-31"), encounter))
    (d / "x3_bad.json").write_text("<Bundle/>")
    lines = [
        json.dumps(_patient("p-d")),
        '{"resourceType": "Observation", "id": ',
        json.dumps(_observation("o-d", "p-d")),
    ]
    (d / "x4.ndjson").write_text("\n".join(lines) + "\n")
    return d


def companyfacts_folder(d: Path) -> Path:
    """The real Snowflake file, a file that is not JSON and a small one with a bad value."""
    d.mkdir()
    shutil.copy(SAMPLE / "finance" / "companyfacts" / "CIK0001640147_snowflake.json.gz", d)
    (d / "bad.json").write_text("{not json")
    point = {
        "end": "2020-01-31",
        "val": 5,
        "accn": "0000000001-20-000001",
        "form": "10-K",
        "filed": "2020-03-01",
    }
    units = {"USD": [point, {**point, "val": "12,5"}]}
    _json(
        d / "tiny.json", {"cik": 1, "entityName": "Tiny", "facts": {"us-gaap": {"Assets": {"units": units}}}}
    )
    return d


def fsds_inputs(d: Path) -> list[Path]:
    """Two quarters as folders, then two in a folder of zips. The first folder's num.txt has a bad
    value (a reject the reader records as a frame), the second's a ragged row (recorded one at a
    time, so it comes first in one reader call's rejects)."""
    sample = SAMPLE / "finance" / "fsds" / "2009q3_sample.zip"
    zips = d / "zips"
    zips.mkdir(parents=True)
    shutil.copy(sample, zips / "2009q3.zip")
    shutil.copy(sample, zips / "2009q4.zip")
    folders = [d / "2010q1", d / "2010q2"]
    for folder in folders:
        folder.mkdir()
        with zipfile.ZipFile(sample) as zf:
            for m in zf.namelist():
                (folder / Path(m).name).write_bytes(zf.read(m))
    num = (folders[0] / "num.txt").read_text().splitlines(keepends=True)
    fields = num[1].rstrip("\n").split("\t")
    value = num[0].split("\t").index("value")
    bad = "\t".join([*fields[:value], "1.2.3", *fields[value + 1 :]]) + "\n"
    (folders[0] / "num.txt").write_text("".join([*num[:3], bad, *num[3:]]))
    (folders[1] / "num.txt").write_text("".join([*num[:3], "ragged\trow\n", *num[3:]]))
    return [*folders, zips]


def xbrl_inputs(d: Path) -> list[Path]:
    """A folder of two filing folders (one with a linkbase, listed as skipped), and a broken
    instance given as a file."""
    src = SAMPLE / "finance" / "xbrl" / "aapl_10k_fy2023"
    shutil.copytree(src, d / "filings" / "a")
    shutil.copytree(src, d / "filings" / "b")
    (d / "filings" / "b" / "aapl-20230930_lab.xml").write_text("<linkbase/>")
    broken = d / "broken.xml"
    broken.write_text("<xbrl")
    return [d / "filings", broken]


# --------------------------------------------------------------------------- tasks merge into one read


@pytest.mark.parametrize(
    ("source", "tasks"),
    [("fhir", 7), ("companyfacts", 3), ("fsds", 4), ("xbrl", 3), ("synthea", 1)],
)
def test_read_tasks_merge_into_one_read(tmp_path, source, tasks):
    if source == "fhir":
        paths = [str(fhir_folder(tmp_path / "in"))]
    elif source == "companyfacts":
        paths = [str(companyfacts_folder(tmp_path / "in"))]
    elif source == "fsds":
        paths = [str(p) for p in fsds_inputs(tmp_path)]
    elif source == "xbrl":
        paths = [str(p) for p in xbrl_inputs(tmp_path)]
    else:
        paths = [str(SAMPLE / "ehr" / "synthea_csv")]
    sources = normalize.EHR_SOURCES if source in normalize.EHR_SOURCES else normalize.FINANCE_SOURCES
    read = normalize._reader(sources, source, source)
    one = read(paths, root=normalize._common_root(paths))
    ex = PickledSerial()
    merged = normalize._read(source, read, paths, ex)
    assert ex.tasks == tasks
    assert_same_extract(merged, one)
    assert one.rows_in > 0 and one.kept_records() > 0
    if source != "synthea":
        assert one.rejects.height > 0
    if source == "fsds":  # not in file order: see fsds_inputs
        assert one.rejects.select("source_file", "reason").rows() == [
            ("2010q2/num.txt", "ragged_row"),
            ("2010q1/num.txt", "bad_value"),
        ]


def test_fhir_merge_keeps_the_readers_phase_order(tmp_path):
    """Rejects and drops of a FHIR read are in phase order (loading, resource check, Patients,
    Encounters, the rest), not in file order: the merge puts them back in that order."""
    paths = [str(fhir_folder(tmp_path / "in"))]
    one = read_fhir(paths, root=paths[0])
    rejects = one.rejects.select("source_file", "reason", "source_line").rows()
    assert rejects == [
        ("x3_bad.json", "bad_json", None),
        ("x4.ndjson", "bad_json", 2),
        ("x2_pat.json", "bad_date", None),
        ("x2_pat.json", "unknown_patient", None),
        ("x1_obs.json", "unknown_patient", None),
    ]
    dropped = one.dropped.select("source_file", "reason").rows()
    assert dropped[0] == ("x1_obs.json", "no_resource")  # before the real Bundles' Claims
    head, tasks = fhir_tasks(paths, root=paths[0])
    parts = [t() for t in tasks]
    merged = merge_fhir_parts(head, parts)
    assert merged is not None
    assert_same_extract(merged, one)
    # a plain concatenation has the same rows but not the same order
    naive = Extract.concat([p.extract for p in parts])
    assert naive.rejects.select("source_file", "reason", "source_line").rows() != rejects
    assert sorted(naive.rejects.rows(), key=str) == sorted(one.rejects.rows(), key=str)


def test_fhir_files_that_depend_on_each_other_are_read_together(tmp_path):
    """Read alone, these files would give other rows or rejects, so they are read again as one
    task: a bulk export (Observation.ndjson references Patient.ndjson), a Patient accepted in two
    files, and a Patient whose repeat in a later file is a duplicate before it is a bad date."""
    cases = {
        "bulk": ({"Patient.ndjson": _patient("p-1"), "Observation.ndjson": _observation("o-1", "p-1")}, [], 2),
        "twice": (
            {"a.json": _bundle(_patient("p-2")), "b.json": _bundle(_patient("p-2"), _observation("o-2", "p-2"))},
            ["duplicate_id"],
            2,
        ),
        "bad_repeat": (
            {"a.json": _bundle(_patient("p-3")), "b.json": _bundle(_patient("p-3", birthDate="1980-02-31"))},
            ["duplicate_id"],
            1,
        ),
    }  # fmt: skip
    for name, (files, rejected, kept) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for fname, doc in files.items():
            _json(folder / fname, doc)
        paths = [str(folder)]
        one = read_fhir(paths, root=paths[0])
        assert one.rejects["reason"].to_list() == rejected, name
        assert one.kept_records() == kept, name
        head, tasks = fhir_tasks(paths, root=paths[0])
        assert merge_fhir_parts(head, [t() for t in tasks]) is None, name
        ex = PickledSerial()
        assert_same_extract(normalize._read("fhir", read_fhir, paths, ex), one)
        assert ex.tasks == 3  # two files, then all of them in one task


# --------------------------------------------------------------------------- output folders


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("normalize-executors-in")
    return {"fhir": fhir_folder(d / "fhir"), "companyfacts": companyfacts_folder(d / "companyfacts")}


def run_api(source: str, inputs: dict[str, Path], out: Path, **kw: Any) -> Any:
    if source == "fhir":
        fn: Any = dataforge.normalize_ehr
    else:
        fn = dataforge.normalize_finance
    return fn(
        [inputs[source]], output=out, source=source, render=RENDER, max_reject_rate=MAX_REJECT_RATE, **kw
    )


@pytest.fixture(scope="module")
def refs(inputs, tmp_path_factory) -> dict[str, Path]:
    """Outputs of the local executor with one worker (one reader call)."""
    base = tmp_path_factory.mktemp("normalize-executors-ref")
    out = {}
    for source in ("fhir", "companyfacts"):
        report = run_api(source, inputs, base / source)
        assert (report.executor, report.workers) == ("local", 1)
        out[source] = base / source
    return out


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _stable_report(out: Path) -> str:
    rep = json.loads((out / "report.json").read_text())
    for key in VOLATILE:
        rep.pop(key)
    for step in rep["ledger"]["steps"]:
        step.pop("seconds")
    return json.dumps(rep)


def assert_same_output(out: Path, ref: Path) -> None:
    """Every file byte for byte (report.md and report.html hold timings), report.json apart from
    :data:`VOLATILE`."""
    files = _files(ref)
    assert _files(out) == files
    for folder in ("tables/", "text/", "instruct/", "rejects/", "dropped/"):
        assert any(f.startswith(folder) for f in files), folder
    for rel in files:
        if rel not in ("report.json", "report.md", "report.html"):
            assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert _stable_report(out) == _stable_report(ref)


def test_reference_rejects_keep_file_and_line(refs):
    rejects = pl.from_arrow(read_shard(refs["fhir"] / "rejects" / "part-00000.arrow"))
    line = rejects.filter(pl.col("source_line").is_not_null()).row(0, named=True)
    assert line["source_line"] == 2 and line["reason"] == "bad_json"
    # de-identified: the file has a pseudonym, which the error names with the line
    assert line["source_file"].startswith("file-") and f"{line['source_file']} line 2: " in line["error"]
    cf = pl.from_arrow(read_shard(refs["companyfacts"] / "rejects" / "part-00000.arrow"))
    assert cf.select("source_file", "reason").sort("source_file").rows() == [
        ("bad.json", "bad_json"),
        ("tiny.json", "bad_value"),
    ]


def test_two_local_workers_give_the_same_bytes(inputs, refs, tmp_path):
    report = run_api("fhir", inputs, tmp_path / "fhir", workers=2)
    assert (report.executor, report.workers) == ("local", 2)
    assert json.loads((tmp_path / "fhir" / "report.json").read_text())["workers"] == 2
    assert_same_output(tmp_path / "fhir", refs["fhir"])


def _pipeline_file(inputs: dict[str, Path], d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / "finance.yaml"
    path.write_text(
        "name: fin\nnormalize:\n  domain: finance\n  source: companyfacts\n"
        f"  inputs: [{inputs['companyfacts']}]\n  output: {d / 'out'}\n  render: [text, instruct]\n"
        f"  max_reject_rate: {MAX_REJECT_RATE}\n"
    )
    return path


def test_run_pipeline_file_with_two_workers(inputs, refs, tmp_path, cli_runner):
    """``dataforge run X.yaml --workers 2`` on a normalize: file reads on two local workers."""
    path = _pipeline_file(inputs, tmp_path)
    res = cli_runner.invoke(cli, ["-q", "run", str(path), "--workers", "2"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (rep["executor"], rep["workers"]) == ("local", 2)
    assert_same_output(tmp_path / "out", refs["companyfacts"])


def test_bad_executor_options(inputs, tmp_path, cli_runner):
    res = cli_runner.invoke(
        cli, ["normalize", "finance", str(inputs["companyfacts"]), "-o", str(tmp_path / "o"),
              "--source", "companyfacts", "--executor", "nope"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "'nope' is not one of 'local', 'ray'" in res.output
    res = cli_runner.invoke(
        cli, ["normalize", "ehr", str(inputs["fhir"]), "-o", str(tmp_path / "o"), "--source", "fhir",
              "--workers", "0"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--workers" in res.output
    res = cli_runner.invoke(
        cli, ["normalize", "ehr", str(inputs["fhir"]), "-o", str(tmp_path / "o"), "--source", "fhir",
              "--ray-address", "127.0.0.1:6379"],
    )  # fmt: skip
    assert res.exit_code == 2 and "needs --executor ray" in res.output
    with pytest.raises(ConfigError, match=r"unknown executor 'nope'; valid: .*local.*ray"):
        run_api("companyfacts", inputs, tmp_path / "o", executor="nope")
    with pytest.raises(ConfigError, match="workers must be a positive integer, got 0"):
        dataforge.run(_pipeline_file(inputs, tmp_path / "p"), workers=0)
    assert not (tmp_path / "o").exists() and not (tmp_path / "p" / "out").exists()


# --------------------------------------------------------------------------- Ray


@pytest.mark.ray
def test_local_ray_gives_the_same_bytes(inputs, refs, tmp_path, cli_runner):
    """On a real local Ray (started once): ``normalize ehr --executor ray --workers 2`` and
    ``run finance.yaml --executor ray --workers 2``."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "fhir"
        res = cli_runner.invoke(
            cli, ["-q", "normalize", "ehr", str(inputs["fhir"]), "-o", str(out), "--source", "fhir",
                  "--render", RENDER, "--max-reject-rate", str(MAX_REJECT_RATE), "--executor", "ray", "--workers", "2"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        path = _pipeline_file(inputs, tmp_path / "fin")
        res = cli_runner.invoke(cli, ["-q", "run", str(path), "--executor", "ray", "--workers", "2"])
        assert res.exit_code == 0, res.output
    finally:
        ray.shutdown()
    for got, ref in ((out, refs["fhir"]), (tmp_path / "fin" / "out", refs["companyfacts"])):
        rep = json.loads((got / "report.json").read_text())
        assert (rep["executor"], rep["workers"]) == ("ray", 2)
        assert_same_output(got, ref)


@pytest.mark.ray
def test_two_node_cluster_gives_the_same_bytes(inputs, refs, tmp_path, cli_runner, two_node_cluster):
    """On ``ray.cluster_utils.Cluster`` (head + one node, one CPU each), joined by address."""
    report = run_api("fhir", inputs, tmp_path / "fhir", executor="ray", ray_address=two_node_cluster)
    assert (report.executor, report.workers) == ("ray", 2)  # the cluster's CPUs
    out = tmp_path / "companyfacts"
    res = cli_runner.invoke(
        cli, ["-q", "normalize", "finance", str(inputs["companyfacts"]), "-o", str(out), "--source",
              "companyfacts", "--render", RENDER, "--max-reject-rate", str(MAX_REJECT_RATE), "--executor", "ray",
              "--ray-address", two_node_cluster],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((out / "report.json").read_text())["executor"] == "ray"
    assert_same_output(tmp_path / "fhir", refs["fhir"])
    assert_same_output(out, refs["companyfacts"])
