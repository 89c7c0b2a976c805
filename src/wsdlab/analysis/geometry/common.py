"""What the geometry units share: a run's model, its weights at a step, its decay start, its data and
fixed evaluation batches, the study's selector of geometry runs and the units' base class."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import nn

from wsdlab.analysis.evalset import Batch, fixed_batches
from wsdlab.analysis.geometry_config import EvalSetConfig
from wsdlab.analysis.units import BASE, AnalysisUnit, RunSelector, UnitContext
from wsdlab.analysis.weights import Weights, select_parameters
from wsdlab.common.errors import ConfigError
from wsdlab.models import build_model
from wsdlab.schedules import cooldown_steps, pretrain_steps
from wsdlab.train import RunDir
from wsdlab.train.checkpoint import is_sharded

if TYPE_CHECKING:
    from wsdlab.data import DataBundle
    from wsdlab.data.config import DataConfig

RunLike = RunDir | str | Path

# In a study a geometry unit reads the snapshot-keeping cooldown of each shape (and variant).
GEOMETRY_RUNS = RunSelector(stage=["cooldown"], where={"geometry": True}, group_by=["shape", "variant"])
RUN_ARGUMENT = {"cli": "RUN"}  # field metadata: the Target field that is the positional RUN


def as_run(run: RunLike) -> RunDir:
    """A RunDir from a RunDir or a path (FileNotFoundError when it is not a run directory)."""
    return run if isinstance(run, RunDir) else RunDir(run)


def run_model(run: RunDir, device: torch.device | str = "cpu") -> nn.Module:
    """A freshly built model of the run's architecture (weights to be loaded), eval mode."""
    with torch.device(device):
        return build_model(run.spec.model).eval()


def weight_steps(run: RunDir) -> list[int]:
    """Steps with weights on disk: snapshots and checkpoints."""
    return sorted(set(run.snapshot_steps()) | set(run.checkpoint_steps()))


def weights_at(run: RunDir, step: int | None, model: nn.Module) -> Weights:
    """The run's parameters at `step` (a snapshot, else a checkpoint; None = the latest checkpoint)."""
    if step is None:
        step = final_step(run)
    if step in run.snapshot_steps():
        return select_parameters(model, run.load_snapshot(step), str(run.snapshot(step)))
    if step in run.checkpoint_steps():
        if is_sharded(run.checkpoint(step)):  # an FSDP run: its shards, gathered on this process
            return select_parameters(model, run.checkpoint_weights(step), str(run.checkpoint(step)))
        path = run.weights(step)
        return select_parameters(model, load_file(path), str(path))
    raise FileNotFoundError(f"run {run.path} has no snapshot or checkpoint at step {step} "
                            f"(have {weight_steps(run) or 'none'})")


def final_step(run: RunDir) -> int:
    """Step of the latest checkpoint (the final model of a complete run)."""
    steps = run.checkpoint_steps()
    if not steps:
        raise FileNotFoundError(f"run {run.path} has no checkpoint")
    return steps[-1]


def decay_start(run: RunDir) -> int:
    """First step of the decay: T_pre - (decay length) by the schedule's one rule (a branch from step k: k);
    ConfigError for a run without a decay (wso), whose decay start must be given."""
    spec = run.spec
    total = spec.train.steps
    cool = cooldown_steps(spec.schedule, total)
    if cool == 0:
        raise ConfigError(f"run {run.path} has no decay (schedule.kind '{spec.schedule.kind}'); pass the decay start")
    return pretrain_steps(spec.schedule, total) - cool


def run_data(run: RunDir, data: DataBundle | None = None) -> DataBundle:
    """The run's DataBundle (prepared and cached on first use), or `data` when given."""
    if data is not None:
        return data
    return load_other(run.spec.data)


def load_other(cfg: DataConfig) -> DataBundle:
    """The DataBundle of a data config (a second dataset, or a lone checkpoint's own data)."""
    from wsdlab.data import load_data  # deferred: preparing data is only needed when no bundle is passed

    return load_data(cfg, progress=False)


def eval_batches(data: DataBundle, cfg: EvalSetConfig, device: torch.device | str = "cpu") -> list[Batch]:
    """The fixed evaluation set of `cfg` from `data`."""
    return fixed_batches(data, cfg.split, cfg.batches, cfg.batch_size, cfg.seed, cfg.seq_len, device)


class GeometryUnit(AnalysisUnit):
    """Base of the geometry units: the base run and the geometry cooldowns, off unless a study asks."""

    inputs = {"base": BASE, "runs": GEOMETRY_RUNS}
    required = ("runs", "base")
    default_enabled = False
    snapshots = True

    @staticmethod
    def geometry_runs(ctx: UnitContext) -> list[tuple[str, RunDir]]:
        """(group, its first run) per geometry group."""
        return [(g, runs[0]) for g, runs in ctx.groups("runs").items()]
