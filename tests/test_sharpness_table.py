"""The geometry `sharpness` rows: which columns each method writes, the solver's quality kept beside its
eigenvalues, and the Hutchinson relative-stderr target (off by default, so fixed-sample rows are unchanged)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from wsdlab.analysis.geometry_config import SharpnessConfig
from wsdlab.analysis.geometry.sharpness import _sharpness_at
from wsdlab.analysis.hessian import HessianOperator, exact_spectrum, hutchinson_trace


def mlp_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


_G = torch.Generator().manual_seed(1)
BATCHES = [(torch.randn(6, 3, dtype=torch.float64, generator=_G), torch.randint(0, 3, (6,), generator=_G))]
HEAD = ["method", "estimator", "loss"]


def row(**cfg) -> dict:
    return _sharpness_at(tiny_mlp(), BATCHES, SharpnessConfig(**cfg), mlp_loss)


def test_columns_of_each_method() -> None:
    assert list(row(method="trace", samples=4)) == HEAD + ["trace", "trace_stderr", "samples", "products"]
    for solver in ("lanczos", "power"):
        assert list(row(method="top-eigen", solver=solver, top_k=2, max_iters=5)) == HEAD + [
            "solver", "lambda_1", "lambda_2", "converged", "residual", "iterations", "products"]
    assert list(row(method="exact", top_k=1)) == HEAD + [
        "trace", "trace_stderr", "samples", "lambda_1", "converged", "residual", "iterations", "products"]


@pytest.mark.parametrize("solver", ["lanczos", "power"])
def test_eigen_rows_say_whether_the_solver_converged(solver: str) -> None:
    top = exact_spectrum(HessianOperator(tiny_mlp(), mlp_loss, BATCHES)).eigenvalues[0]
    cut = row(method="top-eigen", solver=solver, max_iters=2, tol=1e-8)
    assert cut["converged"] is False and cut["iterations"] == 2 and cut["residual"] > 1e-8
    done = row(method="top-eigen", solver=solver, max_iters=2000, tol=1e-10)
    assert done["converged"] is True and done["iterations"] < 2000 and done["residual"] < 1e-3
    assert done["lambda_1"] == pytest.approx(top, rel=1e-6)
    assert row(method="exact")["converged"] is True


def test_fixed_samples_unchanged_and_relative_target_stops_early() -> None:
    fixed = row(method="trace", samples=8, seed=3)
    direct = hutchinson_trace(HessianOperator(tiny_mlp(), mlp_loss, BATCHES), 8, seed=3)
    assert (fixed["trace"], fixed["trace_stderr"], fixed["samples"]) == (direct.trace, direct.stderr, 8)
    # a loose target stops at the first chunk (probe_chunk = 4) with >= min_samples probes
    loose = row(method="trace", samples=40, seed=3, probe_chunk=4, target_rel_stderr=100.0, min_samples=6)
    assert loose["samples"] == 8 and loose["trace"] == fixed["trace"]
    # an unreachable one uses every sample
    tight = row(method="trace", samples=12, seed=3, probe_chunk=4, target_rel_stderr=1e-12)
    assert tight["samples"] == 12 and tight["trace_stderr"] > 1e-12 * abs(tight["trace"])
    with pytest.raises(ValidationError, match="target_rel_stderr needs estimator 'hutchinson'"):
        SharpnessConfig(estimator="hutchpp", target_rel_stderr=0.1)
