"""Fuzz the config loaders and check the two config guarantees of issue 7.

* Pipeline, curriculum, ``noise_report:`` and ``normalize:`` YAML of any shape (random scalars,
  lists and mappings where sections are expected, invalid UTF-8, 10k-deep nesting, tabs) ends in a
  ConfigError/InputError, never another exception.
* YAML is loaded safely only: ``!!python/object`` tags are ConfigErrors and no module of the code
  base calls a non-safe YAML loader.
* Write paths cannot escape the declared output folder (``dataforge.config.check_write_path``):
  ``noise_report.fixed_out`` outside ``noise_report.output`` (``../x``, an absolute path elsewhere,
  a symlink leading out) and a pipeline output whose ``data/`` (or another entry dataforge writes)
  is a symlink leading out are ConfigErrors naming the key and the path.
"""

from __future__ import annotations

import ast
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.config import OUTPUT_ENTRIES, check_write_path, load_pipeline, pipeline_from_dict, read_yaml
from dataforge.errors import ConfigError, DataforgeError

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["../x", "/", "", ".", "out", "dedup.exact", "local", "ray"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _variant(base: dict[str, Any], keys: list[str], draw: st.DrawFn) -> dict[str, Any]:
    doc = dict(base)
    for key in draw(st.sets(st.sampled_from(keys), max_size=3)):
        if draw(st.booleans()):
            doc.pop(key, None)
        else:
            doc[key] = draw(VALUES)
    return doc


@st.composite
def pipeline_doc(draw: st.DrawFn) -> dict[str, Any]:
    base = {
        "name": "p",
        "input": {"paths": ["in"], "text_field": "text"},
        "output": {"path": "out", "shard_rows": 10},
        "executor": {"kind": "local", "workers": 1},
        "steps": [{"dedup.exact": {}}],
        "max_reject_rate": 0.1,
        "batch_rows": 100,
    }
    doc = _variant(base, [*base, "bogus"], draw)
    for section, keys in (("input", ["paths", "text_field", "id_field", "format", "csv_delimiter"]),
                          ("output", ["path", "shard_rows", "format", "compression", "keep_dropped"]),
                          ("executor", ["kind", "workers", "address"])):  # fmt: skip
        if isinstance(doc.get(section), dict) and draw(st.booleans()):
            doc[section] = _variant(doc[section], keys, draw)
    if draw(st.booleans()):
        doc["steps"] = draw(
            st.lists(
                st.one_of(
                    VALUES,
                    st.dictionaries(
                        st.sampled_from(["dedup.exact", "filter.c4", "nope"]), VALUES, max_size=2
                    ),
                ),
                max_size=3,
            )
        )
    return doc


@SETTINGS
@given(doc=pipeline_doc())
def test_pipeline_dict(doc: dict[str, Any]) -> None:
    with contextlib.suppress(DataforgeError):
        pipeline_from_dict(doc, base_dir=Path("/tmp/cfg"))


@st.composite
def curriculum_doc(draw: st.DrawFn) -> dict[str, Any]:
    source = {"name": "web", "path": "src", "weight": 1}
    base = {
        "name": "c",
        "seed": 0,
        "output": {"path": "out"},
        "stages": [{"stage": 1, "name": "s", "sources": [source]}],
    }
    doc = _variant(base, [*base, "bogus"], draw)
    if (
        isinstance(doc.get("stages"), list)
        and doc["stages"]
        and isinstance(doc["stages"][0], dict)
        and draw(st.booleans())
    ):
        stage = _variant(doc["stages"][0], ["stage", "name", "sources", "budget", "bogus"], draw)
        if isinstance(stage.get("sources"), list) and draw(st.booleans()):
            stage["sources"] = [
                _variant(
                    source,
                    ["name", "path", "weight", "part", "where", "repeat", "require_kind", "require_steps"],
                    draw,
                )
            ]
        doc["stages"] = [stage]
    return doc


@SETTINGS
@given(doc=curriculum_doc())
def test_curriculum_dict(doc: dict[str, Any]) -> None:
    from dataforge.curriculum import curriculum_from_dict

    with contextlib.suppress(DataforgeError):
        curriculum_from_dict(doc, base_dir=Path("/tmp/cfg-does-not-exist"))


@SETTINGS
@given(
    section=st.sampled_from(["noise_report", "normalize"]),
    body=st.one_of(
        VALUES,
        st.fixed_dictionaries(
            {"inputs": VALUES, "output": VALUES, "domain": st.sampled_from(["ehr", "finance", "x"])}
        ),
    ),
)
def test_noise_and_normalize_sections(section: str, body: Any) -> None:
    """Through the file, as the CLI and ``dataforge.run`` read them (``read_yaml`` first)."""
    from dataforge.api import noise_yaml_options, normalize_yaml_options

    fn = noise_yaml_options if section == "noise_report" else normalize_yaml_options
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "x.yaml")
        path.write_text(yaml.safe_dump({"name": "x", section: body}))
        with contextlib.suppress(DataforgeError):
            fn(path)


@SETTINGS
@given(
    text=st.one_of(st.text(max_size=200), st.binary(max_size=100).map(lambda b: b.decode("latin-1"))),
    raw=st.booleans(),
)
def test_yaml_text(text: str, raw: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "p.yaml")
        path.write_bytes(text.encode("latin-1", "replace") if raw else text.encode("utf-8", "surrogatepass"))
        try:
            load_pipeline(path)
        except DataforgeError as exc:
            assert isinstance(exc, ConfigError | DataforgeError)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe name: x\n", b"name: x\n\xc3\n", b"[" * 10_000 + b"]" * 10_000, b"\tname: x\n", b"", b"- a\n"],
)
def test_yaml_odd_files(tmp_path, content: bytes) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- safe loading


