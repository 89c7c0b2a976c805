"""Stages: a study as a small graph of named groups of runs (DESIGN.md, "Studies are graphs of stages").

A stage is a run template (preset + nested spec + dotted overrides) with an optional grid over dotted
keys. A root stage trains from scratch; a stage with `from: <parent>` branches each of its runs from a
checkpoint of the matching parent run(s), chosen by a selector (`at:`), with branch settings
(`branch:`, the fields of `wsdlab.train.BranchConfig`). A grid key is a dotted path into one of three
places, told apart by its first segment:

    branch.<field>   a BranchConfig field of a branch stage      (branch.shape: [linear, cosine])
    at.<field>       the checkpoint selector of a branch stage   (at.step: [900, 800])
    anything else    a RunSpec field                             (train.seed: [0, 1, 2])

`grid` axes multiply (cartesian product, in the order written); `zip` axes move together (equal
lengths) and multiply with the grid as one axis. Each grid point of a child stage branches from the
parent runs it `match`es: `same` (default) = every parent run whose labels agree with the point on the
label names they share (so a child with a `train.seed` axis branches seed s from the parent of seed s,
and a child without one branches from every parent run); `all` = every parent run, whatever its labels.

This module is pure: it validates stage specs and expands them into `StageRun`s (stage, key, labels,
the dotted values of its grid point, parent key). Turning them into RunSpecs is `study.plan`'s job.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from wsdlab.common.config import StrictModel, describe_validation_error
from wsdlab.common.errors import ConfigError
from wsdlab.study.resources import Resources

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
GridValue = Any


class ShapeChoice(StrictModel):
    """A cooldown shape: a name from wsdlab.schedules (with its parameter), or `expr` with an expression.

    In YAML a bare name is accepted: `- linear` means `- {shape: linear}`.
    """

    shape: str
    param: float | None = Field(None, description="Shape parameter (p of lowered_linear).")
    expr: str | None = Field(None, description="Expression of x, for shape 'expr'.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"shape": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check_known(self) -> "ShapeChoice":
        from wsdlab.schedules import get_shape  # leaf module; imported lazily to keep spec loading light

        get_shape(self.shape, self.param, self.expr)  # raises ValueError naming the shape
        return self

    @property
    def label(self) -> str:
        """Readable and unique within a study: `linear`, `lowered_linear-0.7`, `expr-1-x**2`."""
        if self.expr is not None:
            return f"{self.shape}-{self.expr}"
        return self.shape if self.param is None else f"{self.shape}-{self.param:g}"

    def branch_fields(self) -> dict[str, Any]:
        """The BranchConfig fields of this shape."""
        return {"shape": self.shape, "shape_param": self.param, "shape_expr": self.expr}


class CheckpointSelector(StrictModel):
    """Which checkpoint of a parent run a branch starts at; exactly one field is set.

    In YAML: `at: final`, `at: {step: 400}`, `at: {fraction_of_stable: 0.8}`, `at: {steps_before_end: 50}`.
    """

    final: bool = False
    step: int | None = Field(None, ge=0, description="An absolute step of the parent run.")
    fraction_of_stable: float | None = Field(
        None, gt=0.0, le=1.0,
        description="f of the parent's stable phase [warmup, T_c]: step warmup + round(f * (T_c - warmup)).")
    steps_before_end: int | None = Field(None, ge=0, description="The parent's last step minus N.")

    @model_validator(mode="before")
    @classmethod
    def _from_scalar(cls, data: Any) -> Any:
        if data == "final":
            return {"final": True}
        if isinstance(data, int) and not isinstance(data, bool):
            return {"step": data}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "CheckpointSelector":
        chosen = [n for n in ("step", "fraction_of_stable", "steps_before_end") if getattr(self, n) is not None]
        if self.final:
            chosen.append("final")
        if len(chosen) != 1:
            raise ValueError(f"a checkpoint selector needs exactly one of final, step, fraction_of_stable, "
                             f"steps_before_end; got {chosen or 'none'}")
        return self

    def describe(self) -> str:
        if self.final:
            return "final"
        name = next(n for n in ("step", "fraction_of_stable", "steps_before_end") if getattr(self, n) is not None)
        return f"{name}={getattr(self, name):g}"


def stable_end(schedule: Any, total_steps: int) -> int:
    """T_c, the last step of the stable phase: T - cooldown for wsd (before any mid-training), T for wso.

    cosine and linear decay right after warmup: they have no stable phase to take a fraction of.
    """
    from wsdlab.schedules.build import cooldown_steps, pretrain_steps

    if schedule.kind not in ("wsd", "wso"):
        raise ConfigError(f"fraction_of_stable: a '{schedule.kind}' schedule has no stable phase (use step or final)")
    return pretrain_steps(schedule, total_steps) - cooldown_steps(schedule, total_steps)


def selector_step(selector: CheckpointSelector, spec: Any) -> int:
    """The absolute step of the parent run (a RunSpec) that `selector` picks; ConfigError if out of range."""
    total = spec.train.steps
    start = spec.branch.parent_step if getattr(spec, "branch", None) is not None else 0
    start = start or 0
    if selector.final:
        step = total
    elif selector.step is not None:
        step = selector.step
    elif selector.steps_before_end is not None:
        step = total - selector.steps_before_end
    else:
        assert selector.fraction_of_stable is not None
        warmup, t_c = spec.schedule.warmup_steps, stable_end(spec.schedule, total)
        step = warmup + round(selector.fraction_of_stable * (t_c - warmup))
    if not start <= step <= total:
        raise ConfigError(f"checkpoint selector {selector.describe()} picks step {step}, outside the parent run "
                          f"'{spec.name}' (steps {start}..{total})")
    return step


class RunPoint(StrictModel):
    """One point of a stage, typed: parsed once from a grid/zip point or an explicit `runs` entry (YAML's
    dotted keys), or built directly (the cooldown shorthand). No `branch.`/`at.`/`labels.` key survives it.

    labels: every label the point sets, in the order written (`labels.<name>` entries, and grid/zip axes by
    the last segment of their key, a shape by its label); label_only: those from `labels.<name>`, which
    stay out of generated run keys. branch: BranchConfig fields (`overrides` merges); at: checkpoint
    selector fields; overrides: dotted RunSpec keys.
    """

    key: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    label_only: frozenset[str] = frozenset()
    branch: dict[str, Any] = Field(default_factory=dict)
    at: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, entries: Mapping[str, Any], axes: Collection[str] = ()) -> "RunPoint":
        """The typed point of YAML entries (dotted key -> value) whose keys were checked (`check_point_key`:
        explicit runs in `Stage._parse_runs`, grid/zip axes in `Stage._check_keys`, once each); `axes` are
        the entries that are grid/zip axes (they label the run)."""
        out: dict[str, Any] = {"labels": {}, "branch": {}, "at": {}, "overrides": {}}
        label_only = []
        for key, value in entries.items():
            head, _, rest = key.partition(".")
            if key == "key":
                out["key"] = str(value)
            elif head == "labels":
                out["labels"][rest] = value
                label_only.append(rest)
            elif head == "branch":
                if rest == "overrides":
                    out["branch"]["overrides"] = {**out["branch"].get("overrides", {}), **value}
                else:
                    out["branch"][rest] = value
            elif head == "at":
                out["at"][rest] = value
            else:
                out["overrides"][key] = value
            if key in axes:
                name = label_name(key)
                out["labels"][name] = ShapeChoice.model_validate(value).label if name == "shape" else value
        return cls(**out, label_only=frozenset(label_only))

    @model_serializer
    def _dotted(self) -> dict[str, Any]:
        """Dumped in the YAML's dotted form (STUDY/study.yaml), which `parse` reads back to this point."""
        out: dict[str, Any] = {"key": self.key} if self.key is not None else {}
        out.update({f"labels.{k}": v for k, v in self.labels.items() if k in self.label_only})
        out.update({f"branch.{k}": v for k, v in self.branch.items()})
        out.update({f"at.{k}": v for k, v in self.at.items()})
        out.update(self.overrides)
        return out

    def merged(self, other: "RunPoint") -> "RunPoint":
        """This point with `other`'s entries over it (a grid point times an explicit run)."""
        branch = {**self.branch, **other.branch}
        if "overrides" in self.branch and "overrides" in other.branch:
            branch["overrides"] = {**self.branch["overrides"], **other.branch["overrides"]}
        return RunPoint(key=other.key if other.key is not None else self.key, labels={**self.labels, **other.labels},
                        label_only=self.label_only | other.label_only, branch=branch, at={**self.at, **other.at},
                        overrides={**self.overrides, **other.overrides})

    def items(self) -> dict[str, Any]:
        """What the point sets, flat (`wsdlab study plan`'s "differs" column): branch fields (overrides and
        other mappings spread), `at.<field>`, RunSpec keys."""
        out: dict[str, Any] = {}
        for name, value in self.branch.items():
            if isinstance(value, dict) and name != "shape":
                out.update({k if name == "overrides" else f"{name}.{k}": v for k, v in value.items()})
            else:
                out[name] = value
        out.update({f"at.{k}": v for k, v in self.at.items()})
        out.update(self.overrides)
        return out


