"""Cooldown branches: a new spec that starts at a step of a stable run.

`branch_spec(parent, step, branch)` is pure (a RunSpec from a RunSpec: a study plans every branch before
anything trains); `branch_from_checkpoint` reads the parent's spec and step from a checkpoint on disk.

The branch keeps the parent's model, data, optimizer and warmup; in mode `cooldown` its schedule is
WSD whose cooldown is the branch (`cooldown_steps = steps`, `train.steps = parent_step + steps`), so
the first update of the branch (step parent_step + 1) already uses the cooldown LR; in mode `mid` the
parent's schedule goes on with a mid-training decay (`schedule.mid`); in mode `restart` (fine-tuning)
a new schedule starts at the branch (`schedule.start_step` = the parent step).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wsdlab.common.config import deep_merge, describe_validation_error, set_by_dotted_key
from wsdlab.common.errors import ConfigError
from wsdlab.train.batching import global_batch_size
from wsdlab.train.checkpoint import open_checkpoint
from wsdlab.train.config import BranchConfig, RunSpec


def scaled_beta(beta: float, power: float) -> float:
    """beta -> beta**p, the paper's "beta_hat = beta^p" (Dremov et al., §6.2).

    For beta in (0, 1), beta**p > beta when p < 1: p < 1 gives a LARGER beta, i.e. a longer memory
    (the EMA half-life in steps, ln(1/2) / ln(beta), becomes 1/p times longer); p > 1 gives a smaller
    beta and a shorter memory. The paper finds larger beta2 during the cooldown helps ("larger values
    of beta2 consistently yielded [better results]"), i.e. p < 1 on beta2.
    """
    return beta**power


def half_life_steps(beta: float) -> float:
    """Steps after which an EMA with decay `beta` has halved a past contribution: ln(1/2) / ln(beta)."""
    if not 0.0 < beta < 1.0:
        raise ConfigError(f"half-life: beta must be in (0, 1), got {beta}")
    return math.log(0.5) / math.log(beta)


def branch_spec(parent: RunSpec, step: int, branch: BranchConfig) -> RunSpec:
    """The spec of a branch that starts at step `step` of the run `parent`: a pure function (no disk).

    seed: data-order seed of the branch (order.seed). beta_power p: betas -> beta**p (beta2 alone
    with beta2_only); p < 1 makes the betas larger (longer memory), p > 1 smaller (`scaled_beta`).
    batch_scale k: global batch x k and steps // k (the same number of tokens); with match_half_life
    the betas become beta**k so the EMAs keep their half-life in tokens (the paper, §6.1: "For a new
    batch size B^ = kB, the momentum is set as p^ = p^k": the half-life in steps is divided by k and
    every step reads k times more tokens). weight_decay_off: no weight decay. reset_optimizer: fresh
    AdamW moments. cooldown_steps: length of the decay at the end of the branch (None = the whole
    branch); a shorter one keeps the parent's peak LR (stable continuation) for steps - cooldown_steps
    updates first, as the longer run of the averaging study does. data: DataConfig fields replaced (nested
    sections merge), then `seed`. overrides: any other dotted key (applied last). The result records the
    config with its parent step in `RunSpec.branch`; its `init_from` is None: where the parent's checkpoint
    lies is the caller's business (`branch_from_checkpoint`, or a study's resolver).

    ConfigError names what is wrong (a step outside the parent, a bad override, an invalid result).
    """
    cfg = branch
    if not 0 <= step <= parent.train.steps:
        raise ConfigError(f"branch: step {step} is outside the parent run '{parent.name}' (steps 0..{parent.train.steps})")
    parent_step = step
    data = parent.model_dump(mode="json")
    data.pop("branch", None)
    optim, train, sched = data["optim"], data["train"], data["schedule"]
    steps = cfg.steps

    if cfg.batch_scale is not None:
        _scale_batch(train, parent, cfg.batch_scale)
        steps = int(steps // cfg.batch_scale)
        if steps < 1:
            raise ConfigError(f"batch_scale ({cfg.batch_scale:g}) leaves no steps of the {cfg.steps}-step branch")
    if cfg.beta_power is not None:
        if not cfg.beta2_only:
            optim["beta1"] = scaled_beta(optim["beta1"], cfg.beta_power)
        optim["beta2"] = scaled_beta(optim["beta2"], cfg.beta_power)
    if cfg.match_half_life:
        # token half-life matched: k-times larger batches take k-times fewer EMA steps, beta -> beta**k
        assert cfg.batch_scale is not None
        optim["beta1"] = scaled_beta(optim["beta1"], cfg.batch_scale)
        optim["beta2"] = scaled_beta(optim["beta2"], cfg.batch_scale)
    if cfg.weight_decay_off:
        optim["weight_decay"] = 0.0
    data["data"] = deep_merge(data["data"], cfg.data.model_dump(mode="json"))
    if cfg.seed is not None:  # after the data patch: a patched `order` keeps the branch's seed
        data["data"]["order"]["seed"] = cfg.seed

    if cfg.mode == "cooldown":
        sched.update(kind="wsd", cooldown_steps=steps if cfg.cooldown_steps is None else cfg.cooldown_steps,
                     shape=cfg.shape, shape_param=cfg.shape_param, shape_expr=cfg.shape_expr, mid=None)
        if cfg.alpha is not None:
            sched["alpha"] = cfg.alpha
        name = f"cd-{cfg.shape}-{steps}"
    elif cfg.mode == "restart":  # a new schedule from the branch's own start (SFT, Table 8)
        sched.clear()
        sched.update({"kind": "cosine", "warmup_steps": 0, "alpha": 0.0, **cfg.schedule.model_dump(mode="json"),
                      "start_step": parent_step})
        name = f"ft-{steps}"
    else:  # mid-training continues the parent's (finished) pre-training schedule, eq. 11
        if parent_step != parent.train.steps or parent.schedule.mid is not None:
            raise ConfigError(f"mode 'mid': branch from the final step of a pre-training run (the checkpoint is at "
                              f"step {parent_step} of {parent.train.steps})")
        sched["mid"] = {"steps": steps, "alpha_mid": cfg.alpha_mid}
        name = f"mid-{steps}"
    train["steps"] = parent_step + steps
    train["checkpoint_steps"] = [s for s in train["checkpoint_steps"] if s > parent_step]
    train["snapshot_steps"] = [s for s in train["snapshot_steps"] if s >= parent_step]
    data["init_from"] = None
    data["name"] = f"{parent.name}-{name}"
    data["branch"] = cfg.model_copy(update={"parent_step": parent_step}).model_dump(mode="json")
    for key, value in cfg.overrides.items():
        set_by_dotted_key(data, key, value)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid branch spec:\n{describe_validation_error(err)}") from None


def branch_from_checkpoint(checkpoint: str | Path, config: BranchConfig | None = None, /, **fields: Any) -> RunSpec:
    """`branch_spec` of the run stored in `checkpoint` at its step, with `init_from` = that checkpoint
    (`wsdlab cooldown --from`): `config`, or BranchConfig(**fields) (`steps=`, `shape=`, ...).

    The checkpoint is verified first (CheckpointError names the damaged or missing file); bad
    arguments are a ConfigError naming the argument.
    """
    if config is None:
        try:
            config = BranchConfig(**fields)
        except ValidationError as err:
            raise ConfigError(f"invalid branch: {describe_validation_error(err)}") from None
    elif fields:
        raise TypeError("branch_from_checkpoint: give a BranchConfig or its fields, not both")
    ckpt = open_checkpoint(checkpoint)
    spec = branch_spec(ckpt.spec, ckpt.step, config)
    return spec.model_copy(update={"init_from": str(Path(checkpoint).resolve())})


def _scale_batch(train: dict[str, Any], parent: RunSpec, k: float) -> None:
    """Multiply the global batch (batch_tokens when set, else batch_size) by k; it must stay whole."""
    key = "batch_tokens" if parent.train.batch_tokens is not None else "batch_size"
    scaled = train[key] * k
    if abs(scaled - round(scaled)) > 1e-9 or round(scaled) < 1:
        raise ConfigError(f"batch_scale: {key} {train[key]} x {k} is not a whole number")
    train[key] = int(round(scaled))
    if key == "batch_tokens":
        tokens_per_item = 1 if parent.data.is_vision else parent.data.seq_len
        global_batch_size(parent.train.model_copy(update={"batch_tokens": train[key]}), tokens_per_item)
