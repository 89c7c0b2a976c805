"""Gradient-momentum alignment and gradient norm along the cooldown, with 95% confidence bands over seeds
(Dremov et al., TMLR 2025, App. G, Fig. 26).

Metrics (metrics.jsonl train rows, logged by the training loop):
    grad_momentum_cos         (1/J) sum_j cos(g_t^j, m_{t-1}^j): the cosine between the gradient and AdamW's
                              exp_avg "for each parameter individually", averaged over the J parameter tensors
                              (Fig. 26a, "average cosine similarity") -- the paper's metric
    grad_momentum_cos_global  cos(g_t, m_{t-1}) of all parameters as one vector (kept for comparison)
    grad_norm                 ||g_t||_2 of "a single vector across all gradients" (Fig. 26b)

Each run's series is first smoothed
with the centered `recency.window_average` over its logged steps; then at every step the seeds' smoothed
values give
    mean = (1/n) sum_s v_s,   sd = sqrt( sum_s (v_s - mean)^2 / (n - 1) )        (sample std)
    ci   = mean -/+ q * sd / sqrt(n)
with q the two-sided Student-t quantile t_{1 - (1-level)/2, n-1} (ci="t", the default: with a handful of
seeds the normal 1.96 is too narrow) or the normal quantile (ci="normal", 1.959964 at 95%).
With n = 1 the band collapses to the mean (no spread can be estimated); steps missing in a seed's
metrics (or null values) reduce n at that step.

Table `alignment`: shape, step, metric, mean, ci_low, ci_high, n
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import Field

from wsdlab.analysis.recency import window_average
from wsdlab.analysis.units import (
    COOLDOWNS,
    AnalysisUnit,
    UnitContext,
    branch_step,
    register_unit,
)
from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.train import RunDir

CIMethod = Literal["t", "normal"]
ALIGNMENT_METRICS = ("grad_momentum_cos", "grad_momentum_cos_global", "grad_norm")


def student_t_pdf(t: np.ndarray, df: float) -> np.ndarray:
    """Density of Student's t with `df` degrees of freedom."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_c - (df + 1) / 2 * np.log1p(np.asarray(t, dtype=float) ** 2 / df))


def student_t_cdf(t: float, df: float, intervals: int = 4096) -> float:
    """P(T <= t) = 1/2 + integral_0^t pdf (composite Simpson rule; the pdf is smooth and even)."""
    if t == 0.0:
        return 0.5
    x = np.linspace(0.0, abs(t), intervals + 1)
    w = np.ones(intervals + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    area = float((w * student_t_pdf(x, df)).sum()) * abs(t) / (3 * intervals)
    return 0.5 + math.copysign(area, t)


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t: the t with P(T <= t) = p (bisection on `student_t_cdf`); needs 0.5 <= p < 1."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile: p must be in [0.5, 1), got {p}")
    if df <= 0:
        raise ValueError(f"t_quantile: df must be positive, got {df}")
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def confidence_interval(values: Sequence[float] | np.ndarray, level: float = 0.95,
                        method: CIMethod = "t") -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite `values`: mean -/+ q * sample_std / sqrt(n) (module docstring)."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n == 1:
        return mean, mean, mean, 1
    p = 1.0 - (1.0 - level) / 2.0
    if method == "t":
        q = t_quantile(p, n - 1)
    elif method == "normal":
        q = NormalDist().inv_cdf(p)
    else:
        raise ConfigError(f"ci method must be 't' or 'normal', got '{method}'")
    half = q * float(v.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def metric_series(rows: Sequence[Row], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `metric` from metrics.jsonl train rows (eval rows and null values skipped)."""
    pairs = sorted(
        (int(r["step"]), float(r[metric]))
        for r in rows
        if r.get("split", "train") == "train" and "step" in r and r.get(metric) is not None
    )
    return np.array([p[0] for p in pairs], dtype=int), np.array([p[1] for p in pairs], dtype=float)


def alignment_rows(shape: str, metric: str, series: Sequence[tuple[np.ndarray, np.ndarray]], window: int,
                   level: float = 0.95, method: CIMethod = "t") -> list[Row]:
    """`alignment` rows of one shape and metric from each seed's (steps, values), smoothed then pooled per step."""
    per_step: dict[int, list[float]] = {}
    for steps, values in series:
        for step, v in zip(steps, window_average(values, window)):
            per_step.setdefault(int(step), []).append(float(v))
    rows = []
    for step in sorted(per_step):
        mean, low, high, n = confidence_interval(per_step[step], level, method)
        if n:
            rows.append({"shape": shape, "step": step, "metric": metric, "mean": mean, "ci_low": low,
                         "ci_high": high, "n": n})
    return rows


def alignment_table(
    shape_runs: Mapping[str, Sequence[RunDir]],
    *,
    metrics: Sequence[str] = ALIGNMENT_METRICS,
    window: int = 10,
    level: float = 0.95,
    ci: CIMethod = "t",
) -> list[Row]:
    """Window-averaged gradient-momentum cosine and gradient norm per shape, with confidence bands over seeds."""
    rows: list[Row] = []
    for shape, runs in shape_runs.items():
        logs = [run.metrics() for run in runs]
        for metric in metrics:
            series = [metric_series(log, metric) for log in logs]
            rows += alignment_rows(shape, metric, series, window, level, ci)
    return rows


class AlignmentOptions(StrictModel):
    metrics: list[str] = Field(default_factory=lambda: list(ALIGNMENT_METRICS), description="Train-row metrics.")
    window: int | None = Field(None, gt=0, description="Window of the averages; None = cooldown steps / 5 (at most 10).")
    level: float = Field(0.95, gt=0.0, lt=1.0, description="Confidence level of the bands over seeds.")
    ci: CIMethod = "t"


@register_unit
class Alignment(AnalysisUnit):
    """Gradient-momentum cosine and gradient norm along the cooldown, with confidence bands over seeds."""

    name = "alignment"
    Options = AlignmentOptions
    inputs = {"cooldowns": COOLDOWNS}
    tables = ("alignment",)

    def compute(self, ctx: UnitContext, options: AlignmentOptions) -> dict[str, list[Row]]:
        groups = ctx.groups("cooldowns")
        first = next(iter(groups.values()))[0]
        window = options.window or max(1, min(10, (first.spec.train.steps - branch_step(first)) // 5))
        return {"alignment": alignment_table(groups, metrics=options.metrics, window=window, level=options.level,
                                             ci=options.ci)}
