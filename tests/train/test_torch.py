"""The torch adapter with a real DataLoader(num_workers=2): equal ranks, coverage, tensors, exact resume."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from dataforge.errors import ConfigError  # noqa: E402
from dataforge.train.torch import TorchIterableDataset, round_robin  # noqa: E402

_spec = importlib.util.spec_from_file_location("_loader_tests", Path(__file__).with_name("test_loader.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_curriculum = _helpers.make_curriculum


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    # stage 1: 5 unequal shards (whole shards per worker with balance="none": unequal batch counts)
    # stage 2: 1 shard of 41 rows (not a multiple of the readers); stage 3: documents for token mode
    return make_curriculum(
        tmp_path_factory.mktemp("torch") / "out", {1: [90, 10, 45, 7, 30], 2: [41], 3: [60, 20]}
    )


def loader(ds: TorchIterableDataset, workers: int = 2) -> DataLoader:
    return DataLoader(ds, batch_size=None, num_workers=workers)


def ids(batches) -> list[list[str]]:
    return [b["id"] for b in batches]


def test_dataloader_two_workers_reads_every_row_once_as_tensors(out):
    ds = TorchIterableDataset(out, stage=1, batch_size=16, seed=3)
    batches = list(loader(ds))
    flat = [i for b in ids(batches) for i in b]
    assert len(flat) == len(set(flat)) == 182  # 91 rows per worker: nothing to pad
    first = batches[0]
    assert isinstance(first["tokens"], torch.Tensor) and first["tokens"].dtype == torch.int64
    assert isinstance(first["stage"], torch.Tensor) and first["stage"].dtype == torch.int32
    assert isinstance(first["text"], list) and isinstance(first["text"][0], str)
    assert first["source_line"].shape == (16,)
    # two ranks x two workers over 41 rows: exactly once unbalanced; balanced, the ranks take the
    # same number of batches (11 rows per reader, 3 rows read twice)
    every = sorted(f"s2-{i:06d}" for i in range(41))
    per_rank = {}
    for balance in ("none", "pad"):
        per_rank[balance] = [
            ids(
                loader(
                    TorchIterableDataset(out, stage=2, rank=r, world_size=2, batch_size=5, balance=balance)
                )
            )
            for r in range(2)
        ]
    flat = [i for rank in per_rank["none"] for b in rank for i in b]
    assert sorted(flat) == every
    assert [len(rank) for rank in per_rank["pad"]] == [6, 6]  # 2 workers x ceil(11 / 5) batches
    flat = [i for rank in per_rank["pad"] for b in rank for i in b]
    assert len(flat) == 44 and sorted(set(flat)) == every


@pytest.mark.parametrize(("world_size", "expected"), [(2, 12), (3, 8)])
def test_ranks_get_the_same_batches_with_workers(out, world_size, expected):
    """Stage 1 (182 rows in 5 unequal shards) over ranks x 2 workers: the DataLoaders of all ranks
    yield the same number of batches, and state_dict's counts agree with them."""

    def batches(rank: int, **kw) -> int:
        ds = TorchIterableDataset(out, stage=1, rank=rank, world_size=world_size, batch_size=8, seed=1, **kw)
        n = len(list(loader(ds)))
        assert ds.state_dict(n, num_workers=2)["batches_consumed"] == n
        return n

    # ceil(182 / readers) rows per worker: 46 (6 batches) for 2 ranks, 31 (4 batches) for 3
    assert [batches(r) for r in range(world_size)] == [expected] * world_size
    if world_size == 2:  # 5 shards for 4 readers, unbalanced: whole shards, 10 vs 15 batches
        assert [batches(r, balance="none") for r in range(world_size)] == [10, 15]


def test_round_robin_replay():
    assert round_robin([3, 1], 0) == ([0, 0], 0)
    assert round_robin([3, 1], 2) == ([1, 1], 0)
    assert round_robin([3, 1], 3) == ([2, 1], 0)
    assert round_robin([1, 3, 2], 5) == ([1, 2, 2], 1)
    with pytest.raises(ConfigError, match="exceeds"):
        round_robin([1, 1], 3)


@pytest.mark.parametrize("stop", [0, 3, 7, 10])
def test_dataloader_resume_gives_exactly_the_uninterrupted_batches(out, stop):
    kw = dict(stage=1, batch_size=16, seed=3, epoch=2)
    full = ids(loader(TorchIterableDataset(out, **kw)))
    assert len(full) >= 11
    first = TorchIterableDataset(out, **kw)
    got = []
    for batch in loader(first):
        if len(got) == stop:
            break
        got.append(batch["id"])
    state = json.loads(json.dumps(first.state_dict(stop, num_workers=2)))
    resumed = TorchIterableDataset(out, **{**kw, "epoch": 0})
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # same epoch: the resume point is kept
    rest = ids(loader(resumed))
    assert got + rest == full  # same rows, same order
    # a second resume counts from the epoch start, including batches before the first resume
    if rest:
        again = TorchIterableDataset(out, **kw)
        again.load_state_dict(resumed.state_dict(stop + 1, num_workers=2))
        assert ids(loader(again)) == full[stop + 1 :]
    resumed.set_epoch(3)  # another epoch starts from its beginning
    assert len(ids(loader(resumed))) == len(full)


