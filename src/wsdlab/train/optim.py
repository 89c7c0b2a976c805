"""AdamW construction, the schedule bound once as a LambdaLR, and the optimizer state under fixed keys.

Only the step is ever checkpointed for the schedule (torchtitan style): a cooldown branch is a
step-k checkpoint plus a new pure schedule, with no scheduler state to reconcile.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from wsdlab.common.errors import CheckpointError
from wsdlab.schedules import Schedule
from wsdlab.train.config import OptimConfig

DECAY, NO_DECAY = "decay", "no_decay"
STATE_KEYS = ("step", "exp_avg", "exp_avg_sq")


def split_decay_params(model: nn.Module, decay_norms_and_biases: bool = False) -> dict[str, list[str]]:
    """Names of parameters with and without weight decay.

    Matrices (ndim >= 2) decay; 1-D parameters (norm gains, biases) and embedding tables do not,
    unless `decay_norms_and_biases` (then every parameter decays). Tied weights appear once.
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    groups: dict[str, list[str]] = {DECAY: [], NO_DECAY: []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or id(p) in embedding_ids
        groups[NO_DECAY if no_decay and not decay_norms_and_biases else DECAY].append(name)
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay over two param groups (decay, no_decay), fused on CUDA.

    Each group carries its parameter names under "names" so the state can be stored by name.
    """
    params = dict(model.named_parameters())
    groups = []
    for kind, names in split_decay_params(model, cfg.decay_norms_and_biases).items():
        if names:
            groups.append({"params": [params[n] for n in names], "names": names, "kind": kind})
    if not groups:
        raise ValueError("model has no trainable parameters")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay, fused=device.type == "cuda" or None)
    set_hyperparams(opt, cfg)
    return opt


def set_hyperparams(opt: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """Write the spec's hyper-parameters into every group (a branch changes betas, wd, lr)."""
    for group in opt.param_groups:
        group["lr"] = cfg.lr
        group["initial_lr"] = cfg.lr
        group["betas"] = (cfg.beta1, cfg.beta2)
        group["eps"] = cfg.eps
        group["weight_decay"] = cfg.weight_decay if group.get("kind", DECAY) == DECAY else 0.0


def bind_schedule(opt: torch.optim.Optimizer, schedule: Schedule, step: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over the pure schedule, positioned so the next update (producing step+1) uses lr*f(step+1).

    Step convention: the update that moves weights from step t-1 to t uses `lr * f(t)`.
    """
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: schedule(step + 1 + i))


def hyperparams(opt: torch.optim.Optimizer) -> list[dict]:
    """JSON-able hyper-parameters of each group (the checkpoint's state.json)."""
    keys = ("kind", "lr", "initial_lr", "betas", "eps", "weight_decay")
    return [{k: (list(g[k]) if k == "betas" else g[k]) for k in keys if k in g} for g in opt.param_groups]


def state_items(opt: torch.optim.Optimizer) -> Iterator[tuple[str, torch.Tensor]]:
    """(`<param name>/<step|exp_avg|exp_avg_sq>`, tensor as held) of every parameter with AdamW state, the
    scalar step as a tensor; parameters without state (no step taken yet) are left out."""
    for group in opt.param_groups:
        for name, p in zip(group["names"], group["params"]):
            state = opt.state.get(p)
            if not state:
                continue
            for key in STATE_KEYS:
                t = state[key]
                yield f"{name}/{key}", t if isinstance(t, torch.Tensor) else torch.tensor(float(t))


def optimizer_tensors(opt: torch.optim.Optimizer, names: dict[int, str] | None = None) -> dict[str, torch.Tensor]:
    """AdamW state as `{"<param name>/<step|exp_avg|exp_avg_sq>": tensor}` (contiguous CPU copies)."""
    return {key: _full(t).detach().to("cpu", copy=True).contiguous() for key, t in state_items(opt)}


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           where: object = "optimizer state") -> None:
    """Put state saved by `optimizer_tensors` back, matching parameters by name.

    Parameters without saved state start fresh. CheckpointError naming `where` (the optimizer file)
    when saved names have no parameter, a parameter's state is incomplete, or a moment's shape differs
    from its parameter's (a manifest rewritten to match bad content passes the checksums).
    """
    known = {n for g in opt.param_groups for n in g["names"]}
    unknown = sorted({k.rsplit("/", 1)[0] for k in tensors} - known)
    if unknown:
        raise CheckpointError(f"checkpoint {where}: optimizer state names parameters the model does not have: "
                              f"{', '.join(unknown[:5])}")
    for group in opt.param_groups:
        for name, p in zip(group["names"], group["params"]):
            if f"{name}/exp_avg" not in tensors:
                continue
            missing = [f"{name}/{key}" for key in STATE_KEYS if f"{name}/{key}" not in tensors]
            if missing:
                raise CheckpointError(f"checkpoint {where}: missing optimizer tensors {', '.join(missing)}")
            for key in STATE_KEYS:
                t, want = tensors[f"{name}/{key}"], (() if key == "step" else tuple(p.shape))
                if tuple(t.shape) != want and not (key == "step" and t.numel() == 1):
                    raise CheckpointError(f"checkpoint {where}: optimizer tensor '{name}/{key}' has shape "
                                          f"{list(t.shape)}, the model's parameter needs {list(want)}")
            state = {}
            for key in STATE_KEYS:
                t = tensors[f"{name}/{key}"]
                if key == "step":
                    # fused/capturable AdamW keeps the step on the param's device; the default keeps it on CPU
                    state[key] = t.to(p.device if group.get("fused") else "cpu", torch.float32).clone()
                else:
                    state[key] = _like(t, p)
            opt.state[p] = state


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2 shard) gathered to a full tensor; other tensors unchanged."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`t` placed like parameter `p` (a DTensor shard of it under FSDP2)."""
    if hasattr(p, "device_mesh") and hasattr(p, "placements"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(t.to(p.dtype), p.device_mesh, p.placements)
    if t.shape != p.shape:
        raise ValueError(f"optimizer state shape {tuple(t.shape)} does not match parameter {tuple(p.shape)}")
    return t.to(device=p.device, dtype=p.dtype).clone()
