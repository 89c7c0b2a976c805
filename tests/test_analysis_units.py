"""The unit registry (duplicates rejected, every unit declares Options/tables/inputs) and the
update_norm unit against hand-computed values from a fake metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from wsdlab.analysis.units import (
    AnalysisUnit,
    RunSelector,
    SelectedRun,
    UnitContext,
    get_unit,
    register_unit,
    unit_names,
    units,
    unregister_unit,
)
from wsdlab.common.errors import ConfigError
from wsdlab.report.catalog import FIGURES, figures_of
from wsdlab.train import RunSpec, run_preset
from wsdlab.train.spec_io import write_spec

BUILTIN = ["schedules", "val_curves", "bias_variance", "perplexity", "averaging", "recency", "hyperparams",
           "alignment", "update_norm", "sharpness", "interpolate", "landscape", "trajectory", "probes",
           "universality_curves", "universality_interpolate", "universality_sharpness", "universality_trajectory",
           "universality_length"]
BUILTIN += ["wso_eval", "wso_delta", "wso_sharpness", "wso_correlation"]  # the WSO study (paper 002)


def test_every_builtin_unit_is_registered_with_options_tables_and_inputs() -> None:
    assert sorted(unit_names()) == sorted(BUILTIN)
    for unit in units():
        assert issubclass(unit.Options, BaseModel) and unit.Options()  # defaults validate
        assert unit.tables and all(isinstance(s, RunSelector) for s in unit.inputs.values()), unit.name
        assert all(n in unit_names() for n in unit.needs), unit.name
        assert unit.doc, unit.name
    assert [u.name for u in units() if u.Target is not None] == ["sharpness", "interpolate", "landscape",
                                                                  "trajectory", "probes"]


def test_duplicates_are_rejected_and_unknown_names_listed() -> None:
    @register_unit
    class Extra(AnalysisUnit):
        name = "extra_test_unit"
        tables = ("extra",)

    try:
        assert get_unit("extra_test_unit").tables == ("extra",)
        with pytest.raises(ValueError, match="already registered"):
            register_unit(type("Again", (AnalysisUnit,), {"name": "extra_test_unit", "tables": ("x",)}))
        with pytest.raises(ValueError, match="already registered"):
            register_unit(type("Sharp", (AnalysisUnit,), {"name": "sharpness", "tables": ("x",)}))
        with pytest.raises(ValueError, match="writes no tables"):
            register_unit(type("Empty", (AnalysisUnit,), {"name": "empty_test_unit"}))
    finally:
        unregister_unit("extra_test_unit")
    with pytest.raises(ConfigError, match="unknown analysis 'nope'; known: .*sharpness"):
        get_unit("nope")


def test_every_catalogue_figure_names_a_unit_whose_tables_it_draws() -> None:
    for figure in FIGURES:
        unit = get_unit(figure.unit)
        produced = set(unit.tables) | set(unit.optional_tables) | {t for n in unit.needs for t in get_unit(n).tables}
        assert set(figure.tables) <= produced, figure.name
    assert [f.name for f in figures_of("update_norm")] == ["update_norm"]


# ---------------------------------------------------------------------------------------- update_norm


def _run(root: Path, name: str, steps: int, warmup: int, rows: list[dict]) -> Path:
    data = run_preset("micro").model_dump()
    data["schedule"].update(warmup_steps=warmup)
    data["train"].update(steps=steps)
    path = root / name
    path.mkdir()
    write_spec(RunSpec.model_validate(data), path / "spec.yaml")
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_update_norm_table_after_warmup_by_hand(tmp_path: Path) -> None:
    # the base: steps 1..4 (warmup 2); a cooldown from step 4: steps 5..6; an eval row and an old row without
    # update_norm are left out
    base = _run(tmp_path, "base-aaaa", 4, 2, [
        {"step": t, "loss": 1.0, "param_norm": 10.0 + t, "update_norm": 1.0 / t} for t in range(1, 5)] + [
        {"step": 4, "split": "val", "val_loss": 1.0}])
    cool = _run(tmp_path, "cd-sqrt-s0-bbbb", 6, 2, [
        {"step": 5, "param_norm": 14.5, "update_norm": 0.05}, {"step": 6, "param_norm": 14.6, "update_norm": None}])
    selected = [SelectedRun("base", "base", {"shape": "stable"}, base),
                SelectedRun("cd-sqrt-s0", "cooldown", {"shape": "sqrt", "seed": 0, "variant": "default"}, cool)]
    unit = get_unit("update_norm")
    inputs = {name: [r for r in selected if sel.matches(r.stage, r.labels)] for name, sel in unit.inputs.items()}
    ctx = UnitContext(inputs=inputs, selectors=dict(unit.inputs), load_data=lambda: None)
    rows = unit.compute(ctx, unit.Options())["update_norm"]
    assert rows == [
        {"shape": "stable", "run": "base-aaaa", "step": 3, "phase": "stable", "param_norm": 13.0, "update_norm": 1 / 3},
        {"shape": "stable", "run": "base-aaaa", "step": 4, "phase": "stable", "param_norm": 14.0, "update_norm": 0.25},
        {"shape": "sqrt", "run": "cd-sqrt-s0-bbbb", "step": 5, "phase": "cooldown", "param_norm": 14.5,
         "update_norm": 0.05},
    ]
    (spec,) = figures_of("update_norm")  # its one catalogue entry draws it
    fig = spec.draw({"update_norm": rows}, None)
    assert len(fig.axes) == 2


def test_a_new_analysis_needs_its_module_and_one_catalogue_entry() -> None:
    """update_norm is the worked example: its unit lives in its own module (found without an import line)
    and its figure's draw function and example tables live in its catalogue entry."""
    import inspect

    import wsdlab.analysis as analysis
    from wsdlab.report.synthetic import synthetic_tables

    assert "update_norm" not in inspect.getsource(analysis)  # discovered, not listed
    assert get_unit("update_norm").__module__ == "wsdlab.analysis.update_norm"
    (spec,) = figures_of("update_norm")
    assert spec.draw.__module__ == "wsdlab.report.catalog" and spec.example is not None
    assert synthetic_tables()["update_norm"]  # the report tests draw it from the entry's own example


def test_an_input_that_must_select_one_run_rejects_two_as_a_user_error(tmp_path: Path) -> None:
    """A study's selector for the base matching two runs is the user's config, not a bug: ConfigError (exit 2)."""
    runs = [SelectedRun(key, "base", {"shape": "stable"}, tmp_path / key) for key in ("base-a", "base-b")]
    ctx = UnitContext(inputs={"base": runs}, selectors={}, load_data=lambda: None)
    with pytest.raises(ConfigError, match="input 'base' selects 2 runs, expected one"):
        ctx.one("base")
