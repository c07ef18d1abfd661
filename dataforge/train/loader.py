"""Read curriculum shards for training: deterministic shuffle, equal readers, exact resume.

The contract is ``docs/curriculum.md``. A curriculum output holds, per stage, Arrow IPC shards
listed in ``manifest.json`` with their rows and sha256. :class:`ShardDataset` reads one stage;
:class:`CurriculumLoader` walks a schedule of stages.

Readers
    There are ``R = world_size * num_workers`` readers; reader ``g = rank * num_workers +
    worker_id`` (its *slot*). ``num_workers``/``worker_id`` are set by the torch adapter from
    ``torch.utils.data.get_worker_info()``; plain use leaves them at 1/0.

Epoch order (a pure function of seed, epoch, stage)
    * Shard order: a permutation of the stage's shards drawn from
      ``numpy.random.default_rng([seed, epoch, stage, 0])`` (manifest order when ``shuffle=False``).
    * Each shard is cut into blocks of ``shuffle_block_rows`` consecutive rows; the block order is a
      permutation drawn from ``[seed, epoch, stage, 1, shard]`` and the rows inside block ``k`` are
      permuted with ``[seed, epoch, stage, 2, shard, k]``. A reader holds at most two decoded
      blocks (the one being consumed and the next, decoded by a prefetch thread) plus the
      memory-mapped shards, so memory is bounded however large a shard is.
    * The *global order* is the concatenation, in shard order, of every shard's permuted blocks.

Partition (which reader gets which positions, before balancing)
    * ``row`` split (``partition="row"``, and ``auto`` unless ``balance="none"``): the global order
      of ``N`` rows is cut into ``R`` contiguous ranges, reader ``g`` gets positions
      ``[g*N//R, (g+1)*N//R)``. A reader opens only the shards its range touches (about
      ``N / R / shard_rows + 2``), so locality stays shard-level for any ``R``.
    * ``tokens`` split (``partition="tokens"``; what the torch adapter's ``auto`` picks in token
      mode): the row split cut where the tokens before a position reach ``g * T / R`` of the
      epoch's ``T`` tokens (from the ``tokens`` column), so readers hold equal tokens to within a
      row, every row once; for token batches only (row batches would differ between readers).
    * ``shard`` split (``partition="shard"``, and ``auto`` with ``balance="none"`` when the stage has
      at least ``R`` shards): shards are taken in the epoch's shard order and each is given to the
      reader with the fewest rows so far (ties go to the lowest slot), which keeps readers within
      one shard's rows of each other. A reader's sequence is its shards' permuted blocks.

Balance (``balance``: every reader yields the same number of rows per epoch)
    Under DDP every rank must take the same number of steps, or the ranks with more wait forever
    at the end of the epoch. The quota is ``ceil(N / R)`` rows with ``balance="pad"`` (default) and
    ``floor(N / R)`` with ``"drop"``. Readers above the quota hand the tail of their sequence to a
    pool (in slot order); readers below it take from the pool (in slot order), then, with ``pad``,
    from the start of the epoch's global order (cycled when ``N < R``). So with ``pad`` every row is
    read at least once per epoch and ``R * ceil(N / R) - N`` (fewer than ``R``) rows a second time;
    with ``drop`` every row at most once and ``N mod R`` rows are skipped in that epoch (others in
    the next, when shuffled). The row split pads or drops at most one row per reader; the shard
    split moves up to a shard's rows, and a reader may then read pieces of many shards.
    ``balance="none"``: every row exactly once, reader sizes differ (by at most one row with the
    row split, by up to a shard's rows with the shard split).

    Token mode packs rows of different lengths, so equal rows are not equal batches: with ``pad``
    or ``drop`` every reader also gives the same number of token batches, the most (``pad``) or the
    fewest (``drop``) that any reader's rows make (counted from the shards' ``tokens`` column; the
    ``tokens`` split keeps that difference to a batch or two: on the benchmark's 200 MB stage, 2
    readers with equal rows made 2,821 and 3,288 batches of 16 x 2,048, with equal tokens 3,055 each).
    With ``pad`` a reader whose rows make fewer starts its own stream again from the beginning for
    the missing batches (data, not all-padding batches: a batch of ignored targets only would make
    a mean loss NaN); with ``drop`` readers stop at the fewest.

Resume
    A reader's sequence is a list of *segments* ``(shard, block, start, stop)`` (a contiguous run
    of positions inside one permuted block) computed from the manifest alone. ``state_dict()``
    records how many rows this reader has yielded in the epoch (plus the configuration that
    determines the order); ``load_state_dict`` restores it and the next iteration locates the
    segment holding that position by arithmetic and starts reading there. Nothing before the
    position is read, and since the order is a pure function of the recorded configuration, the
    rows that follow are exactly those an uninterrupted run would have produced. Token mode
    (:meth:`ShardDataset.iter_token_batches`) records the row and the token offset inside it where
    the next sequence starts, the pass over the stream (``token_lap``) and the batches yielded, so
    it resumes exactly too.

Reading uses ``pa.memory_map`` + ``pa.ipc.open_file``: only the record batches overlapping the
current block are decoded, and ``take`` (shuffled) or zero-copy ``slice`` (not shuffled) builds the
rows. Checks against the manifest, each raising :class:`DataError` naming the shard:

* the manifest itself: its top-level ``shards`` list must agree with the stages' lists
  (:func:`shard_list_disagreements`), when the dataset is made;
* ``precheck`` (before the first row of each epoch, for the shards this reader reads from there to
  the epoch's end): ``size`` (default; one ``stat`` per shard: missing or truncated shards fail
  before step 0 instead of mid-epoch), ``sha256`` (also hashes those shards up front: the bytes
  ``verify`` would hash anyway, read before the first batch instead of as it goes) or ``none``;
  :meth:`ShardDataset.check_files` checks the whole stage on demand;
* ``verify=True``: each shard's size and sha256 the first time a process opens it.

Example:
    >>> ds = ShardDataset("OUT", stage=1, rank=0, world_size=2, seed=0, batch_size=64)  # doctest: +SKIP
    >>> for batch in ds:  # pyarrow.RecordBatch of at most 64 rows  # doctest: +SKIP
    ...     state = ds.state_dict()
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import heapq
import json
import logging
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from dataforge.errors import ConfigError, DataError, choices
from dataforge.io.shards import arrow_indices, read_manifest, sha256_file
from dataforge.train.tokenizer import ByteTokenizer, tokenizer_spec, training_text

log = logging.getLogger(__name__)

STATE_VERSION = 1
DEFAULT_SHUFFLE_BLOCK_ROWS = 8192
BATCH_FORMATS = ("arrow", "numpy", "python")
TOKEN_DTYPE = np.int32  # token ids inside the packer (token batches are returned as int64)
PARTITIONS = ("auto", "shard", "row", "tokens")
BALANCES = ("pad", "drop", "none")
PRECHECKS = ("size", "sha256", "none")
_TEXT_COLUMNS = ("text", "prompt", "response", "context")

# (resolved path, size, mtime_ns, expected sha256) of shards this process has already verified.
_VERIFIED: set[tuple[str, int, int, str]] = set()


# --------------------------------------------------------------------------------------- helpers


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value!r}"
        raise ConfigError(msg)
    return int(value)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _to_batch(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=schema)
    if len(batches) == 1:
        return batches[0]
    return pa.concat_batches(batches)


def _concat(pieces: list[pa.RecordBatch], schema: Callable[[], pa.Schema]) -> pa.RecordBatch:
    if not pieces:
        return pa.RecordBatch.from_pylist([], schema=schema())
    if len(pieces) == 1:
        return pieces[0]
    return pa.concat_batches(pieces)


def convert_batch(batch: pa.RecordBatch, format: str) -> Any:
    """A RecordBatch as ``arrow`` (itself), ``numpy`` (dict of arrays) or ``python`` (dict of lists)."""
    if format == "arrow":
        return batch
    if format == "numpy":
        return {
            name: col.to_numpy(zero_copy_only=False) for name, col in zip(batch.schema.names, batch.columns)
        }
    if format == "python":
        return batch.to_pydict()
    msg = f"unknown batch format {format!r}; valid: {choices(BATCH_FORMATS)}"
    raise ConfigError(msg)


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a stage as the manifest lists it; ``index`` is its position in the stage."""

    index: int
    path: str
    rows: int
    bytes: int
    sha256: str
    tokens: int | None
    first_row: int


@dataclass(frozen=True)
class Segment:
    """Positions ``[start, stop)`` of block ``block`` of shard ``shard`` (in its permuted order)."""

    shard: int
    block: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass
class _OpenShard:
    """A memory-mapped shard: the IPC reader and the first row of every record batch."""

    source: pa.MemoryMappedFile
    reader: ipc.RecordBatchFileReader
    offsets: np.ndarray  # len = batches + 1
    cache: dict[int, pa.RecordBatch] = field(default_factory=dict)


def load_curriculum_manifest(path: str | Path) -> dict[str, Any]:
    """``OUT/manifest.json`` of a curriculum output; DataError if it is not one."""
    manifest = read_manifest(path)
    if manifest.get("kind") != "curriculum":
        msg = (
            f"{path}: manifest kind is {manifest.get('kind')!r}, expected 'curriculum' "
            "(build one with `dataforge curriculum`)"
        )
        raise DataError(msg)
    if not isinstance(manifest.get("stages"), list) or not manifest["stages"]:
        msg = f"{path}: curriculum manifest lists no stages"
        raise DataError(msg)
    disagreements = shard_list_disagreements(manifest)
    if disagreements:
        shown = "; ".join(f"{p}: {what}" for p, what in disagreements[:3])
        more = f"; and {len(disagreements) - 3} more" if len(disagreements) > 3 else ""
        msg = (
            f"{path}/manifest.json: its top-level `shards` list and its stages' `shards` lists disagree "
            f"(edited or corrupt; rebuild it, or run `dataforge validate {path}`): {shown}{more}"
        )
        raise DataError(msg)
    return manifest


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) > 20:  # a sha256: its first 16 hex digits
        return value[:16] + "..."
    return repr(value)


