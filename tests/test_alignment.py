"""Confidence bands over seeds (Student t / normal), metric series, and the alignment table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsdlab.analysis.alignment import (
    alignment_rows,
    alignment_table,
    confidence_interval,
    metric_series,
    student_t_cdf,
    t_quantile,
)
from wsdlab.train.measures import cosine, mean_tensor_cosine


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
        return [{"step": s, "grad_norm": 1.0 + self.offset, "grad_momentum_cos": 0.1 * s,
                 "grad_momentum_cos_global": 0.05 * s} for s in (11, 12, 13)]


def test_alignment_table_reads_run_metrics() -> None:
    rows = alignment_table({"linear": [FakeRun(0.0), FakeRun(0.2)]}, window=1)
    assert {r["metric"] for r in rows} == {"grad_norm", "grad_momentum_cos", "grad_momentum_cos_global"}
    norm = [r for r in rows if r["metric"] == "grad_norm"]
    assert [r["step"] for r in norm] == [11, 12, 13] and norm[0]["mean"] == pytest.approx(1.1)
    assert norm[0]["ci_high"] - norm[0]["mean"] == pytest.approx(
        t_quantile(0.975, 1) * np.std([1.0, 1.2], ddof=1) / math.sqrt(2), rel=1e-6)


# ------------------------------------------------------------------ App. G: the cosine per parameter tensor


def slow_mean_cosine(grads: list[torch.Tensor], moments: list[torch.Tensor]) -> float:
    """App. G as written: for each parameter tensor, <g, m> / (||g|| ||m||) by plain loops; then their mean."""
    cosines = []
    for g, m in zip(grads, moments):
        gv, mv = g.reshape(-1).tolist(), m.reshape(-1).tolist()
        dot = sum(a * b for a, b in zip(gv, mv))
        cosines.append(dot / (math.sqrt(sum(a * a for a in gv)) * math.sqrt(sum(b * b for b in mv))))
    return sum(cosines) / len(cosines)


def test_mean_tensor_cosine_hand_example() -> None:
    # tensor 1: g = (1, 0), m = (1, 1) -> 1/sqrt 2; tensor 2: g = (0, 0, 2), m = (0, 0, -5) -> -1.
    # per tensor: mean (1/sqrt 2 - 1) / 2; one vector: <g, m> = 1 - 10 = -9, ||g|| = sqrt 5, ||m|| = sqrt 27.
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0, 2.0])]
    moments = [torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0, -5.0])]
    assert mean_tensor_cosine(grads, moments) == pytest.approx((1 / math.sqrt(2) - 1) / 2, rel=1e-6)
    assert cosine(grads, moments) == pytest.approx(-9 / math.sqrt(5 * 27), rel=1e-6)


def test_mean_tensor_cosine_matches_slow_reference_and_skips_zero_tensors() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (7,), (2, 2, 2)]
    grads = [torch.randn(*sh, generator=g) for sh in shapes]
    moments = [torch.randn(*sh, generator=g) + 0.5 * x for sh, x in zip(shapes, grads)]
    assert mean_tensor_cosine(grads, moments) == pytest.approx(slow_mean_cosine(grads, moments), rel=1e-5)
    # a tensor without gradient (or momentum) has no direction: left out of the mean
    with_zero = mean_tensor_cosine([*grads, torch.zeros(5)], [*moments, torch.ones(5)])
    assert with_zero == pytest.approx(slow_mean_cosine(grads, moments), rel=1e-5)
    assert mean_tensor_cosine([torch.zeros(3)], [torch.ones(3)]) is None and mean_tensor_cosine([], []) is None


def test_mean_tensor_cosine_reduces_shard_sums_before_dividing() -> None:
    """Two FSDP-like ranks each hold a slice of every tensor (one rank's slice of the last is empty): the
    reduced per-tensor dots and norms give the cosine of the whole tensors, not a mean of shard cosines."""
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, generator=g), torch.randn(5, generator=g), torch.randn(2, generator=g)]
    moments = [torch.randn(6, generator=g), torch.randn(5, generator=g), torch.randn(2, generator=g)]
    cuts = [3, 1, 2]  # rank 0 holds [:cut], rank 1 the rest
    rank0 = ([t[:c] for t, c in zip(grads, cuts)], [t[:c] for t, c in zip(moments, cuts)])
    rank1 = ([t[c:] for t, c in zip(grads, cuts)], [t[c:] for t, c in zip(moments, cuts)])
    sent: dict[int, torch.Tensor] = {}

    def record(rank: int):
        def reduce(x: torch.Tensor) -> torch.Tensor:
            sent[rank] = x.clone()
            return x
        return reduce

    mean_tensor_cosine(*rank0, record(0))
    mean_tensor_cosine(*rank1, record(1))
    total = sent[0] + sent[1]  # what an all-reduce sum hands every rank
    on_rank0 = mean_tensor_cosine(*rank0, lambda x: total)
    on_rank1 = mean_tensor_cosine(*rank1, lambda x: total)
    assert on_rank0 == on_rank1 == pytest.approx(slow_mean_cosine(grads, moments), rel=1e-5)
    assert on_rank0 != pytest.approx(mean_tensor_cosine(*rank0), rel=1e-3)  # the local shards alone differ
