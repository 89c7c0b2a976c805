"""Expand a study spec into its runs: a readable key, a role, labels for the analyses, and either a
full RunSpec (the base) or a branch recipe (everything else: `wsdlab.train.branch_spec` arguments
applied to the final checkpoint of its parent run).

The plan is a pure function of the StudySpec (and, for `cooldown.data: fresh`, of the number of
train sequences, which fixes the data layout: the base reads the first half of the train split, the
cooldowns one cooldown-sized portion of the second half, the averaging runs its neighbours). Run
directories and hashes come later (`resolve.py`), because a branch spec names its parent's checkpoint.

A planned run whose recipe equals a grid cooldown's (the last averaging portion reads the cooldowns'
data; a hyper-parameter baseline is the unchanged cooldown) is given exactly that recipe, snapshots of
the geometry runs included, so the resolver maps both to one folder and the run is trained once.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from wsdlab.common.config import describe_validation_error, set_by_dotted_key
from wsdlab.common.errors import ConfigError
from wsdlab.study.spec import ShapeChoice, StudySpec
from wsdlab.train.config import RunSpec

Role = Literal["base", "cooldown", "reference", "portion", "long", "hyperparam"]
BASE_KEY = "base"


@dataclass(frozen=True)
class BranchRecipe:
    """Arguments of `branch_spec(checkpoint, ...)`: how a branch departs from its parent's final checkpoint."""

    steps: int
    shape: ShapeChoice
    alpha: float | None = None
    seed: int | None = None
    beta_power: float | None = None
    beta2_only: bool = False
    batch_scale: float | None = None
    match_half_life: bool = False
    weight_decay_off: bool = False
    reset_optimizer: bool = False
    cooldown_steps: int | None = None  # None: the whole branch decays; else stable first, then this many
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def branch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for wsdlab.train.branch_spec (an `expr` shape travels as an override)."""
        overrides = dict(self.overrides)
        if self.shape.expr is not None:
            overrides["schedule.shape_expr"] = self.shape.expr
        return {
            "steps": self.steps, "shape": self.shape.shape, "shape_param": self.shape.param, "alpha": self.alpha,
            "seed": self.seed, "beta_power": self.beta_power, "beta2_only": self.beta2_only,
            "batch_scale": self.batch_scale, "match_half_life": self.match_half_life,
            "weight_decay_off": self.weight_decay_off, "reset_optimizer": self.reset_optimizer,
            "cooldown_steps": self.cooldown_steps, "overrides": overrides,
        }


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study. Exactly one of `spec` (a root run) and `recipe` (a branch of `parent`) is set."""

    key: str
    role: Role
    labels: Mapping[str, Any]
    spec: RunSpec | None = None
    parent: str | None = None
    recipe: BranchRecipe | None = None

    @property
    def stage(self) -> str:
        """The stage this run belongs to (the cooldown study's stages are its roles)."""
        return self.role


@dataclass(frozen=True)
class Plan:
    """All runs of a study in dependency order (every parent before its branches)."""

    study: StudySpec
    runs: tuple[PlannedRun, ...]

    def __iter__(self) -> Iterator[PlannedRun]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, key: str) -> PlannedRun:
        for run in self.runs:
            if run.key == key:
                return run
        raise KeyError(f"no run '{key}' in study '{self.study.name}'")

    def with_role(self, *roles: Role) -> list[PlannedRun]:
        return [r for r in self.runs if r.role in roles]


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataLayout:
    """Which portion of the train split each kind of run reads, as `data.order` overrides."""

    base: dict[str, int]
    cooldown: dict[str, int]  # the grid, the references and the hyper-parameter panels
    parts: tuple[dict[str, int], ...]  # the averaging portions
    union: dict[str, int]  # the longer run over all the averaging portions


def _order(num_portions: int, portion: int) -> dict[str, int]:
    return {"data.order.num_portions": num_portions, "data.order.portion": portion}


