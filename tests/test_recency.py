"""Recency bias (eq. 2): window average, loss differences, shift/deviation/slope, tables and correlations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import wsdlab.analysis.recency as recency_mod
from wsdlab.analysis.recency import (
    loss_differences,
    recency_correlations,
    recency_curve_rows,
    recency_summary,
    recency_table,
    window_average,
)
from wsdlab.models import batch_loss


def test_window_average_hand_values() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert window_average(x, 1).tolist() == x
    assert window_average(x, 3).tolist() == [1.5, 2.0, 3.0, 4.0, 4.5]  # centered, shrinking at the ends
    assert window_average(x, 2).tolist() == [1.5, 2.5, 3.5, 4.5, 5.0]  # even: one step ahead
    assert window_average(x, 100).tolist() == [3.0] * 5
    out = window_average([1.0, math.nan, 3.0, math.nan], 3)
    assert out[:3].tolist() == [1.0, 2.0, 3.0] and out[3] == 3.0  # NaNs skipped
    assert math.isnan(window_average([math.nan, math.nan], 1)[0])
    with pytest.raises(ValueError, match="window"):
        window_average(x, 0)


def test_loss_differences_are_post_minus_pre() -> None:
    assert loss_differences([2.0, 1.5], [3.0, 3.5]).tolist() == [-1.0, -2.0]
    with pytest.raises(ValueError, match="same length"):
        loss_differences([1.0], [1.0, 2.0])


def test_summary_on_a_linear_curve() -> None:
    # d_j = a + b x_j, x = (0, 1/4, 1/2, 3/4, 1): shift = a + b/2, slope = b,
    # deviation (window 1) = |b| std(x) = |b| sqrt((1/4 + 1/16 + 0 + 1/16 + 1/4) / 5) = |b| sqrt(1/8)
    a, b = -0.2, -0.8
    d = a + b * np.linspace(0, 1, 5)
    s = recency_summary(d, window_average(d, 1))
    assert s["shift"] == pytest.approx(a + b / 2)
    assert s["slope"] == pytest.approx(b)
    assert s["deviation"] == pytest.approx(abs(b) * math.sqrt(1 / 8))


def test_summary_on_a_step_curve() -> None:
    # the last half of the cooldown improved by 1 more than the first half
    d = np.array([0.0] * 4 + [-1.0] * 4)
    s = recency_summary(d, window_average(d, 1))
    assert s["shift"] == pytest.approx(-0.5)
    assert s["deviation"] == pytest.approx(0.5)
    assert s["slope"] < 0
    flat = recency_summary(np.full(6, -0.3), np.full(6, -0.3))
    assert flat["deviation"] == 0.0 and flat["slope"] == pytest.approx(0.0)


def test_curve_rows_and_table_roundtrip() -> None:
    d = np.linspace(0.0, -1.0, 9)
    rows = recency_curve_rows("sqrt", 3, list(range(101, 110)), d, window=3)
    assert [r["batch_position"] for r in rows] == list(range(9))
    assert rows[0]["step"] == 101 and rows[4]["loss_diff_smoothed"] == pytest.approx(d[3:6].mean())
    table = recency_table(list(reversed(rows)))  # order of rows does not matter
    assert len(table) == 1
    row = table[0]
    assert (row["shape"], row["seed"], row["n_batches"]) == ("sqrt", 3, 9)
    assert row["shift"] == pytest.approx(-0.5)
    assert row["slope"] == pytest.approx(-1.0)
    assert row["deviation"] == pytest.approx(np.std(window_average(d, 3)))


def test_correlations_across_shapes_use_seed_means() -> None:
    recency = [{"shape": s, "seed": k, "shift": sh + k * 0.01, "deviation": dv}
               for s, sh, dv in [("a", -0.1, 0.3), ("b", -0.3, 0.1), ("c", -0.2, 0.2)] for k in range(2)]
    bv = [{"shape": s, "space": "kl", "bias": b, "variance": v} for s, b, v in [("a", 0.5, 0.9), ("b", 0.1, 0.2),
                                                                                  ("c", 0.3, 0.4)]]
    rows = {(r["x"], r["y"]): r for r in recency_correlations(recency, bv)}
    assert rows[("shift", "bias")]["spearman"] == pytest.approx(1.0)
    assert rows[("deviation", "variance")]["spearman"] == pytest.approx(1.0)
    assert rows[("shift", "bias")]["n_shapes"] == 3
    with pytest.raises(ValueError, match="weight"):
        recency_correlations(recency, bv, space="weight")


# ------------------------------------------------------------------ the wrapper, on duck-typed runs and data


class TinyLM(nn.Module):
    def __init__(self, seed: int, vocab: int = 9) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, 4)
        self.out = nn.Linear(4, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(idx))


class FakeData:
    def __init__(self) -> None:
        self.ids = torch.randint(0, 9, (20, 5), generator=torch.Generator().manual_seed(0))

    def train_batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.ids[torch.as_tensor(indices)]


class FakeRun:
    def __init__(self, path, seed: int, rows: np.ndarray) -> None:
        self.path = path
        self.rows = rows
        self.spec = SimpleNamespace(init_from=str(path), data=SimpleNamespace(order=SimpleNamespace(seed=seed)))

    def batch_indices(self) -> np.ndarray:
        return self.rows

    def checkpoint_steps(self) -> list[int]:
        return [10, 10 + len(self.rows)]

    def load_model(self, step=None, device="cpu") -> nn.Module:
        return TinyLM(seed=1).eval()


def test_curves_follow_the_original_batch_order(tmp_path, monkeypatch) -> None:
    pre = TinyLM(seed=2).eval()
    monkeypatch.setattr(recency_mod, "load_checkpoint_model", lambda path, device="cpu": pre)
    rows = np.array([[3, 4, 5, 6], [0, 1, 2, 7], [19, 18, 17, 16], [8, 9, 10, 11], [12, 13, 14, 15]])
    run = FakeRun(tmp_path, seed=4, rows=rows)
    data = FakeData()
    curves = recency_mod.recency_curves_table({"cosine": [run]}, data, window=3, eval_batch_size=3)
    post = run.load_model()
    with torch.no_grad():
        expected = [float(batch_loss(post, data.train_batch(r)) - batch_loss(pre, data.train_batch(r))) for r in rows]
    assert [c["step"] for c in curves] == [11, 12, 13, 14, 15]
    assert [c["seed"] for c in curves] == [4] * 5
    assert [c["loss_diff"] for c in curves] == pytest.approx(expected, rel=1e-5)
    assert curves[0]["loss_diff_smoothed"] == pytest.approx(np.mean(expected[:2]), rel=1e-5)
    strided = recency_mod.recency_curves_table({"cosine": [run]}, data, window=1, stride=2)
    assert [c["batch_position"] for c in strided] == [0, 2, 4]
    assert [c["loss_diff"] for c in strided] == pytest.approx(expected[::2], rel=1e-5)
    no_branch = FakeRun(tmp_path, 0, rows)
    no_branch.spec.init_from = None
    with pytest.raises(ValueError, match="init_from"):
        recency_mod.recency_curves_table({"cosine": [no_branch]}, data)
