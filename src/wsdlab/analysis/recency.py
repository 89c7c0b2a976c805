"""Recency bias of the cooldown (Dremov et al., TMLR 2025, eq. 2), and the shared window average.

For a cooldown run that read training batches b_1..b_M (in that order), the per-batch loss difference is
    d_j = L(theta_post; b_j) - L(theta_pre; b_j)                    (eq. 2)
with theta_pre the pre-cooldown checkpoint the run branched from and theta_post the run's final model
(negative = the cooldown lowered the loss on that batch). A recency bias shows as d_j falling towards
the end: the last batches seen are fitted best. Summaries per run:
    shift     = (1/M) sum_j d_j                        mean difference over the cooldown portion (level)
    deviation = std_j( window_average(d, w)_j )        variability of the smoothed curve across the portion
                                                       (population std; smoothing removes per-batch noise,
                                                       so it measures the systematic, position-dependent part)
    slope     = least-squares slope of d_j against x_j = j / (M - 1) in [0, 1]: the fitted change of d
                from the first to the last batch (negative = later batches improved more)
Correlations across shapes (per-shape means over seeds) use Spearman and Pearson from `perplexity`:
shift <-> bias and deviation <-> variance of one bias-variance space (default kl).

Table `recency_curves`: shape, seed, batch_position, step, loss_diff, loss_diff_smoothed
    batch_position j = 0..M-1 within the cooldown; step = the optimizer step that consumed the batch.
Table `recency`: shape, seed, shift, deviation, slope, n_batches
Table `recency_correlations`: x, y, space, spearman, pearson, n_shapes
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rich.progress import track

from wsdlab.analysis.perplexity import pearson, spearman
from wsdlab.analysis.registry import register_analysis
from wsdlab.models import batch_loss
from wsdlab.train import RunDir, load_checkpoint_model
from wsdlab.train.batching import micro_batches
from wsdlab.train.evaluate import to_device

if TYPE_CHECKING:
    from wsdlab.data import DataBundle

Row = dict[str, Any]


def window_average(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Centered moving average, same length as `values`: mean of values[j - (w-1)//2 : j + w//2 + 1].

    The window shrinks at the ends (no padding) and NaNs are skipped (all-NaN windows give NaN).
    window = 1 returns the values unchanged.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"window_average: values must be 1-D, got shape {x.shape}")
    ok = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    j = np.arange(len(x))
    lo = np.maximum(j - (window - 1) // 2, 0)
    hi = np.minimum(j + window // 2 + 1, len(x))
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / np.maximum(n, 1), np.nan)


def loss_differences(post_losses: Sequence[float], pre_losses: Sequence[float]) -> np.ndarray:
    """Eq. 2: d_j = L(theta_post; b_j) - L(theta_pre; b_j), per batch in the cooldown's order."""
    post, pre = np.asarray(post_losses, dtype=float), np.asarray(pre_losses, dtype=float)
    if post.shape != pre.shape:
        raise ValueError(f"post_losses {post.shape} and pre_losses {pre.shape} must have the same length")
    return post - pre


def recency_summary(diffs: Sequence[float] | np.ndarray, smoothed: Sequence[float] | np.ndarray) -> dict[str, float]:
    """shift = mean d, deviation = population std of the smoothed d, slope = LS slope of d over x in [0, 1]."""
    d = np.asarray(diffs, dtype=float)
    s = np.asarray(smoothed, dtype=float)
    if d.size == 0:
        raise ValueError("recency: no loss differences")
    x = np.linspace(0.0, 1.0, d.size) if d.size > 1 else np.zeros(1)
    xc = x - x.mean()
    slope = float((xc * (d - d.mean())).sum() / (xc * xc).sum()) if d.size > 1 else 0.0
    return {"shift": float(d.mean()), "deviation": float(np.nanstd(s)), "slope": slope}


def recency_curve_rows(shape: str, seed: int, steps: Sequence[int], diffs: Sequence[float], window: int) -> list[Row]:
    """`recency_curves` rows of one run: raw and window-averaged loss differences per batch position."""
    smoothed = window_average(diffs, window)
    return [
        {"shape": shape, "seed": seed, "batch_position": j, "step": int(step), "loss_diff": float(d),
         "loss_diff_smoothed": float(s)}
        for j, (step, d, s) in enumerate(zip(steps, diffs, smoothed))
    ]


