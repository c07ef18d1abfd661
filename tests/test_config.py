"""Pipeline YAML: strict validation with errors that list the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataforge.config import load_pipeline, pipeline_from_dict
from dataforge.errors import ConfigError
from dataforge.registry import build_step, step_names

BASE = {
    "input": {"paths": ["data"]},
    "output": {"path": "out"},
    "steps": [{"dedup.exact": {}}],
}


def with_(**kw):
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    d.update(kw)
    return d


def test_valid_pipeline_resolves_paths_relative_to_file(tmp_path):
    (tmp_path / "p").mkdir()
    f = tmp_path / "p" / "x.yaml"
    f.write_text(
        "input: {paths: [../data]}\noutput: {path: ../out, shard_rows: 7}\nsteps:\n  - dedup.exact: {keep: last}\n"
    )
    p = load_pipeline(f)
    assert p.name == "x"
    assert p.input.paths == (str(tmp_path / "data"),)
    assert p.output.path == str(tmp_path / "out")
    assert p.output.shard_rows == 7
    assert p.output.shard_bytes == 64 << 20  # the default; `shard_bytes: null` lifts it
    f.write_text(
        "input: {paths: [../data]}\noutput: {path: ../out, shard_bytes: null}\nsteps:\n  - dedup.exact: {}\n"
    )
    assert load_pipeline(f).output.shard_bytes is None
    f.write_text(
        "input: {paths: [../data]}\noutput: {path: ../out, shard_rows: 7}\nsteps:\n  - dedup.exact: {keep: last}\n"
    )
    p = load_pipeline(f)
    assert p.steps[0].keep == "last"
    assert p.steps_spec() == [
        {
            "dedup.exact": {
                "normalize": "lower",
                "keep": "last",
                "against": [],
                "against_text_field": "text",
                "against_id_field": "id",
                "hash_partitions": 16,
            }
        }
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_(stepz=[]), "unknown key 'stepz' in the pipeline; valid: .*steps"),
        (
            with_(input={"paths": ["x"], "txt_field": "t"}),
            "unknown key 'txt_field' in input; valid: .*text_field",
        ),
        (with_(output={"path": "o", "rows": 3}), "unknown key 'rows' in output; valid: .*shard_rows"),
        (with_(output={"path": "o", "shard_rows": 0}), "shard_rows must be a positive integer, got 0"),
        (
            with_(output={"path": "o", "shard_bytes": 0}),
            "shard_bytes must be a positive integer \\(bytes\\) or null for no limit, got 0",
        ),
        (with_(output={"path": "o", "shard_bytes": "64M"}), "shard_bytes must be .*, got '64M'"),
        (with_(output={"path": "o", "shard_bytes": True}), "shard_bytes must be .*, got True"),
        (with_(output={"path": "o", "format": "csv"}), "unknown output format 'csv'; valid: arrow, parquet"),
        (with_(executor={"kind": "spark"}), "unknown executor 'spark'; valid: local, ray"),
        (with_(steps=[{"dedup.exact_": {}}]), "unknown step 'dedup.exact_'; valid: .*dedup.exact"),
        (
            with_(steps=[{"dedup.exact": {"kep": "first"}}]),
            "unknown option 'kep'; valid: against, against_id_field, against_text_field, hash_partitions, keep, normalize",
        ),
        (with_(steps=[{"dedup.exact": {"keep": "random"}}]), "unknown keep 'random'; valid: first, last"),
        (with_(steps=[{"dedup.exact": {"keep": 3}}]), "option 'keep' must be str, got 3"),
        (with_(steps=[{"a": {}, "b": {}}]), "one-key mapping"),
        (with_(steps={"dedup.exact": {}}), "steps must be a list"),
        (with_(steps=[{"dedup.exact": {}}, {"dedup.exact": {}}]), "appears 2 times"),
        (with_(max_reject_rate=2), "max_reject_rate must be a number in \\[0, 1\\]"),
        ({"output": {"path": "o"}, "steps": []}, "no 'input' section"),
        (with_(input={"paths": []}), "input.paths must be a non-empty list"),
    ],
)
def test_invalid_pipelines(data, message):
    with pytest.raises(ConfigError, match=message):
        pipeline_from_dict(data)


def test_yaml_errors_name_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("input:\n  paths: [a\noutput: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_pipeline(f)
    f.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_pipeline(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("input: !!python/object/apply:os.system ['echo pwned']\noutput: {path: o}\nsteps: []\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_pipeline(f)


def test_a_key_given_twice_is_an_error_not_the_last_one_silently(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text(
        "name: d\ninput: {paths: [a.jsonl]}\noutput: {path: o}\n"
        "steps:\n  - normalize.text: {}\nsteps:\n  - dedup.exact: {}\n"
    )
    with pytest.raises(ConfigError, match=r"dup.yaml:\d+: invalid YAML: key 'steps' is given twice"):
        load_pipeline(f)
    f.write_text(
        "name: d\ninput: {paths: [a.jsonl]}\noutput: {path: o}\nsteps:\n  - dedup.minhash: {threshold: 0.7, threshold: 0.9}\n"
    )
    with pytest.raises(ConfigError, match="key 'threshold' is given twice"):
        load_pipeline(f)
    # merge keys (<<) are not repeats
    f.write_text(
        "name: d\nbase: &o {path: o}\ninput: {paths: [a.jsonl]}\noutput:\n  <<: *o\n  shard_rows: 10\nsteps: []\n"
    )
    with pytest.raises(ConfigError, match="unknown key"):  # 'base' is not a pipeline key, but it parsed
        load_pipeline(f)


def test_keep_dropped_must_be_a_boolean(tmp_path):
    f = tmp_path / "k.yaml"
    f.write_text('name: k\ninput: {paths: [a.jsonl]}\noutput: {path: o, keep_dropped: "false"}\nsteps: []\n')
    with pytest.raises(ConfigError, match="keep_dropped must be true or false, got 'false'"):
        load_pipeline(f)


def test_every_registered_step_builds_with_defaults():
    for name in step_names():
        step = build_step(name, {})
        assert step.name == name
        assert isinstance(step.options(), dict)


def test_shipped_pipelines_load():
    root = Path(__file__).resolve().parent.parent / "pipelines"
    files = sorted(root.glob("*.yaml"))
    assert files, "no pipelines shipped"
    from dataforge.api import noise_yaml_options, normalize_yaml_options
    from dataforge.config import read_yaml

    for f in files:
        raw = read_yaml(f)
        if "noise_report" in raw:  # a noise-report file (run by `dataforge run` too)
            inputs, opts = noise_yaml_options(f, raw)
            assert all(Path(i).exists() for i in inputs), f
            assert opts["output"], f
            continue
        if "stages" in raw:  # a curriculum file: its sources are the outputs of the other demo pipelines
            from dataforge.curriculum import load_curriculum
            from dataforge.errors import InputError

            sources = [Path(f.parent, src["path"]) for st in raw["stages"] for src in st["sources"]]
            if all(p.exists() for p in sources):
                spec = load_curriculum(f)
                assert spec.stages, f
            else:  # a fresh clone before `make demo` (or the README's tour): the error names the folder
                missing = next(p for p in sources if not p.exists())
                with pytest.raises(InputError, match=missing.name):
                    load_curriculum(f)
            continue
        if "normalize" in raw:  # a records file (dataforge run -> normalize_ehr / normalize_finance)
            domain, inputs, opts = normalize_yaml_options(f, raw)
            assert domain in ("ehr", "finance"), f
            assert all(Path(i).exists() for i in inputs), f
            assert opts["output"], f
            continue
        p = load_pipeline(f)
        assert p.steps, f
