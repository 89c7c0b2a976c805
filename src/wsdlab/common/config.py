"""Config base class and helpers: YAML -> validated pydantic models, dotted overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


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
            raise ValueError(f"--set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_yaml_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file into `model`; errors name the file and each bad field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with path.open() as f:
        data = yaml.safe_load(f) or {}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ValueError(f"invalid config {path}:\n{describe_validation_error(err)}") from None
