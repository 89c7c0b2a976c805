"""Study plan: expansion counts, unique and stable run identities, the data layout, the base spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsdlab.data.orders import portion_bounds
from wsdlab.study.cooldown import base_run_spec, continue_layout, fresh_layout
from wsdlab.study.plan import expand_plan
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
    roles = [r.stage for r in plan]
    assert roles.count("base") == 1 and plan.runs[0].key == "base"
    assert roles.count("cooldown") == 3 * 2
    assert roles.count("reference") == 2
    assert roles.count("portion") == 3 * 3 and roles.count("long") == 1  # N portions for every shape
    # per seed: baseline + 1 betas + 2 beta2 + batch x2 with/without half-life + wd off + reset = 8
    assert roles.count("hyperparam") == 2 * 8
    assert len({r.key for r in plan}) == len(plan)
    assert all(r.parent == "base" for r in plan.runs[1:])
    ref = plan["ref-sqrt-s1"]
    assert ref.branch.steps == 12 and ref.branch.seed == 1 and ref.branch.shape == "sqrt"
    long = plan["avg-long-sqrt-all3"]
    assert long.branch.steps == 18 and long.branch.overrides["data.order.num_portions"] == 1
    # stable, then a sqrt decay of 20% of the run's 20 + 18 steps counted from step 0
    assert long.branch.shape == "sqrt" and long.branch.cooldown_steps == round(0.2 * 38)
    for label in ("linear", "sqrt", "lowered_linear-0.7"):
        portions = [plan[f"avg-{label}-p{i}of3"] for i in range(3)]
        assert [r.branch.overrides["data.order.portion"] for r in portions] == [0, 1, 2]
        assert all(r.labels["shape"] == label and r.branch.steps == 6 and r.branch.seed == 0 for r in portions)
    batch = plan["hp-sqrt-batch2-hl-s1"]
    assert batch.labels["panel"] == "batch_x_half_life" and batch.branch.batch_scale == 2 and batch.branch.match_half_life
    assert plan["hp-sqrt-beta20.5-s0"].branch.beta2_only


def test_variants_multiply_the_grid() -> None:
    data = study_data(reference={"enabled": False}, averaging={"enabled": False}, hyperparams={"enabled": False})
    data["cooldown"]["variants"] = [{"name": "a"}, {"name": "b", "overrides": {"optim.weight_decay": 0.0}}]
    plan = expand_plan(parse_study(data))
    assert len(plan) == 1 + 3 * 2 * 2
    assert plan["cd-linear-s0-b"].branch.overrides["optim.weight_decay"] == 0.0
    assert "optim.weight_decay" not in plan["cd-linear-s0-a"].branch.overrides


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
    assert layout.reference == layout.cooldown  # no reference length given: the cooldowns' part, repeated


def test_fresh_layout_references_read_no_sequence_twice() -> None:
    """reference.data fresh: the half the base never reads (the cooldowns' and averaging parts inside it),
    as long as it holds a whole reference; 1001 sequences: the base reads [0, 500), the references [500, 1001)."""
    num_train, seqs, p = 1001, 37, 3
    bounds = lambda o: portion_bounds(num_train, o["data.order.num_portions"], o["data.order.portion"])  # noqa: E731
    for ref_seqs in (1, 37, 501):
        layout = fresh_layout(num_train, seqs, p, ref_seqs)
        assert bounds(layout.reference) == (500, 1001) and bounds(layout.base) == (0, 500)
        lo, hi = bounds(layout.reference)
        assert all(lo <= a and b <= hi for a, b in map(bounds, (layout.cooldown, layout.union, *layout.parts)))
    with pytest.raises(ValueError, match="reference.data"):
        fresh_layout(num_train, seqs, p, 502)  # more than the unread half: it would repeat


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
    q = plan["cd-linear-s0"].branch.overrides["data.order.num_portions"]
    assert q % 3 == 0 and plan["cd-linear-s0"].branch.overrides["data.order.portion"] == q - 1
    # references (12 steps x 4 sequences) read the half the base does not read, in their own orders
    ref = plan["ref-sqrt-s0"].branch.overrides
    assert (ref["data.order.num_portions"], ref["data.order.portion"]) == (2, 1)
    assert plan["ref-sqrt-s1"].branch.seed == 1
    data["reference"] = {"multiplier": 2, "data": "repeat"}  # the paper's recipe: the cooldowns' part, repeated
    repeat = expand_plan(parse_study(data), num_train=10_000)
    assert repeat["ref-sqrt-s0"].branch.overrides["data.order.num_portions"] == q
    assert repeat["ref-sqrt-s0"].branch.overrides["data.order.portion"] == q - 1
    assert all(repeat[r.key].branch == r.branch for r in plan if r.stage != "reference")


def _fresh_study(**extra):
    data = study_data(**extra)
    data["cooldown"]["data"] = "fresh"
    return parse_study(data)


def test_averaging_sets_per_shape_and_the_longer_run_over_their_union() -> None:
    """§5: N cooldowns per shape on disjoint portions, one longer run over exactly their union."""
    num_train = 10_000
    study = _fresh_study()
    plan = expand_plan(study, num_train=num_train)
    bounds = lambda r: portion_bounds(num_train, r.branch.overrides["data.order.num_portions"],  # noqa: E731
                                      r.branch.overrides["data.order.portion"])
    sets = {}
    for run in plan.with_role("portion"):
        sets.setdefault(run.labels["shape"], []).append(bounds(run))
    assert sorted(sets) == sorted(s.label for s in study.cooldown.shapes)  # every shape of the study
    first = sets["sqrt"]
    assert all(parts == first for parts in sets.values())  # every shape sees the same portions
    assert all(a[1] == b[0] for a, b in zip(first, first[1:])) and len(first) == 3  # disjoint, adjacent
    (long,) = plan.with_role("long")
    assert bounds(long) == (first[0][0], first[-1][1])  # exactly the union of the portions
    assert long.branch.steps == 3 * study.cooldown.steps and long.branch.seed == study.averaging.seed


def test_longer_run_schedule_is_stable_then_sqrt_over_a_fifth_of_its_total(tmp_path: Path) -> None:
    from wsdlab.schedules import build_schedule, get_shape, warmup_stable_decay

    study = parse_study(study_data())
    plan = expand_plan(study)
    resolver = Resolver(plan, tmp_path)
    base = resolver.resolve(plan["base"])
    _fake_checkpoint(base.path, base.spec)
    spec = resolver.resolve(plan["avg-long-sqrt-all3"]).spec
    k, total = 20, 20 + 3 * 6
    decay = round(0.2 * total)
    assert spec.train.steps == total and spec.schedule.cooldown_steps == decay and spec.schedule.shape == "sqrt"
    f = build_schedule(spec.schedule, total)
    expected = warmup_stable_decay(total, spec.schedule.warmup_steps, decay, get_shape("sqrt"), spec.schedule.alpha)
    assert [f(t) for t in range(k, total + 1)] == pytest.approx([expected(t) for t in range(k, total + 1)])
    assert all(f(t) == 1.0 for t in range(k + 1, total - decay + 1))  # stable continuation at the peak LR
    assert all(f(t) < f(t - 1) for t in range(total - decay + 2, total + 1))  # then the decay
    assert f(total) == pytest.approx(spec.schedule.alpha)


def test_longer_run_matches_the_paper_numbers() -> None:
    """The paper: pre-cooldown 26,400 steps, cooldowns of 6,600 (20% of 33,000), four portions; the longer
    run has "a total of 52.8k steps and a 20% cooldown portion" -> 26,400 steps after the branch, 10,560 decay."""
    from wsdlab.study.cooldown import long_run_steps

    data = study_data(averaging={"num_portions": 4})
    data["cooldown"]["steps"] = 6600
    study = parse_study(data)
    assert long_run_steps(study, 26_400) == (26_400, 10_560)


def test_longer_run_decay_must_fit_after_the_branch() -> None:
    from wsdlab.common.errors import ConfigError

    study = parse_study(study_data(averaging={"num_portions": 2, "long_cooldown_fraction": 0.5}))
    with pytest.raises(ConfigError, match="averaging.long_cooldown_fraction"):
        expand_plan(study)  # 0.5 x (20 + 12) = 16 > 12


def test_averaging_shapes_can_be_chosen() -> None:
    plan = expand_plan(parse_study(study_data(averaging={"num_portions": 2, "shapes": ["sqrt", "square"]})))
    assert sorted({r.labels["shape"] for r in plan.with_role("portion")}) == ["sqrt", "square"]


def test_runs_equal_to_a_grid_cooldown_reuse_its_recipe() -> None:
    """The last portion reads the cooldowns' data: with the grid's seed it is the grid's cooldown (snapshots of
    the geometry run included), so it is trained once; so is each hyper-parameter baseline."""
    study = _fresh_study(averaging={"num_portions": 2},
                         analyses={"landscape": {"enabled": True, "options": {"offset": 1}}})
    plan = expand_plan(study, num_train=10_000)
    for label in ("linear", "sqrt", "lowered_linear-0.7"):
        grid = plan[f"cd-{label}-s0"].branch
        assert "train.snapshot_every" in grid.overrides  # the geometry run of the shape
        assert plan[f"avg-{label}-p1of2"].branch == grid
        assert plan[f"avg-{label}-p0of2"].branch != grid  # another portion: another run
    assert plan["hp-sqrt-baseline-s0"].branch == plan["cd-sqrt-s0"].branch
    assert plan["hp-sqrt-baseline-s1"].branch == plan["cd-sqrt-s1"].branch
    assert plan["hp-sqrt-beta22-s0"].branch.beta_power == 2.0


def test_hyperparameter_panels_expand_per_shape() -> None:
    hp = {"shapes": ["sqrt", "linear"], "seeds": [0], "beta_powers": [0.5, 2.0], "beta2_powers": [0.5],
          "weight_decay_off": True}
    plan = expand_plan(parse_study(study_data(hyperparams=hp)))
    runs = plan.with_role("hyperparam")
    assert len(runs) == 2 * (1 + 2 + 1 + 1)
    for label in ("sqrt", "linear"):
        mine = [r for r in runs if r.labels["shape"] == label]
        assert {r.labels["panel"] for r in mine} == {"baseline", "betas_p", "beta2_p", "weight_decay_off"}
        assert all(r.labels["shape"] == label for r in mine)
    assert plan["hp-linear-betas0.5-s0"].branch.beta_power == 0.5


def test_single_shape_panels_keep_their_keys_and_recipes() -> None:
    """`shape: sqrt` (the old form) and `shapes: [sqrt]` plan the same runs, so their hashes do not change."""
    hp = {"seeds": [0, 1], "beta2_powers": [0.5, 2.0], "batch_scales": [2], "reset_optimizer": True}
    one = expand_plan(parse_study(study_data(hyperparams={**hp, "shape": "sqrt"}))).with_role("hyperparam")
    listed = expand_plan(parse_study(study_data(hyperparams={**hp, "shapes": ["sqrt"]}))).with_role("hyperparam")
    assert [(r.key, r.branch, dict(r.labels)) for r in one] == [(r.key, r.branch, dict(r.labels)) for r in listed]
    assert [r.key for r in one][:2] == ["hp-sqrt-baseline-s0", "hp-sqrt-beta20.5-s0"]


def test_panel_seeds_give_single_panels_more_seeds() -> None:
    """panel_seeds: the beta2 and batch panels at seeds 0 and 1, the rest at `seeds` (0); seed 1 gets its
    baseline (the grid cooldown); seed 0's runs are the same runs as without panel_seeds."""
    hp = {"seeds": [0], "beta_powers": [2.0], "beta2_powers": [0.5, 2.0], "batch_scales": [2], "weight_decay_off": True}
    plain = expand_plan(parse_study(study_data(hyperparams=hp)))
    more = expand_plan(parse_study(study_data(
        hyperparams={**hp, "panel_seeds": {"beta2_powers": [0, 1], "batch_scales": [0, 1]}})))
    seed1 = {r.key for r in more.with_role("hyperparam") if r.labels["seed"] == 1}
    assert seed1 == {"hp-sqrt-baseline-s1", "hp-sqrt-beta20.5-s1", "hp-sqrt-beta22-s1", "hp-sqrt-batch2-s1",
                     "hp-sqrt-batch2-hl-s1"}
    assert more["hp-sqrt-baseline-s1"].branch == more["cd-sqrt-s1"].branch  # trained once, by the grid
    assert more["hp-sqrt-beta20.5-s1"].branch.seed == 1 and more["hp-sqrt-beta20.5-s1"].branch.beta2_only
    before = {r.key: r.branch for r in plain}
    assert all(before[r.key] == r.branch for r in more if r.key in before)
    assert set(before) <= {r.key for r in more}
    assert len(more.with_role("hyperparam")) == len(plain.with_role("hyperparam")) + 5
    with pytest.raises(ValueError, match="panel_seeds.reset_optimizer"):  # a panel that is off
        parse_study(study_data(hyperparams={**hp, "panel_seeds": {"reset_optimizer": [0, 1]}}))
    with pytest.raises(ValueError, match="panel_seeds"):
        parse_study(study_data(hyperparams={**hp, "panel_seeds": {"batch_scales": [1, 1]}}))