@pytest.mark.parametrize(
    "tag",
    ["!!python/object/apply:os.system ['touch {marker}']", "!!python/object:builtins.object {{}}",
     "!!python/name:os.system", "!!python/object/new:os.system ['touch {marker}']"],
)  # fmt: skip
@pytest.mark.parametrize("section", ["input", "noise_report", "stages"])
def test_python_tags_are_config_errors(tmp_path, tag: str, section: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: x\n{section}: {tag.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        read_yaml(path)
    assert not marker.exists()


def test_every_yaml_load_in_the_code_base_is_safe() -> None:
    """No module calls yaml.load/unsafe_load/full_load or names an unsafe Loader."""
    unsafe = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
    bad_loaders = {"Loader", "UnsafeLoader", "FullLoader"}
    found = []
    for py in sorted((ROOT / "dataforge").rglob("*.py")):
        tree = ast.parse(py.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr in unsafe | bad_loaders
            ):
                found.append(f"{py.relative_to(ROOT)}:{node.lineno}: yaml.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                names = {a.name for a in node.names}
                if names & (unsafe | bad_loaders):
                    found.append(f"{py.relative_to(ROOT)}:{node.lineno}: from yaml import {names}")
    assert not found, found
    assert yaml.safe_load("a: 1") == {"a": 1}


# --------------------------------------------------------------------------- write paths


def _noise_yaml(tmp_path: Path, output: str, fixed_out: str) -> Path:
    path = tmp_path / "cfg" / "noise.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"name: n\nnoise_report:\n  inputs: [data.jsonl]\n  output: {output}\n  fixed_out: {fixed_out}\n"
    )
    return path


@pytest.mark.parametrize("fixed_out", ["../out/fixed", "../out", "../out/a/../fixed", "OUT/fixed"])
def test_fixed_out_inside_output_is_fine(tmp_path, fixed_out: str) -> None:
    path = _noise_yaml(tmp_path, "../out", fixed_out.replace("OUT", str(tmp_path / "out")))
    assert read_yaml(path)["noise_report"]["fixed_out"]


@pytest.mark.parametrize(
    "fixed_out", ["../elsewhere", "../out/../../x", "/tmp/somewhere", "../out-sibling", "."]
)
def test_fixed_out_outside_output_is_a_config_error(tmp_path, fixed_out: str) -> None:
    path = _noise_yaml(tmp_path, "../out", fixed_out)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    msg = str(info.value)
    assert "noise_report.fixed_out" in msg and "outside the output folder" in msg and "noise.yaml" in msg


def test_fixed_out_through_a_symlink_leading_out(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "out" / "fixed").symlink_to(tmp_path / "victim")
    path = _noise_yaml(tmp_path, "../out", "../out/fixed")
    with pytest.raises(ConfigError, match=r"noise_report.fixed_out '.*fixed' \(resolves to '.*victim'\)"):
        read_yaml(path)


def test_shipped_noise_pipeline_passes() -> None:
    read_yaml(ROOT / "pipelines" / "noise.yaml")


@pytest.mark.parametrize("entry", ["data", "_work", "rejects", "report.json"])
def test_pipeline_output_entry_symlinked_out_is_a_config_error(tmp_path, entry: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "out" / entry).symlink_to(tmp_path / "victim")
    path = tmp_path / "p.yaml"
    path.write_text("input: {paths: [in]}\noutput: {path: out}\nsteps: []\n")
    with pytest.raises(
        ConfigError, match=rf"output.path \({entry}\) '.*{entry}' \(resolves to '.*victim'\) is outside"
    ):
        load_pipeline(path)


def test_pipeline_output_itself_may_be_a_symlink(tmp_path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "data").mkdir()
    path = tmp_path / "p.yaml"
    path.write_text("input: {paths: [in]}\noutput: {path: out}\nsteps: []\n")
    assert load_pipeline(path).output.path == str(tmp_path / "out")


@given(rel=st.lists(st.sampled_from(["..", ".", "a", "b", "out", "/"]), max_size=5))
@settings(max_examples=200, deadline=None)
def test_check_write_path_matches_a_lexical_model(rel: list[str]) -> None:
    """Without symlinks, the rule is: the normalized absolute path starts with output + '/'."""
    import os

    out = "/base/out"
    target = os.path.normpath(os.path.join(out, *rel)) if rel else out
    inside = target == out or target.startswith(out + "/")
    try:
        check_write_path("k", target, out)
        assert inside
    except ConfigError as exc:
        assert not inside and repr(target) in str(exc) and "k " in str(exc)


def test_output_entries_match_the_runner() -> None:
    """OUTPUT_ENTRIES lists what runner.py writes under output.path (kept in sync by this test)."""
    from dataforge import runner
    from dataforge.io.shards import MANIFEST
    from dataforge.report import REPORT_JSON, REPORT_MD

    expected = {
        "data",
        "dropped",
        "rejects",
        runner.WORK_DIR,
        *runner.REPORT_DIRS,
        MANIFEST,
        REPORT_JSON,
        REPORT_MD,
    }
    assert expected <= set(OUTPUT_ENTRIES)
