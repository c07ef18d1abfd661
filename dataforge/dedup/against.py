"""The reference set of ``against`` (both dedup steps): where it is and how it is read.

A step with ``against``, ``against_text_field`` and ``against_id_field`` options reads its
reference files with :func:`reference_spec`; :func:`checked_reference_files` is its
``reference_inputs`` (checked before any work, part of the run key).
"""

from __future__ import annotations

from typing import Any

from dataforge.errors import InputError
from dataforge.io.inputs import InputFile, InputSpec, discover


def reference_spec(step: Any) -> InputSpec:
    """The input spec of ``step``'s reference set (its ``against*`` options)."""
    return InputSpec(paths=step.against, text_field=step.against_text_field, id_field=step.against_id_field)


def reference_files(step: Any) -> list[InputFile]:
    """``step``'s reference files, in order."""
    return discover(reference_spec(step))


def checked_reference_files(step: Any) -> list[InputFile]:
    """The reference files, each checked like an input file; none without ``against``. Errors
    name the step's option."""
    from dataforge.io.readers import check_file

    if not step.against:
        return []
    spec = reference_spec(step)
    try:
        files = discover(spec)
        for f in files:
            check_file(f, spec)
    except InputError as exc:
        raise InputError(f"{step.name}: against: {exc}") from None
    return files
