"""Build a model from its config; analytic parameter and FLOP counts."""

from __future__ import annotations

from torch import nn

from wsdlab.common.errors import ConfigError
from wsdlab.models.cnn import CNN, cnn_forward_macs, cnn_num_parameters
from wsdlab.models.config import ModelConfig
from wsdlab.models.llama import Llama, llama_num_parameters
from wsdlab.models.neox import NeoX, neox_num_parameters


def build_model(cfg: ModelConfig) -> nn.Module:
    """A freshly initialised model on the current default device (use `with torch.device("meta"):` for shapes only)."""
    if cfg.arch == "llama":
        return Llama(cfg)
    if cfg.arch == "neox":
        return NeoX(cfg)
    if cfg.arch == "cnn":
        return CNN(cfg)
    raise ConfigError(f"model.arch: unknown architecture {cfg.arch!r}")


def _vocab_parameters(cfg: ModelConfig) -> int:
    """Parameters in the vocabulary matrices: token embedding, plus the output head when untied."""
    if cfg.arch == "cnn":
        return 0
    return cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)


def num_parameters(model_or_cfg: nn.Module | ModelConfig, *, exclude_embeddings: bool = False) -> int:
    """Number of parameters (shared tensors once): counted on a module, analytic from a config.

    exclude_embeddings (configs only) drops the token embedding and an untied output head (Kaplan et
    al.'s "non-embedding" N); a CNN has none.
    """
    if isinstance(model_or_cfg, nn.Module):
        if exclude_embeddings:
            raise ValueError("exclude_embeddings needs a ModelConfig, not a module")
        return sum(p.numel() for p in model_or_cfg.parameters())
    cfg = model_or_cfg
    if cfg.arch == "llama":
        total = llama_num_parameters(cfg)
    elif cfg.arch == "neox":
        total = neox_num_parameters(cfg)
    elif cfg.arch == "cnn":
        total = cnn_num_parameters(cfg)
    else:
        raise ConfigError(f"model.arch: unknown architecture {cfg.arch!r}")
    return total - _vocab_parameters(cfg) if exclude_embeddings else total


def flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (forward + backward), the PaLM (Chowdhery et al. 2022, App. B) MFU accounting.

    LMs: 6 N + 12 L (H hd) T, where N = non-embedding parameters plus the output head (the head is a
    matmul even when tied; the embedding lookup is free) and the second term is attention's QK^T and
    AV at full context T = seq_len (not halved for causality). CNNs: 6 x forward multiply-accumulates
    per image (an image is one "token").
    """
    if cfg.arch == "cnn":
        return 6.0 * cnn_forward_macs(cfg)
    n = num_parameters(cfg, exclude_embeddings=True) + cfg.vocab_size * cfg.d_model
    # PaLM App. B: 6N + 12 L H Q T
    return 6.0 * n + 12.0 * cfg.n_layers * cfg.n_heads * cfg.attn_head_dim * cfg.seq_len
