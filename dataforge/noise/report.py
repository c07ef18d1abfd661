"""The noise report: ``report.json`` (machine-readable); ``report.html`` is built from it by
:func:`dataforge.html.noise.render_noise`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataforge.html.kit import REPORT_HTML  # noqa: F401 - re-exported: the noise report's files
from dataforge.noise.issues import ESTIMATE_METHOD

REPORT_JSON = "report.json"
ISSUES_PARQUET = "issues.parquet"


@dataclass
class NoiseReport:
    """What ``dataforge noise-report`` found; ``to_dict`` is ``report.json``.

    Counts always add up: ``rows_in == rows_used + rejected``, ``rows_used == assessed +
    not_assessed`` and, with a fix, ``rows_used == kept + dropped`` (relabelled and not-assessed
    rows are kept).

    Attributes:
        output: the report folder.
        rows_in, rows_used, rejected: input rows; rows analysed; rows rejected (bad label, text
            or feature values, unreadable lines), with ``rejected_by_reason`` and up to a few
            ``reject_samples`` (file, line, reason, error).
        label_col: the label column. ``mode``: ``text``, ``tabular`` or ``pred_probs`` (given
            probabilities, no model trained).
        model, members, member_accuracy: the model preset, its member models and each member's
            out-of-fold accuracy. ``folds``, ``seed``: the cross-validation.
        filter_by, rank_by: cleanlab's ``find_label_issues`` filter and the quality score that
            orders flagged rows.
        classes, class_counts: the assessed classes (in label order; the classes of the noise
            matrix and ``per_class``) and their rows.
        num_flagged: rows flagged as label issues; ``num_issues_estimate``: cleanlab's estimate of
            how many labels are wrong; ``health_score``: cleanlab's overall label health (0-1).
        issues_estimate_method: how ``num_issues_estimate`` is computed:
            ``cleanlab.count.num_label_issues`` with ``off_diagonal_calibrated``, the calibrated
            confident joint's off-diagonal mass (cleanlab's default, ``off_diagonal``, counts
            rows and is well under the truth: 34 for 60 planted flips, 69 for 120).
        noise_matrix: estimated ``P(given label | true label)``, classes x classes.
        per_class: per class, cleanlab's ``rank_classes_by_label_quality``: label issues, inverse
            label issues, label noise, inverse label noise and label quality score.
        overlapping: class pairs cleanlab finds confused, with their number of overlapping rows.
        quality_histogram: ``edges`` (0-1), counts of ``all`` assessed and of ``flagged`` rows per bin.
        top_issues: the first 5,000 flagged rows by rank (the columns of ``issues.parquet``).
        warnings: anything the user should know (tiny classes, few rows per fold, ...).
        num_not_assessed, not_assessed: rows not assessed, and per class ``class``, ``examples``
            and ``reason``: with a model, a class with fewer examples than the folds
            (``class_too_small``) cannot be learnt out of sample, so its rows are left out of the
            models and cleanlab (never flagged; ``assessed`` false in issues.parquet).
        num_outliers: rows flagged as outliers when outlier scoring ran, else None.
        rounds: one entry per re-scoring round (``--rounds``): rows flagged and member accuracy.
        fix: with ``--fix drop|relabel``: what the fixed output holds and where (empty without).
        timings: seconds per phase. ``files``: report.json, report.html and issues.parquet names.
        inputs: the input files (path, format, compression, bytes).
        dataforge_version, config: the version and options of the run.
    """

    output: str
    rows_in: int
    rows_used: int
    rejected: int
    rejected_by_reason: dict[str, int]
    reject_samples: list[dict[str, Any]]
    label_col: str
    mode: str  # text | tabular | pred_probs
    model: str
    members: list[str]
    member_accuracy: dict[str, float]
    folds: int
    seed: int
    filter_by: str
    rank_by: str
    classes: list[str]
    class_counts: list[int]
    num_flagged: int
    num_issues_estimate: int
    health_score: float
    noise_matrix: list[list[float]]
    per_class: list[dict[str, Any]]
    overlapping: list[dict[str, Any]]
    quality_histogram: dict[str, list[float]]
    top_issues: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    num_not_assessed: int = 0
    not_assessed: list[dict[str, Any]] = field(default_factory=list)
    issues_estimate_method: str = ESTIMATE_METHOD
    num_outliers: int | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    fix: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    dataforge_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged_fraction(self) -> float:
        return self.num_flagged / self.rows_used if self.rows_used else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": 1,
            "kind": "noise_report",
            "output": self.output,
            "dataforge_version": self.dataforge_version,
            "counts": {
                "rows_in": self.rows_in,
                "rows_used": self.rows_used,
                "rejected": self.rejected,
                "assessed": self.rows_used - self.num_not_assessed,
                "not_assessed": self.num_not_assessed,
                "flagged": self.num_flagged,
                "issues_estimate": self.num_issues_estimate,
                "outliers": self.num_outliers,
            },
            "rejected_by_reason": self.rejected_by_reason,
            "reject_samples": self.reject_samples,
            "label_col": self.label_col,
            "mode": self.mode,
            "model": {
                "name": self.model,
                "members": self.members,
                "accuracy_vs_given": self.member_accuracy,
                "folds": self.folds,
                "seed": self.seed,
                "earlier_rounds": self.rounds,
            },
            "filter_by": self.filter_by,
            "rank_by": self.rank_by,
            "health": {
                "overall_label_health_score": round(self.health_score, 6),
                "issues_estimate_method": self.issues_estimate_method,
                "issues_estimate_doc": "cleanlab.count.num_label_issues: estimated number of wrong labels"
                " among the assessed rows",
                "flagged_fraction": round(self.flagged_fraction, 6),
                "classes": self.classes,
                "class_counts": self.class_counts,
                "not_assessed_classes": self.not_assessed,
                "noise_matrix": self.noise_matrix,
                "noise_matrix_doc": "P(given label = row class | true label = column class)",
                "per_class": self.per_class,
                "overlapping_classes": self.overlapping,
            },
            "quality_histogram": self.quality_histogram,
            "top_issues": self.top_issues,
            "warnings": self.warnings,
            "fix": self.fix,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "files": self.files,
            "inputs": self.inputs,
            "config": self.config,
        }

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal."""
        used = f"used {self.rows_used:,}"
        if self.num_not_assessed:
            used += f" (assessed {self.rows_used - self.num_not_assessed:,} + not assessed {self.num_not_assessed:,})"
        estimate = (
            "calibrated" if self.issues_estimate_method == ESTIMATE_METHOD else self.issues_estimate_method
        )
        lines = [
            f"rows in {self.rows_in:,} = {used} + rejected {self.rejected:,}",
            f"model {self.model} ({', '.join(f'{m} acc {a:.3f}' for m, a in self.member_accuracy.items()) or 'given pred_probs'}),"
            f" {self.folds} folds",
            f"flagged {self.num_flagged:,} label issues ({self.flagged_fraction:.1%}; cleanlab estimate"
            f" {self.num_issues_estimate:,} wrong labels, {estimate}), label health {self.health_score:.3f}",
        ]
        if self.fix:
            f = self.fix
            lines.append(
                f"fix {f['mode']}: kept {f['kept']:,} (relabelled {f['relabelled']:,}) + dropped {f['dropped']:,} -> {f['output']}"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def histogram(values: np.ndarray, flagged: np.ndarray, *, bins: int = 20) -> dict[str, list[float]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    v = np.clip(values, 0.0, 1.0)
    all_counts, _ = np.histogram(v, bins=edges)
    flag_counts, _ = np.histogram(v[flagged], bins=edges)
    return {
        "edges": [round(float(e), 4) for e in edges],
        "all": [int(c) for c in all_counts],
        "flagged": [int(c) for c in flag_counts],
    }


def to_json(report: NoiseReport) -> str:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(report.to_dict()), indent=2, ensure_ascii=False) + "\n"


def load_report(folder: str | Path) -> dict[str, Any]:
    """Read ``FOLDER/report.json`` of a noise report."""
    return json.loads((Path(folder) / REPORT_JSON).read_text(encoding="utf-8"))
