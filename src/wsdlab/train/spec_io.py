"""RunSpec <-> spec.yaml, and the dotted keys where two specs differ (resume / checkpoint checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wsdlab.common.config import describe_validation_error, read_yaml_mapping
from wsdlab.common.errors import ConfigError
from wsdlab.common.io import atomic_write_text
from wsdlab.train.config import RunSpec


def dump_spec(spec: RunSpec) -> str:
    """The resolved spec as YAML (field order kept, so files read top-down like the config)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def write_spec(spec: RunSpec, path: str | Path) -> None:
    atomic_write_text(path, dump_spec(spec))


def read_spec(path: str | Path) -> RunSpec:
    """Load a spec.yaml; errors name the file and the bad fields."""
    data = read_yaml_mapping(path, "spec")
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid spec {path}:\n{describe_validation_error(err)}") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Sorted dotted keys whose values differ between two nested dicts (missing counts as differing)."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, _MISSING) != fb.get(k, _MISSING))


def describe_differences(a: dict[str, Any], b: dict[str, Any], keys: list[str], left: str, right: str) -> str:
    """'key: <left> X vs <right> Y' per key, for error messages."""
    fa, fb = flatten(a), flatten(b)
    return "; ".join(f"{k}: {fa.get(k)!r} ({left}) vs {fb.get(k)!r} ({right})" for k in keys)


_MISSING = object()
