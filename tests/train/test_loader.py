"""ShardDataset and CurriculumLoader (dataforge.train.loader) against docs/curriculum.md.

The curriculum outputs are built here with ``write_shard`` + a manifest written per the document, so
these tests do not depend on the curriculum builder.
"""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataforge.errors import ConfigError, DataError
from dataforge.io.shards import write_json_atomic, write_shard
from dataforge.train import ByteTokenizer, CurriculumBatch, CurriculumLoader, ShardDataset
from dataforge.train.loader import shard_list_disagreements
from dataforge.train.tokenizer import tokenizer_spec, training_text

ROOT = Path(__file__).resolve().parents[2]
_TEXTS: list[str] = []


def sample_texts() -> list[str]:
    """Real text: the Reuters sample documents."""
    if not _TEXTS:
        with gzip.open(ROOT / "sample_data" / "news" / "reuters.jsonl.gz", "rt", encoding="utf-8") as fh:
            _TEXTS.extend(json.loads(line)["text"] for line in fh if line.strip())
    return _TEXTS


DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.large_string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("meta", pa.large_string()),
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("source_line", pa.int64()),
        pa.field("stage", pa.int32(), nullable=False),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("tokens", pa.int64(), nullable=False),
    ]
)
INSTR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.large_string(), nullable=False),
        pa.field("prompt", pa.large_string(), nullable=False),
        pa.field("response", pa.large_string(), nullable=False),
        pa.field("context", pa.large_string()),
        pa.field("fact_ids", pa.large_list(pa.large_string()), nullable=False),
        pa.field("stage", pa.int32(), nullable=False),
        pa.field("domain", pa.large_string()),
        pa.field("meta", pa.large_string()),
        pa.field("source_file", pa.large_string()),
        pa.field("source_row", pa.int64()),
        pa.field("source_line", pa.int64()),
        pa.field("source", pa.large_string(), nullable=False),
        pa.field("tokens", pa.int64(), nullable=False),
    ]
)


def _schema_json(schema: pa.Schema) -> list[dict]:
    names = {pa.large_string(): "large_string", pa.int64(): "int64", pa.int32(): "int32"}
    return [
        {"name": f.name, "type": names.get(f.type, "list<large_string>"), "nullable": f.nullable}
        for f in schema
    ]


def _stage_table(stage: int, start: int, n: int, *, instruction: bool, text_len: int | None) -> pa.Table:
    texts = sample_texts()
    ids = [f"s{stage}-{start + i:06d}" for i in range(n)]
    pick = [texts[(start * 7 + i * 13 + stage) % len(texts)] for i in range(n)]
    if text_len is not None:
        pick = [t[:text_len] for t in pick]
    tok = ByteTokenizer()
    if instruction:
        cols = {
            "id": ids,
            "prompt": [f"Summarize document {i}." for i in ids],
            "response": pick,
            "context": [None if i % 2 else "Reuters newswire" for i in range(n)],
            "fact_ids": [[i] for i in ids],
            "stage": [stage] * n,
            "domain": ["news"] * n,
            "meta": [None] * n,
            "source_file": ["reuters.jsonl.gz"] * n,
            "source_row": list(range(start, start + n)),
            "source_line": list(range(start + 1, start + n + 1)),
            "source": ["news-qa"] * n,
            "tokens": [0] * n,
        }
        table = pa.table(cols, schema=INSTR_SCHEMA)
    else:
        cols = {
            "id": ids,
            "text": pick,
            "meta": ["{}"] * n,
            "source_file": ["reuters.jsonl.gz"] * n,
            "source_row": list(range(start, start + n)),
            "source_line": list(range(start + 1, start + n + 1)),
            "stage": [stage] * n,
            "source": ["news"] * n,
            "tokens": [0] * n,
        }
        table = pa.table(cols, schema=DOC_SCHEMA)
    counts = tok.count(training_text(table))
    return table.set_column(
        table.schema.get_field_index("tokens"), table.schema.field("tokens"), pa.array(counts, pa.int64())
    )


def make_curriculum(
    out: Path,
    stages: dict[int, list[int]],
    *,
    instruction_stages: tuple[int, ...] = (2,),
    text_len: int | None = 300,
) -> Path:
    """A curriculum output folder per docs/curriculum.md: ``stages`` maps stage -> rows per shard."""
    out.mkdir(parents=True, exist_ok=True)
    stage_entries, all_shards = [], []
    total_rows = total_tokens = 0
    for stage, sizes in stages.items():
        instruction = stage in instruction_stages
        shards, first, tokens, nbytes = [], 0, 0, 0
        for j, n in enumerate(sizes):
            table = _stage_table(stage, first, n, instruction=instruction, text_len=text_len)
            info = write_shard(table, out / f"stage-{stage}" / f"part-{j:05d}.arrow", relative_to=out)
            t = int(pa.compute.sum(table.column("tokens")).as_py() or 0)
            shards.append({**info.to_dict(), "tokens": t, "first_row": first})
            first += n
            tokens += t
            nbytes += info.bytes
        schema = INSTR_SCHEMA if instruction else DOC_SCHEMA
        stage_entries.append(
            {
                "stage": stage,
                "name": f"stage-{stage}",
                "schema": {
                    "name": "stage_instruction.v1" if instruction else "stage_document.v1",
                    "fields": _schema_json(schema),
                },
                "budget": {"rows": first},
                "seed": 1234 + stage,
                "rows": first,
                "tokens": tokens,
                "bytes": nbytes,
                "target_mix": {"news": 1.0},
                "realized_mix": {"news": 1.0},
                "sources": [],
                "shards": shards,
            }
        )
        all_shards += shards
        total_rows += first
        total_tokens += tokens
    manifest = {
        "manifest_version": 1,
        "kind": "curriculum",
        "name": "test-curriculum",
        "dataforge_version": "0.1.0",
        "config": {},
        "config_fingerprint": "sha256:test",
        "seed": 0,
        "tokenizer": tokenizer_spec(ByteTokenizer()),
        "format": "arrow",
        "compression": "zstd",
        "stages": stage_entries,
        "shards": all_shards,
        "counts": {"rows": total_rows, "tokens": total_tokens},
    }
    write_json_atomic(out / "manifest.json", manifest)
    return out


# --------------------------------------------------------------------------------------- fixtures

_CACHE: dict[tuple, Path] = {}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("curricula")


