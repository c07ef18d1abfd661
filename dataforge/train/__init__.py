"""What training jobs import: the curriculum shard loader, tokenizers and validation.

``ShardDataset`` reads one stage of a curriculum output (``docs/curriculum.md``) for one of
``world_size x num_workers`` readers; ``CurriculumLoader`` walks a schedule of stages. The torch
adapter lives in :mod:`dataforge.train.torch` (``TorchIterableDataset``) and is the only module that
imports torch, so this package imports without it.
"""

from __future__ import annotations

from typing import Any

from dataforge.train.loader import CurriculumBatch, CurriculumLoader, ShardDataset
from dataforge.train.tokenizer import ByteTokenizer, training_text

__all__ = [
    "ByteTokenizer",
    "CurriculumBatch",
    "CurriculumLoader",
    "ShardDataset",
    "TorchIterableDataset",
    "training_text",
]


def __getattr__(name: str) -> Any:
    if name == "TorchIterableDataset":  # needs torch: import only when asked for
        from dataforge.train.torch import TorchIterableDataset

        return TorchIterableDataset
    msg = f"module 'dataforge.train' has no attribute {name!r}"
    raise AttributeError(msg)
