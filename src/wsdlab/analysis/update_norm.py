"""Parameter norm and update norm after warmup (Kaplan et al., universality paper 001, Fig. 6).

The paper: "Parameter vector norm evolution after warmup period [...] weight updates are much larger
in the stable phase (left of dashed line) than in the cooldown phase (right of dashed line)."

Table `update_norm`: shape, run, step, phase (stable|cooldown), param_norm = ||x_t||, update_norm =
||x_t - x_{t-1}|| (both logged by the train loop on every train row), for the steps after warmup only
(t > warmup_steps): the base run's rows (shape 'stable') and each selected cooldown's own rows (t > k).
"""

from __future__ import annotations

from wsdlab.analysis.units import (
    BASE,
    COOLDOWNS,
    AnalysisUnit,
    UnitContext,
    register_unit,
)
from wsdlab.common.types import Row


def update_norm_rows(group: str, run_name: str, metrics: list[Row], *, after: int, phase: str) -> list[Row]:
    """One row per train row with step > `after` (rows without update_norm, from older runs, are left out)."""
    return [{"shape": group, "run": run_name, "step": r["step"], "phase": phase, "param_norm": r.get("param_norm"),
             "update_norm": r["update_norm"]}
            for r in metrics if r["step"] > after and r.get("update_norm") is not None]


@register_unit
class UpdateNorm(AnalysisUnit):
    """Parameter norm and update norm ||x_t - x_{t-1}|| after warmup, stable phase then cooldown (001, Fig. 6)."""

    name = "update_norm"
    inputs = {"base": BASE, "cooldowns": COOLDOWNS}
    tables = ("update_norm",)

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        rows: list[Row] = []
        for group, runs in ctx.groups("base").items():
            for run in runs:
                rows += update_norm_rows(group, run.path.name, run.metrics(), after=run.spec.schedule.warmup_steps,
                                         phase="stable")
        k = ctx.one("base").spec.train.steps
        for group, runs in ctx.groups("cooldowns").items():
            for run in runs:
                after = max(k, run.spec.schedule.warmup_steps)
                rows += update_norm_rows(group, run.path.name, run.metrics(), after=after, phase="cooldown")
        return {"update_norm": rows}