@pytest.mark.parametrize("stop", [5, 40])  # 40: after worker 1 (17 batches) is exhausted
def test_token_mode_long_tensors_and_resume(out, stop):
    kw = dict(stage=3, batch_size=3, seq_len=100, seed=1)
    full = list(loader(TorchIterableDataset(out, **kw)))
    assert all(b.dtype == torch.int64 and b.shape == (3, 101) for b in full)
    first = TorchIterableDataset(out, **kw)
    state = first.state_dict(stop, num_workers=2)
    resumed = TorchIterableDataset(out, **kw)
    resumed.load_state_dict(state)
    rest = list(loader(resumed))
    assert len(rest) == len(full) - stop
    assert all(torch.equal(a, b) for a, b in zip(rest, full[stop:]))


@pytest.mark.parametrize("partition", ["auto", "row"])
@pytest.mark.parametrize("balance", ["pad", "drop"])
def test_token_mode_ranks_take_as_many_steps(out, balance, partition):
    """DDP: every rank's DataLoader (two workers each) gives as many token batches, though its
    rows make a different number (equal rows, balance "none": they differ, the hang this
    prevents); in token mode `auto` cuts the readers at equal tokens. The rank whose worker
    repeats its stream (pad), resumed anywhere, gives exactly the rest."""
    kw = dict(stage=3, batch_size=2, seq_len=60, seed=5, world_size=2)
    free = [TorchIterableDataset(out, rank=r, balance="none", partition="row", **kw) for r in (0, 1)]
    assert len(list(loader(free[0]))) != len(list(loader(free[1])))
    made = TorchIterableDataset(out, rank=0, balance=balance, partition=partition, **kw)
    assert made.reader(num_workers=2, worker_id=0).partition == ("tokens" if partition == "auto" else "row")
    kw["partition"] = partition
    per_rank = [list(loader(TorchIterableDataset(out, rank=r, balance=balance, **kw))) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1])
    own = made.reader(num_workers=2, worker_id=0).token_batch_counts(60)
    assert len(per_rank[0]) == 2 * (max(own) if balance == "pad" else min(own))
    rank = int(np.argmin(own)) // 2  # pad: the rank with the reader that repeats its stream
    full = per_rank[rank]
    for stop in (1, len(full) // 2, len(full) - 1):
        first = TorchIterableDataset(out, rank=rank, balance=balance, **kw)
        resumed = TorchIterableDataset(out, rank=rank, balance=balance, **kw)
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict(stop, num_workers=2))))
        rest = list(loader(resumed))
        assert len(rest) == len(full) - stop
        assert all(torch.equal(a, b) for a, b in zip(rest, full[stop:]))


def test_token_mode_auto_split_keeps_old_states_and_tiny_stages(out, tmp_path):
    """`auto` in token mode cuts readers at equal tokens; a state saved with the row split (what
    `auto` was before, or on a stage with fewer rows than readers) resumes with the row split,
    and a stage with fewer rows than readers uses the row split (whose padding covers them)."""
    kw = dict(stage=3, batch_size=2, seq_len=60, seed=5)
    row = TorchIterableDataset(out, partition="row", **kw)
    full = list(loader(row))
    state = json.loads(json.dumps(row.state_dict(3, num_workers=2)))
    assert state["slots"][0]["partition"] == "row"
    auto = TorchIterableDataset(out, **kw)
    assert auto.reader(num_workers=2, worker_id=0).partition == "tokens"
    auto.load_state_dict(state)
    rest = list(loader(auto))
    assert len(rest) == len(full) - 3 and all(torch.equal(a, b) for a, b in zip(rest, full[3:]))
    tiny = make_curriculum(tmp_path / "tiny", {1: [3]})
    per_rank = [
        len(list(loader(TorchIterableDataset(tiny, stage=1, batch_size=2, seq_len=32, rank=r, world_size=4))))
        for r in range(4)
    ]
    assert len(set(per_rank)) == 1 and per_rank[0] > 0
    ds = TorchIterableDataset(tiny, stage=1, seq_len=32, world_size=4, rank=0)
    assert ds.reader(num_workers=2, worker_id=0).partition == "row"


def test_arrow_batches_through_shared_memory(out):
    ds = TorchIterableDataset(out, stage=2, batch_size=8, format="arrow", seed=2)
    batches = list(loader(ds))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    got = [i for b in batches for i in b.column("id").to_pylist()]
    assert len(got) == 42 and sorted(set(got)) == sorted(f"s2-{i:06d}" for i in range(41))  # 21 + 21
    with pytest.raises(
        ConfigError, match="unknown batch format 'pandas'; valid: arrow, numpy, python, torch"
    ):
        TorchIterableDataset(out, stage=2, format="pandas")


def test_resume_with_another_worker_count_is_rejected(out):
    ds = TorchIterableDataset(out, stage=2, batch_size=5)
    state = ds.state_dict(2, num_workers=2)
    ds.load_state_dict(state)
    with pytest.raises(ConfigError, match="num_workers=2, this DataLoader has num_workers=1"):
        list(ds)  # in the main process: one reader


def test_no_workers_main_process(out):
    ds = TorchIterableDataset(out, stage=2, batch_size=8, seed=0)
    full = ids(loader(ds, workers=0))
    ds.load_state_dict(ds.state_dict(2, num_workers=0))
    assert ids(loader(ds, workers=0)) == full[2:]


def test_dataforge_train_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import dataforge.train as t\n"
        "assert t.ShardDataset and t.CurriculumLoader and t.ByteTokenizer\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
