"""Config base class and helpers: YAML -> validated pydantic models, dotted overrides."""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, model_serializer

from wsdlab.common.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated, floats are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted field path, e.g. `schedule.cooldown_fraction: ...`."""
    lines = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
        if loc or prefix:
            lines.append(f"{prefix}{loc}: {msg}" if loc else f"{prefix.rstrip('.')}: {msg}")
        else:
            lines.append(msg)  # a whole-model check: its message names the fields itself
    return "\n".join(lines)


def _parse_scalar(text: str) -> Any:
    """Parse a command-line value as YAML (so 0.9 -> float, true -> bool, [1,2] -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_by_dotted_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set `data["a"]["b"] = value` for key "a.b", creating dicts on the way; string values are YAML-parsed."""
    if isinstance(value, str):
        value = _parse_scalar(value)
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file; every way the file can be unreadable is one line naming it.

    A missing file is FileNotFoundError; a directory, a binary or non-UTF-8 file and a YAML syntax
    error (with its line and column) are ConfigError; other OS errors (permissions, ...) propagate
    as OSError with `filename` set, which the CLI prints as `error: <file>: <reason>`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a {what} YAML file")
    raw = path.read_bytes()
    nul = raw.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"{path}: binary file (NUL byte at offset {nul}), expected a {what} YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = err.problem or err.context or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error at {where}{problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """`read_yaml` of a file that must hold a mapping (an empty file is an empty mapping)."""
    data = read_yaml(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} fields at the top level, got {_kind(data)}")
    return data


def _kind(data: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(data), type(data).__name__)


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file into `model`; errors name the file and each bad field."""
    data = read_yaml_mapping(path)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid config {path}:\n{describe_validation_error(err)}") from None


# ------------------------------------------------------------------------------------------- partials


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (`X`, `X | None`, a union of configs), else []."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _model_types(arg)]
    return []


class _Partial(BaseModel):
    """Base of `partial_model` classes: strict, and dumped with the fields that were set only."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @model_serializer(mode="wrap")
    def _set_only(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


_PARTIALS: dict[type[BaseModel], type[BaseModel]] = {}


def partial_model(cls: type[BaseModel]) -> type[BaseModel]:
    """A typed partial of `cls`: the same fields, each optional (unset = keep the value patched), nested
    sections (a field whose type is one model) partial too; values are validated with the field's own
    type and constraints. Dumps hold only the fields that were set, so `{}` is "change nothing"."""
    if cls in _PARTIALS:
        return _PARTIALS[cls]
    fields: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        members = _model_types(annotation)
        if len(members) == 1:  # a section (`X` or `X | None`): patched field by field
            annotation = partial_model(members[0])
        meta = list(info.metadata)
        typ = Annotated[Optional[annotation], *meta] if meta else Optional[annotation]  # type: ignore[valid-type]
        fields[name] = (typ, None)

    model = create_model(f"{cls.__name__}Patch", __base__=_Partial,
                         __doc__=f"A typed partial of {cls.__name__}: only the fields set are applied.", **fields)
    _PARTIALS[cls] = model
    return model


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `update` merged in recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_dotted_key(cls: type[BaseModel], key: str) -> None:
    """ValueError unless `key` (e.g. `optim.lr`, `data.order.seed`) names a field of `cls`, following nested
    sections (a union of configs accepts a field of any member; a mapping field accepts any sub-key)."""
    models: list[type[BaseModel]] = [cls]
    parts = key.split(".")
    for i, part in enumerate(parts):
        found = [m.model_fields[part] for m in models if part in m.model_fields]
        if not found:
            where = ".".join(parts[:i]) or cls.__name__
            known = sorted({f for m in models for f in m.model_fields})
            raise ValueError(f"'{key}': {where} has no field '{part}' (fields: {', '.join(known)})")
        if i == len(parts) - 1:
            return
        models = [t for info in found for t in _model_types(info.annotation)]
        if not models:
            if any(typing.get_origin(info.annotation) is dict or info.annotation is dict for info in found):
                return  # a free mapping (e.g. overrides): any sub-key
            raise ValueError(f"'{key}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
