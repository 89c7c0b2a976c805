"""Intervals and verdicts for the claims: small, exact-where-possible statistics on run-level values.

Every claim is decided from a 95% interval of one statistic (a mean difference over seeds, a per-run
quantity, a correlation across shapes), never from point estimates:

- a mean over n >= 2 independent units (seeds, runs): Student's t interval, exact for normal data
  and the honest choice for the 2-5 seeds a CPU study has (a bootstrap of 3 values has 10 distinct
  resamples and covers far less than 95%);
- a difference of two groups: paired over the units both have (same data-order seed = same data),
  else Welch's interval with the Welch-Satterthwaite degrees of freedom (rounded down: conservative);
- one value per group (n = 1): an interval only from a measured seed spread `sd` of a sibling stage,
  diff +- z * sd * sqrt(2) (each single run carries one seed's noise), else none;
- a correlation of n >= 4 points: Fisher's z, tanh(atanh(r) +- z / sqrt(n - 3)); a Spearman
  correlation uses the standard error sqrt(1.06 / (n - 3)) (Fieller, Hartley & Pearson 1957).

`verdict` turns an interval into holds / contradicted / inconclusive against the paper's side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Z95 = 1.959963984540054
# Student's t, two-sided 95% (upper 0.975 quantile), degrees of freedom 1..30 (standard tables)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)

Side = Literal[">", "<", "~"]
Verdict = Literal["holds", "contradicted", "inconclusive"]


def t975(df: float) -> float:
    """Upper 0.975 quantile of Student's t with `df` degrees of freedom (df rounded down; >= 1)."""
    d = int(math.floor(df))
    if d < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if d <= len(_T975):
        return _T975[d - 1]
    z = Z95  # Cornish-Fisher expansion in 1/df (error < 1e-4 beyond df = 30)
    return z + (z ** 3 + z) / (4 * d) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * d * d)


@dataclass(frozen=True)
class Interval:
    """A point estimate, its 95% interval and the number of independent units behind it."""

    value: float
    low: float
    high: float
    n: int


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def sd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1); nan for fewer than 2 values."""
    if len(values) < 2:
        return float("nan")
    m = mean(values)
    return math.sqrt(math.fsum((x - m) ** 2 for x in values) / (len(values) - 1))


def mean_interval(values: Sequence[float]) -> Interval | None:
    """Mean and Student-t 95% interval over n >= 2 independent values; None for fewer."""
    vals = [float(v) for v in values]
    if len(vals) < 2:
        return None
    m = mean(vals)
    half = t975(len(vals) - 1) * sd(vals) / math.sqrt(len(vals))
    return Interval(m, m - half, m + half, len(vals))


def difference_interval(a: dict[object, float], b: dict[object, float], spread: float | None = None
                        ) -> tuple[Interval | None, str]:
    """mean(a) - mean(b) with a 95% interval, and how it was formed.

    Paired over the units (seeds) both have when there are >= 2 of them; else Welch's interval when
    both have >= 2; else, with one value on a side, the sibling-spread interval when `spread` (a
    seed standard deviation measured elsewhere) is given; else None.
    """
    shared = [k for k in a if k in b]
    if len(shared) >= 2:
        iv = mean_interval([a[k] - b[k] for k in shared])
        return iv, f"paired over {len(shared)} seeds"
    va, vb = list(a.values()), list(b.values())
    if not va or not vb:
        return None, "no values"
    diff = mean(va) - mean(vb)
    if len(va) >= 2 and len(vb) >= 2:
        sa, sb = sd(va) ** 2 / len(va), sd(vb) ** 2 / len(vb)
        se = math.sqrt(sa + sb)
        if se == 0:
            return Interval(diff, diff, diff, min(len(va), len(vb))), "Welch (no spread)"
        df = (sa + sb) ** 2 / (sa ** 2 / (len(va) - 1) + sb ** 2 / (len(vb) - 1))
        half = t975(max(1.0, df)) * se
        return Interval(diff, diff - half, diff + half, min(len(va), len(vb))), f"Welch, {len(va)} vs {len(vb)} runs"
    if spread is not None and math.isfinite(spread) and spread > 0:
        se = spread * math.sqrt(1 / len(va) + 1 / len(vb))
        return (Interval(diff, diff - Z95 * se, diff + Z95 * se, 1),
                f"one run a side; interval from the sibling seed spread sd = {spread:.3g}")
    return Interval(diff, float("nan"), float("nan"), 1), "one run a side"


def fisher_interval(r: float, n: int, spearman: bool = False) -> Interval | None:
    """Fisher-z 95% interval of a correlation r of n >= 4 points (|r| clipped to 0.9999); None if n < 4."""
    if n < 4 or not math.isfinite(r):
        return None
    rc = max(-0.9999, min(0.9999, r))
    se = math.sqrt((1.06 if spearman else 1.0) / (n - 3))
    z = math.atanh(rc)
    return Interval(r, math.tanh(z - Z95 * se), math.tanh(z + Z95 * se), n)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r (nan when either side is constant)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("pearson needs two sequences of equal length >= 2")
    mx, my = mean(x), mean(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = math.fsum((a - mx) ** 2 for a in x)
    syy = math.fsum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's r of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))


def verdict(iv: Interval | None, side: Side, threshold: float = 0.0, margin: float = 0.0) -> tuple[Verdict, str]:
    """The verdict of a claim that the statistic is `side` `threshold` (or within +-margin of it, '~').

    holds: the whole interval is on the paper's side; contradicted: the whole interval is on the other
    side; inconclusive otherwise (or when there is no interval), with the reason.
    """
    if iv is None or not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return "inconclusive", "no interval (fewer than 2 independent units)"
    lo, hi = iv.low, iv.high
    if side == ">":
        if lo > threshold:
            return "holds", ""
        if hi < threshold:
            return "contradicted", ""
    elif side == "<":
        if hi < threshold:
            return "holds", ""
        if lo > threshold:
            return "contradicted", ""
    else:
        if threshold - margin < lo and hi < threshold + margin:
            return "holds", ""
        if lo > threshold + margin or hi < threshold - margin:
            return "contradicted", ""
        return "inconclusive", f"95% interval [{lo:.3g}, {hi:.3g}] is not within {threshold:g} +- {margin:g}"
    return "inconclusive", f"95% interval [{lo:.3g}, {hi:.3g}] includes {threshold:g}"
