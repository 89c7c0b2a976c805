"""Study plan: expansion counts, unique and stable run identities, the data layout, the base spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsdlab.data.orders import portion_bounds
from wsdlab.study.plan import base_run_spec, continue_layout, expand_plan, fresh_layout
from wsdlab.study.resolve import Resolver, run_identity
from wsdlab.study.spec import load_study, parse_study, builtin_study_path
from wsdlab.train.checkpoint import write_stub_checkpoint
from wsdlab.train.spec_io import write_spec


def study_data(**extra) -> dict:
    data = {
        "name": "t",
        "base": {"preset": "tiny", "spec": {"train": {"steps": 20, "batch_size": 4}},
                 "overrides": {"optim.lr": "0.002"}},
        "cooldown": {"steps": 6, "shapes": ["linear", "sqrt", {"shape": "lowered_linear", "param": 0.7}],
                     "seeds": [0, 1], "data": "continue"},
        "reference": {"multiplier": 2},
        "averaging": {"num_portions": 3},
        "hyperparams": {"seeds": [0, 1], "beta_powers": [2.0], "beta2_powers": [0.5, 2.0], "batch_scales": [2],
                        "weight_decay_off": True, "reset_optimizer": True},
    }
    data.update(extra)
    return data


def test_expansion_counts_and_keys() -> None:
    plan = expand_plan(parse_study(study_data()))
    roles = [r.role for r in plan]
    assert roles.count("base") == 1 and plan.runs[0].key == "base"
    assert roles.count("cooldown") == 3 * 2
    assert roles.count("reference") == 2
    assert roles.count("portion") == 3 and roles.count("long") == 1
    # per seed: baseline + 1 betas + 2 beta2 + batch x2 with/without half-life + wd off + reset = 8
    assert roles.count("hyperparam") == 2 * 8
    assert len({r.key for r in plan}) == len(plan)
    assert all(r.parent == "base" for r in plan.runs[1:])
    ref = plan["ref-sqrt-s1"]
    assert ref.recipe.steps == 12 and ref.recipe.seed == 1 and ref.recipe.shape.shape == "sqrt"
    long = plan["avg-sqrt-all3"]
    assert long.recipe.steps == 18 and long.recipe.overrides["data.order.num_portions"] == 1
    assert [plan[f"avg-sqrt-p{i}of3"].recipe.overrides["data.order.portion"] for i in range(3)] == [0, 1, 2]
    batch = plan["hp-sqrt-batch2-hl-s1"]
    assert batch.labels["panel"] == "batch_x_half_life" and batch.recipe.batch_scale == 2 and batch.recipe.match_half_life
    assert plan["hp-sqrt-beta20.5-s0"].recipe.beta2_only


def test_variants_multiply_the_grid() -> None:
    data = study_data(reference={"enabled": False}, averaging={"enabled": False}, hyperparams={"enabled": False})
    data["cooldown"]["variants"] = [{"name": "a"}, {"name": "b", "overrides": {"optim.weight_decay": 0.0}}]
    plan = expand_plan(parse_study(data))
    assert len(plan) == 1 + 3 * 2 * 2
    assert plan["cd-linear-s0-b"].recipe.overrides["optim.weight_decay"] == 0.0
    assert "optim.weight_decay" not in plan["cd-linear-s0-a"].recipe.overrides


def test_base_spec_precedence() -> None:
    spec = base_run_spec(parse_study(study_data()))
    assert spec.model.preset == "tiny" and spec.model.d_model == 128
    assert spec.train.steps == 20 and spec.train.batch_size == 4
    assert spec.optim.lr == 0.002  # dotted override, YAML-parsed
    assert spec.schedule.kind == "wso" and spec.train.progress is False


def test_base_must_be_a_stable_run() -> None:
    data = study_data()
    data["base"]["spec"]["schedule"] = {"kind": "cosine"}
    with pytest.raises(ValueError, match="base.spec.schedule.kind"):
        expand_plan(parse_study(data))
    data = study_data()
    data["base"]["overrides"]["train.steps"] = 0
    with pytest.raises(ValueError, match=r"base.spec.train.steps"):
        expand_plan(parse_study(data))


def test_fresh_layout_portions_are_exact() -> None:
    num_train, seqs, p = 1000, 37, 3
    layout = fresh_layout(num_train, seqs, p)
    bounds = lambda o: portion_bounds(num_train, o["data.order.num_portions"], o["data.order.portion"])  # noqa: E731
    base_lo, base_hi = bounds(layout.base)
    parts = [bounds(o) for o in layout.parts]
    cd = bounds(layout.cooldown)
    assert (base_lo, base_hi) == (0, 500)
    assert all(hi - lo >= seqs for lo, hi in parts)  # a cooldown fits in its portion
    assert all(lo >= base_hi for lo, _ in parts)  # never data the base reads
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # disjoint and adjacent
    assert bounds(layout.union) == (parts[0][0], parts[-1][1])  # the longer run reads exactly their union
    assert cd == parts[-1]


def test_fresh_layout_too_little_data() -> None:
    with pytest.raises(ValueError, match="cooldown.data"):
        fresh_layout(100, 30, 2)
    assert continue_layout(2).union == {"data.order.num_portions": 1, "data.order.portion": 0}


def test_fresh_plan_needs_num_train_and_sets_orders() -> None:
    data = study_data()
    data["cooldown"]["data"] = "fresh"
    study = parse_study(data)
    with pytest.raises(ValueError, match="num_train"):
        expand_plan(study)
    plan = expand_plan(study, num_train=10_000)
    assert plan["base"].spec.data.order.num_portions == 2
    q = plan["cd-linear-s0"].recipe.overrides["data.order.num_portions"]
    assert q % 3 == 0 and plan["cd-linear-s0"].recipe.overrides["data.order.portion"] == q - 1
    assert plan["ref-sqrt-s0"].recipe.overrides["data.order.portion"] == q - 1


def test_builtin_studies_expand() -> None:
    for name in ("default", "quick", "paper-60M", "paper-210M"):
        study = load_study(builtin_study_path(name))
        plan = expand_plan(study, num_train=12_000_000 if name.startswith("paper") else 30_000)
        assert len({r.key for r in plan}) == len(plan) > 10


def _fake_checkpoint(run_dir: Path, spec) -> None:
    ckpt = run_dir / "checkpoints" / str(spec.train.steps)
    write_stub_checkpoint(ckpt, spec)
    write_spec(spec, run_dir / "spec.yaml")
    (run_dir / "COMPLETE").write_text("done\n")


def test_resolution_hashes_are_unique_stable_and_location_independent(tmp_path: Path) -> None:
    study = parse_study(study_data())
    plan = expand_plan(study)
    resolver = Resolver(plan, tmp_path / "a")
    assert resolver.resolve(plan["cd-linear-s0"]) is None  # the base is not complete yet
    base = resolver.resolve(plan["base"])
    _fake_checkpoint(base.path, base.spec)
    runs = resolver.resolve_all()
    assert all(r is not None for r in runs.values())
    dirs = {r.path for r in runs.values()}
    hashes = {r.hash for r in runs.values()}
    assert len(dirs) == len(hashes)
    # the hyper-parameter baseline is the grid's sqrt cooldown: same spec, same folder
    assert runs["hp-sqrt-baseline-s0"].path == runs["cd-sqrt-s0"].path
    assert len(dirs) == len(plan) - 2
    assert all(r.path.name == f"{r.key}-{r.hash}" for r in runs.values() if not r.key.startswith("hp-sqrt-baseline"))
    assert runs["cd-linear-s0"].spec.init_from == str((base.path / "checkpoints" / "20").resolve())

    # the same spec in another folder gives the same hashes
    other = Resolver(expand_plan(parse_study(study_data())), tmp_path / "b")
    base_b = other.resolve(other.plan["base"])
    _fake_checkpoint(base_b.path, base_b.spec)
    assert {k: r.hash for k, r in other.resolve_all().items()} == {k: r.hash for k, r in runs.items()}
    # and a change anywhere changes the hashes
    changed = study_data()
    changed["cooldown"]["steps"] = 7
    third = Resolver(expand_plan(parse_study(changed)), tmp_path / "a")
    assert third.resolve(third.plan["cd-linear-s0"]).hash != runs["cd-linear-s0"].hash
    assert run_identity(base.spec, tmp_path / "a") == base.hash
