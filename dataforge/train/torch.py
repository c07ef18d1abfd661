"""PyTorch adapter: a ``torch.utils.data.IterableDataset`` over one curriculum stage.

Needs the ``torch`` extra (``pip install dataforge[torch]``); this is the only dataforge module
that imports torch.

Partition
    Each DataLoader worker process gets a copy of the dataset. In ``__iter__`` a worker reads
    ``get_worker_info()`` (``num_workers``, ``id``) and the rank/world size (the constructor's
    arguments, else ``torch.distributed`` when it is initialized, else 0/1) and builds a
    :class:`~dataforge.train.ShardDataset` for its reader slot. With the default ``balance="pad"``
    every reader (so every rank) yields the same number of rows and batches per epoch, and every row
    of the stage is read at least once over all ranks x workers (fewer than ``world_size x W`` rows
    twice); ``balance="none"`` reads every row exactly once with unequal ranks. The dataset yields
    whole batches: use ``DataLoader(ds, batch_size=None, num_workers=W)``. Token mode packs each
    reader's rows into sequences; with ``pad`` or ``drop`` every reader still gives the same number
    of token batches (see :meth:`ShardDataset.num_token_batches`), so ranks stay in step;
    ``balance="none"`` lets the counts follow each reader's tokens.

Batches
    Row mode: a dict, numeric columns as tensors (a column with nulls stays a list), strings and
    lists as Python lists. Token mode (``seq_len=T``): a ``LongTensor`` of shape ``[batch_size,
    T + 1]`` (see :meth:`ShardDataset.iter_token_batches`).

Resume with workers
    The training loop only sees the batches the DataLoader returns. With ``in_order=True`` (the
    default) a DataLoader takes batches from its workers round-robin (worker 0, 1, ..., W-1, 0, ...),
    skipping a worker once it is exhausted. Every worker's batch count is known from the manifest
    (token mode: from the ``tokens`` column), so ``state_dict(batches_consumed, num_workers=W)``,
    called in the main process with the number of batches of this epoch the loop has taken,
    replays that round-robin arithmetically to get how many batches each worker slot has
    delivered, and which slot is due next. ``load_state_dict`` stores it; in the next iteration
    DataLoader worker ``w`` plays slot ``(w + next_slot) % W`` and continues that slot from its
    count, so the resumed DataLoader returns exactly the batches, in the same order, that the
    uninterrupted one would have returned. ``batches_consumed`` counts from the start of the epoch
    including batches before an earlier resume; ``state["batches_consumed"]`` gives it back.

Example:
    >>> ds = TorchIterableDataset("OUT", stage=1, seed=0, batch_size=64)  # doctest: +SKIP
    >>> dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)  # doctest: +SKIP
    >>> for step, batch in enumerate(dl): ...  # doctest: +SKIP
    >>> state = ds.state_dict(step + 1, num_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from dataforge.errors import ConfigError, choices
from dataforge.train.loader import (
    DEFAULT_SHUFFLE_BLOCK_ROWS,
    STATE_VERSION,
    ShardDataset,
    convert_batch,
)

log = logging.getLogger(__name__)

TORCH_FORMATS = ("torch", "arrow", "numpy", "python")


def to_torch(batch: pa.RecordBatch) -> dict[str, Any]:
    """Numeric/boolean columns without nulls -> tensors; everything else -> Python lists."""
    out: dict[str, Any] = {}
    for name, col in zip(batch.schema.names, batch.columns):
        t = col.type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        if numeric and col.null_count == 0:
            out[name] = torch.from_numpy(np.array(col.to_numpy(zero_copy_only=False), copy=True))
        else:
            out[name] = col.to_pylist()
    return out


def _rebuild_batch(data: torch.Tensor, schema: pa.Schema) -> pa.RecordBatch:
    # zero-copy: the RecordBatch's buffers point into the tensor's shared memory, kept alive by
    # the numpy array the py_buffer holds
    return pa.ipc.read_record_batch(pa.py_buffer(data.numpy()), schema)


class SharedArrowBatch:
    """Sends a RecordBatch from a DataLoader worker as one shared-memory tensor.

    Pickling a RecordBatch copies it through the worker's pipe (and a slice pickles its whole
    parent buffers); instead this serializes the batch as one Arrow IPC message into a uint8
    tensor, which torch moves through shared memory, and unpickles as a ``pa.RecordBatch`` in
    the main process. The DataLoader therefore hands the training loop plain RecordBatches.
    """

    __slots__ = ("batch",)

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch

    def __reduce__(self) -> tuple[Any, ...]:
        message = self.batch.serialize()
        data = (
            torch.frombuffer(message, dtype=torch.uint8)
            if message.size
            else torch.zeros(0, dtype=torch.uint8)
        )
        return (_rebuild_batch, (data, self.batch.schema))


def round_robin(counts: Sequence[int], consumed: int) -> tuple[list[int], int]:
    """Replay a DataLoader's in-order round-robin over workers with ``counts`` batches each.

    Returns the batches taken from each worker after ``consumed`` batches, and the worker due next.
    """
    n = len(counts)
    if consumed > sum(counts):
        msg = f"batches_consumed={consumed} exceeds the {sum(counts)} batches of this epoch"
        raise ConfigError(msg)
    taken = [0] * n
    left = consumed
    nxt = 0
    while left:
        active = [w for w in range(n) if taken[w] < counts[w]]
        # starting at worker `nxt`, the cycle visits the active workers in this order
        cycle = [w for w in active if w >= nxt] + [w for w in active if w < nxt]
        rounds = min(left // len(cycle), min(counts[w] - taken[w] for w in cycle))
        if rounds:
            for w in cycle:
                taken[w] += rounds
            left -= rounds * len(cycle)
            continue
        for w in cycle:
            if not left:
                break
            if taken[w] < counts[w]:
                taken[w] += 1
                left -= 1
                nxt = (w + 1) % n
    active = [w for w in range(n) if taken[w] < counts[w]]
    later = [w for w in active if w >= nxt] + [w for w in active if w < nxt]
    return taken, (later[0] if later else 0)


class TorchIterableDataset(IterableDataset):
    """A curriculum stage as a torch IterableDataset; arguments as :class:`ShardDataset`.

    ``rank``/``world_size`` default to ``torch.distributed`` when it is initialized (else 0/1);
    ``seq_len`` switches to token mode (LongTensor ``[batch_size, seq_len + 1]``); ``format``
    chooses row batches: ``torch`` (tensors + lists, default), ``arrow``, ``numpy`` or ``python``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stage: int,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        batch_size: int = 64,
        epoch: int = 0,
        shuffle_block_rows: int = DEFAULT_SHUFFLE_BLOCK_ROWS,
        columns: Sequence[str] | None = None,
        drop_last: bool = False,
        verify: bool = True,
        partition: str = "auto",
        balance: str = "pad",
        precheck: str = "size",
        tokenizer: Any = None,
        seq_len: int | None = None,
        format: str = "torch",
    ) -> None:
        super().__init__()
        if format not in TORCH_FORMATS:
            msg = f"unknown batch format {format!r}; valid: {choices(TORCH_FORMATS)}"
            raise ConfigError(msg)
        self.format = format
        self.path = Path(path)
        self.rank, self.world_size = rank, world_size
        self.epoch = epoch
        self.seq_len = seq_len
        self.options: dict[str, Any] = {
            "stage": stage,
            "seed": seed,
            "shuffle": shuffle,
            "batch_size": batch_size,
            "shuffle_block_rows": shuffle_block_rows,
            "columns": columns,
            "drop_last": drop_last,
            "verify": verify,
            "partition": partition,
            "balance": balance,
            "precheck": precheck,
            "tokenizer": tokenizer,
        }
        self._resume: dict[str, Any] | None = None
        self._resumed_partition: str | None = None  # the split a loaded state was saved with (auto)
        self._token_split = False
        probe = self.reader(num_workers=1, worker_id=0)  # check the options now, in the main process
        # token mode: readers cut at equal tokens, so their batch counts (balanced by pad or drop)
        # differ by a batch or two, not by the rows' length differences (see ``reader``)
        self._token_split = seq_len is not None and partition == "auto" and probe.has_token_counts()
        self._stage_rows = probe.num_rows

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            return int(self.rank or 0), int(self.world_size or 1)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def reader(self, *, num_workers: int, worker_id: int) -> ShardDataset:
        """The ShardDataset of DataLoader worker slot ``worker_id`` of ``num_workers`` on this rank.

        In token mode ``partition="auto"`` is ``tokens`` when the stage has its tokens column and
        at least one row per reader (the row split otherwise, whose padding covers fewer rows than
        readers), unless a loaded state was saved with the row split."""
        rank, world = self._rank_world()
        options = dict(self.options)
        if self._token_split and options["partition"] == "auto":
            options["partition"] = self._resumed_partition or (
                "tokens" if self._stage_rows >= world * num_workers else "row"
            )
        return ShardDataset(
            self.path,
            rank=rank,
            world_size=world,
            epoch=self.epoch,
            num_workers=num_workers,
            worker_id=worker_id,
            **options,
        )

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch`` from the next iteration on (a loaded state for it is kept)."""
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        """This DataLoader worker's batches (dicts of tensors and lists, or token LongTensors)."""
        info = get_worker_info()
        num_workers, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        resume = self._resume
        slot = wid
        if resume is not None:
            if resume["num_workers"] != num_workers:
                msg = (
                    f"cannot resume: the state was saved with num_workers={resume['num_workers']}, "
                    f"this DataLoader has num_workers={num_workers}"
                )
                raise ConfigError(msg)
            slot = (wid + resume["next_slot"]) % num_workers
        ds = self.reader(num_workers=num_workers, worker_id=slot)
        if resume is not None:
            ds.load_state_dict(resume["slots"][slot])
        log.debug("worker %d reads slot %d: %r", wid, slot, ds)
        if self.seq_len is not None:
            for arr in ds.iter_token_batches(self.seq_len):
                yield torch.from_numpy(arr)
        else:
            for batch in ds:
                if self.format == "torch":
                    yield to_torch(batch)
                elif self.format == "arrow":
                    yield SharedArrowBatch(batch) if info is not None else batch
                else:
                    yield convert_batch(batch, self.format)

    def _counts(self, readers: list[ShardDataset]) -> list[int]:
        if self.seq_len is None:
            return [r.num_batches() for r in readers]
        return [r.num_token_batches(self.seq_len) for r in readers]

    def state_dict(self, batches_consumed: int, *, num_workers: int) -> dict[str, Any]:
        """The state after the training loop has taken ``batches_consumed`` batches of this epoch
        from a ``DataLoader(self, batch_size=None, num_workers=num_workers)`` (0 = no workers)."""
        if (
            isinstance(batches_consumed, bool)
            or not isinstance(batches_consumed, int)
            or batches_consumed < 0
        ):
            msg = f"batches_consumed must be an integer >= 0, got {batches_consumed!r}"
            raise ConfigError(msg)
        workers = max(int(num_workers), 1)
        readers = [self.reader(num_workers=workers, worker_id=w) for w in range(workers)]
        counts = self._counts(readers)
        taken, next_slot = round_robin(counts, batches_consumed)
        slots = []
        for r, k in zip(readers, taken):
            if self.seq_len is None:
                slots.append(r.state_at(rows_yielded=min(k * r.batch_size, len(r))))
            else:
                slots.append(r.token_state_for(k, self.seq_len))
        return {
            "version": STATE_VERSION,
            "kind": "torch_iterable",
            "epoch": self.epoch,
            "batches_consumed": batches_consumed,
            "num_workers": workers,
            "seq_len": self.seq_len,
            "next_slot": next_slot,
            "slots": slots,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` in the next iteration (every worker applies its slot)."""
        if not isinstance(state, Mapping) or state.get("kind") != "torch_iterable":
            msg = "not a TorchIterableDataset state (kind must be 'torch_iterable')"
            raise ConfigError(msg)
        if state.get("seq_len") != self.seq_len:
            msg = f"cannot resume: the state was saved with seq_len={state.get('seq_len')!r}, this dataset has {self.seq_len!r}"
            raise ConfigError(msg)
        self.epoch = int(state["epoch"])
        slots = state.get("slots") or [{}]
        if self._token_split and slots[0].get("partition") in ("row", "tokens"):
            # `auto` picks the split; a state keeps the one it was saved with (states saved before
            # the tokens split existed say "row")
            self._resumed_partition = str(slots[0]["partition"])
        # check every slot's configuration now rather than in the workers
        for w, slot in enumerate(state["slots"]):
            self.reader(num_workers=int(state["num_workers"]), worker_id=w).load_state_dict(slot)
        self._resume = dict(state)
