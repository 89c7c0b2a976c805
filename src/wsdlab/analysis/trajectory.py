"""The optimizer's path: PCA of iterate sets, stable/decay directions, weak quasi-convexity, norms.

Iterate sets of a WSD run with decay start x^ (step t_d), stable phase from the end of warmup:
- S: stable-phase iterates (steps in [stable start, t_d]);  D: decay iterates (steps in [t_d, end]);
- S': the last 20% (by steps) of the stable phase;  D': the first 20% of the decay.
For each set the share of variance explained by its first principal component is reported; the
PC1 of S' and of D' are the stable and decay directions v_s, v_d, and ||H(x^) v|| compares the
curvature along them at the decay start.

Along regularly sampled iterates x_0, ..., x_K (x* = x_K, the final iterate) the path rows give the
weak quasi-convexity ratio tau_i = -grad L(x_i) . (x* - x_i) / (L(x_i) - L(x*)) and the alignment
cos(-grad L(x_i), x_{i+1} - x_i) of the gradient with the next sampled displacement, or, given the
iterate one optimizer step after each x_i (`next_iterates`; paper 001, Fig. 4: "s_cos,i =
cos_similarity(-grad L(x_i), x_{i+1} - x_i)" with x_{i+1} the optimizer's next iterate), with the
update of that one step.

Table columns (one table, `kind` tells the row type):
- kind="pca":   set (S, D, S', D'), num_iterates, first_step, last_step, pc1_share, pc2_share
- kind="hv":    direction (v_s, v_d), step (the decay start), hv_norm, cos_vs_vd
- kind="path":  step, phase (stable/decay/warmup), loss, grad_norm, param_norm, distance_to_final,
                tau, cos_grad_update
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wsdlab.analysis.evalset import Batch, LossFn, loss_and_gradient
from wsdlab.analysis.hessian import HessianOperator, flatten, hvp_norms
from wsdlab.analysis.memo import MEMO, batches_digest, function_key, model_digest
from wsdlab.analysis.weights import (
    Weights,
    flatten_weights,
    load_weights,
    parameter_names,
)
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row

# ---------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class PCAResult:
    """Explained-variance shares (descending) and the unit first principal direction (n,)."""

    shares: list[float]
    pc1: Tensor
    num_iterates: int


def pca(iterates: Tensor) -> PCAResult:
    """PCA of the rows of `iterates` (m, n) after centering.

    Few iterates of many parameters (n > m) go through the m x m Gram matrix Xc Xc^T (its
    eigenvalues are the squared singular values); otherwise through torch.linalg.svd. PC1 is
    signed to point from the first iterate towards the last.
    """
    if iterates.dim() != 2 or iterates.shape[0] < 2:
        raise ValueError(f"iterates must be (m >= 2, n), got shape {tuple(iterates.shape)}")
    x = iterates.double()
    xc = x - x.mean(dim=0, keepdim=True)
    m, n = xc.shape
    if n > m:
        gram = xc @ xc.T  # (m, m)
        evals, evecs = torch.linalg.eigh(gram)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        pc1 = xc.T @ evecs[:, 0]
    else:
        _, s, vh = torch.linalg.svd(xc, full_matrices=False)
        evals, pc1 = s.square(), vh[0]
    total = float(evals.sum())
    if total == 0:
        raise ValueError("iterates are all equal: no variance to explain")
    # explained-variance ratio: sigma_i^2 / sum_j sigma_j^2
    shares = (evals / total).tolist()
    pc1 = pc1 / pc1.norm()
    if float(torch.dot(pc1, x[-1] - x[0])) < 0:
        pc1 = -pc1
    return PCAResult(shares, pc1, m)


def phase_sets(steps: Sequence[int], decay_start: int, end: int, stable_start: int = 0,
               fraction: float = 0.2) -> dict[str, list[int]]:
    """Steps of S, D, S' (last `fraction` of the stable phase) and D' (first `fraction` of the decay).

    The decay start belongs to both S and D (it ends one phase and starts the other).
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if not stable_start <= decay_start <= end:
        raise ConfigError(f"need stable_start <= decay_start <= end, got {stable_start}, {decay_start}, {end}")
    s_cut = decay_start - fraction * (decay_start - stable_start)
    d_cut = decay_start + fraction * (end - decay_start)
    steps = sorted(set(int(s) for s in steps))
    return {
        "S": [s for s in steps if stable_start <= s <= decay_start],
        "D": [s for s in steps if decay_start <= s <= end],
        "S'": [s for s in steps if s_cut <= s <= decay_start],
        "D'": [s for s in steps if decay_start <= s <= d_cut],
    }