def test_default_study_run_count() -> None:
    """The default study's distinct runs (what it trains); keep it small: it must fit in minutes on 2 cores."""
    study = load_study(builtin_study_path("default"))
    plan = expand_plan(study, num_train=30_000)
    distinct: list = []
    for run in plan:
        if not any(run.branch == other for other in distinct):
            distinct.append(run.branch)  # the base has no recipe (None): counted once
    # seed 0: baseline + 8 panel runs; seeds 1, 2: baseline + 2 beta2 + 2 batch runs each
    assert len(plan) == 1 + 21 + 3 + 7 * 2 + 1 + 9 + 2 * 5
    assert len(distinct) == len(plan) - 7 - 3  # the last portion of each shape and the panel baselines are reused
    panels = plan.with_role("hyperparam")
    for panel in ("betas_p", "beta2_p"):  # p on both sides of 1 (1 = the baseline)
        values = sorted(r.labels["value"] for r in panels if r.labels["panel"] == panel)
        assert values[0] < 1 < values[-1]
    for panel in ("beta2_p", "batch_x", "batch_x_half_life"):  # §6.1 / §6.2 are judged across the 3 data orders
        assert {r.labels["seed"] for r in panels if r.labels["panel"] == panel} == {0, 1, 2}
    for seed in (0, 1, 2):
        assert plan[f"hp-sqrt-baseline-s{seed}"].branch == plan[f"cd-sqrt-s{seed}"].branch
    refs = plan.with_role("reference")  # one per data order, longer than a cooldown, its data read once
    assert [r.labels["seed"] for r in refs] == [0, 1, 2]
    assert all(r.branch.steps > plan["cd-sqrt-s0"].branch.steps for r in refs)
    order = refs[0].branch.overrides
    assert (order["data.order.num_portions"], order["data.order.portion"]) == (2, 1)  # the base's unread half


