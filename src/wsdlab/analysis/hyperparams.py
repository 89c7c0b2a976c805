"""Cooldown hyper-parameter panels: validation loss and perplexity of cooldowns grouped by a labelled setting.

The study runner labels each cooldown run with its cooldown shape, a panel (what was varied) and a value, e.g.
    ("betas_p", 0.5)         betas -> beta**p (both betas)      ("beta2_p", 0.5)   beta2 only
    ("batch_x", 4)           batch size x k                     ("batch_x_half_life", 4) with matched betas
    ("weight_decay_off", 1)  AdamW weight decay off             ("reset_optimizer", 1)  fresh moments
For beta in (0, 1), beta**p is LARGER than beta when p < 1 (a longer memory: the half-life in steps is
1/p times longer) and smaller when p > 1; the paper (Dremov et al., §6.2) finds larger beta2 helps the
cooldown. Panel names and values are free text/numbers chosen by the runner; the baseline cooldown may
be added to a panel with its neutral value, e.g. p = 1. The paper draws these panels for several
cooldown shapes (Figs. 12, 25), hence the `shape` column. ppl = exp(val_loss), val_loss from
`wsdlab.train.evaluate`.

Table `hyperparams`: shape, panel, value, seed, val_loss, ppl   (shape empty when the run has none)
Table `hyperparams_summary`: shape, panel, value, n, val_loss_mean, val_loss_min, val_loss_max, ppl_mean,
    ppl_min, ppl_max
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from wsdlab.analysis.units import AnalysisUnit, RunSelector, UnitContext, register_unit
from wsdlab.common.types import Row
from wsdlab.train import RunDir, evaluate

if TYPE_CHECKING:
    from wsdlab.data import DataBundle



class LabelledRun(NamedTuple):
    """A cooldown run with the panel it belongs to, the value of the varied setting and its cooldown shape."""

    panel: str
    value: Any
    run: RunDir
    shape: str | None = None


def hyperparam_row(panel: str, value: Any, seed: int, val_loss: float, shape: str | None = None) -> Row:
    """One `hyperparams` row."""
    return {"shape": shape, "panel": panel, "value": value, "seed": seed, "val_loss": float(val_loss),
            "ppl": math.exp(val_loss)}


def hyperparams_table(
    runs: Sequence[LabelledRun | tuple[str, Any, RunDir] | tuple[str, Any, RunDir, str | None]],
    data: DataBundle,
    *,
    num_batches: int = 8,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[Row]:
    """Validation loss and perplexity of each labelled run's final model; seed = its data-order seed."""
    rows = []
    losses: dict[str, float] = {}  # a baseline joins several panels: evaluate each run once
    for item in runs:
        panel, value, run, shape = LabelledRun(*item)
        key = str(run.path)
        if key not in losses:
            losses[key] = evaluate(run.load_model(None, device), data, num_batches, batch_size, device)
        rows.append(hyperparam_row(panel, value, run.spec.data.order.seed, losses[key], shape))
    return rows


def hyperparams_summary(rows: Sequence[Row]) -> list[Row]:
    """Mean, min and max of val_loss and ppl over seeds, per (shape, panel, value), in first-seen order."""
    groups: dict[tuple[Any, Any, Any], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.get("shape"), r["panel"], r["value"]), []).append(r)
    out = []
    for (shape, panel, value), members in groups.items():
        row: Row = {"shape": shape, "panel": panel, "value": value, "n": len(members)}
        for col in ("val_loss", "ppl"):
            v = np.array([m[col] for m in members], dtype=float)
            row.update({f"{col}_mean": float(v.mean()), f"{col}_min": float(v.min()), f"{col}_max": float(v.max())})
        out.append(row)
    return out


_NEUTRAL = {"betas_p": 1.0, "beta2_p": 1.0, "batch_x": 1.0, "batch_x_half_life": 1.0,
            "weight_decay_off": 0, "reset_optimizer": 0}


def panel_runs(labelled: Sequence[tuple[Mapping[str, Any], Any]]) -> list[tuple[str, str, Any, Any]]:
    """(shape, panel, value, run) rows from (labels, run) pairs; each shape/seed baseline joins every panel
    of its shape at the panel's neutral value (p = 1, k = 1, off = 0)."""
    out: list[tuple[str, str, Any, Any]] = []
    panels: dict[str, list[str]] = {}
    for lab, _ in labelled:
        if lab["panel"] != "baseline":
            names = panels.setdefault(str(lab.get("shape", "")), [])
            if lab["panel"] not in names:
                names.append(lab["panel"])
    for lab, run in labelled:
        shape = str(lab.get("shape", ""))
        if lab["panel"] == "baseline":
            out += [(shape, panel, _NEUTRAL.get(panel, 0), run) for panel in panels.get(shape, [])]
        else:
            out.append((shape, lab["panel"], lab["value"], run))
    return out


@register_unit
class HyperParams(AnalysisUnit):
    """Final loss of each cooldown hyper-parameter panel run (labels shape, panel, value), baselines included."""

    name = "hyperparams"
    inputs = {"panels": RunSelector(stage=["hyperparam"])}
    tables = ("hyperparams", "hyperparams_summary")

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        labelled = [(panel, value, run, shape)
                    for shape, panel, value, run in panel_runs([(r.labels, r.run) for r in ctx.selected("panels")])]
        rows = hyperparams_table(labelled, ctx.data, **ctx.eval_kwargs)
        return {"hyperparams": rows, "hyperparams_summary": hyperparams_summary(rows)}
