"""Named model configs. Parameter counts (total / without the vocab matrices) are pinned in tests/test_models.py.

- tiny: the CPU default (trains at thousands of tokens/s on 2 cores); matches DataConfig's defaults.
- micro: ~1.1K parameters, small enough to build and diagonalise the full Hessian.
- 60M, 210M: the Llama models of the cooldown-shapes study (schedules-and-scaling codebase: tied
  embeddings, SwiGLU width 8d/3 rounded up to a multiple of 256); names are total counts with tying.
- 1B, 8B: the WSO paper's models (App. A, Table 5: "Both the 1B and 8B models follow the Llama 3
  architecture [...] RoPE theta 10000, RMS norm eps 1e-5", vocabulary 128,256), the shapes of
  Llama-3.2-1B (tied) and Llama-3.1-8B (untied); no long-context RoPE frequency scaling.
- pythia-160m: GPT-NeoX shapes of Pythia-160M (162,322,944 parameters, untied embed_out).
- cnn, cnn-fmnist: the universality study's CNN on CIFAR-10 (3x32x32) and Fashion-MNIST (1x28x28).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from wsdlab.common.config import describe_validation_error
from wsdlab.common.errors import ConfigError
from wsdlab.models.config import ModelConfig

_ADAPTER: TypeAdapter[ModelConfig] = TypeAdapter(ModelConfig)


def _llama(**kw: Any) -> dict[str, Any]:
    return {"arch": "llama", **kw}


_PRESET_FIELDS: dict[str, dict[str, Any]] = {
    "tiny": _llama(vocab_size=4096, seq_len=128, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384),
    "micro": _llama(vocab_size=32, seq_len=16, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16),
    "60M": _llama(vocab_size=50304, seq_len=512, d_model=512, n_layers=10, n_heads=8, ffn_dim=1536, tie_embeddings=True),
    "210M": _llama(vocab_size=50304, seq_len=512, d_model=768, n_layers=24, n_heads=12, ffn_dim=2048, tie_embeddings=True),
    "1B": _llama(
        vocab_size=128256, seq_len=2048, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
        rope_theta=10000.0, tie_embeddings=True,
    ),
    "8B": _llama(
        vocab_size=128256, seq_len=2048, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
        rope_theta=10000.0, tie_embeddings=False,
    ),
    "pythia-160m": {
        "arch": "neox", "vocab_size": 50304, "seq_len": 2048, "d_model": 768, "n_layers": 12, "n_heads": 12,
        "ffn_dim": 3072, "rotary_pct": 0.25, "rope_theta": 10000.0, "parallel_residual": True, "bias": True,
        "tie_embeddings": False,
    },
    "cnn": {"arch": "cnn", "in_channels": 3, "image_size": 32, "num_classes": 10, "channels": [32, 128, 128, 128]},
    "cnn-fmnist": {"arch": "cnn", "in_channels": 1, "image_size": 28, "num_classes": 10, "channels": [32, 128, 128, 128]},
}

PRESETS: dict[str, ModelConfig] = {
    name: _ADAPTER.validate_python({"preset": name, **fields}) for name, fields in _PRESET_FIELDS.items()
}


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """A fresh, validated copy of preset `preset` with `overrides` applied (fields of the preset's
    family; a field of another family is an error naming it, e.g. `bias` on a Llama preset)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset '{preset}'; known: {', '.join(PRESETS)}")
    data = {**PRESETS[preset].model_dump(), **overrides}
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(f"invalid overrides for model preset '{preset}':\n{describe_validation_error(err, 'model.')}") from None
