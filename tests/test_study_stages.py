"""Stages: grid/zip expansion, parent matching, selectors, graph checks (wsdlab.study.stages)."""

from __future__ import annotations

import pytest

from wsdlab.common.errors import ConfigError
from wsdlab.study.stages import CheckpointSelector, Stage, expand_stages, selector_step
from wsdlab.train.config import RunSpec


def stages(data: dict) -> dict[str, Stage]:
    return {name: Stage.model_validate(s) for name, s in data.items()}


def test_grid_is_cartesian_in_written_order_and_zip_moves_together():
    st = Stage.model_validate({"grid": {"schedule.kind": ["wsd", "cosine"], "train.seed": [0, 1]},
                               "zip": {"optim.lr": [1, 2, 3], "optim.eps": [4, 5, 6]}})
    points = st.points()
    assert len(points) == 2 * 2 * 3
    assert points[0].overrides == {"schedule.kind": "wsd", "train.seed": 0, "optim.lr": 1, "optim.eps": 4}
    assert points[1].overrides == {"schedule.kind": "wsd", "train.seed": 0, "optim.lr": 2, "optim.eps": 5}
    assert points[-1].overrides == {"schedule.kind": "cosine", "train.seed": 1, "optim.lr": 3, "optim.eps": 6}
    assert points[-1].labels == {"kind": "cosine", "seed": 1, "lr": 3, "eps": 6}  # each axis labels its runs
    assert [p.overrides for p in Stage().points()] == [{}]


def test_children_match_parents_on_shared_labels_or_all():
    runs = expand_stages(stages({
        "wsd": {"grid": {"train.seed": [0, 1, 2]}},
        "same": {"from": "wsd", "grid": {"train.seed": [0, 2]}},
        "each": {"from": "wsd", "grid": {"branch.steps": [10, 20]}},
        "all": {"from": "wsd", "match": "all", "grid": {"data.order.seed": [5]}, "labels": {"kind": "x"}},
    }))
    by_stage: dict[str, list] = {}
    for r in runs:
        by_stage.setdefault(r.stage, []).append(r)
    assert [r.key for r in by_stage["wsd"]] == ["wsd-seed0", "wsd-seed1", "wsd-seed2"]
    assert [(r.key, r.parent) for r in by_stage["same"]] == [("same-seed0", "wsd-seed0"), ("same-seed2", "wsd-seed2")]
    assert len(by_stage["each"]) == 6  # every parent x every point
    assert by_stage["each"][0].key == "each-seed0-steps10" and by_stage["each"][0].labels == {"seed": 0, "steps": 10}
    # 'all': the child's seed axis does not restrict parents (the label name is shared but ignored)
    assert [r.parent for r in by_stage["all"]] == ["wsd-seed0", "wsd-seed1", "wsd-seed2"]
    assert by_stage["all"][0].labels["seed"] == 5 and by_stage["all"][0].labels["kind"] == "x"


def test_key_template_and_duplicate_keys():
    runs = expand_stages(stages({"base": {}, "cd": {"from": "base", "key": "cd-{shape}-s{seed}",
                                                    "grid": {"branch.shape": ["linear", "sqrt"], "train.seed": [0]}}}))
    assert [r.key for r in runs] == ["base", "cd-linear-s0", "cd-sqrt-s0"]
    with pytest.raises(ConfigError, match="several runs would be named"):
        expand_stages(stages({"base": {}, "cd": {"from": "base", "key": "cd", "grid": {"branch.shape": ["linear", "cosine"]}}}))
    with pytest.raises(ConfigError, match="unknown label"):
        expand_stages(stages({"base": {}, "cd": {"from": "base", "key": "cd-{nope}"}}))


def test_graph_errors_name_the_stage():
    with pytest.raises(ConfigError, match="stages.b.from: no stage 'x'"):
        expand_stages(stages({"b": {"from": "x"}}))
    with pytest.raises(ConfigError, match="cycle"):
        expand_stages(stages({"a": {"from": "b"}, "b": {"from": "a"}}))
    with pytest.raises(ConfigError, match="no run matches"):
        expand_stages(stages({"a": {"grid": {"train.seed": [0]}}, "b": {"from": "a", "grid": {"train.seed": [1]}}}))


