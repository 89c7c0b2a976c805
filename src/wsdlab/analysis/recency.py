"""Recency bias of the cooldown: shift and deviation (Dremov et al., TMLR 2025, Sec. 4.2, eq. 2), and the
shared window average.

Every training batch b_i of the whole run that produced a cooldown model, in training order (the stable
phase from the pre-cooldown run's batches.npy, then the cooldown's own), is scored after training by the
pre-cooldown model (perplexity p(b_i)) and the post-cooldown model (perplexity c(b_i)). Eq. 2 as printed:

    difference_i = c(b_i) - p(b_i),
    shift        = 1/|cooldown| sum_{i in cooldown} difference_i,
    deviation    = (1/N) sum_{i=1}^N [difference_i - shift]^2.

Perplexity of a batch = exp(mean cross-entropy over its target tokens) (nats -> perplexity, as
`wsdlab.train.evaluate`). Readings of the text:
- "cooldown" = the batches the cooldown run trained on; N = every batch of the run (stable + cooldown):
  the shift is "calculated only during cooldown" (Sec. 4.2, Fig. 22) and the deviation runs i = 1..N.
- No smoothing enters shift or deviation (the raw differences). The 100-batch window average is only the
  curves of Fig. 9 ("100-step window-averaged"): the `*_smoothed` columns of `recency_curves`.
- stride k (a cost option, not in the paper) scores every k-th batch: positions n_stable + j k for every
  integer j that lands in the run, so the first cooldown batch is always scored; N and |cooldown| then
  count scored batches. stride 1 is eq. 2 exactly. The window stays in training batches (window / k
  scored points, at least 1, at most the series length).
- The stable phase is followed back through `init_from` (`RunDir.parent_checkpoint`, which also finds it in a
  moved study folder) to the first run (the base), up to each branch step.

Default stride (`RecencyOptions.stride` None): about SCORED_BATCHES = 60 scored batches per run, stride =
ceil(batches / 60); the sampling error depends on how many batches are scored, not on the stride. Measured on
the default study made by the code of 2026-12-04 (200 stable + 40 cooldown batches of 16 x 128 tokens; two
cooldowns, one torch thread: `recency_table(recency_curves_table({shape: [RunDir(run)]}, load_data(spec.data),
stride=k, eval_batch_size=16))`, CPU-seconds from getrusage on the shared 2-core machine), relative to stride 1:

    stride  scored (cooldown)  cd-sqrt-s0 shift / deviation  cd-square-s1 shift / deviation  CPU-s (2 runs)
       1       240 (40)         -85.90 / 6594 (exact)          -108.40 / 12967 (exact)          96.4
       2       120 (20)          +3.4% / +7.3%                  +4.5% / +7.6%                   40.7
       4        60 (10)          +1.3% / +4.7%                  +2.0% / +5.3%                   21.1
       8        30  (5)          +5.5% / +13.9%                 -5.8% / -7.0%                   10.3
      16        15  (3)         +10.1% / +20.3%                 -8.7% / -14.1%                   5.4

so the default study scores every 4th batch (60 per run): shift within 2% and deviation within about 5% of
stride 1 at a quarter of its cost (the errors are sampling noise: stride 2 was no closer on these runs).

Table `recency_curves`: shape, seed, batch_position, step, phase, stride, ppl_pre, ppl_post, ppl_diff,
    ppl_pre_smoothed, ppl_post_smoothed, ppl_diff_smoothed
    batch_position i = 0..N-1 over the whole run; step = the optimizer step that consumed the batch;
    phase = "stable" | "cooldown".
Table `recency`: shape, seed, shift, deviation, n_batches, n_cooldown_batches, stride
Table `recency_correlations`: x, y, space, spearman, pearson, n_shapes
    Spearman and Pearson across shapes (per-shape means over seeds, from `perplexity`): shift <-> bias and
    deviation <-> variance of one bias-variance space (default kl), as Fig. 23.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field
from rich.progress import track
from torch import nn

from wsdlab.analysis.perplexity import pearson, spearman
from wsdlab.analysis.units import (
    BASE,
    COOLDOWNS,
    AnalysisUnit,
    UnitContext,
    register_unit,
)
from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.models import batch_loss
from wsdlab.train import RunDir, load_checkpoint_model
from wsdlab.train.runstore import run_of
from wsdlab.train.batching import micro_batches
from wsdlab.train.evaluate import to_device

if TYPE_CHECKING:
    from wsdlab.data import DataBundle

WINDOW = 100  # batches: Fig. 9's "100-step window-averaged" curves
SCORED_BATCHES = 60  # the default stride scores about this many batches per run (module docstring)


def default_stride(total_batches: int) -> int:
    """The stride that scores about SCORED_BATCHES of a run's `total_batches` (stable + cooldown): at least 1."""
    if total_batches < 1:
        raise ConfigError(f"recency: a run of {total_batches} batches has nothing to score")
    return max(1, math.ceil(total_batches / SCORED_BATCHES))