def cached_curriculum(base: Path, stages: dict[int, list[int]], **kw) -> Path:
    key = (str(base), tuple((s, tuple(v)) for s, v in stages.items()), tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = make_curriculum(base / f"c{len(_CACHE)}", stages, **kw)
    return _CACHE[key]


@pytest.fixture(scope="module")
def small(cache_dir) -> Path:
    return cached_curriculum(cache_dir, {1: [100, 60, 37, 5], 2: [40, 25], 3: [80]})


def ids_of(ds: ShardDataset) -> list[str]:
    return [i for b in ds for i in b.column("id").to_pylist()]


def all_reader_ids(out: Path, *, world_size: int, num_workers: int, **kw) -> list[list[str]]:
    return [
        ids_of(ShardDataset(out, rank=r, world_size=world_size, num_workers=num_workers, worker_id=w, **kw))
        for r in range(world_size)
        for w in range(num_workers)
    ]


def stage_ids(out: Path, stage: int) -> list[str]:
    return ids_of(ShardDataset(out, stage=stage, shuffle=False, verify=False))


# ------------------------------------------------------------------- partition and balance


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=10),
    world_size=st.integers(1, 8),
    num_workers=st.integers(1, 3),
    block=st.sampled_from([1, 3, 8, 64]),
    partition=st.sampled_from(["auto", "row", "shard"]),
    balance=st.sampled_from(["pad", "drop", "none"]),
    seed=st.integers(0, 3),
    epoch=st.integers(0, 2),
)
def test_every_reader_gets_its_quota_and_every_row_is_covered(
    cache_dir, sizes, world_size, num_workers, block, partition, balance, seed, epoch
):
    readers = world_size * num_workers
    n = sum(sizes)
    kw = dict(stage=1, seed=seed, epoch=epoch, batch_size=7, shuffle_block_rows=block)
    kw.update(partition=partition, balance=balance, verify=False)
    out = cached_curriculum(cache_dir, {1: sizes}, text_len=30)
    if partition == "shard" and len(sizes) < readers:
        with pytest.raises(ConfigError, match="partition='shard' needs at least"):
            ShardDataset(out, **kw, world_size=world_size, num_workers=num_workers)
        return
    if balance == "drop" and 0 < n < readers:
        with pytest.raises(ConfigError, match="balance='drop' leaves every reader 0 rows"):
            ShardDataset(out, **kw, world_size=world_size, num_workers=num_workers)
        return
    datasets = [
        ShardDataset(out, rank=r, world_size=world_size, num_workers=num_workers, worker_id=w, **kw)
        for r in range(world_size)
        for w in range(num_workers)
    ]
    per_reader = [ids_of(ds) for ds in datasets]
    lengths = [len(ids) for ids in per_reader]
    assert lengths == [len(ds) for ds in datasets]
    flat = [i for ids in per_reader for i in ids]
    every = set(stage_ids(out, 1))
    if balance == "pad":  # the same rows everywhere, every row at least once, < R repeats
        assert lengths == [-(-n // readers)] * readers
        assert set(flat) == every and len(flat) - n < readers
    elif balance == "drop":  # the same rows everywhere, no row twice, < R rows left out
        assert lengths == [n // readers] * readers
        assert len(set(flat)) == len(flat) and set(flat) <= every and n - len(flat) < readers
    else:  # exactly once, readers may differ
        assert len(flat) == len(set(flat)) == n and set(flat) == every
    if balance != "none":  # equal rows -> equal batches: DDP ranks take the same number of steps
        assert len({ds.num_batches() for ds in datasets}) == 1
    split = datasets[0].partition
    assert split == ("shard" if partition == "shard" or (partition == "auto" and balance == "none"
                               and len(sizes) >= readers) else "row")  # fmt: skip
    if split == "row" and balance == "none":  # positions split evenly
        assert max(lengths) - min(lengths) <= 1
    if split == "shard" and balance == "none":  # every shard is read by exactly one reader
        owner = {}
        for g, ids in enumerate(per_reader):
            for i in ids:
                shard = next(j for j, _ in enumerate(sizes) if int(i.split("-")[1]) < sum(sizes[: j + 1]))
                assert owner.setdefault(shard, g) == g


def test_partition_choice_and_len(small):
    ds = ShardDataset(small, stage=1, world_size=2, num_workers=2, worker_id=1)
    assert ds.partition == "row" and ds.balance == "pad"  # balanced readers: contiguous row ranges
    whole = ShardDataset(small, stage=1, world_size=2, num_workers=2, worker_id=1, balance="none")
    assert whole.partition == "shard"  # unbalanced, 4 shards for 4 readers: whole shards
    assert ShardDataset(small, stage=1, world_size=5, balance="none").partition == "row"
    assert ShardDataset(small, stage=1, world_size=2, partition="row").partition == "row"
    assert ShardDataset(small, stage=1, world_size=2, partition="shard").partition == "shard"
    total = 0
    for r in range(3):  # 202 rows over 3 readers: 68 each, two rows repeated
        d = ShardDataset(small, stage=1, world_size=3, rank=r, batch_size=16)
        assert len(d) == len(ids_of(d)) == d.quota() == 68
        total += len(d)
    assert total == 204 and ds.num_rows == 202
    assert ShardDataset(small, stage=1, world_size=3, balance="drop").quota() == 67
    assert ShardDataset(small, stage=1, world_size=3, balance="none").quota() is None
    assert ds.num_tokens == sum(
        s["tokens"] for s in json.loads((small / "manifest.json").read_text())["stages"][0]["shards"]
    )


def test_partition_shard_with_too_few_shards_is_a_config_error(small):
    with pytest.raises(ConfigError, match=r"partition='shard' needs at least world_size x num_workers = 8"):
        ShardDataset(small, stage=1, world_size=4, num_workers=2, partition="shard")
    with pytest.raises(ConfigError, match="unknown partition 'rows'; valid: auto, row, shard"):
        ShardDataset(small, stage=1, partition="rows")
    with pytest.raises(ConfigError, match="unknown balance 'even'; valid: drop, none, pad"):
        ShardDataset(small, stage=1, balance="even")
    with pytest.raises(ConfigError, match="unknown balance 'even'; valid: drop, none, pad"):
        CurriculumLoader(small, schedule=[{"stage": 1, "rows": 5}], balance="even")
    with pytest.raises(ConfigError, match="unknown precheck 'full'; valid: none, sha256, size"):
        ShardDataset(small, stage=1, precheck="full")


def test_world_size_larger_than_rows(cache_dir):
    out = cached_curriculum(cache_dir, {1: [3]}, text_len=20)
    everything = sorted(stage_ids(out, 1))
    per_reader = all_reader_ids(out, world_size=8, num_workers=1, stage=1, batch_size=2, balance="none")
    assert sorted(i for ids in per_reader for i in ids) == everything
    assert sum(1 for ids in per_reader if not ids) == 5
    padded = all_reader_ids(out, world_size=8, num_workers=1, stage=1, batch_size=2)
    assert [len(ids) for ids in padded] == [1] * 8  # the 3 rows cycled: every reader one step
    assert sorted(set(i for ids in padded for i in ids)) == everything
    with pytest.raises(ConfigError, match="balance='drop' leaves every reader 0 rows: stage 1 has 3 rows"):
        ShardDataset(out, stage=1, world_size=8, balance="drop")


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_take_the_same_number_of_steps_on_unequal_shards(cache_dir, world_size):
    """The case that hung DDP: 1000 rows in 97-row shards (the last 30), batches of 16. Unbalanced,
    whole shards give the ranks different batch counts; the default gives them the same."""
    out = cached_curriculum(cache_dir, {1: [97] * 10 + [30]}, text_len=20)
    kw = dict(stage=1, world_size=world_size, seed=3, batch_size=16, shuffle_block_rows=40)
    unbalanced = [ShardDataset(out, rank=r, balance="none", **kw) for r in range(world_size)]
    assert len({ds.num_batches() for ds in unbalanced}) > 1  # what the default must avoid
    for balance, quota in (("pad", -(-1000 // world_size)), ("drop", 1000 // world_size)):
        readers = [ShardDataset(out, rank=r, balance=balance, **kw) for r in range(world_size)]
        batches = [[b.column("id").to_pylist() for b in ds] for ds in readers]
        assert [sum(map(len, b)) for b in batches] == [quota] * world_size
        assert len({len(b) for b in batches}) == 1 == len({ds.num_batches() for ds in readers})


# ------------------------------------------------------------------------------- determinism


def test_same_seed_same_order_and_different_seed_or_epoch_differs(small):
    a = ids_of(ShardDataset(small, stage=1, seed=7, batch_size=10, shuffle_block_rows=16))
    b = ids_of(ShardDataset(small, stage=1, seed=7, batch_size=33, shuffle_block_rows=16))
    assert a == b  # batch size does not change the order
    c = ids_of(ShardDataset(small, stage=1, seed=8, batch_size=10, shuffle_block_rows=16))
    d = ids_of(ShardDataset(small, stage=1, seed=7, epoch=1, batch_size=10, shuffle_block_rows=16))
    assert sorted(a) == sorted(c) == sorted(d)
    assert a != c and a != d
    ds = ShardDataset(small, stage=1, seed=7, batch_size=10, shuffle_block_rows=16)
    ds.set_epoch(1)
    assert ids_of(ds) == d


def test_no_shuffle_is_manifest_order(small):
    assert stage_ids(small, 1) == [f"s1-{i:06d}" for i in range(202)]


def test_within_shard_shuffle_is_bounded_by_blocks(cache_dir):
    out = cached_curriculum(cache_dir, {1: [64]}, text_len=20)
    ids = ids_of(ShardDataset(out, stage=1, seed=3, shuffle_block_rows=16))
    rows = [int(i.split("-")[1]) for i in ids]
    assert rows != sorted(rows)
    chunks = [sorted(rows[k : k + 16]) for k in range(0, 64, 16)]
    assert sorted(chunks) == [list(range(b, b + 16)) for b in range(0, 64, 16)]
    assert chunks != sorted(chunks)  # block order is shuffled too (seed 3)


# ------------------------------------------------------------------------------------ resume


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    world_size=st.integers(1, 4),
    num_workers=st.integers(1, 2),
    data=st.data(),
    batch_size=st.integers(1, 40),
    block=st.sampled_from([5, 16, 8192]),
    seed=st.integers(0, 5),
    balance=st.sampled_from(["pad", "drop", "none"]),
)
def test_resume_gives_exactly_the_rows_of_an_uninterrupted_run(
    small, world_size, num_workers, data, batch_size, block, seed, balance
):
    rank = data.draw(st.integers(0, world_size - 1))
    worker = data.draw(st.integers(0, num_workers - 1))
    # shard split + balance: rows handed between readers (the pool) must resume exactly too
    partition = data.draw(st.sampled_from(["auto", "shard"] if world_size * num_workers <= 4 else ["auto"]))
    kw = dict(
        balance=balance,
        partition=partition,
        stage=1,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        worker_id=worker,
        seed=seed,
        epoch=1,
        batch_size=batch_size,
        shuffle_block_rows=block,
    )
    full = [b.column("id").to_pylist() for b in ShardDataset(small, **kw)]
    stop = data.draw(st.integers(0, len(full)))
    ds = ShardDataset(small, **kw)
    it = iter(ds)
    got = [next(it).column("id").to_pylist() for _ in range(stop)]
    state = json.loads(json.dumps(ds.state_dict()))  # a checkpoint survives JSON
    assert state["rows_yielded"] == sum(len(b) for b in got) and state["epoch"] == 1
    resumed = ShardDataset(small, **{**kw, "epoch": 0})
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # the usual loop calls set_epoch(epoch) again: the resume point is kept
    rest = [b.column("id").to_pylist() for b in resumed]
    assert got + rest == full


def test_resume_does_not_read_the_skipped_shards(small, monkeypatch):
    ds = ShardDataset(small, stage=1, shuffle=False, batch_size=10)
    it = iter(ds)
    for _ in range(12):  # 120 rows: past shard 0 (100 rows)
        next(it)
    state = ds.state_dict()
    opened = []
    resumed = ShardDataset(small, stage=1, shuffle=False, batch_size=10)
    original = ShardDataset._open_shard
    monkeypatch.setattr(ShardDataset, "_open_shard", lambda self, i: opened.append(i) or original(self, i))
    resumed.load_state_dict(state)
    first = next(iter(resumed))
    assert first.column("id").to_pylist()[0] == "s1-000120"
    assert 0 not in opened


def test_state_with_another_configuration_is_rejected(small):
    ds = ShardDataset(small, stage=1, world_size=2, batch_size=8)
    next(iter(ds))
    state = ds.state_dict()
    with pytest.raises(ConfigError, match=r"world_size=2, this dataset has world_size=4"):
        ShardDataset(small, stage=1, world_size=4, batch_size=8).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"stage=1, this dataset has stage=3"):
        ShardDataset(small, stage=3, world_size=2, batch_size=8).load_state_dict(state)
    with pytest.raises(ConfigError, match=r"seed=0, this dataset has seed=1"):
        ShardDataset(small, stage=1, world_size=2, seed=1, batch_size=8).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a ShardDataset state"):
        ds.load_state_dict({"epoch": 0})
    with pytest.raises(ConfigError, match=r"balance='pad', this dataset has balance='drop'"):
        ShardDataset(small, stage=1, world_size=2, batch_size=8, balance="drop").load_state_dict(state)


def test_state_saved_before_balance_existed_resumes_only_unbalanced(small):
    """A state without ``balance`` was saved by readers that did not balance: the default refuses
    it (its rows would differ), ``balance='none'`` resumes it exactly."""
    kw = dict(stage=1, world_size=3, rank=2, batch_size=8, seed=4)
    ds = ShardDataset(small, balance="none", **kw)
    it = iter(ds)
    got = [next(it).column("id").to_pylist() for _ in range(3)]
    state = ds.state_dict()
    del state["balance"]
    with pytest.raises(
        ConfigError, match=r"saved with balance='none', .* \(pass balance='none' to resume it\)"
    ):
        ShardDataset(small, **kw).load_state_dict(state)
    resumed = ShardDataset(small, balance="none", **kw)
    resumed.load_state_dict(state)
    rest = [b.column("id").to_pylist() for b in resumed]
    assert got + rest == [b.column("id").to_pylist() for b in ShardDataset(small, balance="none", **kw)]


def test_dataset_pickles_mid_epoch(small):
    ds = ShardDataset(small, stage=1, batch_size=8)
    next(iter(ds))
    clone = pickle.loads(pickle.dumps(ds))
    assert ids_of(clone) == ids_of(ShardDataset(small, stage=1, batch_size=8))


# ----------------------------------------------------------------------------------- formats


def test_numpy_and_python_batches(small):
    kw = dict(stage=1, batch_size=16, columns=["id", "tokens", "text"])
    arrow = list(ShardDataset(small, **kw))
    numpy_b = list(ShardDataset(small, **kw).iter_batches(format="numpy"))
    python_b = list(ShardDataset(small, **kw).iter_batches(format="python"))
    assert arrow[0].schema.names == ["id", "tokens", "text"]
    assert isinstance(numpy_b[0]["tokens"], np.ndarray) and numpy_b[0]["tokens"].dtype == np.int64
    assert (
        [list(b["id"]) for b in numpy_b]
        == [b["id"] for b in python_b]
        == [b.column("id").to_pylist() for b in arrow]
    )
    assert python_b[0]["text"][0] == arrow[0].column("text")[0].as_py()
    assert [len(b["id"]) for b in python_b][:-1] == [16] * (len(python_b) - 1)
    with pytest.raises(ConfigError, match="unknown batch format 'torch'; valid: arrow, numpy, python"):
        ShardDataset(small, stage=1).iter_batches(format="torch")
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['nope'\] for stage 1; valid: "):
        ShardDataset(small, stage=1, columns=["id", "nope"])


def test_drop_last(small):
    full = list(ShardDataset(small, stage=1, batch_size=64))
    dropped = list(ShardDataset(small, stage=1, batch_size=64, drop_last=True))
    assert [b.num_rows for b in full] == [64, 64, 64, 10]
    assert [b.num_rows for b in dropped] == [64, 64, 64]
    assert ShardDataset(small, stage=1, batch_size=64, drop_last=True).num_batches() == 3


# -------------------------------------------------------------------------------- token mode


def reader_stream(ds: ShardDataset) -> list[int]:
    """The token stream of a reader: its rows' training text, encoded, in reader order."""
    tok = ds.tokenizer
    rows = ds.read_range(0, len(ds))
    return [t for text in training_text(rows) for t in tok.encode(text)]


def unpack(batches: list[np.ndarray], pad: int) -> list[int]:
    seqs = [row for b in batches for row in b.tolist()]
    stream = list(seqs[0]) if seqs else []
    for row in seqs[1:]:
        stream += row[1:]
    while stream and stream[-1] == pad:
        stream.pop()
    return stream


@pytest.mark.parametrize("stage", [1, 2])
def test_token_batches_shape_and_content_decode_to_the_training_text(small, stage):
    kw = dict(stage=stage, batch_size=4, seed=1, world_size=2, rank=1, balance="none")
    ds = ShardDataset(small, **kw)
    batches = list(ds.iter_token_batches(128))
    assert all(b.shape == (4, 129) and b.dtype == np.int64 for b in batches)
    stream = reader_stream(ShardDataset(small, **kw))
    assert unpack(batches, ByteTokenizer.pad_id) == stream
    assert ds.num_token_batches(128) == len(batches)
    texts = training_text(ds.read_range(0, 2))
    tok = ByteTokenizer()
    first = tok.decode(batches[0][0].tolist())
    assert first == (texts[0] + texts[1])[: len(first)] or first.startswith(texts[0][:50])
    if stage == 2:
        assert "### Instruction:" in tok.decode(unpack(batches, 257))
    dropped = list(ShardDataset(small, stage=stage, batch_size=4, drop_last=True).iter_token_batches(128))
    assert not (dropped[-1] == ByteTokenizer.pad_id).any()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), seq_len=st.sampled_from([7, 64, 300]), batch_size=st.integers(1, 5))
def test_token_mode_resume_is_exact(small, data, seq_len, batch_size):
    kw = dict(stage=2, batch_size=batch_size, seed=2, shuffle_block_rows=16)
    full = [b.tolist() for b in ShardDataset(small, **kw).iter_token_batches(seq_len)]
    stop = data.draw(st.integers(0, len(full)))
    ds = ShardDataset(small, **kw)
    it = ds.iter_token_batches(seq_len)
    got = [next(it).tolist() for _ in range(stop)]
    state = json.loads(json.dumps(ds.state_dict()))
    assert (state["token_row"], state["token_offset"]) == ds.token_state_after(
        stop * batch_size, seq_len
    ) or stop == len(full)
    resumed = ShardDataset(small, **kw)
    resumed.load_state_dict(state)
    assert got + [b.tolist() for b in resumed.iter_token_batches(seq_len)] == full
    with pytest.raises(ConfigError, match="saved in 'tokens' mode"):
        again = ShardDataset(small, **kw)
        again.load_state_dict(state)
        list(again)


def _own_batches(ds: ShardDataset, seq_len: int) -> int:
    """Token batches this reader's own rows make, from its decoded stream (independent of the
    tokens column the loader counts with)."""
    n = len(reader_stream(ds))
    if ds.drop_last:
        return ((n - 1) // seq_len if n > 1 else 0) // ds.batch_size
    return -(-ShardDataset.sequences_for(n, seq_len, False) // ds.batch_size)


@pytest.mark.parametrize("balance", ["pad", "drop"])
@pytest.mark.parametrize("stage", [1, 2])
def test_token_batches_are_as_many_for_every_reader(small, stage, balance):
    """Under DDP every rank must take as many steps: equal rows per reader are not equal token
    batches (rows differ in length), so with pad every reader gives as many as the one whose rows
    make the most, repeating its own stream from the start, and with drop as many as the fewest."""
    seq_len, world, workers = 64, 3, 2
    kw = dict(stage=stage, batch_size=3, seed=4, world_size=world, num_workers=workers, balance=balance)
    readers = [ShardDataset(small, rank=r, worker_id=w, **kw) for r in range(world) for w in range(workers)]
    own = [_own_batches(ds, seq_len) for ds in readers]
    assert readers[0].token_batch_counts(seq_len) == own
    assert len(set(own)) > 1  # the readers' rows really make different numbers of batches
    target = max(own) if balance == "pad" else min(own)
    for ds, mine in zip(readers, own):
        batches = list(ds.iter_token_batches(seq_len))
        assert len(batches) == target == ds.num_token_batches(seq_len)
        pass_one = list(
            ShardDataset(small, rank=ds.rank, worker_id=ds.worker_id, **kw)._token_pass(seq_len, "numpy")
        )
        assert len(pass_one) == mine
        # the first batches are the reader's own stream; then (pad) that stream again from its start
        expected = [pass_one[i % mine] for i in range(target)]
        assert all(np.array_equal(a, b) for a, b in zip(batches, expected))
        assert not any((b == ByteTokenizer.pad_id).all() for b in batches)  # never a batch of padding only


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), partition=st.sampled_from(["row", "tokens"]))
def test_balanced_token_mode_resumes_exactly_in_a_repeated_pass(small, data, partition):
    """A reader that repeats its stream (pad) resumes exactly from any batch, in its first pass or
    a later one, from its own state_dict or from the count (token_state_for, as the torch adapter
    computes it in the main process); a state without the batch count is derived from the position."""
    seq_len = 64
    kw = dict(stage=1, batch_size=3, seed=4, world_size=3, num_workers=2, balance="pad", partition=partition)
    counts = ShardDataset(small, **kw).token_batch_counts(seq_len)
    slot = int(np.argmin(counts))
    rank, wid = divmod(slot, 2)
    make = lambda: ShardDataset(small, rank=rank, worker_id=wid, **kw)
    full = [b.tolist() for b in make().iter_token_batches(seq_len)]
    assert len(full) == max(counts) > counts[slot] or (partition == "tokens" and len(full) == max(counts))
    stop = data.draw(st.integers(0, len(full)))
    ds = make()
    it = ds.iter_token_batches(seq_len)
    got = [next(it).tolist() for _ in range(stop)]
    for state in (ds.state_dict(), make().token_state_for(stop, seq_len)):
        state = json.loads(json.dumps(state))
        resumed = make()
        resumed.load_state_dict(state)
        assert got + [b.tolist() for b in resumed.iter_token_batches(seq_len)] == full
        old = {k: v for k, v in state.items() if k != "token_batches"}  # saved before the count existed
        resumed = make()
        resumed.load_state_dict(old)
        assert got + [b.tolist() for b in resumed.iter_token_batches(seq_len)] == full


def test_token_partition_cuts_the_epoch_at_equal_tokens(small):
    """partition="tokens": the row split cut where the tokens before reach g/R of the epoch's, so
    every row is read once and readers differ by less than one row's tokens; their token batches
    then differ by a batch or so (far less than with equal rows), which pad or drop evens out."""
    seq_len, bs = 64, 3
    kw = dict(stage=1, batch_size=bs, seed=4, world_size=3, num_workers=2, balance="pad")
    slots = [(r, w) for r in range(3) for w in range(2)]
    by_tokens = [ShardDataset(small, rank=r, worker_id=w, partition="tokens", **kw) for r, w in slots]
    tables = [ds.read_range(0, len(ds), columns=["id", "tokens"]) for ds in by_tokens]
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    assert sorted(ids) == sorted(ShardDataset(small, stage=1).read_range(0, 202).column("id").to_pylist())
    assert len(ids) == len(set(ids)) == 202  # every row exactly once: no row padding
    per_reader = [sum(t.column("tokens").to_pylist()) for t in tables]
    total, longest = sum(per_reader), max(v for t in tables for v in t.column("tokens").to_pylist())
    assert all(abs(t - total / 6) <= longest for t in per_reader)
    counts = by_tokens[0].token_batch_counts(seq_len)
    by_rows = ShardDataset(small, partition="row", **kw).token_batch_counts(seq_len)
    # token totals within 2 x the longest row of each other: batches within what that holds (+ rounding)
    assert max(counts) - min(counts) <= 2 + 2 * longest // (bs * seq_len) < max(by_rows) - min(by_rows)
    assert {len(list(ds.iter_token_batches(seq_len))) for ds in by_tokens} == {max(counts)}
    with pytest.raises(ConfigError, match="equal tokens, not equal rows"):
        list(by_tokens[0])  # row batches would differ between readers
    assert len(list(ShardDataset(small, partition="tokens", **{**kw, "balance": "none"}))) > 0

    class WordTokenizer:
        name, vocab_size, eos_id, pad_id = "words", 1000, 998, 999

        def encode(self, text: str) -> list[int]:
            return [len(w) % 900 for w in text.split()] + [self.eos_id]

    with pytest.raises(ConfigError, match="partition='tokens' cuts stage 1 by its tokens column"):
        ShardDataset(small, partition="tokens", tokenizer=WordTokenizer(), **kw)


def test_token_partition_leaves_no_reader_without_rows(cache_dir):
    """A row longer than T / R would leave readers with no rows, and so no sequences to give: a
    rank would fail while the others train. Every reader keeps at least one row (when there are
    as many rows as readers), the cuts moved as little as that takes."""
    out = cached_curriculum(cache_dir, {1: [7, 5]}, text_len=None)  # whole Reuters stories: 0.1-5 KB
    kw = dict(stage=1, batch_size=2, world_size=5, num_workers=2, partition="tokens")
    readers = [ShardDataset(out, rank=r, worker_id=w, **kw) for r in range(5) for w in range(2)]
    sizes = [len(ds) for ds in readers]
    assert min(sizes) >= 1 and sum(sizes) == 12
    assert len({len(list(ds.iter_token_batches(64))) for ds in readers}) == 1


def test_custom_tokenizer(small):
    class WordTokenizer:
        name, vocab_size, eos_id, pad_id = "words", 1000, 998, 999

        def encode(self, text: str) -> list[int]:
            return [len(w) % 900 for w in text.split()] + [self.eos_id]

    ds = ShardDataset(small, stage=3, batch_size=2, tokenizer=WordTokenizer())
    batches = list(ds.iter_token_batches(16))
    assert unpack(batches, 999) == reader_stream(
        ShardDataset(small, stage=3, batch_size=2, tokenizer=WordTokenizer())
    )
    assert ds.num_token_batches(16) == len(batches)


# ------------------------------------------------------------------------------ bad shards


def corrupt_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_flipped_byte_is_a_data_error_naming_the_shard_and_both_digests(small, tmp_path):
    out = corrupt_copy(small, tmp_path / "c")
    shard = out / "stage-1" / "part-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    manifest = json.loads((out / "manifest.json").read_text())
    expected = manifest["stages"][0]["shards"][1]["sha256"]
    with pytest.raises(
        DataError,
        match=r"stage-1/part-00001.arrow: sha256 mismatch: file has [0-9a-f]{64}, manifest says " + expected,
    ):
        list(ShardDataset(out, stage=1))


def test_truncated_shard_is_a_data_error_with_or_without_verify(small, tmp_path):
    out = corrupt_copy(small, tmp_path / "t")
    shard = out / "stage-1" / "part-00000.arrow"
    shard.write_bytes(shard.read_bytes()[:-100])
    for kw in ({}, {"precheck": "none"}, {"verify": False}):
        with pytest.raises(
            DataError, match=r"stage-1/part-00000.arrow: shard is \d+ bytes, manifest says \d+"
        ):
            list(ShardDataset(out, stage=1, **kw))
    with pytest.raises(DataError, match=r"stage-1/part-00000.arrow: cannot read Arrow shard"):
        list(ShardDataset(out, stage=1, verify=False, precheck="none"))


def rows_before_error(ds: ShardDataset) -> tuple[int, str]:
    n = 0
    with pytest.raises(DataError) as info:
        for batch in ds:
            n += batch.num_rows
    return n, str(info.value)


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_precheck_fails_before_the_first_batch_not_mid_epoch(small, tmp_path, how):
    """A damaged shard late in the epoch: without the precheck the reader yields rows first and
    fails mid-epoch; with it (the default) it fails before the first batch, naming the shard."""
    out = corrupt_copy(small, tmp_path / how)
    shard = out / "stage-1" / "part-00003.arrow"  # the last shard in manifest order
    if how == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    else:
        shard.unlink()
    kw = dict(stage=1, shuffle=False, batch_size=16)
    n, _ = rows_before_error(ShardDataset(out, precheck="none", **kw))
    assert n == 192  # 197 rows before that shard: mid-epoch
    n, msg = rows_before_error(ShardDataset(out, **kw))
    assert n == 0 and "stage-1/part-00003.arrow" in msg and "do not match the manifest" in msg
    # token mode and resume go through the same check
    with pytest.raises(DataError, match="stage-1/part-00003.arrow"):
        next(iter(ShardDataset(out, **kw).iter_token_batches(32)))
    # the whole stage on demand, every bad shard named
    (out / "stage-1" / "part-00000.arrow").write_bytes(b"x")
    with pytest.raises(
        DataError, match=r"2 shard\(s\) .*part-00000.arrow: shard is 1 bytes.*part-00003.arrow"
    ):
        ShardDataset(out, **kw).check_files()


def test_precheck_sha256_catches_a_flipped_byte_before_the_first_batch(small, tmp_path):
    out = corrupt_copy(small, tmp_path / "f")
    shard = out / "stage-1" / "part-00002.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only a checksum tells
    shard.write_bytes(bytes(data))
    kw = dict(stage=1, shuffle=False, batch_size=16)
    n, msg = rows_before_error(ShardDataset(out, **kw))  # size precheck passes; verify catches it on open
    assert n == 160 and "stage-1/part-00002.arrow: sha256 mismatch" in msg
    n, msg = rows_before_error(ShardDataset(out, precheck="sha256", **kw))
    assert n == 0 and "stage-1/part-00002.arrow: sha256 mismatch" in msg
    with pytest.raises(DataError, match="part-00002.arrow: sha256 mismatch"):
        ShardDataset(out, **kw).check_files("sha256")
    ShardDataset(out, **kw).check_files("size")  # same size: passes
    with pytest.raises(ConfigError, match="unknown check level 'md5'"):
        ShardDataset(out, **kw).check_files("md5")


def test_precheck_is_bounded_to_the_shards_the_reader_reads(small, tmp_path):
    """Cost: a reader stats only the shards it reads in the epoch (from its resume point), so the
    readers of a job check every shard once between them, not each the whole stage."""
    out = corrupt_copy(small, tmp_path / "b")
    (out / "stage-1" / "part-00003.arrow").unlink()  # read by rank 1 only (rows 197-201, unshuffled)
    kw = dict(stage=1, world_size=2, shuffle=False, batch_size=16, balance="none", partition="row")
    assert len(ids_of(ShardDataset(out, rank=0, **kw))) == 101
    with pytest.raises(DataError, match="part-00003.arrow"):
        next(iter(ShardDataset(out, rank=1, **kw)))
    ds = ShardDataset(out, stage=1, shuffle=False, batch_size=16)
    ds.load_state_dict({**ds.state_dict(), "rows_yielded": 100})
    with pytest.raises(DataError, match="part-00003.arrow"):  # still ahead of the resume point
        next(iter(ds))
    (out / "stage-1" / "part-00000.arrow").unlink()  # behind it: not checked, not read
    ds = ShardDataset(out, stage=1, shuffle=False, batch_size=16, partition="row")
    (out / "stage-1" / "part-00003.arrow").write_bytes((small / "stage-1" / "part-00003.arrow").read_bytes())
    ds.load_state_dict({**ds.state_dict(), "rows_yielded": 100})
    assert len([i for b in ds for i in b.column("id").to_pylist()]) == 102


def test_corrupt_footer_without_verify_is_a_data_error(small, tmp_path):
    out = corrupt_copy(small, tmp_path / "b")
    shard = out / "stage-3" / "part-00000.arrow"
    data = bytearray(shard.read_bytes())
    data[-60:-10] = b"\x00" * 50  # clobber the footer
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"stage-3/part-00000.arrow: cannot read Arrow shard"):
        list(ShardDataset(out, stage=3, verify=False))


def test_missing_shard_and_manifest_mismatch(small, tmp_path):
    out = corrupt_copy(small, tmp_path / "m")
    (out / "stage-2" / "part-00001.arrow").unlink()
    with pytest.raises(
        DataError, match=r"stage-2/part-00001.arrow: shard listed in .*manifest.json is missing"
    ):
        list(ShardDataset(out, stage=2, shuffle=False))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stages"][2]["shards"][0]["rows"] = 81
    next(e for e in manifest["shards"] if e["path"] == "stage-3/part-00000.arrow")["rows"] = 81
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"stage-3/part-00000.arrow: shard has 80 rows, manifest says 81"):
        list(ShardDataset(out, stage=3, verify=False))


