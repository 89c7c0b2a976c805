"""Writing a run directory during training: metrics rows, batch indices, snapshots, checkpoints, COMPLETE.

Only rank 0 writes, except the checkpoints of an FSDP run: every rank writes its own shards
(train/sharded.py). Gathering a sharded model's weights (snapshots) is a collective every rank joins.
On resume the files are cut back to the checkpoint's step, so a resumed run's files equal an
uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

from wsdlab.common.io import atomic_write_bytes, atomic_write_text
from wsdlab.train import distributed as dist_utils
from wsdlab.train.checkpoint import cpu_tensors, list_checkpoints, save_checkpoint, write_sharded_rest
from wsdlab.train.config import RunSpec
from wsdlab.train.distributed import DistContext
from wsdlab.train.layout import (
    CHECKPOINTS_DIR,
    SNAPSHOTS_DIR,
    checkpoint_dir,
    snapshot_file,
)
from wsdlab.train.metrics import JsonlFile, MetricsSink, flat_metrics
from wsdlab.train.optim import hyperparams, optimizer_tensors
from wsdlab.train.rng import host_rng_json, torch_rng_tensors
from wsdlab.train.sharded import save_sharded
from wsdlab.train.runstore import BATCHES, COMPLETE, METRICS, SPEC, RunDir
from wsdlab.train.spec_io import dump_spec


@dataclass
class TrainState:
    """What the loop advances; saved in state.json with every checkpoint."""

    step: int
    start_step: int  # the step this run directory began at (0, or the parent's step for a branch)
    data_cursor: int  # stream positions consumed
    tokens: int  # tokens seen by the model, the parent's included
    batch_rows: list[np.ndarray] = field(default_factory=list)  # train sequence indices read per step

    def as_json(self) -> dict[str, int]:
        return {"step": self.step, "start_step": self.start_step, "data_cursor": self.data_cursor,
                "tokens": self.tokens}


class Cadence:
    """Which steps evaluate, snapshot and checkpoint (the end of the run always evaluates and checkpoints)."""

    def __init__(self, spec: RunSpec) -> None:
        t = spec.train
        self.end = t.steps
        self.eval_every = t.eval_every
        self.snap_every, self.snap_steps = t.snapshot_every, set(t.snapshot_steps)
        self.ckpt_every, self.ckpt_steps = t.checkpoint_every, set(t.checkpoint_steps)

    def evaluate(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.end

    def snapshot(self, step: int) -> bool:
        return step in self.snap_steps or (self.snap_every is not None and step % self.snap_every == 0)

    def checkpoint(self, step: int) -> bool:
        return step in self.ckpt_steps or step == self.end or (
            self.ckpt_every is not None and step % self.ckpt_every == 0)


class RunWriter:
    """The files of one run directory, written as training advances."""

    def __init__(self, out: Path, spec: RunSpec, ctx: DistContext, model: nn.Module,
                 optimizer: torch.optim.Optimizer, state: TrainState, global_batch: int,
                 sinks: Sequence[MetricsSink] = ()) -> None:
        self.out, self.spec, self.ctx, self.model, self.optimizer = out, spec, ctx, model, optimizer
        self.state, self.global_batch, self.sinks = state, global_batch, list(sinks)
        self.active = ctx.is_main
        self.metrics = JsonlFile(out / METRICS)

    def open(self, fresh: bool) -> None:
        """Create the directory (fresh) or cut its files back to the resumed checkpoint's step."""
        if not self.active:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.out)
        if fresh:
            atomic_write_text(self.out / SPEC, dump_spec(self.spec))
            self.metrics.truncate_after(-1)
            _remove(self.out / BATCHES)
        else:
            self.metrics.truncate_after(self.state.step)
            rows = RunDir(self.out).batch_indices()
            self.state.batch_rows = list(rows[: self.state.step - self.state.start_step])

    def row(self, row: dict[str, Any]) -> None:
        """Append a metrics.jsonl row and send it, flattened, to the sinks."""
        if not self.active:
            return
        self.metrics.write(row)
        flat = flat_metrics(row)
        for sink in self.sinks:
            sink.log(flat, row["step"])

    def _weights(self) -> dict[str, torch.Tensor]:
        return dist_utils.full_state_dict(self.model, self.ctx, self.spec.train.fsdp)

    def snapshot(self) -> None:
        weights = self._weights()
        if self.active:
            path = snapshot_file(self.out, self.state.step)
            atomic_write_bytes(path, save(cpu_tensors(weights)))

    @property
    def sharded(self) -> bool:
        """Checkpoints are DCP shards written by every rank (FSDP runs), not whole files from rank 0."""
        return self.spec.train.fsdp and self.ctx.distributed

    def checkpoint(self) -> None:
        if self.sharded:
            self._sharded_checkpoint()
            return
        weights, optim = self._weights(), optimizer_tensors(self.optimizer)
        if not self.active:
            return
        self.metrics.flush()
        self._write_batches()
        state = {**self.state.as_json(), "optimizer": hyperparams(self.optimizer), "rng": host_rng_json()}
        save_checkpoint(checkpoint_dir(self.out, self.state.step), model_state=weights, optim_state=optim,
                        rng_state=torch_rng_tensors(), state=state, spec=self.spec)

    def _sharded_checkpoint(self) -> None:
        """Every rank saves its shards; rank 0 writes batches, rng, state.json, spec and manifest."""
        if self.active:
            self.metrics.flush()
            self._write_batches()
        state = {**self.state.as_json(), "optimizer": hyperparams(self.optimizer), "rng": host_rng_json()}
        rng = torch_rng_tensors()
        save_sharded(checkpoint_dir(self.out, self.state.step), self.model, self.optimizer, self.ctx,
                     lambda tmp: write_sharded_rest(tmp, rng_state=rng, state=state, spec=self.spec))

    def prune(self, keep: Callable[[int], bool]) -> None:
        """Delete each checkpoint older than the current step that `keep` rejects and that is not step 0:
        the wall-clock and stop checkpoints (`preempt`), once a newer one is on disk, so a long run's
        disk holds its cadence checkpoints plus one more. Moved aside first, so a crash leaves no half."""
        if not self.active:
            return
        for step, path in list_checkpoints(self.out).items():
            if 0 < step < self.state.step and not keep(step):
                aside = path.with_name(f".tmp-pruned-{step}")
                os.replace(path, aside)
                shutil.rmtree(aside, ignore_errors=True)

    def _write_batches(self) -> None:
        rows = self.state.batch_rows
        arr = np.stack(rows).astype(np.int64) if rows else np.zeros((0, self.global_batch), dtype=np.int64)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write_bytes(self.out / BATCHES, buf.getvalue())

    def complete(self) -> None:
        if self.active:
            atomic_write_text(self.out / COMPLETE, f"{self.state.step}\n")

    def close(self) -> None:
        self.metrics.close()
        for sink in self.sinks:
            sink.close()


def remove_leftovers(out: Path) -> None:
    """Delete temporaries a killed writer left behind (`.tmp-*` directories, `.<name>.*.tmp` files).

    A `.tmp-old-<step>-<pid>` checkpoint (moved aside by `atomic_directory` to be replaced) whose
    replacement never arrived is put back rather than deleted.
    """
    for folder in (out, out / CHECKPOINTS_DIR, out / SNAPSHOTS_DIR):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".tmp-old-") and p.is_dir():
                final = folder / p.name.removeprefix(".tmp-old-").rsplit("-", 1)[0]
                if final.name.isdigit() and not final.exists():
                    os.replace(p, final)
                    continue
            if p.name.startswith(".tmp-") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                _remove(p)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
