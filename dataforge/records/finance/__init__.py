"""SEC financial filings -> canonical de-duplicated facts, checks and rendered text.

Pipeline: a reader (:func:`read_companyfacts`, :func:`read_fsds`, :func:`read_xbrl`) returns an
:class:`~dataforge.records.model.Extract` with table ``raw_fact``; :func:`normalize_facts` turns it
into tables ``fact`` / ``restatement`` / ``check`` (schemas ``fin.fact.v1``, ``fin.restatement.v1``,
``fin.check.v1``); :func:`render_text` and :func:`render_instruct` turn those into documents and
grounded instruction pairs whose numbers all trace to ``fact_ids``.

Example:
    >>> from dataforge.records.finance import read_companyfacts, normalize_facts, render_text
    >>> ex = normalize_facts(read_companyfacts("sample_data/finance/companyfacts"))  # doctest: +SKIP
    >>> docs = render_text(ex.tables)  # doctest: +SKIP
"""

from __future__ import annotations

from dataforge.records.finance.checks import run_checks
from dataforge.records.finance.companyfacts import read_companyfacts
from dataforge.records.finance.facts import normalize_facts
from dataforge.records.finance.fsds import read_fsds
from dataforge.records.finance.render import render_instruct, render_text
from dataforge.records.finance.xbrl import read_xbrl

READERS = {"companyfacts": read_companyfacts, "fsds": read_fsds, "xbrl": read_xbrl}

__all__ = [
    "READERS",
    "normalize_facts",
    "read_companyfacts",
    "read_fsds",
    "read_xbrl",
    "render_instruct",
    "render_text",
    "run_checks",
]