def test_manifest_whose_shard_lists_disagree_is_a_data_error(small, tmp_path):
    """The probe's case: every sha256 of the top-level list zeroed, the stage lists intact. The
    loader reads the stage lists, so nothing else would notice; it refuses the manifest."""
    out = corrupt_copy(small, tmp_path / "d")
    manifest = json.loads((out / "manifest.json").read_text())
    good = json.loads(json.dumps(manifest))
    for entry in manifest["shards"]:
        entry["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        DataError,
        match=r"manifest.json: its top-level `shards` list and its stages' `shards` lists disagree .*"
        r"stage-1/part-00000.arrow: sha256 0000000000000000\.\.\. in `shards`, [0-9a-f]{16}\.\.\. in stage 1"
        r".*; and 4 more",
    ):
        ShardDataset(out, stage=2)  # any stage: the manifest is not to be trusted
    with pytest.raises(DataError, match="disagree"):
        CurriculumLoader(out, schedule=[{"stage": 3, "rows": 5}])
    assert shard_list_disagreements(good) == []
    assert len(shard_list_disagreements(manifest)) == 7  # one per shard


def test_shard_list_disagreements_names_each_kind():
    a = {"path": "stage-1/a.arrow", "rows": 3, "bytes": 10, "sha256": "1" * 64}
    b = {"path": "stage-1/b.arrow", "rows": 4, "bytes": 11, "sha256": "2" * 64}
    c = {"path": "stage-2/c.arrow", "rows": 5, "bytes": 12, "sha256": "3" * 64}
    m = {"stages": [{"stage": 1, "shards": [a, b]}, {"stage": 2, "shards": [c]}]}
    assert shard_list_disagreements(m) == []  # no top-level list (older manifests): nothing to compare
    assert shard_list_disagreements({**m, "shards": [a, b, c]}) == []
    got = dict(shard_list_disagreements({**m, "shards": [a, {**b, "rows": 9}, {**a}, {"path": "x.arrow"}]}))
    assert got == {
        "stage-1/b.arrow": "rows 9 in `shards`, 4 in stage 1",
        "stage-1/a.arrow": "listed twice in the top-level `shards` list",
        "x.arrow": "in the top-level `shards` list but in no stage's `shards`",
        "stage-2/c.arrow": "in stage 2's `shards` but not in the top-level `shards` list",
    }
    assert shard_list_disagreements({**m, "shards": {"a": a}}) == [
        ("manifest.json", "`shards` is dict, not a list")
    ]


