"""The fixed evaluation set every geometry measurement is taken on, and the loss over it.

A measurement is a function of the model weights only if the data is fixed: the batches are drawn
once (seeded) and the loss is the mean over all their items, i.e. the per-batch mean losses
weighted by batch size. The math SDPA kernel is used wherever a double backward or vmap runs
through attention (flash and memory-efficient kernels have neither).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Batch
from wsdlab.models.attention import math_attention as _model_math_attention

LossFn = Callable[[nn.Module, Batch], Tensor]
Split = Literal["val", "train"]


def batch_size_of(batch: Batch) -> int:
    """Items in a batch: rows of an LM batch (B, T+1), images of a vision batch (images, labels)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if len(batch) == 0:
        raise ValueError("batch is empty")
    return int(batch[0].shape[0])


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """w_b = n_b / sum n: the mean loss over all items is sum_b w_b * (mean loss of batch b)."""
    if len(batches) == 0:
        raise ValueError("batches: need at least one batch")
    sizes = [batch_size_of(b) for b in batches]
    total = sum(sizes)
    if total == 0:
        raise ValueError("batches: all batches are empty")
    return [s / total for s in sizes]


def move_batch(batch: Batch, device: torch.device | str) -> Batch:
    """The batch on `device` (LM tensor, vision tuple, or a MaskedBatch, whose type is kept)."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    return type(batch)(t.to(device) for t in batch) if isinstance(batch, tuple) else tuple(t.to(device) for t in batch)


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Attention on SDPA's math kernel, the only one with a double backward and batchable under vmap.

    Per thread (`wsdlab.models.attention.math_attention`: every wsdlab LM's attention reads it), so
    concurrent analyses do not change each other's kernels, as the process-wide `sdpa_kernel` would.
    """
    with _model_math_attention():
        yield


@torch.no_grad()
def mean_loss(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch]) -> float:
    """sum_b w_b loss_fn(model, batch_b): the mean loss over all items of the batches."""
    total = 0.0
    for batch, w in zip(batches, batch_weights(batches)):
        total += w * float(loss_fn(model, batch))
    return total


def loss_and_gradient(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                      params: Sequence[nn.Parameter] | None = None) -> tuple[float, list[Tensor]]:
    """Mean loss over the batches and its gradient (one tensor per parameter, detached)."""
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    total = 0.0
    for batch, w in zip(batches, batch_weights(batches)):
        loss = loss_fn(model, batch) * w
        for g, part in zip(grads, torch.autograd.grad(loss, params, allow_unused=True)):
            if part is not None:
                g.add_(part)
        total += float(loss.detach())
    return total, grads


def truncate_sequence(batch: Batch, seq_len: int | None) -> Batch:
    """An LM batch cut to seq_len targets (B, seq_len + 1); vision batches and None pass through."""
    if seq_len is None or not isinstance(batch, Tensor):
        return batch
    if seq_len < 1:
        raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
    return batch[:, : seq_len + 1]


def fixed_batches(data: Any, split: Split = "val", num_batches: int = 1, batch_size: int = 8, seed: int = 0,
                  seq_len: int | None = None, device: torch.device | str = "cpu") -> list[Batch]:
    """`num_batches` batches of `batch_size` items of a DataBundle split, drawn without replacement by `seed`.

    Fewer items than asked (a small split) gives fewer/smaller batches, never repeats.
    """
    if split not in ("val", "train"):
        raise ConfigError(f"split must be 'val' or 'train', got {split!r}")
    if num_batches < 1 or batch_size < 1:
        raise ConfigError(f"num_batches and batch_size must be >= 1, got {num_batches}, {batch_size}")
    size = int(data.num_val if split == "val" else data.num_train)
    if size <= 0:
        raise ValueError(f"the {split} split is empty")
    count = min(size, num_batches * batch_size)
    idx = np.random.default_rng(seed).permutation(size)[:count].astype(np.int64)
    get = data.val_batch if split == "val" else data.train_batch
    return [move_batch(truncate_sequence(get(np.sort(idx[i:i + batch_size])), seq_len), device)
            for i in range(0, count, batch_size)]
