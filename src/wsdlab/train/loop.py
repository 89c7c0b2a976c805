"""The one training loop for every stage (stable, cooldown, mid-training, fine-tuning).

`train(spec, out)` starts a fresh run, resumes the latest checkpoint in `out`, or branches from
`spec.init_from`. Everything is validated before `out` is touched. Per step it appends a row to
RUN/metrics.jsonl; evaluation, snapshots and checkpoints follow the spec's cadences (see
docs/ARCHITECTURE.md, "train", for the files and the step convention).

Faults. One process writes a run directory at a time (RUN/.lock, `runlock.run_lock`). Resume
starts from the newest *intact* checkpoint (a damaged one is reported on stderr and skipped); a
run killed after its final checkpoint but before COMPLETE just writes COMPLETE. A NaN/inf loss or
gradient norm stops the run with NonFiniteError naming the step and the quantity, before anything
of that step (row, snapshot, checkpoint) is written; the last good checkpoint stays.

Time limits (`preempt`). `train.checkpoint_every_minutes` adds a checkpoint at the first step after
that much wall-clock time since the last one; such a checkpoint (and a stop's) is deleted once a
newer one is written, so only the cadence's checkpoints accumulate. SIGUSR1 / SIGTERM during the
steps (Slurm's warning before the time limit, preemption) finish the current step, write a
checkpoint at it and raise `Preempted`; rerunning resumes from that checkpoint like from any other.
Under torchrun the ranks agree on both decisions every step (`any_rank`), so they checkpoint and
stop at the same step.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wsdlab import data as wsd_data
from wsdlab.common.errors import CheckpointError, ConfigError, NonFiniteError
from wsdlab.models import LMConfig, build_model, flops_per_token
from wsdlab.models.checkpointing import set_activation_checkpointing
from wsdlab.schedules import build_schedule
from wsdlab.train import distributed as dist_utils
from wsdlab.train import measures
from wsdlab.train.accumulate import accumulate_gradients
from wsdlab.train.batching import global_batch_size, micro_batches, rank_slice
from wsdlab.train.checkpoint import (
    SHARDED_DIR,
    Checkpoint,
    list_checkpoints,
    load_model_weights,
    open_checkpoint,
)
from wsdlab.train.config import RunSpec
from wsdlab.train.distributed import DistContext
from wsdlab.train.evaluate import evaluate_metrics, to_device
from wsdlab.train.layout import checkpoint_dir
from wsdlab.train.memory import computes_in_bf16
from wsdlab.train.metrics import MetricsSink
from wsdlab.train.optim import bind_schedule, build_optimizer, load_optimizer_tensors, set_hyperparams
from wsdlab.train.preempt import CheckpointTimer, Preempted, StopSignals
from wsdlab.train.progress import TrainProgress
from wsdlab.train.rng import restore_host_rng, restore_torch_rng, seed_everything
from wsdlab.train.runlock import run_lock
from wsdlab.train.runstore import COMPLETE, RunDir
from wsdlab.train.runwriter import Cadence, RunWriter, TrainState
from wsdlab.train.sharded import load_sharded
from wsdlab.train.validate import check_resumable, data_differs, validate_run_start

# Peak dense bf16 FLOP/s per device name (no sparsity), for MFU; the first name contained in the device's wins.
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of a known CUDA device, else None (MFU is then not reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS if k in name), None)


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic torch algorithms inside the block (warn-only for ops without one); restored after."""
    before, warn_before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


@dataclass
class Setup:
    """Everything built (and validated) before the run directory is touched."""

    spec: RunSpec
    out: Path
    ctx: DistContext
    data: Any
    model: nn.Module  # the plain module (owner of the weights; sharded in place under FSDP2)
    wrapped: nn.Module  # what the forward pass calls: DDP around `model`, or `model` itself
    optimizer: torch.optim.Optimizer
    state: TrainState
    fresh: bool
    global_batch: int
    watch: "FiniteWatch"