def test_not_a_curriculum_and_unknown_stage(small, tmp_path):
    with pytest.raises(ConfigError, match=r"stage 9 is not in .*; valid: 1, 2, 3"):
        ShardDataset(small, stage=9)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "documents", "shards": []}))
    with pytest.raises(DataError, match="manifest kind is 'documents', expected 'curriculum'"):
        ShardDataset(tmp_path, stage=1)
    with pytest.raises(DataError, match="no manifest.json"):
        ShardDataset(tmp_path / "nowhere", stage=1)
    with pytest.raises(ConfigError, match="rank 2 is out of range for world_size 2"):
        ShardDataset(small, stage=1, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0, got -1"):
        ShardDataset(small, stage=1, seed=-1)


def test_reading_uses_memory_mapped_ipc(small):
    # the shards the loader reads are plain Arrow IPC files; the loader's rows equal pyarrow's
    with pa.memory_map(str(small / "stage-3" / "part-00000.arrow")) as src:
        table = ipc.open_file(src).read_all()
    assert ids_of(ShardDataset(small, stage=3, shuffle=False)) == table.column("id").to_pylist()


# ------------------------------------------------------------------------- CurriculumLoader


def run(loader: CurriculumLoader) -> list[tuple[int, int, list[str]]]:
    return [(b.stage, b.phase, b.data.column("id").to_pylist()) for b in loader]


def test_schedule_by_rows(small):
    loader = CurriculumLoader(
        small, schedule=[{"stage": 1, "rows": 50}, {"stage": 2, "rows": 70}], batch_size=16, seed=1
    )
    batches = run(loader)
    assert all(
        isinstance(b, CurriculumBatch) for b in CurriculumLoader(small, schedule=[{"stage": 1, "rows": 5}])
    )
    assert [(s, p, len(ids)) for s, p, ids in batches] == [
        (1, 0, 16), (1, 0, 16), (1, 0, 16), (1, 0, 2), (2, 1, 16), (2, 1, 16), (2, 1, 16), (2, 1, 16), (2, 1, 6)
    ]  # fmt: skip
    stage2 = [i for s, _, ids in batches if s == 2 for i in ids]
    assert len(set(stage2[:65])) == 65  # epoch 0 of stage 2 (65 rows) has no repeats
    assert set(stage2[65:]) <= set(stage2[:65])  # then epoch 1 starts (reshuffled)
    assert stage2[:65] == ids_of(ShardDataset(small, stage=2, seed=1))


def test_schedule_by_tokens(small):
    manifest = json.loads((small / "manifest.json").read_text())
    budget = 5000
    loader = CurriculumLoader(
        small, schedule=[{"stage": 3, "tokens": budget}, {"stage": 1, "rows": 3}], batch_size=8
    )
    batches = list(loader)
    tok3 = [int(t) for b in batches if b.stage == 3 for t in b.data.column("tokens").to_pylist()]
    assert sum(tok3) >= budget > sum(tok3[:-1])
    assert [b.stage for b in batches][-1] == 1 and batches[-1].data.num_rows == 3
    assert manifest["stages"][2]["tokens"] > budget


def test_schedule_by_weights(small):
    loader = CurriculumLoader(
        small, schedule=[{"stages": {1: 0.75, "3": 0.25}, "rows": 400}], batch_size=10, seed=4
    )
    batches = run(loader)
    rows = {1: 0, 3: 0}
    for stage, _, ids in batches:
        rows[stage] += len(ids)
        assert all(i.startswith(f"s{stage}-") for i in ids)
    assert rows == {1: 300, 3: 100}
    order = [s for s, _, _ in batches]
    assert order[:8] == [1, 3, 1, 1, 1, 3, 1, 1]  # greedy blend: interleaved, not blocked


@pytest.mark.parametrize(
    ("balance", "rows"), [("pad", [34, 34, 34]), ("drop", [33, 33, 33]), ("none", [34, 34, 33])]
)
def test_schedule_is_split_over_readers(small, balance, rows):
    schedule = [{"stage": 1, "rows": 101}, {"stages": {2: 1, 3: 1}, "rows": 40}]
    kw = dict(schedule=schedule, world_size=3, batch_size=8, balance=balance)
    per = [run(CurriculumLoader(small, rank=r, **kw)) for r in range(3)]
    assert [sum(len(ids) for s, _, ids in b if s == 1) for b in per] == rows
    stage1 = [i for b in per for s, _, ids in b if s == 1 for i in ids]
    assert len(stage1) == len(set(stage1)) == sum(rows)  # a stage epoch: disjoint readers
    assert len(CurriculumLoader(small, rank=0, **kw)) == rows[0] + {"drop": 13}.get(balance, 14)


def test_schedule_gives_every_rank_the_same_batches(small):
    """33 rows for 2 ranks in batches of 16: 17 + 16 rows would be 2 batches on one rank and 1
    on the other (a DDP hang); the default gives both 17 rows in 2 batches."""
    kw = dict(schedule=[{"stage": 1, "rows": 33}], world_size=2, batch_size=16)
    assert [len(run(CurriculumLoader(small, rank=r, balance="none", **kw))) for r in range(2)] == [2, 1]
    assert [len(run(CurriculumLoader(small, rank=r, **kw))) for r in range(2)] == [2, 2]
    loader = CurriculumLoader(small, rank=1, **kw)
    state = loader.state_dict()
    del state["balance"]  # a state saved before `balance` existed
    with pytest.raises(ConfigError, match=r"pass balance='none' to resume it"):
        loader.load_state_dict(state)
    CurriculumLoader(small, rank=1, balance="none", **kw).load_state_dict(state)


@pytest.mark.parametrize("balance", ["pad", "drop"])
def test_token_budget_phases_give_every_reader_as_many_batches(small, balance):
    """A token budget takes a number of batches that follows the rows' lengths: split over 2 ranks
    x 2 workers, the readers would stop after different numbers of batches (a DDP hang). With pad
    every reader takes as many as the one that needs the most (whole batches past its share), with
    drop as many as the one that needs the fewest; row phases and mixtures stay in step too."""
    schedule = [
        {"stage": 1, "tokens": 40000},
        {"stages": {2: 0.6, 3: 0.4}, "tokens": 20000},
        {"stage": 1, "rows": 50},
    ]
    kw = dict(schedule=schedule, world_size=2, num_workers=2, batch_size=2, seed=3)
    slots = [(r, w) for r in range(2) for w in range(2)]

    def per_phase(loader: CurriculumLoader) -> tuple[list[int], list[int]]:
        batches, tokens = [0, 0, 0], [0, 0, 0]
        for b in loader:
            batches[b.phase] += 1
            tokens[b.phase] += sum(b.data.column("tokens").to_pylist())
        return batches, tokens

    free = [per_phase(CurriculumLoader(small, rank=r, worker_id=w, balance="none", **kw)) for r, w in slots]
    assert len({b[0] for b, _ in free}) > 1 and len({b[1] for b, _ in free}) > 1  # unbalanced, they differ
    got = [per_phase(CurriculumLoader(small, rank=r, worker_id=w, balance=balance, **kw)) for r, w in slots]
    assert all(b == got[0][0] for b, _ in got)
    limits = CurriculumLoader(small, balance=balance, **kw).phase_batches()
    assert limits[:2] == got[0][0][:2] and limits[2] is None
    shares = [-(-40000 // 4), -(-20000 // 4)] if balance == "pad" else [40000 // 4, 20000 // 4]
    for (fb, ft), (b, t) in zip(free, got):
        for p in (0, 1):
            if balance == "pad":  # at least the share; more batches than it needs alone only past it
                assert t[p] >= shares[p] and b[p] >= fb[p]
            else:  # at most what it takes alone
                assert b[p] <= fb[p] and t[p] <= ft[p]


def test_token_phase_counting_does_not_skip_this_readers_precheck(cache_dir, tmp_path):
    """Working out every reader's batches reads the others' token counts; the shards this reader
    reads must still be prechecked for it (a shard of the wrong size fails before any batch)."""
    import shutil

    out = tmp_path / "c"
    shutil.copytree(cached_curriculum(cache_dir, {1: [10, 10]}, text_len=100), out)

    def make(schedule):
        return CurriculumLoader(
            out, schedule=schedule, rank=1, world_size=2, batch_size=2, verify=False, precheck="size"
        )

    ds = make([{"stage": 1, "rows": 4}]).datasets[1]
    path = out / ds.shards[ds.segments(0)[0].shard].path
    table = ipc.open_file(pa.memory_map(str(path))).read_all()
    with pa.OSFile(str(path), "wb") as f, ipc.new_file(f, table.schema) as w:  # same rows, another size
        w.write_table(table)
    for schedule in ([{"stage": 1, "rows": 4}], [{"stage": 1, "tokens": 500}]):
        with pytest.raises(DataError, match="manifest says"):
            list(make(schedule))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), batch_size=st.integers(3, 30), world_size=st.integers(1, 3))
def test_curriculum_resume_mid_schedule_is_exact(small, data, batch_size, world_size):
    rank = data.draw(st.integers(0, world_size - 1))
    schedule = [
        {"stage": 1, "rows": 150},
        {"stages": {2: 0.6, 3: 0.4}, "tokens": 20000},
        {"stage": 1, "rows": 120},  # continues stage 1 where phase 0 stopped, into epoch 1
    ]
    kw = dict(schedule=schedule, batch_size=batch_size, world_size=world_size, rank=rank, seed=5)
    full = run(CurriculumLoader(small, **kw))
    stop = data.draw(st.integers(0, len(full)))
    loader = CurriculumLoader(small, **kw)
    it = iter(loader)
    got = [(b.stage, b.phase, b.data.column("id").to_pylist()) for b in (next(it) for _ in range(stop))]
    state = json.loads(json.dumps(loader.state_dict()))
    resumed = CurriculumLoader(small, **kw)
    resumed.load_state_dict(state)
    assert got + run(resumed) == full


def test_curriculum_config_errors(small):
    with pytest.raises(ConfigError, match=r"stage 7 is not in the manifest; valid: 1, 2, 3"):
        CurriculumLoader(small, schedule=[{"stage": 7, "rows": 5}])
    with pytest.raises(ConfigError, match="exactly one budget, 'rows' or 'tokens'"):
        CurriculumLoader(small, schedule=[{"stage": 1}])
    with pytest.raises(ConfigError, match="unknown key"):
        CurriculumLoader(small, schedule=[{"stage": 1, "rows": 5, "epochs": 2}])
    with pytest.raises(ConfigError, match="weight of stage 2 must be a number > 0"):
        CurriculumLoader(small, schedule=[{"stages": {1: 1, 2: 0}, "rows": 5}])
    a = CurriculumLoader(small, schedule=[{"stage": 1, "rows": 5}])
    with pytest.raises(ConfigError, match="cannot resume: the state was saved with schedule="):
        CurriculumLoader(small, schedule=[{"stage": 1, "rows": 6}]).load_state_dict(a.state_dict())


def test_curriculum_formats(small):
    batches = list(
        CurriculumLoader(
            small,
            schedule=[{"stage": 2, "rows": 10}],
            batch_size=4,
            format="python",
            columns=["id", "prompt"],
        )
    )
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert set(batches[0].data) == {"id", "prompt"}
