"""Landscapes: interpolation endpoints, vmapped grid evaluation equal to one model at a time, planes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wsdlab.analysis.evalset import mean_loss
from wsdlab.analysis.landscape import (
    combination_losses,
    cooldown_plane,
    interpolation,
    orthogonalize,
    perplexity,
    plane,
)
from wsdlab.analysis.weights import load_weights, model_weights
from wsdlab.models import batch_loss, build_model, model_config


def _perturbed(model: nn.Module, scale: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: w + scale * torch.randn(w.shape, generator=g) for n, w in model_weights(model).items()}


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    model = build_model(model_config("micro"))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 32, (3, 17), generator=g), torch.randint(0, 32, (2, 17), generator=g)]
    return model, batches, _perturbed(model, 0.0, 0), _perturbed(model, 0.05, 1), _perturbed(model, 0.05, 2)


def test_interpolation_endpoints_equal_the_losses_of_the_two_models(micro):
    model, batches, w0, w1, _ = micro
    rows = interpolation(model, batch_loss, batches, w0, w1, [0.0, 0.5, 1.0], chunk_size=2)
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    work = build_model(model_config("micro"))
    for row, w in ((rows[0], w0), (rows[-1], w1)):
        want = mean_loss(load_weights(work, w), batch_loss, batches)
        assert row["loss"] == pytest.approx(want, rel=1e-5)
        assert row["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    assert rows[0]["loss"] != pytest.approx(rows[-1]["loss"], rel=1e-4)


def test_vmapped_grid_equals_one_model_at_a_time(micro):
    model, batches, w0, w1, w2 = micro
    coeffs = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [1.0, -0.5, 1.5], [0.0, 0.0, 1.0], [-0.2, 1.2, 0.4]],
                          dtype=torch.float64)
    fast = combination_losses(model, batch_loss, batches, [w0, w1, w2], coeffs, chunk_size=2)
    slow = combination_losses(model, batch_loss, batches, [w0, w1, w2], coeffs, vectorize=False)
    assert fast.shape == (5,)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert len(set(round(x, 4) for x in fast.tolist())) == 5  # the points really differ


def test_extrapolation_outside_unit_interval_matches_loop(micro):
    model, batches, w0, w1, _ = micro
    alphas = [-1.0, -0.25, 1.5, 2.0]
    fast = interpolation(model, batch_loss, batches, w0, w1, alphas, chunk_size=3)
    slow = interpolation(model, batch_loss, batches, w0, w1, alphas, vectorize=False)
    assert [r["loss"] for r in fast] == pytest.approx([r["loss"] for r in slow], rel=1e-5)


def test_model_parameters_are_left_unchanged(micro):
    model, batches, w0, w1, _ = micro
    before = model_weights(model)
    interpolation(model, batch_loss, batches, w0, w1, [0.3, 2.0])
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])


def test_plane_centre_and_axes(micro):
    model, batches, w0, w1, w2 = micro
    e1 = {n: w1[n] - w0[n] for n in w0}
    e2 = {n: w2[n] - w0[n] for n in w0}
    rows = plane(model, batch_loss, batches, w0, e1, e2, [0.0, 1.0], [0.0, 1.0], chunk_size=3)
    assert [(r["a"], r["b"]) for r in rows] == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    work = build_model(model_config("micro"))
    assert rows[0]["loss"] == pytest.approx(mean_loss(load_weights(work, w0), batch_loss, batches), rel=1e-5)
    assert rows[1]["loss"] == pytest.approx(mean_loss(load_weights(work, w2), batch_loss, batches), rel=1e-5)
    assert rows[2]["loss"] == pytest.approx(mean_loss(load_weights(work, w1), batch_loss, batches), rel=1e-5)


def test_cooldown_plane_directions(micro):
    model, batches, pre, final, after = micro
    point = {n: 0.5 * (pre[n] + final[n]) for n in pre}
    rows = cooldown_plane(model, batch_loss, batches, pre=pre, final=final, point=point, after=after,
                          a_values=[0.0, 0.5], b_values=[1.0])
    work = build_model(model_config("micro"))
    # (a, b) = (0.5, 0): point + (final - pre)/2 = final; (0, 1): point + (after - point) = after
    assert rows[0]["loss"] == pytest.approx(mean_loss(load_weights(work, after), batch_loss, batches), rel=1e-5)
    shifted = {n: final[n] + after[n] - point[n] for n in pre}
    assert rows[1]["loss"] == pytest.approx(mean_loss(load_weights(work, shifted), batch_loss, batches), rel=1e-5)
    ortho = cooldown_plane(model, batch_loss, batches, pre=pre, final=final, point=point, after=after,
                           a_values=[0.0], b_values=[1.0], orthogonal=True)
    assert ortho[0]["loss"] != pytest.approx(rows[0]["loss"], rel=1e-6)


def test_orthogonalize_removes_the_e1_component():
    e1 = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([1.0])}
    e2 = {"w": torch.tensor([2.0, 3.0]), "b": torch.tensor([0.0])}
    out = orthogonalize(e2, e1)
    assert float((out["w"] * e1["w"]).sum() + (out["b"] * e1["b"]).sum()) == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(out["w"], torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match="e1 is zero"):
        orthogonalize(e2, {"w": torch.zeros(2), "b": torch.zeros(1)})


def test_vision_batches_and_tuple_inputs_work_under_vmap():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    batches = [(torch.randn(4, 1, 6, 6), torch.randint(0, 3, (4,)))]
    w0, w1 = _perturbed(model, 0.0, 0), _perturbed(model, 0.2, 1)

    def loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(m(b[0]), b[1])

    fast = interpolation(model, loss, batches, w0, w1, [0.0, 0.4, 1.3])
    slow = interpolation(model, loss, batches, w0, w1, [0.0, 0.4, 1.3], vectorize=False)
    assert [r["loss"] for r in fast] == pytest.approx([r["loss"] for r in slow], rel=1e-5)


def test_bad_inputs(micro):
    model, batches, w0, w1, _ = micro
    broken = dict(w1)
    broken.pop(next(iter(broken)))
    with pytest.raises(ValueError, match="weight set 1: parameters missing"):
        interpolation(model, batch_loss, batches, w0, broken, [0.5])
    with pytest.raises(ValueError, match="alphas"):
        interpolation(model, batch_loss, batches, w0, w1, [])
    with pytest.raises(ValueError, match="chunk_size"):
        interpolation(model, batch_loss, batches, w0, w1, [0.5], chunk_size=0)
    assert perplexity(1e6) == math.inf


@pytest.mark.gpu
def test_vmapped_grid_on_cuda_matches_cpu(micro):
    model, batches, w0, w1, _ = micro
    cpu = interpolation(model, batch_loss, batches, w0, w1, [0.0, 0.5, 1.5])
    gpu_model = build_model(model_config("micro")).cuda()
    gpu = interpolation(gpu_model, batch_loss, [b.cuda() for b in batches], {k: v.cuda() for k, v in w0.items()},
                        {k: v.cuda() for k, v in w1.items()}, [0.0, 0.5, 1.5])
    assert [r["loss"] for r in gpu] == pytest.approx([r["loss"] for r in cpu], rel=1e-4)
