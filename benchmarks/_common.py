"""Timing and reporting shared by the peer-comparison benchmarks (bench_hessian.py, bench_landscape.py).

The scripts run as `python benchmarks/<name>.py`, so this directory is on sys.path and they import
it as `from _common import ...`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch


def timed(fn: Callable[[], Any], repeats: int, device: str) -> tuple[float, Any, float]:
    """Best wall time and best process CPU time of `repeats` calls, and the last result.

    CPU time (all threads of this process) is printed beside wall time because on a shared machine
    other processes stretch wall time unevenly; on CUDA the wall time is what counts.
    """
    best, best_cpu, out = math.inf, math.inf, None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, out, best_cpu


def format_times(t_peer: float, t_ours: float, c_peer: float, c_ours: float, spec: str = "7.2f") -> str:
    """'wall: peer .. ours .. speed-up x.. | cpu: ...', seconds formatted with `spec`."""
    return (f"wall: peer {t_peer:{spec}}s ours {t_ours:{spec}}s speed-up x{t_peer / t_ours:5.2f} | "
            f"cpu: peer {c_peer:{spec}}s ours {c_ours:{spec}}s speed-up x{c_peer / c_ours:5.2f}")
