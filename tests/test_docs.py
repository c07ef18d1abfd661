"""The generated references (docs/cli.md, docs/steps.md) match the code; their YAML examples load."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dataforge.docgen import GENERATED
from dataforge.registry import build_step, step_names

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_generated_references_are_up_to_date():
    import difflib

    for name, fn in GENERATED.items():
        committed = (DOCS / name).read_text(encoding="utf-8")
        fresh = fn()
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True)))[:40])
        assert committed == fresh, f"{name} out of date: run `make docs` and commit\n{diff}"


def test_cli_reference_covers_every_command():
    from dataforge.cli import cli

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in cli.commands:
        assert f"## dataforge {name}\n" in text
    assert "## dataforge normalize ehr\n" in text and "## dataforge normalize finance\n" in text


def test_step_reference_examples_build():
    text = (DOCS / "steps.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    built = set()
    for block in blocks:
        for item in yaml.safe_load(block)["steps"]:
            ((name, opts),) = item.items()
            build_step(name, opts or {})
            built.add(name)
    assert built == set(step_names())
