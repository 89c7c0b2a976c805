"""The cooldown study of Dremov et al. (paper 000) as a shorthand that expands into stages.

A study spec may give, instead of `stages:`, the sections `base`, `cooldown`, `reference`, `averaging`
and `hyperparams`: one stable-phase base run and, from its final checkpoint, a grid of cooldowns
(shapes x data-order seeds x override variants), longer reference cooldowns, disjoint-portion
cooldowns per shape plus one longer run for weight averaging, and hyper-parameter panels.
`cooldown_stages` turns these sections into stages named `base`, `cooldown`, `reference`, `portion`,
`long` and `hyperparam` whose runs are explicit points, so the planner, resolver and analyses see a
cooldown study exactly like any other stage graph (one code path).

Data layout (`cooldown.data: fresh`): the base reads the first half of the train split, the cooldowns
one cooldown-sized portion of the second half, the averaging runs its neighbours, and the references
(`reference.data: fresh`) the whole second half in their own orders, so they read no sequence twice. A
run whose branch
equals a grid cooldown's (the last averaging portion reads the cooldowns' data; a hyper-parameter
baseline is the unchanged cooldown) gets exactly that branch, snapshots included, so it trains once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from wsdlab.common.config import deep_merge, describe_validation_error, set_by_dotted_key
from wsdlab.common.errors import ConfigError
from wsdlab.study.sections import CooldownDesign, PanelName
from wsdlab.study.stages import RunPoint, ShapeChoice, Stage
from wsdlab.train.config import RunSpec


BASE_KEY = "base"
STAGES = ("base", "cooldown", "reference", "portion", "long", "hyperparam")


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataLayout:
    """Which portion of the train split each kind of run reads, as `data.order` overrides."""

    base: dict[str, int]
    cooldown: dict[str, int]  # the grid and the hyper-parameter panels
    parts: tuple[dict[str, int], ...]  # the averaging portions
    union: dict[str, int]  # the longer run over all the averaging portions
    reference: dict[str, int]  # the references: the cooldowns' portion (repeat) or the base's unread half (fresh)


def _order(num_portions: int, portion: int) -> dict[str, int]:
    return {"data.order.num_portions": num_portions, "data.order.portion": portion}


def fresh_layout(num_train: int, seqs_per_cooldown: int, num_parts: int,
                 seqs_per_reference: int | None = None) -> DataLayout:
    """Cut the split into Q parts (Q a multiple of P = num_parts) each holding at least one cooldown's
    sequences; the base reads the first half, the cooldowns the last part, averaging portion i part
    Q-P+i, and the longer run the union of those P parts (= portion Q/P-1 of Q/P, exactly). The
    references read the cooldowns' part (`seqs_per_reference` None: repeated) or the whole second half
    (every sequence the base never reads, the cooldowns' part included; it must hold `seqs_per_reference`
    sequences, so none is read twice)."""
    p = num_parts
    q = p * (num_train // (seqs_per_cooldown * p))
    if q < 2 * p:
        raise ConfigError(
            f"cooldown.data 'fresh': the corpus has {num_train} train sequences but a cooldown reads {seqs_per_cooldown} "
            f"and the study needs {p} such parts outside the base's half ({2 * p * seqs_per_cooldown} sequences); "
            "use more data, a shorter cooldown or a smaller batch, or set cooldown.data: continue")
    cooldown = _order(q, q - 1)
    reference = cooldown
    if seqs_per_reference is not None:
        if seqs_per_reference > num_train - num_train // 2:
            raise ConfigError(
                f"reference.data 'fresh': a reference reads {seqs_per_reference} sequences but the half of the corpus "
                f"the base does not read holds {num_train - num_train // 2} of {num_train} train sequences; use fewer "
                "reference steps, more data, or reference.data: repeat")
        reference = _order(2, 1)
    return DataLayout(base=_order(2, 0), cooldown=cooldown, parts=tuple(_order(q, q - p + i) for i in range(p)),
                      union=_order(q // p, q // p - 1), reference=reference)


def continue_layout(num_parts: int) -> DataLayout:
    """Branches keep the base's data; averaging portions are P parts of the whole split."""
    return DataLayout(base={}, cooldown={}, parts=tuple(_order(num_parts, i) for i in range(num_parts)),
                      union=_order(1, 0), reference={})