@pytest.mark.parametrize("bad, match", [
    ({"branch": {"steps": 3}}, "only a stage with `from:`"),
    ({"grid": {"branch.steps": [1]}}, "need a stage with `from:`"),
    ({"from": "a", "preset": "tiny"}, "takes its model and data from its parent"),
    ({"zip": {"a": [1, 2], "b": [1]}}, "equal lengths"),
    ({"grid": {"a": []}}, "has no values"),
    ({"grid": {"a": [1, 1]}}, "repeats a value"),
    ({"grid": {"a": [1]}, "zip": {"a": [2]}}, "both grid and zip"),
    ({"at": {"step": 3, "final": True}}, "exactly one"),
    ({"at": {}}, "exactly one"),
])
def test_bad_stages_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        Stage.model_validate(bad)


def spec(kind: str, steps: int = 1000, warmup: int = 100, **sched) -> RunSpec:
    return RunSpec.model_validate({"train": {"steps": steps},
                                   "schedule": {"kind": kind, "warmup_steps": warmup, **sched}})


def test_selectors_pick_the_step_the_paper_names():
    wsd = spec("wsd", cooldown_fraction=0.2)  # stable phase [100, 800]
    assert selector_step(CheckpointSelector.model_validate("final"), wsd) == 1000
    assert selector_step(CheckpointSelector.model_validate(400), wsd) == 400
    assert selector_step(CheckpointSelector(steps_before_end=200), wsd) == 800
    assert selector_step(CheckpointSelector(fraction_of_stable=1.0), wsd) == 800  # the cooldown start
    assert selector_step(CheckpointSelector(fraction_of_stable=0.8), wsd) == 100 + round(0.8 * 700)  # 660
    assert selector_step(CheckpointSelector(fraction_of_stable=0.5), spec("wso")) == 100 + 450
    with pytest.raises(ConfigError, match="no stable phase"):
        selector_step(CheckpointSelector(fraction_of_stable=0.5), spec("cosine"))
    with pytest.raises(ConfigError, match="outside the parent run"):
        selector_step(CheckpointSelector(step=1001), wsd)


def test_explicit_runs_labels_and_shape_labels():
    runs = expand_stages(stages({
        "base": {},
        "cd": {"from": "base", "grid": {"branch.shape": ["linear", {"shape": "lowered_linear", "param": 0.7}]},
               "key": "cd-{shape}-s{seed}",
               "runs": [{"branch.seed": 0, "labels.seed": 0, "labels.geometry": True, "train.snapshot_every": 2},
                        {"branch.seed": 1, "labels.seed": 1, "labels.geometry": False}]},
        "one": {"from": "base", "runs": [{"branch.seed": 3, "key": "custom"}]},
    }))
    cd = [r for r in runs if r.stage == "cd"]
    assert [r.labels["shape"] for r in cd] == ["linear", "linear", "lowered_linear-0.7", "lowered_linear-0.7"]
    assert [r.labels["geometry"] for r in cd] == [True, False, True, False]
    point = cd[0].point  # the YAML's dotted entries, sorted once into typed fields
    assert (point.branch, point.overrides) == ({"shape": "linear", "seed": 0}, {"train.snapshot_every": 2})
    assert point.labels == {"shape": "linear", "seed": 0, "geometry": True}
    assert point.label_only == {"seed", "geometry"} and point.at == {}
    assert "snapshot_every" not in cd[0].labels  # an explicit run's other entries set no label
    assert [r.key for r in cd] == ["cd-linear-s0", "cd-linear-s1", "cd-lowered_linear-0.7-s0", "cd-lowered_linear-0.7-s1"]
    one = [r for r in runs if r.stage == "one"]
    assert one[0].key == "custom" and one[0].point.branch == {"seed": 3} and one[0].point.labels == {}
