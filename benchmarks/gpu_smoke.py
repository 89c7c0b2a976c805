"""GPU smoke test: bf16 + torch.compile steps of the 210M preset (tokens/s, MFU), DDP / FSDP on every visible
GPU under torchrun, a 1B FSDP step with activation checkpointing (peak memory), a Hessian-vector product through
attention; one table. Without CUDA it lists the checks and exits 0. The code is `wsdlab.cli.gpu_smoke`
(also `wsdlab doctor --gpu`).

Usage: python benchmarks/gpu_smoke.py
"""

from __future__ import annotations

import sys

from wsdlab.cli.gpu_smoke import main

if __name__ == "__main__":
    sys.exit(main())