def fresh_layout(num_train: int, seqs_per_cooldown: int, num_parts: int) -> DataLayout:
    """Cut the split into Q parts (Q a multiple of P = num_parts) each holding at least one cooldown's
    sequences; the base reads the first half, the cooldowns the last part, averaging portion i part
    Q-P+i, and the longer run the union of those P parts (= portion Q/P-1 of Q/P, exactly)."""
    p = num_parts
    q = p * (num_train // (seqs_per_cooldown * p))
    if q < 2 * p:
        raise ConfigError(
            f"cooldown.data 'fresh': the corpus has {num_train} train sequences but a cooldown reads {seqs_per_cooldown} "
            f"and the study needs {p} such parts outside the base's half ({2 * p * seqs_per_cooldown} sequences); "
            "use more data, a shorter cooldown or a smaller batch, or set cooldown.data: continue")
    return DataLayout(base=_order(2, 0), cooldown=_order(q, q - 1),
                      parts=tuple(_order(q, q - p + i) for i in range(p)), union=_order(q // p, q // p - 1))


def continue_layout(num_parts: int) -> DataLayout:
    """Branches keep the base's data; averaging portions are P parts of the whole split."""
    return DataLayout(base={}, cooldown={}, parts=tuple(_order(num_parts, i) for i in range(num_parts)),
                      union=_order(1, 0))


def data_layout(study: StudySpec, num_train: int | None) -> DataLayout:
    """The layout the study asks for (`cooldown.data`); 'fresh' needs the number of train sequences."""
    num_parts = study.averaging.num_portions if study.averaging.enabled else 1
    if study.cooldown.data == "continue":
        return continue_layout(num_parts)
    if num_train is None:
        raise ConfigError("cooldown.data 'fresh' needs the number of train sequences (num_train) to plan the study")
    from wsdlab.train.batching import global_batch_size

    spec = base_run_spec(study)
    per_item = 1 if spec.data.is_vision else spec.data.seq_len
    return fresh_layout(num_train, study.cooldown.steps * global_batch_size(spec.train, per_item), num_parts)


# ---------------------------------------------------------------------------------------------- base


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `update` merged in recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_run_spec(study: StudySpec, layout: DataLayout | None = None) -> RunSpec:
    """The stable-phase RunSpec: preset model, then `base.spec`, then `base.overrides`, then the data
    layout's order; schedule 'wso'. `train.progress` is off: the study's display shows every run.
    """
    from wsdlab.models import model_config

    base = study.base
    data: dict[str, Any] = {"name": f"{study.name}-base"}
    if base.preset is not None:
        data["model"] = model_config(base.preset).model_dump(mode="json")
    data = deep_merge(data, base.spec)
    data.setdefault("schedule", {}).setdefault("kind", "wso")
    for key, value in base.overrides.items():
        try:
            set_by_dotted_key(data, key, value)
        except ValueError as err:
            raise ConfigError(f"base.overrides.{key}: {err}") from None
    for key, value in (layout.base if layout else {}).items():
        set_by_dotted_key(data, key, value)
    data.setdefault("train", {})["progress"] = False
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid base run of study '{study.name}':\n{describe_validation_error(err, 'base.spec.')}") from None
    if spec.schedule.kind != "wso":
        raise ConfigError(
            f"base.spec.schedule.kind: must be 'wso' (the base is warmup + stable phase; cooldowns branch from it), "
            f"got '{spec.schedule.kind}'")
    if spec.init_from is not None:
        raise ConfigError("base.spec.init_from: the base run must start from scratch")
    return spec


# ---------------------------------------------------------------------------------------------- plan

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("_", text).strip("_") or "x"


def _num(x: float) -> str:
    return f"{x:g}"


def expand_plan(study: StudySpec, num_train: int | None = None) -> Plan:
    """Every run of the study, base first. `num_train` (train sequences of the base's data) is needed
    for `cooldown.data: fresh`. Raises ValueError if two runs would share a key."""
    layout = data_layout(study, num_train)
    plain_base = base_run_spec(study, layout)
    base_spec = with_geometry_snapshots(study, plain_base)
    runs: list[PlannedRun] = [PlannedRun(BASE_KEY, "base", {"shape": "stable"}, spec=base_spec)]
    cd = study.cooldown
    # branches inherit the base's train settings: not the snapshots added for the trajectory analysis
    unsnap = {"train.snapshot_every": None} if base_spec is not plain_base else {}
    common = {**layout.cooldown, **unsnap, **cd.overrides}
    geometry = geometry_snapshot_overrides(study, base_spec.train.steps)

    grid: dict[tuple[str, int], BranchRecipe] = {}  # (shape label, seed) -> the default variant's cooldown

    def branch(key: str, role: Role, labels: dict[str, Any], **recipe: Any) -> None:
        overrides = {**common, **recipe.pop("overrides", {})}
        planned = BranchRecipe(alpha=cd.alpha, overrides=overrides, **recipe)
        if role == "cooldown" and not labels.get("variant_overrides"):
            grid[(labels["shape"], labels["seed"])] = planned
        elif role != "cooldown":
            planned = _reuse(planned, grid.get((labels.get("shape"), labels.get("seed"))), geometry)
        labels = {k: v for k, v in labels.items() if k != "variant_overrides"}
        runs.append(PlannedRun(_slug(key), role, labels, parent=BASE_KEY, recipe=planned))

    named_variants = len(cd.variants) > 1 or cd.variants[0].overrides
    for variant in cd.variants:
        for shape in cd.shapes:
            for seed in cd.seeds:
                suffix = f"-{variant.name}" if named_variants else ""
                snap = geometry if (geometry and seed == cd.seeds[0]) else {}
                branch(f"cd-{shape.label}-s{seed}{suffix}", "cooldown",
                       {"shape": shape.label, "seed": seed, "variant": variant.name, "geometry": bool(snap),
                        "variant_overrides": bool(variant.overrides)},
                       steps=cd.steps, shape=shape, seed=seed, overrides={**snap, **variant.overrides})

    ref = study.reference
    if ref.enabled:
        steps = ref.steps if ref.steps is not None else round(ref.multiplier * cd.steps)
        for seed in ref.seeds if ref.seeds is not None else cd.seeds:
            branch(f"ref-{ref.shape.label}-s{seed}", "reference", {"shape": ref.shape.label, "seed": seed},
                   steps=steps, shape=ref.shape, seed=seed, overrides=ref.overrides)

    avg = study.averaging
    if avg.enabled:
        p = avg.num_portions
        for shape in avg.shapes if avg.shapes is not None else cd.shapes:
            for i in range(p):
                branch(f"avg-{shape.label}-p{i}of{p}", "portion",
                       {"shape": shape.label, "seed": avg.seed, "portion": i, "num_portions": p},
                       steps=cd.steps, shape=shape, seed=avg.seed, overrides={**layout.parts[i], **avg.overrides})
        steps, decay = long_run_steps(study, plain_base.train.steps)
        branch(f"avg-long-{avg.long_shape.label}-all{p}", "long",
               {"shape": avg.long_shape.label, "seed": avg.seed, "num_portions": p, "cooldown_steps": decay},
               steps=steps, shape=avg.long_shape, seed=avg.seed, cooldown_steps=decay,
               overrides={**layout.union, **avg.overrides})

    hp = study.hyperparams
    if hp.enabled:
        _expand_hyperparams(study, branch)

    keys = [r.key for r in runs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ConfigError(f"study '{study.name}': several runs would be named {dups}; make shape labels/variant names distinct")
    return Plan(study, tuple(runs))


def long_run_steps(study: StudySpec, branch_step: int) -> tuple[int, int]:
    """(steps, decay steps) of the averaging study's longer run from the base's step `branch_step`.

    steps = N x cooldown.steps (the same data and FLOPs as the N portion cooldowns together); the decay
    is `long_cooldown_fraction` of the run's total counted from step 0 (the paper: 52.8k steps in total
    = 26.4k pre-cooldown + 4 x 6.6k, with a 20% cooldown: 10.56k steps), after a stable continuation.
    """
    avg, cd = study.averaging, study.cooldown
    steps = avg.num_portions * cd.steps
    decay = max(1, round(avg.long_cooldown_fraction * (branch_step + steps)))
    if decay > steps:
        raise ConfigError(
            f"averaging.long_cooldown_fraction: a {avg.long_cooldown_fraction:g} decay of the longer run's "
            f"{branch_step + steps} steps ({decay}) is longer than its {steps} steps after the branch point; "
            "use more portions, a longer cooldown or a smaller fraction")
    return steps, decay


def _reuse(recipe: BranchRecipe, cooldown: BranchRecipe | None, geometry: Mapping[str, Any]) -> BranchRecipe:
    """The grid cooldown's recipe when `recipe` trains the same run (its only extra overrides being the
    geometry snapshots, which do not change training); else `recipe` unchanged."""
    if cooldown is None:
        return recipe
    with_snapshots = dataclasses.replace(recipe, overrides={**recipe.overrides, **{
        k: v for k, v in geometry.items() if k in cooldown.overrides}})
    return cooldown if with_snapshots == cooldown else recipe


def geometry_snapshot_overrides(study: StudySpec, branch_step: int) -> dict[str, Any]:
    """Snapshots for the geometry runs (first seed of each shape): every k steps and at the branch point."""
    if not study.analyses.geometry_enabled():
        return {}
    every = study.analyses.snapshot_every or max(1, study.cooldown.steps // 20)
    return {"train.snapshot_every": every, "train.snapshot_steps": [branch_step]}


def with_geometry_snapshots(study: StudySpec, spec: RunSpec) -> RunSpec:
    """The base keeps stable-phase snapshots (every T/20 steps) when the trajectory analysis is on."""
    if not study.analyses.trajectory.enabled or spec.train.snapshot_every is not None:
        return spec
    train = spec.train.model_copy(update={"snapshot_every": max(1, spec.train.steps // 20)})
    return spec.model_copy(update={"train": train})


def _expand_hyperparams(study: StudySpec, branch: Any) -> None:
    """Hyper-parameter panels per shape and seed, each with its baseline (the unchanged cooldown of the
    same shape/seed). Keys `hp-<shape>-<setting>-s<seed>` do not depend on the other shapes listed."""
    hp, cd = study.hyperparams, study.cooldown
    seeds = hp.seeds if hp.seeds is not None else cd.seeds[:1]
    for shape, seed in ((shape, seed) for shape in hp.shapes for seed in seeds):
        def add(name: str, panel: str, value: Any, **kw: Any) -> None:
            branch(f"hp-{shape.label}-{name}-s{seed}", "hyperparam",
                   {"shape": shape.label, "seed": seed, "panel": panel, "value": value},
                   steps=cd.steps, shape=shape, seed=seed,
                   overrides=hp.overrides, **kw)

        add("baseline", "baseline", 0)
        for p in hp.beta_powers:
            add(f"betas{_num(p)}", "betas_p", p, beta_power=p)
        for p in hp.beta2_powers:
            add(f"beta2{_num(p)}", "beta2_p", p, beta_power=p, beta2_only=True)
        for k in hp.batch_scales:  # branch_spec runs steps // k steps: the same number of tokens
            if cd.steps // k < 1:
                raise ConfigError(f"hyperparams.batch_scales: {k:g} leaves no step of the {cd.steps}-step cooldown")
            for matched in hp.match_half_life:
                add(f"batch{_num(k)}{'-hl' if matched else ''}", "batch_x_half_life" if matched else "batch_x", k,
                    batch_scale=k, match_half_life=matched)
        if hp.weight_decay_off:
            add("nowd", "weight_decay_off", 1, weight_decay_off=True)
        if hp.reset_optimizer:
            add("reset", "reset_optimizer", 1, reset_optimizer=True)
