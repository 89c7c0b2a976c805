"""A run's identity: the hash that names its folder (STUDY/runs/<key>-<hash>).

The identity is the hash of what the user (or the stage) set: the RunSpec's fields that differ from their
defaults (`model_dump(exclude_defaults=True)`), with a branch's `init_from` replaced by its lineage
(`<parent identity>@<step>`) and a root's `init_from` written relative to the study folder. So adding a
defaulted field to any config renames no run, and a moved or copied study keeps every name.

Study folders written by release 0.1 (before this rule) named runs by `legacy_identity`: the whole dumped
spec minus a hand-kept list of late fields, `init_from` relative to the study. The resolver uses such a
folder when it exists and the new one does not, so those studies resume without retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsdlab.common.hashing import spec_hash
from wsdlab.train.config import RunSpec


def run_identity(spec: RunSpec, study_dir: Path, lineage: str | None = None) -> str:
    """The hash of `spec`'s non-default fields; `lineage` (a branch's `<parent identity>@<step>`) replaces
    its `init_from`, else `init_from` is made relative to `study_dir` when it lies inside it."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    if lineage is not None:
        data["init_from"] = lineage
    elif data.get("init_from"):
        data["init_from"] = _relative(data["init_from"], study_dir)
    return spec_hash(data)


def _relative(path: str, study_dir: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(study_dir).resolve()).as_posix()
    except ValueError:
        return path  # outside the study: the absolute path


# The RunSpec fields of release 0.1 (dotted paths), and the fields it left out of the hash at their defaults.
LEGACY_FIELDS = frozenset({
    "branch",
    "branch.alpha",
    "branch.alpha_mid",
    "branch.batch_scale",
    "branch.beta2_only",
    "branch.beta_power",
    "branch.cooldown_steps",
    "branch.data",
    "branch.match_half_life",
    "branch.mode",
    "branch.overrides",
    "branch.parent_step",
    "branch.reset_optimizer",
    "branch.schedule",
    "branch.seed",
    "branch.shape",
    "branch.shape_expr",
    "branch.shape_param",
    "branch.steps",
    "branch.weight_decay_off",
    "data",
    "data.cache_dir",
    "data.hf_config",
    "data.hf_name",
    "data.hf_split",
    "data.max_documents",
    "data.max_tokens",
    "data.order",
    "data.order.num_portions",
    "data.order.portion",
    "data.order.seed",
    "data.order.shuffle",
    "data.path",
    "data.seq_len",
    "data.sft",
    "data.sft.hf_config",
    "data.sft.hf_name",
    "data.sft.hf_split",
    "data.sft.max_examples",
    "data.sft.messages_field",
    "data.sft.path",
    "data.sft.seed",
    "data.sft.source",
    "data.sft.val_fraction",
    "data.source",
    "data.split_seed",
    "data.streaming",
    "data.text_field",
    "data.tokenizer",
    "data.tokenizer_path",
    "data.val_fraction",
    "data.vocab_size",
    "init_from",
    "model",
    "model.arch",
    "model.bias",
    "model.channels",
    "model.d_model",
    "model.ffn_dim",
    "model.head_dim",
    "model.image_size",
    "model.in_channels",
    "model.n_heads",
    "model.n_kv_heads",
    "model.n_layers",
    "model.norm_eps",
    "model.num_classes",
    "model.parallel_residual",
    "model.preset",
    "model.rope_theta",
    "model.rotary_pct",
    "model.seq_len",
    "model.tie_embeddings",
    "model.vocab_size",
    "name",
    "optim",
    "optim.beta1",
    "optim.beta2",
    "optim.decay_norms_and_biases",
    "optim.eps",
    "optim.grad_clip",
    "optim.lr",
    "optim.weight_decay",
    "schedule",
    "schedule.alpha",
    "schedule.cooldown_fraction",
    "schedule.cooldown_steps",
    "schedule.kind",
    "schedule.mid",
    "schedule.mid.alpha_mid",
    "schedule.mid.steps",
    "schedule.shape",
    "schedule.shape_expr",
    "schedule.shape_param",
    "schedule.stable_ratio",
    "schedule.start_step",
    "schedule.warmup_steps",
    "train",
    "train.activation_checkpointing",
    "train.batch_size",
    "train.batch_tokens",
    "train.checkpoint_every",
    "train.checkpoint_steps",
    "train.compile",
    "train.deterministic",
    "train.device",
    "train.eval_batch_size",
    "train.eval_batches",
    "train.eval_every",
    "train.fsdp",
    "train.log_every",
    "train.micro_batch_size",
    "train.precision",
    "train.progress",
    "train.seed",
    "train.snapshot_every",
    "train.snapshot_steps",
    "train.steps",
})
LEGACY_LATE_DEFAULTS: dict[tuple[str, str], Any] = {
    ("schedule", "stable_ratio"): None, ("schedule", "start_step"): 0, ("data", "sft"): None, ("branch", "schedule"): {},
    ("train", "activation_checkpointing"): False,
}


def legacy_identity(spec: RunSpec, study_dir: Path) -> str:
    """The folder hash release 0.1 gave `spec` (its `init_from` the parent checkpoint's path): the dumped
    spec without fields added since, the late fields at their defaults left out, `init_from` relative."""
    data = spec.model_dump(mode="json")
    _prune(data, "")
    for (section, name), default in LEGACY_LATE_DEFAULTS.items():
        if isinstance(data.get(section), dict) and data[section].get(name, default) == default:
            data[section].pop(name, None)
    if data.get("init_from"):
        data["init_from"] = _relative(data["init_from"], study_dir)
    return spec_hash(data)


def _prune(data: dict[str, Any], prefix: str) -> None:
    """Drop the keys release 0.1 did not have (fields added since), recursing into its sections."""
    for key in list(data):
        path = prefix + key
        if path not in LEGACY_FIELDS:
            del data[key]
        elif isinstance(data[key], dict) and any(f.startswith(path + ".") for f in LEGACY_FIELDS):
            _prune(data[key], path + ".")
