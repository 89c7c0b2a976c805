"""What a run or a study costs before it runs: tokens, training FLOPs, GPU-hours at a stated MFU, and
memory per device.

FLOPs are `wsdlab.models.flops_per_token` (6N + attention, PaLM App. B accounting) times the tokens
the run trains on (its own steps: a branch from step k to T trains T - k steps). GPU-hours are
FLOPs / (peak x MFU) / 3600, with the dense bf16 peak of a named device (no sparsity). Memory per
device is `wsdlab.train.memory.estimate_memory` (weights, gradients, AdamW state, activations of one
micro batch), compared with the device's memory in DEVICE_MEMORY.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsdlab.common.errors import ConfigError
from wsdlab.train.config import RunSpec
from wsdlab.train.memory import MemoryEstimate, estimate_memory

if TYPE_CHECKING:
    from wsdlab.study.plan import Plan

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets (SXM parts where there are two).
DEVICE_PEAK_FLOPS: dict[str, float] = {
    "h200": 989e12,
    "h100": 989e12,
    "a100": 312e12,
    "l40s": 362e12,
    "a10g": 125e12,
    "v100": 125e12,  # fp16 tensor cores (no bf16)
    "mi300x": 1307e12,
    "mi250x": 383e12,
}

# Memory per device (bytes) from the same data sheets: their "80 GB" of HBM is 80 GiB; a little of it goes to
# the CUDA context (the H200's 141 reads as ~139 GiB usable). The largest part where there are two (A100 80GB).
DEVICE_MEMORY: dict[str, int] = {
    "h200": 141 * 2**30,
    "h100": 80 * 2**30,
    "a100": 80 * 2**30,
    "l40s": 48 * 2**30,
    "a10g": 24 * 2**30,
    "v100": 32 * 2**30,
    "mi300x": 192 * 2**30,
    "mi250x": 128 * 2**30,
}


@dataclass(frozen=True)
class RunCost:
    steps: int  # optimizer steps this run trains itself (not its parent's)
    tokens: int
    flops: float


def run_cost(spec: RunSpec, start_step: int = 0) -> RunCost:
    """Tokens and training FLOPs of the steps start_step+1..train.steps of `spec`."""
    from wsdlab.models import flops_per_token
    from wsdlab.train.batching import global_batch_size

    per_item = 1 if spec.data.is_vision else spec.data.seq_len
    steps = max(0, spec.train.steps - start_step)
    tokens = steps * global_batch_size(spec.train, per_item) * per_item
    return RunCost(steps, tokens, float(tokens) * flops_per_token(spec.model))


def tokens_read(plan: Plan, key: str, step: int | None = None) -> int:
    """Tokens (images) run `key` has read by `step` (None: its last step), counted from step 0 through its
    lineage: its parent's steps up to the branch point at the parent's batch (a batch-scaled or fine-tuning
    branch reads another batch than its parent), then its own at its own batch."""
    run = plan[key]
    spec = run.spec
    step = spec.train.steps if step is None else step
    per_step = run_cost(spec, spec.train.steps - 1).tokens
    start = run.step or 0
    if run.parent is None or start == 0:
        return step * per_step
    return tokens_read(plan, run.parent, start) + (step - start) * per_step


def own_flops(specs: Mapping[str, RunSpec]) -> dict[str, float]:
    """Training FLOPs of each run's own steps (a branch's from its parent's step on), by run key."""
    return {key: run_cost(spec, spec.branch.parent_step or 0 if spec.branch is not None else 0).flops
            for key, spec in specs.items()}


def gpu_hours(flops: float, device: str, mfu: float) -> float:
    """Hours of one `device` running at `mfu` of its dense bf16 peak to do `flops`."""
    _check_device(device)
    if not 0.0 < mfu <= 1.0:
        raise ConfigError(f"--mfu: must be in (0, 1], got {mfu}")
    return flops / (DEVICE_PEAK_FLOPS[device] * mfu) / 3600.0


def _check_device(device: str) -> None:
    if device not in DEVICE_PEAK_FLOPS:
        raise ConfigError(f"--device: unknown device '{device}'; known: {', '.join(DEVICE_PEAK_FLOPS)}")


def run_memory(spec: RunSpec, device: str, devices: int) -> MemoryEstimate:
    """Memory per `device` of one training step of `spec` run on `devices` of them (FSDP shards over them)."""
    _check_device(device)
    if devices < 1:
        raise ConfigError(f"--gpus: must be >= 1, got {devices}")
    return estimate_memory(spec, devices, "cuda")


def fits(estimate: MemoryEstimate, device: str) -> bool:
    """True when the estimate's total is within the device's memory."""
    _check_device(device)
    return estimate.total <= DEVICE_MEMORY[device]
