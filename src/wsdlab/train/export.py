"""Export a checkpoint to a Hugging Face model directory, so `lm_eval` (lm-evaluation-harness) runs the
WSO paper's benchmarks on it (App. E) on a GPU machine.

The directory holds `config.json` (a `LlamaForCausalLM` config), `model.safetensors` (weights under the
Hugging Face names), `generation_config.json`, and the tokenizer (`tokenizer.json` +
`tokenizer_config.json` + `special_tokens_map.json`, a `PreTrainedTokenizerFast`). wsdlab's Llama uses
the "rotate half" RoPE layout of Hugging Face's Llama, so q/k weights are copied without permutation.
Only `arch: llama` models are exported (the paper's models follow "the Llama 3 architecture", App. A).

Special tokens come from the data pipeline, not from guesses: bos = eos = pad = the document separator
(`data.tokenizer.separator_id`, the token the pipeline puts between documents and after each SFT
response, and pads SFT rows with); unk = the tokenizer model's own unknown token (none for byte-level
BPE). The context length (`max_position_embeddings`, `model_max_length`, the generation `max_length`) is
the one the run trained on, `data.seq_len`. An SFT checkpoint also ships its prompt format
(`data.sft.PROMPT_TEMPLATE`) as the tokenizer's chat template.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_directory
from wsdlab.data.sft import PROMPT_TEMPLATE
from wsdlab.data.tokenizer import separator_id
from wsdlab.models.config import LlamaConfig
from wsdlab.train.checkpoint import MODEL_FILE, STATE_FILE, list_checkpoints, open_checkpoint
from wsdlab.train.config import RunSpec
from wsdlab.train.layout import CHECKPOINTS_DIR, SPEC

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


def hf_config(cfg: LlamaConfig, *, context: int | None = None, bos_token_id: int | None = None,
              eos_token_id: int | None = None, pad_token_id: int | None = None) -> dict[str, Any]:
    """The `config.json` of a LlamaForCausalLM with the shapes of `cfg` (Llama 3 layout, App. A).

    `context`: the trained context length (`data.seq_len`, default `cfg.seq_len`), as max_position_embeddings.
    """
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
        "max_position_embeddings": cfg.seq_len if context is None else context,
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
        "pad_token_id": pad_token_id,
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
        return Path(spec.data.tokenizer_path).expanduser()
    from wsdlab.data.shards import TOKENIZER_FILE, prepare_corpus

    return prepare_corpus(spec.data.model_copy(update={"sft": None}), progress=False) / TOKENIZER_FILE


def unknown_token(tok: Tokenizer) -> str | None:
    """The tokenizer model's own unknown token (WordLevel/WordPiece/Unigram/BPE `unk_token`), if it has one."""
    model = json.loads(tok.to_str()).get("model", {})
    unk = model.get("unk_token")
    if isinstance(unk, str) and tok.token_to_id(unk) is not None:
        return unk
    unk_id = model.get("unk_id")  # Unigram stores an id
    if isinstance(unk_id, int):
        return tok.id_to_token(unk_id)
    return None


def check_tokenizer_fits(tok: Tokenizer, cfg: LlamaConfig, where: Path) -> None:
    """ConfigError when a token id of `tok` has no row in the model's embedding (transformers would fail
    later with an IndexError)."""
    ids = tok.get_vocab(with_added_tokens=True).values()
    size = max(ids) + 1 if ids else 0
    if size > cfg.vocab_size:
        raise ConfigError(f"export: tokenizer {where} has token ids up to {size - 1} ({size} tokens), but the "
                          f"model has model.vocab_size {cfg.vocab_size}; pass the tokenizer the run was trained with "
                          "(the default, or --tokenizer)")


def special_tokens(tok: Tokenizer, where: Path) -> dict[str, str]:
    """bos/eos/pad = the data pipeline's document separator; unk = the tokenizer's unknown token, if any."""
    sep = tok.id_to_token(separator_id(tok, f"export: tokenizer {where}"))
    specials = {"bos_token": sep, "eos_token": sep, "pad_token": sep}
    unk = unknown_token(tok)
    if unk is not None:
        specials["unk_token"] = unk
    return specials


def _jinja(text: str) -> str:
    """`text` as a Jinja string literal (JSON escapes are Jinja's: \\n, \\", \\uXXXX)."""
    return json.dumps(text)


