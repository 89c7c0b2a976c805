"""Study spec: the shipped YAML files validate, are shipped twice identically, and errors name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsdlab.study.spec import BUILTIN_STUDIES, ShapeChoice, builtin_study_path, dump_study, load_study, parse_study

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {
        "name": "t",
        "base": {"preset": "tiny", "overrides": {"train.steps": 20}},
        "cooldown": {"steps": 5, "shapes": ["linear", {"shape": "lowered_linear", "param": 0.7}], "seeds": [0, 1]},
    }


def error_of(data: dict) -> str:
    with pytest.raises(ValueError) as info:
        parse_study(data)
    return str(info.value)


@pytest.mark.parametrize("name", BUILTIN_STUDIES)
def test_builtin_studies_validate(name: str) -> None:
    packaged = builtin_study_path(name)
    assert packaged.is_file()
    assert load_study(packaged).name == name


def test_no_stray_study_files() -> None:
    """Every shipped file is a built-in study or its quick variant; the YAML files exist once (package data)."""
    shipped = {p.name for p in builtin_study_path("default").parent.glob("*.yaml")}
    assert {n.removesuffix(".yaml").removesuffix("-quick") for n in shipped} == set(BUILTIN_STUDIES)
    assert {"default-quick.yaml"} <= shipped
    assert not (REPO / "studies").exists()


def test_minimal_spec_defaults() -> None:
    spec = parse_study(minimal())
    assert [s.label for s in spec.cooldown.shapes] == ["linear", "lowered_linear-0.7"]
    assert not spec.reference.enabled and not spec.averaging.enabled and not spec.hyperparams.enabled
    on = spec.analyses.enabled()  # defaults: the cooldown analyses on, the geometry ones off
    assert {"perplexity", "bias_variance", "averaging", "recency", "hyperparams", "alignment"} <= set(on)
    assert not {"sharpness", "landscape", "interpolate", "trajectory", "probes"} & set(on)
    assert spec.analyses.geometry_enabled() == [] and not spec.analyses.trajectory.enabled
    assert spec.cooldown.data == "fresh"


def test_shape_labels() -> None:
    assert ShapeChoice(shape="sqrt").label == "sqrt"
    assert ShapeChoice(shape="lowered_linear", param=0.1).label == "lowered_linear-0.1"
    assert ShapeChoice(shape="expr", expr="1 - x**2").label == "expr-1 - x**2"


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["cooldown"].update(steps=0), "cooldown.steps"),
        (lambda d: d["cooldown"].update(shapes=["linear", "zigzag"]), "cooldown.shapes.1"),
        (lambda d: d["cooldown"].update(seeds=[0, 0]), "cooldown"),
        (lambda d: d["cooldown"].update(bogus=1), "cooldown.bogus"),
        (lambda d: d.update(name="has space"), "name"),
        (lambda d: d.update(reference={"multiplier": 0.5}), "reference.multiplier"),
        (lambda d: d.update(averaging={"num_portions": 1}), "averaging.num_portions"),
        (lambda d: d.update(hyperparams={"beta_powers": [2, -1]}), "hyperparams.beta_powers"),
        (lambda d: d.update(averaging={"long_cooldown_fraction": 1.0}), "averaging.long_cooldown_fraction"),
        (lambda d: d.update(averaging={"shapes": ["sqrt", "sqrt"]}), "averaging"),
        (lambda d: d.update(hyperparams={"shapes": []}), "hyperparams.shapes"),
        (lambda d: d.update(analyses={"sharpnes": {}}), "analyses.sharpnes"),
        (lambda d: d["cooldown"].update(variants=[{"name": "a/b"}]), "cooldown.variants.0.name"),
    ],
)
def test_errors_name_the_field(edit, field: str) -> None:
    data = minimal()
    edit(data)
    message = error_of(data)
    assert f"\n{field}:" in message, message


def test_averaging_shape_was_split_into_shapes_and_long_shape() -> None:
    data = minimal()
    data["averaging"] = {"shape": "sqrt"}
    message = error_of(data)
    assert "averaging" in message and "'shapes'" in message and "'long_shape'" in message
    data["averaging"] = {"num_portions": 2}
    avg = parse_study(data).averaging
    assert avg.shapes is None and avg.long_shape.label == "sqrt" and avg.long_cooldown_fraction == 0.2


def test_hyperparams_take_one_shape_or_a_list() -> None:
    data = minimal()
    data["hyperparams"] = {"shape": "linear"}
    assert [s.label for s in parse_study(data).hyperparams.shapes] == ["linear"]
    data["hyperparams"] = {"shapes": ["sqrt", {"shape": "lowered_linear", "param": 0.7}]}
    assert [s.label for s in parse_study(data).hyperparams.shapes] == ["sqrt", "lowered_linear-0.7"]
    data["hyperparams"] = {}
    assert [s.label for s in parse_study(data).hyperparams.shapes] == ["sqrt"]
    data["hyperparams"] = {"shape": "sqrt", "shapes": ["linear"]}
    assert "not both" in error_of(data)


def test_duplicate_shapes_are_rejected() -> None:
    data = minimal()
    data["cooldown"]["shapes"] = ["linear", {"shape": "linear"}]
    assert "duplicate" in error_of(data)


def test_load_study_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_study(bad)
    wrong = tmp_path / "wrong.yaml"
    data = minimal()
    data["cooldown"]["steps"] = -3
    wrong.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"wrong.yaml:\ncooldown.steps"):
        load_study(wrong)
    with pytest.raises(ValueError, match="unknown built-in study"):
        builtin_study_path("nope")


def test_a_study_needs_stages_or_the_cooldown_sections() -> None:
    data = minimal()
    data.pop("base")
    assert "needs `stages`, or `base` and `cooldown`" in error_of(data)
    data = minimal()
    data["stages"] = {"wsd": {"preset": "tiny"}}
    assert "either stages or the cooldown study's sections" in error_of(data)
    assert parse_study({"name": "s", "stages": {"wsd": {"preset": "tiny"}}}).stages["wsd"].preset == "tiny"


def test_analyses_options_are_validated_by_the_unit() -> None:
    data = minimal()
    data["analyses"] = {"sharpness": {"enabled": True, "options": {"samples": 0, "eval": {"batches": 0}}}}
    message = error_of(data)
    assert "\nanalyses.sharpness.options.samples:" in message, message
    assert "\nanalyses.sharpness.options.eval.batches:" in message, message
    data["analyses"] = {"sharpness": {"options": {"num_steps": 2, "bogus": 1}}}
    assert "\nanalyses.sharpness.options.bogus:" in error_of(data)
    data["analyses"] = {"schedules": {"enabled": False}}
    assert "\nanalyses.schedules.enabled:" in error_of(data)
    data["analyses"] = {"eval_batches": 3, "recency": {"options": {"stride": 4}}, "landscape": {"enabled": True}}
    cfg = parse_study(data).analyses
    assert cfg.eval_batches == 3 and cfg.options("recency").stride == 4 and cfg.geometry_enabled() == ["landscape"]
    assert cfg.options("sharpness").samples == 100  # the unit's defaults


def test_analyses_dump_flat_and_reload() -> None:
    data = minimal()
    data["analyses"] = {"eval_batches": 3, "probes": {"enabled": True, "options": {"steps": 2}}}
    spec = parse_study(data)
    dumped = yaml.safe_load(dump_study(spec))["analyses"]
    assert dumped["eval_batches"] == 3 and dumped["probes"] == {"enabled": True, "options": {"steps": 2}, "inputs": {}}
    assert "units" not in dumped and dumped["sharpness"]["enabled"] is False
    assert parse_study({**data, "analyses": dumped}) == spec
