"""dataforge: clean, deduplicate and account for training data; write stage-tagged Arrow shards."""

from __future__ import annotations

__version__ = "0.1.0"