class Stage(StrictModel):
    """One named group of runs: a template, an optional grid, and (for a branch stage) where it starts."""

    job: str = Field("train", description="What each run of the stage does (a registered job kind).")
    from_: str | None = Field(None, alias="from", description="Parent stage: each run branches from its runs.")
    at: CheckpointSelector = Field(default_factory=lambda: CheckpointSelector(final=True), description="Checkpoint of the parent run.")
    match: Literal["same", "all"] = Field(
        "same", description="same: parent runs whose labels agree on shared names; all: every parent run.")
    preset: str | None = Field(None, description="Model preset of a root stage (wsdlab.models.PRESETS).")
    spec: dict[str, Any] = Field(default_factory=dict, description="RunSpec fields, nested (root stages).")
    branch: dict[str, Any] = Field(default_factory=dict, description="BranchConfig fields (branch stages).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted RunSpec keys applied last.")
    grid: dict[str, list[GridValue]] = Field(default_factory=dict, description="Axes multiplied together.")
    zip: dict[str, list[GridValue]] = Field(default_factory=dict, description="Axes that move together.")
    runs: list[RunPoint] = Field(
        default_factory=list, description="Explicit points (dotted key -> value, `labels.<name>` for a label only, "
        "`key` for the run key), multiplied with the grid; for designs a grid cannot write.")
    labels: dict[str, Any] = Field(default_factory=dict, description="Constant labels of every run.")
    keep: list[CheckpointSelector] = Field(default_factory=list, description="Extra checkpoints each run keeps (analyses).")
    key: str | None = Field(None, description="Run key template over labels, e.g. 'cd-{shape}-s{seed}'.")
    resources: Resources = Field(default_factory=Resources, description="Ranks (GPUs) and nodes of each run.")

    model_config = {**StrictModel.model_config, "populate_by_name": True}

    @field_validator("grid", "zip")
    @classmethod
    def _check_axes(cls, axes: dict[str, list[Any]], info: Any) -> dict[str, list[Any]]:
        for name, values in axes.items():
            if not values:
                raise ValueError(f"axis '{name}' has no values")
            if info.field_name == "grid" and len({_canon(v) for v in values}) != len(values):
                raise ValueError(f"axis '{name}' repeats a value: {values}")
        if info.field_name == "zip" and axes:
            columns = [tuple(_canon(v) for v in col) for col in zip(*axes.values())]
            if len(set(columns)) != len(columns):
                raise ValueError(f"zip repeats a point: {list(zip(*axes.values()))}")
        return axes

    @field_validator("runs", mode="before")
    @classmethod
    def _parse_runs(cls, runs: Any) -> Any:
        """YAML's explicit runs (dotted keys) are checked and become typed points here, once."""
        if not isinstance(runs, list):
            return runs
        points = []
        for i, run in enumerate(runs):
            if isinstance(run, Mapping):
                for key in run:
                    check_point_key(key, f"runs.{i}.{key}")
                run = RunPoint.parse(run)
            points.append(run)
        return points

    @model_validator(mode="after")
    def _check(self) -> "Stage":
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip axes must have equal lengths, got {[len(v) for v in self.zip.values()]}")
        both = set(self.grid) & set(self.zip)
        if both:
            raise ValueError(f"axes {sorted(both)} are in both grid and zip")
        root_only = [k for k in self.axes() if k.split(".")[0] in ("branch", "at")]
        root_only += [f"{part}.{k}" for r in self.runs for part in ("branch", "at") for k in getattr(r, part)]
        if self.from_ is None:
            if self.branch:
                raise ValueError("branch: only a stage with `from:` branches")
            if root_only:
                raise ValueError(f"axes {root_only} need a stage with `from:`")
        elif self.preset is not None or self.spec:
            raise ValueError("preset/spec: a branch stage takes its model and data from its parent "
                             "(change them with overrides or branch)")
        return self

    @model_validator(mode="after")
    def _check_keys(self) -> "Stage":
        """Every grid/zip axis and explicit-run key names a real field (`branch.<BranchConfig field>`,
        `at.<selector field>`, `labels.<name>`, else a RunSpec field), so a typo fails when the YAML is read."""
        for where, keys in (("grid", self.grid), ("zip", self.zip), ("overrides", self.overrides)):
            for key in keys:
                check_point_key(key, f"{where}.{key}")
        for where, axes in (("grid", self.grid), ("zip", self.zip)):
            for i, value in enumerate(axes.get("branch.shape", [])):
                try:
                    ShapeChoice.model_validate(value)
                except ValidationError as err:
                    raise ValueError(f"{where}.branch.shape.{i}: {describe_validation_error(err)}") from None
        return self

    def axes(self) -> list[str]:
        return [*self.grid, *self.zip]

    def num_points(self) -> int:
        """len(points()), without building them: grid sizes x zip length x explicit runs."""
        count = 1
        for values in self.grid.values():
            count *= len(values)
        if self.zip:
            count *= len(next(iter(self.zip.values())))
        return count * max(1, len(self.runs))

    def points(self) -> list[RunPoint]:
        """The typed points in order: the grid (cartesian, as written), the zip moving as one axis after it,
        each times the explicit `runs`."""
        grid_axes = [[(k, v) for v in vs] for k, vs in self.grid.items()]
        zipped = [list(zip(self.zip, col)) for col in zip(*self.zip.values())] if self.zip else [[]]
        axes = set(self.axes())
        try:
            combos = [RunPoint.parse(dict([*combo, *z]), axes) for combo in itertools.product(*grid_axes)
                      for z in zipped]
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return [c.merged(r) for c in combos for r in self.runs] if self.runs else combos