def window_average(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Centered moving average, same length as `values`: mean of values[j - (w-1)//2 : j + w//2 + 1].

    The window shrinks at the ends (no padding) and NaNs are skipped (all-NaN windows give NaN).
    window = 1 returns the values unchanged.
    """
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
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


def perplexity_differences(post_ppl: Sequence[float], pre_ppl: Sequence[float]) -> np.ndarray:
    """Eq. 2: difference_i = c(b_i) - p(b_i), post- minus pre-cooldown perplexity per batch."""
    post, pre = np.asarray(post_ppl, dtype=float), np.asarray(pre_ppl, dtype=float)
    if post.shape != pre.shape:
        raise ValueError(f"post perplexities {post.shape} and pre perplexities {pre.shape} must have the same length")
    return post - pre


def shift_deviation(differences: Sequence[float] | np.ndarray,
                    in_cooldown: Sequence[bool] | np.ndarray) -> tuple[float, float]:
    """Eq. 2: (shift = mean difference over the cooldown batches, deviation = (1/N) sum_i (difference_i - shift)^2)."""
    d = np.asarray(differences, dtype=float)
    cool = np.asarray(in_cooldown, dtype=bool)
    if d.shape != cool.shape or d.ndim != 1:
        raise ValueError(f"recency: {d.shape} differences but {cool.shape} cooldown flags")
    if not cool.any():
        raise ValueError("recency: no cooldown batch was scored (the shift needs at least one)")
    shift = float(d[cool].mean())
    return shift, float(((d - shift) ** 2).mean())


def scored_positions(n_stable: int, n_total: int, stride: int) -> np.ndarray:
    """Positions i in [0, n_total) with (i - n_stable) divisible by stride: every stride-th batch, the first
    cooldown batch (position n_stable) always among them."""
    if stride < 1:
        raise ConfigError(f"recency: stride must be >= 1, got {stride}")
    return np.arange(n_stable % stride, n_total, stride)


def window_points(window: int, stride: int, length: int) -> int:
    """A window of `window` training batches in scored points (every stride-th batch), capped at `length`."""
    if window < 1:
        raise ConfigError(f"recency: window must be >= 1, got {window}")
    return max(1, min(round(window / stride), length))


def recency_curve_rows(shape: str, seed: int, positions: Sequence[int], steps: Sequence[int],
                       in_cooldown: Sequence[bool], pre_ppl: Sequence[float], post_ppl: Sequence[float],
                       *, window: int = WINDOW, stride: int = 1) -> list[Row]:
    """`recency_curves` rows of one run: per scored batch, both perplexities and eq. 2's difference, raw and
    window-averaged over `window` training batches (Fig. 9)."""
    diff = perplexity_differences(post_ppl, pre_ppl)
    w = window_points(window, stride, len(diff))
    smooth = {name: window_average(values, w) for name, values in
              (("ppl_pre", pre_ppl), ("ppl_post", post_ppl), ("ppl_diff", diff))}
    return [
        {"shape": shape, "seed": seed, "batch_position": int(pos), "step": int(step),
         "phase": "cooldown" if cool else "stable", "stride": stride, "ppl_pre": float(pre), "ppl_post": float(post),
         "ppl_diff": float(d), **{f"{name}_smoothed": float(values[j]) for name, values in smooth.items()}}
        for j, (pos, step, cool, pre, post, d) in enumerate(zip(positions, steps, in_cooldown, pre_ppl, post_ppl, diff))
    ]


def own_batches(run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """(steps (M,), train sequence indices (M, global_batch)) of every batch `run` itself trained on, in order.

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
    """The checkpoint a cooldown branch started from (the run store's `parent_checkpoint`: its spec's
    init_from, looked up beside the run when the study folder was moved)."""
    path = run.parent_checkpoint()
    if path is None:
        raise ConfigError(f"recency: run {run.path} has no init_from; it is not a cooldown branch")
    return path


def history(run: RunDir, upto: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(steps, index rows) of every batch that trained `run`'s weights, through its lineage (the checkpoint
    each run started from) back to the first run, in training order; only steps <= `upto` when given."""
    steps, rows = own_batches(run)
    ckpt = run.parent_checkpoint()
    if ckpt is not None:
        before_steps, before_rows = history(run_of(ckpt), int(ckpt.name))
        steps, rows = np.concatenate([before_steps, steps]), np.concatenate([before_rows, rows])
    keep = steps <= upto if upto is not None else np.ones(len(steps), dtype=bool)
    return steps[keep], rows[keep]


@dataclass(frozen=True)
class RunBatches:
    """The batches of a cooldown run's whole training, in order: steps (N,), rows (N, B), in_cooldown (N,)."""

    steps: np.ndarray
    rows: np.ndarray
    in_cooldown: np.ndarray

    @property
    def n_stable(self) -> int:
        return int((~self.in_cooldown).sum())


def run_batches(run: RunDir) -> RunBatches:
    """The stable phase (the pre-cooldown history up to the branch step) followed by the cooldown's own batches."""
    ckpt = pre_cooldown_checkpoint(run)
    stable_steps, stable_rows = history(run_of(ckpt), int(ckpt.name))
    cool_steps, cool_rows = own_batches(run)
    if stable_rows.shape[0] and stable_rows.shape[1:] != cool_rows.shape[1:]:
        raise ValueError(f"recency: run {run.path} reads batches of {cool_rows.shape[1]} sequences, its stable phase "
                         f"{stable_rows.shape[1]}; the batches cannot be scored in one series")
    in_cooldown = np.concatenate([np.zeros(len(stable_steps), dtype=bool), np.ones(len(cool_steps), dtype=bool)])
    rows = np.concatenate([stable_rows, cool_rows]) if stable_rows.shape[0] else cool_rows
    return RunBatches(np.concatenate([stable_steps, cool_steps]), rows, in_cooldown)


@torch.no_grad()
def batch_perplexity(model: nn.Module, data: DataBundle, index_row: np.ndarray, eval_batch_size: int | None,
                     device: str | torch.device = "cpu") -> float:
    """exp(mean cross-entropy over the targets of one training batch), in micro batches of eval_batch_size."""
    model.eval()
    total = 0.0
    for chunk in micro_batches(np.asarray(index_row), eval_batch_size):
        total += float(batch_loss(model, to_device(data.train_batch(chunk), device))) * len(chunk)
    return math.exp(total / len(index_row))


def recency_curves_table(
    shape_runs: Mapping[str, Sequence[RunDir]],
    data: DataBundle,
    *,
    window: int = WINDOW,
    stride: int = 1,
    eval_batch_size: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> list[Row]:
    """Eq. 2 per batch of each cooldown run's whole training: pre- and post-cooldown perplexities, difference.

    stride k scores every k-th batch (module docstring); window is in training batches (Fig. 9 curves only).
    The pre-cooldown model's perplexity of a batch is computed once per checkpoint (the runs of one
    branch point share the stable phase). eval_batch_size splits a global batch into chunks of that many
    sequences (None = whole batch at once). seed = the run's data.order.seed.
    """
    if stride < 1:
        raise ConfigError(f"recency: stride must be >= 1, got {stride}")
    pre_models: dict[Path, nn.Module] = {}
    pre_cache: dict[tuple[Path, bytes], float] = {}
    jobs = [(shape, run) for shape, runs in shape_runs.items() for run in runs]
    rows: list[Row] = []
    for shape, run in track(jobs, description="recency", disable=not progress, transient=True):
        batches = run_batches(run)
        keep = scored_positions(batches.n_stable, len(batches.steps), stride)
        ckpt = pre_cooldown_checkpoint(run)
        if ckpt not in pre_models:
            pre_models[ckpt] = load_checkpoint_model(ckpt, device)
        pre = []
        for idx in batches.rows[keep]:
            key = (ckpt, np.ascontiguousarray(idx).tobytes())
            if key not in pre_cache:
                pre_cache[key] = batch_perplexity(pre_models[ckpt], data, idx, eval_batch_size, device)
            pre.append(pre_cache[key])
        post_model = run.load_model(None, device)
        post = [batch_perplexity(post_model, data, idx, eval_batch_size, device) for idx in batches.rows[keep]]
        rows += recency_curve_rows(shape, run.spec.data.order.seed, keep, batches.steps[keep],
                                   batches.in_cooldown[keep], pre, post, window=window, stride=stride)
    return rows


def recency_table(curve_rows: Sequence[Row]) -> list[Row]:
    """Per (shape, seed): eq. 2's shift and deviation from the raw differences of `recency_curves`."""
    groups: dict[tuple[Any, Any], list[Row]] = {}
    for row in curve_rows:
        groups.setdefault((row["shape"], row["seed"]), []).append(row)
    out = []
    for (shape, seed), rows in groups.items():
        rows = sorted(rows, key=lambda r: int(r["batch_position"]))
        in_cooldown = [r["phase"] == "cooldown" for r in rows]
        shift, deviation = shift_deviation([float(r["ppl_diff"]) for r in rows], in_cooldown)
        out.append({"shape": shape, "seed": seed, "shift": shift, "deviation": deviation, "n_batches": len(rows),
                    "n_cooldown_batches": int(sum(in_cooldown)), "stride": int(rows[0]["stride"])})
    return out


def recency_correlations(recency_rows: Sequence[Row], bias_variance_rows: Sequence[Row], space: str = "kl") -> list[Row]:
    """Spearman/Pearson across shapes of shift vs bias and deviation vs variance (of `space`)."""
    bv = {r["shape"]: r for r in bias_variance_rows if r["space"] == space}
    if not bv:
        raise ConfigError(f"recency_correlations: no bias_variance rows with space '{space}'")
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


class RecencyOptions(StrictModel):
    space: str = Field("kl", description="Bias-variance space the shift/deviation correlations use.")
    stride: int | None = Field(None, gt=0, description="Score every k-th batch; None = about 60 batches per run.")
    window: int = Field(WINDOW, gt=0, description="Window of the smoothed curves, in training batches (Fig. 9).")


@register_unit
class Recency(AnalysisUnit):
    """Eq. 2 on every (stride-th) batch of each cooldown's whole run: curves, shift/deviation, correlations."""

    name = "recency"
    Options = RecencyOptions
    inputs = {"base": BASE, "cooldowns": COOLDOWNS}
    required = ("cooldowns",)
    tables = ("recency_curves", "recency")
    optional_tables = ("recency_correlations",)
    needs = ("bias_variance",)

    def compute(self, ctx: UnitContext, options: RecencyOptions) -> dict[str, list[Row]]:
        groups = ctx.groups("cooldowns")
        # eq. 2 scores every batch of the whole run: by default about 60 of them per run (stride 1 = every batch)
        total = next(iter(groups.values()))[0].spec.train.steps  # base steps + cooldown steps
        stride = options.stride if options.stride is not None else default_stride(total)
        curves = recency_curves_table(groups, ctx.data, window=options.window, stride=stride,
                                      eval_batch_size=ctx.batch_size, device=ctx.device)
        summary = recency_table(curves)
        out = {"recency_curves": curves, "recency": summary}
        if ctx.has("bias_variance"):
            out["recency_correlations"] = recency_correlations(summary, ctx.table("bias_variance"), space=options.space)
        return out
