"""The generated references (docs/cli.md, docs/steps.md, docs/api.md) match the code; their YAML
examples load; the API reference covers every public name. (Every example in every doc runs in
tests/test_doc_examples.py.)"""

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


def test_api_reference_covers_every_public_name():
    import dataforge
    import dataforge.train

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    for mod in (dataforge, dataforge.train):
        for name in mod.__all__:
            if name != "__version__":
                assert f"#### `{mod.__name__}.{name}`" in text, (
                    f"{mod.__name__}.{name} missing from docs/api.md"
                )
    assert "#### `dataforge.train.validate.validate`" in text


def test_api_reference_does_not_depend_on_what_was_imported():
    """``dataforge.dedup`` is the function even after the ``dataforge.dedup`` subpackage is imported
    (which replaces the package attribute with the module)."""
    import dataforge.dedup.exact  # noqa: F401
    from dataforge.docgen import api_reference

    text = api_reference()
    assert text == (DOCS / "api.md").read_text(encoding="utf-8")
    assert "dataforge.dedup(\n    inputs:" in text
    assert " at 0x" not in text


def test_docstring_markdown_sections():
    from dataforge.docgen import docstring_markdown, format_signature

    doc = """Do a thing.

    Args:
        a, b: the ``inputs``; see :func:`~dataforge.api.clean`.
            More about them.
        c: one more.

    Returns:
        The result.

    Example:
        >>> 1 + 1  # doctest: +SKIP
        2
    """
    md = "\n".join(docstring_markdown(doc))
    assert "- `a`, `b`: the `inputs`; see `clean`. More about them." in md
    assert "**Returns:**\n\nThe result." in md
    assert "```pycon\n>>> 1 + 1\n2\n```" in md

    def f(x: int, /, y: str = "a", *, z: list[int] | None = None) -> bool: ...

    assert format_signature("f", f) == "f(x: int, /, y: str = 'a', *, z: list[int] | None = None) -> bool"
