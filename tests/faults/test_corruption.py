"""Corrupt a shard or the manifest of finished outputs (clean, normalize, curriculum): every reader
that promises checksums (``inspect --verify``, ``validate``, ``ShardDataset``, a curriculum
reading its sources) detects it and names the shard, with exit code 1, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataforge.cli import cli
from dataforge.errors import DataError
from dataforge.io.shards import verify_shards
from dataforge.train.loader import ShardDataset


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------------------------------------- corruptions


def flip_byte(path: Path) -> None:
    """Flip one bit in the middle of the file (same size: only the checksum can tell)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def delete(path: Path) -> None:
    path.unlink()


CORRUPTIONS: dict[str, Callable[[Path], None]] = {"flip": flip_byte, "truncate": truncate, "delete": delete}


def shard_paths(out: Path) -> list[str]:
    """Data shard paths (relative) the manifest lists, in order."""
    return [e["path"] for e in json.loads((out / "manifest.json").read_text())["shards"]]


def edit_manifest(out: Path, edit: Callable[[dict], None]) -> None:
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m, indent=2))


# --------------------------------------------------------------------------- outputs


@pytest.fixture
def outputs(curriculum_sources, tmp_path) -> dict[str, Path]:
    """Fresh copies of a clean output (news, 3 shards), a normalize output (finance) and a
    curriculum output built from them."""
    copies = {}
    for name, src in (("clean", "news"), ("normalize", "fin")):
        copies[name] = Path(shutil.copytree(curriculum_sources / src, tmp_path / name))
    r = invoke("-q", "curriculum", curriculum_sources / "cur.yaml", "-o", tmp_path / "curriculum")
    assert r.exit_code == 0, r.output
    copies["curriculum"] = tmp_path / "curriculum"
    for out in copies.values():
        assert verify_shards(out) == []
    return copies


KINDS = ["clean", "normalize", "curriculum"]


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_inspect_verify_names_a_corrupt_shard(outputs, kind, how):
    """Flip a byte in / truncate / delete the last data shard: ``inspect --verify`` exits 1 and
    names that shard."""
    out = outputs[kind]
    rel = shard_paths(out)[-1]
    CORRUPTIONS[how](out / rel)
    r = invoke("inspect", out, "--verify", "--rows", "0")
    assert r.exit_code == 1, r.output
    assert rel in r.output
    assert "internal error" not in r.output


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_validate_and_loader_name_a_corrupt_curriculum_shard(outputs, how):
    """A corrupt stage-1 shard: ``validate --train-steps 0`` exits 1 naming it, and
    ``ShardDataset`` raises DataError naming it when it reaches it."""
    out = outputs["curriculum"]
    rel = "stage-1/part-00001.arrow"
    assert rel in shard_paths(out)
    CORRUPTIONS[how](out / rel)
    r = invoke("validate", out, "--train-steps", "0")
    assert r.exit_code == 1, r.output
    assert rel in r.output
    ds = ShardDataset(out, stage=1, shuffle=False, batch_size=64)
    with pytest.raises(DataError, match=rel.replace("/", ".")):
        for _ in ds:
            pass