# ---------------------------------------------------------------------------- path measures


def quasi_convexity_ratio(grad: Tensor, x: Tensor, x_star: Tensor, loss: float, loss_star: float) -> float:
    """tau = -grad . (x* - x) / (L(x) - L(x*)); nan when L(x) = L(x*)."""
    gap = loss - loss_star
    if gap == 0:
        return float("nan")
    # weak quasi-convexity: <grad L(x), x - x*> >= tau (L(x) - L(x*))
    return -float(torch.dot(grad.double(), (x_star - x).double())) / gap


def cosine(a: Tensor, b: Tensor) -> float:
    """cos(a, b); nan when either is zero."""
    na, nb = float(a.double().norm()), float(b.double().norm())
    if na == 0 or nb == 0:
        return float("nan")
    return float(torch.dot(a.double(), b.double())) / (na * nb)


def update_cosine(grad: Tensor, x: Tensor, x_next: Tensor) -> float:
    """cos(-grad L(x_i), x_{i+1} - x_i): is the step taken a descent direction?"""
    return cosine(-grad, x_next - x)


def path_rows(steps: Sequence[int], points: Sequence[Tensor], losses: Sequence[float],
              grads: Sequence[Tensor], phases: Sequence[str] | None = None,
              next_points: Sequence[Tensor | None] | None = None) -> list[Row]:
    """One row per iterate (flattened weights `points`, their losses and gradients); x* = the last point.

    x_{i+1} is `next_points[i]` when given (the iterate one optimizer step later; None = not on disk,
    cos is then nan), else the next sampled point. tau and cos_grad_update are nan for the last point
    (L(x) = L(x*); no next sampled point).
    """
    k = len(points)
    if not (len(steps) == len(losses) == len(grads) == k) or k == 0:
        raise ValueError("steps, points, losses and grads must be non-empty and of equal length")
    x_star, loss_star = points[-1], losses[-1]
    rows = []
    for i in range(k):
        last = i == k - 1
        rows.append({
            "kind": "path",
            "step": int(steps[i]),
            "phase": phases[i] if phases is not None else "",
            "loss": float(losses[i]),
            "grad_norm": float(grads[i].double().norm()),
            "param_norm": float(points[i].double().norm()),
            "distance_to_final": float((points[i] - x_star).double().norm()),
            "tau": float("nan") if last else quasi_convexity_ratio(grads[i], points[i], x_star, losses[i], loss_star),
            "cos_grad_update": _next_cosine(grads[i], points, i, next_points),
        })
    return rows


def _next_cosine(grad: Tensor, points: Sequence[Tensor], i: int,
                 next_points: Sequence[Tensor | None] | None) -> float:
    if next_points is not None:
        nxt = next_points[i]
        return float("nan") if nxt is None or i == len(points) - 1 else update_cosine(grad, points[i], nxt)
    return float("nan") if i == len(points) - 1 else update_cosine(grad, points[i], points[i + 1])


def one_step_pairs(steps: Sequence[int]) -> tuple[list[int], dict[int, int]]:
    """Split weight steps into sampled iterates and their one-step partners: ascending, a step s + 1
    right after a sampled step s is s's partner (x_{i+1}), not a sample. -> (samples, {s: s + 1})."""
    samples: list[int] = []
    partner: dict[int, int] = {}
    for s in sorted(set(steps)):
        if samples and samples[-1] == s - 1 and (s - 1) not in partner:
            partner[s - 1] = s
        else:
            samples.append(s)
    return samples, partner