def train(spec: RunSpec, out: str | Path, *, sinks: Sequence[MetricsSink] = (),
          clock: Callable[[], float] = time.monotonic) -> RunDir:
    """Run `spec` into directory `out` (resume from its latest checkpoint, or branch from spec.init_from).

    `clock` (seconds) times `train.checkpoint_every_minutes`; Preempted after a stop signal.
    """
    out = Path(out)
    validate_run_start(spec, out)
    if (out / COMPLETE).is_file():
        return RunDir(out)
    had_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = dist_utils.init_distributed(spec.train.device, fsdp=spec.train.fsdp)
    owns_group = ctx.distributed and not had_group  # a caller's process group is left alone
    try:
        lock = run_lock(out) if ctx.is_main else contextlib.nullcontext()
        with lock, deterministic(spec.train.deterministic):
            if not (out / COMPLETE).is_file():  # another writer may have finished it meanwhile
                setup = _prepare(spec, out, ctx)
                _run(setup, sinks, clock)
        if owns_group:
            # every rank reaches the end before the group goes: a rank that tears gloo down while another
            # still talks to it aborts ("terminate called without an active exception"); not after an
            # error, where the other ranks may never arrive
            dist_utils.barrier(ctx)
    finally:
        if owns_group:
            dist_utils.shutdown(ctx)
    return RunDir(out)


def _prepare(spec: RunSpec, out: Path, ctx: DistContext) -> Setup:
    """Build data, model and optimizer and restore state, without writing to `out`.

    Order matters for FSDP2: weights are loaded into the plain model, then it is wrapped (sharding
    replaces the parameters), then the optimizer is built over the final parameters and its state loaded.
    """
    check_resumable(spec, out)
    resume = latest_intact_checkpoint(out, warn=ctx.is_main)
    parent = open_checkpoint(spec.init_from) if (resume is None and spec.init_from) else None
    source = resume or parent
    marker = wsd_data.prepared_marker(spec.data) if ctx.distributed else None
    with dist_utils.main_first(ctx, ready=None if marker is None else marker.is_file):  # others poll, no barrier
        data = wsd_data.load_data(spec.data, progress=spec.train.progress and ctx.is_main)
    if isinstance(spec.model, LMConfig) and data.vocab_size is not None and data.vocab_size > spec.model.vocab_size:
        raise ConfigError(f"model.vocab_size ({spec.model.vocab_size}) is smaller than the data's vocabulary "
                         f"({data.vocab_size}); set model.vocab_size >= {data.vocab_size}")
    batch = global_batch_size(spec.train, data.tokens_per_item)
    seed_everything(spec.train.seed)
    sharded = loads_sharded(source, spec, ctx)
    if sharded:
        model, wrapped = _build_sharded(spec, ctx)
    else:
        model = build_model(spec.model)
        if source is not None:
            load_model_weights(model, source.model_tensors(), source.path)
        model = model.to(ctx.device)
        set_activation_checkpointing(model, spec.train.activation_checkpointing)
        wrapped = dist_utils.wrap_model(model, ctx, spec.train.fsdp, bf16=computes_in_bf16(spec, ctx.device.type))
    optimizer = build_optimizer(model, spec.optim, ctx.device)
    if sharded:
        keep_moments = resume is not None or not (spec.branch and spec.branch.reset_optimizer)
        load_sharded(source.path / SHARDED_DIR, model, optimizer if keep_moments else None)
    elif resume is not None:
        load_optimizer_tensors(optimizer, resume.optimizer_tensors(), resume.path / "optimizer.safetensors")
    if resume is not None:
        restore_torch_rng(resume.rng_tensors())
        restore_host_rng(resume.state["rng"])
        s = resume.state
        state = TrainState(step=s["step"], start_step=s["start_step"], data_cursor=s["data_cursor"], tokens=s["tokens"])
    elif parent is not None:
        state = _branch_state(parent, optimizer, spec, moments_loaded=sharded)
    else:
        state = TrainState(step=0, start_step=0, data_cursor=0, tokens=0)
    set_hyperparams(optimizer, spec.optim)
    if state.step > spec.train.steps or (resume is None and state.step == spec.train.steps):
        # (a resumed run at exactly train.steps was killed before COMPLETE: it only completes)
        raise ConfigError(f"train.steps ({spec.train.steps}) must exceed the starting step ({state.step})")
    return Setup(spec=spec, out=out, ctx=ctx, data=data, model=model, wrapped=wrapped, optimizer=optimizer,
                 state=state, fresh=resume is None, global_batch=batch, watch=FiniteWatch(ctx.device))


