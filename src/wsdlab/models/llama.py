"""Llama-style decoder (nanoGPT-sized file): RMSNorm pre-norm, SwiGLU MLP, RoPE, grouped-query attention.

Parameter names follow Meta's reference implementation (tok_embeddings, layers.i.attention.wq/wk/wv/wo,
layers.i.feed_forward.w1/w2/w3, attention_norm, ffn_norm, norm, output). No biases anywhere.
RoPE rotates every channel of a head (LlamaConfig has no rotary_pct).
Shapes: B batch, T time, d d_model, H query heads, K kv heads, hd head dim, V vocab, F ffn_dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsdlab.models.attention import causal_attention
from wsdlab.models.checkpointing import CheckpointableBlock
from wsdlab.models.config import LlamaConfig
from wsdlab.models.rope import apply_rope, rope_tables

INIT_STD = 0.02


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in at least float32 and cast back (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 -> fp32; fp64 stays fp64
        # RMSNorm eq. (4): x / sqrt(mean(x^2) + eps) * g
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Attention(nn.Module):
    """Causal self-attention with RoPE and K <= H key/value heads."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.attn_head_dim
        self.wq = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = causal_attention(q, k, v)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))  # (B, T, d)


class FeedForward(nn.Module):
    """SwiGLU MLP (Shazeer 2020): w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)  # down

    def forward(self, x: Tensor) -> Tensor:
        # GLU Variants eq. (6): FFN_SwiGLU(x) = (Swish(x W) * x V) W2
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, T, F) -> (B, T, d)


class Block(CheckpointableBlock):
    """Pre-norm residual block: x + attn(norm(x)), then + mlp(norm(.))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def body(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    """Token ids (B, T) -> logits (B, T, V), T <= cfg.seq_len."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.rot_dim = cfg.rot_dim
        # RoPE tables are derived from the config: not saved in state_dicts (non-persistent).
        self.register_buffer("rope_cos", torch.empty(cfg.seq_len, self.rot_dim), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.seq_len, self.rot_dim), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, 0.02) weights, residual output projections (wo, w2) scaled by 1/sqrt(2 L) (GPT-2), RoPE tables.

        Call again after `to_empty()` when the model was built on the meta device.
        """
        cos, sin = rope_tables(self.rot_dim, self.cfg.seq_len, self.cfg.rope_theta, device=self.rope_cos.device)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        out_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = out_std if name.endswith(("attention.wo", "feed_forward.w2")) else INIT_STD
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def _tables(self, t: int) -> tuple[Tensor, Tensor]:
        if t > self.cfg.seq_len:
            raise ValueError(f"input length {t} exceeds model.seq_len {self.cfg.seq_len}")
        return self.rope_cos[:t], self.rope_sin[:t]

    def hidden_states(self, idx: Tensor) -> list[Tensor]:
        """[embedding output, after block 1, ..., after block L], each (B, T, d)."""
        cos, sin = self._tables(idx.shape[1])
        x = self.tok_embeddings(idx)  # (B, T, d)
        states = [x]
        for layer in self.layers:
            x = layer(x, cos, sin)
            states.append(x)
        return states

    def head(self, h: Tensor) -> Tensor:
        """Final norm + output projection: (B, T, d) -> (B, T, V)."""
        return self.output(self.norm(h))

    def forward(self, idx: Tensor) -> Tensor:
        cos, sin = self._tables(idx.shape[1])
        x = self.tok_embeddings(idx)  # (B, T, d)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.head(x)  # (B, T, V)


def llama_num_parameters(cfg: LlamaConfig) -> int:
    """Analytic parameter count of `Llama(cfg)` (tied embeddings counted once)."""
    d, hd = cfg.d_model, cfg.attn_head_dim
    attn = d * hd * (2 * cfg.n_heads + 2 * cfg.kv_heads)  # wq, wo + wk, wv
    mlp = 3 * d * cfg.ffn_dim
    per_layer = attn + mlp + 2 * d  # + two RMSNorm gains
    embed = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return embed + cfg.n_layers * per_layer + d
