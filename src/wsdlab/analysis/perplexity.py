"""Perplexity of the cooldown runs per shape (over seeds and of their weight average), and rank correlations.

Spearman and Pearson correlations are written here once (scipy is not a dependency) and used by the
other analyses (recency, perplexity vs bias).

Table `perplexity` (one row per shape):
    shape, ppl_mean, ppl_min, ppl_max, ppl_avg_model, val_loss_mean, val_loss_avg_model, n_runs
    ppl = exp(validation loss in nats) of each seed's final model; ppl_mean is the mean of the seeds'
    perplexities (not exp of the mean loss); ppl_avg_model is that of the model whose weights are the
    mean of the seeds' final weights (`averaging.average_state_dicts`).
Table `perplexity_vs_bias` (one row per bias-variance space):
    space, x, y, spearman, pearson, n_shapes
    x = "bias" of that space (from the `bias_variance` table), y = "ppl_avg_model", across shapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from wsdlab.analysis.averaging import averaged_model
from wsdlab.analysis.units import COOLDOWNS, AnalysisUnit, UnitContext, register_unit
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.train import RunDir, evaluate

if TYPE_CHECKING:
    from wsdlab.data import DataBundle



def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`; tied values all get the mean of the ranks they span ('average' method)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"rankdata: values must be 1-D, got shape {x.shape}")
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=float)
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0  # mean of ranks start+1..end+1
        start = end + 1
    return ranks


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation r = cov(x, y) / (std x std y); NaN when fewer than 2 points or a constant input."""
    a, b = _paired(x, y)
    if len(a) < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    return float((da * db).sum()) / denom if denom > 0 else math.nan


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation: Pearson correlation of the tie-averaged ranks; NaN pairs are dropped."""
    a, b = _paired(x, y)
    return pearson(rankdata(a), rankdata(b))


def _paired(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of equal length with pairs holding a NaN removed."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correlation needs two 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def perplexity_row(shape: str, losses: Sequence[float], avg_model_loss: float) -> Row:
    """One `perplexity` row from the seeds' validation losses and the weight-averaged model's loss."""
    if not losses:
        raise ConfigError(f"perplexity: shape '{shape}' has no runs")
    ppl = np.exp(np.asarray(losses, dtype=float))
    return {
        "shape": shape,
        "ppl_mean": float(ppl.mean()),
        "ppl_min": float(ppl.min()),
        "ppl_max": float(ppl.max()),
        "ppl_avg_model": math.exp(avg_model_loss),
        "val_loss_mean": float(np.mean(losses)),
        "val_loss_avg_model": float(avg_model_loss),
        "n_runs": len(losses),
    }


def perplexity_table(
    shape_runs: Mapping[str, Sequence[RunDir]],
    data: DataBundle,
    *,
    num_batches: int = 8,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[Row]:
    """Perplexity per shape: each seed's final model and the weight average of the seeds' final models."""
    rows = []
    for shape, runs in shape_runs.items():
        if not runs:
            raise ConfigError(f"perplexity: shape '{shape}' has no runs")
        losses = [evaluate(run.load_model(None, device), data, num_batches, batch_size, device) for run in runs]
        avg = averaged_model(runs, device)
        rows.append(perplexity_row(shape, losses, evaluate(avg, data, num_batches, batch_size, device)))
    return rows


def perplexity_vs_bias(perplexity_rows: Sequence[Row], bias_variance_rows: Sequence[Row]) -> list[Row]:
    """Correlation across shapes of the averaged model's perplexity with the bias of each space."""
    ppl = {r["shape"]: r["ppl_avg_model"] for r in perplexity_rows}
    spaces = list(dict.fromkeys(r["space"] for r in bias_variance_rows))
    rows = []
    for space in spaces:
        bias = {r["shape"]: r["bias"] for r in bias_variance_rows if r["space"] == space}
        shapes = [s for s in bias if s in ppl]
        x = [bias[s] for s in shapes]
        y = [ppl[s] for s in shapes]
        rows.append({"space": space, "x": "bias", "y": "ppl_avg_model", "spearman": spearman(x, y),
                     "pearson": pearson(x, y), "n_shapes": len(shapes)})
    return rows


@register_unit
class Perplexity(AnalysisUnit):
    """Final perplexity per shape (each seed and the weight average); vs bias when bias_variance is on."""

    name = "perplexity"
    inputs = {"cooldowns": COOLDOWNS}
    tables = ("perplexity",)
    optional_tables = ("perplexity_vs_bias",)
    needs = ("bias_variance",)

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        rows = perplexity_table(ctx.groups("cooldowns"), ctx.data, **ctx.eval_kwargs)
        out = {"perplexity": rows}
        if ctx.has("bias_variance"):
            out["perplexity_vs_bias"] = perplexity_vs_bias(rows, ctx.table("bias_variance"))
        return out
