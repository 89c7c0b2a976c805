"""Rotary position embeddings (RoPE, Su et al. 2021), shared by the Llama and GPT-NeoX models.

Convention: the "rotate half" layout of GPT-NeoX / Hugging Face Llama. Of the first `rot_dim`
channels of a head, channel i (i < rot_dim/2) is paired with channel i + rot_dim/2 and the pair is
rotated by the angle pos * theta^(-2i/rot_dim). Channels past `rot_dim` pass through (partial rotary).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_dim(head_dim: int, rotary_pct: float) -> int:
    """Number of rotated channels per head: int(head_dim * rotary_pct) rounded down to even (GPT-NeoX)."""
    rot = int(head_dim * rotary_pct) // 2 * 2
    if rot < 2:
        raise ValueError(f"model.rotary_pct ({rotary_pct}) leaves fewer than 2 rotated channels of head_dim {head_dim}")
    return rot


def rope_tables(rot_dim: int, seq_len: int, theta: float, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin tables, each (seq_len, rot_dim), float32."""
    # RoFormer eq. (15): theta_i = base^(-2(i-1)/d); angle of position m is m * theta_i
    inv_freq = theta ** (-torch.arange(0, rot_dim, 2, device=device, dtype=torch.float32) / rot_dim)  # (rot/2,)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # (T, rot/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, rot): channel i and i + rot/2 share an angle
    return angles.cos(), angles.sin()


def _rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, head_dim) by position; cos/sin (T, rot_dim) with rot_dim <= head_dim."""
    rot_dim = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if rot_dim == x.shape[-1]:
        # RoFormer eq. (34): R(m) x = x * cos(m theta) + rotate_half(x) * sin(m theta)
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
    return torch.cat([x_rot * cos + _rotate_half(x_rot) * sin, x_pass], dim=-1)
