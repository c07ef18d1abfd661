"""Tokenizers and the text a training row stands for.

The default :class:`ByteTokenizer` needs no download: token ids 0-255 are the UTF-8 bytes, 256 is
end-of-document (EOS) and 257 is padding. Any object with ``encode(text) -> list[int]``,
``vocab_size``, ``eos_id`` and ``pad_id`` can replace it (e.g. a thin wrapper over a Hugging Face
tokenizer); :func:`tokenizer_spec` records what was used in manifests.

:func:`training_text` is the one place that decides what text a row contributes to training:
``text`` for documents, and for instruction pairs the optional context, the prompt and the response
in a fixed template. Curriculum token budgets and the loader both use it, so budgets and training
agree.

Example:
    >>> tok = ByteTokenizer()
    >>> tok.encode("hé")
    [104, 195, 169, 256]
    >>> tok.count(["hé", "a"])
    [4, 2]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

INSTRUCTION_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n{response}"
INSTRUCTION_WITH_CONTEXT = (
    "### Context:\n{context}\n\n### Instruction:\n{prompt}\n\n### Response:\n{response}"
)


class Tokenizer(Protocol):
    """What the loader needs from a tokenizer."""

    vocab_size: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (0-255), EOS 256, PAD 257; ``add_eos`` appends EOS to every text.

    The default tokenizer of curricula, the loader and ``dataforge validate``; needs no download.
    Any object with ``encode(text) -> list[int]``, ``vocab_size``, ``eos_id`` and ``pad_id`` can
    replace it (an optional vectorized ``count(texts)`` speeds up token counting).

    Example:
        >>> from dataforge.train import ByteTokenizer
        >>> tok = ByteTokenizer()
        >>> tok.encode("hé")
        [104, 195, 169, 256]
        >>> tok.count(["hé", "a"]), tok.decode([104, 195, 169, 256])
        ([4, 2], 'hé')
    """

    name = "byte"
    vocab_size = 258
    eos_id = 256
    pad_id = 257

    def __init__(self, *, add_eos: bool = True) -> None:
        self.add_eos = add_eos

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text`` (then EOS when ``add_eos``)."""
        ids = list(text.encode("utf-8"))
        if self.add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text from token ids; EOS and PAD are skipped, invalid UTF-8 becomes U+FFFD."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def count(self, texts: Sequence[str | None]) -> list[int]:
        """Token counts of many texts at once (vectorized: UTF-8 byte length + EOS)."""
        arr = pa.array(texts, type=pa.large_string())
        lengths = pc.fill_null(pc.binary_length(arr), 0).to_pylist()
        extra = 1 if self.add_eos else 0
        return [n + extra for n in lengths]


def tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """How a manifest records the tokenizer used for token counts."""
    return {
        "name": getattr(tokenizer, "name", type(tokenizer).__name__),
        "vocab_size": int(tokenizer.vocab_size),
        "eos_id": int(tokenizer.eos_id),
        "pad_id": int(tokenizer.pad_id),
    }


def training_text(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """The training text of every row: ``text`` for documents; for instruction pairs
    (``prompt``/``response`` columns) the :data:`INSTRUCTION_TEMPLATE` (with context when given)."""
    names = batch.schema.names
    if "text" in names:
        return [t or "" for t in batch.column("text").to_pylist()]
    if "prompt" in names and "response" in names:
        prompts = batch.column("prompt").to_pylist()
        responses = batch.column("response").to_pylist()
        contexts = batch.column("context").to_pylist() if "context" in names else [None] * len(prompts)
        out = []
        for p, r, c in zip(prompts, responses, contexts, strict=True):
            if c:
                out.append(INSTRUCTION_WITH_CONTEXT.format(context=c, prompt=p or "", response=r or ""))
            else:
                out.append(INSTRUCTION_TEMPLATE.format(prompt=p or "", response=r or ""))
        return out
    msg = f"rows have neither a 'text' column nor 'prompt'/'response' columns (columns: {names})"
    raise ValueError(msg)
