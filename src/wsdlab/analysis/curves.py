"""Bookkeeping tables read straight from run specs and logs: the LR schedules and the validation curves.

- `schedules`: shape, step, lr_factor of one cooldown per group, base phase included (at most ~400 steps).
- `val_curves`: shape, seed, step, val_loss (+ val_accuracy for classifiers) of every cooldown, the base's evaluations up to the branch first.
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


@register_unit
class Schedules(AnalysisUnit):
    """LR factor per step of one cooldown per group, base phase included."""

    name = "schedules"
    inputs = {"cooldowns": COOLDOWNS, "base": BASE}
    tables = ("schedules",)
    always = True

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        from wsdlab.schedules import build_schedule

        k = ctx.one("base").spec.train.steps
        rows: list[Row] = []
        for group, runs in ctx.groups("cooldowns").items():
            spec = runs[0].spec
            total = spec.train.steps
            schedule = build_schedule(spec.schedule, total)
            stride = max(1, total // 400)
            steps = sorted(set(range(0, total + 1, stride)) | {total, k})
            rows += [{"shape": group, "step": t, "lr_factor": float(schedule(t))} for t in steps]
        return {"schedules": rows}


@register_unit
class ValCurves(AnalysisUnit):
    """Validation loss per eval step of each cooldown (the base's evaluations before the branch point)."""

    name = "val_curves"
    inputs = {"cooldowns": COOLDOWNS, "base": BASE}
    tables = ("val_curves",)
    always = True

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        base = ctx.one("base")
        base_rows = base.eval_rows()
        k = base.spec.train.steps
        rows: list[Row] = []
        for group, runs in ctx.groups("cooldowns").items():
            for run in runs:
                seed = run.spec.data.order.seed
                own = [r for r in run.eval_rows() if r["step"] > k]
                rows += [{"shape": group, "seed": seed, "step": r["step"], "val_loss": r["val_loss"],
                          **({"val_accuracy": r["val_accuracy"]} if "val_accuracy" in r else {})}  # classifiers
                         for r in base_rows + own]
        return {"val_curves": rows}
