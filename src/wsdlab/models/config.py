"""Model config: one dataclass-like pydantic model for every architecture, built from named presets."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from wsdlab.common.config import StrictModel

Arch = Literal["llama", "neox", "cnn"]


class ModelConfig(StrictModel):
    """Architecture hyper-parameters. `preset` names where the numbers came from (informational).

    Language models (llama, neox) take token ids (B, T) and return logits (B, T, vocab_size).
    The CNN takes images (B, C, H, W) and returns logits (B, num_classes).
    """

    model_config = ConfigDict(allow_inf_nan=False)  # NaN / inf numbers are rejected

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

    @property
    def attn_head_dim(self) -> int:
        """Channels per attention head: head_dim, else d_model // n_heads."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads (grouped-query attention); n_heads when n_kv_heads is not set."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelConfig":
        if self.arch == "cnn":
            if not self.channels:
                raise ValueError("channels must list at least one convolution width")
            return self
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) when head_dim is not set")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.kv_heads})")
        if self.arch == "neox" and self.kv_heads != self.n_heads:
            raise ValueError(f"n_kv_heads ({self.n_kv_heads}) must equal n_heads for arch 'neox' (multi-head attention)")
        if int(self.attn_head_dim * self.rotary_pct) < 2:
            raise ValueError(f"rotary_pct ({self.rotary_pct}) rotates fewer than 2 of {self.attn_head_dim} head channels")
        return self
