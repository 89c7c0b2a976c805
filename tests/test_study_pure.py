"""A study is data: the whole plan (every RunSpec) up front with nothing on disk, every check before
training, a pure `branch_spec`, and run names that survive upgrades and moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.common.errors import ConfigError
from wsdlab.study.executors import SequentialExecutor
from wsdlab.study.identity import legacy_identity, run_identity
from wsdlab.study.plan import expand_plan
from wsdlab.study.resolve import Resolver
from wsdlab.study.runner import load_study_dir, plan_status, run_study
from wsdlab.study.spec import parse_study
from wsdlab.train import branch_from_checkpoint, branch_spec, run_preset
from wsdlab.train.checkpoint import write_stub_checkpoint
from wsdlab.train.config import BranchConfig, RunSpec, TrainConfig
from wsdlab.train.spec_io import write_spec

FIXTURE = Path(__file__).parent / "fixtures" / "study-v0.1"  # made by wsdlab 0.1: fixtures/make_study_v0_1.py


def shorthand(**extra) -> dict:
    data = {
        "name": "legacy",
        "base": {"preset": "tiny", "overrides": {"train.steps": 10}},
        "cooldown": {"steps": 4, "shapes": ["linear", "sqrt"], "seeds": [0, 1], "data": "continue"},
        "reference": {"multiplier": 2},
        "hyperparams": {"seeds": [0], "reset_optimizer": True},
        "analyses": {"bias_variance": {"enabled": False}, "recency": {"enabled": False}},
        "report": {"enabled": False},
    }
    data.update(extra)
    return data


def graph(stages: dict, **extra) -> dict:
    root = {"preset": "tiny", "overrides": {"train.steps": 8, "schedule.kind": "wso"}}
    return {"name": "g", "stages": {"base": root, **stages}, "report": {"enabled": False}, **extra}


class FakeTrain:
    """Stands in for wsdlab.train.train: the files of a complete run (stub checkpoints), recording each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, spec: RunSpec, out: Path, *, sinks=()) -> None:
        out = Path(out)
        self.calls.append(out.name)
        out.mkdir(parents=True, exist_ok=True)
        write_spec(spec, out / "spec.yaml")
        for step in sorted({*spec.train.checkpoint_steps, spec.train.steps}):
            write_stub_checkpoint(out / "checkpoints" / str(step), spec, step=step)
        (out / "metrics.jsonl").write_text(json.dumps({"step": spec.train.steps, "loss": 1.0}) + "\n")
        (out / "COMPLETE").write_text(f"{spec.train.steps}\n")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ the plan


