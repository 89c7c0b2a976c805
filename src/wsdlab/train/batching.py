"""Global batch -> this rank's slice -> micro batches (gradient accumulation), in stream positions."""

from __future__ import annotations

import numpy as np

from wsdlab.common.errors import ConfigError
from wsdlab.train.config import TrainConfig


def global_batch_size(train: TrainConfig, tokens_per_item: int) -> int:
    """Sequences (or images) per optimizer step: batch_tokens // tokens_per_item when set, else batch_size."""
    if train.batch_tokens is None:
        return train.batch_size
    items = train.batch_tokens // tokens_per_item
    if items < 1:
        raise ConfigError(f"train.batch_tokens ({train.batch_tokens}) is smaller than one item ({tokens_per_item} tokens)")
    return items


def rank_slice(positions: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous share of the global batch; the global batch must divide evenly."""
    n = len(positions)
    if n % world_size:
        raise ConfigError(f"global batch ({n}) must be divisible by the number of processes ({world_size})")
    per = n // world_size
    return positions[rank * per:(rank + 1) * per]


def micro_batches(positions: np.ndarray, micro_batch_size: int | None) -> list[np.ndarray]:
    """Split a rank's positions into consecutive micro batches (the last may be smaller)."""
    size = micro_batch_size or len(positions)
    return [positions[i:i + size] for i in range(0, len(positions), size)]
