"""Expand a study spec into its runs: stages -> planned runs, each a root RunSpec or a branch recipe.

A root run (a stage without `from:`) is a full RunSpec: the stage's preset model, its nested `spec`,
its dotted `overrides`, then its grid point. A branch run names its parent run, the checkpoint
selector (`at`) and a `BranchConfig` (the stage's `branch` and `branch.<field>` values of its point,
the other dotted values as overrides); its RunSpec exists only once that checkpoint does, so the
resolver (`resolve.py`) builds it. Every run also knows which extra checkpoints it must keep (its
stage's `keep` and the selectors of the branches started from it).

The cooldown study's shorthand is first expanded into stages (`study.cooldown.cooldown_stages`),
so there is one code path for every study.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from wsdlab.common.config import describe_validation_error
from wsdlab.common.errors import ConfigError
from wsdlab.study.cooldown import BASE_KEY, cooldown_stages, template_spec
from wsdlab.study.jobs import get_job
from wsdlab.study.spec import StudySpec
from wsdlab.study.stages import Selector, ShapeChoice, Stage, StageRun, expand_stages
from wsdlab.train.config import BranchConfig, RunSpec

__all__ = ["BASE_KEY", "Plan", "PlannedRun", "expand_plan", "study_stages"]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: a root run (`spec`) or a branch of `parent` at `at` with `branch`."""

    key: str
    stage: str
    labels: Mapping[str, Any]
    job: str = "train"
    spec: RunSpec | None = None
    parent: str | None = None
    at: Selector | None = None
    branch: BranchConfig | None = None
    keep: tuple[Selector, ...] = field(default=())  # checkpoints its branches and analyses need

    @property
    def role(self) -> str:
        """The stage name (the cooldown study's stages are the roles its analyses group by)."""
        return self.stage


@dataclass(frozen=True)
class Plan:
    """All runs of a study in dependency order (every parent before its branches)."""

    study: StudySpec
    runs: tuple[PlannedRun, ...]
    stages: Mapping[str, Stage] = field(default_factory=dict)

    def __iter__(self) -> Iterator[PlannedRun]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, key: str) -> PlannedRun:
        for run in self.runs:
            if run.key == key:
                return run
        raise KeyError(f"no run '{key}' in study '{self.study.name}'")

    def in_stage(self, *stages: str) -> list[PlannedRun]:
        return [r for r in self.runs if r.stage in stages]

    with_role = in_stage


def study_stages(study: StudySpec, num_train: int | None = None) -> dict[str, Stage]:
    """The study's stages: as written, or expanded from the cooldown study's shorthand."""
    if study.stages is not None:
        return dict(study.stages)
    return cooldown_stages(study, num_train)


def expand_plan(study: StudySpec, num_train: int | None = None) -> Plan:
    """Every run of the study, parents first. `num_train` (train sequences of the base's data) is needed
    for the cooldown shorthand's `cooldown.data: fresh`. ConfigError names the stage and field at fault."""
    stages = study_stages(study, num_train)
    for name, stage in stages.items():
        get_job(stage.job)  # an unknown job kind fails before anything runs
    stage_runs = expand_stages(stages)
    keeps: dict[str, list[Selector]] = {r.key: list(stages[r.stage].keep) for r in stage_runs}
    for r in stage_runs:
        at = branch_selector(stages[r.stage], r.values) if r.parent is not None else None
        if at is not None and not at.final and at not in keeps[r.parent]:
            keeps[r.parent].append(at)
    runs = [_planned(study, stages[r.stage], r, tuple(keeps[r.key])) for r in stage_runs]
    return Plan(study, tuple(runs), stages)


def branch_selector(stage: Stage, values: Mapping[str, Any]) -> Selector:
    """The stage's `at`, with any `at.<field>` of the point replacing it (a selector has one field)."""
    fields = {k.removeprefix("at."): v for k, v in values.items() if k.startswith("at.")}
    if not fields:
        return stage.at
    try:
        return Selector.model_validate(fields)
    except ValidationError as err:
        raise ConfigError(f"stages: checkpoint selector {fields}: {describe_validation_error(err)}") from None


def branch_config(stage_name: str, stage: Stage, values: Mapping[str, Any]) -> BranchConfig:
    """The BranchConfig of a branch point: `branch`, then `branch.<field>` values, other dotted keys
    (not `at.`/`labels.`) as overrides after the stage's `overrides`. A shape may be a name or a mapping
    {shape, param, expr}."""
    fields: dict[str, Any] = dict(stage.branch)
    overrides: dict[str, Any] = {**fields.pop("overrides", {}), **stage.overrides}
    for key, value in values.items():
        if key.startswith("branch."):
            name = key.removeprefix("branch.")
            if name == "overrides":
                overrides.update(value)
            else:
                fields[name] = value
        elif not key.startswith(("at.", "labels.")):
            overrides[key] = value
    if isinstance(fields.get("shape"), (dict, ShapeChoice)):
        fields.update(ShapeChoice.model_validate(fields.pop("shape")).branch_fields())
    try:
        return BranchConfig.model_validate({**fields, "overrides": overrides})
    except ValidationError as err:
        raise ConfigError(f"invalid branch of stage '{stage_name}':\n"
                          f"{describe_validation_error(err, f'stages.{stage_name}.branch.')}") from None


def _planned(study: StudySpec, stage: Stage, run: StageRun, keep: tuple[Selector, ...]) -> PlannedRun:
    if run.parent is None:
        extra = {k: v for k, v in run.values.items() if not k.startswith("labels.")}
        spec = template_spec(f"{study.name}-{run.key}", stage.preset, stage.spec, stage.overrides,
                             f"stages.{run.stage}", extra)
        return PlannedRun(run.key, run.stage, dict(run.labels), stage.job, spec=spec, keep=keep)
    return PlannedRun(run.key, run.stage, dict(run.labels), stage.job, parent=run.parent,
                      at=branch_selector(stage, run.values), branch=branch_config(run.stage, stage, run.values),
                      keep=keep)

