"""The decision table of global steps: written sorted in pieces, read back task by task."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pytest

from dataforge.stages import task_decisions
from dataforge.step import DECISIONS_SORTED, GlobalContext


def _decisions(tasks: list[int], ords: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_task": pl.Series(tasks, dtype=pl.Int32),
            "_ord": pl.Series(ords, dtype=pl.Int64),
            "reason": [f"r{t}-{o}" if o % 2 else None for t, o in zip(tasks, ords, strict=True)],
        }
    )


def _ctx(tmp_path) -> GlobalContext:
    return GlobalContext(work=str(tmp_path), stage_dir=str(tmp_path), n_tasks=6)


def test_each_task_reads_exactly_its_rows_across_pieces(tmp_path):
    rng = np.random.default_rng(7)
    tasks = np.sort(rng.choice([0, 1, 3, 5], size=300))  # tasks 2 and 4 have no rows
    ords = np.concatenate(
        [np.sort(rng.choice(10_000, size=(tasks == t).sum(), replace=False)) for t in (0, 1, 3, 5)]
    )
    whole = _decisions(tasks.tolist(), ords.tolist())
    ctx = _ctx(tmp_path)
    cuts = [0, 1, 2, 50, 51, 120, 120, 299, 300]  # pieces of 1, 1, 48, 1, 69, 0, 179 and 1 rows
    pieces = [whole.slice(a, b - a) for a, b in itertools.pairwise(cuts)]
    assert ctx.write_decisions(pieces) == 300
    with ipc.open_file(ctx.decisions_path()) as reader:
        assert reader.schema.metadata[DECISIONS_SORTED] == b"_task,_ord"
        assert reader.num_record_batches > 4
    for t in range(6):
        got = task_decisions(ctx.decisions_path(), t)
        assert got.equals(whole.filter(pl.col("_task") == t)), t
        assert got.height == int((tasks == t).sum())
    assert task_decisions(ctx.decisions_path(), 2).columns == ["_task", "_ord", "reason"]


@pytest.mark.parametrize(
    ("pieces", "bad"),
    [
        ([([0, 0], [1, 1])], "duplicate row"),
        ([([1, 0], [0, 5])], "task order"),
        ([([0], [3]), ([0], [2])], "order across pieces"),
    ],
)
def test_rows_out_of_order_are_refused_and_nothing_is_written(tmp_path, pieces, bad):
    ctx = _ctx(tmp_path)
    with pytest.raises(ValueError, match="ascending by"):
        ctx.write_decisions(_decisions(t, o) for t, o in pieces)
    assert list(tmp_path.iterdir()) == [], bad  # no decision file, no temporary file


def test_an_unmarked_table_is_filtered_whole(tmp_path):
    """A table not written by write_decisions (no sorted mark) may be in any order."""
    path = tmp_path / "decisions.arrow"
    _decisions([3, 1, 3, 1], [9, 4, 2, 0]).write_ipc(path)
    got = task_decisions(str(path), 3)
    assert got["_ord"].to_list() == [2, 9] and got["reason"].to_list() == [None, "r3-9"]
    assert task_decisions(str(path), 1)["_ord"].to_list() == [0, 4]
