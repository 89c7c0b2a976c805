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


def sum_of_squares(ts: Tensors, reduce: Reduce = no_reduce) -> float:
    """sum_i ||t_i||^2 over the list (float64 accumulation, as `dot`)."""
    return dot(ts, ts, reduce)


def dot(a: Tensors, b: Tensors, reduce: Reduce = no_reduce) -> float:
    """<a, b> = sum_i sum(a_i * b_i) over paired lists."""
    a, b = _local(a), _local(b)
    if not a:
        return 0.0
    prods = torch._foreach_mul([x.float() for x in a], [y.float() for y in b])
    return float(reduce(torch.stack([p.sum(dtype=torch.float64) for p in prods]).sum()))


def global_norm(ts: Tensors, reduce: Reduce = no_reduce) -> float:
    """||concat(ts)||_2."""
    return math.sqrt(sum_of_squares(ts, reduce))


def cosine(a: Tensors, b: Tensors, reduce: Reduce = no_reduce) -> float | None:
    """cos(a, b) = <a, b> / (||a|| ||b||) of the concatenated lists; None if either is zero."""
    na, nb = global_norm(a, reduce), global_norm(b, reduce)
    if na == 0.0 or nb == 0.0:
        return None
    return dot(a, b, reduce) / (na * nb)


def mean_tensor_cosine(a: Tensors, b: Tensors, reduce: Reduce = no_reduce) -> float | None:
    """(1/J) sum_j cos(a_j, b_j): the cosine of each paired tensor, averaged over the J tensors where it is defined.

    Dremov et al. App. G: "the cosine angle between the optimizer's state and the corresponding gradient
    ... for each parameter individually", plotted as the "average cosine similarity" (Fig. 26a). Per-tensor
    dot products and squared norms are summed across ranks (one `reduce` of a (3, J) tensor) before
    dividing, so FSDP shards give the cosine of the whole tensor. Tensors where either norm is zero have
    no direction and are left out; None when no tensor has a cosine.
    """
    a, b = _local(a), _local(b)
    if not a:
        return None
    prods = torch._foreach_mul([x.float() for x in a], [y.float() for y in b])
    sq_a = torch._foreach_mul([x.float() for x in a], [x.float() for x in a])
    sq_b = torch._foreach_mul([y.float() for y in b], [y.float() for y in b])
    sums = torch.stack([torch.stack([t.sum(dtype=torch.float64) for t in ts]) for ts in (prods, sq_a, sq_b)])
    dots, na2, nb2 = reduce(sums).cpu().unbind(0)
    ok = (na2 > 0) & (nb2 > 0)
    if not bool(ok.any()):
        return None
    return float((dots[ok] / (na2[ok].sqrt() * nb2[ok].sqrt())).mean())


def difference(a: Tensors, b: Tensors) -> list[torch.Tensor]:
    """a - b elementwise over paired lists (e.g. the applied update x_t - x_{t-1})."""
    return list(torch._foreach_sub(_local(a), _local(b)))


def copy_of(ts: Tensors) -> list[torch.Tensor]:
    """Detached copies (x_{t-1} kept to measure the update)."""
    return [t.detach().clone() for t in _local(ts)]
