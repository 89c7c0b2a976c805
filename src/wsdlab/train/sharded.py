"""Sharded checkpoints of FSDP2 runs with torch.distributed.checkpoint (DCP): no rank gathers the whole state.

Every rank writes its own shards of the weights and AdamW moments into RUN/checkpoints/<step>/sharded/
(DCP's `.metadata` plus one `__<rank>_0.distcp` file per rank); rank 0 adds rng.safetensors,
state.json, spec.yaml and a manifest marked `"sharded": true` (checkpoint.py), all inside the same
`.tmp-*` folder that is renamed into place once complete, as `save_checkpoint` does.

Keys are flat and name the same tensors as the single-file format: `model/<name>` (model.safetensors's
`<name>`) and `optim/<name>/<step|exp_avg|exp_avg_sq>` (optimizer.safetensors's keys), so one process
reads a sharded checkpoint back into exactly the dictionaries a single-file checkpoint holds
(`load_full`), and a run resumes with or without FSDP from either format.

The optimizer state is collected by parameter name rather than with `get_optimizer_state_dict`: that
function first runs an optimizer step with zero gradients when the state is empty (a step-0
checkpoint), which would store AdamW step counts of 1 where the single-file format stores none.
DCP's `.metadata` is a pickle (DCP's own format): the manifest's sha256 of it is checked before it is read.
"""

from __future__ import annotations

import contextlib
import errno
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)

from wsdlab.common.errors import CheckpointError, NonFiniteError
from wsdlab.common.io import atomic_directory
from wsdlab.train.checkpoint import is_disk_full
from wsdlab.train.distributed import DistContext, any_rank
from wsdlab.train.optim import STATE_KEYS, state_items

SHARDED_DIR = "sharded"
DCP_METADATA = ".metadata"
MODEL_PREFIX, OPTIM_PREFIX = "model/", "optim/"
_SHARDED = StateDictOptions(full_state_dict=False)


def model_shards(model: nn.Module) -> dict[str, torch.Tensor]:
    """`{"model/<name>": DTensor}`: this rank's shards of the weights (views, nothing gathered or copied)."""
    return {MODEL_PREFIX + k: v for k, v in get_model_state_dict(model, options=_SHARDED).items()}


