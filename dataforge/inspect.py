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

    Raises:
        DataError: no manifest, a corrupt manifest, or (with ``verify``) a shard that does not match.
    """
    out = Path(out)
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
    if (out / REPORT_JSON).exists():
        report = RunReport.load(out)
        info["ledger"] = report.ledger.to_dict()
        info["status"] = report.status
        info["timings"] = report.timings
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
