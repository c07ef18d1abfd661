"""``dataforge validate OUT``: check a curriculum output, then train a tiny model through the loader.

Checks (every shard of every stage, against ``manifest.json``):

* the manifest's top-level ``shards`` list (what ``dataforge inspect --verify`` checks) and the
  stages' ``shards`` lists (what the loader reads) list the same shards with the same fields; a
  shard where they disagree is named with both values and the file's own size and sha256;
* the file exists, its size and sha256 match;
* it opens as an Arrow IPC file (a truncated or corrupt file is named, not a traceback);
* its schema has the declared stage schema's columns and types;
* its row count and the sum of its ``tokens`` column match the manifest, and the stage totals add up.

The training run (optional extra ``torch``, ``pip install torch==2.13.0``): a byte-level causal
language model (embedding, one pre-norm Transformer block, tied output; about 60k parameters) is
trained for ``train_steps`` steps on token batches from :class:`dataforge.train.ShardDataset`, the
loader training jobs use, with a fixed seed. It passes when the mean loss of the last steps falls
below the **unigram baseline**: the entropy (nats per token) of the token distribution of the very
batches it trained on, i.e. the loss of the best model that ignores context. A shard whose text was
garbled, truncated into noise or mis-decoded does not get there; real text does within ~100 steps.
Throughput (tokens/s through loader + model) is reported.

Example:
    >>> from dataforge.train.validate import validate  # doctest: +SKIP
    >>> result = validate("out/demo-curriculum", train_steps=200, stage=1)  # doctest: +SKIP
    >>> result.ok  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from dataforge.errors import ConfigError, DataError
from dataforge.io.shards import read_manifest, sha256_file
from dataforge.schemas import extend, load_schema
from dataforge.train.loader import shard_list_disagreements

log = logging.getLogger(__name__)

_STAGE_SCHEMAS = {
    "stage_document.v1": ("document.v1", "stage_document.v1"),
    "stage_instruction.v1": ("instruction.v1", "stage_instruction.v1"),
}


@dataclass
class TrainResult:
    """The tiny training run: losses, the unigram baseline, throughput.

    Attributes:
        stage: the stage trained on.
        steps, seq_len, batch_size: the run's shape (``batch_size`` sequences of ``seq_len`` tokens).
        tokens: tokens trained on.
        seconds, tokens_per_s: wall time and throughput through loader and model.
        first_loss: the loss of the first step (nats per token).
        final_loss: the mean loss of the last steps.
        unigram_baseline: entropy of the token distribution of the batches trained on.
        passed: ``final_loss < unigram_baseline``.
        losses: the loss of every step.
    """

    stage: int
    steps: int
    seq_len: int
    batch_size: int
    tokens: int
    seconds: float
    tokens_per_s: float
    first_loss: float
    final_loss: float
    unigram_baseline: float
    passed: bool
    losses: list[float] = field(default_factory=list)


@dataclass
class ValidationResult:
    """What ``dataforge validate`` found.

    Attributes:
        path: the curriculum output folder.
        shards_checked, rows, tokens: what the shard checks covered.
        problems: one message per failed check (empty when every shard matches its manifest).
        train: the training run (None with ``train_steps=0`` or when a shard check failed).
    """

    path: str
    shards_checked: int = 0
    rows: int = 0
    tokens: int = 0
    problems: list[str] = field(default_factory=list)
    train: TrainResult | None = None

    @property
    def ok(self) -> bool:
        """No problems, and the training run (if any) passed."""
        return not self.problems and (self.train is None or self.train.passed)

    def to_dict(self) -> dict[str, Any]:
        """What ``dataforge validate --json`` prints."""
        d = asdict(self)
        d["ok"] = self.ok
        if self.train is not None:
            d["train"]["losses"] = [round(x, 4) for x in self.train.losses]
        return d


def _declared(schema_name: str) -> pa.Schema | None:
    parts = _STAGE_SCHEMAS.get(schema_name)
    if parts is None:
        return None
    base, ext = parts
    return extend(load_schema(base), list(load_schema(ext)), name=schema_name)


def check_shards(out: str | Path) -> ValidationResult:
    """Verify every stage shard of a curriculum output against its manifest (no training)."""
    out = Path(out)
    manifest = read_manifest(out)
    result = ValidationResult(path=str(out))
    if manifest.get("kind") != "curriculum":
        msg = (
            f"{out}: manifest kind is {manifest.get('kind')!r}, not 'curriculum'; "
            f"`dataforge validate` checks curriculum outputs (use `dataforge inspect --verify` for others)"
        )
        raise DataError(msg)
    files: dict[str, tuple[int, str]] = {}  # path -> (bytes, sha256) of the files hashed below
    for stage in manifest.get("stages", []):
        declared = _declared(stage.get("schema", {}).get("name", ""))
        stage_rows = stage_tokens = 0
        for entry in stage.get("shards", []):
            result.shards_checked += 1
            missing = [k for k in ("path", "rows", "bytes", "sha256") if k not in entry]
            if missing:
                result.problems.append(
                    f"{entry.get('path', entry)}: manifest entry lacks {', '.join(missing)}"
                )
                continue
            rel = entry["path"]
            p = out / rel
            if not p.is_file():
                result.problems.append(f"{rel}: missing")
                continue
            size = p.stat().st_size
            if size != entry["bytes"]:
                result.problems.append(
                    f"{rel}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced?)"
                )
                continue
            digest = sha256_file(p)
            files[rel] = (size, digest)
            if digest != entry["sha256"]:
                result.problems.append(
                    f"{rel}: sha256 {digest[:16]}..., manifest says {entry['sha256'][:16]}..."
                )
                continue
            try:
                with pa.memory_map(str(p)) as src:
                    table = ipc.open_file(src).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                result.problems.append(f"{rel}: not a readable Arrow IPC file: {exc}")
                continue
            if declared is not None:
                for f in declared:
                    if f.name not in table.schema.names:
                        result.problems.append(f"{rel}: column {f.name!r} of {declared.metadata} is missing")
                    elif table.schema.field(f.name).type != f.type:
                        result.problems.append(
                            f"{rel}: column {f.name!r} is {table.schema.field(f.name).type}, declared {f.type}"
                        )
            if table.num_rows != entry["rows"]:
                result.problems.append(f"{rel}: {table.num_rows} rows, manifest says {entry['rows']}")
            if "tokens" in table.schema.names:
                tokens = int(pc.sum(table.column("tokens")).as_py() or 0)
                if "tokens" in entry and tokens != entry["tokens"]:
                    result.problems.append(f"{rel}: {tokens} tokens, manifest says {entry['tokens']}")
                stage_tokens += tokens
            if "stage" in table.schema.names and table.num_rows:
                stages = set(pc.unique(table.column("stage")).to_pylist())
                if stages != {stage["stage"]}:
                    result.problems.append(
                        f"{rel}: rows of stage(s) {sorted(stages)} in stage {stage['stage']}"
                    )
            stage_rows += table.num_rows
        broken = any(p.startswith(tuple(e["path"] for e in stage.get("shards", []))) for p in result.problems)
        if not broken and stage_rows != stage.get("rows", stage_rows):
            result.problems.append(
                f"stage {stage['stage']}: {stage_rows} rows in shards, manifest says {stage['rows']}"
            )
        result.rows += stage_rows
        result.tokens += stage_tokens
    result.problems += _list_disagreements(out, manifest, files)
    return result


def _list_disagreements(out: Path, manifest: dict[str, Any], files: dict[str, tuple[int, str]]) -> list[str]:
    """One problem per shard where the manifest's two shard lists disagree, with what the file has
    and which list's entry does not match it."""
    problems = []
    top = {e["path"]: e for e in manifest.get("shards") or [] if isinstance(e, dict) and "path" in e}
    staged = {
        e["path"]: (st.get("stage"), e)
        for st in manifest.get("stages") or []
        for e in st.get("shards") or []
        if isinstance(e, dict) and "path" in e
    }
    for rel, what in shard_list_disagreements(manifest):
        msg = f"{rel}: the manifest's shard lists disagree: {what}"
        p = out / rel
        if rel not in files and p.is_file():
            files[rel] = (p.stat().st_size, sha256_file(p))
        if rel in files:
            size, digest = files[rel]
            msg += f"; the file has {size} bytes, sha256 {digest[:16]}..."
            wrong = [
                name
                for name, entry in (
                    ("the top-level `shards` entry", top.get(rel)),
                    (
                        f"stage {staged[rel][0]}'s entry" if rel in staged else "",
                        staged.get(rel, (0, None))[1],
                    ),
                )
                if entry is not None and (entry.get("sha256") != digest or entry.get("bytes") != size)
            ]
            if wrong:
                msg += f" ({' and '.join(wrong)} {'do' if len(wrong) > 1 else 'does'} not match the file)"
        problems.append(msg)
    return problems


