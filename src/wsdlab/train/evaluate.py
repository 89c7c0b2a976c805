"""Validation loss on a fixed set of batches (the first items of the val split), so curves compare."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from wsdlab.common.errors import ConfigError
from wsdlab.models import batch_loss, batch_loss_and_accuracy


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move an LM batch (tensor) or a vision batch (tuple of tensors) to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Sequence):
        return type(batch)(to_device(b, device) for b in batch) if isinstance(batch, tuple) else [
            to_device(b, device) for b in batch]
    raise TypeError(f"unsupported batch type {type(batch).__name__}")


def eval_index_chunks(num_val: int, num_batches: int, batch_size: int) -> list[np.ndarray]:
    """Indices 0..n-1 of the val split (n = num_batches * batch_size, at most num_val) in batches."""
    if num_batches <= 0 or batch_size <= 0:
        raise ConfigError(f"eval needs num_batches > 0 and batch_size > 0, got {num_batches}, {batch_size}")
    if num_val <= 0:
        raise ConfigError("the validation split is empty; raise data.val_fraction or add documents")
    n = min(num_batches * batch_size, num_val)
    idx = np.arange(n, dtype=np.int64)
    return [idx[i:i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, num_batches: int, batch_size: int, device: torch.device | str,
             autocast: contextlib.AbstractContextManager | None = None) -> float:
    """Mean validation loss over fixed batches, weighted by batch size (eval mode, no grad).

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for idx in eval_index_chunks(data.num_val, num_batches, batch_size):
            batch = to_device(data.val_batch(idx), device)
            with autocast or contextlib.nullcontext():
                loss = batch_loss(model, batch)
            total += float(loss) * len(idx)
            count += len(idx)
    finally:
        model.train(was_training)
    return total / count


@torch.no_grad()
def evaluate_metrics(model: nn.Module, data: Any, num_batches: int, batch_size: int, device: torch.device | str,
                     autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """`{"val_loss": ..., "val_accuracy": ...}` over the same fixed batches as `evaluate` (both means
    weighted by batch size); `val_accuracy` only for classifiers (vision data)."""
    was_training = model.training
    model.eval()
    total, correct, count, has_accuracy = 0.0, 0.0, 0, True
    try:
        for idx in eval_index_chunks(data.num_val, num_batches, batch_size):
            batch = to_device(data.val_batch(idx), device)
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
    out = {"val_loss": total / count}
    if has_accuracy:
        out["val_accuracy"] = correct / count
    return out
