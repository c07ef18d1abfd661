"""Connected components and keep policies on hand-made graphs."""

from __future__ import annotations

import numpy as np
import pytest

from dataforge.dedup.clusters import check_keep, components, keep_rank
from dataforge.errors import ConfigError


def edges(*pairs):
    left = np.array([p[0] for p in pairs], dtype=np.int64)
    right = np.array([p[1] for p in pairs], dtype=np.int64)
    return left, right


def as_dict(c):
    return {
        int(n): (int(cid), int(size), int(keeper))
        for n, cid, size, keeper in zip(c.nodes, c.cluster_id, c.cluster_size, c.keeper)
    }


def test_chain_forms_one_cluster():
    # A=3 ~ B=7 ~ C=12 (A and C not linked directly): transitivity puts them in one cluster
    c = components(*edges((3, 7), (7, 12)))
    assert as_dict(c) == {3: (3, 3, 3), 7: (3, 3, 3), 12: (3, 3, 3)}


def test_edge_direction_and_order_do_not_matter():
    a = components(*edges((12, 7), (7, 3)))
    b = components(*edges((3, 7), (7, 12)))
    assert as_dict(a) == as_dict(b)


def test_disjoint_components():
    c = components(*edges((10, 2), (5, 6), (6, 7), (7, 5), (20, 30), (30, 40), (40, 50)))
    assert c.nodes.tolist() == [2, 5, 6, 7, 10, 20, 30, 40, 50]
    assert as_dict(c) == {
        2: (2, 2, 2),
        10: (2, 2, 2),
        5: (5, 3, 5),
        6: (5, 3, 5),
        7: (5, 3, 5),
        20: (20, 4, 20),
        30: (20, 4, 20),
        40: (20, 4, 20),
        50: (20, 4, 20),
    }
    assert c.cluster_size.dtype == np.int32


def test_duplicate_edges_and_self_loops():
    c = components(*edges((1, 2), (2, 1), (1, 2), (4, 4), (4, 5)))
    assert as_dict(c) == {1: (1, 2, 1), 2: (1, 2, 1), 4: (4, 2, 4), 5: (4, 2, 4)}


def test_no_edges():
    c = components(np.empty(0, np.int64), np.empty(0, np.int64))
    assert c.nodes.shape == c.cluster_id.shape == c.cluster_size.shape == c.keeper.shape == (0,)


def test_large_global_positions():
    big = 10**12
    c = components(*edges((big + 5, big), (big + 5, 3)))
    assert as_dict(c) == {3: (3, 3, 3), big: (3, 3, 3), big + 5: (3, 3, 3)}


def test_explicit_node_set_with_singletons():
    nodes = np.array([1, 4, 9], dtype=np.int64)
    c = components(*edges((1, 9)), nodes=nodes)
    assert as_dict(c) == {1: (1, 2, 1), 9: (1, 2, 1), 4: (4, 1, 4)}


# --------------------------------------------------------------------------- keep policies

# one cluster 10 ~ 20 ~ 30 ~ 40 (a chain), plus the pair 50 ~ 60
LEFT, RIGHT = edges((10, 20), (20, 30), (30, 40), (50, 60))
NODES = np.array([10, 20, 30, 40, 50, 60], dtype=np.int64)


def keepers(keep, *, length=None, value=None):
    length = np.array(length if length is not None else [100] * 6, dtype=np.int64)
    value = None if value is None else np.array(value, dtype=np.float64)
    rank = keep_rank(keep, length=length, position=NODES, value=value)
    c = components(LEFT, RIGHT, rank=rank, nodes=NODES)
    assert c.cluster_id.tolist() == [10, 10, 10, 10, 50, 50]  # the keep policy never moves cluster ids
    keep_of = dict(zip(c.nodes.tolist(), c.keeper.tolist()))
    return keep_of[10], keep_of[50]


def test_keep_first_and_last():
    assert keepers("first") == (10, 50)
    assert keepers("last") == (40, 60)


def test_keep_longest_and_shortest_ties_by_input_order():
    length = [5, 9, 9, 1, 7, 7]
    assert keepers("longest", length=length) == (20, 50)  # 20 and 30 tie: the earlier wins
    assert keepers("shortest", length=length) == (40, 50)
    assert keepers("shortest", length=[3, 3, 8, 3, 2, 1]) == (10, 60)


def test_keep_oldest_and_newest():
    # epoch seconds; NaN = no (parsable) date
    value = [1.7e9, 1.5e9, np.nan, 1.6e9, np.nan, 1.0e9]
    assert keepers("oldest", value=value) == (20, 60)
    assert keepers("newest", value=value) == (10, 60)


def test_keep_field_smallest_and_largest_with_ties():
    value = [3.0, 1.0, 1.0, 7.0, 2.0, 2.0]
    assert keepers("field:score", value=value) == (20, 50)
    assert keepers("field:-score", value=value) == (40, 50)
    assert keepers("field:-score", value=[7.0, 1.0, 1.0, 7.0, -1.0, 0.0]) == (10, 60)


def test_nan_is_never_preferred():
    value = [np.nan, np.nan, 5.0, np.nan, np.nan, np.nan]
    for keep in ("oldest", "newest", "field:x", "field:-x"):
        # the only member with a value wins even against earlier members; all-NaN clusters keep the first
        assert keepers(keep, value=value) == (30, 50)
    # negative infinity is a value, not a missing one
    assert keepers("field:x", value=[1.0, -np.inf, 0.0, 0.0, np.nan, 2.0]) == (20, 60)


def test_missing_values_fall_back_to_input_order():
    assert keepers("oldest") == (10, 50)  # value=None: no dates at all
    assert keepers("field:-x", value=[np.nan] * 6) == (10, 50)


def test_keep_rank_contract():
    length = np.array([4, 2, 9])
    position = np.array([0, 5, 9])
    assert keep_rank("first", length=length, position=position, value=None).tolist() == [0, 0, 0]
    assert keep_rank("last", length=length, position=position, value=None).tolist() == [0, -5, -9]
    assert keep_rank("longest", length=length, position=position, value=None).tolist() == [-4, -2, -9]
    value = np.array([2.0, np.nan, -1.0])
    assert keep_rank("field:-a", length=length, position=position, value=value).tolist() == [
        -2.0,
        np.inf,
        1.0,
    ]
    assert keep_rank("newest", length=length, position=position, value=value).tolist() == [-2.0, np.inf, 1.0]
    assert keep_rank("oldest", length=length, position=position, value=value).tolist() == [2.0, np.inf, -1.0]
    assert value[1] != value[1]  # the caller's array is not modified


# --------------------------------------------------------------------------- check_keep


@pytest.mark.parametrize(
    "keep",
    ["first", "last", "longest", "shortest", "oldest", "newest", "field:score", "field:-score", "field:a.b"],
)
def test_check_keep_accepts(keep):
    check_keep(keep)


@pytest.mark.parametrize("keep", ["random", "", "FIRST", "field:", "field:-", "field", "longest "])
def test_check_keep_rejects_naming_the_value(keep):
    with pytest.raises(ConfigError) as info:
        check_keep(keep)
    assert repr(keep) in str(info.value)
    assert "field:NAME" in str(info.value)  # the valid choices are listed
