"""Causal scaled-dot-product attention with grouped-query heads, the one attention call of every LM.

Key/value heads are repeated to the number of query heads (Llama's `repeat_kv`) rather than passed
with `enable_gqa`: that works with every SDPA backend (flash, memory-efficient, math, CPU), under
autocast, torch.compile and double backward. Callers that need double backward wrap the model call
in `torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, n_kv, T, hd) -> (B, n_kv * n_rep, T, hd); query head h reads kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, n_kv, t, hd = x.shape
    return x[:, :, None].expand(b, n_kv, n_rep, t, hd).reshape(b, n_kv * n_rep, t, hd)


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q (B, H, T, hd), k/v (B, H_kv, T, hd) -> (B, H, T, hd); softmax(q k^T / sqrt(hd) + causal mask) v."""
    n_rep = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal=True)
