"""Cooldown hyper-parameter panels: validation loss and perplexity of cooldowns grouped by a labelled setting.

The study runner labels each cooldown run with a panel (what was varied) and a value, e.g.
    ("betas_p", 2.0)         betas -> beta**p (both betas)      ("beta2_p", 2.0)   beta2 only
    ("batch_x", 4)           batch size x k                     ("batch_x_half_life", 4) with matched betas
    ("weight_decay_off", 1)  AdamW weight decay off             ("reset_optimizer", 1)  fresh moments
(panel names and values are free text/numbers chosen by the runner; the baseline cooldown may be added
to a panel with its neutral value, e.g. p = 1). ppl = exp(val_loss), val_loss from `wsdlab.train.evaluate`.

Table `hyperparams`: panel, value, seed, val_loss, ppl
Table `hyperparams_summary`: panel, value, n, val_loss_mean, val_loss_min, val_loss_max, ppl_mean, ppl_min, ppl_max
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from wsdlab.analysis.registry import register_analysis
from wsdlab.train import RunDir, evaluate

if TYPE_CHECKING:
    from wsdlab.data import DataBundle

Row = dict[str, Any]


class LabelledRun(NamedTuple):
    """A cooldown run with the panel it belongs to and the value of the varied setting."""

    panel: str
    value: Any
    run: RunDir


def hyperparam_row(panel: str, value: Any, seed: int, val_loss: float) -> Row:
    """One `hyperparams` row."""
    return {"panel": panel, "value": value, "seed": seed, "val_loss": float(val_loss), "ppl": math.exp(val_loss)}


@register_analysis("hyperparams")
def hyperparams_table(
    runs: Sequence[LabelledRun | tuple[str, Any, RunDir]],
    data: DataBundle,
    *,
    num_batches: int = 8,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[Row]:
    """Validation loss and perplexity of each labelled run's final model; seed = its data-order seed."""
    rows = []
    for panel, value, run in runs:
        loss = evaluate(run.load_model(None, device), data, num_batches, batch_size, device)
        rows.append(hyperparam_row(panel, value, run.spec.data.order.seed, loss))
    return rows


@register_analysis("hyperparams_summary")
def hyperparams_summary(rows: Sequence[Row]) -> list[Row]:
    """Mean, min and max of val_loss and ppl over seeds, per (panel, value), in first-seen order."""
    groups: dict[tuple[Any, Any], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["panel"], r["value"]), []).append(r)
    out = []
    for (panel, value), members in groups.items():
        row: Row = {"panel": panel, "value": value, "n": len(members)}
        for col in ("val_loss", "ppl"):
            v = np.array([m[col] for m in members], dtype=float)
            row.update({f"{col}_mean": float(v.mean()), f"{col}_min": float(v.min()), f"{col}_max": float(v.max())})
        out.append(row)
    return out
