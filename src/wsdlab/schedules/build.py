"""ScheduleConfig (names + numbers) -> Schedule, for a run of `total_steps` = train.steps."""

from __future__ import annotations

import operator

from wsdlab.common.errors import ConfigError
from wsdlab.schedules.config import ScheduleConfig
from wsdlab.schedules.core import (
    Schedule,
    warmup_cosine,
    warmup_linear_decay,
    warmup_stable,
    warmup_stable_decay,
    with_mid_training,
)
from wsdlab.schedules.shapes import get_shape


def own_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """The schedule's own length: `total_steps - start_step` (ConfigError when nothing is left)."""
    if cfg.start_step == 0:
        return total_steps
    if isinstance(total_steps, int) and not isinstance(total_steps, bool) and total_steps <= cfg.start_step:
        raise ConfigError(f"total_steps ({total_steps}) must exceed schedule.start_step ({cfg.start_step})")
    return total_steps - cfg.start_step


def stable_ratio_cooldown(rho: float, total: int, warmup: int) -> int:
    """WSD cooldown length from the stable ratio rho (WSO paper, Table 6: "the LR remains stable for 75% of
    training after warmup, with decay occurring in the final 25%"): round((1 - rho) * (T_pre - T_warmup))."""
    return round((1.0 - rho) * (total - warmup))


def pretrain_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """T_pre: the steps before the mid-training stage (all of them without one), counted from start_step."""
    if isinstance(total_steps, bool):
        raise ConfigError(f"total_steps must be a positive integer, got {total_steps!r}")
    try:
        total_steps = operator.index(total_steps)
    except TypeError:
        raise ConfigError(f"total_steps must be a positive integer, got {total_steps!r}") from None
    if total_steps < 1:
        raise ConfigError(f"total_steps must be a positive integer, got {total_steps}")
    total_steps = own_steps(cfg, total_steps)
    if cfg.mid is None:
        return total_steps
    if cfg.mid.steps >= total_steps:
        raise ConfigError(f"mid.steps ({cfg.mid.steps}) must be < total_steps ({total_steps})")
    return total_steps - cfg.mid.steps


def cooldown_steps(cfg: ScheduleConfig, total_steps: int) -> int:
    """T - T_c: how many steps at the end of pre-training decay.

    wsd: `cooldown_steps` when set, else round((1 - rho) * (T_pre - warmup)) with the stable ratio rho when
    set, else round(F * T_pre) (Python's round, as RunSpec validates);
    cosine / linear: T_pre - warmup_steps (they decay right after warmup); wso: 0.
    Raises ValueError when warmup and cooldown do not fit in T_pre.
    """
    total = pretrain_steps(cfg, total_steps)
    if cfg.kind == "wsd":
        if cfg.cooldown_steps is not None:
            cool, field = cfg.cooldown_steps, "cooldown_steps"
        elif cfg.stable_ratio is not None:
            cool = stable_ratio_cooldown(cfg.stable_ratio, total, cfg.warmup_steps)
            field = f"round((1 - stable_ratio) * ({total} - warmup_steps))"
        else:
            cool, field = round(cfg.cooldown_fraction * total), f"round(cooldown_fraction * {total})"
        if cfg.warmup_steps + cool > total:
            raise ConfigError(
                f"warmup_steps ({cfg.warmup_steps}) + {field} ({cool}) exceed the {_total_name(cfg)} ({total})"
            )
        return cool
    if cfg.warmup_steps > total:
        raise ConfigError(f"warmup_steps ({cfg.warmup_steps}) exceed the {_total_name(cfg)} ({total})")
    return 0 if cfg.kind == "wso" else total - cfg.warmup_steps


def _total_name(cfg: ScheduleConfig) -> str:
    return "total_steps - mid.steps" if cfg.mid is not None else "total_steps"


def build_schedule(cfg: ScheduleConfig, total_steps: int) -> Schedule:
    """The schedule of a run whose train.steps is `total_steps` (a mid-training stage included)."""
    total = pretrain_steps(cfg, total_steps)
    cool = cooldown_steps(cfg, total_steps)
    shape = get_shape(cfg.shape, cfg.shape_param, cfg.shape_expr)  # validated for every kind: a typo is an error
    if cfg.kind == "wsd":
        schedule = warmup_stable_decay(total, cfg.warmup_steps, cool, shape, cfg.alpha)
    elif cfg.kind == "wso":
        schedule = warmup_stable(cfg.warmup_steps)
    elif cfg.kind == "cosine":
        schedule = warmup_cosine(total, cfg.warmup_steps, cfg.alpha)
    elif cfg.kind == "linear":
        schedule = warmup_linear_decay(total, cfg.warmup_steps, cfg.alpha)
    else:  # unreachable: pydantic checks the Literal
        raise ConfigError(f"kind: unknown schedule kind '{cfg.kind}'")
    if cfg.mid is not None:
        schedule = with_mid_training(schedule, total, cfg.mid.steps, cfg.mid.alpha_mid)
    if cfg.start_step:
        schedule = shifted(schedule, cfg.start_step)
    return schedule


def shifted(schedule: Schedule, start: int) -> Schedule:
    """`schedule` seen from step `start`: t -> schedule(t - start) (a stage with its own warmup)."""

    def own(step: int) -> float:
        return schedule(max(step - start, 0))

    return own


def schedule_values(cfg: ScheduleConfig, total_steps: int) -> list[float]:
    """Factors at steps 0..total_steps (what `wsdlab schedule values` prints)."""
    schedule = build_schedule(cfg, total_steps)
    return [schedule(t) for t in range(total_steps + 1)]