def shard_list_disagreements(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where a curriculum manifest's top-level ``shards`` list and its stages' ``shards`` lists
    disagree, as ``(shard path, what differs)``; empty when they agree (or when the manifest has no
    top-level list, as older ones may not).

    The builder writes every stage entry, unchanged and in stage order, to the top-level list
    (which ``dataforge inspect --verify`` checks); the loader reads the stage lists.
    """
    top = manifest.get("shards")
    if top is None:
        return []
    if not isinstance(top, list):
        return [("manifest.json", f"`shards` is {type(top).__name__}, not a list")]
    staged: dict[str, tuple[Any, Mapping[str, Any]]] = {}
    out: list[tuple[str, str]] = []
    for st in manifest.get("stages") or []:
        for entry in (st.get("shards") or []) if isinstance(st, Mapping) else []:
            if isinstance(entry, Mapping) and "path" in entry:
                if entry["path"] in staged:
                    out.append((str(entry["path"]), "listed twice in the stages' `shards` lists"))
                staged[entry["path"]] = (st.get("stage"), entry)
    listed: dict[str, Mapping[str, Any]] = {}
    for entry in top:
        if not isinstance(entry, Mapping) or "path" not in entry:
            out.append(("manifest.json", f"top-level `shards` entry {entry!r} has no path"))
            continue
        path = str(entry["path"])
        if path in listed:
            out.append((path, "listed twice in the top-level `shards` list"))
            continue
        listed[path] = entry
        if path not in staged:
            out.append((path, "in the top-level `shards` list but in no stage's `shards`"))
            continue
        stage, mine = staged[path]
        diffs = [
            f"{k} {_show(entry.get(k))} in `shards`, {_show(mine.get(k))} in stage {stage}"
            for k in sorted(set(entry) | set(mine))
            if entry.get(k) != mine.get(k)
        ]
        if diffs:
            out.append((path, "; ".join(diffs)))
    for path, (stage, _entry) in staged.items():
        if path not in listed:
            out.append((path, f"in stage {stage}'s `shards` but not in the top-level `shards` list"))
    return out


def _stage_entry(manifest: Mapping[str, Any], stage: int, path: str | Path) -> dict[str, Any]:
    stages = {int(s["stage"]): s for s in manifest["stages"]}
    if stage not in stages:
        msg = f"stage {stage!r} is not in {path}/manifest.json; valid: {choices(stages)}"
        raise ConfigError(msg)
    return stages[stage]


# ---------------------------------------------------------------------------------- ShardDataset


class ShardDataset:
    """One stage of a curriculum output, read by one of ``world_size * num_workers`` readers.

    Args:
        path: the curriculum output folder (holds ``manifest.json``).
        stage: stage number to read (a ``stages[].stage`` of the manifest).
        rank, world_size: this process and the number of processes (data-parallel ranks).
        seed: shuffle seed (any integer >= 0); epoch: epoch number (:meth:`set_epoch`).
        shuffle: shuffle shard order, block order and rows within blocks.
        batch_size: rows per batch (token mode: sequences per batch).
        shuffle_block_rows: rows per shuffle block (bounded memory; best a multiple of 4096, the
            record batch size of ``write_shard``, so each record batch is decoded once).
        columns: columns to return (default all).
        drop_last: drop this reader's final incomplete batch.
        verify: check size and sha256 of each shard against the manifest when it is opened.
        partition: ``auto`` (row split; shard split when ``balance="none"`` and there are at least
            ``R`` shards), ``shard``, ``row`` or ``tokens`` (for token mode: the row split cut at
            equal tokens instead of equal rows, from the ``tokens`` column; every row once, so
            readers differ in rows and row batches); see the module docstring.
        balance: ``pad`` (every reader yields ``ceil(N / R)`` rows per epoch, fewer than ``R``
            rows repeated), ``drop`` (``floor(N / R)``, fewer than ``R`` rows skipped) or ``none``
            (every row exactly once, reader sizes differ: not for DDP).
        precheck: ``size`` (before each epoch's first row, the shards this reader will read must
            exist with the manifest's size: one ``stat`` each), ``sha256`` (and their checksums,
            read up front) or ``none``.
        num_workers, worker_id: DataLoader workers of this rank (set by the torch adapter).
        tokenizer: for token mode and token counts; default :class:`ByteTokenizer`.
        prefetch: decode the next block in a background thread (two blocks in memory at most).

    Raises:
        ConfigError: a bad argument, or a stage the manifest does not have.
        DataError: no manifest, a manifest whose shard lists disagree, or (``precheck`` when an
            epoch starts, ``verify`` when a shard is opened) a shard that is missing or does not
            match the manifest.

    Example:
        >>> from dataforge.train import ShardDataset
        >>> ds = ShardDataset("out/tour/curriculum", stage=1, seed=0, batch_size=64)
        >>> sum(batch.num_rows for batch in ds) == len(ds) == ds.num_rows  # one reader: no padding
        True
        >>> state = ds.state_dict()  # save it with the checkpoint; load_state_dict(state) resumes
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stage: int,
        rank: int = 0,
        world_size: int = 1,
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
        num_workers: int = 1,
        worker_id: int = 0,
        tokenizer: Any = None,
        prefetch: bool = True,
    ) -> None:
        self.path = Path(path)
        self.manifest = load_curriculum_manifest(self.path)
        self.prefetch = bool(prefetch)
        self.stage = _check_int("stage", stage, minimum=0)
        self.world_size = _check_int("world_size", world_size, minimum=1)
        self.rank = _check_int("rank", rank, minimum=0)
        if self.rank >= self.world_size:
            msg = f"rank {rank} is out of range for world_size {world_size} (valid: 0..{world_size - 1})"
            raise ConfigError(msg)
        self.num_workers = _check_int("num_workers", num_workers, minimum=1)
        self.worker_id = _check_int("worker_id", worker_id, minimum=0)
        if self.worker_id >= self.num_workers:
            msg = f"worker_id {worker_id} is out of range for num_workers {num_workers}"
            raise ConfigError(msg)
        self.seed = _check_int("seed", seed, minimum=0)
        self.epoch = _check_int("epoch", epoch, minimum=0)
        self.batch_size = _check_int("batch_size", batch_size, minimum=1)
        self.shuffle_block_rows = _check_int("shuffle_block_rows", shuffle_block_rows, minimum=1)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.verify = bool(verify)
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()

        entry = _stage_entry(self.manifest, self.stage, self.path)
        self.stage_entry = entry
        self.shards: list[ShardEntry] = [
            ShardEntry(
                index=i,
                path=str(s["path"]),
                rows=int(s["rows"]),
                bytes=int(s.get("bytes", -1)),
                sha256=str(s.get("sha256", "")),
                tokens=None if s.get("tokens") is None else int(s["tokens"]),
                first_row=int(s.get("first_row", 0)),
            )
            for i, s in enumerate(entry.get("shards", []))
        ]
        if not self.shards:
            msg = f"{self.path}/manifest.json: stage {self.stage} lists no shards"
            raise DataError(msg)
        self.schema = self._schema_from_manifest(entry)
        names = self.schema.names if self.schema is not None else None
        if columns is not None:
            columns = list(columns)
            if names is not None:
                unknown = [c for c in columns if c not in names]
                if unknown:
                    msg = f"unknown column(s) {unknown} for stage {self.stage}; valid: {choices(names)}"
                    raise ConfigError(msg)
        self.columns = columns

        if partition not in PARTITIONS:
            msg = f"unknown partition {partition!r}; valid: {choices(PARTITIONS)}"
            raise ConfigError(msg)
        if balance not in BALANCES:
            msg = f"unknown balance {balance!r}; valid: {choices(BALANCES)}"
            raise ConfigError(msg)
        readers = self.world_size * self.num_workers
        if partition == "shard" and len(self.shards) < readers:
            msg = (
                f"partition='shard' needs at least world_size x num_workers = {readers} shards, "
                f"stage {self.stage} has {len(self.shards)}; use partition='row' or 'auto'"
            )
            raise ConfigError(msg)
        if partition == "auto":  # whole shards only when the readers need not be equal
            partition = "shard" if balance == "none" and len(self.shards) >= readers else "row"
        self.partition = partition
        if balance == "drop" and 0 < self.num_rows < readers:
            msg = (
                f"balance='drop' leaves every reader 0 rows: stage {self.stage} has {self.num_rows} rows "
                f"for world_size x num_workers = {readers} readers; use balance='pad'"
            )
            raise ConfigError(msg)
        self.balance = balance
        if precheck not in PRECHECKS:
            msg = f"unknown precheck {precheck!r}; valid: {choices(PRECHECKS)}"
            raise ConfigError(msg)
        self.precheck = precheck

        self._open: dict[int, _OpenShard] = {}
        self._lock = threading.Lock()
        self._file_schema: pa.Schema | None = None
        self._segments_cache: dict[tuple[int, int], list[Segment]] = {}
        self._cuts_cache: dict[int, list[int]] = {}
        self._tokens_cache: dict[int, np.ndarray] = {}
        self._assignment_cache: dict[int, list[list[int]]] = {}
        self._prechecked: set[int] = set()  # epochs whose shards the precheck has checked
        self._position = 0  # rows yielded in this epoch (row mode)
        self._token_pos: tuple[int, int] = (0, 0)  # (row, token offset) where the next sequence starts
        self._token_lap = 0  # token mode, balanced: passes over this reader's stream started before this one
        self._token_count: int | None = 0  # token batches yielded in this epoch (None: derive it)
        self._token_counts_cache: dict[tuple[int, int], list[int]] = {}
        self._mode = "rows"
        self._pending: dict[str, Any] | None = None  # state loaded, applied by the next iteration
        if partition == "tokens" and not self.has_token_counts():
            msg = (
                f"partition='tokens' cuts stage {self.stage} by its tokens column under the manifest's "
                "tokenizer, which this stage or tokenizer does not have; use partition='row'"
            )
            raise ConfigError(msg)

    # ---------------------------------------------------------------------------- properties

    @property
    def slot(self) -> int:
        """This reader's index among the ``world_size * num_workers`` readers."""
        return self.rank * self.num_workers + self.worker_id

    @property
    def num_readers(self) -> int:
        """``world_size * num_workers``: how many readers share the stage."""
        return self.world_size * self.num_workers

    @property
    def num_rows(self) -> int:
        """Rows of the whole stage (all readers)."""
        return sum(s.rows for s in self.shards)

    @property
    def num_tokens(self) -> int:
        """Tokens of the whole stage under the manifest's tokenizer (from the manifest)."""
        if "tokens" in self.stage_entry:
            return int(self.stage_entry["tokens"])
        return sum(s.tokens or 0 for s in self.shards)

    def __len__(self) -> int:
        """Rows this reader yields in the current epoch."""
        return self.reader_rows()

    def num_batches(self) -> int:
        """Batches this reader yields in the current epoch (row mode)."""
        n = len(self)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __repr__(self) -> str:
        return (
            f"ShardDataset({str(self.path)!r}, stage={self.stage}, rank={self.rank}, "
            f"world_size={self.world_size}, worker={self.worker_id}/{self.num_workers}, "
            f"seed={self.seed}, epoch={self.epoch}, partition={self.partition!r}, balance={self.balance!r})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (a resumed state for that same epoch is kept)."""
        epoch = _check_int("epoch", epoch, minimum=0)
        if self._pending is not None and self._pending["epoch"] == epoch:
            self.epoch = epoch
            return
        self._pending = None
        self.epoch = epoch
        self._position = 0
        self._token_pos = (0, 0)
        self._token_lap, self._token_count = 0, 0

    # ------------------------------------------------------------------------------- ordering

    def _schema_from_manifest(self, entry: Mapping[str, Any]) -> pa.Schema | None:
        fields = (entry.get("schema") or {}).get("fields")
        if not fields:
            return None
        try:
            from dataforge.schemas import type_from_name

            return pa.schema([pa.field(f["name"], type_from_name(f["type"])) for f in fields])
        except Exception:  # an unknown type name: learn the schema from the first shard instead
            return None

    def shard_order(self, epoch: int | None = None) -> list[int]:
        """Stage shard indices in this epoch's order."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.shards)
        if not self.shuffle:
            return list(range(n))
        return [int(i) for i in _rng(self.seed, epoch, self.stage, 0).permutation(n)]

    def _blocks(self, shard: int, epoch: int) -> list[tuple[int, int]]:
        """(block index, rows) of a shard in this epoch's block order."""
        rows = self.shards[shard].rows
        b = self.shuffle_block_rows
        nblocks = -(-rows // b)
        order = (
            _rng(self.seed, epoch, self.stage, 1, shard).permutation(nblocks)
            if self.shuffle
            else range(nblocks)
        )
        return [(int(k), min(b, rows - int(k) * b)) for k in order]

    def _block_rows(self, shard: int, block: int, epoch: int) -> np.ndarray:
        """Rows of the shard (0-based within it) of block ``block`` in permuted order."""
        b = self.shuffle_block_rows
        start = block * b
        n = min(b, self.shards[shard].rows - start)
        if not self.shuffle:
            return np.arange(start, start + n, dtype=np.int64)
        perm = _rng(self.seed, epoch, self.stage, 2, shard, block).permutation(n)
        return perm.astype(np.int64) + start

    def assignment(self, epoch: int | None = None) -> list[list[int]]:
        """Shard split: the shards each reader is dealt in this epoch, before balancing (empty
        lists for the row split)."""
        epoch = self.epoch if epoch is None else epoch
        cached = self._assignment_cache.get(epoch)
        if cached is not None:
            return cached
        readers = self.num_readers
        out: list[list[int]] = [[] for _ in range(readers)]
        if self.partition == "shard":
            heap = [(0, g) for g in range(readers)]  # (rows so far, slot): least loaded, then lowest slot
            for s in self.shard_order(epoch):
                load, g = heapq.heappop(heap)
                out[g].append(s)
                heapq.heappush(heap, (load + self.shards[s].rows, g))
        if len(self._assignment_cache) > 8:
            self._assignment_cache.clear()
        self._assignment_cache[epoch] = out
        return out

    def _global_segments(self, epoch: int, lo: int, hi: int) -> list[Segment]:
        """Positions ``[lo, hi)`` of the epoch's global order (every shard's permuted blocks, in
        shard order) as segments."""
        segs: list[Segment] = []
        pos = 0
        if lo >= hi:
            return segs
        for s in self.shard_order(epoch):
            n_shard = self.shards[s].rows
            if pos + n_shard <= lo:  # the whole shard is before the range: skip its blocks
                pos += n_shard
                continue
            for k, n in self._blocks(s, epoch):
                a, e = max(lo, pos), min(hi, pos + n)
                if a < e:
                    segs.append(Segment(s, k, a - pos, e - pos))
                pos += n
                if pos >= hi:
                    return segs
        return segs

    def _home_segments(self, epoch: int, slot: int) -> list[Segment]:
        """A reader's sequence before balancing: its dealt shards (shard split) or its range of
        the global order (row split)."""
        if self.partition == "shard":
            return [
                Segment(s, k, 0, n)
                for s in self.assignment(epoch)[slot]
                for k, n in self._blocks(s, epoch)
                if n > 0
            ]
        if self.partition == "tokens":
            cuts = self._token_cuts(epoch)
            return self._global_segments(epoch, cuts[slot], cuts[slot + 1])
        total, readers = self.num_rows, self.num_readers
        return self._global_segments(epoch, slot * total // readers, (slot + 1) * total // readers)

    def _token_cuts(self, epoch: int) -> list[int]:
        """``partition="tokens"``: positions ``[0, c1, ..., N]`` of the epoch's global order where
        reader ``g`` starts: the first position where the tokens before it reach ``g * T / R``.
        Each shard's tokens column is read once for the blocks' sums and again only for the blocks
        holding a cut."""
        cached = self._cuts_cache.get(epoch)
        if cached is not None:
            return cached
        blocks: list[tuple[int, int, int, int]] = []  # (shard, block, first position, tokens)
        pos = 0
        for s in self.shard_order(epoch):
            for k, n in self._blocks(s, epoch):
                blocks.append((s, k, pos, int(self._block_tokens(s, k, epoch).sum())))
                pos += n
        total = sum(b[3] for b in blocks)
        readers = self.num_readers
        cuts = [0]
        before = 0  # tokens before the current block
        i = 0
        for g in range(1, readers):
            goal = g * total // readers
            while i < len(blocks) and before + blocks[i][3] < goal:
                before += blocks[i][3]
                i += 1
            if i == len(blocks):
                cuts.append(pos)
                continue
            s, k, first, _ = blocks[i]
            inside = np.cumsum(self._block_tokens(s, k, epoch))
            # the first position whose tokens before it reach the goal
            j = int(np.searchsorted(inside, goal - before, side="left")) + 1 if goal > before else 0
            cuts.append(max(cuts[-1], first + min(j, inside.shape[0])))
        cuts.append(pos)
        if pos >= readers:
            # a row longer than T / R would leave readers without rows (and without sequences to
            # give): every reader keeps at least one row, the cuts moved as little as that takes
            for g in range(1, readers):
                cuts[g] = min(max(cuts[g], cuts[g - 1] + 1), pos - (readers - g))
        if len(self._cuts_cache) > 8:
            self._cuts_cache.clear()
        self._cuts_cache[epoch] = cuts
        return cuts

    def _block_tokens(self, shard: int, block: int, epoch: int) -> np.ndarray:
        """Tokens of the rows of block ``block`` of a shard, in the block's permuted order."""
        return self._shard_tokens(shard)[self._block_rows(shard, block, epoch)]

    def _shard_tokens(self, shard: int) -> np.ndarray:
        """The ``tokens`` column of a shard (int64; nulls as 0), the last few kept."""
        cached = self._tokens_cache.get(shard)
        if cached is not None:
            return cached
        opened = self._open_shard(shard)
        field = opened.reader.schema.get_field_index("tokens")
        if field < 0:
            msg = f"{self.shards[shard].path}: no tokens column (stage {self.stage} lists one)"
            raise DataError(msg)
        reader = ipc.open_file(opened.source, options=ipc.IpcReadOptions(included_fields=[field]))
        tokens = pc.fill_null(reader.read_all().column(0), 0).to_numpy().astype(np.int64)
        if len(self._tokens_cache) >= 4:
            self._tokens_cache.pop(next(iter(self._tokens_cache)))
        self._tokens_cache[shard] = tokens
        return tokens

    def has_token_counts(self) -> bool:
        """True when the stage has a ``tokens`` column made by this dataset's tokenizer (token
        counts come from it; ``partition="tokens"`` needs it)."""
        names = self.schema.names if self.schema is not None else self._open_shard(0).reader.schema.names
        return "tokens" in names and self._manifest_tokenizer_matches()

    def _home_rows(self, epoch: int) -> list[int]:
        """Rows of every reader's sequence before balancing."""
        if self.partition == "shard":
            return [sum(self.shards[s].rows for s in a) for a in self.assignment(epoch)]
        total, readers = self.num_rows, self.num_readers
        return [(g + 1) * total // readers - g * total // readers for g in range(readers)]

    @staticmethod
    def _cut(segs: list[Segment], lo: int, hi: int) -> list[Segment]:
        """Positions ``[lo, hi)`` of the concatenation of ``segs``."""
        out: list[Segment] = []
        pos = 0
        for seg in segs:
            a, e = max(lo, pos), min(hi, pos + seg.rows)
            if a < e:
                out.append(Segment(seg.shard, seg.block, seg.start + a - pos, seg.start + e - pos))
            pos += seg.rows
            if pos >= hi:
                break
        return out

    def quota(self) -> int | None:
        """Rows every reader yields per epoch: ``ceil(N / R)`` with ``balance="pad"``,
        ``floor(N / R)`` with ``"drop"``; None with ``"none"`` (readers differ)."""
        total, readers = self.num_rows, self.num_readers
        if self.partition == "tokens":  # readers get equal tokens; token batches are balanced instead
            return None
        if self.balance == "pad":
            return -(-total // readers)
        if self.balance == "drop":
            return total // readers
        return None

    def segments(self, epoch: int | None = None, slot: int | None = None) -> list[Segment]:
        """This reader's sequence of segments in this epoch (a pure function of the config)."""
        epoch = self.epoch if epoch is None else epoch
        slot = self.slot if slot is None else slot
        key = (epoch, slot)
        cached = self._segments_cache.get(key)
        if cached is not None:
            return cached
        segs = self._home_segments(epoch, slot)
        quota = self.quota()
        if quota is not None:
            segs = self._balanced(epoch, slot, segs, quota)
        if len(self._segments_cache) > 64:
            self._segments_cache.clear()
        self._segments_cache[key] = segs
        return segs

    def _balanced(self, epoch: int, slot: int, home: list[Segment], quota: int) -> list[Segment]:
        """``home`` cut or filled to exactly ``quota`` rows (see "Balance" in the module doc).

        Readers above the quota give the tail of their sequence to a pool (in slot order);
        readers below it take, in slot order, from the pool, then from the padding: the epoch's
        global order from its start (cycled). Pool rows nobody takes are dropped.
        """
        sizes = self._home_rows(epoch)
        own = min(sizes[slot], quota)
        segs = self._cut(home, 0, own) if own < sizes[slot] else list(home)
        need = quota - own
        if not need:
            return segs
        lo = sum(max(0, quota - n) for n in sizes[:slot])  # what the readers before take
        hi = lo + need
        pool = 0
        for g, n in enumerate(sizes):
            over = n - quota
            if over <= 0:
                continue
            a, e = max(lo, pool), min(hi, pool + over)
            if a < e:
                donor = self._home_segments(epoch, g)
                segs += self._cut(donor, quota + a - pool, quota + e - pool)
            pool += over
            if pool >= hi:
                return segs
        total = self.num_rows
        start, stop = max(lo, pool) - pool, hi - pool  # padding positions, cycled over the stage
        while start < stop and total:
            a = start % total
            e = min(total, a + stop - start)
            segs += self._global_segments(epoch, a, e)
            start += e - a
        return segs

    # -------------------------------------------------------------------------------- reading

    def _needed_columns(self, extra: Sequence[str] = ()) -> list[str] | None:
        if self.columns is None:
            return None
        cols = list(self.columns)
        cols += [c for c in extra if c not in cols]
        return cols

    def _open_shard(self, index: int) -> _OpenShard:
        opened = self._open.get(index)
        if opened is not None:
            return opened
        entry = self.shards[index]
        file = self.path / entry.path
        if not file.is_file():
            msg = f"{entry.path}: shard listed in {self.path}/manifest.json is missing"
            raise DataError(msg)
        if self.verify:
            self._verify(entry, file)
        try:
            source = pa.memory_map(str(file))
            reader = ipc.open_file(source)
            schema = reader.schema
            small = self._small_column(schema)
            probe = ipc.open_file(source, options=ipc.IpcReadOptions(included_fields=[small]))
            lengths = [probe.get_batch(i).num_rows for i in range(probe.num_record_batches)]
        except (pa.ArrowException, OSError, ValueError) as exc:
            msg = f"{entry.path}: cannot read Arrow shard (corrupt or truncated?): {exc}"
            raise DataError(msg) from None
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if int(offsets[-1]) != entry.rows:
            msg = f"{entry.path}: shard has {int(offsets[-1])} rows, manifest says {entry.rows}"
            raise DataError(msg)
        if self._file_schema is None:
            self._file_schema = schema
        if len(self._open) >= 4:  # keep a few maps open, bounded
            self._open.pop(next(iter(self._open)))
        opened = _OpenShard(source, reader, offsets)
        self._open[index] = opened
        return opened

    @staticmethod
    def _small_column(schema: pa.Schema) -> int:
        if "tokens" in schema.names:
            return schema.get_field_index("tokens")
        for i, f in enumerate(schema):
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type):
                return i
        return 0

    def _file_problem(self, entry: ShardEntry, *, digest: bool) -> str | None:
        """Why the shard's file does not match its manifest entry (missing, size, and with
        ``digest`` its sha256; a digest is computed once per process and file version), else None."""
        file = self.path / entry.path
        try:
            st = file.stat()
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            return f"{entry.path}: shard listed in {self.path}/manifest.json is missing"
        if entry.bytes >= 0 and st.st_size != entry.bytes:
            return (
                f"{entry.path}: shard is {st.st_size} bytes, manifest says {entry.bytes} "
                "(truncated or replaced)"
            )
        if not digest:
            return None
        key = (str(file.resolve()), st.st_size, st.st_mtime_ns, entry.sha256)
        if key in _VERIFIED:
            return None
        actual = sha256_file(file)
        if actual != entry.sha256:
            return f"{entry.path}: sha256 mismatch: file has {actual}, manifest says {entry.sha256}"
        _VERIFIED.add(key)
        return None

    def _verify(self, entry: ShardEntry, file: Path) -> None:
        problem = self._file_problem(entry, digest=True)
        if problem is not None:
            raise DataError(problem)

    def check_files(self, level: str = "size", *, shards: Iterable[int] | None = None) -> None:
        """Check shard files against the manifest now, before reading them.

        Args:
            level: ``size`` (each file exists and has the manifest's byte size: one ``stat`` per
                shard) or ``sha256`` (also its checksum: reads each file whole, at most once per
                process and file version).
            shards: stage shard indices to check (default: every shard of the stage).

        Raises:
            DataError: naming every shard that is missing or does not match.
        """
        if level not in ("size", "sha256"):
            msg = f"unknown check level {level!r}; valid: sha256, size"
            raise ConfigError(msg)
        indices = range(len(self.shards)) if shards is None else sorted(set(shards))
        problems = [p for i in indices if (p := self._file_problem(self.shards[i], digest=level == "sha256"))]
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            msg = f"stage {self.stage}: {len(problems)} shard(s) do not match the manifest: {shown}"
            raise DataError(msg)

    def _precheck_epoch(self, epoch: int, position: int) -> None:
        """``precheck``: before the first rows of an epoch, check the shards this reader reads
        from ``position`` to the end of the epoch (once per epoch)."""
        if self.precheck == "none" or epoch in self._prechecked:
            return
        needed: set[int] = set()
        pos = 0
        for seg in self.segments(epoch):
            if pos + seg.rows > position:
                needed.add(seg.shard)
            pos += seg.rows
        self.check_files(self.precheck, shards=needed)
        if len(self._prechecked) > 64:
            self._prechecked.clear()
        self._prechecked.add(epoch)

    def _decode_segment(
        self, seg: Segment, epoch: int, columns: list[str] | None
    ) -> tuple[list[pa.RecordBatch], int, np.ndarray, pa.Schema]:
        """Decode the record batches a segment needs: (batches, first row of batches[0], rows, schema)."""
        entry = self.shards[seg.shard]
        with self._lock:
            opened = self._open_shard(seg.shard)
        rows = self._block_rows(seg.shard, seg.block, epoch)[seg.start : seg.stop]
        schema = opened.reader.schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        if len(rows) == 0:
            return [], 0, rows, schema
        lo, hi = int(rows.min()), int(rows.max()) + 1
        first = int(np.searchsorted(opened.offsets, lo, side="right")) - 1
        last = int(np.searchsorted(opened.offsets, hi - 1, side="right")) - 1
        try:
            batches = [opened.reader.get_batch(i) for i in range(first, last + 1)]
            for b in batches:
                b.validate()  # buffer sizes vs lengths: cheap, catches most corruption
        except (pa.ArrowException, OSError) as exc:
            msg = f"{entry.path}: cannot read Arrow shard (corrupt or truncated?): {exc}"
            raise DataError(msg) from None
        if columns is not None:
            batches = [b.select(columns) for b in batches]
        return batches, int(opened.offsets[first]), rows, schema

    def _assemble(self, decoded: tuple[list[pa.RecordBatch], int, np.ndarray, pa.Schema]) -> pa.RecordBatch:
        """The segment's rows in epoch order: ``take`` when shuffled, a zero-copy slice otherwise."""
        batches, base, rows, schema = decoded
        if not batches:
            return pa.RecordBatch.from_pylist([], schema=schema)
        if not self.shuffle:
            lo = int(rows[0])
            table = pa.Table.from_batches(batches).slice(lo - base, len(rows))
            return _to_batch(table, schema)
        local = arrow_indices(rows - base)
        if len(batches) == 1:
            return batches[0].take(local)
        return _to_batch(pa.Table.from_batches(batches).take(local), schema)

    def _read_segment(self, seg: Segment, epoch: int, columns: list[str] | None) -> pa.RecordBatch:
        """Rows of one segment, in their epoch order."""
        return self._assemble(self._decode_segment(seg, epoch, columns))

    def _output_schema(self, columns: list[str] | None) -> pa.Schema:
        """Schema of the rows (from the first shard this reader opens)."""
        if self._file_schema is None:
            segs = self.segments()
            with self._lock:
                self._open_shard(segs[0].shard if segs else 0)
        schema = self._file_schema
        assert schema is not None
        if columns is None:
            return schema
        missing = [c for c in columns if c not in schema.names]
        if missing:
            msg = f"unknown column(s) {missing} for stage {self.stage}; valid: {choices(schema.names)}"
            raise ConfigError(msg)
        return pa.schema([schema.field(c) for c in columns])

    def iter_rows_from(
        self, position: int, *, epoch: int | None = None, columns: list[str] | None = None
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Pieces of this reader's sequence from ``position`` on: ``(position of piece, rows)``.

        A piece is (part of) one block; the positions before ``position`` are skipped by arithmetic
        on the segment list, without reading them.
        """
        epoch = self.epoch if epoch is None else epoch
        self._precheck_epoch(epoch, position)
        segs = self.segments(epoch)
        starts = [0]
        for seg in segs:
            starts.append(starts[-1] + seg.rows)
        if position >= starts[-1]:
            return
        i = bisect.bisect_right(starts, position) - 1
        parts = [Segment(segs[i].shard, segs[i].block, segs[i].start + position - starts[i], segs[i].stop)]
        parts += segs[i + 1 :]
        positions = [position, *starts[i + 1 : -1]]
        if not self.prefetch or len(parts) == 1:
            for pos, part in zip(positions, parts):
                yield pos, self._read_segment(part, epoch, columns)
            return
        # decode block k + 1 in a thread while block k is assembled and consumed (pyarrow
        # releases the GIL in both): at most two blocks are in memory.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataforge-prefetch") as pool:
            future = pool.submit(self._decode_segment, parts[0], epoch, columns)
            for j, (pos, _part) in enumerate(zip(positions, parts)):
                decoded = future.result()
                if j + 1 < len(parts):
                    future = pool.submit(self._decode_segment, parts[j + 1], epoch, columns)
                yield pos, self._assemble(decoded)

    def reader_rows(self, epoch: int | None = None) -> int:
        """Rows this reader yields in ``epoch`` (default: the current one)."""
        return sum(seg.rows for seg in self.segments(epoch))

    def read_range(
        self, start: int, stop: int, *, epoch: int | None = None, columns: list[str] | None = None
    ) -> pa.RecordBatch:
        """Positions ``[start, stop)`` of this reader's sequence as one RecordBatch."""
        pieces: list[pa.RecordBatch] = []
        need = stop - start
        for _pos, piece in self.iter_rows_from(start, epoch=epoch, columns=columns):
            if piece.num_rows >= need:
                pieces.append(piece.slice(0, need))
                need = 0
                break
            pieces.append(piece)
            need -= piece.num_rows
        return _concat(pieces, lambda: self._output_schema(columns))

    def _start_position(self, mode: str) -> None:
        pending = self._pending
        self._pending = None
        if pending is None:
            self._position = 0
            self._token_pos = (0, 0)
            self._token_lap, self._token_count = 0, 0
            return
        if pending.get("mode", "rows") != mode:
            msg = f"state was saved in {pending.get('mode')!r} mode, iterating in {mode!r} mode"
            raise ConfigError(msg)
        self._position = int(pending["rows_yielded"])
        self._token_pos = (int(pending.get("token_row", 0)), int(pending.get("token_offset", 0)))
        self._token_lap = int(pending.get("token_lap", 0))
        count = pending.get("token_batches")  # absent in states saved before balanced token mode
        self._token_count = None if count is None else int(count)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """Arrow RecordBatches of ``batch_size`` rows (the last one may be smaller)."""
        return self.iter_batches(format="arrow")

    def iter_batches(self, *, format: str = "arrow") -> Iterator[Any]:
        """Batches of ``batch_size`` rows as ``arrow`` RecordBatches, ``numpy`` or ``python`` dicts.

        Resumes from a loaded state; :meth:`state_dict` after each batch counts that batch.
        """
        if format not in BATCH_FORMATS:
            msg = f"unknown batch format {format!r}; valid: {choices(BATCH_FORMATS)}"
            raise ConfigError(msg)
        if self.partition == "tokens" and self.balance != "none" and self.num_readers > 1:
            msg = (
                "partition='tokens' gives readers equal tokens, not equal rows: row batches would "
                "differ between readers (DDP ranks out of step); use it for iter_token_batches, or "
                "partition='row' for row batches"
            )
            raise ConfigError(msg)
        self._start_position("rows")
        self._mode = "rows"
        return self._row_batches(format)

    def _row_batches(self, format: str) -> Iterator[Any]:
        columns = self._needed_columns()
        bs = self.batch_size
        pending: list[pa.RecordBatch] = []
        have = 0
        for _pos, piece in self.iter_rows_from(self._position, columns=columns):
            off = 0
            while off < piece.num_rows:
                take = min(bs - have, piece.num_rows - off)
                pending.append(piece.slice(off, take))
                have += take
                off += take
                if have == bs:
                    batch = _concat(pending, lambda: self._output_schema(columns))
                    pending, have = [], 0
                    self._position += batch.num_rows
                    yield convert_batch(batch, format)
        if have and not self.drop_last:
            batch = _concat(pending, lambda: self._output_schema(columns))
            self._position += batch.num_rows
            yield convert_batch(batch, format)
        elif have:
            self._position += have

    # ------------------------------------------------------------------------------ token mode

    def _token_columns(self) -> list[str] | None:
        schema = self._output_schema(None)
        cols = [c for c in _TEXT_COLUMNS if c in schema.names]
        if not cols:
            msg = f"stage {self.stage} has no text columns ({schema.names}); cannot make token batches"
            raise DataError(msg)
        return cols

    def encode_rows(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the training text of every row, concatenated, and each row's length."""
        tok = self.tokenizer
        if isinstance(tok, ByteTokenizer):
            if "text" in batch.schema.names:  # documents: the UTF-8 bytes as they are, no Python strings
                arr = pc.fill_null(batch.column("text").cast(pa.large_string()), "")
                if arr.offset or arr.null_count:
                    arr = pa.concat_arrays([arr])
            else:
                arr = pa.array(training_text(batch), type=pa.large_string())
            lens = pc.fill_null(pc.binary_length(arr), 0).to_numpy().astype(np.int64)
            if tok.add_eos:  # append 0xFF (never a UTF-8 byte) to every row in C++, then map it to EOS
                sep = pa.scalar(b"\xff", pa.large_binary())
                arr = pc.binary_join_element_wise(
                    arr.cast(pa.large_binary()), pa.scalar(b"", pa.large_binary()), sep
                )
                lens = lens + 1
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
            data = arr.buffers()[2]
            raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
            raw = raw[offsets[0] : offsets[-1]]
            toks = raw.astype(TOKEN_DTYPE)
            if tok.add_eos:
                toks[raw == 0xFF] = tok.eos_id
            return toks, lens
        encoded = [tok.encode(t) for t in training_text(batch)]
        lens = np.array([len(e) for e in encoded], dtype=np.int64)
        flat = np.fromiter((i for e in encoded for i in e), dtype=TOKEN_DTYPE, count=int(lens.sum()))
        return flat, lens

    def row_token_counts(self, *, epoch: int | None = None) -> np.ndarray:
        """Tokens of each row of this reader's sequence, in order (the ``tokens`` column when the
        tokenizer is the manifest's, else by tokenizing)."""
        use_column = self._manifest_tokenizer_matches() and "tokens" in self._output_schema(None).names
        out: list[np.ndarray] = []
        cols = ["tokens"] if use_column else self._token_columns()
        for _pos, piece in self.iter_rows_from(0, epoch=epoch, columns=cols):
            if use_column:
                out.append(piece.column("tokens").to_numpy(zero_copy_only=False).astype(np.int64))
            else:
                out.append(self.encode_rows(piece)[1])
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _manifest_tokenizer_matches(self) -> bool:
        spec = self.manifest.get("tokenizer")
        if not spec:
            return isinstance(self.tokenizer, ByteTokenizer) and self.tokenizer.add_eos
        try:
            return tokenizer_spec(self.tokenizer) == {k: spec.get(k) for k in tokenizer_spec(self.tokenizer)}
        except Exception:
            return False

    @staticmethod
    def sequences_for(total_tokens: int, seq_len: int, drop_last: bool) -> int:
        """Sequences of ``seq_len + 1`` tokens (stride ``seq_len``) a stream of tokens makes."""
        if total_tokens <= 1:
            return 0
        full = (total_tokens - 1) // seq_len
        rest = total_tokens - full * seq_len  # tokens left, starting at the last sequence's end
        return full + (1 if rest > 1 and not drop_last else 0)

    def _batches_for(self, total_tokens: int, seq_len: int) -> int:
        """Token batches a stream of ``total_tokens`` tokens makes (unbalanced)."""
        if self.drop_last:  # only full batches of full sequences
            return ((total_tokens - 1) // seq_len if total_tokens > 1 else 0) // self.batch_size
        return -(-self.sequences_for(total_tokens, seq_len, False) // self.batch_size)

    def _slot_token_totals(self, epoch: int) -> list[int]:
        """Tokens of every reader slot's rows in ``epoch``, from the shards' ``tokens`` column: each
        shard's column is read once and summed over the segments of every slot that lie in it."""
        by_shard: dict[int, list[tuple[int, Segment]]] = {}
        for g in range(self.num_readers):
            for seg in self.segments(epoch, g):
                by_shard.setdefault(seg.shard, []).append((g, seg))
        totals = [0] * self.num_readers
        for shard in sorted(by_shard):
            blocks: dict[int, np.ndarray] = {}
            for g, seg in by_shard[shard]:
                if seg.block not in blocks:
                    blocks[seg.block] = self._block_tokens(shard, seg.block, epoch)
                totals[g] += int(blocks[seg.block][seg.start : seg.stop].sum())
        return totals

    def token_batch_counts(self, seq_len: int, *, epoch: int | None = None) -> list[int]:
        """Token batches the rows of every reader slot make in ``epoch`` on their own (before the
        balance of :meth:`num_token_batches`), by slot. From the ``tokens`` column when the
        tokenizer is the manifest's; otherwise every row of the epoch is tokenized (once per
        process and epoch)."""
        seq_len = _check_int("seq_len", seq_len, minimum=1)
        epoch = self.epoch if epoch is None else epoch
        key = (epoch, seq_len)
        cached = self._token_counts_cache.get(key)
        if cached is not None:
            return cached
        if self.has_token_counts():
            totals = self._slot_token_totals(epoch)
        else:
            log.warning(
                "stage %d: tokenizing every reader's rows to balance token batches over %d readers "
                "(the tokenizer is not the manifest's, so its tokens column cannot be used)",
                self.stage,
                self.num_readers,
            )
            totals = [
                int(self._for_slot(g).row_token_counts(epoch=epoch).sum()) for g in range(self.num_readers)
            ]
        counts = [self._batches_for(t, seq_len) for t in totals]
        if len(self._token_counts_cache) > 8:
            self._token_counts_cache.clear()
        self._token_counts_cache[key] = counts
        return counts

    def _for_slot(self, slot: int) -> ShardDataset:
        """This dataset as reader ``slot`` (shares its open shards and caches)."""
        other = copy.copy(self)
        other.rank, other.worker_id = divmod(slot, self.num_workers)
        other._prechecked = set()  # its shards are not this reader's: check them for it alone
        return other

    def num_token_batches(self, seq_len: int, *, epoch: int | None = None) -> int:
        """Batches :meth:`iter_token_batches` gives this reader in an epoch.

        With ``balance="pad"`` or ``"drop"`` every reader gives the same number, so every DDP rank
        takes the same number of steps: the most (pad) or the fewest (drop) batches any reader's
        own rows make (:meth:`token_batch_counts`). With ``"none"``: what this reader's rows make."""
        if self.balance == "none":
            return self._batches_for(int(self.row_token_counts(epoch=epoch).sum()), seq_len)
        counts = self.token_batch_counts(seq_len, epoch=epoch)
        return max(counts) if self.balance == "pad" else min(counts)

    def token_state_for(self, batches: int, seq_len: int) -> dict[str, Any]:
        """The state of this reader after it has yielded ``batches`` token batches of the current
        epoch (used to resume DataLoader workers from a count made in the main process)."""
        own = (
            self.num_token_batches(seq_len)
            if self.balance == "none"
            else self.token_batch_counts(seq_len)[self.slot]
        )
        if own == 0 or (self.balance == "none" and batches >= own):
            return self.state_at(token_pos=(len(self), 0), token_lap=0, token_batches=batches)
        lap, j = divmod(batches, own)  # balanced: pass ``lap`` over the reader's stream, j batches in
        pos = self.token_state_after(j * self.batch_size, seq_len)
        return self.state_at(token_pos=pos, token_lap=lap, token_batches=batches)

    def token_state_after(self, sequences: int, seq_len: int, *, epoch: int | None = None) -> tuple[int, int]:
        """(row, token offset) where packed sequence number ``sequences`` starts (token mode)."""
        counts = self.row_token_counts(epoch=epoch)
        target = sequences * seq_len
        cum = np.cumsum(counts)
        row = int(np.searchsorted(cum, target, side="right"))
        if row >= len(counts):
            return len(counts), 0
        before = int(cum[row - 1]) if row else 0
        return row, target - before

    def iter_token_batches(self, seq_len: int, *, format: str = "numpy") -> Iterator[np.ndarray]:
        """Pack the training text of this reader's rows into ``[batch_size, seq_len + 1]`` arrays.

        The rows' token streams (tokenizer ``encode``, EOS after each row with the default) are
        concatenated in reader order and cut into windows of ``seq_len + 1`` tokens with stride
        ``seq_len``: row ``i`` of the packed stream is ``stream[i*T : i*T + T + 1]``, so inputs are
        ``x[:, :-1]``, targets ``x[:, 1:]`` and every token after the first is a target exactly once.
        The last batch is padded with ``tokenizer.pad_id`` to the full shape (use it as the loss's
        ignore index); with ``drop_last`` the incomplete tail is dropped instead. Returns int64
        numpy arrays (``format="numpy"``) or lists (``"python"``).
        """
        seq_len = _check_int("seq_len", seq_len, minimum=1)
        if format not in ("numpy", "python", "arrow"):
            msg = f"unknown token batch format {format!r}; valid: arrow, numpy, python"
            raise ConfigError(msg)
        self._start_position("tokens")
        self._mode = "tokens"
        return self._token_batches(seq_len, format)

    def _token_batches(self, seq_len: int, format: str) -> Iterator[Any]:
        """The epoch's token batches: passes over this reader's stream (one; balanced with
        ``pad``, more until the target count, each from the stream's start; with ``drop`` cut at
        the target count)."""
        target = None if self.balance == "none" else self.num_token_batches(seq_len)
        if target is not None:
            own = self.token_batch_counts(seq_len)[self.slot]
            if target > own == 0:
                msg = (
                    f"stage {self.stage}: reader {self.slot} of {self.num_readers} has no complete "
                    f"sequence of {seq_len + 1} tokens to give the {target} batch(es) the other readers "
                    "give; use fewer readers or balance='none'"
                )
                raise DataError(msg)
        if self._token_count is None:  # a state without the count: from the position
            self._token_count = self._token_count_at(seq_len)
        while target is None or self._token_count < target:
            for batch in self._token_pass(seq_len, format):
                if target is not None and self._token_count >= target:
                    return  # drop: the fewest any reader gives
                self._token_count += 1
                yield batch
            if target is None or self._token_count >= target:
                return
            self._token_lap += 1  # pad: this reader's stream again, from its start
            self._token_pos = (0, 0)

    def _token_count_at(self, seq_len: int) -> int:
        """Token batches yielded in the epoch before ``(lap, row, offset)`` (states saved without
        ``token_batches``)."""
        row, off = self._token_pos
        counts = self.row_token_counts()
        own = self._batches_for(int(counts.sum()), seq_len)
        if row >= len(self):
            return (self._token_lap + 1) * own
        before = int(counts[:row].sum()) + off
        return self._token_lap * own + before // (seq_len * self.batch_size)

    def _token_pass(self, seq_len: int, format: str) -> Iterator[Any]:
        """One pass over this reader's token stream from ``self._token_pos`` to its end."""
        bs, T = self.batch_size, seq_len
        need = bs * T + 1
        cols = self._token_columns()
        row0, off0 = self._token_pos
        # the buffer: tokens from (buf_row, buf_off) on; lens[i] = tokens of buffered row i left
        buf = np.zeros(0, dtype=TOKEN_DTYPE)
        lens = np.zeros(0, dtype=np.int64)
        buf_row, buf_off = row0, off0
        window = np.arange(bs)[:, None] * T + np.arange(T + 1)[None, :]

        def windows(tokens: np.ndarray) -> np.ndarray:  # bs rows of T + 1 tokens, stride T
            view = np.lib.stride_tricks.as_strided(
                tokens, shape=(bs, T + 1), strides=(T * tokens.strides[0], tokens.strides[0]), writeable=False
            )
            return view.astype(np.int64)

        def out(arr: np.ndarray) -> Any:
            if format == "python":
                return arr.tolist()
            if format == "arrow":
                return pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), T + 1)
            return arr

        first = True
        for _pos, piece in self.iter_rows_from(row0, columns=cols):
            toks, plens = self.encode_rows(piece)
            if first and off0:
                toks = toks[off0:]
                plens = plens.copy()
                plens[0] -= off0
            first = False
            buf = np.concatenate([buf, toks]) if len(buf) else toks
            lens = np.concatenate([lens, plens]) if len(lens) else plens
            while len(buf) >= need:
                batch = windows(buf[:need])
                # advance the start by bs*T tokens: find the row holding the new start
                adv = bs * T
                cum = np.cumsum(lens)
                k = int(np.searchsorted(cum, adv, side="right"))
                done_before = int(cum[k - 1]) if k else 0
                new_off = adv - done_before
                buf_off = (buf_off + new_off) if k == 0 else new_off
                buf_row += k
                lens = lens[k:].copy()
                lens[0] -= new_off
                buf = buf[adv:]
                self._token_pos = (buf_row, buf_off)
                yield out(batch)
        # tail: fewer than need tokens left
        total_rows = len(self)
        if len(buf) > 1 and not self.drop_last:
            pad = self.tokenizer.pad_id
            full = np.full(bs * T + 1, pad, dtype=np.int64)
            full[: len(buf)] = buf
            batch = full[window]
            nseq = self.sequences_for(len(buf), T, False)
            batch[nseq:] = pad
            self._token_pos = (total_rows, 0)
            yield out(batch)
        self._token_pos = (total_rows, 0)

    # ----------------------------------------------------------------------------- checkpoints

    def _config(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
            "num_workers": self.num_workers,
            "worker_id": self.worker_id,
            "shuffle": self.shuffle,
            "shuffle_block_rows": self.shuffle_block_rows,
            "balance": self.balance,  # before partition: it decides what `auto` resolves to
            "partition": self.partition,
            "batch_size": self.batch_size,
            "data": self.data_fingerprint(),
        }

    def data_fingerprint(self) -> str:
        """sha256 over the stage's shard paths, rows and digests (what the order depends on)."""
        h = hashlib.sha256()
        for s in self.shards:
            h.update(json.dumps([s.path, s.rows, s.sha256]).encode())
        return h.hexdigest()

    def state_dict(self) -> dict[str, Any]:
        """Where this reader is: epoch, rows yielded (token mode: next row and token offset) and
        the configuration the order depends on (checked by :meth:`load_state_dict`)."""
        if self._pending is not None:
            return dict(self._pending)
        state = {"version": STATE_VERSION, "epoch": self.epoch, "mode": self._mode, **self._config()}
        state["rows_yielded"] = self._position if self._mode == "rows" else self._token_pos[0]
        if self._mode == "tokens":
            state["token_row"], state["token_offset"] = self._token_pos
            state["token_lap"] = self._token_lap
            if self._token_count is not None:
                state["token_batches"] = self._token_count
        return state

    def state_at(
        self,
        *,
        rows_yielded: int | None = None,
        token_pos: tuple[int, int] | None = None,
        token_lap: int = 0,
        token_batches: int | None = None,
    ) -> dict[str, Any]:
        """The state this reader would report after ``rows_yielded`` rows (row mode) or with the
        next packed sequence starting at ``token_pos = (row, offset)`` of pass ``token_lap`` over
        its stream, ``token_batches`` batches into the epoch (token mode), in the current epoch.
        Used to resume DataLoader workers from a count made in the main process."""
        state = {"version": STATE_VERSION, "epoch": self.epoch, **self._config()}
        if token_pos is None:
            state.update(mode="rows", rows_yielded=int(rows_yielded or 0))
        else:
            row, off = token_pos
            state.update(
                mode="tokens",
                rows_yielded=int(row),
                token_row=int(row),
                token_offset=int(off),
                token_lap=int(token_lap),
            )
            if token_batches is not None:
                state["token_batches"] = int(token_batches)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields exactly what an uninterrupted run
        would have yielded after it. ConfigError if it was saved with a different configuration."""
        if not isinstance(state, Mapping) or "rows_yielded" not in state:
            msg = (
                f"not a ShardDataset state (keys: {sorted(state) if isinstance(state, Mapping) else state!r})"
            )
            raise ConfigError(msg)
        if state.get("version") != STATE_VERSION:
            msg = f"state version {state.get('version')!r} is not supported (valid: {STATE_VERSION})"
            raise ConfigError(msg)
        mine = self._config()
        for key, value in mine.items():
            # a state saved before `balance` existed was saved by readers that did not balance
            saved = state.get(key, "none" if key == "balance" else value)
            if saved != value:
                what = "shard list" if key == "data" else key
                hint = f" (pass balance={saved!r} to resume it)" if key == "balance" else ""
                msg = (
                    f"cannot resume: the state was saved with {what}={saved!r}, "
                    f"this dataset has {what}={value!r}{hint}"
                )
                raise ConfigError(msg)
        self.epoch = _check_int("epoch", state["epoch"], minimum=0)
        rows = _check_int("rows_yielded", state["rows_yielded"], minimum=0)
        if rows > len(self):
            msg = f"state says {rows} rows yielded, this reader has {len(self)} rows in epoch {self.epoch}"
            raise ConfigError(msg)
        self._pending = dict(state)
        self._mode = str(state.get("mode", "rows"))
        self._position = rows
        if self._mode == "tokens":
            self._token_pos = (int(state.get("token_row", rows)), int(state.get("token_offset", 0)))
            self._token_lap = int(state.get("token_lap", 0))
            count = state.get("token_batches")
            self._token_count = None if count is None else int(count)

    def close(self) -> None:
        """Release memory maps."""
        for opened in self._open.values():
            opened.source.close()
        self._open.clear()

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers (spawn)
        state = dict(self.__dict__)
        state["_open"] = {}
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# ------------------------------------------------------------------------------ CurriculumLoader


@dataclass(frozen=True)
class CurriculumBatch:
    """A batch and where it came from: ``stage`` and the schedule ``phase`` index."""

    stage: int
    phase: int
    data: Any

    @property
    def num_rows(self) -> int:
        """Rows in ``data`` (a RecordBatch, or a dict of columns)."""
        d = self.data
        if isinstance(d, pa.RecordBatch):
            return d.num_rows
        first = next(iter(d.values()), [])
        return len(first)


@dataclass(frozen=True)
class Phase:
    """One schedule entry: ``weights`` by stage, a budget of ``amount`` ``unit`` (rows|tokens)."""

    weights: dict[int, float]
    unit: str
    amount: int

    def to_dict(self) -> dict[str, Any]:
        return {"weights": {str(k): v for k, v in self.weights.items()}, self.unit: self.amount}


def parse_schedule(schedule: Sequence[Mapping[str, Any]], valid_stages: Sequence[int]) -> list[Phase]:
    """Check and normalize a schedule: ``{"stage": s, "rows"|"tokens": N}`` or
    ``{"stages": {s: weight, ...}, "rows"|"tokens": N}``."""
    if isinstance(schedule, Mapping) or not isinstance(schedule, Sequence) or not schedule:
        msg = f"schedule must be a non-empty list of phases, got {schedule!r}"
        raise ConfigError(msg)
    phases = []
    for i, item in enumerate(schedule):
        if not isinstance(item, Mapping):
            msg = f"schedule[{i}] must be a mapping, got {item!r}"
            raise ConfigError(msg)
        unknown = set(item) - {"stage", "stages", "rows", "tokens"}
        if unknown:
            msg = f"schedule[{i}]: unknown key(s) {sorted(unknown)}; valid: rows, stage, stages, tokens"
            raise ConfigError(msg)
        if ("stage" in item) == ("stages" in item):
            msg = f"schedule[{i}] needs exactly one of 'stage' or 'stages' (a weight per stage), got {dict(item)}"
            raise ConfigError(msg)
        units = [u for u in ("rows", "tokens") if u in item]
        if len(units) != 1:
            msg = f"schedule[{i}] needs exactly one budget, 'rows' or 'tokens', got {dict(item)}"
            raise ConfigError(msg)
        unit = units[0]
        amount = _check_int(f"schedule[{i}].{unit}", item[unit], minimum=1)
        if "stage" in item:
            raw = {item["stage"]: 1.0}
        else:
            raw = item["stages"]
            if not isinstance(raw, Mapping) or not raw:
                msg = f"schedule[{i}].stages must map stage -> weight, got {raw!r}"
                raise ConfigError(msg)
        weights: dict[int, float] = {}
        for s, w in raw.items():
            try:
                stage = int(s)
            except (TypeError, ValueError):
                msg = f"schedule[{i}]: stage {s!r} is not an integer; valid: {choices(valid_stages)}"
                raise ConfigError(msg) from None
            if stage not in valid_stages:
                msg = f"schedule[{i}]: stage {stage} is not in the manifest; valid: {choices(valid_stages)}"
                raise ConfigError(msg)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
                msg = f"schedule[{i}]: weight of stage {stage} must be a number > 0, got {w!r}"
                raise ConfigError(msg)
            weights[stage] = float(w)
        total = sum(weights.values())
        phases.append(Phase({s: w / total for s, w in sorted(weights.items())}, unit, amount))
    return phases


class _StageCursor:
    """A ShardDataset read sequentially across epochs (epoch e, then e + 1, ...)."""

    def __init__(self, ds: ShardDataset) -> None:
        self.ds = ds
        self.epoch = ds.epoch
        self.position = 0

    def _normalize(self) -> None:
        """Move past epoch ends (an epoch where this reader has no rows is skipped, boundedly)."""
        for _ in range(1000):
            if self.position < self.ds.reader_rows(self.epoch):
                return
            self.position -= self.ds.reader_rows(self.epoch)
            self.epoch += 1
        msg = f"stage {self.ds.stage} gives reader {self.ds.slot} no rows in 1000 epochs"
        raise DataError(msg)

    def take(self, k: int, columns: list[str] | None) -> pa.RecordBatch:
        """The next ``k`` rows, continuing into the next epoch at an epoch end; does not advance."""
        self._normalize()
        epoch, position, pieces, need = self.epoch, self.position, [], k
        while need:
            n = self.ds.reader_rows(epoch)
            if position < n:
                piece = self.ds.read_range(position, min(n, position + need), epoch=epoch, columns=columns)
                pieces.append(piece)
                need -= piece.num_rows
            epoch, position = epoch + 1, 0
            if epoch > self.epoch + 1000:
                break
        return _concat(pieces, lambda: self.ds._output_schema(columns))

    def advance(self, rows: int) -> None:
        self.position += rows
        self._normalize()


class _CountCursor(_StageCursor):
    """A _StageCursor over the token counts of a reader's rows only (no text read): how the
    CurriculumLoader works out every reader's batches in a token-budget phase."""

    def __init__(self, ds: ShardDataset, cache: dict[int, np.ndarray]) -> None:
        super().__init__(ds)
        self._counts = cache  # epoch -> tokens of each row of this reader's sequence

    def counts(self, k: int) -> np.ndarray:
        """Tokens of the next ``k`` rows, continuing into the next epoch; does not advance."""
        self._normalize()
        epoch, position, pieces, need = self.epoch, self.position, [], k
        while need:
            if epoch not in self._counts:
                self._counts[epoch] = self.ds.row_token_counts(epoch=epoch)
            piece = self._counts[epoch][position : position + need]
            pieces.append(piece)
            need -= piece.shape[0]
            epoch, position = epoch + 1, 0
            if epoch > self.epoch + 1000:
                break
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)

    def copy(self) -> _CountCursor:
        other = _CountCursor(self.ds, self._counts)
        other.epoch, other.position = self.epoch, self.position
        return other


def _cut_tokens(counts: np.ndarray, left: int) -> tuple[int, int]:
    """(rows, tokens) of a token-budget batch: rows up to the one that reaches ``left`` tokens;
    the whole batch when the budget is already met (``left <= 0``: a balancing batch)."""
    if left <= 0:
        return int(counts.shape[0]), int(counts.sum())
    cum = np.cumsum(counts)
    cut = min(int(np.searchsorted(cum, left, side="left")) + 1, int(counts.shape[0]))
    return cut, int(cum[cut - 1]) if cut else 0


class CurriculumLoader:
    """Batches from a schedule of stages; each batch comes from one stage.

    ``schedule`` is a list of phases, run in order:

    * ``{"stage": 1, "rows": N}``: N rows of stage 1;
    * ``{"stage": 1, "tokens": N}``: rows of stage 1 until N tokens (the row that reaches N is
      included; tokens from the ``tokens`` column, or the tokenizer when it is not the manifest's);
    * ``{"stages": {1: 0.7, 3: 0.3}, "rows": N}`` (or ``"tokens"``): N rows (tokens) mixed by weight.
      Each batch is drawn from the stage furthest below its share so far (the deterministic greedy
      blend of Megatron's ``BlendedDataset``), so the realized mix matches the weights to within
      one batch.

    Budgets are global and split over the ``R = world_size * num_workers`` readers by ``balance``:
    ``pad`` (default) gives every reader ``ceil(N / R)`` (up to ``R - 1`` more than ``N`` in all),
    ``drop`` ``floor(N / R)`` (up to ``R - 1`` fewer), ``none`` ``N // R`` and the first ``N % R``
    readers one more (exactly ``N``, but a reader can get one batch more than another).
    With row budgets every reader therefore yields the same number of rows and batches per phase.
    With token budgets the number of batches a share takes follows the rows' lengths, so with
    ``pad`` and ``drop`` every reader also yields the same number of batches per phase (DDP ranks
    stay in step): the most (``pad``: a reader that reaches its share early takes whole batches
    beyond it, continuing its stages) or the fewest (``drop``: readers stop there, some below their
    share) that any reader needs, worked out from every reader's token counts (the ``tokens``
    column) when iteration starts; with ``none`` each reader stops at its share. A stage read past its end
    continues with its next epoch (new shuffle; each stage epoch is read exactly once over the
    readers); a stage used by several phases continues where the last one stopped.
    :meth:`state_dict` / :meth:`load_state_dict` resume mid-schedule exactly (phase, progress, mix
    counters and every stage's epoch and position).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        schedule: Sequence[Mapping[str, Any]],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        batch_size: int = 64,
        shuffle: bool = True,
        shuffle_block_rows: int = DEFAULT_SHUFFLE_BLOCK_ROWS,
        columns: Sequence[str] | None = None,
        verify: bool = True,
        partition: str = "auto",
        balance: str = "pad",
        precheck: str = "size",
        num_workers: int = 1,
        worker_id: int = 0,
        tokenizer: Any = None,
        format: str = "arrow",
    ) -> None:
        self.path = Path(path)
        if balance not in BALANCES:
            msg = f"unknown balance {balance!r}; valid: {choices(BALANCES)}"
            raise ConfigError(msg)
        self.balance = balance
        self.manifest = load_curriculum_manifest(self.path)
        valid = [int(s["stage"]) for s in self.manifest["stages"]]
        self.phases = parse_schedule(schedule, valid)
        if format not in BATCH_FORMATS:
            msg = f"unknown batch format {format!r}; valid: {choices(BATCH_FORMATS)}"
            raise ConfigError(msg)
        self.format = format
        self.batch_size = _check_int("batch_size", batch_size, minimum=1)
        self.seed = _check_int("seed", seed, minimum=0)
        self.columns = list(columns) if columns is not None else None
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        stages = sorted({s for p in self.phases for s in p.weights})
        self.datasets = {
            s: ShardDataset(
                self.path,
                stage=s,
                rank=rank,
                world_size=world_size,
                seed=seed,
                shuffle=shuffle,
                batch_size=batch_size,
                shuffle_block_rows=shuffle_block_rows,
                columns=None,
                verify=verify,
                partition=partition,
                balance="none",  # the budgets balance the readers; an epoch is read exactly once
                precheck=precheck,
                num_workers=num_workers,
                worker_id=worker_id,
                tokenizer=self.tokenizer,
            )
            for s in stages
        }
        first = next(iter(self.datasets.values()))
        self.readers = first.num_readers
        self.slot = first.slot
        self._phase_batches: list[int | None] | None = None
        for ds in self.datasets.values():
            if self.columns is not None:
                missing = [c for c in self.columns if ds.schema is not None and c not in ds.schema.names]
                if missing:
                    msg = (
                        f"unknown column(s) {missing} for stage {ds.stage}; valid: {choices(ds.schema.names)}"
                    )
                    raise ConfigError(msg)
        self._reset()

    def _reset(self) -> None:
        self.phase = 0
        self.done = 0  # units of the current phase this reader has taken
        self.taken: dict[int, int] = {}  # units per stage in the current phase (mixtures)
        self.batches: int | None = 0  # batches of the current phase (None: a state without it)
        self.cursors = {s: _StageCursor(ds) for s, ds in self.datasets.items()}
        self._pending = False

    def share(self, amount: int) -> int:
        """This reader's part of a global budget (see ``balance``)."""
        if self.balance == "pad":
            return -(-amount // self.readers)
        if self.balance == "drop":
            return amount // self.readers
        return amount // self.readers + (1 if self.slot < amount % self.readers else 0)

    def __len__(self) -> int:
        """Rows this reader yields over the schedule (row-budget phases only; else TypeError)."""
        if any(p.unit != "rows" for p in self.phases):
            msg = "the length of a schedule with token budgets is only known by reading it"
            raise TypeError(msg)
        return sum(self.share(p.amount) for p in self.phases)

    def _count_tokens(self, ds: ShardDataset, batch: pa.RecordBatch) -> np.ndarray:
        if "tokens" in batch.schema.names and ds._manifest_tokenizer_matches():
            return batch.column("tokens").to_numpy(zero_copy_only=False).astype(np.int64)
        return ds.encode_rows(batch)[1]

    @staticmethod
    def _pick(phase: Phase, taken: Mapping[int, int]) -> int:
        if len(phase.weights) == 1:
            return next(iter(phase.weights))
        total = sum(taken.values())
        return max(phase.weights, key=lambda s: (phase.weights[s] * (total + 1) - taken.get(s, 0), -s))

    def phase_batches(self) -> list[int | None]:
        """Batches every reader yields in each phase when they are balanced (token-budget phases
        with ``pad`` or ``drop`` and more than one reader), else None for the phase."""
        if self._phase_batches is not None:
            return self._phase_batches
        n = len(self.phases)
        if self.balance == "none" or self.readers == 1 or all(p.unit == "rows" for p in self.phases):
            self._phase_batches = [None] * n
            return self._phase_batches
        readers = []
        for g in range(self.readers):
            readers.append({s: _CountCursor(ds._for_slot(g), {}) for s, ds in self.datasets.items()})
        out: list[int | None] = []
        for phase in self.phases:
            limit = None
            if phase.unit == "tokens":
                natural = [
                    self._simulate(phase, {s: c.copy() for s, c in cur.items()}, None) for cur in readers
                ]
                limit = max(natural) if self.balance == "pad" else min(natural)
            for cur in readers:
                self._simulate(phase, cur, limit)
            out.append(limit)
        self._phase_batches = out
        return out

    def _simulate(self, phase: Phase, cursors: dict[int, _CountCursor], limit: int | None) -> int:
        """Run ``phase`` on token counts alone, as :meth:`__iter__` would (advancing ``cursors``);
        return its batches."""
        share, done, taken, batches = self.share(phase.amount), 0, {}, 0
        while (done < share) if limit is None else (batches < limit):
            stage = self._pick(phase, taken)
            if phase.unit == "rows":
                rows = units = min(self.batch_size, share - done)
            else:
                rows, units = _cut_tokens(cursors[stage].counts(self.batch_size), share - done)
            cursors[stage].advance(rows)
            done += units
            taken[stage] = taken.get(stage, 0) + units
            batches += 1
        return batches

    def __iter__(self) -> Iterator[CurriculumBatch]:
        """Batches of the whole schedule, phase after phase (from a loaded state: where it left off)."""
        if not self._pending:
            self._reset()
        self._pending = False
        limits = self.phase_batches()
        while self.phase < len(self.phases):
            phase = self.phases[self.phase]
            share = self.share(phase.amount)
            limit = limits[self.phase] if self.batches is not None else None
            while (self.done < share) if limit is None else (self.batches or 0) < limit:
                stage = self._pick(phase, self.taken)
                ds, cur = self.datasets[stage], self.cursors[stage]
                if phase.unit == "rows":
                    k = min(self.batch_size, share - self.done)
                    batch = cur.take(k, self.columns)
                    units = batch.num_rows
                else:
                    batch = cur.take(self.batch_size, None)
                    rows, units = _cut_tokens(self._count_tokens(ds, batch), share - self.done)
                    batch = batch.slice(0, rows)
                    if self.columns is not None:
                        batch = batch.select(self.columns)
                cur.advance(batch.num_rows)
                self.done += units
                self.taken[stage] = self.taken.get(stage, 0) + units
                if self.batches is not None:
                    self.batches += 1
                yield CurriculumBatch(stage, self.phase, convert_batch(batch, self.format))
            self.phase += 1
            self.done = 0
            self.taken = {}
            self.batches = 0

    def _config(self) -> dict[str, Any]:
        ds = next(iter(self.datasets.values()))
        cfg = {k: v for k, v in ds._config().items() if k not in ("stage", "data")}
        cfg["balance"] = self.balance  # how budgets are split (the stages are read unbalanced)
        cfg["schedule"] = [p.to_dict() for p in self.phases]
        cfg["data"] = {str(s): d.data_fingerprint() for s, d in self.datasets.items()}
        return cfg

    def state_dict(self) -> dict[str, Any]:
        """Phase, progress in it, mix counters, each stage's epoch and position, and the config."""
        return {
            "version": STATE_VERSION,
            "kind": "curriculum_loader",
            **self._config(),
            "phase": self.phase,
            "done": self.done,
            "taken": {str(s): v for s, v in self.taken.items()},
            "batches": self.batches,
            "cursors": {str(s): {"epoch": c.epoch, "position": c.position} for s, c in self.cursors.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` was taken. ConfigError on a different configuration."""
        if not isinstance(state, Mapping) or state.get("kind") != "curriculum_loader":
            msg = "not a CurriculumLoader state (kind must be 'curriculum_loader')"
            raise ConfigError(msg)
        for key, value in self._config().items():
            # a state saved before `balance` existed split budgets as balance='none' does
            saved = state.get(key, "none" if key == "balance" else value)
            if saved != value:
                hint = f" (pass balance={saved!r} to resume it)" if key == "balance" else ""
                msg = f"cannot resume: the state was saved with {key}={saved!r}, this loader has {value!r}{hint}"
                raise ConfigError(msg)
        self._reset()
        self.phase = int(state["phase"])
        self.done = int(state["done"])
        self.taken = {int(s): int(v) for s, v in state["taken"].items()}
        batches = state.get("batches")
        self.batches = None if batches is None else int(batches)
        if self.batches is None and self.done and self.phase_batches()[self.phase] is not None:
            log.warning(
                "the state was saved by a dataforge without balanced token phases: phase %d ends at "
                "this reader's share, so readers may take different numbers of batches in it",
                self.phase,
            )
        elif self.batches is None:
            self.batches = 0
        for s, c in state["cursors"].items():
            cur = self.cursors[int(s)]
            cur.epoch, cur.position = int(c["epoch"]), int(c["position"])
        self._pending = True
