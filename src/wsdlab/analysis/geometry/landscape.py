"""Unit `landscape`: 2-D loss at cooldown points along (pre-cooldown -> final) x (offset optimizer steps).

Table `landscape` (columns in `wsdlab.analysis.geometry`); the plane is `analysis.landscape.cooldown_plane`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    final_step,
    run_data,
    run_model,
    weight_steps,
    weights_at,
)
from wsdlab.analysis.geometry_config import LandscapeConfig
from wsdlab.analysis.landscape import cooldown_plane
from wsdlab.analysis.units import UnitContext, evenly, labelled, register_unit
from wsdlab.analysis.weights import Weights, difference, weights_norm
from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.models import batch_loss

if TYPE_CHECKING:
    from wsdlab.data import DataBundle


def landscape_table(run: RunLike, config: LandscapeConfig | None = None, *, points: Sequence[int],
                    pre_step: int | None = None, final: int | None = None,
                    after: Mapping[int, Weights] | None = None, data: DataBundle | None = None,
                    device: str = "cpu", progress: bool = False) -> list[Row]:
    """2-D landscapes at cooldown `points` along e1 = pre-cooldown -> final and e2 = `offset` steps on.

    `pre_step` defaults to the run's decay start, `final` to its latest checkpoint. The weights
    `offset` steps after a point come from `after[point]` when given (e.g. a short branch), else
    from the run's snapshot/checkpoint at point + offset.
    """
    run = as_run(run)
    cfg = config or LandscapeConfig()
    if not points:
        raise ConfigError("points: give at least one cooldown step")
    model = run_model(run, device)
    pre_step = decay_start(run) if pre_step is None else pre_step
    final = final_step(run) if final is None else final
    pre, fin = weights_at(run, pre_step, model), weights_at(run, final, model)
    e1_norm = weights_norm(difference(fin, pre))
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows: list[Row] = []
    for point in track(points, description="landscape", disable=not progress, transient=True):
        here = weights_at(run, point, model)
        later = after[point] if after is not None and point in after else weights_at(run, point + cfg.offset, model)
        head = {"run": run.path.name, "point": point, "pre_step": pre_step, "final_step": final,
                "after_step": point + cfg.offset, "dataset": cfg.eval.split}
        grid = cooldown_plane(model, batch_loss, batches, pre=pre, final=fin, point=here, after=later,
                              a_values=cfg.a_values, b_values=cfg.b_values, orthogonal=cfg.orthogonal,
                              chunk_size=cfg.chunk_size)
        e2_norm = weights_norm(difference(later, here))
        rows += [{**head, **r, "e1_norm": e1_norm, "e2_norm": e2_norm} for r in grid]
    return rows


class LandscapeOptions(LandscapeConfig):
    points: int = Field(2, gt=0, description="Study: how many cooldown points get a 2-D landscape.",
                        json_schema_extra={"cli": False})


class LandscapeTarget(StrictModel):
    run: Path = Field(description="Run directory (a cooldown with snapshots).", json_schema_extra=RUN_ARGUMENT)
    points: list[int] = Field(description="Comma-separated cooldown steps.")
    pre_step: int | None = Field(None, description="Pre-cooldown step [the decay start].", json_schema_extra={"cli": "--pre"})
    final: int | None = Field(None, description="Final step [latest checkpoint].")


@register_unit
class Landscape(GeometryUnit):
    """2-D perplexity landscape at cooldown points along (pre-cooldown -> final) x (offset optimizer steps)."""

    name = "landscape"
    Options = LandscapeOptions
    tables = ("landscape",)
    Target = LandscapeTarget

    def compute(self, ctx: UnitContext, options: LandscapeOptions) -> dict[str, list[Row]]:
        """2-D landscapes at a few cooldown points whose weights `offset` steps later are on disk."""
        k = ctx.one("base").spec.train.steps
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            have = set(weight_steps(run))
            candidates = [p for p in sorted(have) if p >= k and p + options.offset in have]
            if not candidates:
                raise ConfigError(f"landscape: run {run.path.name} has no cooldown point with weights {options.offset} "
                                  f"steps later (snapshots at {sorted(have)}); make analyses.landscape.options.offset a "
                                  "multiple of analyses.snapshot_every and shorter than the cooldown")
            points = evenly(candidates, options.points)
            rows += labelled(landscape_table(run, options, points=points, pre_step=k, data=ctx.data, device=ctx.device,
                                             progress=ctx.progress), group)
        return {"landscape": rows}

    def compute_run(self, target: LandscapeTarget, options: LandscapeOptions, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return landscape_table(target.run, options, points=target.points, pre_step=target.pre_step,
                               final=target.final, device=device, progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        """Per point: perplexity at the point itself and the grid minimum with its (a, b)."""
        out: dict[str, Any] = {}
        for point in dict.fromkeys(r["point"] for r in rows):
            sub = [r for r in rows if r["point"] == point]
            centre = next((r["perplexity"] for r in sub if r["a"] == 0 and r["b"] == 0), math.nan)
            best = min(sub, key=lambda r: r["loss"])
            out[str(point)] = {"perplexity": centre, "min_perplexity": best["perplexity"], "min_a": best["a"],
                               "min_b": best["b"], "e1_norm": sub[0]["e1_norm"], "e2_norm": sub[0]["e2_norm"]}
        return {"points": out}
