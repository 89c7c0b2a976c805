"""SequenceOrder: epoch permutations of one disjoint portion, a pure function of (config, position)."""

from __future__ import annotations

import numpy as np
import pytest

from wsdlab.data.config import OrderConfig
from wsdlab.data.orders import SequenceOrder, epoch_permutation, portion_bounds


def slow_index(order: OrderConfig, num_train: int, position: int) -> int:
    """Direct reference: the portion's epoch permutation, looked up one position at a time."""
    lo = order.portion * num_train // order.num_portions
    hi = (order.portion + 1) * num_train // order.num_portions
    epoch, offset = divmod(position, hi - lo)
    perm = np.random.default_rng((order.seed, epoch)).permutation(hi - lo) if order.shuffle else np.arange(hi - lo)
    return lo + int(perm[offset])


def test_each_epoch_is_a_permutation_of_the_portion() -> None:
    order = SequenceOrder(OrderConfig(seed=3), 50)
    for epoch in range(3):
        idx = order.indices(epoch * 50, 50)
        assert sorted(idx.tolist()) == list(range(50))
    assert not np.array_equal(order.indices(0, 50), order.indices(50, 50))  # re-permuted each epoch
    assert not np.array_equal(order.indices(0, 50), np.arange(50))


def test_matches_slow_reference_across_epochs() -> None:
    cfg = OrderConfig(seed=7, portion=1, num_portions=3)
    order = SequenceOrder(cfg, 31)
    got = order.indices(5, 40)  # portion of 10 (10..19): spans 5 epochs
    assert got.tolist() == [slow_index(cfg, 31, p) for p in range(5, 45)]
    assert got.dtype == np.int64


def test_portions_are_contiguous_and_disjoint() -> None:
    n, k = 103, 4
    seen = []
    for p in range(k):
        order = SequenceOrder(OrderConfig(portion=p, num_portions=k), n)
        lo, hi = portion_bounds(n, k, p)
        idx = order.indices(0, 3 * (hi - lo))
        assert set(idx.tolist()) == set(range(lo, hi))
        seen.append(set(idx.tolist()))
    assert set().union(*seen) == set(range(n))
    assert sum(len(s) for s in seen) == n


def test_determinism_by_seed() -> None:
    a = SequenceOrder(OrderConfig(seed=1), 64).indices(0, 200)
    b = SequenceOrder(OrderConfig(seed=1), 64).indices(0, 200)
    c = SequenceOrder(OrderConfig(seed=2), 64).indices(0, 200)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(epoch_permutation(1, 0, 64), a[:64])


def test_window_equals_concatenation_of_smaller_calls() -> None:
    order = SequenceOrder(OrderConfig(seed=5, portion=0, num_portions=2), 37)  # portion of 18
    whole = order.indices(11, 60)
    fresh = SequenceOrder(OrderConfig(seed=5, portion=0, num_portions=2), 37)
    parts = np.concatenate([fresh.indices(11, 7), fresh.indices(18, 0), fresh.indices(18, 30), fresh.indices(48, 23)])
    assert np.array_equal(whole, parts)


def test_no_shuffle_is_identity_repeated() -> None:
    order = SequenceOrder(OrderConfig(shuffle=False, portion=1, num_portions=2), 10)
    assert order.indices(3, 6).tolist() == [8, 9, 5, 6, 7, 8]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_portions"):
        SequenceOrder(OrderConfig(portion=2, num_portions=5), 3)
    with pytest.raises(ValueError, match="order.seed"):
        SequenceOrder(OrderConfig(seed=-1), 3)
    with pytest.raises(ValueError, match="start"):
        SequenceOrder(OrderConfig(), 3).indices(-1, 2)
