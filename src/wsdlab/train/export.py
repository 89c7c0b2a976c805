"""Export a checkpoint to a Hugging Face model directory, so `lm_eval` (lm-evaluation-harness) runs the
WSO paper's benchmarks on it (App. E) on a GPU machine.

The directory holds `config.json` (a `LlamaForCausalLM` config), `model.safetensors` (weights under the
Hugging Face names), `generation_config.json`, and the tokenizer (`tokenizer.json` +
`tokenizer_config.json` + `special_tokens_map.json`, a `PreTrainedTokenizerFast`). wsdlab's Llama uses
the "rotate half" RoPE layout of Hugging Face's Llama, so q/k weights are copied without permutation.
Only `arch: llama` models are exported (the paper's models follow "the Llama 3 architecture", App. A).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_directory
from wsdlab.models.config import LlamaConfig
from wsdlab.train.checkpoint import open_checkpoint
from wsdlab.train.config import RunSpec

# wsdlab name (inside layers.<i>.) -> Hugging Face LlamaForCausalLM name (inside model.layers.<i>.)
LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}


def hf_config(cfg: LlamaConfig, *, bos_token_id: int | None = None, eos_token_id: int | None = None) -> dict[str, Any]:
    """The `config.json` of a LlamaForCausalLM with the shapes of `cfg` (Llama 3 layout, App. A)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.attn_head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def hf_state_dict(tensors: dict[str, torch.Tensor], cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """wsdlab Llama weights -> LlamaForCausalLM weights (tied output written once, as `embed_tokens`)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        if name == "tok_embeddings.weight":
            key = "model.embed_tokens.weight"
        elif name == "norm.weight":
            key = "model.norm.weight"
        elif name == "output.weight":
            if cfg.tie_embeddings:
                continue
            key = "lm_head.weight"
        elif name.startswith("layers."):
            _, index, rest = name.split(".", 2)
            if rest not in LAYER_NAMES:
                raise ConfigError(f"export: no Hugging Face name for weight '{name}'")
            key = f"model.layers.{index}.{LAYER_NAMES[rest]}"
        else:
            raise ConfigError(f"export: no Hugging Face name for weight '{name}'")
        out[key] = value.detach().to(torch.float32).contiguous().clone()
    return out


def tokenizer_file(spec: RunSpec) -> Path:
    """The tokenizer.json the run's data was tokenized with (a pretrained one, or the prepared corpus's)."""
    if spec.data.tokenizer == "pretrained" and spec.data.tokenizer_path:
        return Path(spec.data.tokenizer_path)
    from wsdlab.data.shards import TOKENIZER_FILE, prepare_corpus

    return prepare_corpus(spec.data, progress=False) / TOKENIZER_FILE


def _special_ids(path: Path) -> tuple[str | None, int | None]:
    """The document separator (`<|endoftext|>` or the first special token) and its id, if any."""
    data = json.loads(path.read_text(encoding="utf-8"))
    specials = [t for t in data.get("added_tokens", []) if t.get("special")]
    for tok in specials:
        if tok["content"] in ("<|endoftext|>", "<|end_of_text|>"):
            return tok["content"], int(tok["id"])
    return (specials[0]["content"], int(specials[0]["id"])) if specials else (None, None)


def export_hf(checkpoint: str | Path, out: str | Path, *, tokenizer: str | Path | None = None) -> Path:
    """Write checkpoint `checkpoint` as a Hugging Face model directory `out` (must not exist); returns it.

    `tokenizer`: a tokenizer.json to ship (default: the run's own, see `tokenizer_file`).
    """
    out = Path(out)
    if out.exists():
        raise ConfigError(f"export: {out} already exists")
    ckpt = open_checkpoint(checkpoint)
    cfg = ckpt.spec.model
    if not isinstance(cfg, LlamaConfig):
        raise ConfigError(f"export: only arch 'llama' models export to LlamaForCausalLM (this is '{cfg.arch}')")
    tok_path = Path(tokenizer) if tokenizer is not None else tokenizer_file(ckpt.spec)
    if not tok_path.is_file():
        raise ConfigError(f"export: tokenizer file {tok_path} not found")
    eos, eos_id = _special_ids(tok_path)
    weights = hf_state_dict(ckpt.model_tensors(), cfg)
    with atomic_directory(out) as tmp:
        tmp = Path(tmp)
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg, bos_token_id=eos_id, eos_token_id=eos_id), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": eos_id, "eos_token_id": eos_id}))
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(tok_path, tmp / "tokenizer.json")
        specials = {"eos_token": eos, "bos_token": eos, "unk_token": eos} if eos else {}
        (tmp / "special_tokens_map.json").write_text(json.dumps(specials))
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.seq_len,
            "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False, **specials}))
    return out
