"""dataforge: clean, deduplicate and account for training data; write stage-tagged Arrow shards.

The public API (what the CLI calls, and what training jobs import); every CLI command is one
function call, with the command's options as keyword arguments::

    import dataforge

    report = dataforge.clean(["sample_data/news"], output="out/news", preset="gopher")
    assert report.rows_in == report.kept + report.dropped + report.rejected
    report = dataforge.run("pipelines/demo.yaml")
    info = dataforge.inspect_output("out/news", verify=True)

The training loader is :mod:`dataforge.train`. Reference: ``docs/api.md``, generated from the
signatures and docstrings (``make docs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "DataforgeError",
    "InputError",
    "NoiseReport",
    "OutputError",
    "Pipeline",
    "RunReport",
    "__version__",
    "build_curriculum",
    "clean",
    "dedup",
    "inspect_output",
    "load_curriculum",
    "load_pipeline",
    "noise_report",
    "normalize_ehr",
    "normalize_finance",
    "run",
    "run_pipeline",
    "validate",
]

from dataforge.errors import ConfigError, DataError, DataforgeError, InputError, OutputError

_LAZY = {
    "clean": "dataforge.api",
    "dedup": "dataforge.api",
    "run": "dataforge.api",
    "run_pipeline": "dataforge.runner",
    "load_pipeline": "dataforge.config",
    "Pipeline": "dataforge.config",
    "RunReport": "dataforge.report",
    "inspect_output": "dataforge.inspect",
    "noise_report": "dataforge.noise.analyze",
    "NoiseReport": "dataforge.noise.report",
    "build_curriculum": "dataforge.curriculum",
    "load_curriculum": "dataforge.curriculum",
    "validate": "dataforge.train.validate",
    "normalize_ehr": "dataforge.records.normalize",
    "normalize_finance": "dataforge.records.normalize",
}

if TYPE_CHECKING:  # pragma: no cover
    from dataforge.api import clean, dedup, run
    from dataforge.config import Pipeline, load_pipeline
    from dataforge.curriculum import build_curriculum, load_curriculum
    from dataforge.inspect import inspect_output
    from dataforge.noise.analyze import noise_report
    from dataforge.noise.report import NoiseReport
    from dataforge.records.normalize import normalize_ehr, normalize_finance
    from dataforge.report import RunReport
    from dataforge.runner import run_pipeline
    from dataforge.train.validate import validate


def __getattr__(name: str) -> Any:
    """Import the heavy parts (polars, pyarrow) only when they are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'dataforge' has no attribute {name!r}"
    raise AttributeError(msg)
