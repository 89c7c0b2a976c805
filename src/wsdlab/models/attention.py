"""Causal scaled-dot-product attention with grouped-query heads, the one attention call of every LM.

Key/value heads are repeated to the number of query heads (Llama's `repeat_kv`) rather than passed
with `enable_gqa`: that works with every SDPA backend (flash, memory-efficient, math, CPU), under
autocast, torch.compile and double backward.

Callers that need a double backward (Hessian-vector products) or vmap through attention wrap the
model call in `math_attention()`: attention then runs SDPA's math kernel itself
(`aten._scaled_dot_product_attention_math`, bit for bit what `sdpa_kernel(SDPBackend.MATH)` selects).
The switch is per thread, unlike `sdpa_kernel`, whose backend flags are process-wide: a study
computes analyses in several threads at once, and a Hessian in one must not move another thread's
plain evaluation onto a different kernel (and so change its numbers).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

_LOCAL = threading.local()


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """In this thread, attention uses the math kernel (double backward, vmap) until the block ends."""
    before = getattr(_LOCAL, "math", False)
    _LOCAL.math = True
    try:
        yield
    finally:
        _LOCAL.math = before


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd); query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, n_kv, t, hd = x.shape
    return x[:, :, None].expand(b, n_kv, n_rep, t, hd).reshape(b, n_kv * n_rep, t, hd)


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q (B, H, T, hd), k/v (B, H_kv, T, hd) -> (B, H, T, hd); softmax(q k^T / sqrt(hd) + causal mask) v."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    if not torch.compiler.is_compiling() and getattr(_LOCAL, "math", False):
        return torch.ops.aten._scaled_dot_product_attention_math(q, k, v, None, 0.0, True)[0]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)