def test_builtin_studies_expand() -> None:
    """Every built-in study and its quick variant expand to uniquely named runs, specs included."""
    from wsdlab.study.spec import builtin_studies, QUICK_SUFFIX

    names = list(builtin_studies())
    assert {"default", "paper-60M", "paper-210M"} <= set(names)
    for name in names:
        for quick in (False, True):
            path = builtin_study_path(name).with_name(f"{name}{QUICK_SUFFIX if quick else ''}.yaml")
            if not path.is_file():
                continue
            study = load_study(path)
            plan = expand_plan(study, num_train=12_000_000 if name.startswith("paper") else 30_000)
            assert len({r.key for r in plan}) == len(plan) > 1
            for run in plan:  # every branch's spec is its parent's, branched at its step
                if run.parent is not None:
                    assert run.spec.branch is not None and run.spec.branch.parent_step == run.step
                    assert run.spec.model == plan[run.parent].spec.model


def _fake_checkpoint(run_dir: Path, spec) -> None:
    ckpt = run_dir / "checkpoints" / str(spec.train.steps)
    write_stub_checkpoint(ckpt, spec)
    write_spec(spec, run_dir / "spec.yaml")
    (run_dir / "COMPLETE").write_text("done\n")


def test_resolution_hashes_are_unique_stable_and_location_independent(tmp_path: Path) -> None:
    study = parse_study(study_data())
    plan = expand_plan(study)
    resolver = Resolver(plan, tmp_path / "a")
    assert not resolver.ready(plan["cd-linear-s0"])  # the base is not complete yet
    early = resolver.resolve(plan["cd-linear-s0"])  # but its folder and spec are known
    base = resolver.resolve(plan["base"])
    _fake_checkpoint(base.path, base.spec)
    assert resolver.ready(plan["cd-linear-s0"])
    runs = {run.key: resolver.resolve(run) for run in plan}
    assert runs["cd-linear-s0"] == early
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
    assert {run.key: other.resolve(run).hash for run in other.plan} == {k: r.hash for k, r in runs.items()}
    # and a change anywhere changes the hashes
    changed = study_data()
    changed["cooldown"]["steps"] = 7
    third = Resolver(expand_plan(parse_study(changed)), tmp_path / "a")
    assert third.resolve(third.plan["cd-linear-s0"]).hash != runs["cd-linear-s0"].hash
    assert run_identity(base.spec, tmp_path / "a") == base.hash


