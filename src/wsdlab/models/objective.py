"""The one loss of wsdlab: next-token cross-entropy for LMs, classification cross-entropy for images."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsdlab.common.types import Batch, MaskedBatch

Reduction = Literal["mean", "sum", "none"]


def _fp32(logits: Tensor) -> Tensor:
    """Upcast half-precision logits (autocast) to float32; float64 stays float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def batch_loss(model: nn.Module, batch: Batch, reduction: Reduction = "mean") -> Tensor:
    """Cross-entropy of `model` on one batch.

    LM batch: LongTensor (B, T+1); inputs [:, :-1], targets [:, 1:]; "none" gives per-token (B, T).
    Vision batch: (images (B, C, H, W), labels (B,)); "none" gives per-image (B,).
    "mean" averages over all target tokens (or images), "sum" adds them.
    MaskedBatch (tokens (B, T+1), mask (B, T)): only targets with mask 1 count ("loss on response tokens
    only"); "mean" divides by the number of scored tokens, "none" gives per-token losses times the mask.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if isinstance(batch, MaskedBatch):
        tokens, mask = batch
        per_token = batch_loss(model, tokens, reduction="none") * mask.to(torch.float32)  # (B, T)
        if reduction == "none":
            return per_token
        total = per_token.sum()
        return total if reduction == "sum" else total / mask.sum().clamp(min=1).to(total.dtype)
    if isinstance(batch, Tensor):
        if batch.dim() != 2 or batch.shape[1] < 2:
            raise ValueError(f"LM batch must be a (B, T+1) tensor of token ids with T >= 1, got shape {tuple(batch.shape)}")
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = _fp32(model(inputs))  # (B, T, V)
        losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
        return losses.view_as(targets) if reduction == "none" else losses
    if len(batch) != 2:
        raise ValueError(f"vision batch must be (images, labels), got {len(batch)} items")
    images, labels = batch
    logits = _fp32(model(images))  # (B, num_classes)
    return F.cross_entropy(logits, labels, reduction=reduction)


def batch_loss_and_accuracy(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
    """Mean cross-entropy (as `batch_loss`) and, for a classifier (vision batch), its accuracy on the
    batch: the share of images whose arg-max logit is the label (ties: the first index). LMs: None.

    One forward pass; the loss keeps its graph, the accuracy is detached (B,) -> scalar.
    """
    if isinstance(batch, (Tensor, MaskedBatch)):  # token batches (masked ones too): no accuracy
        return batch_loss(model, batch), None
    if len(batch) != 2:
        raise ValueError(f"vision batch must be (images, labels), got {len(batch)} items")
    images, labels = batch
    logits = _fp32(model(images))  # (B, num_classes)
    accuracy = (logits.detach().argmax(dim=-1) == labels).double().mean()
    return F.cross_entropy(logits, labels), accuracy
