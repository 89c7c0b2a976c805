"""Expand a study spec into its runs, every one with its full RunSpec, before anything trains.

A root run (a stage without `from:`) is the stage's preset model, its nested `spec`, its dotted
`overrides`, then its grid point. A branch run names its parent run, the step its checkpoint selector
(`at`) picks in the parent's spec, and a `BranchConfig` (the stage's `branch` and `branch.<field>` values
of its point, the other dotted values as overrides); its RunSpec is `branch_spec(parent spec, step,
branch)`, a pure function, so the plan holds every spec with no checkpoint on disk. Every run also keeps
the extra checkpoints its stage's `keep` and the branches started from it need. What the plan cannot
know is where runs live: the resolver (`resolve.py`) maps each spec to its folder.

The cooldown study's shorthand is first expanded into stages (`study.cooldown.cooldown_stages`),
so there is one code path for every study.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from wsdlab.common.config import describe_validation_error
from wsdlab.common.errors import ConfigError, WsdlabError
from wsdlab.study.cooldown import BASE_KEY, cooldown_stages, template_spec
from wsdlab.study.jobs import get_job
from wsdlab.study.spec import StudySpec
from wsdlab.study.stages import (
    CheckpointSelector,
    RunPoint,
    ShapeChoice,
    Stage,
    StageRun,
    check_stage_graph,
    expand_stages,
    selector_step,
)
from wsdlab.train.branch import branch_spec
from wsdlab.train.config import BranchConfig, RunSpec

__all__ = ["BASE_KEY", "MAX_RUNS", "Plan", "PlannedRun", "expand_plan", "study_stages"]

MAX_RUNS = 100_000  # a study that expands to more runs is refused (with its count) before expanding


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study and its full spec: a root run, or a branch of `parent` at `step` (picked by `at`)."""

    key: str
    stage: str
    labels: Mapping[str, Any]
    spec: RunSpec
    job: str = "train"
    parent: str | None = None
    at: CheckpointSelector | None = None
    step: int | None = None  # the parent's step the branch starts from (`at` applied to the parent's spec)
    branch: BranchConfig | None = None
    keep: tuple[CheckpointSelector, ...] = field(default=())  # checkpoints its branches and analyses need

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
    """Every run of the study with its RunSpec, parents first; nothing is read or written. `num_train`
    (train sequences of the base's data) is needed for the cooldown shorthand's `cooldown.data: fresh`.
    ConfigError names the stage, run and field at fault: everything that can be checked is checked here."""
    stages = study_stages(study, num_train)
    for name, stage in stages.items():
        get_job(stage.job)  # an unknown job kind fails before anything runs
    count = count_runs(stages)
    if count > MAX_RUNS:
        raise ConfigError(f"study '{study.name}' expands to {count:,} runs (at most {MAX_RUNS:,}): "
                          "shrink its grids")
    stage_runs = expand_stages(stages)
    selectors = {r.key: branch_selector(stages[r.stage], r.point) for r in stage_runs if r.parent is not None}
    # each run's extra checkpoints, with the run that needs each (its own stage's keep, or a branch from it)
    keeps: dict[str, list[tuple[CheckpointSelector, str]]] = {
        r.key: [(sel, r.key) for sel in stages[r.stage].keep] for r in stage_runs}
    for r in stage_runs:
        at = selectors.get(r.key)
        if at is not None and not at.final and all(at != sel for sel, _ in keeps[r.parent]):
            keeps[r.parent].append((at, r.key))
    runs: dict[str, PlannedRun] = {}
    for r in stage_runs:
        try:
            runs[r.key] = _planned(study, stages[r.stage], r, keeps[r.key], runs, selectors.get(r.key))
        except _NeededBy as err:  # a branch's selector picks a step outside its parent: blame the branch
            raise ConfigError(f"run '{err.key}' of study '{study.name}': {err.error}") from None
        except (WsdlabError, ValueError) as err:
            raise ConfigError(f"run '{r.key}' of study '{study.name}': {err}") from None
    plan = Plan(study, tuple(runs.values()), stages)
    check_plan(plan)
    return plan


class _NeededBy(Exception):
    """A checkpoint selector failed on the run it applies to; `key` is the run that asked for it."""

    def __init__(self, key: str, error: ConfigError) -> None:
        super().__init__(key, error)
        self.key, self.error = key, error


