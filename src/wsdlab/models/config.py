"""Model config: one dataclass-like pydantic model for every architecture, built from named presets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from wsdlab.common.config import StrictModel

Arch = Literal["llama", "neox", "cnn"]


class ModelConfig(StrictModel):
    """Architecture hyper-parameters. `preset` names where the numbers came from (informational).

    Language models (llama, neox) take token ids (B, T) and return logits (B, T, vocab_size).
    The CNN takes images (B, C, H, W) and returns logits (B, num_classes).
    """

    arch: Arch = "llama"
    preset: str | None = None
    # language models
    vocab_size: int = Field(50304, gt=0)
    seq_len: int = Field(512, gt=0, description="Context length (max positions for RoPE tables).")
    d_model: int = Field(512, gt=0)
    n_layers: int = Field(10, gt=0)
    n_heads: int = Field(8, gt=0)
    n_kv_heads: int | None = Field(None, gt=0, description="Grouped-query attention; None = n_heads.")
    head_dim: int | None = Field(None, gt=0, description="None = d_model // n_heads.")
    ffn_dim: int = Field(1536, gt=0)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    rotary_pct: float = Field(1.0, gt=0.0, le=1.0, description="neox: fraction of head dim rotated.")
    parallel_residual: bool = Field(True, description="neox: attention and MLP in parallel.")
    bias: bool = Field(True, description="neox: biases in linear layers.")
    # cnn
    in_channels: int = Field(3, gt=0)
    image_size: int = Field(32, gt=0)
    num_classes: int = Field(10, gt=0)
    channels: list[int] = Field(default_factory=lambda: [32, 128, 128, 128])
