"""Unit `probes`: linear probes per layer (head initialised from the LM head) along the cooldown.

Table `probes` (columns in `wsdlab.analysis.geometry`); the probes are `analysis.probes`'.
"""

from __future__ import annotations

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
from wsdlab.analysis.geometry_config import ProbeConfig
from wsdlab.analysis.probes import add_relative, probe_layers
from wsdlab.analysis.units import UnitContext, evenly, labelled, register_unit
from wsdlab.analysis.weights import load_weights
from wsdlab.common.config import StrictModel
from wsdlab.common.types import Row

if TYPE_CHECKING:
    from wsdlab.data import DataBundle


def probes_table(run: RunLike, config: ProbeConfig | None = None, *, steps: Sequence[int] | None = None,
                 reference_step: int | None = None, data: DataBundle | None = None, device: str = "cpu",
                 progress: bool = False) -> list[Row]:
    """Per-layer linear-probe perplexity at each step (default: the checkpoints from the decay start on).

    rel_perplexity divides by the same layer's perplexity at `reference_step` (default the first step,
    the cooldown start).
    """
    run = as_run(run)
    cfg = config or ProbeConfig()
    if steps is None:
        start = decay_start(run)
        steps = [s for s in run.checkpoint_steps() if s >= start] or run.checkpoint_steps()
    steps = sorted(steps)
    if not steps:
        raise FileNotFoundError(f"run {run.path} has no checkpoint")
    reference_step = steps[0] if reference_step is None else reference_step
    if reference_step not in steps:
        steps = sorted({*steps, reference_step})
    bundle = run_data(run, data)
    train_batches = eval_batches(bundle, cfg.train, device)
    held_out = eval_batches(bundle, cfg.eval, device)
    model = run_model(run, device)
    rows: list[Row] = []
    for step in track(steps, description="probes", disable=not progress, transient=True):
        load_weights(model, weights_at(run, step, model))
        layer_rows = probe_layers(model, train_batches, held_out, steps=cfg.steps, lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
        rows += [{"run": run.path.name, "step": step, **r} for r in layer_rows]
    return add_relative(rows, reference_step)


class ProbeOptions(ProbeConfig):
    num_steps: int = Field(3, gt=0, description="Study: how many cooldown steps are probed.",
                           json_schema_extra={"cli": False})


class ProbesTarget(StrictModel):
    run: Path = Field(description="Run directory (a cooldown with checkpoints).", json_schema_extra=RUN_ARGUMENT)
    steps: list[int] | None = Field(None, description="Comma-separated checkpoint steps [decay on].")
    reference_step: int | None = Field(None, description="Cooldown start [first step].")


@register_unit
class Probes(GeometryUnit):
    """Linear probes per layer (head initialised from the LM head) along the cooldown."""

    name = "probes"
    Options = ProbeOptions
    tables = ("probes",)
    Target = ProbesTarget

    def compute(self, ctx: UnitContext, options: ProbeOptions) -> dict[str, list[Row]]:
        k = ctx.one("base").spec.train.steps
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            steps = evenly([s for s in weight_steps(run) if s >= k], options.num_steps)
            rows += labelled(probes_table(run, options, steps=steps, reference_step=steps[0], data=ctx.data,
                                          device=ctx.device, progress=ctx.progress), group)
        return {"probes": rows}

    def compute_run(self, target: ProbesTarget, options: ProbeOptions, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return probes_table(target.run, options, steps=target.steps, reference_step=target.reference_step,
                            device=device, progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        steps = list(dict.fromkeys(r["step"] for r in rows))
        return {
            "perplexity": {str(s): [r["perplexity"] for r in rows if r["step"] == s] for s in steps},
            "rel_perplexity": {str(s): [r["rel_perplexity"] for r in rows if r["step"] == s] for s in steps},
        }