def chat_template(separator: str) -> str:
    """The SFT prompt format as a Jinja chat template (one source: `data.sft.PROMPT_TEMPLATE`).

    A user turn renders as the template's text before `{prompt}`, then the content; the text after
    `{prompt}` (which ends in the assistant header) opens each assistant turn and the generation prompt; an
    assistant turn ends with the separator. So [user p, assistant r] renders exactly as the SFT row
    `PROMPT_TEMPLATE.format(prompt=p) + r + separator`, and [user p] with add_generation_prompt as its prompt.
    wsdlab's SFT has no system role: a system message raises (lm_eval then retries without it).
    """
    before, after = PROMPT_TEMPLATE.split("{prompt}")
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{ " + _jinja(before) + " }}{{ message['content'] }}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ " + _jinja(after) + " }}{{ message['content'] }}{{ " + _jinja(separator) + " }}"
        "{%- else -%}"
        "{{ raise_exception('wsdlab SFT format: only user and assistant turns, got role ' + message['role']) }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + _jinja(after) + " }}{%- endif -%}"
    )


def _refuse_run_folder(path: Path) -> None:
    """A run folder (or its checkpoints/ folder) given for a checkpoint: say which checkpoint folders it holds."""
    if path.name == CHECKPOINTS_DIR and not (path / STATE_FILE).is_file() and (path.parent / SPEC).is_file():
        path = path.parent  # RUN/checkpoints
    elif (path / STATE_FILE).is_file() or (path / MODEL_FILE).is_file() or not (
            (path / SPEC).is_file() or (path / CHECKPOINTS_DIR).is_dir()):
        return  # a checkpoint (open_checkpoint names what is wrong with a damaged one) or nothing of ours
    steps = list(list_checkpoints(path))
    have = f"it has steps {', '.join(map(str, steps))}" if steps else "it has no checkpoint yet"
    raise ConfigError(f"export: {path} is a run folder, not a checkpoint; pass one of its checkpoint folders, "
                      f"{path / CHECKPOINTS_DIR}/<step> ({have})")


def export_hf(checkpoint: str | Path, out: str | Path, *, tokenizer: str | Path | None = None) -> Path:
    """Write checkpoint `checkpoint` as a Hugging Face model directory `out` (must not exist); returns it.

    `tokenizer`: a tokenizer.json to ship (default: the run's own, see `tokenizer_file`); it must fit the
    model's vocabulary and hold the separator the data pipeline uses (`data.tokenizer.separator_id`).
    """
    if not str(out).strip():
        raise ConfigError("export: out must not be empty (give the model directory to write)")
    out = Path(out)
    if out.exists():
        raise ConfigError(f"export: {out} already exists")
    _refuse_run_folder(Path(checkpoint))
    ckpt = open_checkpoint(checkpoint)
    spec, cfg = ckpt.spec, ckpt.spec.model
    if not isinstance(cfg, LlamaConfig):
        raise ConfigError(f"export: only arch 'llama' models export to LlamaForCausalLM (this is '{cfg.arch}')")
    tok_path = Path(tokenizer).expanduser() if tokenizer is not None else tokenizer_file(spec)
    if not tok_path.is_file():
        raise ConfigError(f"export: tokenizer file {tok_path} not found")
    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as err:  # the tokenizers library raises a bare Exception on a file that is not its JSON
        raise ConfigError(f"export: tokenizer file {tok_path}: not a tokenizer.json file ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200] if str(err) else 'unreadable'})") from None
    check_tokenizer_fits(tok, cfg, tok_path)
    specials = special_tokens(tok, tok_path)
    sep_id = tok.token_to_id(specials["eos_token"])
    context = spec.data.seq_len  # what the run trained on (<= model.seq_len)
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context, "padding_side": "right",
        "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False, **specials}
    if spec.data.sft is not None:
        tok_config["chat_template"] = chat_template(specials["eos_token"])
    generation = {"bos_token_id": sep_id, "eos_token_id": sep_id, "pad_token_id": sep_id, "max_length": context}
    weights = hf_state_dict(ckpt.model_tensors(), cfg)
    with atomic_directory(out) as tmp:
        tmp = Path(tmp)
        config = hf_config(cfg, context=context, bos_token_id=sep_id, eos_token_id=sep_id, pad_token_id=sep_id)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(tok_path, tmp / "tokenizer.json")
        (tmp / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    return out
