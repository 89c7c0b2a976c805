"""GPU smoke test: each GPU path of training and analysis runs once, in minutes, and one table says how it went.

Checks (CHECKS), on synthetic token batches (no data or network needed):
- `bf16-compile-210M`: torch.compile'd steps of the 210M preset under bf16 autocast with fused AdamW;
  tokens/s and MFU = 6 N tokens/s / peak (N: non-embedding parameters; peak: `PEAK_BF16_FLOPS`).
- `ddp` and `fsdp`: steps on every visible GPU under torchrun (`python -m torch.distributed.run
  --nproc_per_node G -m wsdlab.cli.gpu_smoke --worker ...`): `wrap_model` as the loop uses it; DDP
  needs 2 GPUs (one process has no DDP), FSDP runs on one in a process group of one.
- `fsdp-1B-ac`: one step of the 1B preset (seq 2048) under FSDP2 with the bf16 policy and activation
  checkpointing on every visible GPU; peak memory per GPU (`torch.cuda.max_memory_allocated`).
- `hvp-attention`: a Hessian-vector product through attention (double backward on SDPA's math
  kernel, `analysis.hessian.HessianOperator`), checked symmetric: <u, H w> = <w, H u> to 1e-3 of |u| |H w|.

Peak FLOP/s per GPU (H100 SXM / PCIe, H200, A100; dense bf16, datasheet values) come from
`wsdlab.train.loop.PEAK_BF16_FLOPS`, the table the training loop's MFU uses.

Without CUDA it prints what it would run and exits 0. Run as `python benchmarks/gpu_smoke.py`
or `wsdlab doctor --gpu`.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

CHECKS: dict[str, str] = {
    "bf16-compile-210M": "torch.compile + bf16 autocast steps of the 210M preset: tokens/s and MFU (6 N tokens/s / peak)",
    "ddp": "DDP steps on all visible GPUs under torchrun (needs >= 2 GPUs)",
    "fsdp": "FSDP2 steps on all visible GPUs under torchrun (one GPU: a process group of one)",
    "fsdp-1B-ac": "one 1B step, FSDP2 + bf16 policy + activation checkpointing on all visible GPUs: peak memory per GPU",
    "hvp-attention": "Hessian-vector product through attention (double backward, SDPA math kernel), symmetry checked",
}
WORKER_TIMEOUT_S = 240  # one torchrun check; the whole smoke stays under 5 minutes on an H100 node


@dataclass
class Result:
    """One row of the table: `ok` False with `detail` the reason (a skip has ok None)."""

    check: str
    ok: bool | None
    seconds: float
    detail: str


def synthetic_batch(vocab: int, batch: int, seq_len: int, device: Any, seed: int = 0) -> Any:
    """(batch, seq_len + 1) random token ids: inputs and shifted targets of `batch_loss`."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq_len + 1), generator=gen).to(device)


