"""Unit `interpolate`: 1-D loss along theta(a) = (1 - a) theta0 + a theta1 between two checkpoints/snapshots.

Table `interpolate` (columns in `wsdlab.analysis.geometry`); the grid evaluation is `analysis.landscape`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from wsdlab.analysis.geometry.common import (
    RUN_ARGUMENT,
    GeometryUnit,
    RunLike,
    as_run,
    eval_batches,
    final_step,
    run_data,
    run_model,
    weights_at,
)
from wsdlab.analysis.geometry_config import InterpolateConfig
from wsdlab.analysis.landscape import interpolation
from wsdlab.analysis.units import UnitContext, labelled, register_unit
from wsdlab.common.config import StrictModel
from wsdlab.common.types import Row
from wsdlab.models import batch_loss

if TYPE_CHECKING:
    from wsdlab.data import DataBundle


def interpolate_table(run: RunLike, config: InterpolateConfig | None = None, *, from_step: int,
                      to_step: int | None = None, to_run: RunLike | None = None, data: DataBundle | None = None,
                      device: str = "cpu", progress: bool = False) -> list[Row]:
    """Loss along the line from `run` at `from_step` to `to_run` (default the same run) at `to_step` (default final)."""
    run = as_run(run)
    other = as_run(to_run) if to_run is not None else run
    cfg = config or InterpolateConfig()
    model = run_model(run, device)
    theta0 = weights_at(run, from_step, model)
    to_step = final_step(other) if to_step is None else to_step
    theta1 = weights_at(other, to_step, model)
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows = interpolation(model, batch_loss, batches, theta0, theta1, cfg.alphas, chunk_size=cfg.chunk_size)
    head = {"run": run.path.name, "from_run": run.path.name, "from_step": from_step, "to_run": other.path.name,
            "to_step": to_step, "dataset": cfg.eval.split}
    return [{**head, **r} for r in rows]


class InterpolateTarget(StrictModel):
    run: Path = Field(description="Run directory.", json_schema_extra=RUN_ARGUMENT)
    from_step: int = Field(description="Step of theta0 (snapshot or checkpoint).", json_schema_extra={"cli": "--from"})
    to_step: int | None = Field(None, description="Step of theta1 [final checkpoint].", json_schema_extra={"cli": "--to"})
    to_run: Path | None = Field(None, description="Take theta1 from this run [RUN].")


@register_unit
class Interpolate(GeometryUnit):
    """1-D loss along theta(a) = (1 - a) theta0 + a theta1 between two checkpoints/snapshots."""

    name = "interpolate"
    Options = InterpolateConfig
    tables = ("interpolate",)
    Target = InterpolateTarget

    def compute(self, ctx: UnitContext, options: InterpolateConfig) -> dict[str, list[Row]]:
        """Loss on the line from the pre-cooldown checkpoint (the base's final step) to each cooldown's end."""
        base = ctx.one("base")
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            rows += labelled(interpolate_table(base, options, from_step=base.spec.train.steps, to_run=run,
                                               data=ctx.data, device=ctx.device, progress=ctx.progress), group)
        return {"interpolate": rows}

    def compute_run(self, target: InterpolateTarget, options: InterpolateConfig, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return interpolate_table(target.run, options, from_step=target.from_step, to_step=target.to_step,
                                 to_run=target.to_run, device=device)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        """Endpoint losses and the barrier: max over a in [0, 1] of L(a) - ((1 - a) L(0) + a L(1))."""
        by_alpha = {r["alpha"]: r["loss"] for r in rows}
        l0, l1 = by_alpha.get(0.0, math.nan), by_alpha.get(1.0, math.nan)
        inside = [(a, loss) for a, loss in by_alpha.items() if 0.0 <= a <= 1.0]
        barrier = max((loss - ((1 - a) * l0 + a * l1) for a, loss in inside), default=math.nan)
        best = min(rows, key=lambda r: r["loss"])
        return {"from_step": rows[0]["from_step"], "to_step": rows[0]["to_step"], "loss_from": l0, "loss_to": l1,
                "barrier": barrier, "min_loss": best["loss"], "min_alpha": best["alpha"]}
