"""Weight sets: {parameter name: tensor} dicts for interpolation, landscapes and trajectories.

Names are those of `model.named_parameters()` (tied weights once), so a weight set can be passed to
`torch.func.functional_call` and flattened in one fixed order. State dicts of checkpoints and
snapshots are reduced to these names (buffers and the second name of a tied weight dropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

Weights = dict[str, Tensor]


def parameter_names(model: nn.Module) -> list[str]:
    """Names of the model's parameters in a fixed order (tied weights once)."""
    return [name for name, _ in model.named_parameters()]


def trainable_weights(model: nn.Module) -> Weights:
    """The model's parameters as a weight set, each tensor once, detached but not copied.

    `named_parameters()` yields a shared (tied) tensor under its first name only and no buffers, so
    flattened this is the vector of the p trainable parameters that eq. 3 (Dremov et al.) compares.
    """
    return {name: p.detach() for name, p in model.named_parameters()}


def model_weights(model: nn.Module) -> Weights:
    """Detached copies of the model's parameters."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def select_parameters(model: nn.Module, state: Mapping[str, Tensor], where: str = "weights") -> Weights:
    """The parameters of `model` taken from a state dict (checkpoint or snapshot), on the model's device/dtype.

    ValueError naming `where` when a parameter is missing or has another shape.
    """
    out: Weights = {}
    for name, p in model.named_parameters():
        if name not in state:
            raise ValueError(f"{where}: parameter '{name}' is missing")
        t = state[name]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{where}: parameter '{name}' has shape {tuple(t.shape)}, model has {tuple(p.shape)}")
        out[name] = t.detach().to(p.device, p.dtype)
    return out


@torch.no_grad()
def load_weights(model: nn.Module, weights: Mapping[str, Tensor]) -> nn.Module:
    """Copy a weight set into the model's parameters in place (returns the model)."""
    for name, p in model.named_parameters():
        if name not in weights:
            raise ValueError(f"weights: parameter '{name}' is missing")
        p.copy_(weights[name])
    return model


def flatten_weights(weights: Mapping[str, Tensor], names: Sequence[str] | None = None,
                    dtype: torch.dtype | None = None) -> Tensor:
    """One vector (n,) of the weights in `names` order (default: the dict's order)."""
    names = list(weights) if names is None else list(names)
    return torch.cat([weights[n].reshape(-1).to(dtype or weights[n].dtype) for n in names])


def unflatten_weights(vec: Tensor, like: Mapping[str, Tensor]) -> Weights:
    """A weight set shaped like `like` from a vector (n,) in `like`'s order."""
    out: Weights = {}
    start = 0
    for name, t in like.items():
        out[name] = vec[start:start + t.numel()].reshape(t.shape).to(t.dtype)
        start += t.numel()
    if start != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, the weights have {start}")
    return out


def difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Weights:
    """a - b per parameter."""
    if a.keys() != b.keys():
        raise ValueError("weights: the two weight sets name different parameters")
    return {n: a[n] - b[n] for n in a}


def combination(weight_sets: Sequence[Mapping[str, Tensor]], coeffs: Sequence[float]) -> Weights:
    """sum_i c_i W_i per parameter."""
    if len(weight_sets) != len(coeffs) or not weight_sets:
        raise ValueError(f"need one coefficient per weight set, got {len(coeffs)} for {len(weight_sets)}")
    return {n: sum(c * w[n] for c, w in zip(coeffs, weight_sets)) for n in weight_sets[0]}  # type: ignore[misc]


def weights_norm(weights: Mapping[str, Tensor]) -> float:
    """||W||_2 over all parameters (float64 accumulation)."""
    return float(torch.sqrt(sum((t.double().square().sum() for t in weights.values()), torch.zeros((), dtype=torch.float64))))
