"""Confidence bands over seeds (Student t / normal), metric series, and the alignment table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsdlab.analysis.alignment import (
    alignment_rows,
    alignment_table,
    confidence_interval,
    metric_series,
    student_t_cdf,
    t_quantile,
)


def test_t_quantile_closed_forms() -> None:
    # df = 1 (Cauchy): tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p))
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-6)  # 12.706
    assert t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-6)  # 4.303
    assert t_quantile(0.975, 1000) == pytest.approx(1.962, abs=1e-3)  # approaches the normal 1.960
    assert student_t_cdf(0.0, 3) == 0.5
    assert student_t_cdf(-2.0, 5) == pytest.approx(1 - student_t_cdf(2.0, 5))
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(0.3, 2)


def test_confidence_interval_formula() -> None:
    v = [1.0, 2.0, 4.0]
    mean, sd = 7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    m, lo, hi, n = confidence_interval(v, method="t")
    half = (0.95 / math.sqrt(2 * 0.975 * 0.025)) * sd / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert (m, n) == (pytest.approx(mean), 3)
    assert lo == pytest.approx(mean - half, rel=1e-6) and hi == pytest.approx(mean + half, rel=1e-6)
    m, lo, hi, _ = confidence_interval(v, method="normal")
    assert hi - m == pytest.approx(1.959964 * sd / math.sqrt(3), rel=1e-6)
    assert confidence_interval([5.0, math.nan]) == (5.0, 5.0, 5.0, 1)  # one value: band collapses
    assert confidence_interval([])[3] == 0
    with pytest.raises(ValueError, match="ci method"):
        confidence_interval(v, method="bogus")  # type: ignore[arg-type]


def test_metric_series_skips_eval_rows_and_nulls() -> None:
    rows = [{"step": 3, "grad_norm": 0.5}, {"step": 1, "grad_norm": 1.0, "grad_momentum_cos": None},
            {"step": 2, "split": "val", "val_loss": 3.0}, {"step": 2, "grad_norm": 0.7, "grad_momentum_cos": 0.2}]
    steps, values = metric_series(rows, "grad_norm")
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [1.0, 0.7, 0.5]
    steps, values = metric_series(rows, "grad_momentum_cos")
    assert steps.tolist() == [2] and values.tolist() == [0.2]


def test_alignment_rows_smooth_then_pool() -> None:
    steps = np.array([1, 2, 3])
    series = [(steps, np.array([1.0, 2.0, 3.0])), (steps, np.array([3.0, 4.0, 5.0])), (steps[:2], np.array([0.0, 0.0]))]
    rows = alignment_rows("sqrt", "grad_norm", series, window=3)
    assert [r["step"] for r in rows] == [1, 2, 3]
    # smoothed seeds at step 1: 1.5, 3.5, 0.0 -> mean 5/3, n 3; at step 3 the third seed is missing
    assert rows[0]["mean"] == pytest.approx(5 / 3) and rows[0]["n"] == 3
    assert rows[2]["n"] == 2 and rows[2]["mean"] == pytest.approx((2.5 + 4.5) / 2)
    assert all(r["ci_low"] <= r["mean"] <= r["ci_high"] for r in rows)
    assert set(rows[0]) == {"shape", "step", "metric", "mean", "ci_low", "ci_high", "n"}


class FakeRun:
    def __init__(self, offset: float) -> None:
        self.offset = offset

    def metrics(self) -> list[dict]:
        return [{"step": s, "grad_norm": 1.0 + self.offset, "grad_momentum_cos": 0.1 * s} for s in (11, 12, 13)]


def test_alignment_table_reads_run_metrics() -> None:
    rows = alignment_table({"linear": [FakeRun(0.0), FakeRun(0.2)]}, window=1)
    assert {r["metric"] for r in rows} == {"grad_norm", "grad_momentum_cos"}
    norm = [r for r in rows if r["metric"] == "grad_norm"]
    assert [r["step"] for r in norm] == [11, 12, 13] and norm[0]["mean"] == pytest.approx(1.1)
    assert norm[0]["ci_high"] - norm[0]["mean"] == pytest.approx(
        t_quantile(0.975, 1) * np.std([1.0, 1.2], ddof=1) / math.sqrt(2), rel=1e-6)
