"""GPT-NeoX / Pythia-style decoder: LayerNorm, parallel residual, partial rotary, GELU MLP, biases.

Parameter names and the fused query_key_value layout follow Hugging Face's GPTNeoX (embed_in,
layers.i.input_layernorm, post_attention_layernorm, attention.query_key_value, attention.dense,
mlp.dense_h_to_4h, mlp.dense_4h_to_h, final_layer_norm, embed_out), so Pythia weights map one to one.
Shapes: B batch, T time, d d_model, H heads, hd head dim, V vocab, F ffn_dim (4 d for Pythia).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsdlab.models.attention import causal_attention
from wsdlab.models.checkpointing import CheckpointableBlock
from wsdlab.models.config import NeoXConfig
from wsdlab.models.rope import apply_rope, rope_tables

INIT_STD = 0.02


class Attention(nn.Module):
    """Multi-head causal self-attention, RoPE on the first rotary_pct of each head."""

    def __init__(self, cfg: NeoXConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.attn_head_dim
        inner = self.n_heads * self.head_dim
        self.query_key_value = nn.Linear(cfg.d_model, 3 * inner, bias=cfg.bias)
        self.dense = nn.Linear(inner, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, t, _ = x.shape
        qkv = self.query_key_value(x).view(b, t, self.n_heads, 3 * self.head_dim).transpose(1, 2)  # (B, H, T, 3hd)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, H, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = causal_attention(q, k, v)  # (B, H, T, hd)
        return self.dense(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))  # (B, T, d)


class MLP(nn.Module):
    """dense_4h_to_h(gelu(dense_h_to_4h x)), exact (erf) GELU as in Pythia."""

    def __init__(self, cfg: NeoXConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=cfg.bias)
        self.dense_4h_to_h = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # (B, T, F) -> (B, T, d)


class Block(CheckpointableBlock):
    """Parallel: x + attn(ln1(x)) + mlp(ln2(x)); sequential: x + attn(ln1(x)), then + mlp(ln2(.))."""

    def __init__(self, cfg: NeoXConfig) -> None:
        super().__init__()
        self.parallel = cfg.parallel_residual
        self.input_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attention = Attention(cfg)
        self.mlp = MLP(cfg)

    def body(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        attn = self.attention(self.input_layernorm(x), cos, sin)
        if self.parallel:
            return x + attn + self.mlp(self.post_attention_layernorm(x))
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x))


class NeoX(nn.Module):
    """Token ids (B, T) -> logits (B, T, V), T <= cfg.seq_len."""

    def __init__(self, cfg: NeoXConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_in = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.embed_out = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.embed_out.weight = self.embed_in.weight
        self.rot_dim = cfg.rot_dim
        self.register_buffer("rope_cos", torch.empty(cfg.seq_len, self.rot_dim), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.seq_len, self.rot_dim), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, 0.02) weights, zero biases, output projections (dense, dense_4h_to_h) scaled by 1/sqrt(2 L).

        Call again after `to_empty()` when the model was built on the meta device.
        """
        cos, sin = rope_tables(self.rot_dim, self.cfg.seq_len, self.cfg.rope_theta, device=self.rope_cos.device)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        out_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = out_std if name.endswith(("attention.dense", "mlp.dense_4h_to_h")) else INIT_STD
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()

    def _tables(self, t: int) -> tuple[Tensor, Tensor]:
        if t > self.cfg.seq_len:
            raise ValueError(f"input length {t} exceeds model.seq_len {self.cfg.seq_len}")
        return self.rope_cos[:t], self.rope_sin[:t]

    def hidden_states(self, idx: Tensor) -> list[Tensor]:
        """[embedding output, after block 1, ..., after block L], each (B, T, d)."""
        cos, sin = self._tables(idx.shape[1])
        x = self.embed_in(idx)  # (B, T, d)
        states = [x]
        for layer in self.layers:
            x = layer(x, cos, sin)
            states.append(x)
        return states

    def head(self, h: Tensor) -> Tensor:
        """Final LayerNorm + embed_out: (B, T, d) -> (B, T, V)."""
        return self.embed_out(self.final_layer_norm(h))

    def forward(self, idx: Tensor) -> Tensor:
        cos, sin = self._tables(idx.shape[1])
        x = self.embed_in(idx)  # (B, T, d)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.head(x)  # (B, T, V)


def neox_num_parameters(cfg: NeoXConfig) -> int:
    """Analytic parameter count of `NeoX(cfg)` (tied embeddings counted once)."""
    d, inner, f = cfg.d_model, cfg.n_heads * cfg.attn_head_dim, cfg.ffn_dim
    b = 1 if cfg.bias else 0
    attn = d * 3 * inner + b * 3 * inner + inner * d + b * d
    mlp = d * f + b * f + f * d + b * d
    per_layer = attn + mlp + 2 * 2 * d  # + two LayerNorms (weight, bias)
    embed = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return embed + cfg.n_layers * per_layer + 2 * d
