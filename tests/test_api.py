"""The public Python API: names exist, are callable, and outputs replace each other cleanly."""

from __future__ import annotations

from pathlib import Path

import dataforge

DEFECTS = Path(__file__).resolve().parent.parent / "sample_data" / "defects" / "planted.jsonl"


def test_public_names():
    for name in dataforge.__all__:
        assert getattr(dataforge, name) is not None, name


def test_dedup_stays_callable_after_importing_the_subpackage(tmp_path):
    import dataforge.dedup.minhash  # this import used to replace the function

    assert callable(dataforge.dedup)
    import inspect

    from dataforge.api import dedup

    # and it shows the function's signature (help, IDEs, docgen), not (*args, **kwargs)
    assert inspect.signature(dataforge.dedup) == inspect.signature(dedup)
    assert "threshold" in inspect.signature(dataforge.dedup).parameters
    first = dataforge.dedup(str(DEFECTS), output=tmp_path / "a", max_reject_rate=None)
    second = dataforge.dedup(str(DEFECTS), output=tmp_path / "b", max_reject_rate=None)
    assert first.kept == second.kept > 0


def test_overwrite_removes_report_tables_of_the_previous_run(tmp_path):
    out = tmp_path / "o"
    dataforge.dedup(str(DEFECTS), output=out, report_clusters=True, max_reject_rate=None)
    assert (out / "clusters").is_dir() and (out / "cluster_pairs").is_dir()
    dataforge.dedup(str(DEFECTS), output=out, threshold=0.9, overwrite=True, max_reject_rate=None)
    assert not (out / "clusters").exists()
    assert not (out / "cluster_pairs").exists()


def test_noise_yaml_output_override_moves_fixed_out_along(monkeypatch, tmp_path):
    """`dataforge run noise.yaml -o X`: fixed shards declared inside the output go inside X."""
    import functools

    import dataforge.noise.analyze as analyze
    from dataforge.api import run_noise_yaml

    seen = {}

    @functools.wraps(analyze.noise_report)  # keeps the signature the option check reads
    def fake(inputs, **kw):
        seen.update(kw)
        return "ran"

    monkeypatch.setattr(analyze, "noise_report", fake)
    root = Path(__file__).resolve().parent.parent
    assert run_noise_yaml(root / "pipelines" / "noise.yaml", output=tmp_path / "n") == "ran"
    assert seen["output"] == str(tmp_path / "n")
    assert seen["fixed_out"] == str(tmp_path / "n" / "fixed")