def loads_sharded(source: Checkpoint | None, spec: RunSpec, ctx: DistContext) -> bool:
    """An FSDP run resuming or branching from a sharded checkpoint: each rank reads only its shards
    (`_build_sharded`, `load_sharded`). Otherwise weights and moments are loaded whole, then sharded.

    A sharded branch builds its model on the meta device, so unlike a whole load it draws no random
    initial weights: the torch RNG state it stores in its checkpoints differs (training draws nothing
    from it; the weights, moments and data order are the same)."""
    return source is not None and source.sharded and spec.train.fsdp and ctx.distributed


def _build_sharded(spec: RunSpec, ctx: DistContext) -> tuple[nn.Module, nn.Module]:
    """(model, wrapped) of an FSDP run resuming a sharded checkpoint, sharded from the start: built on the
    meta device (no weights in memory), wrapped by FSDP2, then each rank allocates only its shards, which
    `load_sharded` fills. Buffers no state dict holds (RoPE tables) are computed on CPU, as a fresh build
    computes them before moving the model, and copied in, so they match bit for bit."""
    with torch.device("meta"):
        model = build_model(spec.model)
    buffers = _cpu_buffers(model)
    set_activation_checkpointing(model, spec.train.activation_checkpointing)
    wrapped = dist_utils.wrap_model(model, ctx, True, bf16=computes_in_bf16(spec, ctx.device.type))
    model.to_empty(device=ctx.device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return model, wrapped


def _cpu_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The buffers of a meta-device model computed on CPU: its buffers are re-made on CPU and its
    `init_weights` (if any) rerun; the parameters stay on the meta device (nothing is allocated for them)."""
    for module in model.modules():
        for key, b in module._buffers.items():
            if b is not None:
                module._buffers[key] = torch.zeros_like(b, device="cpu")
    if hasattr(model, "init_weights"):
        model.init_weights()
    return {name: b.clone() for name, b in model.named_buffers()}


def latest_intact_checkpoint(out: Path, *, warn: bool = True) -> Checkpoint | None:
    """The newest checkpoint of `out` that verifies and can be resumed (None when there is none).

    Each damaged one is named on stderr and skipped; CheckpointError when all of them are damaged.
    """
    found = list_checkpoints(out)
    problems = []
    for step in sorted(found, reverse=True):
        try:
            ckpt = open_checkpoint(found[step])
            if not ckpt.state.get("rng"):
                raise CheckpointError(f"checkpoint {found[step] / 'state.json'}: no RNG state, cannot resume from it")
        except CheckpointError as err:
            problems.append(str(err))
            if warn:
                print(f"warning: {err}; falling back to an older checkpoint", file=sys.stderr)
            continue
        if problems and warn:
            print(f"warning: resuming {out} from checkpoint {step}", file=sys.stderr)
        return ckpt
    if problems:
        raise CheckpointError(f"run {out}: no intact checkpoint to resume from ({len(problems)} damaged; "
                              f"newest: {problems[0]}); move the run directory aside and start again")
    return None


class FiniteWatch:
    """Remembers, on the device, the first step whose loss or gradient norm was NaN/inf, so steps
    that write nothing never wait on the device; `check` (a sync) raises NonFiniteError for it."""

    QUANTITIES = ("loss", "grad_norm")

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.kind = torch.zeros((), dtype=torch.long, device=device)  # index into QUANTITIES
        self.value = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        loss, grad_norm = loss.detach().double().reshape(()), grad_norm.detach().double().reshape(())
        bad_loss = ~torch.isfinite(loss)
        new = (self.step < 0) & (bad_loss | ~torch.isfinite(grad_norm))
        self.step = torch.where(new, step, self.step)
        self.kind = torch.where(new, torch.where(bad_loss, 0, 1), self.kind)
        self.value = torch.where(new, torch.where(bad_loss, loss, grad_norm), self.value)

    def check(self, where: str) -> None:
        step = int(self.step)
        if step >= 0:
            name, value = self.QUANTITIES[int(self.kind)], float(self.value)
            raise NonFiniteError(f"non-finite {name} ({value}) at step {step} of {where}; training stopped "
                                 "before writing that step")


def _branch_state(parent: Checkpoint, optimizer: torch.optim.Optimizer, spec: RunSpec, *,
                  moments_loaded: bool = False) -> TrainState:
    """A branch continues the parent's step with its optimizer moments (unless reset; `moments_loaded`:
    already loaded from the parent's shards); the data cursor continues unless the branch reads other
    data (then it starts its own order at 0)."""
    if not (spec.branch and spec.branch.reset_optimizer) and not moments_loaded:
        load_optimizer_tensors(optimizer, parent.optimizer_tensors(), parent.path / "optimizer.safetensors")
    s = parent.state
    cursor = 0 if data_differs(parent.spec.data, spec.data) else s["data_cursor"]
    return TrainState(step=s["step"], start_step=s["step"], data_cursor=cursor, tokens=s["tokens"])


# --------------------------------------------------------------------------------------------- run


def _autocast(spec: RunSpec, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU (precision auto/bf16), fp32 on CPU unless bf16 is asked for."""
    if computes_in_bf16(spec, device.type):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _run(setup: Setup, sinks: Sequence[MetricsSink], clock: Callable[[], float]) -> None:
    spec, ctx, st = setup.spec, setup.ctx, setup.state
    cadence = Cadence(spec)
    timer = CheckpointTimer(spec.train.checkpoint_every_minutes, clock)
    writer = RunWriter(setup.out, spec, ctx, setup.model, setup.optimizer, st, setup.global_batch, sinks)
    model = setup.model
    model.train()
    fwd = setup.wrapped
    if spec.train.compile:
        fwd = torch.compile(fwd)
    schedule = build_schedule(spec.schedule, spec.train.steps)
    scheduler = bind_schedule(setup.optimizer, schedule, st.step)
    order = wsd_data.SequenceOrder(spec.data.order, setup.data.num_train)
    # the val set: the first eval_batches x eval_size items (eval settings and global batch, never micro_batch_size),
    # computed in chunks of eval_chunk items (the memory bound validate_run_start checks)
    eval_size = spec.train.eval_batch_size or setup.global_batch
    eval_chunk = spec.train.eval_batch_size or spec.train.micro_batch_size or setup.global_batch
    fpt = flops_per_token(spec.model) if ctx.device.type == "cuda" else None
    peak = peak_flops(ctx.device)
    params = [p for g in setup.optimizer.param_groups for p in g["params"]]
    reduce = (lambda x: dist_utils.all_reduce_sum(x, ctx)) if (ctx.distributed and spec.train.fsdp) else measures.no_reduce
    progress = TrainProgress(st.step, spec.train.steps, spec.train.progress and ctx.is_main, label=spec.name)

    where = f"run '{spec.name}' in {setup.out}"

    def stop_if_non_finite() -> None:
        try:
            setup.watch.check(where)
        except NonFiniteError as err:
            found = list_checkpoints(setup.out)
            last = f"the last good checkpoint is {found[max(found)]}" if found else "no checkpoint was written"
            raise NonFiniteError(f"{err}; {last} (lower optim.lr or check the data)") from None

    def run_eval() -> None:
        val = evaluate_metrics(model, setup.data, spec.train.eval_batches, eval_size, ctx.device,
                               _autocast(spec, ctx.device), chunk_size=eval_chunk)  # val_loss (+ val_accuracy)
        writer.row({"split": "val", "step": st.step, **val})

    with StopSignals() as signals:  # a stop signal now ends the run at a checkpoint (after the step)
        try:
            writer.open(setup.fresh)
            if setup.fresh:
                run_eval()
                if cadence.snapshot(st.step):
                    writer.snapshot()
                if st.step == 0:
                    writer.checkpoint()
                    timer.restart()
            last_time, last_tokens = time.perf_counter(), st.tokens
            while st.step < spec.train.steps:
                t = st.step + 1
                log = t % spec.train.log_every == 0 or t == spec.train.steps
                seq = order.indices(st.data_cursor, setup.global_batch)
                row = _train_step(setup, fwd, params, seq, log, reduce)
                scheduler.step()
                st.step, st.data_cursor = t, st.data_cursor + setup.global_batch
                st.tokens += setup.global_batch * setup.data.tokens_per_item
                st.batch_rows.append(seq)
                # the ranks agree (a signal at the last step just lets the run complete)
                asked = signals.requested is not None and t < spec.train.steps
                timed, stop = dist_utils.any_rank((timer.due(), asked), ctx)
                checkpoint = cadence.checkpoint(t) or timed or stop
                if row is not None or cadence.evaluate(t) or cadence.snapshot(t) or checkpoint:
                    stop_if_non_finite()  # before anything of step t is written
                if row is not None:
                    now = time.perf_counter()
                    tps = (st.tokens - last_tokens) / max(now - last_time, 1e-9)
                    last_time, last_tokens = now, st.tokens
                    mfu = fpt * tps / (peak * ctx.world_size) if (fpt is not None and peak is not None) else None
                    writer.row({"step": t, **row, "tokens": st.tokens, "tokens_per_s": tps, "mfu": mfu})
                    progress.update(t, row["loss"], row["lr"], tps)
                if cadence.evaluate(t):
                    run_eval()
                if cadence.snapshot(t):
                    writer.snapshot()
                if checkpoint:
                    writer.checkpoint()
                    writer.prune(keep=cadence.checkpoint)  # earlier wall-clock / stop checkpoints go
                    timer.restart()
                if stop:
                    dist_utils.barrier(ctx)  # rank 0 has written the checkpoint before any rank leaves
                    raise Preempted(t, checkpoint_dir(setup.out, t))
            writer.complete()
        finally:
            progress.close()
            writer.close()


def _train_step(setup: Setup, fwd: nn.Module, params: list[torch.Tensor], seq: np.ndarray, log: bool,
                reduce: measures.Reduce) -> dict[str, Any] | None:
    """One optimizer update, accumulating gradients over micro batches (`accumulate.accumulate_gradients`:
    masked SFT batches weigh every response token of the global batch equally); the train row when `log`.

    Measurements (only on logged steps, so other steps never wait on the device): loss (mean over
    the global batch; masked batches: over its response tokens), lr of this update, grad_norm before
    clipping, param_norm after the update,
    grad_momentum_cos = mean over parameter tensors j of cos(g_t^j, m_{t-1}^j) (Dremov et al. App. G; None
    without moments), grad_momentum_cos_global = cos(g_t, m_{t-1}) of the concatenated vectors,
    update_grad_cos = cos(-g_t, x_t - x_{t-1}), update_norm = ||x_t - x_{t-1}|| (reduced over ranks like param_norm),
    accuracy (classifiers only: share of the batch's images classified right, before the update).
    """
    spec, ctx, opt = setup.spec, setup.ctx, setup.optimizer
    chunks = micro_batches(rank_slice(seq, ctx.rank, ctx.world_size), spec.train.micro_batch_size)
    loss_sum, acc_sum = accumulate_gradients(  # acc_sum: classifiers' accuracy on the batch (before the update)
        fwd, lambda idx: to_device(setup.data.train_batch(idx), ctx.device), chunks, ctx,
        lambda: _autocast(spec, ctx.device))
    lr = opt.param_groups[0]["lr"]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    gm_cos = gm_cos_global = prev = gg = None
    if log:  # each per-tensor sum once (measures.tensor_dots); the measures are built from them
        moments = [opt.state[p].get("exp_avg") for p in params]
        gg = measures.tensor_dots(grads, grads)
        if all(m is not None for m in moments):
            gm, mm = measures.tensor_dots(grads, moments), measures.tensor_dots(moments, moments)
            gm_cos = measures.mean_cosine_of(gm, gg, mm, reduce)  # App. G: per tensor, then averaged
            gm_cos_global = measures.cosine_of(gm, gg, mm, reduce)  # cos(g_t, m_{t-1}) of the whole vectors
        prev = measures.copy_of(params)
    if spec.optim.grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.optim.grad_clip, foreach=True)
    else:
        grad_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    full_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    setup.watch.update(setup.state.step + 1, loss_sum, full_norm)  # a rank's NaN loss reaches every rank's grad norm
    opt.step()
    row = None
    if log:
        update = measures.difference(params, prev)
        uu = measures.tensor_dots(update, update)
        if spec.optim.grad_clip is not None:  # clipping rescaled the gradients in place
            gg = measures.tensor_dots(grads, grads)
        ug = measures.cosine_of(measures.tensor_dots(grads, update), gg, uu, reduce)
        row = {"loss": float(dist_utils.all_reduce_mean(loss_sum, ctx)), "lr": lr,
               "grad_norm": float(full_norm),
               "param_norm": measures.global_norm(params, reduce),
               "update_norm": measures.norm_of(uu, reduce),  # ||x_t - x_{t-1}|| (paper 001, Fig. 6)
               "grad_momentum_cos": gm_cos,
               "grad_momentum_cos_global": gm_cos_global,
               "update_grad_cos": None if ug is None else -ug}  # cos(-g_t, x_t - x_{t-1})
        if acc_sum is not None:
            row["accuracy"] = float(dist_utils.all_reduce_mean(acc_sum, ctx))
    opt.zero_grad(set_to_none=True)
    return row