def _unigram_entropy(counts: list[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c) if total else float("nan")


def train_tiny(
    out: str | Path,
    *,
    stage: int,
    steps: int = 200,
    seq_len: int = 64,
    batch_size: int = 16,
    seed: int = 0,
    lr: float = 3e-3,
    window: int = 20,
) -> TrainResult:
    """Train the tiny byte-level model for ``steps`` steps through the loader (see module doc)."""
    try:
        import torch
        from torch import nn
    except ImportError:
        msg = (
            "the training check needs PyTorch: pip install 'dataforge[torch]' (torch==2.13.0), "
            "or pass --train-steps 0 to check the shards only"
        )
        raise ConfigError(msg) from None
    from dataforge.train.loader import ShardDataset

    torch.manual_seed(seed)
    ds = ShardDataset(out, stage=stage, seed=seed, shuffle=True, batch_size=batch_size)
    vocab = ds.tokenizer.vocab_size
    pad = ds.tokenizer.pad_id

    class TinyLM(nn.Module):
        def __init__(self, d: int = 64) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(seq_len, d)
            self.block = nn.TransformerEncoderLayer(
                d, nhead=2, dim_feedforward=4 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.norm = nn.LayerNorm(d)
            self.register_buffer(
                "mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False
            )
            nn.init.normal_(self.emb.weight, std=0.02)  # small init: the first loss is ~ln(vocab)
            nn.init.normal_(self.pos.weight, std=0.02)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.emb(x) + self.pos.weight[: x.shape[1]]
            h = self.block(h, src_mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True)
            return self.norm(h) @ self.emb.weight.T

    # a 64-wide model is too small for intra-op threads: one thread is faster, and it does not
    # collapse when the machine is busy (1.7k vs 72k tokens/s measured under load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = TinyLM()
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        loss_fn = nn.CrossEntropyLoss(ignore_index=pad)
        counts = [0] * vocab
        losses: list[float] = []
        n_tokens = 0
        t0 = time.perf_counter()
        epoch = 0
        batches = iter(ds.iter_token_batches(seq_len))
        while len(losses) < steps:
            try:
                arr = next(batches)
            except StopIteration:
                epoch += 1
                if epoch > 1000 or (epoch > 1 and not losses):
                    msg = f"stage {stage} yields no token batches of length {seq_len + 1}"
                    raise DataError(msg) from None
                ds.set_epoch(epoch)
                batches = iter(ds.iter_token_batches(seq_len))
                continue
            batch = torch.as_tensor(arr, dtype=torch.long)
            x, y = batch[:, :-1], batch[:, 1:]
            for tok, n in zip(*torch.unique(y[y != pad], return_counts=True), strict=True):
                counts[int(tok)] += int(n)
            logits = model(x)
            loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            n_tokens += int((y != pad).sum())
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    baseline = _unigram_entropy(counts)
    final = sum(losses[-window:]) / min(window, len(losses))
    return TrainResult(
        stage=stage,
        steps=steps,
        seq_len=seq_len,
        batch_size=batch_size,
        tokens=n_tokens,
        seconds=seconds,
        tokens_per_s=n_tokens / seconds if seconds else 0.0,
        first_loss=losses[0],
        final_loss=final,
        unigram_baseline=baseline,
        passed=final < baseline,
        losses=losses,
    )


def validate(
    out: str | Path,
    *,
    train_steps: int = 200,
    stage: int | None = None,
    seq_len: int = 64,
    batch_size: int = 16,
    seed: int = 0,
) -> ValidationResult:
    """Check every shard against the manifest, then (``train_steps > 0``) run the tiny training.

    Args:
        out: a curriculum output folder.
        train_steps: optimizer steps of the training check; 0 checks the shards only.
        stage: which stage to train on (default: the first stage in the manifest).
        seq_len: tokens per training sequence.
        batch_size: sequences per step.
        seed: model and loader seed.

    Returns:
        The result; ``result.ok`` is False when a shard check failed or the loss did not fall below
        the unigram baseline. The training run is skipped when a shard check failed.

    Raises:
        DataError: the folder is not a curriculum output (no manifest, or another kind).
        ConfigError: ``stage`` is not in the manifest, or torch (the ``torch`` extra) is missing.

    Example:
        >>> result = dataforge.validate("out/tour/curriculum", train_steps=0)
        >>> result.ok, result.shards_checked > 0, result.train is None
        (True, True, True)
    """
    result = check_shards(out)
    if train_steps > 0 and not result.problems:
        stages = [s["stage"] for s in read_manifest(out).get("stages", [])]
        if not stages:
            msg = f"{out}: the manifest lists no stages"
            raise DataError(msg)
        chosen = stage if stage is not None else stages[0]
        if chosen not in stages:
            msg = f"stage {chosen} is not in {out}; valid: {', '.join(map(str, stages))}"
            raise ConfigError(msg)
        result.train = train_tiny(
            out, stage=chosen, steps=train_steps, seq_len=seq_len, batch_size=batch_size, seed=seed
        )
        t = result.train
        log.info(
            "validate: stage %d, %d steps, loss %.3f -> %.3f (unigram %.3f), %.0f tokens/s",
            t.stage, t.steps, t.first_loss, t.final_loss, t.unigram_baseline, t.tokens_per_s,
        )  # fmt: skip
    return result
