"""Cooldown branches: branch_from_checkpoint's overrides, and what a branch run starts from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsdlab.common.errors import CheckpointError
from wsdlab.data import SequenceOrder, load_data
from wsdlab.schedules import build_schedule
from wsdlab.train import RunSpec, branch_from_checkpoint, run_preset, train
from wsdlab.train.branch import half_life_steps, scaled_beta


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory):
    """A micro stable run of 10 steps with checkpoints at 0, 5, 10."""
    data = run_preset("micro").model_dump()
    data["train"].update(steps=10, checkpoint_every=5, eval_every=5, snapshot_every=None, progress=False)
    data["optim"].update(weight_decay=0.1)
    return train(RunSpec.model_validate(data), tmp_path_factory.mktemp("parent"))


@pytest.fixture(scope="module")
def num_train(parent) -> int:
    return load_data(parent.spec.data, progress=False).num_train


def test_branch_spec_sets_the_cooldown(parent) -> None:
    spec = branch_from_checkpoint(parent.checkpoint(10), steps=6, shape="cosine", alpha=0.1)
    assert spec.train.steps == 16 and spec.schedule.kind == "wsd" and spec.schedule.cooldown_steps == 6
    assert spec.schedule.warmup_steps == parent.spec.schedule.warmup_steps and spec.schedule.alpha == 0.1
    assert spec.init_from == str(parent.checkpoint(10).resolve())
    assert spec.branch is not None and spec.branch.parent_step == 10 and not spec.branch.reset_optimizer
    assert spec.model == parent.spec.model and spec.optim == parent.spec.optim and spec.data == parent.spec.data


def test_branch_spec_overrides(parent) -> None:
    b1, b2 = parent.spec.optim.beta1, parent.spec.optim.beta2
    spec = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="linear", seed=7, beta_power=2.0,
                       weight_decay_off=True, reset_optimizer=True, overrides={"optim.eps": "1e-6", "name": "x"})
    assert (spec.optim.beta1, spec.optim.beta2) == (b1**2, b2**2)
    assert spec.optim.weight_decay == 0.0 and spec.optim.eps == 1e-6 and spec.name == "x"
    assert spec.data.order.seed == 7 and spec.branch.reset_optimizer and spec.train.steps == 13
    only2 = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="linear", beta_power=0.5, beta2_only=True)
    assert (only2.optim.beta1, only2.optim.beta2) == (b1, b2**0.5)
    scaled = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", batch_scale=2)
    assert scaled.train.batch_size == 2 * parent.spec.train.batch_size and scaled.train.steps == 5 + 4
    assert (scaled.optim.beta1, scaled.optim.beta2) == (b1, b2)
    matched = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", batch_scale=2, match_half_life=True)
    assert (matched.optim.beta1, matched.optim.beta2) == (b1**2, b2**2)  # token half-life kept
    with pytest.raises(ValueError, match="batch_scale"):
        branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", batch_scale=0.3)
    with pytest.raises(CheckpointError, match="checkpoints/7: directory not found"):
        branch_from_checkpoint(parent.path / "checkpoints" / "7", steps=8, shape="sqrt")


def test_beta_power_below_one_is_a_larger_beta_with_a_longer_half_life(parent) -> None:
    """The paper's beta_hat = beta^p with base betas 0.9 / 0.95: p < 1 gives a LARGER beta (longer memory),
    p > 1 a smaller one; the half-life in steps, ln(1/2) / ln(beta), is 1/p times the base one."""
    b1, b2 = parent.spec.optim.beta1, parent.spec.optim.beta2
    assert (b1, b2) == (0.9, 0.95)  # the paper's AdamW betas (App. A)
    half = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", beta_power=0.5, beta2_only=True)
    one = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", beta_power=1.0, beta2_only=True)
    two = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", beta_power=2.0, beta2_only=True)
    assert half.optim.beta2 > one.optim.beta2 == b2 > two.optim.beta2
    assert half.optim.beta2 == pytest.approx(0.95**0.5) and two.optim.beta2 == pytest.approx(0.9025)
    assert half_life_steps(half.optim.beta2) == pytest.approx(2 * half_life_steps(b2))
    assert half_life_steps(two.optim.beta2) == pytest.approx(half_life_steps(b2) / 2)
    assert scaled_beta(0.9, 0.3) > 0.9 and "LARGER beta" in (scaled_beta.__doc__ or "")


def test_matched_half_life_keeps_the_half_life_in_tokens(parent) -> None:
    """§6.1: "For a new batch size B^ = kB, the momentum is set as p^ = p^k": k times more tokens per step and
    a k times shorter half-life in steps leave the half-life in tokens unchanged."""
    k = 2
    matched = branch_from_checkpoint(parent.checkpoint(5), steps=8, shape="sqrt", batch_scale=k, match_half_life=True)
    per_step, per_step_k = parent.spec.train.batch_size, matched.train.batch_size
    assert per_step_k == k * per_step
    for base, new in ((parent.spec.optim.beta1, matched.optim.beta1), (parent.spec.optim.beta2, matched.optim.beta2)):
        assert half_life_steps(new) * per_step_k == pytest.approx(half_life_steps(base) * per_step)


def test_cooldown_steps_keeps_the_peak_lr_first(parent) -> None:
    from wsdlab.common.errors import ConfigError

    spec = branch_from_checkpoint(parent.checkpoint(10), steps=10, shape="sqrt", cooldown_steps=4)
    assert spec.train.steps == 20 and spec.schedule.cooldown_steps == 4
    f = build_schedule(spec.schedule, spec.train.steps)
    assert [f(t) for t in range(11, 17)] == [1.0] * 6 and f(17) < 1.0 and f(20) == pytest.approx(spec.schedule.alpha)
    with pytest.raises(ConfigError, match="cooldown_steps"):
        branch_from_checkpoint(parent.checkpoint(10), steps=10, shape="sqrt", cooldown_steps=11)


def test_a_branch_starts_with_the_cooldown_lr_and_continues_the_data(parent, num_train: int, tmp_path: Path) -> None:
    spec = branch_from_checkpoint(parent.checkpoint(5), steps=4, shape="linear")
    run = train(spec, tmp_path)
    rows = run.metrics()
    assert [r["step"] for r in rows] == [6, 7, 8, 9]
    schedule = build_schedule(spec.schedule, spec.train.steps)
    assert [r["lr"] for r in rows] == [spec.optim.lr * schedule(t) for t in range(6, 10)]
    assert rows[0]["lr"] == pytest.approx(spec.optim.lr * (1 - 1 / 4))  # linear: 1 - (t - k) / N
    assert rows[-1]["lr"] == 0.0
    assert rows[0]["grad_momentum_cos"] is not None  # the parent's moments were loaded
    assert rows[0]["tokens"] == parent.metrics()[5]["tokens"]  # tokens count the parent's too
    order = SequenceOrder(spec.data.order, num_train)
    assert np.array_equal(run.batch_indices(), order.indices(5 * 8, 4 * 8).reshape(4, 8))
    assert np.array_equal(run.batch_indices(), parent.batch_indices()[5:9])  # same stream as the parent
    assert run.eval_rows()[0]["step"] == 5 and run.checkpoint_steps() == [9]
    state = json.loads((run.checkpoint(9) / "state.json").read_text())
    assert state["data_cursor"] == 9 * 8 and state["start_step"] == 5


def test_a_branch_applies_its_new_hyperparameters(parent, num_train: int, tmp_path: Path) -> None:
    spec = branch_from_checkpoint(parent.checkpoint(10), steps=3, shape="sqrt", seed=3, beta_power=2.0, weight_decay_off=True,
                       reset_optimizer=True, batch_scale=2)
    run = train(spec, tmp_path)
    rows = run.metrics()
    assert rows[0]["grad_momentum_cos"] is None  # fresh moments
    groups = json.loads((run.checkpoint(11) / "state.json").read_text())["optimizer"]
    assert all(g["betas"] == [spec.optim.beta1, spec.optim.beta2] and g["weight_decay"] == 0.0 for g in groups)
    # a new order starts at its cursor 0; the batch is twice the parent's
    assert np.array_equal(run.batch_indices(), SequenceOrder(spec.data.order, num_train).indices(0, 16).reshape(1, 16))
    assert rows[0]["tokens"] - parent.metrics()[-1]["tokens"] == 16 * parent.spec.data.seq_len


def test_a_branch_from_another_model_names_the_fields(parent, tmp_path: Path) -> None:
    spec = branch_from_checkpoint(parent.checkpoint(5), steps=3, shape="sqrt", overrides={"model.d_model": 16})
    with pytest.raises(ValueError, match="model.d_model"):
        train(spec, tmp_path / "b")
    assert not (tmp_path / "b").exists()