def test_every_spec_is_planned_without_touching_the_disk(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WSDLAB_CACHE", str(tmp_path / "cache"))
    plan = expand_plan(parse_study(shorthand()))
    assert files_under(tmp_path) == []  # nothing read from or written to a study folder, no stub checkpoint
    cd = plan["cd-sqrt-s1"]
    # the branch's spec, computed from the base's: 10 stable steps, then a 4-step sqrt decay from step 10
    assert (cd.parent, cd.step) == ("base", 10)
    assert cd.spec.train.steps == 14 and cd.spec.schedule.kind == "wsd" and cd.spec.schedule.cooldown_steps == 4
    assert cd.spec.schedule.shape == "sqrt" and cd.spec.data.order.seed == 1 and cd.spec.init_from is None
    assert plan["ref-sqrt-s0"].spec.train.steps == 10 + 8  # reference: multiplier 2 x 4 steps
    assert plan["hp-sqrt-reset-s0"].spec.branch.reset_optimizer is True


def test_study_plan_show_prints_the_spec_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "s.yaml"
    import yaml

    study.write_text(yaml.safe_dump(shorthand()))
    before = files_under(tmp_path)
    result = CliRunner().invoke(app, ["study", "plan", str(study), "--show", "cd-linear-s0"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["train"]["steps"] == 14 and shown["schedule"]["shape"] == "linear"
    assert shown["branch"]["parent_step"] == 10
    assert files_under(tmp_path) == before
    missing = CliRunner().invoke(app, ["study", "plan", str(study), "--show", "nope"])
    assert missing.exit_code == 2 and "has no run 'nope'" in missing.output


def tiny_parent() -> RunSpec:
    data = run_preset("tiny").model_dump()
    data["train"]["steps"] = 10
    data["schedule"].update(kind="wso", warmup_steps=2)
    return RunSpec.model_validate(data)


def test_pure_branch_spec_equals_the_checkpoint_path(tmp_path: Path) -> None:
    parent = tiny_parent()
    ckpt = write_stub_checkpoint(tmp_path / "run" / "checkpoints" / "6", parent, step=6)
    cfg = BranchConfig(steps=4, shape="cosine", seed=3, beta_power=0.5)
    pure = branch_spec(parent, 6, cfg)
    from_disk = branch_from_checkpoint(ckpt, cfg)
    assert pure.init_from is None and from_disk.init_from == str(ckpt.resolve())
    assert pure == from_disk.model_copy(update={"init_from": None})
    assert pure.optim.beta2 == pytest.approx(0.95 ** 0.5) and pure.train.steps == 10
    with pytest.raises(ConfigError, match="step 11 is outside"):
        branch_spec(parent, 11, cfg)


def test_branch_seed_survives_a_data_order_patch() -> None:
    """A branch that sets both `seed` and `data.order` keeps its seed and the parent's other order fields."""
    parent = tiny_parent()
    parent = parent.model_copy(update={"data": parent.data.model_copy(
        update={"order": parent.data.order.model_copy(update={"shuffle": False})})})
    cfg = BranchConfig(steps=2, seed=5, data={"order": {"num_portions": 2, "portion": 1}})
    order = branch_spec(parent, 10, cfg).data.order
    assert (order.seed, order.num_portions, order.portion, order.shuffle) == (5, 2, 1, False)


# ----------------------------------------------------------------------- checked before anything trains


@pytest.mark.parametrize("stages, extra, message", [
    ({"cd": {"from": "base", "branch": {"steps": 2, "shape": "wiggle"}}}, {},
     "unknown cooldown shape 'wiggle'"),
    ({"cd": {"from": "base", "grid": {"branch.shape": ["linear", "wiggle"]}, "branch": {"steps": 2}}}, {},
     "unknown cooldown shape 'wiggle'"),
    ({"ft": {"job": "sft", "preset": "tiny", "overrides": {"train.steps": 4}}}, {}, "give the stage `from: <stage>`"),
    ({"ft": {"from": "base", "job": "sft", "branch": {"steps": 2, "mode": "restart"}}}, {}, "reads no SFT data"),
    ({}, {"analyses": {"bias_variance": {"enabled": True, "inputs": {"cooldowns": {"stage": "nope"}}}}},
     "no stage 'nope'"),
    ({"cd": {"from": "base", "grid": {"optim.lrr": [0.1, 0.2]}, "branch": {"steps": 2}}}, {},
     "optim has no field 'lrr'"),
    ({"cd": {"from": "base", "grid": {"branch.stepz": [1, 2]}}}, {}, "BranchConfig has no field 'stepz'"),
    ({"cd": {"from": "base", "at": {"step": 9}, "branch": {"steps": 2}}}, {},
     "run 'cd' of study 'g': checkpoint selector step=9 picks step 9, outside the parent run 'g-base'"),
])
def test_bad_studies_fail_when_planned(tmp_path: Path, stages: dict, extra: dict, message: str) -> None:
    calls = FakeTrain()
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("`", ".")):
        study = parse_study(graph(stages, **extra))
        run_study(study, tmp_path / "s", executor=SequentialExecutor(calls), analyses=False, report=False)
    assert calls.calls == [] and not (tmp_path / "s").exists()  # nothing trained, nothing written


def test_a_billion_run_grid_is_refused_with_its_count_before_expanding() -> None:
    axis = list(range(1000))
    study = parse_study(graph({"cd": {"from": "base", "branch": {"steps": 2},
                                      "grid": {"train.seed": axis, "data.order.seed": axis, "optim.lr": [0.1 + i for i in axis]}}}))
    with pytest.raises(ConfigError, match=r"expands to 1,000,000,001 runs \(at most 100,000\)"):
        expand_plan(study)  # refused from the axis sizes: no point is built (that would take hours and memory)


# ------------------------------------------------------------------------------ identity and upgrades


@pytest.fixture
def extra_train_field():
    """A defaulted field added to TrainConfig, as a later release might (removed again afterwards)."""
    TrainConfig.__annotations__["new_knob"] = "int"
    TrainConfig.model_fields["new_knob"] = FieldInfo(annotation=int, default=3)
    TrainConfig.model_rebuild(force=True)
    RunSpec.model_rebuild(force=True)
    yield
    del TrainConfig.__annotations__["new_knob"]
    del TrainConfig.model_fields["new_knob"]
    TrainConfig.model_rebuild(force=True)
    RunSpec.model_rebuild(force=True)


def test_a_new_defaulted_field_renames_no_run_and_retrains_nothing(tmp_path: Path, request) -> None:
    first = FakeTrain()
    run_study(parse_study(shorthand()), tmp_path / "s", executor=SequentialExecutor(first), analyses=False, report=False)
    assert len(first.calls) == 8  # 9 planned runs, the reset panel's baseline is cd-sqrt-s0
    folders = sorted(p.name for p in (tmp_path / "s" / "runs").iterdir())
    request.getfixturevalue("extra_train_field")
    assert RunSpec.model_validate({"train": {"steps": 5}}).train.new_knob == 3
    again = FakeTrain()
    statuses = run_study(parse_study(shorthand()), tmp_path / "s", executor=SequentialExecutor(again),
                         analyses=False, report=False)
    assert again.calls == [] and all(s.state == "complete" for s in statuses.values())
    assert sorted(p.name for p in (tmp_path / "s" / "runs").iterdir()) == folders


def test_identity_is_what_was_set_and_lineage() -> None:
    spec = RunSpec.model_validate({"name": "x", "train": {"steps": 5}, "optim": {"lr": 0.01}})
    default_lr = RunSpec.model_validate({"name": "x", "train": {"steps": 5}, "optim": {"lr": 1e-3}})
    assert run_identity(default_lr, Path("/s")) == run_identity(
        RunSpec.model_validate({"name": "x", "train": {"steps": 5}}), Path("/s"))  # a default set = not set
    assert run_identity(spec, Path("/s")) != run_identity(default_lr, Path("/s"))
    branch = spec.model_copy(update={"init_from": "/a/runs/p-1/checkpoints/3"})
    moved = spec.model_copy(update={"init_from": "/b/runs/p-1/checkpoints/3"})
    assert run_identity(branch, Path("/a"), "abc@3") == run_identity(moved, Path("/b"), "abc@3")
    assert run_identity(branch, Path("/a"), "abc@3") != run_identity(branch, Path("/a"), "abc@4")


def test_a_study_of_release_0_1_resumes_without_retraining(tmp_path: Path) -> None:
    """The fixture was written by wsdlab 0.1 (folder names from the old hash of the whole spec), in another
    folder (its specs' init_from point there): a moved study of the old release."""
    study_dir = tmp_path / "old"
    shutil.copytree(FIXTURE, study_dir)
    old = sorted(p.name for p in (study_dir / "runs").iterdir())
    study, plan = load_study_dir(study_dir)
    resolver = Resolver(plan, study_dir)
    statuses = plan_status(plan, resolver)
    assert all(s.state == "complete" for s in statuses.values())
    assert sorted({resolver.resolve(r).path.name for r in plan}) == old  # every run found in its old folder
    base = resolver.resolve(plan["base"])
    assert base.path.name == f"base-{legacy_identity(base.spec, study_dir)}"
    again = FakeTrain()
    run_study(study, study_dir, executor=SequentialExecutor(again), analyses=False, report=False)
    assert again.calls == []
    assert sorted(p.name for p in (study_dir / "runs").iterdir()) == old  # no new folder


def test_a_moved_study_keeps_its_run_names(tmp_path: Path) -> None:
    run_study(parse_study(shorthand()), tmp_path / "a", executor=SequentialExecutor(FakeTrain()),
              analyses=False, report=False)
    shutil.move(tmp_path / "a", tmp_path / "b")
    _, plan = load_study_dir(tmp_path / "b")
    resolver = Resolver(plan, tmp_path / "b")
    assert all(plan_status(plan, resolver)[r.key].state == "complete" for r in plan)
    again = FakeTrain()
    run_study(parse_study(shorthand()), tmp_path / "b", executor=SequentialExecutor(again), analyses=False, report=False)
    assert again.calls == []


@pytest.mark.parametrize("name", ["wso", "universality", "length-sweep", "schedule-alpha"])
def test_a_stored_study_plans_the_same_runs(name: str) -> None:
    """STUDY/study.yaml (dump_study) reads back to the same runs and specs: typed points dump to the YAML's
    dotted form."""
    import yaml

    from wsdlab.study.spec import builtin_study_path, dump_study, load_study

    study = load_study(builtin_study_path(name))
    again = parse_study(yaml.safe_load(dump_study(study)))
    assert [(r.key, r.spec) for r in expand_plan(again)] == [(r.key, r.spec) for r in expand_plan(study)]


def test_plan_rows_carry_a_stages_ranks(tmp_path: Path) -> None:
    """`study plan` sizes memory per GPU with a stage's `resources.gpus_per_run` (wso-1b: 8 ranks per run)."""
    from wsdlab.study.runner import plan_costs
    from wsdlab.study.spec import builtin_study_path, load_study

    rows = plan_costs(load_study(builtin_study_path("wso-1b")), tmp_path / "w")
    assert {r["gpus"] for r in rows} == {8}
    rows = plan_costs(parse_study(shorthand()), tmp_path / "s")
    assert {r["gpus"] for r in rows} == {None}  # no resources set: --gpus decides
    assert files_under(tmp_path) == []
