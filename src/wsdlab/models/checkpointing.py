"""Activation checkpointing per transformer block: keep each block's input, recompute its inside in backward.

A model with `activation_checkpointing = True` runs each block under
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)` while it trains (module in train mode and grad
enabled): the forward then stores one (B, T, d) tensor per block instead of every intermediate, and the
backward runs each block's forward once more (about a third more compute). The recomputation repeats the
same operations on the same inputs, so the loss and gradients are those without checkpointing (bit for
bit in fp32 on CPU; tests/test_activation_checkpointing.py). Evaluation and the analyses (eval mode, or
under `torch.no_grad()`) never checkpoint, so Hessian-vector products (double backward) see the plain graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def run_block(model: nn.Module, block: nn.Module, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """block(x, cos, sin), checkpointed when `model.activation_checkpointing` is on and it is training."""
    if getattr(model, "activation_checkpointing", False) and model.training and torch.is_grad_enabled():
        return checkpoint(block, x, cos, sin, use_reentrant=False)
    return block(x, cos, sin)


def set_activation_checkpointing(model: nn.Module, on: bool) -> None:
    """Turn block checkpointing on or off; ValueError when `on` and the model has no blocks (the CNN)."""
    if on and not hasattr(model, "activation_checkpointing"):
        raise ValueError(f"{type(model).__name__} has no transformer blocks to checkpoint")
    if hasattr(model, "activation_checkpointing"):
        model.activation_checkpointing = on
