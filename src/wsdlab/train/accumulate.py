"""Gradient accumulation: one rank's micro batches -> the gradient of the global batch's loss.

Plain batches (LM sequences, images: every item has the same number of targets): micro batch j's mean
loss weighs len(j) / (items of the rank), and DDP / FSDP average the ranks' gradients, so the gradient is
that of the mean over the global batch.

Masked batches (supervised fine-tuning: only response tokens are scored) hold unequal numbers of targets,
so that weighting would change the gradient with micro_batch_size. The global batch's loss is

    L = (1 / N) * sum over the response tokens t of the global batch of l_t,  N = their number,

so micro batch j contributes (sum over its response tokens of l_t) / N. N is counted over all micro
batches and summed over ranks before the first backward pass; each contribution is multiplied by the
world size because DDP / FSDP average the ranks' gradients. Every response token then weighs 1 / N,
whatever micro_batch_size and the number of ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from wsdlab.common.types import MaskedBatch
from wsdlab.models import batch_loss, batch_loss_and_accuracy
from wsdlab.train import distributed as dist_utils
from wsdlab.train.distributed import DistContext

AutocastFactory = Callable[[], contextlib.AbstractContextManager]


def accumulate_gradients(fwd: nn.Module, load: Callable[[np.ndarray], Any], chunks: Sequence[np.ndarray],
                         ctx: DistContext, autocast: AutocastFactory = contextlib.nullcontext,
                         ) -> tuple[Tensor, Tensor | None]:
    """Forward and backward passes over this rank's micro batches `chunks` (`load(idx)` gives one on the
    device), adding into the parameters' `.grad` the gradient of the global batch's loss.

    Returns (loss, accuracy): float64 tensors whose mean over ranks is the global batch's loss (and, for
    classifiers, its accuracy before the update; None otherwise).
    """
    first = load(chunks[0])
    if isinstance(first, MaskedBatch):
        return _masked(fwd, [first, *(load(idx) for idx in chunks[1:])], ctx, autocast), None
    return _per_item(fwd, first, load, chunks, ctx, autocast)


def _per_item(fwd: nn.Module, first: Any, load: Callable[[np.ndarray], Any], chunks: Sequence[np.ndarray],
              ctx: DistContext, autocast: AutocastFactory) -> tuple[Tensor, Tensor | None]:
    """Equal targets per item: micro batch means weighted by their share of the rank's items."""
    n = sum(len(idx) for idx in chunks)
    loss_sum = torch.zeros((), device=ctx.device, dtype=torch.float64)
    acc_sum: Tensor | None = None
    for i, idx in enumerate(chunks):
        batch = first if i == 0 else load(idx)
        with dist_utils.no_sync(fwd, last=i == len(chunks) - 1), autocast():
            loss, acc = batch_loss_and_accuracy(fwd, batch)
            (loss * (len(idx) / n)).backward()
        loss_sum += loss.detach().double() * (len(idx) / n)
        if acc is not None:
            acc_sum = (acc_sum if acc_sum is not None else torch.zeros_like(loss_sum)) + acc * (len(idx) / n)
    return loss_sum, acc_sum


def response_tokens(batches: Sequence[MaskedBatch], ctx: DistContext) -> Tensor:
    """N: the scored (response) tokens of the global batch, summed over ranks (float64 on the device)."""
    local = sum((b.mask.sum(dtype=torch.float64) for b in batches), torch.zeros((), dtype=torch.float64,
                                                                                  device=ctx.device))
    return dist_utils.all_reduce_sum(local, ctx)


def _masked(fwd: nn.Module, batches: Sequence[MaskedBatch], ctx: DistContext, autocast: AutocastFactory) -> Tensor:
    """Masked batches: micro batch j adds world_size * (sum of its response-token losses) / N."""
    total = response_tokens(batches, ctx).clamp(min=1)
    loss_sum = torch.zeros((), device=ctx.device, dtype=torch.float64)
    for i, batch in enumerate(batches):
        with dist_utils.no_sync(fwd, last=i == len(batches) - 1), autocast():
            tokens_loss = batch_loss(fwd, batch, reduction="sum")
            (tokens_loss * ctx.world_size / total.to(tokens_loss.dtype)).backward()
        loss_sum += tokens_loss.detach().double() * ctx.world_size / total
    return loss_sum
