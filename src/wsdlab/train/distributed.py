"""Multi-process training under torchrun: process group, DDP / FSDP2 wrapping, reductions.

Outside torchrun (WORLD_SIZE unset or 1) everything here is a no-op on a single process, except
train.fsdp: it joins a process group of one, so FSDP2 (its bf16 policy, sharded checkpoints code
path) runs as it would on several ranks instead of the run silently training an unsharded model.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from wsdlab.common.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank among world_size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    grouped: bool = False  # in a process group although alone (train.fsdp on one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Collectives run: several processes, or a process group of one (FSDP on one process)."""
        return self.world_size > 1 or self.grouped


def resolve_device(kind: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is a ValueError."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(kind)


def init_distributed(device_kind: str, fsdp: bool = False) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU).

    A single process with `fsdp` joins the caller's process group if there is one, else a group of
    one of its own (an in-memory store: no torchrun, no port), so FSDP is never silently skipped.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_kind)
    if world <= 1:
        if not fsdp:
            return DistContext(device=device)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                    rank=0, world_size=1, device_id=device if device.type == "cuda" else None)
        return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, grouped=True)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def any_rank(flags: tuple[bool, ...], ctx: DistContext) -> tuple[bool, ...]:
    """Each flag true on some rank, so every rank takes the same decision (one tiny all-reduce, a
    device sync: only with several ranks)."""
    if ctx.world_size <= 1:
        return flags
    t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


DATA_WAIT_ENV = "WSDLAB_DATA_WAIT"  # seconds the other ranks wait for rank 0's data preparation
DATA_WAIT_DEFAULT_S = 7 * 24 * 3600.0  # a week: preparing a corpus of hundreds of billions of tokens takes hours
POLL_S = 5.0


def data_wait_seconds() -> float:
    """$WSDLAB_DATA_WAIT (seconds, > 0), else a week."""
    raw = os.environ.get(DATA_WAIT_ENV)
    if raw is None or not raw.strip():
        return DATA_WAIT_DEFAULT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"${DATA_WAIT_ENV}: expected a number of seconds > 0, got {raw!r}")
    return value


def wait_until(ready: Callable[[], bool], timeout_s: float, poll_s: float = POLL_S, what: str = "rank 0") -> None:
    """Poll `ready()` every `poll_s` seconds until it is true; TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what} (raise ${DATA_WAIT_ENV}, or prepare the "
                               "data beforehand with `wsdlab data prepare`)")
        time.sleep(min(poll_s, left))


@contextlib.contextmanager
def main_first(ctx: DistContext, ready: Callable[[], bool] | None = None,
               timeout_s: float | None = None, poll_s: float = POLL_S) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. preparing a cached corpus), the others after it.

    With `ready` (e.g. "the corpus's completion marker exists") the others poll it instead of a
    barrier, for up to `timeout_s` (default `data_wait_seconds()`): a collective would time out after
    the process group's default (10-30 minutes), far shorter than preparing a large corpus.
    """
    if ready is not None:
        if not ctx.is_main:
            wait_until(ready, data_wait_seconds() if timeout_s is None else timeout_s, poll_s,
                       "rank 0 to prepare the data")
        yield
        return
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def fsdp_mixed_precision(bf16: bool):  # -> MixedPrecisionPolicy | None
    """The FSDP2 policy of a bf16 run: shards stay fp32 (the optimizer's master weights), each block's
    parameters are all-gathered and computed in bf16, gradients reduce-scattered in fp32; None in fp32.

    Without it a rank holds, besides its fp32 shard, autocast's bf16 copy of every weight of the forward.
    """
    if not bf16:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def wrap_model(model: nn.Module, ctx: DistContext, fsdp: bool, *, bf16: bool = False) -> nn.Module:
    """DDP, or FSDP2 (`fully_shard` on each block of the model's ModuleLists, then the root) with
    `fsdp_mixed_precision(bf16)` (bf16: the run computes in bf16)."""
    if not ctx.distributed:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        policy = fsdp_mixed_precision(bf16)
        kwargs = {} if policy is None else {"mp_policy": policy}
        for module in model.modules():
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def no_sync(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on all but the last micro batch of a step."""
    inner = model._orig_mod if hasattr(model, "_orig_mod") else model
    if not last and isinstance(inner, nn.parallel.DistributedDataParallel):
        return inner.no_sync()
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2
        inner.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of a tensor over ranks (identity on one process)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= ctx.world_size
    return values


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of a tensor over ranks (identity on one process)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def full_state_dict(model: nn.Module, ctx: DistContext, fsdp: bool) -> dict[str, torch.Tensor]:
    """Unsharded model weights on CPU (gathered under FSDP; every rank must call it)."""
    if ctx.distributed and fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(model).state_dict()
