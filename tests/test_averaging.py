"""Weight averaging of state dicts and models, and the `averaging` row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wsdlab.analysis.averaging import StateDictAverage, average_models, average_state_dicts, averaging_row


def _states(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(4, 3, generator=g), "h": torch.randn(5, generator=g).half(),
             "count": torch.tensor([7, 8])} for _ in range(n)]


def test_average_is_exact_mean() -> None:
    states = _states(3)
    avg = average_state_dicts(states)
    for key in ("w", "h"):
        expected = np.mean([s[key].double().numpy() for s in states], axis=0)
        # float64 accumulation, one rounding to the stored dtype: equal to the correctly rounded mean
        assert torch.equal(avg[key], torch.from_numpy(expected).to(states[0][key].dtype))
        assert avg[key].dtype == states[0][key].dtype
    assert torch.equal(avg["count"], torch.tensor([7, 8]))


def test_average_of_two_is_bitwise_midpoint() -> None:
    a, b = _states(2, seed=3)
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], (a["w"].double() + b["w"].double()).div(2).float())
    assert torch.equal(average_state_dicts([a])["w"], a["w"])  # the average of one model is itself


def test_streaming_accumulator_equals_list_version() -> None:
    states = _states(4, seed=9)
    acc = StateDictAverage()
    for s in states:
        acc.add(s)
    assert acc.count == 4
    assert all(torch.equal(acc.result()[k], average_state_dicts(states)[k]) for k in states[0])


def test_mismatches_are_rejected() -> None:
    a, b = _states(2)
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([a, {"w": b["w"]}])
    with pytest.raises(ValueError, match="'w'"):
        average_state_dicts([a, {**b, "w": torch.zeros(2, 2)}])
    with pytest.raises(ValueError, match="'count' differs"):
        average_state_dicts([a, {**b, "count": torch.tensor([1, 2])}])
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])


def test_average_models_loads_the_mean_into_a_copy() -> None:
    torch.manual_seed(0)
    models = [nn.Linear(3, 2) for _ in range(3)]
    avg = average_models(models)
    assert avg is not models[0] and not avg.training
    assert torch.allclose(avg.weight, torch.stack([m.weight for m in models]).mean(0))
    x = torch.randn(5, 3)
    # a linear model is affine in its weights: the average model's output is the mean output
    assert torch.allclose(avg(x), torch.stack([m(x) for m in models]).mean(0), atol=1e-6)


def test_averaging_row() -> None:
    row = averaging_row("sqrt", [3.0, 3.2, 3.4], 3.1, 3.05)
    assert row == {"shape": "sqrt", "n_models": 3, "val_loss_average_model": 3.1, "val_loss_longer_run": 3.05,
                   "val_loss_members_mean": pytest.approx(3.2)}