def reference_steps(study: CooldownDesign) -> int:
    """Length of each reference run: `reference.steps`, else round(multiplier x cooldown.steps)."""
    ref, cd = study.reference, study.cooldown
    assert ref is not None and cd is not None
    return ref.steps if ref.steps is not None else round(ref.multiplier * cd.steps)


def _num_parts(study: CooldownDesign) -> int:
    assert study.averaging is not None
    return study.averaging.num_portions if study.averaging.enabled else 1


def _seqs_per_step(study: CooldownDesign) -> int:
    """Train sequences one step of the base (and of every branch) reads: its global batch."""
    from wsdlab.train.batching import global_batch_size

    spec = base_run_spec(study)
    return global_batch_size(spec.train, 1 if spec.data.is_vision else spec.data.seq_len)


def _seqs_per_cooldown(study: CooldownDesign) -> int:
    """Train sequences one cooldown reads: cooldown.steps x the base's global batch."""
    assert study.cooldown is not None
    return study.cooldown.steps * _seqs_per_step(study)


def _fresh_reference_seqs(study: CooldownDesign) -> int | None:
    """Train sequences one reference reads when it reads fresh data (`reference.data: fresh`), else None."""
    ref = study.reference
    if ref is None or not ref.enabled or ref.data != "fresh":
        return None
    return reference_steps(study) * _seqs_per_step(study)


def fresh_min_train(study: CooldownDesign) -> int:
    """The fewest train sequences `fresh_layout` accepts for this study: 2 x parts x one cooldown's, and
    twice a fresh reference's (the references read the half the base does not)."""
    return max(2 * _num_parts(study) * _seqs_per_cooldown(study), 2 * (_fresh_reference_seqs(study) or 0))


def data_layout(study: CooldownDesign, num_train: int | None) -> DataLayout:
    """The layout the study asks for (`cooldown.data`); 'fresh' needs the number of train sequences."""
    assert study.cooldown is not None and study.averaging is not None
    num_parts = _num_parts(study)
    if study.cooldown.data == "continue":
        return continue_layout(num_parts)
    if num_train is None:
        raise ConfigError("cooldown.data 'fresh' needs the number of train sequences (num_train) to plan the study")
    return fresh_layout(num_train, _seqs_per_cooldown(study), num_parts, _fresh_reference_seqs(study))


# ---------------------------------------------------------------------------------------------- base


def template_spec(name: str, preset: str | None, spec: Mapping[str, Any], overrides: Mapping[str, Any],
                  where: str, extra: Mapping[str, Any] = {}) -> RunSpec:
    """A root run's RunSpec: the preset's model, then `spec` merged over it, then dotted `overrides`,
    then `extra` (a grid point); `train.progress` off (the study's display shows every run).
    ConfigError names the field under `where` (e.g. `stages.wsd.overrides.train.steps`)."""
    from wsdlab.models import model_config

    data: dict[str, Any] = {"name": name}
    if preset is not None:
        data["model"] = model_config(preset).model_dump(mode="json")
    data = deep_merge(data, spec)
    for source, items in (("overrides", overrides), ("grid", extra)):
        for key, value in items.items():
            try:
                set_by_dotted_key(data, key, value)
            except ValueError as err:
                raise ConfigError(f"{where}.{source}.{key}: {err}") from None
    data.setdefault("train", {})["progress"] = False
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid run '{name}' of {where}:\n{describe_validation_error(err, f'{where}.spec.')}") from None


def base_run_spec(study: CooldownDesign, layout: DataLayout | None = None) -> RunSpec:
    """The stable-phase RunSpec: preset model, then `base.spec`, then `base.overrides`, then the data
    layout's order; schedule 'wso'."""
    base = study.base
    assert base is not None
    spec = dict(base.spec)
    spec["schedule"] = {"kind": "wso", **spec.get("schedule", {})}
    result = template_spec(f"{study.name}-base", base.preset, spec, base.overrides, "base",
                           extra=layout.base if layout else {})
    if result.schedule.kind != "wso":
        raise ConfigError(
            f"base.spec.schedule.kind: must be 'wso' (the base is warmup + stable phase; cooldowns branch from it), "
            f"got '{result.schedule.kind}'")
    if result.init_from is not None:
        raise ConfigError("base.spec.init_from: the base run must start from scratch")
    return result


