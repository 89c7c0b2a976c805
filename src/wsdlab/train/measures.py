"""Per-step optimizer measurements (norms, gradient/momentum and update/gradient alignment).

All work on lists of tensors with torch._foreach ops (one kernel per list, no per-element Python).
Under FSDP2 the tensors are DTensor shards: pass `reduce` to sum the partial scalars across ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Tensors = Sequence[torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]


def _local(ts: Tensors) -> list[torch.Tensor]:
    """Plain detached tensors (the local shard of a DTensor)."""
    return [(t.to_local() if hasattr(t, "to_local") else t).detach() for t in ts]


def no_reduce(x: torch.Tensor) -> torch.Tensor:
    """Single process (or replicated tensors): nothing to sum across ranks."""
    return x


def tensor_dots(a: Tensors, b: Tensors) -> torch.Tensor:
    """(J,) float64: <a_j, b_j> = sum(a_j * b_j) of each paired tensor (local shards, not yet reduced).

    Every measure below is built from these per-tensor sums, so a step that needs several measures of
    the same lists computes each sum once (`cosine_of`, `mean_cosine_of`, `norm_of`).
    """
    a, b = _local(a), _local(b)
    if not a:
        return torch.zeros(0, dtype=torch.float64)
    prods = torch._foreach_mul([x.float() for x in a], [y.float() for y in b])
    return torch.stack([p.sum(dtype=torch.float64) for p in prods])


def total(sums: torch.Tensor, reduce: Reduce = no_reduce) -> float:
    """sum_j of per-tensor sums, added across ranks."""
    return float(reduce(sums.sum())) if sums.numel() else 0.0


def norm_of(squares: torch.Tensor, reduce: Reduce = no_reduce) -> float:
    """||concat(ts)||_2 from the per-tensor squared norms `tensor_dots(ts, ts)`."""
    return math.sqrt(total(squares, reduce))


def cosine_of(ab: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor, reduce: Reduce = no_reduce) -> float | None:
    """cos(a, b) of the concatenated lists from per-tensor sums <a_j,b_j>, ||a_j||^2, ||b_j||^2; None if a or b is 0."""
    na, nb = norm_of(aa, reduce), norm_of(bb, reduce)
    if na == 0.0 or nb == 0.0:
        return None
    return total(ab, reduce) / (na * nb)


def mean_cosine_of(ab: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor, reduce: Reduce = no_reduce) -> float | None:
    """(1/J) sum_j cos(a_j, b_j) from per-tensor sums (see `mean_tensor_cosine`)."""
    if not ab.numel():
        return None
    dots, na2, nb2 = reduce(torch.stack([ab, aa, bb])).cpu().unbind(0)
    ok = (na2 > 0) & (nb2 > 0)
    if not bool(ok.any()):
        return None
    return float((dots[ok] / (na2[ok].sqrt() * nb2[ok].sqrt())).mean())


def sum_of_squares(ts: Tensors, reduce: Reduce = no_reduce) -> float:
    """sum_i ||t_i||^2 over the list (float64 accumulation, as `dot`)."""
    return dot(ts, ts, reduce)


def dot(a: Tensors, b: Tensors, reduce: Reduce = no_reduce) -> float:
    """<a, b> = sum_i sum(a_i * b_i) over paired lists."""
    return total(tensor_dots(a, b), reduce)


def global_norm(ts: Tensors, reduce: Reduce = no_reduce) -> float:
    """||concat(ts)||_2."""
    return norm_of(tensor_dots(ts, ts), reduce)


def cosine(a: Tensors, b: Tensors, reduce: Reduce = no_reduce) -> float | None:
    """cos(a, b) = <a, b> / (||a|| ||b||) of the concatenated lists; None if either is zero."""
    return cosine_of(tensor_dots(a, b), tensor_dots(a, a), tensor_dots(b, b), reduce)


def mean_tensor_cosine(a: Tensors, b: Tensors, reduce: Reduce = no_reduce) -> float | None:
    """(1/J) sum_j cos(a_j, b_j): the cosine of each paired tensor, averaged over the J tensors where it is defined.

    Dremov et al. App. G: "the cosine angle between the optimizer's state and the corresponding gradient
    ... for each parameter individually", plotted as the "average cosine similarity" (Fig. 26a). Per-tensor
    dot products and squared norms are summed across ranks (one `reduce` of a (3, J) tensor) before
    dividing, so FSDP shards give the cosine of the whole tensor. Tensors where either norm is zero have
    no direction and are left out; None when no tensor has a cosine.
    """
    return mean_cosine_of(tensor_dots(a, b), tensor_dots(a, a), tensor_dots(b, b), reduce)


def difference(a: Tensors, b: Tensors) -> list[torch.Tensor]:
    """a - b elementwise over paired lists (e.g. the applied update x_t - x_{t-1})."""
    return list(torch._foreach_sub(_local(a), _local(b)))


def copy_of(ts: Tensors) -> list[torch.Tensor]:
    """Detached copies (x_{t-1} kept to measure the update)."""
    return [t.detach().clone() for t in _local(ts)]
