"""The study spec: one YAML file describing a whole study, validated by pydantic.

A study is a graph of stages (`stages:`, see `wsdlab.study.stages`), or the cooldown study's shorthand
(`base`, `cooldown`, `reference`, `averaging`, `hyperparams`; see `wsdlab.study.sections`) that expands
into stages; then the analyses to compute and the report to write. Errors name the dotted field
(`cooldown.shapes.1`, `stages.wsd.grid`). Built-in studies ship inside the package as
`wsdlab/studies/<name>.yaml`, each with a quick variant `<name>-quick.yaml`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from wsdlab.common.config import StrictModel, describe_validation_error, read_yaml_mapping
from wsdlab.common.errors import ConfigError
from wsdlab.study.analysis_config import AnalysesConfig
from wsdlab.study.sections import (  # noqa: F401 - the shorthand's sections, re-exported
    Averaging,
    BaseRun,
    CooldownGrid,
    HyperParams,
    ReferenceRuns,
    Variant,
)
from wsdlab.study.stages import _NAME_RE, ShapeChoice, Stage  # noqa: F401


class ReportConfig(StrictModel):
    enabled: bool = True
    title: str | None = None


class SlurmConfig(StrictModel):
    """submitit parameters for `--executor slurm` (one job per run)."""

    partition: str | None = None
    gpus_per_node: int = Field(1, ge=0)
    cpus_per_task: int = Field(8, gt=0)
    mem_gb: int | None = Field(None, gt=0)
    timeout_min: int = Field(240, gt=0)
    signal_delay_s: int = Field(300, gt=0, description="Seconds before the time limit at which Slurm signals a job "
                                "to write a checkpoint and be requeued.")
    max_timeouts: int = Field(20, ge=0, description="Times one run's job may reach its time limit and be requeued.")
    additional: dict[str, Any] = Field(default_factory=dict, description="Extra submitit slurm_* parameters.")


class StudySpec(StrictModel):
    """A whole study; `wsdlab study run SPEC.yaml` runs it. Give `stages`, or `base` and `cooldown`
    (with optional `reference`, `averaging`, `hyperparams`): the cooldown study's shorthand."""

    name: str = Field(description="Study name: the default output folder is wsdlab-out/<name>.")
    description: str = ""
    stages: dict[str, Stage] | None = Field(None, description="Named stages (a graph of runs), in any order.")
    base: BaseRun | None = None
    cooldown: CooldownGrid | None = None
    reference: ReferenceRuns = Field(default_factory=lambda: ReferenceRuns(enabled=False))
    averaging: Averaging = Field(default_factory=lambda: Averaging(enabled=False))
    hyperparams: HyperParams = Field(default_factory=lambda: HyperParams(enabled=False))
    analyses: AnalysesConfig = Field(default_factory=AnalysesConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    workers: int | None = Field(
        None, ge=1, description="Default of --workers (runs trained at once); None = one per GPU, else one per CPU core (at most 4).")

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"'{v}' must start with a letter or digit and hold only letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _one_design(self) -> "StudySpec":
        shorthand = [n for n in ("base", "cooldown") if getattr(self, n) is not None]
        extras = [n for n in ("reference", "averaging", "hyperparams") if getattr(self, n).enabled]
        if self.stages is not None:
            if shorthand or extras:
                raise ValueError(f"give either stages or the cooldown study's sections, not both "
                                 f"(found {', '.join(shorthand + extras)} beside stages)")
            if not self.stages:
                raise ValueError("stages: at least one stage")
        elif len(shorthand) != 2:
            raise ValueError("a study needs `stages`, or `base` and `cooldown` (the cooldown study's shorthand)")
        return self

    @property
    def is_cooldown_study(self) -> bool:
        """True for the shorthand (its analyses read the stages it expands to)."""
        return self.stages is None


QUICK_SUFFIX = "-quick"


def _studies_dir() -> Path:
    return Path(str(resources.files("wsdlab").joinpath("studies")))


def builtin_studies() -> dict[str, str]:
    """Built-in study names (quick variants not listed) -> the first line of their description."""
    out: dict[str, str] = {}
    for path in sorted(_studies_dir().glob("*.yaml")):
        if path.stem.endswith(QUICK_SUFFIX):
            continue
        data = yaml.safe_load(path.read_text()) or {}
        text = str(data.get("description") or "").strip()
        out[path.stem] = text.splitlines()[0] if text else ""
    return out


BUILTIN_STUDIES = tuple(builtin_studies())


def builtin_study_path(name: str, quick: bool = False) -> Path:
    """Path of a study YAML shipped inside the package (`<name>.yaml`, or `<name>-quick.yaml` with quick)."""
    known = builtin_studies()
    base = name.removesuffix(QUICK_SUFFIX)
    if base not in known:
        raise ConfigError(f"unknown built-in study '{name}'; known: {', '.join(known)} (see `wsdlab study list`)")
    stem = f"{base}{QUICK_SUFFIX}" if quick or name.endswith(QUICK_SUFFIX) else base
    path = _studies_dir() / f"{stem}.yaml"
    if not path.is_file():
        raise ConfigError(f"built-in study '{base}' has no quick variant")
    return path


def find_study(name_or_path: str | Path | None, quick: bool = False) -> Path:
    """A study file: a path (its `-quick` sibling with quick), else a built-in name (none: `default`)."""
    if name_or_path is None:
        return builtin_study_path("default", quick)
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or path.exists():
        if not quick:
            return path
        sibling = path.with_name(f"{path.stem}{QUICK_SUFFIX}{path.suffix}")
        if not sibling.is_file():
            raise ConfigError(f"--quick: no quick variant {sibling} beside {path}")
        return sibling
    return builtin_study_path(text, quick)


def parse_study(data: dict[str, Any], source: str = "study") -> StudySpec:
    """Validate a study mapping; errors list every bad field by its dotted path."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid study {source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid study {source}:\n{describe_validation_error(err)}") from None


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study YAML file."""
    return parse_study(read_yaml_mapping(path, "study"), str(path))


def dump_study(spec: StudySpec) -> str:
    """The validated spec as YAML (stored as STUDY/study.yaml)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
