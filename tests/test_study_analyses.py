"""Study-to-analysis glue: run grouping, panel baselines, step selection and the skip-if-unchanged fingerprints."""

from __future__ import annotations

from pathlib import Path

from wsdlab.study.analyses import STEPS, StepContext, StudyRuns, _panel_runs, enabled_steps, evenly, step_fingerprint
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


def test_evenly_keeps_ends() -> None:
    assert evenly([5, 1, 3], 5) == [1, 3, 5]
    assert evenly(list(range(11)), 3) == [0, 5, 10]
    assert evenly([1, 2, 3], 1) == [3]


def test_groups_and_panels(tmp_path: Path) -> None:
    plan, resolver = resolved(make_study(), tmp_path)
    runs = StudyRuns.from_plan(plan, resolver)
    assert list(runs.cooldowns) == ["linear", "sqrt"] and all(len(v) == 2 for v in runs.cooldowns.values())
    assert [r.spec.data.order.seed for r in runs.cooldowns["sqrt"]] == [3, 4]
    assert len(runs.references) == 2
    # every shape has its averaging set; one longer run serves them all
    assert sorted(runs.portions) == ["linear", "sqrt"] and all(len(v) == 2 for v in runs.portions.values())
    assert runs.longer is not None and runs.longer.key == "avg-long-sqrt-all2"
    assert runs.geometry == {}
    panels = [(sh, p, v, r.key) for sh, p, v, r in runs.panels]
    # the baseline (the grid's sqrt seed-3 cooldown) joins each panel at the neutral value
    assert ("sqrt", "beta2_p", 1.0, "hp-sqrt-baseline-s3") in panels
    assert ("sqrt", "beta2_p", 2.0, "hp-sqrt-beta22-s3") in panels
    assert ("sqrt", "weight_decay_off", 0, "hp-sqrt-baseline-s3") in panels
    assert len(panels) == 4


def test_panel_runs_without_baseline() -> None:
    assert _panel_runs([({"panel": "betas_p", "value": 2.0}, "r")]) == [("", "betas_p", 2.0, "r")]


def test_panel_baselines_join_the_panels_of_their_own_shape() -> None:
    labelled = [({"shape": "sqrt", "panel": "baseline", "value": 0}, "b-sqrt"),
                ({"shape": "sqrt", "panel": "beta2_p", "value": 0.5}, "sqrt-0.5"),
                ({"shape": "linear", "panel": "baseline", "value": 0}, "b-lin"),
                ({"shape": "linear", "panel": "betas_p", "value": 2.0}, "lin-2")]
    assert _panel_runs(labelled) == [("sqrt", "beta2_p", 1.0, "b-sqrt"), ("sqrt", "beta2_p", 0.5, "sqrt-0.5"),
                                     ("linear", "betas_p", 1.0, "b-lin"), ("linear", "betas_p", 2.0, "lin-2")]


def test_geometry_runs_get_snapshots(tmp_path: Path) -> None:
    study = make_study(landscape={"enabled": True, "options": {"offset": 1}}, trajectory={"enabled": True})
    plan, resolver = resolved(study, tmp_path)
    assert plan["base"].spec.train.snapshot_every == 1  # 10 // 20 -> at least 1
    runs = StudyRuns.from_plan(plan, resolver)
    assert sorted(runs.geometry) == ["linear", "sqrt"]
    spec = runs.geometry["sqrt"].spec
    assert spec.train.snapshot_every == 1 and spec.train.snapshot_steps == [10] and spec.data.order.seed == 3
    assert runs.cooldowns["sqrt"][1].spec.train.snapshot_every is None
    names = [s.name for s in enabled_steps(study, runs)]
    assert "landscape" in names and "trajectory" in names and "sharpness" not in names


def test_fingerprints_follow_inputs_and_options(tmp_path: Path) -> None:
    study = make_study()
    plan, resolver = resolved(study, tmp_path)
    ctx = StepContext(study, StudyRuns.from_plan(plan, resolver), tmp_path / "tables")
    step = next(s for s in STEPS if s.name == "perplexity")
    fp = step_fingerprint(step, ctx, {"bias_variance": "x"})
    assert fp == step_fingerprint(step, ctx, {"bias_variance": "x"})
    assert fp != step_fingerprint(step, ctx, {"bias_variance": "y"})  # upstream table changed
    other = make_study(perplexity={"options": {"device": "cpu"}})
    ctx2 = StepContext(other, StudyRuns.from_plan(*resolved(other, tmp_path / "b")), tmp_path / "tables")
    assert fp != step_fingerprint(step, ctx2, {"bias_variance": "x"})  # options changed
