"""Look inside an output folder: manifest, ledger, schema, sample rows, checksum verification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataforge.errors import DataError
from dataforge.io.shards import read_manifest, read_shard, verify_shards
from dataforge.report import REPORT_JSON, RunReport


def inspect_output(
    out: str | Path, *, rows: int = 3, verify: bool = False, max_chars: int = 160
) -> dict[str, Any]:
    """Summarize ``out``: manifest counts and shards, the run's ledger, schema and sample rows.

    Args:
        out: an output folder written by dataforge.
        rows: how many sample rows to include from the first data shard.
        verify: also check every shard's size and sha256 against the manifest.
        max_chars: truncate sample texts to this many characters.

    Returns:
        A JSON-ready dict (what ``dataforge inspect --json`` prints): ``path``, ``name``, ``kind``,
        ``counts``, ``schema``, ``shards`` (path, rows, bytes, sha256), ``dropped``, ``rejects``,
        ``steps``, ``ledger`` and ``status`` (from ``report.json``), ``samples`` (the first
        ``rows`` rows); with ``verify``, ``verified``. Records outputs add ``tables`` and
        ``stages``, curriculum outputs ``curriculum`` (per stage: budget, rows, tokens, target vs
        realized mix); a noise-report folder gives its counts, label health and top issues.

    Raises:
        DataError: no manifest, a corrupt manifest, or (with ``verify``) a shard that does not match.

    Example:
        >>> info = dataforge.inspect_output("out/demo", verify=True, rows=1)
        >>> info["verified"], info["counts"]["kept"] == sum(s["rows"] for s in info["shards"])
        (True, True)
    """
    out = Path(out)
    if not (out / "manifest.json").exists() and _noise_kind(out):
        return noise_info(out, rows=rows)
    manifest = read_manifest(out)
    info: dict[str, Any] = {
        "path": str(out),
        "name": manifest.get("name"),
        "kind": manifest.get("kind"),
        "dataforge_version": manifest.get("dataforge_version"),
        "config_fingerprint": manifest.get("config_fingerprint"),
        "counts": manifest.get("counts", {}),
        "schema": manifest.get("schema", {}),
        "shards": manifest.get("shards", []),
        "dropped": manifest.get("dropped", []),
        "rejects": manifest.get("rejects", []),
        "steps": manifest.get("config", {}).get("steps", []),
    }
    if manifest.get("kind") == "records":
        info["tables"] = {
            name: {"schema": t["schema"]["name"], "rows": t["rows"]}
            for name, t in manifest.get("tables", {}).items()
        }
        info["stages"] = {
            name: {"schema": st["schema"]["name"], "stage": st["stage"], "rows": st["rows"]}
            for name, st in manifest.get("stages", {}).items()
        }
    if manifest.get("kind") == "curriculum":
        info["curriculum"] = curriculum_info(manifest)
    if (out / REPORT_JSON).exists():
        report = RunReport.load(out)
        info["ledger"] = report.ledger.to_dict()
        info["status"] = report.status
        info["timings"] = report.timings
        info["peak_rss_mb"] = report.peak_rss_mb
        info["global_info"] = report.global_info
    if verify:
        problems = verify_shards(out, manifest)
        info["verified"] = not problems
        if problems:
            msg = f"{out}: {len(problems)} file(s) do not match the manifest: " + "; ".join(problems[:5])
            raise DataError(msg)
    samples: list[dict[str, Any]] = []
    for shard in info["shards"]:
        if len(samples) >= rows:
            break
        table = read_shard(out / shard["path"]).slice(0, rows - len(samples))
        for rec in table.to_pylist():
            text = rec.get("text") or ""
            rec["text"] = text if len(text) <= max_chars else text[:max_chars] + "..."
            samples.append(rec)
    info["samples"] = samples
    return info


def _noise_kind(out: Path) -> bool:
    import json

    try:
        return json.loads((out / REPORT_JSON).read_text(encoding="utf-8")).get("kind") == "noise_report"
    except (OSError, ValueError, AttributeError):
        return False


def noise_info(out: str | Path, *, rows: int = 3) -> dict[str, Any]:
    """Summary of a ``dataforge noise-report`` folder (it has no manifest: report.json is its record)."""
    import json

    d = json.loads((Path(out) / REPORT_JSON).read_text(encoding="utf-8"))
    return {
        "path": str(out),
        "name": "noise-report",
        "kind": "noise_report",
        "dataforge_version": d.get("dataforge_version"),
        "counts": d["counts"],
        "model": d["model"],
        "health": {k: d["health"][k] for k in ("overall_label_health_score", "flagged_fraction")},
        "per_class": d["health"]["per_class"],
        "fix": d.get("fix") or {},
        "warnings": d.get("warnings", []),
        "top_issues": [
            {k: r.get(k) for k in ("rank", "id", "given_label", "suggested_label", "label_quality")}
            for r in d.get("top_issues", [])[:rows]
        ],
    }


def curriculum_info(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage of a curriculum manifest: schema, budget, rows, tokens, shards and per source the
    weight, target vs realized share (in the stage's ``mix_unit``), rows and tokens."""
    stages = []
    for st in manifest.get("stages", []):
        target, realized = st.get("target_mix", {}), st.get("realized_mix", {})
        stages.append(
            {
                "stage": st["stage"],
                "name": st.get("name"),
                "schema": st.get("schema", {}).get("name"),
                "budget": st.get("budget"),
                "seed": st.get("seed"),
                "rows": st.get("rows", 0),
                "tokens": st.get("tokens", 0),
                "bytes": st.get("bytes", 0),
                "shards": len(st.get("shards", [])),
                "mix_unit": st.get("mix_unit", "rows"),
                "sources": [
                    {
                        "name": s["name"],
                        "path": s.get("path"),
                        "part": s.get("part"),
                        "weight": s.get("weight"),
                        "where": s.get("where"),
                        "target_share": target.get(s["name"]),
                        "realized_share": realized.get(s["name"]),
                        "available_rows": s.get("available_rows"),
                        "filtered_rows": s.get("filtered_rows"),
                        "target_rows": s.get("target_rows"),
                        "realized_rows": s.get("realized_rows"),
                        "repeated_rows": s.get("repeated_rows", 0),
                        "tokens": s.get("tokens"),
                    }
                    for s in st.get("sources", [])
                ],
            }
        )
    return stages