def geometry_snapshot_overrides(study: CooldownDesign, branch_step: int) -> dict[str, Any]:
    """Snapshots for the geometry runs (first seed of each shape): every k steps and at the branch point."""
    assert study.cooldown is not None
    if not study.analyses.geometry_enabled():
        return {}
    every = study.analyses.snapshot_every or max(1, study.cooldown.steps // 20)
    return {"train.snapshot_every": every, "train.snapshot_steps": [branch_step]}


def with_geometry_snapshots(study: CooldownDesign, spec: RunSpec) -> RunSpec:
    """The base keeps stable-phase snapshots (every T/20 steps) when the trajectory analysis is on."""
    if not study.analyses.trajectory.enabled or spec.train.snapshot_every is not None:
        return spec
    train = spec.train.model_copy(update={"snapshot_every": max(1, spec.train.steps // 20)})
    return spec.model_copy(update={"train": train})


def long_run_steps(study: CooldownDesign, branch_step: int) -> tuple[int, int]:
    """(steps, decay steps) of the averaging study's longer run from the base's step `branch_step`.

    steps = N x cooldown.steps (the same data and FLOPs as the N portion cooldowns together); the decay
    is `long_cooldown_fraction` of the run's total counted from step 0 (the paper: 52.8k steps in total
    = 26.4k pre-cooldown + 4 x 6.6k, with a 20% cooldown: 10.56k steps), after a stable continuation.
    """
    avg, cd = study.averaging, study.cooldown
    assert avg is not None and cd is not None
    steps = avg.num_portions * cd.steps
    decay = max(1, round(avg.long_cooldown_fraction * (branch_step + steps)))
    if decay > steps:
        raise ConfigError(
            f"averaging.long_cooldown_fraction: a {avg.long_cooldown_fraction:g} decay of the longer run's "
            f"{branch_step + steps} steps ({decay}) is longer than its {steps} steps after the branch point; "
            "use more portions, a longer cooldown or a smaller fraction")
    return steps, decay


# ---------------------------------------------------------------------------------------------- stages


def _num(x: float) -> str:
    return f"{x:g}"


def cooldown_stages(study: CooldownDesign, num_train: int | None = None) -> dict[str, Stage]:
    """The cooldown study's sections as stages (`base`, then branches of its final checkpoint), each
    branch an explicit run: `key`, `branch.<field>` values and `labels.<name>`. `num_train` (train
    sequences of the base's data) is needed for `cooldown.data: fresh`."""
    cd = study.cooldown
    assert cd is not None and study.base is not None
    layout = data_layout(study, num_train)
    plain_base = base_run_spec(study, layout)
    base_spec = with_geometry_snapshots(study, plain_base)
    # branches inherit the base's train settings: not the snapshots added for the trajectory analysis
    unsnap = {"train.snapshot_every": None} if base_spec is not plain_base else {}
    common = {**layout.cooldown, **unsnap, **cd.overrides}
    geometry = geometry_snapshot_overrides(study, base_spec.train.steps)
    runs: dict[str, list[RunPoint]] = {name: [] for name in STAGES[1:]}
    grid: dict[tuple[str, int], dict[str, Any]] = {}  # (shape label, seed) -> the default variant's branch

    def branch(key: str, stage: str, labels: dict[str, Any], shape: ShapeChoice, overrides: Mapping[str, Any] = {},
               variant_overrides: bool = False, **fields: Any) -> None:
        planned = {"alpha": cd.alpha, **fields, **shape.branch_fields(), "overrides": {**common, **overrides}}
        if stage == "cooldown" and not variant_overrides:
            grid[(shape.label, fields["seed"])] = planned
        elif stage != "cooldown":
            planned = _reuse(planned, grid.get((shape.label, fields.get("seed"))), geometry)
        runs[stage].append(RunPoint(key=key, labels=labels, label_only=frozenset(labels), branch=planned))

    named_variants = len(cd.variants) > 1 or cd.variants[0].overrides
    for variant in cd.variants:
        for shape in cd.shapes:
            for seed in cd.seeds:
                suffix = f"-{variant.name}" if named_variants else ""
                snap = geometry if (geometry and seed == cd.seeds[0]) else {}
                branch(f"cd-{shape.label}-s{seed}{suffix}", "cooldown",
                       {"shape": shape.label, "seed": seed, "variant": variant.name, "geometry": bool(snap)},
                       shape, {**snap, **variant.overrides}, bool(variant.overrides), steps=cd.steps, seed=seed)

    ref = study.reference
    if ref is not None and ref.enabled:
        steps = reference_steps(study)
        for seed in ref.seeds if ref.seeds is not None else cd.seeds:
            branch(f"ref-{ref.shape.label}-s{seed}", "reference", {"shape": ref.shape.label, "seed": seed},
                   ref.shape, {**layout.reference, **ref.overrides}, steps=steps, seed=seed)

    avg = study.averaging
    if avg is not None and avg.enabled:
        p = avg.num_portions
        for shape in avg.shapes if avg.shapes is not None else cd.shapes:
            for i in range(p):
                branch(f"avg-{shape.label}-p{i}of{p}", "portion",
                       {"shape": shape.label, "seed": avg.seed, "portion": i, "num_portions": p},
                       shape, {**layout.parts[i], **avg.overrides}, steps=cd.steps, seed=avg.seed)
        steps, decay = long_run_steps(study, plain_base.train.steps)
        branch(f"avg-long-{avg.long_shape.label}-all{p}", "long",
               {"shape": avg.long_shape.label, "seed": avg.seed, "num_portions": p, "cooldown_steps": decay},
               avg.long_shape, {**layout.union, **avg.overrides}, steps=steps, seed=avg.seed, cooldown_steps=decay)

    hp = study.hyperparams
    if hp is not None and hp.enabled:
        _expand_hyperparams(study, branch)

    stages = {"base": Stage(spec=base_spec.model_dump(mode="json"), labels={"shape": "stable"}, key=BASE_KEY)}
    for name, points in runs.items():
        if points:
            stages[name] = Stage(from_="base", runs=points)
    return stages


def _reuse(planned: dict[str, Any], cooldown: dict[str, Any] | None, geometry: Mapping[str, Any]) -> dict[str, Any]:
    """The grid cooldown's branch when `planned` trains the same run (its only extra overrides being the
    geometry snapshots, which do not change training); else `planned` unchanged."""
    if cooldown is None:
        return planned
    with_snapshots = {**planned, "overrides": {**planned["overrides"], **{
        k: v for k, v in geometry.items() if k in cooldown["overrides"]}}}
    return cooldown if with_snapshots == cooldown else planned


def _expand_hyperparams(study: CooldownDesign, branch: Any) -> None:
    """Hyper-parameter panels per shape and seed, each with its baseline (the unchanged cooldown of the
    same shape/seed). Keys `hp-<shape>-<setting>-s<seed>` do not depend on the other shapes listed nor on
    the other panels' seeds. A panel runs at its own seeds (`HyperParams.seeds_of`); a seed gets its
    baseline when any active panel runs at it."""
    hp, cd = study.hyperparams, study.cooldown
    assert hp is not None and cd is not None
    for k in hp.batch_scales:  # branch_spec runs steps // k steps: the same number of tokens
        if cd.steps // k < 1:
            raise ConfigError(f"hyperparams.batch_scales: {k:g} leaves no step of the {cd.steps}-step cooldown")
    active = hp.active_panels()
    default = cd.seeds[:1]
    panel_seeds = {panel: hp.seeds_of(panel, default) for panel in active}
    seeds = (list(dict.fromkeys(s for panel in active for s in panel_seeds[panel]))
             or hp.seeds_of("beta_powers", default))  # no panel: baselines only, at `seeds`
    for shape, seed in ((shape, seed) for shape in hp.shapes for seed in seeds):
        def add(name: str, panel: str, value: Any, **kw: Any) -> None:
            branch(f"hp-{shape.label}-{name}-s{seed}", "hyperparam",
                   {"shape": shape.label, "seed": seed, "panel": panel, "value": value},
                   shape, hp.overrides, steps=cd.steps, seed=seed, **kw)

        def runs(panel: PanelName) -> bool:
            return panel in panel_seeds and seed in panel_seeds[panel]

        add("baseline", "baseline", 0)
        for p in hp.beta_powers if runs("beta_powers") else []:
            add(f"betas{_num(p)}", "betas_p", p, beta_power=p)
        for p in hp.beta2_powers if runs("beta2_powers") else []:
            add(f"beta2{_num(p)}", "beta2_p", p, beta_power=p, beta2_only=True)
        for k in hp.batch_scales if runs("batch_scales") else []:
            for matched in hp.match_half_life:
                add(f"batch{_num(k)}{'-hl' if matched else ''}", "batch_x_half_life" if matched else "batch_x", k,
                    batch_scale=k, match_half_life=matched)
        if runs("weight_decay_off"):
            add("nowd", "weight_decay_off", 1, weight_decay_off=True)
        if runs("reset_optimizer"):
            add("reset", "reset_optimizer", 1, reset_optimizer=True)
