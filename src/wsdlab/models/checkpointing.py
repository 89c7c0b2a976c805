"""Activation checkpointing per transformer block: keep each block's input, recompute its inside in backward.

A block with `activation_checkpointing = True` runs its body under
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)` while it trains (module in train mode and grad
enabled): the forward then stores one (B, T, d) tensor per block instead of every intermediate, and the
backward runs the block's body once more (about a third more compute). The recomputation repeats the
same operations on the same inputs, so the loss and gradients are those without checkpointing (bit for
bit in fp32 on CPU; tests/test_activation_checkpointing.py). Evaluation and the analyses (eval mode, or
under `torch.no_grad()`) never checkpoint, so Hessian-vector products (double backward) see the plain graph.

The checkpoint sits inside the block's `forward` (torchtitan's order: checkpoint wrapper inside
`fully_shard`): FSDP2's hooks run on the block call, and the recomputation calls the body alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class CheckpointableBlock(nn.Module):
    """A transformer block whose body (`body(x, cos, sin)`) is recomputed in backward when checkpointing is on."""

    activation_checkpointing: bool = False

    def body(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self.body, x, cos, sin, use_reentrant=False)
        return self.body(x, cos, sin)


def set_activation_checkpointing(model: nn.Module, on: bool) -> None:
    """Turn block checkpointing on or off; ValueError when `on` and the model has no blocks (the CNN)."""
    blocks = [m for m in model.modules() if isinstance(m, CheckpointableBlock)]
    if on and not blocks:
        raise ValueError(f"{type(model).__name__} has no transformer blocks to checkpoint")
    for block in blocks:
        block.activation_checkpointing = on
