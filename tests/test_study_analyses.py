"""Study-to-unit glue: selectors resolved against a plan, panel baselines, unit selection and the
skip-if-unchanged fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsdlab.analysis.hyperparams import panel_runs
from wsdlab.analysis.units import RunSelector, SelectedRun, evenly, get_unit, group, select
from wsdlab.common.errors import ConfigError
from wsdlab.study.analyses import enabled_units, study_runs, unit_fingerprint, unit_inputs
from wsdlab.study.plan import expand_plan
from wsdlab.study.resolve import Resolver
from wsdlab.study.spec import parse_study
from wsdlab.train.checkpoint import write_stub_checkpoint


def make_study(**analyses):
    return parse_study({
        "name": "g",
        "base": {"preset": "tiny", "overrides": {"train.steps": 10}},
        "cooldown": {"steps": 4, "shapes": ["linear", "sqrt"], "seeds": [3, 4], "data": "continue"},
        "reference": {"multiplier": 2},
        "averaging": {"num_portions": 2},
        "hyperparams": {"seeds": [3], "beta2_powers": [2.0], "weight_decay_off": True},
        "analyses": analyses,
    })


def resolved(study, root: Path):
    plan = expand_plan(study)
    resolver = Resolver(plan, root)
    base = resolver.resolve(plan["base"])
    ckpt = base.path / "checkpoints" / str(base.spec.train.steps)
    write_stub_checkpoint(ckpt, base.spec)
    (base.path / "COMPLETE").write_text("10\n")
    return plan, resolver


def keys(runs: list[SelectedRun]) -> list[str]:
    return [r.key for r in runs]


def test_evenly_keeps_ends() -> None:
    assert evenly([5, 1, 3], 5) == [1, 3, 5]
    assert evenly(list(range(11)), 3) == [0, 5, 10]
    assert evenly([1, 2, 3], 1) == [3]


def test_selector_stage_where_group_by_on_a_fake_plan() -> None:
    runs = [SelectedRun(k, stage, labels, Path(k)) for k, stage, labels in [
        ("base", "base", {"shape": "stable"}),
        ("cd-lin-s0-a", "cooldown", {"shape": "linear", "seed": 0, "variant": "a", "geometry": True}),
        ("cd-lin-s1-a", "cooldown", {"shape": "linear", "seed": 1, "variant": "a", "geometry": False}),
        ("cd-lin-s0-b", "cooldown", {"shape": "linear", "seed": 0, "variant": "b", "geometry": True}),
        ("cd-sqrt-s0-a", "cooldown", {"shape": "sqrt", "seed": 0, "variant": "a", "geometry": True}),
        ("ref-sqrt-s0", "reference", {"shape": "sqrt", "seed": 0}),
    ]]
    assert keys(select(RunSelector(stage="reference"), runs)) == ["ref-sqrt-s0"]
    assert keys(select(RunSelector(stage=["base", "reference"]), runs)) == ["base", "ref-sqrt-s0"]
    geo = RunSelector.model_validate({"stage": "cooldown", "where": {"geometry": True}, "group_by": ["shape", "variant"]})
    assert keys(select(geo, runs)) == ["cd-lin-s0-a", "cd-lin-s0-b", "cd-sqrt-s0-a"]
    # a later group_by label joins the key only where it varies among the selected runs
    assert {k: keys(v) for k, v in group(geo, select(geo, runs)).items()} == {
        "linear/a": ["cd-lin-s0-a"], "linear/b": ["cd-lin-s0-b"], "sqrt/a": ["cd-sqrt-s0-a"]}
    one_variant = RunSelector(stage="cooldown", where={"variant": "a"}, group_by=["shape", "variant"])
    assert {k: keys(v) for k, v in group(one_variant, select(one_variant, runs)).items()} == {
        "linear": ["cd-lin-s0-a", "cd-lin-s1-a"], "sqrt": ["cd-sqrt-s0-a"]}
    several = RunSelector(stage="cooldown", where={"seed": [1], "shape": ["linear", "sqrt"]})
    assert keys(select(several, runs)) == ["cd-lin-s1-a"]
    assert group(RunSelector(stage="base"), select(RunSelector(stage="base"), runs)) == {"": [runs[0]]}


def test_unit_inputs_resolve_against_the_plan(tmp_path: Path) -> None:
    study = make_study()
    plan, resolver = resolved(study, tmp_path)
    runs = study_runs(plan, resolver)
    assert runs[0].key == "base" and runs[0].path == resolver.resolve(plan["base"]).path
    bv = get_unit("bias_variance")
    inputs = unit_inputs(study, bv, runs)
    cooldowns = group(bv.inputs["cooldowns"], inputs["cooldowns"])
    assert list(cooldowns) == ["linear", "sqrt"] and all(len(v) == 2 for v in cooldowns.values())
    assert [r.labels["seed"] for r in cooldowns["sqrt"]] == [3, 4]
    assert len(inputs["references"]) == 2
    # every shape has its averaging set; one longer run serves them all
    avg = unit_inputs(study, get_unit("averaging"), runs)
    portions = group(get_unit("averaging").inputs["portions"], avg["portions"])
    assert sorted(portions) == ["linear", "sqrt"] and all(len(v) == 2 for v in portions.values())
    assert keys(avg["long"]) == ["avg-long-sqrt-all2"]
    assert unit_inputs(study, get_unit("sharpness"), runs)["runs"] == []
    hp = unit_inputs(study, get_unit("hyperparams"), runs)["panels"]
    panels = [(sh, p, v, r.key) for sh, p, v, r in panel_runs([(r.labels, r) for r in hp])]
    # the baseline (the grid's sqrt seed-3 cooldown) joins each panel at the neutral value
    assert ("sqrt", "beta2_p", 1.0, "hp-sqrt-baseline-s3") in panels
    assert ("sqrt", "beta2_p", 2.0, "hp-sqrt-beta22-s3") in panels
    assert ("sqrt", "weight_decay_off", 0, "hp-sqrt-baseline-s3") in panels
    assert len(panels) == 4
    names = [u.name for u in enabled_units(study, runs)]
    assert names.index("bias_variance") < names.index("perplexity") and names.index("bias_variance") < names.index("recency")
    assert {"schedules", "val_curves", "update_norm"} <= set(names) and "sharpness" not in names


def test_study_overrides_a_selector(tmp_path: Path) -> None:
    study = make_study(update_norm={"inputs": {"cooldowns": {"stage": "cooldown", "where": {"seed": 4},
                                                             "group_by": "shape"}}})
    plan, resolver = resolved(study, tmp_path)
    inputs = unit_inputs(study, get_unit("update_norm"), study_runs(plan, resolver))
    assert keys(inputs["cooldowns"]) == ["cd-linear-s4", "cd-sqrt-s4"]
    with pytest.raises(ConfigError, match=r"analyses\.update_norm\.inputs\.nope"):
        make_study(update_norm={"inputs": {"nope": {"stage": "base"}}})


def test_panel_runs_without_baseline() -> None:
    assert panel_runs([({"panel": "betas_p", "value": 2.0}, "r")]) == [("", "betas_p", 2.0, "r")]


def test_panel_baselines_join_the_panels_of_their_own_shape() -> None:
    labelled = [({"shape": "sqrt", "panel": "baseline", "value": 0}, "b-sqrt"),
                ({"shape": "sqrt", "panel": "beta2_p", "value": 0.5}, "sqrt-0.5"),
                ({"shape": "linear", "panel": "baseline", "value": 0}, "b-lin"),
                ({"shape": "linear", "panel": "betas_p", "value": 2.0}, "lin-2")]
    assert panel_runs(labelled) == [("sqrt", "beta2_p", 1.0, "b-sqrt"), ("sqrt", "beta2_p", 0.5, "sqrt-0.5"),
                                    ("linear", "betas_p", 1.0, "b-lin"), ("linear", "betas_p", 2.0, "lin-2")]


def test_geometry_runs_get_snapshots(tmp_path: Path) -> None:
    study = make_study(landscape={"enabled": True, "options": {"offset": 1}}, trajectory={"enabled": True})
    plan, resolver = resolved(study, tmp_path)
    assert plan["base"].spec.train.snapshot_every == 1  # 10 // 20 -> at least 1
    runs = study_runs(plan, resolver)
    landscape = get_unit("landscape")
    inputs = unit_inputs(study, landscape, runs)
    geometry = group(landscape.inputs["runs"], inputs["runs"])
    assert sorted(geometry) == ["linear", "sqrt"] and all(len(v) == 1 for v in geometry.values())
    spec = resolver.resolve(plan[geometry["sqrt"][0].key]).spec  # the run folders are not written here
    assert spec.train.snapshot_every == 1 and spec.train.snapshot_steps == [10] and spec.data.order.seed == 3
    assert resolver.resolve(plan["cd-sqrt-s4"]).spec.train.snapshot_every is None
    assert group(landscape.inputs["base"], inputs["base"]) == {"stable": inputs["base"]}
    names = [u.name for u in enabled_units(study, runs)]
    assert "landscape" in names and "trajectory" in names and "sharpness" not in names


def test_fingerprints_follow_inputs_and_options(tmp_path: Path) -> None:
    study = make_study()
    plan, resolver = resolved(study, tmp_path)
    runs = study_runs(plan, resolver)
    unit = get_unit("perplexity")
    inputs = unit_inputs(study, unit, runs)
    fp = unit_fingerprint(study, unit, inputs, {"bias_variance": "x"})
    assert fp == unit_fingerprint(study, unit, inputs, {"bias_variance": "x"})
    assert fp != unit_fingerprint(study, unit, inputs, {"bias_variance": "y"})  # upstream table changed
    assert fp != unit_fingerprint(study, unit, {"cooldowns": inputs["cooldowns"][:-1]}, {"bias_variance": "x"})
    align = get_unit("alignment")
    other = make_study(alignment={"options": {"window": 3}})
    assert unit_fingerprint(study, align, unit_inputs(study, align, runs), {}) != \
        unit_fingerprint(other, align, unit_inputs(other, align, runs), {})  # options changed
