"""Weight averaging of models, and the study's "averaging vs longer training" measurement.

The weight average of models with equal architectures is theta_avg = (1/N) sum_n theta_n, taken per
tensor of the state dict (the same helper serves the App. C bias-variance variants and perplexity).

Table `averaging` (one row per shape; Dremov et al., §5, Fig. 10):
    shape, n_models, val_loss_average_model, val_loss_longer_run, val_loss_members_mean
    The members are cooldowns of one shape from the same pre-cooldown checkpoint, each over a disjoint
    data portion ("we perform a cooldown stage four times on non-intersecting dataset portions from the
    same pre-cooldown model"). The longer run is shared by every shape: one run from that checkpoint
    over the union of the portions for N x the cooldown steps, stable LR then a sqrt decay of 20% of
    its total ("The longer run uses the *sqrt* cooldown shape for a total of 52.8k steps and a 20%
    cooldown portion"). val_loss_* are `wsdlab.train.evaluate` on the same validation batches;
    members_mean is the mean of the members' own validation losses.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from wsdlab.analysis.units import AnalysisUnit, RunSelector, UnitContext, register_unit
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.train import RunDir, evaluate

if TYPE_CHECKING:
    from wsdlab.data import DataBundle

StateDict = Mapping[str, torch.Tensor]


class StateDictAverage:
    """Running uniform weight average theta_avg = (1/N) sum_n theta_n, one state dict at a time.

    Floating tensors are summed in float64 and cast back to their dtype by `result`; non-floating
    tensors (integer buffers) must be equal across models and are copied. Keys, shapes and dtypes must
    match the first state dict; otherwise a ValueError names the offending key.
    """

    def __init__(self) -> None:
        self.count = 0
        self._meta: dict[str, tuple[torch.Size, torch.dtype]] = {}  # key -> (shape, dtype), in key order
        self._fixed: dict[str, torch.Tensor] = {}  # non-floating tensors, copied from the first state dict
        self._sums: dict[str, torch.Tensor] = {}  # floating tensors, float64 running sums

    def add(self, state: StateDict) -> None:
        if self.count == 0:
            self._meta = {k: (v.shape, v.dtype) for k, v in state.items()}
            self._fixed = {k: v.detach().clone() for k, v in state.items() if not v.is_floating_point()}
            self._sums = {k: v.detach().to(torch.float64).clone() for k, v in state.items() if v.is_floating_point()}
        else:
            self._check(state)
            for k, total in self._sums.items():
                total += state[k].detach().to(device=total.device, dtype=torch.float64)
        self.count += 1

    def _check(self, state: StateDict) -> None:
        if set(state) != set(self._meta):
            diff = sorted(set(state) ^ set(self._meta))
            raise ValueError(f"weight average: state dict {self.count} has different keys: {diff[:5]}")
        for k, (shape, dtype) in self._meta.items():
            t = state[k]
            if t.shape != shape or t.dtype != dtype:
                raise ValueError(f"weight average: '{k}' of state dict {self.count} is {tuple(t.shape)} {t.dtype}, "
                                 f"expected {tuple(shape)} {dtype}")
        for k, ref in self._fixed.items():
            if not torch.equal(state[k].to(ref.device), ref):
                raise ValueError(f"weight average: non-float tensor '{k}' differs in state dict {self.count}")

    def result(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("weight average: need at least one state dict")
        out: dict[str, torch.Tensor] = {}
        for k, (_, dtype) in self._meta.items():
            if k in self._fixed:
                out[k] = self._fixed[k].clone()
            else:
                out[k] = (self._sums[k] / self.count).to(dtype)  # theta_avg = (1/N) sum_n theta_n
        return out


def average_state_dicts(states: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Uniform weight average of state dicts (see `StateDictAverage`)."""
    acc = StateDictAverage()
    for s in states:
        acc.add(s)
    return acc.result()


def average_models(models: Sequence[nn.Module]) -> nn.Module:
    """A copy of models[0] holding the weight average of all `models` (eval mode)."""
    if not models:
        raise ValueError("average_models: need at least one model")
    avg = copy.deepcopy(models[0])
    avg.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    return avg.eval()


def averaged_model(runs: Sequence[RunDir], device: str = "cpu") -> nn.Module:
    """The weight average of the final models of `runs`, loaded one at a time (memory: about two models)."""
    if not runs:
        raise ValueError("averaged_model: need at least one run")
    acc = StateDictAverage()
    model = None
    for run in runs:
        model = run.load_model(None, device)
        acc.add(model.state_dict())
    assert model is not None
    model.load_state_dict(acc.result())
    return model.eval()


def averaging_row(shape: str, member_losses: Sequence[float], avg_loss: float, longer_loss: float) -> Row:
    """One `averaging` row from the members' losses, their average model's and the longer run's."""
    return {
        "shape": shape,
        "n_models": len(member_losses),
        "val_loss_average_model": float(avg_loss),
        "val_loss_longer_run": float(longer_loss),
        "val_loss_members_mean": float(np.mean(member_losses)),
    }


def averaging_table(
    groups: Mapping[str, tuple[Sequence[RunDir], RunDir]],
    data: DataBundle,
    *,
    num_batches: int = 8,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[Row]:
    """Per shape: validation loss of the weight average of the disjoint-portion cooldowns vs the longer run.

    `groups` maps a shape to (member runs, longer run over the union of the members' data); the study
    gives every shape the same longer run, which (like any run shared by groups) is evaluated once.
    """
    losses: dict[str, float] = {}

    def loss_of(run: RunDir) -> float:
        key = str(run.path)
        if key not in losses:
            losses[key] = evaluate(run.load_model(None, device), data, num_batches, batch_size, device)
        return losses[key]

    rows = []
    for shape, (members, longer) in groups.items():
        if not members:
            raise ConfigError(f"averaging: shape '{shape}' has no member runs")
        member_losses = [loss_of(r) for r in members]
        avg_loss = evaluate(averaged_model(members, device), data, num_batches, batch_size, device)
        rows.append(averaging_row(shape, member_losses, avg_loss, loss_of(longer)))
    return rows


@register_unit
class Averaging(AnalysisUnit):
    """Per shape: the weight average of its disjoint-portion cooldowns vs one longer run (§5, Fig. 10)."""

    name = "averaging"
    inputs = {"portions": RunSelector(stage=["portion"], group_by=["shape"]), "long": RunSelector(stage=["long"])}
    required = ("portions", "long")
    tables = ("averaging",)

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        if not ctx.selected("long"):
            raise ConfigError("averaging: the study has portion cooldowns but no longer run")
        longer = ctx.one("long")  # one longer run, compared with every shape's average (Fig. 10)
        groups = {shape: (members, longer) for shape, members in ctx.groups("portions").items()}
        return {"averaging": averaging_table(groups, ctx.data, **ctx.eval_kwargs)}
