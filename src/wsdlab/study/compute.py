"""What a run or a study costs before it runs: tokens, training FLOPs and GPU-hours at a stated MFU.

FLOPs are `wsdlab.models.flops_per_token` (6N + attention, PaLM App. B accounting) times the tokens
the run trains on (its own steps: a branch from step k to T trains T - k steps). GPU-hours are
FLOPs / (peak x MFU) / 3600, with the dense bf16 peak of a named device (no sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsdlab.common.errors import ConfigError
from wsdlab.train.config import RunSpec

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


def gpu_hours(flops: float, device: str, mfu: float) -> float:
    """Hours of one `device` running at `mfu` of its dense bf16 peak to do `flops`."""
    if device not in DEVICE_PEAK_FLOPS:
        raise ConfigError(f"--device: unknown device '{device}'; known: {', '.join(DEVICE_PEAK_FLOPS)}")
    if not 0.0 < mfu <= 1.0:
        raise ConfigError(f"--mfu: must be in (0, 1], got {mfu}")
    return flops / (DEVICE_PEAK_FLOPS[device] * mfu) / 3600.0
