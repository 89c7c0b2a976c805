"""Compute estimates of `wsdlab study plan`: tokens, FLOPs and GPU-hours checked by hand."""

from __future__ import annotations

import pytest

from wsdlab.common.errors import ConfigError
from wsdlab.models import flops_per_token, model_config
from wsdlab.study.compute import gpu_hours, run_cost
from wsdlab.train.config import RunSpec


def test_run_cost_counts_only_the_runs_own_steps():
    spec = RunSpec.model_validate({"model": model_config("tiny").model_dump(), "data": {"seq_len": 64},
                                   "train": {"steps": 100, "batch_size": 8}})
    cost = run_cost(spec, start_step=60)
    assert cost.steps == 40 and cost.tokens == 40 * 8 * 64
    assert cost.flops == pytest.approx(40 * 8 * 64 * flops_per_token(spec.model))


def test_gpu_hours_by_hand_and_errors():
    # 989e12 FLOP/s x 0.5 MFU for one hour = 1.7802e18 FLOPs
    assert gpu_hours(989e12 * 0.5 * 3600, "h100", 0.5) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        gpu_hours(1.0, "tpu", 0.4)
    with pytest.raises(ConfigError, match="--mfu"):
        gpu_hours(1.0, "h100", 0.0)
