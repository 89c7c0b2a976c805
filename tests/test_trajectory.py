"""Optimizer path: PCA shares, phase sets, weak quasi-convexity and update alignment, the whole table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from wsdlab.analysis.hessian import HessianOperator, exact_hessian
from wsdlab.analysis.trajectory import (
    one_step_pairs,
    path_rows,
    pca,
    phase_of,
    phase_sets,
    quasi_convexity_ratio,
    trajectory_table,
    update_cosine,
)
from wsdlab.analysis.weights import flatten_weights, load_weights, model_weights


@pytest.mark.parametrize("dim", [3, 50])  # n <= m goes through the SVD, n > m through the Gram matrix
def test_pca_share_is_one_for_collinear_iterates(dim):
    torch.manual_seed(0)
    origin, direction = torch.randn(dim), torch.randn(dim)
    iterates = torch.stack([origin + t * direction for t in (0.0, 0.3, 1.0, 1.1, 2.5)])
    res = pca(iterates)
    assert res.shares[0] == pytest.approx(1.0, abs=1e-9)
    assert abs(float(torch.dot(res.pc1.float(), direction / direction.norm()))) == pytest.approx(1.0, abs=1e-6)
    assert float(torch.dot(res.pc1.float(), direction)) > 0  # signed from the first iterate to the last


@pytest.mark.parametrize("shape", [(6, 4), (5, 40)])
def test_pca_shares_match_numpy_svd(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * np.linspace(3, 0.5, shape[1])
    res = pca(torch.from_numpy(x))
    xc = x - x.mean(axis=0)
    _, s, vh = np.linalg.svd(xc, full_matrices=False)
    want = s**2 / (s**2).sum()
    np.testing.assert_allclose(res.shares[: len(want)], want, rtol=1e-9, atol=1e-12)
    assert abs(float(np.dot(res.pc1.numpy(), vh[0]))) == pytest.approx(1.0, abs=1e-9)


def test_pca_rejects_too_few_or_equal_iterates():
    with pytest.raises(ValueError, match="iterates"):
        pca(torch.ones(1, 4))
    with pytest.raises(ValueError, match="all equal"):
        pca(torch.ones(3, 4))


def test_quasi_convexity_on_a_quadratic_hand_values():
    a = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))

    def loss(x: torch.Tensor) -> float:
        return float(0.5 * x @ a @ x)

    x = torch.tensor([1.0, 1.0], dtype=torch.float64)
    grad = a @ x  # (1, 3)
    # x* = the minimum: tau = x^T A x / (x^T A x / 2) = 2
    assert quasi_convexity_ratio(grad, x, torch.zeros(2, dtype=torch.float64), loss(x), 0.0) == pytest.approx(2.0)
    # x* = (0.5, 0): -(1, 3).(-0.5, -1) / (2 - 0.125) = 3.5 / 1.875
    x_star = torch.tensor([0.5, 0.0], dtype=torch.float64)
    assert quasi_convexity_ratio(grad, x, x_star, loss(x), loss(x_star)) == pytest.approx(3.5 / 1.875)
    assert math.isnan(quasi_convexity_ratio(grad, x, x, 2.0, 2.0))


def test_update_cosine_hand_values():
    grad = torch.tensor([1.0, 0.0])
    x = torch.zeros(2)
    assert update_cosine(grad, x, torch.tensor([-2.0, 0.0])) == pytest.approx(1.0)
    assert update_cosine(grad, x, torch.tensor([-1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert update_cosine(grad, x, torch.tensor([0.0, 3.0])) == pytest.approx(0.0)
    assert math.isnan(update_cosine(grad, x, x))


def test_phase_sets_take_the_last_and_first_fifth():
    steps = list(range(0, 101, 5))
    sets = phase_sets(steps, decay_start=80, end=100, stable_start=10, fraction=0.2)
    assert sets["S"] == list(range(10, 81, 5))
    assert sets["D"] == [80, 85, 90, 95, 100]
    assert sets["S'"] == [70, 75, 80]  # last 20% of [10, 80]: steps >= 66
    assert sets["D'"] == [80]  # first 20% of [80, 100]: steps <= 84
    assert [phase_of(s, 10, 80) for s in (5, 10, 79, 80)] == ["warmup", "stable", "stable", "decay"]
    with pytest.raises(ValueError, match="decay_start"):
        phase_sets(steps, decay_start=200, end=100)


def test_path_rows_norms_and_last_row():
    points = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0])]
    grads = [torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])]
    rows = path_rows([0, 10], points, [2.0, 1.0], grads, ["stable", "decay"])
    assert rows[0]["param_norm"] == pytest.approx(5.0)
    assert rows[0]["distance_to_final"] == pytest.approx(math.sqrt(9 + 9))
    assert rows[0]["tau"] == pytest.approx(-(1 * -3 + 1 * -3) / 1.0)
    assert rows[0]["cos_grad_update"] == pytest.approx(1.0)
    assert math.isnan(rows[1]["tau"]) and math.isnan(rows[1]["cos_grad_update"])


def test_trajectory_table_end_to_end_matches_exact_hessian_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    batches = [(torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 2, (16,)))]

    def loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(b[0]), b[1])

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    iterates = {}
    for step in range(0, 21):
        iterates[step] = model_weights(model)
        for g in opt.param_groups:
            g["lr"] = 0.5 if step < 10 else 0.5 * (20 - step) / 10
        opt.zero_grad()
        loss(model, batches[0]).backward()
        opt.step()
    rows = trajectory_table(model, loss, batches, iterates, decay_start=10, fraction=0.3)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("pca") == 4 and kinds.count("hv") == 2 and kinds.count("path") == 21
    pca_rows = {r["set"]: r for r in rows if r["kind"] == "pca"}
    assert pca_rows["S"]["num_iterates"] == 11 and pca_rows["D"]["num_iterates"] == 11
    assert all(0 < r["pc1_share"] <= 1 for r in pca_rows.values())
    # ||H v|| at the decay start equals the exact Hessian's action on PC1 of S' and D'
    work = load_weights(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double(), iterates[10])
    h = exact_hessian(HessianOperator(work, loss, batches))
    names = [n for n, _ in work.named_parameters()]
    flat = {s: flatten_weights(iterates[s], names) for s in iterates}
    for set_name, direction in (("S'", "v_s"), ("D'", "v_d")):
        steps = [s for s in iterates if s in range(pca_rows[set_name]["first_step"], pca_rows[set_name]["last_step"] + 1)]
        v = pca(torch.stack([flat[s] for s in steps])).pc1
        got = next(r["hv_norm"] for r in rows if r.get("direction") == direction)
        assert got == pytest.approx(float((h @ v).norm()), rel=1e-8)
    path = [r for r in rows if r["kind"] == "path"]
    assert [r["step"] for r in path] == list(range(21))
    assert path[-1]["distance_to_final"] == 0.0
    assert path[0]["loss"] > path[-1]["loss"]
    assert path[0]["cos_grad_update"] == pytest.approx(1.0, abs=1e-9)  # one plain SGD step: along -grad


def test_one_step_pairs_split_samples_from_their_next_step():
    samples, partner = one_step_pairs([0, 10, 11, 20, 21, 30, 40, 41, 42])
    assert samples == [0, 10, 20, 30, 40, 42] and partner == {10: 11, 20: 21, 40: 41}


def test_path_rows_one_step_update_by_hand():
    """cos(-grad L(x_i), x_{i+1} - x_i) with x_{i+1} one optimizer step after x_i (paper 001, Fig. 4),
    not the next sampled iterate: x_0 = (0, 0) with grad (1, 0); one step later (-1, 1): cos = 1/sqrt(2);
    the next sample (0, 5) would give cos 0."""
    points = [torch.tensor([0.0, 0.0]), torch.tensor([0.0, 5.0]), torch.tensor([1.0, 1.0])]
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])]
    losses = [3.0, 2.0, 1.0]
    nxt = [torch.tensor([-1.0, 1.0]), None, None]
    rows = path_rows([0, 10, 20], points, losses, grads, next_points=nxt)
    assert rows[0]["cos_grad_update"] == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(rows[1]["cos_grad_update"]) and math.isnan(rows[2]["cos_grad_update"])
    # tau_0 = -grad . (x* - x_0) / (L(x_0) - L(x*)) = -(1*1 + 0*1) / (3 - 1) = -0.5
    assert rows[0]["tau"] == pytest.approx(-0.5)
    assert path_rows([0, 10, 20], points, losses, grads)[0]["cos_grad_update"] == pytest.approx(0.0)