def optimizer_shards(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """`{"optim/<name>/<key>": tensor}`: the AdamW state of each parameter that has one, as held (DTensor
    moments, the scalar step); parameters without state are left out, as `optim.optimizer_tensors` does."""
    return {OPTIM_PREFIX + key: t for key, t in state_items(opt)}


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _all_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The first key whose local values hold NaN/inf, else None."""
    for k, t in tensors.items():
        local = _local(t)
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            return k
    return None


def save_sharded(directory: str | Path, model: nn.Module, opt: torch.optim.Optimizer, ctx: DistContext,
                 write_rest: Any) -> Path:
    """Write checkpoint `directory` atomically; every rank calls it (collectives).

    Rank 0 makes the temporary folder and tells the others its name; each rank saves its shards under
    `<tmp>/sharded/`; then rank 0 calls `write_rest(tmp)` (rng, state.json, spec, manifest) and renames.
    NonFiniteError on every rank (nothing written) when a rank's shard holds NaN/inf. A full disk is an
    OSError(ENOSPC) naming `directory`.
    """
    directory = Path(directory)
    shards = {**model_shards(model), **optimizer_shards(opt)}
    bad = _all_finite(shards)
    if any_rank((bad is not None,), ctx)[0]:
        raise NonFiniteError(f"checkpoint {directory}: tensor '{bad or 'on another rank'}' holds NaN/inf; "
                             "not writing it")
    try:
        with atomic_directory(directory) if ctx.is_main else contextlib.nullcontext() as tmp:
            names = [str(tmp) if ctx.is_main else None]
            if ctx.distributed:
                dist.broadcast_object_list(names, src=0)
            dcp.save(shards, checkpoint_id=Path(names[0]) / SHARDED_DIR)
            if ctx.is_main:
                write_rest(tmp)
    except Exception as err:
        if not _disk_full(err):
            raise
        raise OSError(errno.ENOSPC, "no space left on device (checkpoint not written; earlier checkpoints are "
                                    "intact)", str(directory)) from None
    return directory


def _disk_full(err: BaseException) -> bool:
    """ENOSPC (`checkpoint.is_disk_full`), itself or on a rank of DCP's CheckpointException (its
    `failures`: {rank: (exception, traceback)})."""
    if is_disk_full(err):
        return True
    failures = getattr(err, "failures", None) or {}
    return any(is_disk_full(e[0] if isinstance(e, tuple) else e) for e in failures.values())


def _metadata(folder: Path) -> dict[str, TensorStorageMetadata]:
    reader = dcp.FileSystemReader(folder)
    try:
        md = reader.read_metadata()
    except Exception as err:
        raise CheckpointError(f"checkpoint {folder / DCP_METADATA}: unreadable ({type(err).__name__}: {err})") from None
    return {k: m for k, m in md.state_dict_metadata.items() if isinstance(m, TensorStorageMetadata)}


def load_full(folder: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """All tensors under `prefix` (MODEL_PREFIX or OPTIM_PREFIX) of a sharded folder, whole, on this one
    process (`no_dist`: no collectives, also inside a process group), keyed without the prefix."""
    folder = Path(folder)
    meta = _metadata(folder)
    full = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.items() if k.startswith(prefix)}
    try:
        with warnings.catch_warnings():  # "torch.distributed is ... uninitialized, assuming ... a single process"
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(full, checkpoint_id=folder, no_dist=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {folder}: unreadable shards ({type(err).__name__}: {err})") from None
    return {k[len(prefix):]: v for k, v in full.items()}


def load_sharded(folder: str | Path, model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
    """Load a sharded folder into an FSDP2 model and its optimizer (None: the weights only, e.g. a branch
    that resets its optimizer): each rank reads only its shards.

    The optimizer gets state for exactly the parameters the checkpoint has state for, placed like the
    parameters (DTensor moments; the step on the parameter's device for fused AdamW, else on CPU), as a
    resumed single-file checkpoint would. CheckpointError names what does not match.
    """
    folder = Path(folder)
    meta = _metadata(folder)
    weights = get_model_state_dict(model, options=_SHARDED)
    missing = sorted(MODEL_PREFIX + k for k in weights if MODEL_PREFIX + k not in meta)
    if missing:
        raise CheckpointError(f"checkpoint {folder}: no weights for {', '.join(missing[:5])}")
    groups = [] if opt is None else opt.param_groups
    known = {n for g in groups for n in g["names"]}
    saved = set() if opt is None else {
        k[len(OPTIM_PREFIX):].rsplit("/", 1)[0] for k in meta if k.startswith(OPTIM_PREFIX)}
    if saved - known:
        raise CheckpointError(f"checkpoint {folder}: optimizer state names parameters the model does not have: "
                              f"{', '.join(sorted(saved - known)[:5])}")
    moments: dict[str, torch.Tensor] = {}
    owners: dict[str, tuple[torch.Tensor, bool]] = {}
    for group in groups:
        for name, p in zip(group["names"], group["params"]):
            if name not in saved:
                continue
            owners[name] = (p, bool(group.get("fused")))
            for key in STATE_KEYS:
                k = f"{OPTIM_PREFIX}{name}/{key}"
                if k not in meta:
                    raise CheckpointError(f"checkpoint {folder}: missing optimizer tensor '{name}/{key}'")
                moments[k] = torch.zeros((), dtype=torch.float32) if key == "step" else torch.zeros_like(p)
    state = {MODEL_PREFIX + k: v for k, v in weights.items()} | moments
    try:
        dcp.load(state, checkpoint_id=folder)
    except Exception as err:
        raise CheckpointError(f"checkpoint {folder}: cannot load its shards ({type(err).__name__}: {err})") from None
    set_model_state_dict(model, {k: state[MODEL_PREFIX + k] for k in weights}, options=_SHARDED)
    if opt is None:
        return
    for name, (p, fused) in owners.items():
        step = moments[f"{OPTIM_PREFIX}{name}/step"]
        opt.state[p] = {"step": step.to(p.device if fused else "cpu"),
                        "exp_avg": moments[f"{OPTIM_PREFIX}{name}/exp_avg"],
                        "exp_avg_sq": moments[f"{OPTIM_PREFIX}{name}/exp_avg_sq"]}