def count_runs(stages: Mapping[str, Stage]) -> int:
    """How many runs the stages expand to at most (each stage's points x its parent stage's runs), computed
    without expanding anything, so a grid of a billion points is refused in microseconds."""
    order = check_stage_graph(stages)
    counts: dict[str, int] = {}
    for name in order:
        stage = stages[name]
        counts[name] = stage.num_points() * (counts[stage.from_] if stage.from_ is not None else 1)
    return sum(counts.values())


def check_plan(plan: Plan) -> None:
    """The checks that need every spec or stage: a job's own requirements (e.g. an SFT run is a branch with
    SFT data), and every stage an analysis input names exists."""
    for run in plan:
        get_job(run.job).check(run.spec, run.parent is not None, f"stages.{run.stage}")
    analyses = plan.study.analyses
    for unit in analyses.enabled():
        for name, selector in analyses.settings(unit).inputs.items():
            unknown = [s for s in selector.stage if s not in plan.stages]
            if unknown:
                raise ConfigError(f"analyses.{unit}.inputs.{name}.stage: no stage {', '.join(map(repr, unknown))} "
                                  f"in study '{plan.study.name}' (stages: {', '.join(plan.stages)})")


def branch_selector(stage: Stage, point: RunPoint) -> CheckpointSelector:
    """The stage's `at`, or the point's own selector fields replacing it (a selector has one field)."""
    if not point.at:
        return stage.at
    try:
        return CheckpointSelector.model_validate(point.at)
    except ValidationError as err:
        raise ConfigError(f"stages: checkpoint selector {point.at}: {describe_validation_error(err)}") from None


def branch_config(stage_name: str, stage: Stage, point: RunPoint) -> BranchConfig:
    """The BranchConfig of a branch point: the stage's `branch`, then the point's branch fields; overrides:
    the stage's branch overrides, its `overrides`, then the point's (branch overrides, RunSpec keys). A
    shape may be a name or a mapping {shape, param, expr}."""
    fields: dict[str, Any] = {**stage.branch, **{k: v for k, v in point.branch.items() if k != "overrides"}}
    overrides: dict[str, Any] = {**stage.branch.get("overrides", {}), **stage.overrides,
                                 **point.branch.get("overrides", {}), **point.overrides}
    if isinstance(fields.get("shape"), (dict, ShapeChoice)):
        fields.update(ShapeChoice.model_validate(fields.pop("shape")).branch_fields())
    try:
        return BranchConfig.model_validate({**fields, "overrides": overrides})
    except ValidationError as err:
        raise ConfigError(f"invalid branch of stage '{stage_name}':\n"
                          f"{describe_validation_error(err, f'stages.{stage_name}.branch.')}") from None


def with_kept_checkpoints(spec: RunSpec, keep: Sequence[tuple[CheckpointSelector, str]]) -> RunSpec:
    """`spec` with `train.checkpoint_steps` holding every step the selectors in `keep` pick (each with the
    run that needs it, named when its selector picks a step outside `spec`)."""
    steps: set[int] = set()
    for sel, needed_by in keep:
        try:
            steps.add(selector_step(sel, spec))
        except ConfigError as err:
            raise _NeededBy(needed_by, err) from None
    steps -= {spec.train.steps}
    start = spec.branch.parent_step if spec.branch is not None and spec.branch.parent_step else 0
    extra = sorted(s for s in steps if s > start and s not in spec.train.checkpoint_steps)
    if not extra:
        return spec
    train = spec.train.model_copy(update={"checkpoint_steps": sorted({*spec.train.checkpoint_steps, *extra})})
    return spec.model_copy(update={"train": train})


def _planned(study: StudySpec, stage: Stage, run: StageRun, needs: list[tuple[CheckpointSelector, str]],
             planned: Mapping[str, PlannedRun], at: CheckpointSelector | None) -> PlannedRun:
    keep = tuple(sel for sel, _ in needs)
    if run.parent is None:
        extra = run.point.overrides
        spec = template_spec(f"{study.name}-{run.key}", stage.preset, stage.spec, stage.overrides,
                             f"stages.{run.stage}", extra)
        return PlannedRun(run.key, run.stage, dict(run.labels), with_kept_checkpoints(spec, needs), stage.job, keep=keep)
    assert at is not None
    parent = planned[run.parent].spec
    step = selector_step(at, parent)
    branch = branch_config(run.stage, stage, run.point)
    spec = with_kept_checkpoints(branch_spec(parent, step, branch), needs)
    return PlannedRun(run.key, run.stage, dict(run.labels), spec, stage.job, parent=run.parent, at=at, step=step,
                      branch=branch, keep=keep)