def mfu(params: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation 6 N tokens/s / peak (Kaplan et al.'s 6 N per token, forward + backward)."""
    return None if peak is None else 6.0 * params * tokens_per_s / peak


def _sync(device: Any) -> None:
    """Wait for the GPU's queued work (timings end there); nothing on CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_steps(model: Any, optimizer: Any, batch: Any, steps: int, bf16: bool) -> tuple[float, float]:
    """`steps` updates on `batch`: (seconds, last loss), timed between CUDA synchronisations."""
    import contextlib

    import torch

    from wsdlab.models.objective import batch_loss

    _sync(batch.device)
    start, loss = time.perf_counter(), None
    for _ in range(steps):
        with torch.autocast(batch.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = batch_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(batch.device)
    return time.perf_counter() - start, float(loss.detach())


def check_compile_210m() -> Result:
    import torch

    from wsdlab.models import build_model, model_config, num_parameters
    from wsdlab.train.config import OptimConfig
    from wsdlab.train.loop import peak_flops
    from wsdlab.train.optim import build_optimizer

    device = torch.device("cuda", 0)
    cfg = model_config("210M")
    with device:
        model = build_model(cfg)
    optimizer = build_optimizer(model, OptimConfig(), device)
    fwd = torch.compile(model)
    batch = synthetic_batch(cfg.vocab_size, 16, cfg.seq_len, device)
    compile_s, _ = _train_steps(fwd, optimizer, batch, 3, bf16=True)  # compiles, then warms up
    seconds, loss = _train_steps(fwd, optimizer, batch, 10, bf16=True)
    tps = 10 * batch.shape[0] * cfg.seq_len / seconds
    util = mfu(num_parameters(cfg, exclude_embeddings=True), tps, peak_flops(device))
    ok = bool(torch.isfinite(torch.tensor(loss)))
    return Result("bf16-compile-210M", ok, compile_s + seconds,
                  f"{tps:,.0f} tokens/s, MFU {'n/a (unknown GPU)' if util is None else f'{util:.1%}'}, "
                  f"compile+warm-up {compile_s:.0f} s, loss {loss:.3f}")


def check_hvp_attention(device_kind: str = "cuda") -> Result:
    import torch

    from wsdlab.analysis.evalset import math_attention
    from wsdlab.analysis.hessian import HessianOperator
    from wsdlab.models import build_model, model_config
    from wsdlab.models.objective import batch_loss

    device = torch.device(device_kind, 0) if device_kind == "cuda" else torch.device(device_kind)
    cfg = model_config("tiny" if device.type == "cuda" else "micro")
    with device:
        model = build_model(cfg)
    batch = synthetic_batch(cfg.vocab_size, 4, cfg.seq_len, device)
    _sync(device)
    start = time.perf_counter()
    with math_attention():
        op = HessianOperator(model, batch_loss, [batch], probe_chunk=1)
        gen = torch.Generator(device="cpu").manual_seed(0)
        u, w = (torch.randn(op.dim, generator=gen).to(device) for _ in range(2))
        hw, hu = op.matvec(w), op.matvec(u)
        uhw, whu = float(u @ hw), float(w @ hu)
        scale = float(torch.maximum(u.norm() * hw.norm(), w.norm() * hu.norm()))  # |<u, Hw>| <= |u| |Hw|
    _sync(device)
    gap = abs(uhw - whu) / max(scale, 1e-30)
    return Result("hvp-attention", gap < 1e-3, time.perf_counter() - start,
                  f"<u,Hw> {uhw:.4g}, <w,Hu> {whu:.4g}, relative gap {gap:.1e}")


# ---------------------------------------------------------------------------- torchrun workers


def worker(kind: str, device_kind: str = "cuda") -> dict[str, Any]:
    """One rank of a torchrun check: `ddp` / `fsdp` (the 60M preset) or `fsdp-1B-ac`; rank 0's summary.

    `device_kind` cpu (gloo, the micro preset for every kind) only tests this code without a GPU.
    """
    import torch

    from wsdlab.models import build_model, model_config
    from wsdlab.models.checkpointing import set_activation_checkpointing
    from wsdlab.train import distributed as dist_utils
    from wsdlab.train.config import OptimConfig
    from wsdlab.train.optim import build_optimizer

    fsdp = kind != "ddp"
    ctx = dist_utils.init_distributed(device_kind, fsdp=fsdp)
    cuda = ctx.device.type == "cuda"
    try:
        big = kind == "fsdp-1B-ac"
        cfg = model_config(("1B" if big else "60M") if cuda else "micro")
        with torch.device(ctx.device):
            model = build_model(cfg)
        set_activation_checkpointing(model, big)
        wrapped = dist_utils.wrap_model(model, ctx, fsdp, bf16=True)
        optimizer = build_optimizer(model, OptimConfig(), ctx.device)
        batch = synthetic_batch(cfg.vocab_size, 2 if big else 8, cfg.seq_len, ctx.device, seed=ctx.rank)
        if cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        seconds, loss = _train_steps(wrapped, optimizer, batch, 1 if big else 3, bf16=True)
        peak = torch.cuda.max_memory_allocated(ctx.device) if cuda else 0
        stats = torch.tensor([loss, float(peak)], dtype=torch.float64, device=ctx.device)
        mean = dist_utils.all_reduce_mean(stats, ctx)
        dist_utils.barrier(ctx)
        return {"world": ctx.world_size, "seconds": seconds, "loss": float(mean[0]),
                "peak_gib": float(mean[1]) / 2**30, "distributed": ctx.distributed,
                "sharded": hasattr(next(model.parameters()), "placements")}
    finally:
        dist_utils.shutdown(ctx)


def run_worker(kind: str, gpus: int, device_kind: str = "cuda") -> Result:
    """`kind` under torchrun on `gpus` processes; its rank 0 prints one JSON line."""
    if kind == "ddp" and gpus < 2:
        return Result(kind, None, 0.0, f"skipped: DDP needs 2 GPUs, {gpus} visible")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
           "-m", "wsdlab.cli.gpu_smoke", "--worker", kind, "--device", device_kind]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    except subprocess.TimeoutExpired:
        return Result(kind, False, time.perf_counter() - start, f"timed out after {WORKER_TIMEOUT_S} s")
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        text = (proc.stderr or proc.stdout).strip().splitlines()
        causes = [ln.strip() for ln in text if any(w in ln for w in ("Error", "error", "terminate", "what()", "Abort"))]
        tail = " | ".join((causes[:4] or text[-3:]))
        when = "after rank 0 reported its result" if lines else "before rank 0 reported"
        return Result(kind, False, seconds, f"exit {proc.returncode} {when}: {tail[-400:]}")
    out = json.loads(lines[-1])
    ok = out["distributed"] and (out["sharded"] or kind == "ddp") and out["loss"] == out["loss"]
    return Result(kind, ok, seconds, f"{out['world']} GPU(s), step(s) {out['seconds']:.2f} s, loss {out['loss']:.3f}, "
                  f"peak {out['peak_gib']:.1f} GiB/GPU{', sharded' if out['sharded'] else ''}")


# ---------------------------------------------------------------------------- driver


def _guard(name: str, fn: Callable[[], Result]) -> Result:
    """Run one check; an exception is a failed row, so the other checks still run."""
    start = time.perf_counter()
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - the table reports every failure
        return Result(name, False, time.perf_counter() - start, f"{type(err).__name__}: {str(err)[:200]}")


def format_table(results: list[Result]) -> str:
    """Fixed-width table: check, status, seconds, detail."""
    status = {True: "ok", False: "FAIL", None: "skip"}
    width = max(len(r.check) for r in results)
    lines = [f"{'check':<{width}}  status  seconds  detail"]
    lines += [f"{r.check:<{width}}  {status[r.ok]:<6}  {r.seconds:7.1f}  {r.detail}" for r in results]
    return "\n".join(lines)


def run_smoke(print_fn: Callable[[str], None] = print) -> int:
    """Every check on CUDA (exit 1 when one failed), else the list of what would run (exit 0)."""
    import torch

    if not torch.cuda.is_available():
        print_fn("no CUDA device: nothing run. On a CUDA machine this runs:")
        for name, what in CHECKS.items():
            print_fn(f"  {name}: {what}")
        return 0
    gpus = torch.cuda.device_count()
    print_fn(f"{gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    results = [_guard("bf16-compile-210M", check_compile_210m)]
    gc.collect()
    torch.cuda.empty_cache()  # the torchrun workers below share GPU 0 with this process
    results += [_guard(kind, lambda kind=kind: run_worker(kind, gpus)) for kind in ("ddp", "fsdp", "fsdp-1B-ac")]
    results.append(_guard("hvp-attention", check_hvp_attention))
    print_fn(format_table(results))
    return 1 if any(r.ok is False for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=("ddp", "fsdp", "fsdp-1B-ac"), help=argparse.SUPPRESS)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)  # cpu: tests
    args = ap.parse_args(argv)
    if args.worker:
        out = worker(args.worker, args.device)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(out), flush=True)
        sys.stderr.flush()
        # The process group is destroyed and the result printed: skip the interpreter's teardown, where the
        # destructors of FSDP's and gloo's objects aborted a 2-rank CPU run about once in 50 (SIGABRT).
        os._exit(0)
    return run_smoke()


if __name__ == "__main__":
    sys.exit(main())
