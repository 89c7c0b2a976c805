"""Keep freed tensor memory in the process instead of handing it back to the kernel (glibc only).

A CPU training step allocates and frees the same large buffers every step (the logits of a tiny
Llama at batch 16 x 128 x vocab 4096 are 33.5 MB). glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB) with a fresh `mmap` and trims the heap top above 128 KiB on `free`, so each
step pays for zeroing freshly faulted pages: in the default study 127 M minor page faults and a
fifth of all CPU time went to the kernel. Raising the mmap and trim thresholds (and padding each heap
growth) lets the allocator reuse those pages. On a 30-step run of the default study's base (one
thread) this took wall time from 16.0 s to 13.3 s and system time from 2.6 s to 0.5 s
(`benchmarks/bench_allocator.py`). Numbers are unchanged: only where memory comes from changes.

Applied by the command line and the study workers at start-up (a library import never changes
process-wide allocator settings). `WSDLAB_MALLOC=0` turns it off; nothing is changed either when the
user already tunes glibc malloc through its own environment variables, or off glibc (macOS, musl).
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "WSDLAB_MALLOC"
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8  # glibc <malloc.h>
# one arena: threads of one process (a study's concurrent analyses) share the tuned main heap instead of
# per-thread heaps of at most 64 MiB, which serve larger blocks with fresh mmaps again
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20, M_ARENA_MAX: 1}
_USER_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")
_applied: bool | None = None


def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when the settings are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(os.environ.get(k) for k in _USER_KNOBS) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
    return _applied
