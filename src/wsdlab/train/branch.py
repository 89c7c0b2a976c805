"""Cooldown branches: a new spec that starts at a checkpoint of a stable run.

The branch keeps the parent's model, data, optimizer and warmup; its schedule is WSD whose
cooldown is exactly the branch (`cooldown_steps = steps`, `train.steps = parent_step + steps`), so
the first update of the branch (step parent_step + 1) already uses the cooldown LR.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wsdlab.common.config import describe_validation_error, set_by_dotted_key
from wsdlab.common.errors import ConfigError
from wsdlab.train.batching import global_batch_size
from wsdlab.train.checkpoint import open_checkpoint
from wsdlab.train.config import RunSpec


def scaled_beta(beta: float, power: float) -> float:
    """beta -> beta**p: a p-times longer (p < 1: shorter) EMA horizon in steps."""
    return beta**power


def branch_spec(checkpoint: str | Path, *, steps: int, shape: str, shape_param: float | None = None,
                alpha: float | None = None, seed: int | None = None, beta_power: float | None = None,
                beta2_only: bool = False, batch_scale: float | None = None, match_half_life: bool = False,
                weight_decay_off: bool = False, reset_optimizer: bool = False,
                overrides: Mapping[str, object] | None = None) -> RunSpec:
    """The spec of a cooldown of `steps` updates of shape `shape` from `checkpoint`.

    seed: data-order seed of the branch (order.seed). beta_power p: betas -> beta**p (beta2 alone
    with beta2_only). batch_scale k: global batch x k and steps // k (the same number of tokens);
    with match_half_life the betas become beta**k so the EMAs keep their half-life in tokens.
    weight_decay_off: no weight decay. reset_optimizer: fresh AdamW moments. overrides: any other
    dotted key (applied last).
    """
    if steps <= 0:
        raise ConfigError(f"steps: must be > 0, got {steps}")
    if match_half_life and batch_scale is None:
        raise ConfigError("match_half_life needs batch_scale")
    ckpt = open_checkpoint(checkpoint)
    parent, parent_step = ckpt.spec, ckpt.step
    data = parent.model_dump(mode="json")
    data.pop("branch", None)
    optim, train, sched = data["optim"], data["train"], data["schedule"]

    if batch_scale is not None:
        if batch_scale <= 0:
            raise ConfigError(f"batch_scale: must be > 0, got {batch_scale}")
        _scale_batch(train, parent, batch_scale)
        steps = int(steps // batch_scale)
        if steps < 1:
            raise ConfigError(f"batch_scale ({batch_scale}) leaves no steps of the branch")
    if beta_power is not None:
        if beta_power <= 0:
            raise ConfigError(f"beta_power: must be > 0, got {beta_power}")
        if not beta2_only:
            optim["beta1"] = scaled_beta(optim["beta1"], beta_power)
        optim["beta2"] = scaled_beta(optim["beta2"], beta_power)
    if match_half_life:
        # token half-life matched: k-times larger batches take k-times fewer EMA steps, beta -> beta**k
        optim["beta1"] = scaled_beta(optim["beta1"], batch_scale)
        optim["beta2"] = scaled_beta(optim["beta2"], batch_scale)
    if weight_decay_off:
        optim["weight_decay"] = 0.0
    if seed is not None:
        data["data"]["order"]["seed"] = seed

    sched.update(kind="wsd", cooldown_steps=steps, shape=shape, shape_param=shape_param, mid=None)
    if shape != "expr":
        sched["shape_expr"] = None
    if alpha is not None:
        sched["alpha"] = alpha
    train["steps"] = parent_step + steps
    train["checkpoint_steps"] = [s for s in train["checkpoint_steps"] if s > parent_step]
    train["snapshot_steps"] = [s for s in train["snapshot_steps"] if s >= parent_step]
    data["init_from"] = str(Path(checkpoint).resolve())
    data["name"] = f"{parent.name}-cd-{shape}-{steps}"
    data["branch"] = {"reset_optimizer": reset_optimizer, "beta_power": beta_power, "beta2_only": beta2_only,
                      "batch_scale": batch_scale, "match_half_life": match_half_life, "parent_step": parent_step}
    for key, value in (overrides or {}).items():
        set_by_dotted_key(data, key, value)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid branch spec:\n{describe_validation_error(err)}") from None


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
