"""Checks run before anything is written: the spec builds, its files exist, its sizes fit in
memory, `out` may be resumed. `validate_run_start(spec, out)` runs them all (the CLI calls it
before creating --out; `train()` calls it too)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from wsdlab.common.errors import ConfigError
from wsdlab.data.config import DataConfig
from wsdlab.schedules import build_schedule
from wsdlab.train.batching import global_batch_size
from wsdlab.train.checkpoint import check_same_model, list_checkpoints, open_checkpoint
from wsdlab.train.config import RunSpec
from wsdlab.train.layout import CHECKPOINTS_DIR, SPEC
from wsdlab.train.spec_io import describe_differences, differing_keys, read_spec


def validate_run_start(spec: RunSpec, out: str | Path) -> None:
    """Everything that can be checked before `out` is created or written: the spec (`check_spec`,
    `check_memory`) and the directory (`check_resumable`). ConfigError / FileNotFoundError /
    CheckpointError name the field or file."""
    check_spec(spec)
    check_memory(spec)
    check_resumable(spec, out)


def check_spec(spec: RunSpec) -> None:
    """ConfigError / FileNotFoundError naming the field when the spec cannot run (model shapes are
    checked by ModelConfig itself, NaN/inf numbers and out-of-range seeds/batches by the configs)."""
    try:
        build_schedule(spec.schedule, spec.train.steps)
    except ValueError as e:
        raise ConfigError(f"schedule: {e}") from None
    for name, seed in (("data.order.seed", spec.data.order.seed), ("data.split_seed", spec.data.split_seed)):
        if seed < 0:
            raise ConfigError(f"{name}: must be >= 0, got {seed}")
    d = spec.data
    if d.source in ("text", "jsonl", "parquet") and not Path(d.path or "").exists():
        raise FileNotFoundError(f"data.path: not found: {d.path}")
    if d.tokenizer == "pretrained" and not Path(d.tokenizer_path or "").is_file():
        raise FileNotFoundError(f"data.tokenizer_path: not found: {d.tokenizer_path}")
    bad = [s for s in spec.train.checkpoint_steps + spec.train.snapshot_steps if s < 0 or s > spec.train.steps]
    if bad:
        raise ConfigError(f"train.checkpoint_steps / snapshot_steps: steps {bad} are outside 0..{spec.train.steps}")


def device_memory(device: str) -> tuple[int, str]:
    """(bytes, description) of the memory a run on `device` ("auto"/"cpu"/"cuda") can use at most."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory, "GPU memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory"
    except (ValueError, OSError, AttributeError):
        return 2**62, "host memory"


def check_memory(spec: RunSpec, available: int | None = None) -> None:
    """ConfigError when the model state or one micro batch cannot be allocated at all.

    Lower bounds only (fp32 weights + grads + two AdamW moments = 16 bytes per parameter, sharded
    under FSDP; the logits of one micro batch, 4 bytes each), compared with the device's total
    memory: a spec that passes may still run out of memory, one that fails never fits.
    """
    from wsdlab.models import num_parameters
    from wsdlab.train.memory import micro_batch_per_device

    have, what = (available, "memory") if available is not None else device_memory(spec.train.device)
    world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    state = 16 * num_parameters(spec.model) // (world if spec.train.fsdp else 1)
    if state > have:
        raise ConfigError(f"model: {state / 2**30:,.1f} GiB of weights, gradients and optimizer state "
                          f"exceed the {have / 2**30:,.1f} GiB of {what}")
    t = spec.train
    items = 1 if spec.data.is_vision else spec.data.seq_len
    try:
        batch = global_batch_size(t, items)
        micro = micro_batch_per_device(spec, world)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    per_out = spec.model.num_classes if spec.model.arch == "cnn" else items * spec.model.vocab_size
    field = "train.micro_batch_size" if t.micro_batch_size else ("train.batch_tokens" if t.batch_tokens else "train.batch_size")
    for field, size in ((field, micro), ("train.eval_batch_size", t.eval_batch_size or t.micro_batch_size or batch)):
        need = 4 * size * per_out
        if need > have:
            raise ConfigError(f"{field}: a batch of {size:,} needs {need / 2**30:,.1f} GiB for its logits alone, more "
                              f"than the {have / 2**30:,.1f} GiB of {what}; set train.micro_batch_size smaller")


def check_resumable(spec: RunSpec, out: str | Path) -> None:
    """`out` is new, or holds a run of exactly this spec; a branch's parent checkpoint must match the model."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a directory")
    stored_path = out / SPEC
    found = list_checkpoints(out)
    if not stored_path.is_file() and found:
        stored_path = found[max(found)] / SPEC
    if stored_path.is_file():
        stored = read_spec(stored_path).model_dump(mode="json")
        wanted = spec.model_dump(mode="json")
        if same_checkpoint(stored.get("init_from"), wanted.get("init_from")):
            wanted["init_from"] = stored["init_from"]  # the study (or run) was moved: the same parent checkpoint
        keys = differing_keys(stored, wanted)
        if keys:
            detail = describe_differences(stored, wanted, keys, "stored", "given")
            raise ConfigError(f"out: {out} holds a run of another spec (differing keys: {', '.join(keys)}): {detail}. "
                             "Use a new --out directory, or the stored spec to resume.")
    if spec.init_from and not found:
        parent = open_checkpoint(spec.init_from)
        check_same_model(parent.spec.model, spec.model, parent.path)


def same_checkpoint(a: str | None, b: str | None) -> bool:
    """Two `init_from` paths naming the same checkpoint of the same run, wherever the folders now are:
    equal `<run folder>/checkpoints/<step>` tails (a run folder's name holds the hash of its spec)."""
    if not a or not b:
        return a == b
    return Path(a).parts[-3:] == Path(b).parts[-3:] and Path(a).parts[-2] == CHECKPOINTS_DIR


def data_differs(a: DataConfig, b: DataConfig) -> bool:
    """True when two data configs read different streams (the cache location does not count)."""
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    da.pop("cache_dir", None), db.pop("cache_dir", None)
    return da != db
