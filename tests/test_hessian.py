"""Hessian-vector products and the sharpness estimators against exact Hessians (tiny MLP, `micro` LM)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from wsdlab.analysis.evalset import loss_and_gradient
from wsdlab.analysis.hessian import (
    ExactSpectrum,
    HessianOperator,
    exact_hessian,
    exact_spectrum,
    flatten,
    hutchinson_trace,
    hutchpp_trace,
    hvp_norms,
    lanczos_eigenvalues,
    mean_and_stderr,
    power_iteration_eigenvalues,
    spectrum_of,
    split_like,
)
from wsdlab.models import batch_loss, build_model, model_config


def mlp_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


@pytest.fixture()
def mlp() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 3, (5,))),
               (torch.randn(2, 3, dtype=torch.float64), torch.randint(0, 3, (2,)))]
    return model, batches


@pytest.fixture(scope="module")
def micro() -> tuple[nn.Module, list[torch.Tensor], HessianOperator, ExactSpectrum, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(model_config("micro"))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 32, (4, 17), generator=g), torch.randint(0, 32, (2, 17), generator=g)]
    op = HessianOperator(model, batch_loss, batches)
    h = exact_hessian(op)
    return model, batches, op, spectrum_of(h), h


def _flat_params(model: nn.Module) -> torch.Tensor:
    return flatten([p.detach() for p in model.parameters()])


def test_hvp_matches_finite_differences_of_gradients(mlp):
    model, batches = mlp
    theta, eps = _flat_params(model), 1e-5
    v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def grad_at(vec: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p, t in zip(model.parameters(), split_like(vec, list(model.parameters()))):
                p.copy_(t)
        return flatten(loss_and_gradient(model, mlp_loss, batches)[1])

    fd = (grad_at(theta + eps * v) - grad_at(theta - eps * v)) / (2 * eps)  # central difference of gradients
    grad_at(theta)
    hv = HessianOperator(model, mlp_loss, batches).matvec(v)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)


def test_exact_hessian_is_symmetric_and_equals_torch_func_hessian(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches)
    h = exact_hessian(op, chunk=7)
    assert h.shape == (op.dim, op.dim)
    torch.testing.assert_close(h, h.T, rtol=0, atol=1e-12)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    w = [b[0].shape[0] / 7 for b in batches]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, split_like(flat, [torch.empty(s) for s in shapes])))
        return sum(wb * F.cross_entropy(functional_call(model, params, (x,)), y) for (x, y), wb in zip(batches, w))

    ref = torch.func.hessian(loss_of)(_flat_params(model))
    torch.testing.assert_close(h, ref, rtol=1e-10, atol=1e-12)


def test_exact_spectrum_matches_eigvalsh(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches)
    spec = exact_spectrum(op)
    h = exact_hessian(op)
    assert spec.trace == pytest.approx(float(torch.trace(h)))
    assert spec.eigenvalues == pytest.approx(torch.linalg.eigvalsh(h).flip(0).tolist(), abs=1e-10)
    assert spec.asymmetry < 1e-12


def test_batches_are_weighted_by_their_size(mlp):
    model, batches = mlp
    joined = [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))]
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    split = HessianOperator(model, mlp_loss, batches).matvec(v)
    whole = HessianOperator(model, mlp_loss, joined).matvec(v)
    torch.testing.assert_close(split, whole, rtol=1e-10, atol=1e-12)


def test_batched_products_equal_single_products_and_uncached_graph(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches, probe_chunk=3)
    vs = torch.randn(5, op.dim, dtype=torch.float64)
    many = op.matmat(vs)
    assert op.num_products == 5
    one = torch.stack([op.matvec(v) for v in vs])
    torch.testing.assert_close(many, one, rtol=1e-10, atol=1e-12)
    uncached = HessianOperator(model, mlp_loss, batches, cache_graph=False).matmat(vs)
    torch.testing.assert_close(uncached, one, rtol=1e-10, atol=1e-12)


def test_exact_spectrum_on_micro_is_consistent(micro):
    _, _, op, exact, _ = micro
    assert op.dim == 1112
    assert exact.asymmetry < 1e-4
    assert exact.eigenvalues == sorted(exact.eigenvalues, reverse=True)
    assert math.isclose(sum(exact.eigenvalues), exact.trace, rel_tol=1e-3, abs_tol=1e-3)


def test_hutchinson_within_three_standard_errors_of_exact_trace(micro):
    _, _, op, exact, h = micro
    h = h.double()
    est = hutchinson_trace(op, 200, seed=5)
    assert est.products == 200 and len(est.samples) == 200
    assert abs(est.trace - exact.trace) <= 3 * est.stderr
    # the stderr estimates the true one: Var(z^T H z) = 2 (||H||_F^2 - sum_i H_ii^2) for Rademacher z
    true_se = math.sqrt(2 * float(h.square().sum() - h.diagonal().square().sum()) / 200)
    assert 0.7 < est.stderr / true_se < 1.4
    assert hutchinson_trace(op, 200, seed=5).trace == est.trace  # deterministic given the seed


def test_mean_and_stderr_hand_values():
    assert mean_and_stderr([1.0, 2.0, 3.0, 6.0]) == (3.0, pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4)))
    assert math.isnan(mean_and_stderr([2.0])[1])


def test_hutchinson_stops_at_target_stderr(micro):
    model, batches, _, exact, _ = micro
    op = HessianOperator(model, batch_loss, batches, probe_chunk=1)  # stops after any probe
    fixed = hutchinson_trace(op, 120, seed=3)
    target = 1.3 * fixed.stderr  # reached after roughly 120 / 1.3^2 ~ 70 probes
    # min_samples guards against stopping on a chance-small SE of a few probes (seen with 10 here)
    early = hutchinson_trace(op, 120, seed=3, target_stderr=target, min_samples=30)
    assert 30 <= early.products < 120 and early.products == len(early.samples)
    assert early.stderr <= target
    assert early.samples == fixed.samples[: early.products]  # the same probe stream, cut short
    # stopping one probe earlier would have missed the target (it stops at the first chance)
    assert mean_and_stderr(early.samples[:-1])[1] > target or early.products == 30
    assert abs(early.trace - exact.trace) <= 4 * early.stderr
    # unreachable target: all samples are used
    assert hutchinson_trace(op, 15, seed=3, target_stderr=1e-12).products == 15
    with pytest.raises(ValueError, match="target_stderr"):
        hutchinson_trace(op, 15, target_stderr=0.0)


def test_chunked_trace_matches_exact_quadratic_forms(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches, probe_chunk=4)
    h = exact_hessian(op)
    est = hutchinson_trace(op, 10, seed=2)  # 4 + 4 + 2 probes, batched backward per chunk
    gen = torch.Generator().manual_seed(2)
    z = torch.cat([torch.randint(0, 2, (c, op.dim), generator=gen, dtype=torch.int8) for c in (4, 4, 2)]).double() * 2 - 1
    want = (z * (z @ h)).sum(dim=1).tolist()  # h symmetric: row j of z @ h is H z_j
    assert est.samples == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_hutchpp_has_lower_variance_than_hutchinson_at_equal_products():
    # least squares with a decaying spectrum in a random basis: H = A^T A / n has a few large eigenvalues
    torch.manual_seed(0)
    d = 40
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    a = torch.randn(200, d, dtype=torch.float64) @ torch.diag(0.7 ** torch.arange(d, dtype=torch.float64)) @ q.T
    y = torch.randn(200, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return 0.5 * (m(batch[0]).squeeze(-1) - batch[1]).square().mean()

    op = HessianOperator(model, loss, [(a, y)])
    exact = float(torch.trace(exact_hessian(op)))
    plain = [hutchinson_trace(op, 12, seed=s).trace for s in range(12)]
    plus = [hutchpp_trace(op, 12, seed=s) for s in range(12)]
    assert all(p.products == 12 for p in plus)
    assert statistics.pvariance([p.trace for p in plus]) < 0.25 * statistics.pvariance(plain)
    assert abs(statistics.mean(p.trace for p in plus) - exact) < 0.05 * exact


def test_lanczos_and_power_iteration_top_eigenvalue_within_one_percent(micro):
    _, _, op, exact, _ = micro
    top = exact.eigenvalues[0]
    lz = lanczos_eigenvalues(op, k=3, max_iters=80, seed=0)
    assert lz.converged and lz.products <= 80
    for got, want in zip(lz.eigenvalues, exact.eigenvalues[:3]):
        assert abs(got - want) <= 0.01 * abs(want)
    pw = power_iteration_eigenvalues(op, k=1, max_iters=200, tol=1e-4, seed=0)
    assert abs(pw.eigenvalues[0] - top) <= 0.01 * abs(top)
    # these batches have |lambda_min| > lambda_max: plain power iteration (PyHessian's) finds lambda_min
    assert abs(exact.eigenvalues[-1]) > top
    magnitude = power_iteration_eigenvalues(op, k=1, max_iters=200, tol=1e-4, seed=0, largest=False)
    assert abs(magnitude.eigenvalues[0] - exact.eigenvalues[-1]) <= 0.01 * abs(exact.eigenvalues[-1])


class MatrixOperator:
    """An explicit symmetric matrix behind the HvpOperator interface (a hand-built spectrum)."""

    def __init__(self, matrix: torch.Tensor, probe_chunk: int = 4) -> None:
        self.matrix = matrix
        self.dim, self.dtype, self.device = matrix.shape[0], matrix.dtype, matrix.device
        self.num_products, self.probe_chunk = 0, probe_chunk

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.num_products += 1
        return self.matrix @ v

    def matmat(self, vs: torch.Tensor) -> torch.Tensor:
        self.num_products += vs.shape[0]
        return vs @ self.matrix


def rotated(spectrum: list[float], seed: int = 0) -> MatrixOperator:
    """Q diag(spectrum) Q^T with a random orthogonal Q: eigenvalues known by construction."""
    n = len(spectrum)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return MatrixOperator(q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T)


# lambda_1 = 10 well separated from a bulk in [-1, 1] (n = 60); lambda_min = -20 dominates the second
BULK = [10.0, 4.0] + [-1.0 + 2.0 * i / 57 for i in range(58)]
NEGATIVE = [10.0, 4.0, -20.0] + [-1.0 + 2.0 * i / 56 for i in range(57)]


def test_lanczos_converged_flag_and_residual_on_a_known_spectrum():
    tol = 1e-8
    enough = lanczos_eigenvalues(rotated(BULK), k=1, max_iters=60, tol=tol)
    assert enough.converged and enough.residual <= tol
    assert enough.iterations == enough.products < 60
    assert enough.eigenvalues[0] == pytest.approx(10.0, abs=1e-8)
    short = lanczos_eigenvalues(rotated(BULK), k=1, max_iters=3, tol=tol)
    assert not short.converged and short.residual > tol
    assert short.iterations == short.products == 3
    # the Ritz bound: theta is within residual * max|theta| of an eigenvalue (here lambda_1 = 10)
    assert abs(short.eigenvalues[0] - 10.0) <= short.residual * 10.0
    two = lanczos_eigenvalues(rotated(BULK), k=2, max_iters=60, tol=tol)
    assert two.converged and two.residual <= tol and two.eigenvalues == pytest.approx([10.0, 4.0], abs=1e-7)


def test_power_iteration_converged_flag_and_residual_on_a_known_spectrum():
    tol = 1e-10
    enough = power_iteration_eigenvalues(rotated(BULK), k=1, max_iters=500, tol=tol)
    assert enough.converged and enough.iterations < 500 and enough.products == enough.iterations
    assert enough.eigenvalues[0] == pytest.approx(10.0, rel=1e-9)
    # its stop test is the Rayleigh quotient's change (~ residual^2): the residual ends near sqrt(tol)
    assert enough.residual <= 1e-4
    short = power_iteration_eigenvalues(rotated(BULK), k=1, max_iters=2, tol=tol)
    assert not short.converged and short.iterations == 2 and short.residual > tol
    assert abs(short.eigenvalues[0] - 10.0) <= short.residual * 10.0  # residual bound, rho = 10
    # lambda_min = -20 dominates: lambda_min first, then H + 20 I; residual relative to rho = 20
    shifted = power_iteration_eigenvalues(rotated(NEGATIVE), k=1, max_iters=2000, tol=tol)
    assert shifted.converged and shifted.eigenvalues[0] == pytest.approx(10.0, rel=1e-6)
    assert shifted.residual <= 1e-4 and shifted.products > shifted.iterations
    cut = power_iteration_eigenvalues(rotated(NEGATIVE), k=1, max_iters=3, tol=tol)
    assert not cut.converged and cut.iterations == 3 and cut.residual > tol


def test_hutchinson_relative_stderr_target_stops_early_and_keeps_fixed_samples_without_it():
    diag = MatrixOperator(torch.diag(torch.tensor([3.0, 1.0, 2.0, 0.5], dtype=torch.float64)))
    # z^T D z = tr D for every Rademacher z: stderr 0, so the target stops at the first chunk past min_samples
    est = hutchinson_trace(diag, 40, seed=0, target_rel_stderr=0.01, min_samples=10)
    assert est.products == 12 and est.trace == pytest.approx(6.5) and est.stderr == 0.0
    full = hutchinson_trace(rotated(BULK), 40, seed=0)
    tight = hutchinson_trace(rotated(BULK), 40, seed=0, target_rel_stderr=1e-9)
    assert full.products == tight.products == 40 and tight.trace == full.trace
    loose = hutchinson_trace(rotated(BULK), 40, seed=0, target_rel_stderr=10.0, min_samples=10)
    assert loose.products == 12 and loose.samples == full.samples[:12]
    with pytest.raises(ValueError, match="target_rel_stderr"):
        hutchinson_trace(diag, 4, target_rel_stderr=0.0)


def test_lanczos_ritz_vectors_are_eigenvectors(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches)
    h = exact_hessian(op)
    res = lanczos_eigenvalues(op, k=2, max_iters=op.dim, tol=1e-10, return_vectors=True)
    assert res.eigenvectors is not None
    for lam, v in zip(res.eigenvalues, res.eigenvectors):
        torch.testing.assert_close(h @ v, lam * v, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(torch.tensor(res.eigenvalues, dtype=torch.float64), torch.linalg.eigvalsh(h).flip(0)[:2])


def test_hvp_norms_of_unit_directions(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches)
    h = exact_hessian(op)
    v1, v2 = torch.randn(op.dim, dtype=torch.float64), torch.randn(op.dim, dtype=torch.float64)
    got = hvp_norms(op, [3 * v1, v2])
    want = [float((h @ v).norm() / v.norm()) for v in (v1, v2)]
    assert got == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="zero norm"):
        hvp_norms(op, [torch.zeros(op.dim, dtype=torch.float64)])


def test_bad_inputs_raise_value_errors(mlp):
    model, batches = mlp
    op = HessianOperator(model, mlp_loss, batches)
    with pytest.raises(ValueError, match="batches"):
        HessianOperator(model, mlp_loss, [])
    with pytest.raises(ValueError, match="shape"):
        op.matvec(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="samples"):
        hutchinson_trace(op, 0)
    with pytest.raises(ValueError, match="products"):
        hutchpp_trace(op, 2)
    with pytest.raises(ValueError, match="k must"):
        lanczos_eigenvalues(op, k=0)


@pytest.mark.gpu
def test_hvp_through_attention_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = build_model(model_config("micro"))
    batches = [torch.randint(0, 32, (4, 17))]
    v = torch.randn(sum(p.numel() for p in model.parameters()))
    cpu = HessianOperator(model, batch_loss, batches).matmat(v[None])
    gpu_model = build_model(model_config("micro")).cuda()
    gpu_model.load_state_dict(model.state_dict())
    gpu = HessianOperator(gpu_model, batch_loss, [b.cuda() for b in batches]).matmat(v[None].cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