def test_fresh_min_train_is_the_smallest_accepted_layout() -> None:
    from wsdlab.study.cooldown import fresh_min_train

    study = _fresh_study()
    # one cooldown reads cooldown.steps x batch = 6 x 4 = 24 sequences; 3 averaging portions: 2 x 3 x 24
    assert fresh_min_train(study) == 144
    fresh_layout(144, 24, 3)
    with pytest.raises(ValueError, match="cooldown.data"):
        fresh_layout(143, 24, 3)


def test_plan_never_prepares_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`study plan` of a fresh study whose corpus is not prepared (a missing file, a missing tokenizer):
    costs from the spec alone, provisional portions, nothing prepared or written."""
    import json

    from wsdlab.data import shards
    from wsdlab.study.runner import plan_costs, plan_num_train

    monkeypatch.setattr(shards, "prepare_corpus", lambda *a, **k: pytest.fail("planning prepared data"))
    cache = tmp_path / "cache"
    data = {"source": "jsonl", "path": str(tmp_path / "missing.jsonl"), "tokenizer": "pretrained",
            "tokenizer_path": str(tmp_path / "missing-tokenizer.json"), "seq_len": 32, "cache_dir": str(cache)}
    study = _fresh_study(base={"preset": "tiny", "spec": {"train": {"steps": 20, "batch_size": 4}, "data": data}})
    notes: list[str] = []
    rows = plan_costs(study, tmp_path / "study", notes)
    assert len(rows) == len(expand_plan(study, num_train=144)) and notes and "provisional" in notes[0]
    base = next(r for r in rows if r["key"] == "base")
    assert base["tokens"] == 20 * 4 * 32  # steps x batch x seq_len
    assert not cache.exists() and not (tmp_path / "study").exists()
    # a started study's plan.json fixes num_train
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "plan.json").write_text(json.dumps({"num_train": 5000}))
    assert plan_num_train(study, tmp_path / "study") == (5000, None)
    assert plan_num_train(parse_study(study_data()), tmp_path / "study") == (None, None)  # continue: not needed


def test_plan_reads_the_count_of_a_prepared_corpus(tmp_path: Path) -> None:
    import json

    from wsdlab.data.shards import prepare_corpus, read_meta
    from wsdlab.study.runner import plan_num_train

    lines = [json.dumps({"text": f"doc {i} " + "alpha beta gamma delta " * 20}) for i in range(30)]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    data = {"source": "jsonl", "path": str(tmp_path / "c.jsonl"), "tokenizer": "char", "vocab_size": 40,
            "seq_len": 16, "cache_dir": str(tmp_path / "cache")}
    study = _fresh_study(base={"preset": "tiny", "spec": {"train": {"steps": 20, "batch_size": 4}, "data": data}})
    assert plan_num_train(study, tmp_path / "study")[1] is not None  # not prepared yet: provisional
    directory = prepare_corpus(base_run_spec(study).data, progress=False)
    assert plan_num_train(study, tmp_path / "study") == (read_meta(directory)["num_train"], None)


def test_cli_plans_the_paper_study_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wsdlab study plan paper-210M`: a hub dataset and a tokenizer file that are not here, no network."""
    from typer.testing import CliRunner

    from wsdlab.cli import app
    from wsdlab.data import shards

    monkeypatch.setenv("WSDLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(shards, "prepare_corpus", lambda *a, **k: pytest.fail("planning prepared data"))
    result = CliRunner().invoke(app, ["study", "plan", "paper-210M", "--out", str(tmp_path / "study")])
    assert result.exit_code == 0, result.output
    assert "140 runs" in result.stdout and "2,048,000,000" in result.stdout  # base: 20k steps x 200 x 512
    assert "data portions (data.order) are provisional" in result.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "study").exists()