def test_loader_reads_an_intact_stage_while_another_is_corrupt(outputs):
    """Corruption is per shard: stage 2 still loads when a stage-1 shard is corrupt."""
    out = outputs["curriculum"]
    flip_byte(out / "stage-1/part-00000.arrow")
    rows = sum(b.num_rows for b in ShardDataset(out, stage=2, shuffle=False, batch_size=64))
    stage2 = next(s for s in json.loads((out / "manifest.json").read_text())["stages"] if s["stage"] == 2)
    assert rows == stage2["rows"]


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_with_a_wrong_checksum(outputs, kind):
    """The manifest is edited (a shard's sha256 changed): ``inspect --verify`` exits 1 naming the
    shard (and ``validate`` too, for a curriculum)."""
    out = outputs[kind]
    rel = shard_paths(out)[0]

    def edit(m: dict) -> None:
        entry = next(e for e in m["shards"] if e["path"] == rel)
        entry["sha256"] = "0" * 64
        for st in m.get("stages", []) if kind == "curriculum" else []:
            for e in st["shards"]:
                if e["path"] == rel:
                    e["sha256"] = "0" * 64

    edit_manifest(out, edit)
    r = invoke("inspect", out, "--verify", "--rows", "0")
    assert r.exit_code == 1, r.output
    assert rel in r.output
    if kind == "curriculum":
        r = invoke("validate", out, "--train-steps", "0")
        assert r.exit_code == 1, r.output
        assert rel in r.output
        with pytest.raises(DataError, match="sha256"):
            next(iter(ShardDataset(out, stage=1, shuffle=False)))


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_with_a_wrong_size(outputs, kind):
    """The manifest says a shard has one byte more than it has: detected and named."""
    out = outputs[kind]
    rel = shard_paths(out)[0]

    def edit(m: dict) -> None:
        for e in m["shards"] + [
            e for st in m.get("stages", []) if isinstance(st, dict) for e in st.get("shards", [])
        ]:
            if e["path"] == rel:
                e["bytes"] += 1

    edit_manifest(out, edit)
    r = invoke("inspect", out, "--verify", "--rows", "0")
    assert r.exit_code == 1, r.output
    assert rel in r.output


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", ["truncated", "not-json", "not-an-object", "empty"])
def test_corrupt_manifest_is_a_clear_error(outputs, kind, damage):
    """A manifest.json that is cut short, not JSON, JSON but not an object, or empty: ``inspect``
    exits 1 with ``manifest is corrupt`` naming the file, never a traceback."""
    out = outputs[kind]
    path = out / "manifest.json"
    text = path.read_text()
    path.write_text(
        {
            "truncated": text[: len(text) // 2],
            "not-json": "not json {",
            "not-an-object": "[1, 2]",
            "empty": "",
        }[damage]
    )
    r = invoke("inspect", out, "--verify")
    assert r.exit_code == 1, r.output
    assert "manifest" in r.output and str(path) in r.output, r.output
    assert "internal error" not in r.output
    if kind == "curriculum":
        r = invoke("validate", out, "--train-steps", "0")
        assert r.exit_code == 1, r.output
        assert str(path) in r.output
        with pytest.raises(DataError, match="manifest"):
            ShardDataset(out, stage=1)


def test_curriculum_refuses_a_corrupt_source_shard(curriculum_sources, tmp_path):
    """A curriculum whose source shard was flipped after its run: DataError (exit 1) naming the
    shard, and no output or partial folder."""
    src = Path(shutil.copytree(curriculum_sources / "news", tmp_path / "news"))
    rel = shard_paths(src)[1]
    flip_byte(src / rel)
    cfg = (curriculum_sources / "cur.yaml").read_text().replace(str(curriculum_sources / "news"), str(src))
    (tmp_path / "cur.yaml").write_text(cfg)
    out = tmp_path / "out"
    r = invoke("curriculum", tmp_path / "cur.yaml", "-o", out)
    assert r.exit_code == 1, r.output
    assert str(src / rel) in r.output and "sha256" in r.output
    assert not out.exists()
    assert list(tmp_path.glob(".out.*")) == []


def test_curriculum_refuses_a_source_with_a_corrupt_manifest(curriculum_sources, tmp_path):
    """A curriculum source whose manifest is not JSON: a clear error naming it, nothing written."""
    src = Path(shutil.copytree(curriculum_sources / "news", tmp_path / "news"))
    (src / "manifest.json").write_text("{ cut")
    cfg = (curriculum_sources / "cur.yaml").read_text().replace(str(curriculum_sources / "news"), str(src))
    (tmp_path / "cur.yaml").write_text(cfg)
    out = tmp_path / "out"
    r = invoke("curriculum", tmp_path / "cur.yaml", "-o", out)
    assert r.exit_code in (1, 2), r.output
    assert "internal error" not in r.output
    assert str(src) in r.output and "manifest" in r.output
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_entry_without_checksum(outputs, kind):
    """A shard entry of the manifest lost its ``sha256``: reported as a problem naming the shard
    (exit 1), not a KeyError."""
    out = outputs[kind]
    rel = shard_paths(out)[0]

    def edit(m: dict) -> None:
        for e in m["shards"] + [
            e for st in m.get("stages", []) if isinstance(st, dict) for e in st.get("shards", [])
        ]:
            if e["path"] == rel:
                e.pop("sha256", None)

    edit_manifest(out, edit)
    r = invoke("inspect", out, "--verify", "--rows", "0")
    assert r.exit_code == 1, r.output
    assert rel in r.output and "internal error" not in r.output
    if kind == "curriculum":
        r = invoke("validate", out, "--train-steps", "0")
        assert r.exit_code == 1, r.output
        assert rel in r.output and "internal error" not in r.output
        with pytest.raises(DataError, match=rel.replace("/", ".")):
            next(iter(ShardDataset(out, stage=1, shuffle=False)))
