"""Loss landscapes: the loss on lines and planes of weight space, many grid points per forward pass.

Every grid point is a linear combination theta_p = sum_i C[p, i] W_i of a few weight sets W_i:
- 1-D interpolation between two weight sets: W = (theta0, theta1), C[p] = (1 - a_p, a_p), so
  theta(a) = (1 - a) theta0 + a theta1 (a outside [0, 1] extrapolates; the endpoints are exact).
- 2-D plane at a cooldown point x_c: W = (x_c, e1, e2), C[p] = (1, a_p, b_p) with
  e1 = final - pre-cooldown weights and e2 = (weights 10 optimizer steps after x_c) - x_c.

Points are evaluated in chunks: the parameters of a chunk are stacked (P, *shape) and the loss is
`torch.vmap` over `torch.func.functional_call`, so one batched forward scores P models
(`vectorize=False` evaluates one model copy at a time, the reference the tests compare with).
The height reported is the loss and the perplexity exp(loss).

Table columns:
- interpolate: alpha, loss, perplexity
- landscape (plane): a, b, loss, perplexity
(the run-level analyses in `wsdlab.analysis.geometry` add run, dataset and step columns).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wsdlab.analysis.evalset import Batch, LossFn, batch_weights, math_attention
from wsdlab.analysis.weights import Weights, difference, load_weights
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row


class _LossModule(nn.Module):
    """forward(batch) = loss_fn(model, batch), so functional_call can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Batch) -> Tensor:
        return self.loss_fn(self.model, batch)


def _check_sets(model: nn.Module, weight_sets: Sequence[Mapping[str, Tensor]], coeffs: Tensor) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    if coeffs.dim() != 2 or coeffs.shape[1] != len(weight_sets):
        raise ValueError(f"coeffs must have shape (points, {len(weight_sets)}), got {tuple(coeffs.shape)}")
    for i, w in enumerate(weight_sets):
        missing = [n for n in names if n not in w]
        if missing:
            raise ValueError(f"weight set {i}: parameters missing: {missing[:5]}")
    return names


@torch.no_grad()
def combination_losses(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                       weight_sets: Sequence[Mapping[str, Tensor]], coeffs: Tensor, *,
                       chunk_size: int = 8, vectorize: bool = True) -> Tensor:
    """Mean loss over `batches` at theta_p = sum_i coeffs[p, i] * weight_sets[i], for each row p: (P,) float64.

    The model is put in eval mode; its own parameters are left unchanged.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    names = _check_sets(model, weight_sets, coeffs)
    model.eval()
    if not vectorize:
        return _loop_losses(model, loss_fn, batches, weight_sets, coeffs, names)
    wrapper = _LossModule(model, loss_fn)
    stacked = {n: torch.stack([w[n].to(p.device, p.dtype) for w in weight_sets])  # (m, *shape)
               for n, p in model.named_parameters()}
    weights = batch_weights(batches)
    out = []
    for chunk in coeffs.split(chunk_size):
        c = chunk.to(next(iter(stacked.values())).device)
        # theta_p = sum_i C[p, i] W_i for the P points of the chunk: (P, *shape) per parameter
        params = {f"model.{n}": torch.tensordot(c.to(w.dtype), w, dims=1) for n, w in stacked.items()}
        total = torch.zeros(chunk.shape[0], dtype=torch.float64, device=c.device)
        for batch, wb in zip(batches, weights):
            with math_attention():
                losses = torch.vmap(lambda p, b: functional_call(wrapper, p, (b,)), in_dims=(0, None))(params, batch)
            total += wb * losses.double()
        out.append(total.cpu())
    return torch.cat(out)


def _loop_losses(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch],
                 weight_sets: Sequence[Mapping[str, Tensor]], coeffs: Tensor, names: Sequence[str]) -> Tensor:
    """One model copy per point: load theta_p, evaluate every batch (the slow reference)."""
    work = copy.deepcopy(model).eval()
    weights = batch_weights(batches)
    out = []
    for row in coeffs.tolist():
        theta = {n: sum(c * w[n].to(torch.float64) for c, w in zip(row, weight_sets)) for n in names}
        load_weights(work, theta)
        out.append(sum(wb * float(loss_fn(work, b)) for b, wb in zip(batches, weights)))
    return torch.tensor(out, dtype=torch.float64)


def perplexity(loss: float) -> float:
    """exp(loss), inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def interpolation(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], theta0: Weights, theta1: Weights,
                  alphas: Sequence[float], *, chunk_size: int = 8, vectorize: bool = True) -> list[Row]:
    """Loss and perplexity along theta(a) = (1 - a) theta0 + a theta1; one row per alpha."""
    if len(alphas) == 0:
        raise ConfigError("alphas: need at least one value")
    a = torch.tensor([float(x) for x in alphas], dtype=torch.float64)
    coeffs = torch.stack([1 - a, a], dim=1)  # linear interpolation: (1 - a) theta0 + a theta1
    losses = combination_losses(model, loss_fn, batches, [theta0, theta1], coeffs,
                                chunk_size=chunk_size, vectorize=vectorize)
    return [{"alpha": float(x), "loss": float(v), "perplexity": perplexity(float(v))} for x, v in zip(a, losses)]


def plane(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], center: Weights, e1: Weights, e2: Weights,
          a_values: Sequence[float], b_values: Sequence[float], *, chunk_size: int = 8,
          vectorize: bool = True) -> list[Row]:
    """Loss and perplexity at center + a e1 + b e2 on the grid a_values x b_values; one row per point."""
    if len(a_values) == 0 or len(b_values) == 0:
        raise ConfigError("a_values and b_values: need at least one value each")
    grid = [(float(a), float(b)) for a in a_values for b in b_values]
    coeffs = torch.tensor([[1.0, a, b] for a, b in grid], dtype=torch.float64)
    losses = combination_losses(model, loss_fn, batches, [center, e1, e2], coeffs,
                                chunk_size=chunk_size, vectorize=vectorize)
    return [{"a": a, "b": b, "loss": float(v), "perplexity": perplexity(float(v))} for (a, b), v in zip(grid, losses)]


def orthogonalize(e2: Weights, e1: Weights) -> Weights:
    """e2 - (<e2, e1> / <e1, e1>) e1: the part of e2 orthogonal to e1 (Gram-Schmidt)."""
    dot = sum(float((e2[n].double() * e1[n].double()).sum()) for n in e1)
    sq = sum(float(e1[n].double().square().sum()) for n in e1)
    if sq == 0:
        raise ConfigError("e1 is zero: the pre-cooldown and final weights are equal")
    return {n: e2[n] - (dot / sq) * e1[n] for n in e2}


def cooldown_plane(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], *, pre: Weights, final: Weights,
                   point: Weights, after: Weights, a_values: Sequence[float], b_values: Sequence[float],
                   orthogonal: bool = False, chunk_size: int = 8, vectorize: bool = True) -> list[Row]:
    """2-D landscape at cooldown point x_c = `point`: e1 = final - pre, e2 = after - point (10 steps on).

    a = 1 moves by the whole pre-cooldown -> final displacement, b = 1 by the ten steps' displacement.
    `orthogonal` makes e2 orthogonal to e1 first. Rows carry a, b, loss, perplexity.
    """
    e1 = difference(final, pre)
    e2 = difference(after, point)
    if orthogonal:
        e2 = orthogonalize(e2, e1)
    return plane(model, loss_fn, batches, point, e1, e2, a_values, b_values,
                 chunk_size=chunk_size, vectorize=vectorize)
