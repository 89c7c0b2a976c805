"""Validation loss on a fixed set of items (the first items of the val split), so curves compare."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from wsdlab.common.errors import ConfigError
from wsdlab.common.types import MaskedBatch
from wsdlab.models import batch_loss, batch_loss_and_accuracy


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move an LM batch (tensor) or a vision batch (tuple of tensors) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Sequence):
        return type(batch)(to_device(b, device) for b in batch) if isinstance(batch, tuple) else [
            to_device(b, device) for b in batch]
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


def eval_index_chunks(num_val: int, num_batches: int, batch_size: int,
                      chunk_size: int | None = None) -> list[np.ndarray]:
    """Indices 0..n-1 of the val split (n = num_batches * batch_size, at most num_val) in consecutive
    chunks of min(batch_size, chunk_size) (the chunk size bounds memory; the set depends on neither)."""
    if num_batches <= 0 or batch_size <= 0 or (chunk_size is not None and chunk_size <= 0):
        raise ConfigError(f"eval needs num_batches > 0, batch_size > 0 and chunk_size > 0, got {num_batches}, "
                          f"{batch_size}, {chunk_size}")
    if num_val <= 0:
        raise ConfigError("the validation split is empty; raise data.val_fraction or add documents")
    n = min(num_batches * batch_size, num_val)
    step = min(batch_size, chunk_size or batch_size)
    idx = np.arange(n, dtype=np.int64)
    return [idx[i:i + step] for i in range(0, n, step)]


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, num_batches: int, batch_size: int, device: torch.device | str,
             autocast: contextlib.AbstractContextManager | None = None, *, chunk_size: int | None = None) -> float:
    """Mean validation loss over the fixed set of `evaluate_metrics` (eval mode, no grad)."""
    return evaluate_metrics(model, data, num_batches, batch_size, device, autocast, chunk_size=chunk_size)["val_loss"]


@torch.no_grad()
def evaluate_metrics(model: nn.Module, data: Any, num_batches: int, batch_size: int, device: torch.device | str,
                     autocast: contextlib.AbstractContextManager | None = None, *,
                     chunk_size: int | None = None) -> dict[str, float]:
    """`{"val_loss": ..., "val_accuracy": ...}` over the first num_batches * batch_size items of the val
    split, computed in chunks of at most `chunk_size` items; the model's train/eval mode is restored.

    Plain batches: the loss and accuracy are means over items (chunk means weighted by chunk size; every
    item has the same number of targets). Masked (SFT) batches: the loss is the mean over all response
    tokens of the set (sum of their losses / their number), so no chunking changes it. `val_accuracy`
    only for classifiers (vision data).
    """
    was_training = model.training
    model.eval()
    total, correct, count, has_accuracy = 0.0, 0.0, 0.0, True
    try:
        for idx in eval_index_chunks(data.num_val, num_batches, batch_size, chunk_size):
            batch = to_device(data.val_batch(idx), device)
            if isinstance(batch, MaskedBatch):
                with autocast or contextlib.nullcontext():
                    total += float(batch_loss(model, batch, reduction="sum"))
                count += float(batch.mask.sum(dtype=torch.float64))
                has_accuracy = False
                continue
            with autocast or contextlib.nullcontext():
                loss, accuracy = batch_loss_and_accuracy(model, batch)
            total += float(loss) * len(idx)
            if accuracy is None:
                has_accuracy = False
            else:
                correct += float(accuracy) * len(idx)
            count += len(idx)
    finally:
        model.train(was_training)
    out = {"val_loss": total / max(count, 1.0)}
    if has_accuracy:
        out["val_accuracy"] = correct / count
    return out
