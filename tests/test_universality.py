"""Paper 001's universality units: the checkpoint arithmetic and the report's reading of the findings,
with references worked out by hand from the paper's definitions."""

from __future__ import annotations

import pytest

from wsdlab.analysis.units import SelectedRun, group, select
from wsdlab.analysis.universality import COSINE, SWEEP, WSD, stable_fraction_step
from wsdlab.report.figures_universality import interpolation_shape, matching_fraction


def test_stable_fraction_steps_of_fig2() -> None:
    """Fig. 2 interpolates between "checkpoints taken at 80% and 100% of the stable phase": with warmup 16
    and the decay from step 128 (160 steps, 20% cooldown) the stable phase is [16, 128]: 16 + 0.8 * 112 =
    105.6 -> 106, and 128."""
    assert stable_fraction_step(16, 128, 0.8) == 106
    assert stable_fraction_step(16, 128, 1.0) == 128
    assert stable_fraction_step(16, 104, 0.8) == 16 + 70  # the CNN's 35% cooldown: 0.8 * 88 = 70.4


def test_selectors_group_lm_left_of_cnn(tmp_path) -> None:
    runs = [SelectedRun(k, stage, {"model": m, "seed": s}, tmp_path / k)
            for k, stage, m, s in [("a", "cnn-wsd", "cnn", 0), ("b", "lm-wsd", "lm", 0), ("c", "lm-wsd", "lm", 1),
                                   ("d", "cnn-cosine", "cnn", 0), ("e", "cnn-cooldown", "cnn", 0)]]
    wsd = group(WSD, select(WSD, runs))
    assert {k: [r.key for r in v] for k, v in wsd.items()} == {"cnn": ["a"], "lm": ["b", "c"]}
    assert [r.key for r in select(COSINE, runs)] == ["d"] and [r.key for r in select(SWEEP, runs)] == ["e"]


def test_interpolation_shape_valley_and_descent() -> None:
    """A convex profile with its minimum inside (0, 1) is a valley; a decreasing one is a monotone descent;
    points outside [0, 1] are ignored."""
    valley = [{"alpha": a, "loss": (a - 0.5) ** 2 + 1} for a in (-0.5, 0.0, 0.25, 0.5, 0.75, 1.0)]
    shape = interpolation_shape(valley)
    assert shape["valley"] and not shape["monotone descent"] and shape["min inside"] == pytest.approx(1.0)
    descent = [{"alpha": a, "loss": 2 - a} for a in (0.0, 0.5, 1.0, 1.5)]
    shape = interpolation_shape(descent)
    assert shape["monotone descent"] and not shape["valley"] and shape["loss α=1"] == 1.0


def test_matching_fraction_is_the_shortest_cooldown_at_or_below_cosine() -> None:
    """Fig. 5: "the learning rate must decay for at least 35% [...] to match" cosine."""
    losses = {0.1: 0.70, 0.2: 0.66, 0.35: 0.63, 0.5: 0.62}
    assert matching_fraction(losses, 0.64) == 0.35
    assert matching_fraction(losses, 0.60) is None


def test_sharpness_row_keeps_the_solver_quality_beside_lambda_1() -> None:
    from wsdlab.analysis.universality import SHARPNESS_COLUMNS, sharpness_row

    table_row = {"run": "r", "step": 18, "dataset": "val", "method": "top-eigen", "estimator": "", "loss": 2.5,
                 "solver": "lanczos", "lambda_1": 3.0, "converged": False, "residual": 0.2, "iterations": 5,
                 "products": 5}
    row = sharpness_row(table_row, decay_start=13, final=20)
    assert tuple(row) == SHARPNESS_COLUMNS == ("step", "decay_start", "cooldown_progress", "lambda_1", "converged",
                                               "residual", "iterations", "loss")
    assert row["cooldown_progress"] == pytest.approx(5 / 7)  # (18 - 13) / (20 - 13)
    assert (row["lambda_1"], row["converged"], row["residual"], row["iterations"]) == (3.0, False, 0.2, 5)


def test_universality_sharpness_flags_an_unconverged_lambda_1() -> None:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from wsdlab.analysis.geometry.sharpness import sharpness_at
    from wsdlab.analysis.hessian import HessianOperator, exact_spectrum
    from wsdlab.analysis.universality import UniversalitySharpnessOptions

    def loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]), batch[1])

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 3, dtype=torch.float64, generator=g), torch.randint(0, 3, (16,), generator=g))]
    top = exact_spectrum(HessianOperator(model, loss, batches)).eigenvalues[0]
    short = sharpness_at(model, batches, UniversalitySharpnessOptions(max_iters=2), loss_fn=loss)
    assert short["converged"] is False and short["residual"] > 1e-3 and short["iterations"] == 2
    full = sharpness_at(model, batches, UniversalitySharpnessOptions(max_iters=200, tol=1e-6), loss_fn=loss)
    assert full["converged"] is True and full["residual"] <= 1e-6 and full["iterations"] < 200
    assert full["lambda_1"] == pytest.approx(top, rel=1e-6)
