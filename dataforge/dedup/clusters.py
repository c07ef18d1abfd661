"""Connected components over verified duplicate pairs, and the keep policy.

Nodes are documents identified by their global position (input order). Components come from
``scipy.sparse.csgraph.connected_components`` over the edge list (only documents that have an
edge take part, so memory grows with the number of duplicates, not with the corpus). Every
component gets the global position of its first member as ``cluster_id``; the member it keeps is
chosen by the keep policy, with input order breaking every tie, so the result never depends on the
executor or the worker count.

Keep policies: ``first`` (default), ``last``, ``longest``, ``shortest``, ``oldest``, ``newest``
(by a date field), ``field:NAME`` (smallest value of a field in the record's metadata) and
``field:-NAME`` (largest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataforge.errors import ConfigError

KEEP_FIXED = ("first", "last", "longest", "shortest", "oldest", "newest")


def check_keep(keep: str) -> None:
    """Raise ConfigError unless ``keep`` is a known policy."""
    if keep in KEEP_FIXED:
        return
    if keep.startswith("field:") and keep.removeprefix("field:").lstrip("-"):
        return
    msg = f"unknown keep policy {keep!r}; valid: {', '.join(KEEP_FIXED)}, field:NAME, field:-NAME"
    raise ConfigError(msg)


@dataclass
class Clusters:
    """Result of clustering: for each node, its component's cluster id, size and kept node."""

    nodes: np.ndarray  # global positions, sorted
    cluster_id: np.ndarray  # per node: global position of the component's first member
    cluster_size: np.ndarray  # per node
    keeper: np.ndarray  # per node: global position of the member kept in its component


def components(
    left: np.ndarray, right: np.ndarray, rank: np.ndarray | None = None, nodes: np.ndarray | None = None
) -> Clusters:
    """Cluster the nodes linked by edges ``left[i] -- right[i]`` (global positions).

    Args:
        left, right: edge endpoints (int64 global positions).
        rank: per node of ``nodes`` (or of the sorted unique endpoints), a sort key: the member with
            the smallest rank is kept; ties go to the first in input order. None keeps the first.
        nodes: the node set (sorted unique endpoints when None).
    """
    if nodes is None:
        nodes = np.unique(np.concatenate([left, right]))
    n = nodes.shape[0]
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return Clusters(empty, empty, empty.astype(np.int32), empty)
    li = np.searchsorted(nodes, left)
    ri = np.searchsorted(nodes, right)
    # imported here: scipy.sparse costs ~0.2 s, and only the driver's finalize needs it
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(li.shape[0], dtype=np.int8), (li, ri)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # first member (smallest global position) of each component: nodes are sorted ascending
    first = np.full(labels.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, labels, nodes)
    sizes = np.bincount(labels)
    # keeper: smallest (rank, position) in each component
    rank = np.zeros(n) if rank is None else np.asarray(rank, dtype=np.float64)
    order = np.lexsort((nodes, rank, labels))  # by component, then rank, then position
    keep_idx = np.empty(labels.max() + 1, dtype=np.int64)
    boundaries = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    keep_idx[labels[order][boundaries]] = order[boundaries]
    return Clusters(
        nodes=nodes,
        cluster_id=first[labels],
        cluster_size=sizes[labels].astype(np.int32),
        keeper=nodes[keep_idx[labels]],
    )


def keep_rank(keep: str, *, length: np.ndarray, position: np.ndarray, value: np.ndarray | None) -> np.ndarray:
    """Sort key per node for ``keep`` (smallest is kept). ``value`` holds the date or field value
    as float (NaN when missing: never preferred)."""
    if keep == "first":
        return np.zeros(length.shape[0])
    if keep == "last":
        return -position.astype(np.float64)
    if keep == "longest":
        return -length.astype(np.float64)
    if keep == "shortest":
        return length.astype(np.float64)
    if value is None:
        value = np.full(length.shape[0], np.nan)
    descending = keep == "newest" or keep.startswith("field:-")
    v = -value if descending else value.copy()
    return np.where(np.isnan(v), np.inf, v)