def cooldown_batches(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """(steps (M,), train sequence indices (M, global_batch)) of every batch `run` trained on, in order.

    batches.npy holds only this run's rows (not its parent's), saved with each checkpoint, so row j
    was consumed by step (latest checkpoint step - M + 1 + j).
    """
    rows = run.batch_indices()
    steps = run.checkpoint_steps()
    if rows.shape[0] == 0 or not steps:
        raise ValueError(f"recency: run {run.path} has no recorded batches (batches.npy) or no checkpoint")
    final = max(steps)
    return np.arange(final - rows.shape[0] + 1, final + 1), rows


def pre_cooldown_checkpoint(run: RunDir) -> Path:
    """The checkpoint a cooldown branch started from (its spec's init_from)."""
    if run.spec.init_from is None:
        raise ValueError(f"recency: run {run.path} has no init_from; it is not a cooldown branch")
    path = Path(run.spec.init_from)
    if not path.is_dir():
        raise FileNotFoundError(f"recency: init_from checkpoint of run {run.path} not found: {path}")
    return path


@torch.no_grad()
def per_batch_losses(model: nn.Module, data: DataBundle, index_rows: np.ndarray, eval_batch_size: int | None,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """Mean loss of `model` on each training batch (one row of sequence indices each), in micro batches."""
    model.eval()
    out = np.empty(len(index_rows))
    for j, idx in enumerate(index_rows):
        total = 0.0
        for chunk in micro_batches(np.asarray(idx), eval_batch_size):
            total += float(batch_loss(model, to_device(data.train_batch(chunk), device))) * len(chunk)
        out[j] = total / len(idx)
    return out


@register_analysis("recency_curves")
def recency_curves_table(
    shape_runs: Mapping[str, Sequence[RunDir]],
    data: DataBundle,
    *,
    window: int = 16,
    stride: int = 1,
    eval_batch_size: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> list[Row]:
    """Eq. 2 curves: per cooldown run, post- minus pre-cooldown loss on the run's batches in their order.

    stride k evaluates every k-th batch only (positions 0, k, 2k, ...; batch_position keeps the true
    position and the window counts evaluated batches). eval_batch_size splits a global batch into
    chunks of that many sequences (None = whole batch at once). seed = the run's data.order.seed.
    """
    if stride < 1:
        raise ValueError(f"recency: stride must be >= 1, got {stride}")
    pre_models: dict[Path, nn.Module] = {}
    jobs = [(shape, run) for shape, runs in shape_runs.items() for run in runs]
    rows: list[Row] = []
    for shape, run in track(jobs, description="recency", disable=not progress, transient=True):
        steps, index_rows = cooldown_batches(run)
        keep = np.arange(0, len(steps), stride)
        ckpt = pre_cooldown_checkpoint(run)
        if ckpt not in pre_models:
            pre_models[ckpt] = load_checkpoint_model(ckpt, device)
        pre = per_batch_losses(pre_models[ckpt], data, index_rows[keep], eval_batch_size, device)
        post = per_batch_losses(run.load_model(None, device), data, index_rows[keep], eval_batch_size, device)
        curve = recency_curve_rows(shape, run.spec.data.order.seed, steps[keep], loss_differences(post, pre), window)
        for row, position in zip(curve, keep):
            row["batch_position"] = int(position)
        rows += curve
    return rows


@register_analysis("recency")
def recency_table(curve_rows: Sequence[Row]) -> list[Row]:
    """Per (shape, seed): shift, deviation and slope of the loss-difference curve (from `recency_curves`)."""
    groups: dict[tuple[Any, Any], list[Row]] = {}
    for row in curve_rows:
        groups.setdefault((row["shape"], row["seed"]), []).append(row)
    out = []
    for (shape, seed), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["batch_position"])
        summary = recency_summary([r["loss_diff"] for r in rows], [r["loss_diff_smoothed"] for r in rows])
        out.append({"shape": shape, "seed": seed, **summary, "n_batches": len(rows)})
    return out


@register_analysis("recency_correlations")
def recency_correlations(recency_rows: Sequence[Row], bias_variance_rows: Sequence[Row], space: str = "kl") -> list[Row]:
    """Spearman/Pearson across shapes of shift vs bias and deviation vs variance (of `space`)."""
    bv = {r["shape"]: r for r in bias_variance_rows if r["space"] == space}
    if not bv:
        raise ValueError(f"recency_correlations: no bias_variance rows with space '{space}'")
    per_shape: dict[Any, list[Row]] = {}
    for r in recency_rows:
        per_shape.setdefault(r["shape"], []).append(r)
    shapes = [s for s in per_shape if s in bv]
    out = []
    for x, y in (("shift", "bias"), ("deviation", "variance")):
        xs = [float(np.mean([r[x] for r in per_shape[s]])) for s in shapes]
        ys = [float(bv[s][y]) for s in shapes]
        out.append({"x": x, "y": y, "space": space, "spearman": spearman(xs, ys), "pearson": pearson(xs, ys),
                    "n_shapes": len(shapes)})
    return out
