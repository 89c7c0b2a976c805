"""Stable ratio rho (WSO paper, Table 6) and schedules that start at their own step (SFT stages)."""

from __future__ import annotations

import math

import pytest

from wsdlab.common.errors import ConfigError
from wsdlab.schedules import ScheduleConfig, build_schedule, cooldown_steps
from wsdlab.train.config import RunSpec


def test_table6_rho_075_keeps_75_percent_of_post_warmup_steps_stable():
    # Table 6: 80,000 steps, warmup 1,000, rho = 0.75 -> stable until 1,000 + 0.75 * 79,000 = 60,250;
    # decay over the final 25%: 19,750 steps, linearly to alpha_pre (eq. 7).
    cfg = ScheduleConfig(kind="wsd", warmup_steps=1000, stable_ratio=0.75, shape="linear", alpha=0.1)
    assert cooldown_steps(cfg, 80_000) == 19_750
    f = build_schedule(cfg, 80_000)
    assert f(1000) == 1.0 and f(60_250) == 1.0
    assert f(60_251) < 1.0
    # eq. 7 by hand: (1 - a) (T_pre - t) / (T_pre - T_stable) + a
    t = 70_000
    assert math.isclose(f(t), 0.9 * (80_000 - t) / 19_750 + 0.1)
    assert math.isclose(f(80_000), 0.1)


def test_stable_ratio_overrides_fraction_but_not_cooldown_steps():
    cfg = ScheduleConfig(kind="wsd", warmup_steps=10, stable_ratio=0.5, cooldown_fraction=0.2)
    assert cooldown_steps(cfg, 110) == 50
    cfg = ScheduleConfig(kind="wsd", warmup_steps=10, stable_ratio=0.5, cooldown_steps=7)
    assert cooldown_steps(cfg, 110) == 7
    # rho = 1: no decay (WSO); rho = 0: decay right after warmup
    assert cooldown_steps(ScheduleConfig(kind="wsd", warmup_steps=10, stable_ratio=1.0), 110) == 0
    assert cooldown_steps(ScheduleConfig(kind="wsd", warmup_steps=10, stable_ratio=0.0), 110) == 100


def test_stable_ratio_with_mid_training_uses_t_pre():
    cfg = ScheduleConfig(kind="wsd", warmup_steps=4, stable_ratio=0.75, shape="linear", mid={"steps": 20})
    assert cooldown_steps(cfg, 120) == 24  # 0.25 * (100 - 4)


def test_stable_ratio_range_is_validated():
    with pytest.raises(ValueError):
        ScheduleConfig(stable_ratio=1.5)


def test_start_step_restarts_warmup_and_cosine_at_the_stage_start():
    # Table 8: cosine with 100 warmup steps, minimum LR 0, relative to the stage's own start
    cfg = ScheduleConfig(kind="cosine", warmup_steps=100, alpha=0.0, start_step=1000)
    f = build_schedule(cfg, 1400)
    assert f(1000) == 0.0
    assert math.isclose(f(1050), 0.5)
    assert f(1100) == 1.0
    assert math.isclose(f(1250), 0.5 * (1 + math.cos(math.pi * 150 / 300)))
    assert math.isclose(f(1400), 0.0, abs_tol=1e-12)


def test_start_step_must_leave_steps():
    with pytest.raises(ConfigError):
        build_schedule(ScheduleConfig(kind="cosine", start_step=10), 10)
    with pytest.raises(ValueError, match="start_step"):
        RunSpec(schedule={"kind": "cosine", "start_step": 10}, train={"steps": 10})
    RunSpec(schedule={"kind": "cosine", "warmup_steps": 5, "start_step": 10}, train={"steps": 16})
