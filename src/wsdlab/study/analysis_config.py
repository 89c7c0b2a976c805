"""The `analyses:` section of a study spec: settings shared by every analysis, then one entry per unit.

    analyses:
      eval_batches: 8                # validation batches every model is evaluated on
      eval_batch_size: null          # None = the base's train batch size
      snapshot_every: null           # snapshot cadence of the runs the snapshot units read
      <unit>: {enabled: true, options: {...}, inputs: {<input>: {stage: ..., where: ..., group_by: ...}}}

Each `<unit>` is a registered analysis unit (`wsdlab.analysis.units`); its `options` are validated with
the unit's Options model and its `inputs` override the unit's default selectors by input name. Errors
name the field (`analyses.sharpness.options.samples`, `analyses.sharpnes`). Units left out keep their
defaults: the cooldown analyses on, the geometry ones (units that read snapshots) off.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from wsdlab.analysis.units import AnalysisUnit, RunSelector
from wsdlab.common.config import StrictModel

SHARED = ("eval_batches", "eval_batch_size", "snapshot_every")


class UnitSettings(StrictModel):
    """One unit's entry: whether it runs, its options and input overrides."""

    enabled: bool | None = Field(None, description="None = the unit's default (geometry units: off).")
    options: dict[str, Any] = Field(default_factory=dict, description="Fields of the unit's Options model.")
    inputs: dict[str, RunSelector] = Field(default_factory=dict, description="Selectors replacing the defaults.")


class AnalysesConfig(StrictModel):
    """Tables under STUDY/tables/ (module docstring). In YAML the units sit beside the shared settings."""

    eval_batches: int = Field(8, gt=0, description="Validation batches each model is evaluated on.")
    eval_batch_size: int | None = Field(None, gt=0, description="None = the base's train batch size.")
    snapshot_every: int | None = Field(
        None, gt=0, description="Snapshot cadence of the geometry runs; None = cooldown.steps // 20.")
    units: dict[str, UnitSettings] = Field(default_factory=dict)
    _options: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _validate_units(cls, data: Any, handler: Any) -> AnalysesConfig:
        from wsdlab.analysis.units import get_unit, unit_names

        if isinstance(data, AnalysesConfig):
            return data
        if isinstance(data, dict):  # the flat YAML form: unit names beside the shared settings
            data = {**{k: v for k, v in data.items() if k in (*SHARED, "units")},
                    "units": {**data.get("units", {}), **{k: v for k, v in data.items() if k not in (*SHARED, "units")}}}
        errors: list[InitErrorDetails] = []
        known = unit_names()
        raw_units = data.get("units", {}) if isinstance(data, dict) else {}
        for name in raw_units if isinstance(raw_units, dict) else ():
            if name not in known:
                errors.append(_error(("units", name), "unknown_analysis",
                                     f"not an analysis; known: {', '.join(known)}", name))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, _flat(errors))
        try:
            cfg = handler(data)
        except ValidationError as err:
            raise ValidationError.from_exception_data(cls.__name__, _flat(_details(err))) from None
        given, units = cfg.units, {}
        for name in known:  # registry order
            unit = get_unit(name)
            settings = given.get(name, UnitSettings())
            if settings.enabled is False and unit.always:
                errors.append(_error(("units", name, "enabled"), "always_on",
                                     f"'{name}' is always computed (it cannot be switched off)", False))
            for key in settings.inputs:
                if key not in unit.inputs:
                    errors.append(_error(("units", name, "inputs", key), "unknown_input",
                                         f"not an input of '{name}' (inputs: {', '.join(unit.inputs) or 'none'})", key))
            try:
                cfg._options[name] = unit.Options.model_validate(settings.options)
            except ValidationError as err:
                errors += _details(err, ("units", name, "options"))
            enabled = settings.enabled if settings.enabled is not None else (unit.always or unit.default_enabled)
            units[name] = settings.model_copy(update={"enabled": enabled})
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, _flat(errors))
        cfg.__dict__["units"] = units  # not an assignment: that would validate the model again
        return cfg

    @model_serializer(mode="wrap")
    def _dump_flat(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        units = data.pop("units", {})
        return {**data, **units}

    # ---------------------------------------------------------------------------------- accessors

    def settings(self, name: str) -> UnitSettings:
        return self.units[name]

    def options(self, name: str) -> Any:
        """The unit's validated Options."""
        return self._options[name]

    def selector(self, unit: AnalysisUnit, name: str) -> RunSelector:
        """The selector of input `name` of `unit`: the study's override, else the unit's default."""
        return self.units[unit.name].inputs.get(name) or unit.inputs[name]

    def is_enabled(self, name: str) -> bool:
        return bool(self.units[name].enabled)

    def enabled(self) -> list[str]:
        """Names of the switchable units that are on, in registry order."""
        from wsdlab.analysis.units import get_unit

        return [n for n, s in self.units.items() if s.enabled and not get_unit(n).always]

    def geometry_enabled(self) -> list[str]:
        """Enabled units that read weight snapshots (their runs keep snapshots every `snapshot_every` steps)."""
        from wsdlab.analysis.units import get_unit

        return [n for n in self.enabled() if get_unit(n).snapshots]

    def __getattr__(self, name: str) -> Any:
        """`analyses.<unit>` is the unit's UnitSettings (e.g. `study.analyses.trajectory.enabled`)."""
        units = self.__dict__.get("units")
        if units is not None and name in units:
            return units[name]
        return super().__getattr__(name)  # type: ignore[misc]


def _error(loc: tuple[Any, ...], kind: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}")),
                            loc=loc, input=value)


def _details(err: ValidationError, prefix: tuple[Any, ...] = ()) -> list[InitErrorDetails]:
    """The errors of `err`, located under `prefix`, kept as they are (type, message and context)."""
    return [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"].replace("{", "{{").replace("}", "}}")),
                             loc=(*prefix, *e["loc"]), input=e.get("input")) for e in err.errors()]


def _flat(errors: list[InitErrorDetails]) -> list[InitErrorDetails]:
    """Drop the internal `units` segment so errors read `analyses.<unit>...` as in the YAML."""
    out = []
    for e in errors:
        loc = tuple(e["loc"])
        out.append({**e, "loc": loc[1:] if loc[:1] == ("units",) else loc})
    return out