def check_point_key(key: str, where: str) -> None:
    """ValueError naming `where` unless `key` is `key`, `labels.<name>`, `branch.<BranchConfig field>`,
    `at.<CheckpointSelector field>` or a dotted RunSpec field."""
    from wsdlab.common.config import check_dotted_key
    from wsdlab.train.config import BranchConfig, RunSpec

    head, _, rest = key.partition(".")
    if key == "key" or (head == "labels" and rest):
        return
    try:
        if head == "branch":
            check_dotted_key(BranchConfig, rest)
        elif head == "at":
            check_dotted_key(CheckpointSelector, rest)
        else:
            check_dotted_key(RunSpec, key)
    except ValueError as err:
        raise ValueError(f"{where}: unknown field {err}") from None


def label_name(dotted: str) -> str:
    """The label an axis gives its runs: the last segment of its key (`train.seed` -> `seed`)."""
    return dotted.rsplit(".", 1)[-1]


def _canon(value: Any) -> str:
    return repr(value) if not isinstance(value, (dict, list)) else repr(sorted(value.items()) if isinstance(value, dict) else value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):  # e.g. a shape {shape: lowered_linear, param: 0.7}
        return "-".join(_fmt(v) for v in value.values() if v is not None)
    return str(value)


def slug(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "x"


def check_stage_graph(stages: Mapping[str, Stage]) -> list[str]:
    """Stage names in dependency order (parents first); ConfigError on unknown parents, cycles, bad names."""
    for name, stage in stages.items():
        if not _NAME_RE.match(name):
            raise ConfigError(f"stages.{name}: a stage name holds only letters, digits, '.', '_' or '-'")
        if stage.from_ is not None and stage.from_ not in stages:
            raise ConfigError(f"stages.{name}.from: no stage '{stage.from_}' (stages: {', '.join(stages)})")
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in visiting:
            raise ConfigError(f"stages: a cycle {' -> '.join((*path, name))}")
        visiting.add(name)
        parent = stages[name].from_
        if parent is not None:
            visit(parent, (*path, name))
        visiting.discard(name)
        order.append(name)

    for name in stages:
        visit(name, ())
    return order


@dataclass(frozen=True)
class StageRun:
    """One run of a stage before it has a RunSpec: its key, labels, typed point and parent run."""

    stage: str
    key: str
    labels: Mapping[str, Any]
    point: RunPoint
    parent: str | None = None
    own_labels: tuple[str, ...] = field(default=())  # label names its point set (not constant, not inherited)


def expand_stages(stages: Mapping[str, Stage]) -> list[StageRun]:
    """Every run of every stage, parents before children; ConfigError if two runs share a key."""
    runs: list[StageRun] = []
    by_stage: dict[str, list[StageRun]] = {}
    for name in check_stage_graph(stages):
        stage = stages[name]
        parents: Sequence[StageRun | None] = by_stage[stage.from_] if stage.from_ is not None else [None]
        mine: list[StageRun] = []
        for point in stage.points():
            axes = point.labels
            own = {**stage.labels, **axes}
            for parent in parents:
                inherited = dict(parent.labels) if parent is not None else {}
                if parent is not None and stage.match == "same":
                    shared = set(axes) & set(parent.own_labels)
                    if any(_canon(own[n]) != _canon(inherited[n]) for n in shared):
                        continue
                labels = {**inherited, **own}
                key = slug(point.key) if point.key is not None else _run_key(name, stage, labels, own, parent,
                                                                             point.label_only)
                mine.append(StageRun(name, key, labels, point, parent.key if parent is not None else None, tuple(axes)))
        if not mine:
            raise ConfigError(f"stages.{name}: no run matches a run of stage '{stage.from_}' "
                              f"(match: same needs shared labels to agree)")
        by_stage[name] = mine
        runs += mine
    keys = [r.key for r in runs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ConfigError(f"stages: several runs would be named {dups}; give the stage a `key:` template "
                          "that tells them apart")
    return runs


def _run_key(name: str, stage: Stage, labels: Mapping[str, Any], own: Mapping[str, Any], parent: StageRun | None,
             label_only: frozenset[str] = frozenset()) -> str:
    """`key` template formatted with the labels, else `<stage>[-<parent suffix>]-<value>-<value>...`."""
    if stage.key is not None:
        try:
            return slug(stage.key.format(**{k: _fmt(v) for k, v in labels.items()}))
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"stages.{name}.key: '{stage.key}' names an unknown label {err} "
                              f"(labels: {', '.join(labels)})") from None
    parts = [name]
    if parent is not None:  # the parent's own values, those the child overrides marked by the parent stage
        parts += [_part(n, parent.labels[n]) if n not in own else f"{parent.stage}_{_part(n, parent.labels[n])}"
                  for n in parent.own_labels if n not in own or _canon(own[n]) != _canon(parent.labels[n])]
    parts += [_part(n, v) for n, v in own.items() if n not in stage.labels and n not in label_only]
    return slug("-".join(parts))


def _part(name: str, value: Any) -> str:
    """A key segment: numbers keep their label name (`seed0`), names stand alone (`cosine`)."""
    return f"{name}{_fmt(value)}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _fmt(value)