def pca_rows(sets: dict[str, list[int]], flat: dict[int, Tensor]) -> tuple[list[Row], dict[str, Tensor]]:
    """PCA rows for each set with at least 2 iterates, and the PC1 direction of each such set."""
    rows, directions = [], {}
    for name, steps in sets.items():
        if len(steps) < 2:
            rows.append({"kind": "pca", "set": name, "num_iterates": len(steps), "first_step": steps[0] if steps else None,
                         "last_step": steps[-1] if steps else None, "pc1_share": math.nan, "pc2_share": math.nan})
            continue
        res = pca(torch.stack([flat[s] for s in steps]))
        directions[name] = res.pc1
        rows.append({"kind": "pca", "set": name, "num_iterates": res.num_iterates, "first_step": steps[0],
                     "last_step": steps[-1], "pc1_share": res.shares[0],
                     "pc2_share": res.shares[1] if len(res.shares) > 1 else 0.0})
    return rows, directions


def phase_of(step: int, stable_start: int, decay_start: int) -> str:
    """warmup (< stable_start), stable ([stable_start, decay_start)) or decay (>= decay_start)."""
    if step < stable_start:
        return "warmup"
    return "stable" if step < decay_start else "decay"


# ---------------------------------------------------------------------------- the whole analysis


def _loss_and_flat_gradient(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], fn_key: str | None,
                            data_key: str) -> tuple[float, Tensor]:
    """Mean loss and flattened gradient at the model's weights, once per process for the same weights and
    batches (`analysis.memo`): the cooldowns of one base share its stable-phase iterates."""
    def compute() -> tuple[float, Tensor]:
        loss, grad = loss_and_gradient(model, loss_fn, batches)
        return loss, flatten(grad)

    size = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    if fn_key is None or size > MEMO.max_bytes:  # a gradient too large to keep is not worth hashing the weights for
        return compute()
    return MEMO.get_or_compute(("loss_and_gradient", model_digest(model), data_key, fn_key), compute)


def trajectory_table(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], iterates: Mapping[int, Weights], *,
                     decay_start: int, stable_start: int = 0, end: int | None = None, fraction: float = 0.2,
                     hessian: bool = True, probe_chunk: int = 16,
                     next_iterates: Mapping[int, Weights] | None = None) -> list[Row]:
    """PCA, ||H v|| and path rows for the iterates {step: weights} of one run (see the module docstring).

    `next_iterates` {step s: weights at s + 1}: cos(-grad, update) over that one optimizer step
    (iterates without one get nan); None: towards the next sampled iterate.

    `end` defaults to the last step; the hv rows need the iterate at `decay_start` and PC1 of both
    S' and D' (skipped with `hessian=False` or when either set has fewer than 2 iterates).
    """
    if not iterates:
        raise ValueError("iterates: need at least one weight set")
    steps = sorted(iterates)
    end = steps[-1] if end is None else end
    names = parameter_names(model)
    flat = {s: flatten_weights(iterates[s], names).detach() for s in steps}
    sets = phase_sets(steps, decay_start, end, stable_start, fraction)
    rows, directions = pca_rows(sets, flat)
    work = copy.deepcopy(model).eval()
    if hessian and "S'" in directions and "D'" in directions:
        if decay_start not in iterates:
            raise ConfigError(f"iterates: no weights at the decay start step {decay_start} (have {steps[:3]}...{steps[-3:]})")
        load_weights(work, iterates[decay_start])
        op = HessianOperator(work, loss_fn, batches, probe_chunk=probe_chunk)
        vs, vd = directions["S'"], directions["D'"]
        norms = hvp_norms(op, [vs, vd])
        cos = cosine(vs, vd)
        for name, value in zip(("v_s", "v_d"), norms):
            rows.append({"kind": "hv", "direction": name, "step": decay_start, "hv_norm": value, "cos_vs_vd": cos})
        del op
    losses, grads = [], []
    fn_key, data_key = function_key(loss_fn), batches_digest(batches)
    for s in steps:
        load_weights(work, iterates[s])
        loss, grad = _loss_and_flat_gradient(work, loss_fn, batches, fn_key, data_key)
        losses.append(loss)
        grads.append(grad)
    phases = [phase_of(s, stable_start, decay_start) for s in steps]
    nxt = None
    if next_iterates is not None:
        nxt = [flatten_weights(next_iterates[s], names).detach() if s in next_iterates else None for s in steps]
    rows += path_rows(steps, [flat[s] for s in steps], losses, grads, phases, next_points=nxt)
    return rows
