"""The order in which a run reads training sequences: a pure function of (OrderConfig, num_train).

The train sequences are split into `num_portions` contiguous disjoint portions; a run reads portion
`portion`. Its stream is epoch after epoch of that portion, each epoch a permutation drawn by a
numpy Generator seeded with (seed, epoch) (the identity when shuffle=False). Stream position i is
epoch i // m, offset i % m, for a portion of m sequences, so any window of the stream can be
computed without replaying the ones before it: the data cursor alone fixes where a run is.
"""

from __future__ import annotations

import numpy as np

from wsdlab.common.errors import ConfigError
from wsdlab.data.config import OrderConfig


def portion_bounds(num_items: int, num_portions: int, portion: int) -> tuple[int, int]:
    """[lo, hi) of portion `portion` when `num_items` are cut into `num_portions` near-equal contiguous parts."""
    return portion * num_items // num_portions, (portion + 1) * num_items // num_portions


def epoch_permutation(seed: int, epoch: int, size: int) -> np.ndarray:
    """The order of one epoch: a permutation of range(size) from a Generator seeded by (seed, epoch)."""
    return np.random.default_rng((seed, epoch)).permutation(size)


class SequenceOrder:
    """Stream positions -> train sequence indices, for one `OrderConfig`."""

    def __init__(self, order: OrderConfig, num_train: int, cache_epochs: int = 4) -> None:
        if num_train < 1:
            raise ValueError(f"num_train must be >= 1, got {num_train}")
        if order.seed < 0:
            raise ConfigError(f"order.seed must be >= 0, got {order.seed}")
        self.order = order
        self.num_train = num_train
        self.lo, self.hi = portion_bounds(num_train, order.num_portions, order.portion)
        if self.hi <= self.lo:
            raise ValueError(
                f"order.num_portions: {order.num_portions} portions of {num_train} train sequences leave "
                f"portion {order.portion} empty"
            )
        self._cache: dict[int, np.ndarray] = {}
        self._cache_epochs = cache_epochs

    @property
    def epoch_size(self) -> int:
        """Sequences in the portion (stream positions per epoch)."""
        return self.hi - self.lo

    def _epoch(self, epoch: int) -> np.ndarray:
        """Portion-local offsets in the order of `epoch` (a small cache of recent epochs)."""
        perm = self._cache.get(epoch)
        if perm is None:
            if self.order.shuffle:
                perm = epoch_permutation(self.order.seed, epoch, self.epoch_size)
            else:
                perm = np.arange(self.epoch_size)
            if len(self._cache) >= self._cache_epochs:
                self._cache.pop(next(iter(self._cache)))
            self._cache[epoch] = perm
        return perm

    def indices(self, start: int, count: int) -> np.ndarray:
        """Train sequence indices (int64) at stream positions start .. start+count-1."""
        if start < 0 or count < 0:
            raise ValueError(f"start and count must be >= 0, got start={start}, count={count}")
        out = np.empty(count, dtype=np.int64)
        m = self.epoch_size
        pos, end = start, start + count
        while pos < end:
            epoch, offset = divmod(pos, m)
            take = min(m - offset, end - pos)
            out[pos - start : pos - start + take] = self._epoch(epoch)[offset : offset + take]
            pos += take
        return out + self.lo
