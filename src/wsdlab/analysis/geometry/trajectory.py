"""Unit `trajectory`: PCA of stable/decay iterates, ||H v|| along their directions, quasi-convexity and norms.

Table `trajectory` (the pca / hv / path rows of `analysis.trajectory`, after a leading `run`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from rich.progress import track

from wsdlab.analysis.geometry.common import (
    RUN_ARGUMENT,
    GeometryUnit,
    RunLike,
    as_run,
    decay_start,
    eval_batches,
    run_data,
    run_model,
    weight_steps,
    weights_at,
)
from wsdlab.analysis.geometry_config import TrajectoryConfig
from wsdlab.analysis.trajectory import one_step_pairs, trajectory_table
from wsdlab.analysis.units import UnitContext, labelled, register_unit
from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.models import batch_loss
from wsdlab.train import RunDir

if TYPE_CHECKING:
    from wsdlab.data import DataBundle


def trajectory_run_table(run: RunLike, config: TrajectoryConfig | None = None, *, decay_step: int | None = None,
                         stable_start: int | None = None, parent: RunLike | None = None,
                         data: DataBundle | None = None, device: str = "cpu", progress: bool = False) -> list[Row]:
    """PCA of S, D, S', D', ||H v_s|| vs ||H v_d|| at the decay start, and the path rows of one run.

    Iterates are the run's snapshots and checkpoints (every `config.every`-th); `parent` adds the
    iterates of the run a cooldown branch started from (steps up to the branch point).
    `decay_step` defaults to the run's decay start, `stable_start` to its warmup length.
    """
    run = as_run(run)
    cfg = config or TrajectoryConfig()
    model = run_model(run, device)
    decay_step = decay_start(run) if decay_step is None else decay_step
    stable_start = run.spec.schedule.warmup_steps if stable_start is None else stable_start
    sources: dict[int, RunDir] = {}
    if parent is not None:
        par = as_run(parent)
        sources.update({s: par for s in weight_steps(par) if s <= decay_step})
    sources.update({s: run for s in weight_steps(run)})
    steps = sorted(sources)
    partner: dict[int, int] = {}
    if cfg.one_step:  # x_{i+1} = the weights one optimizer step after a sampled x_i (paper 001, Fig. 4)
        steps, partner = one_step_pairs(steps)
        if not partner:
            raise ConfigError(f"trajectory one_step: run {run.path.name} has no weights one step after a sampled "
                              "iterate; add train.snapshot_steps s+1 for the sampled steps s")
    if len(steps) < 2:
        raise FileNotFoundError(f"run {run.path} has fewer than 2 snapshots/checkpoints: nothing to trace")
    keep = set(steps[:: cfg.every]) | {steps[-1]} | ({decay_step} if decay_step in sources else set())
    iterates = {s: weights_at(sources[s], s, model)
                for s in track(sorted(keep), description="iterates", disable=not progress, transient=True)}
    following = {s: weights_at(sources[partner[s]], partner[s], model) for s in keep if s in partner} if cfg.one_step else None
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows = trajectory_table(model, batch_loss, batches, iterates, decay_start=decay_step,
                            stable_start=stable_start, fraction=cfg.fraction, hessian=cfg.hessian,
                            probe_chunk=cfg.probe_chunk, next_iterates=following)
    return [{"run": run.path.name, **r} for r in rows]


class TrajectoryTarget(StrictModel):
    run: Path = Field(description="Run directory with snapshots.", json_schema_extra=RUN_ARGUMENT)
    decay_start: int | None = Field(None, description="First decay step [from the schedule].")
    stable_start: int | None = Field(None, description="First stable step [warmup_steps].")
    parent: Path | None = Field(None, description="Run a cooldown branch started from (its iterates).")


@register_unit
class Trajectory(GeometryUnit):
    """PCA of stable/decay iterates, ||H v|| along their directions, quasi-convexity and norms."""

    name = "trajectory"
    Options = TrajectoryConfig
    tables = ("trajectory",)
    Target = TrajectoryTarget

    def compute(self, ctx: UnitContext, options: TrajectoryConfig) -> dict[str, list[Row]]:
        base = ctx.one("base")
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            rows += labelled(trajectory_run_table(run, options, decay_step=base.spec.train.steps, parent=base,
                                                  data=ctx.data, device=ctx.device, progress=ctx.progress), group)
        return {"trajectory": rows}

    def compute_run(self, target: TrajectoryTarget, options: TrajectoryConfig, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return trajectory_run_table(target.run, options, decay_step=target.decay_start,
                                    stable_start=target.stable_start, parent=target.parent, device=device,
                                    progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        path_rows = [r for r in rows if r["kind"] == "path"]
        taus = [r["tau"] for r in path_rows if r["tau"] is not None and math.isfinite(r["tau"])]
        return {
            "pc1_share": {r["set"]: r["pc1_share"] for r in rows if r["kind"] == "pca"},
            "hv_norm": {r["direction"]: r["hv_norm"] for r in rows if r["kind"] == "hv"},
            "tau_min": min(taus, default=math.nan),
            "param_norm_final": path_rows[-1]["param_norm"] if path_rows else math.nan,
        }
