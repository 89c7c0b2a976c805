"""The study spec: one YAML file describing a whole cooldown study, validated by pydantic.

A study is a base (warmup + stable phase) run and, branched from its final checkpoint, a grid of
cooldowns (shapes x data-order seeds x override variants), longer reference cooldowns, disjoint-
portion cooldowns plus one longer run for weight averaging, and hyper-parameter panels; then the
analyses to compute and the report to write. Errors name the dotted field (`cooldown.shapes.1`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from wsdlab.common.config import StrictModel, describe_validation_error, read_yaml_mapping
from wsdlab.common.errors import ConfigError
from wsdlab.study.analysis_config import AnalysesConfig

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ShapeChoice(StrictModel):
    """A cooldown shape: a name from wsdlab.schedules (with its parameter), or `expr` with an expression.

    In YAML a bare name is accepted: `- linear` means `- {shape: linear}`.
    """

    shape: str
    param: float | None = Field(None, description="Shape parameter (p of lowered_linear).")
    expr: str | None = Field(None, description="Expression of x, for shape 'expr'.")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"shape": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check_known(self) -> "ShapeChoice":
        from wsdlab.schedules import get_shape  # leaf module; imported lazily to keep spec loading light

        get_shape(self.shape, self.param, self.expr)  # raises ValueError naming the shape
        return self

    @property
    def label(self) -> str:
        """Readable and unique within a study: `linear`, `lowered_linear-0.7`, `expr-1-x**2`."""
        if self.expr is not None:
            return f"{self.shape}-{self.expr}"
        return self.shape if self.param is None else f"{self.shape}-{self.param:g}"


class BaseRun(StrictModel):
    """The stable-phase run every branch starts from: warmup then constant LR up to `train.steps`.

    Built as: the model preset's config, then `spec` (nested RunSpec fields) merged over it, then
    `overrides` (dotted keys). Its schedule kind defaults to (and must be) 'wso'.
    """

    preset: str | None = Field(None, description="Model preset (wsdlab.models.PRESETS), e.g. tiny, 60M, 210M.")
    spec: dict[str, Any] = Field(default_factory=dict, description="RunSpec fields, nested as in a run's spec.yaml.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted keys applied last, e.g. train.steps: 400.")


class Variant(StrictModel):
    """One point of the grid's override axis: a name and the dotted overrides it applies to a branch."""

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"'{v}' must be letters, digits, '.', '_' or '-'")
        return v


class CooldownGrid(StrictModel):
    """Cooldown branches from the base's final checkpoint: shapes x seeds x variants, each `steps` long."""

    steps: int = Field(gt=0, description="N: length of every cooldown branch in optimizer steps.")
    data: Literal["fresh", "continue"] = Field(
        "fresh",
        description="fresh: the base reads the first half of the train split; every cooldown reads the same "
        "cooldown-sized portion of the second half (seeds change only the order; references repeat it; "
        "averaging portions are its neighbours). continue: branches keep the base's data (portions of the whole split).",
    )
    shapes: list[ShapeChoice] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1, description="Data-order seeds (data.order.seed of each branch).")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="Final LR factor; None keeps the base's.")
    variants: list[Variant] = Field(default_factory=lambda: [Variant(name="default")])
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted overrides for every branch of the study.")

    @model_validator(mode="after")
    def _check_unique(self) -> "CooldownGrid":
        _require_unique([s.label for s in self.shapes], "shapes")
        _require_unique(self.seeds, "seeds")
        _require_unique([v.name for v in self.variants], "variants")
        return self


class ReferenceRuns(StrictModel):
    """Longer cooldowns (one per seed) approximating the ideal model of the bias-variance analysis.

    Each reads the same data order (seed and portion) as that seed's cooldowns for `steps` steps:
    the stream re-permutes its portion whenever it is exhausted, so a small portion is repeated.
    """

    enabled: bool = True
    shape: ShapeChoice = Field(default_factory=lambda: ShapeChoice(shape="sqrt"))
    steps: int | None = Field(None, gt=0, description="Length; None = multiplier x cooldown.steps.")
    multiplier: float = Field(4.0, gt=1.0)
    seeds: list[int] | None = Field(None, description="None = the cooldown seeds.")
    overrides: dict[str, Any] = Field(default_factory=dict)


class Averaging(StrictModel):
    """Averaging vs longer training (Dremov et al., §5, Fig. 10), for every cooldown shape.

    The paper: "we perform a cooldown stage four times on non-intersecting dataset portions from the
    same pre-cooldown model. Additionally, we train one model for longer on all data observed by the
    shorter runs. The longer run uses the *sqrt* cooldown shape for a total of 52.8k steps and a 20%
    cooldown portion. [...] Then, we average model weights trained on different dataset portions for
    each cooldown shape".

    So for each shape of `shapes` (None = every cooldown shape of the grid) there are `num_portions`
    cooldowns of `cooldown.steps` steps, one per disjoint data portion, all from the base's final
    checkpoint; their weights are averaged. One longer run (shape `long_shape`) continues from the same
    checkpoint over the union of the portions for num_portions x cooldown.steps steps: stable LR, then
    a decay of `long_cooldown_fraction` of its total length.

    Reading of "a total of 52.8k steps and a 20% cooldown portion": the paper's pre-cooldown model has
    26.4k steps and its cooldowns 6.6k (20% of 33k), so 52.8k = 26.4k + 4 x 6.6k counts from step 0, as
    the paper's "33,000 steps in total" does; the decay is 20% of that total (10.56k steps), i.e.
    round(long_cooldown_fraction x (base steps + num_portions x cooldown.steps)), and the rest of the
    branch keeps the peak LR. It must fit in the branch (the base must not exceed (1/f - 1) x the branch).
    """

    enabled: bool = True
    num_portions: int = Field(4, ge=2, description="N: disjoint data portions (cooldowns averaged per shape).")
    shapes: list[ShapeChoice] | None = Field(None, description="Shapes averaged; None = every cooldown shape.")
    seed: int = Field(0, description="Data-order seed of the portion cooldowns and of the longer run.")
    long_shape: ShapeChoice = Field(default_factory=lambda: ShapeChoice(shape="sqrt"),
                                    description="Decay shape of the longer run (the paper: sqrt).")
    long_cooldown_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Decay of the longer run as a fraction of its total steps, counted from step 0.")
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _renamed_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "shape" in data:
            raise ValueError("'shape' was replaced by 'shapes' (the shapes averaged; default: every cooldown shape) "
                             "and 'long_shape' (the decay of the longer run; default: sqrt)")
        return data

    @model_validator(mode="after")
    def _check_unique(self) -> "Averaging":
        if self.shapes is not None:
            _require_unique([s.label for s in self.shapes], "shapes")
        return self


class HyperParams(StrictModel):
    """Panels of AdamW changes applied at the branch point (Dremov et al., §6 and App. F; Figs. 11, 12, 25),
    for each cooldown shape of `shapes` and each seed.

    betas -> beta**p ("beta_hat = beta^p", base betas 0.9 / 0.95): p < 1 gives LARGER betas (a longer
    memory; the half-life in steps grows 1/p-fold), p > 1 smaller ones. The paper finds larger beta2
    during the cooldown helps, so sweep p on both sides of 1. The paper draws Fig. 12 and Fig. 25 for
    several shapes ("grouped by different cooldown shapes"); `shape: sqrt` (one shape) is still accepted.
    """

    enabled: bool = True
    shapes: list[ShapeChoice] = Field(default_factory=lambda: [ShapeChoice(shape="sqrt")], min_length=1,
                                      description="Cooldown shapes of the panels ('shape: X' = [X]).")
    seeds: list[int] | None = Field(None, description="None = the first cooldown seed only.")
    beta_powers: list[float] = Field(
        default_factory=list, description="Both betas -> beta**p; p < 1: larger betas (longer memory), p > 1: smaller.")
    beta2_powers: list[float] = Field(
        default_factory=list, description="beta2 -> beta2**p only (beta1 kept); p < 1: larger beta2 (longer memory).")
    batch_scales: list[float] = Field(default_factory=list, description="Batch x k at the same token count (steps / k).")
    match_half_life: list[bool] = Field(
        default_factory=lambda: [False, True],
        description="Batch panel: without / with betas -> beta**k (the EMA half-life in tokens kept).")
    weight_decay_off: bool = False
    reset_optimizer: bool = False
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _one_shape(cls, data: Any) -> Any:
        if isinstance(data, dict) and "shape" in data:
            if "shapes" in data:
                raise ValueError("give 'shapes' (a list) or 'shape' (one), not both")
            data = {**data, "shapes": [data["shape"]]}
            del data["shape"]
        return data

    @field_validator("beta_powers", "beta2_powers", "batch_scales")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if x <= 0]
        if bad:
            raise ValueError(f"values must be > 0, got {bad}")
        return v

    @model_validator(mode="after")
    def _check_unique(self) -> "HyperParams":
        _require_unique([s.label for s in self.shapes], "shapes")
        return self


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
    additional: dict[str, Any] = Field(default_factory=dict, description="Extra submitit slurm_* parameters.")


class StudySpec(StrictModel):
    """A whole study; `wsdlab study run SPEC.yaml` runs it."""

    name: str = Field(description="Study name: the default output folder is wsdlab-out/<name>.")
    description: str = ""
    base: BaseRun
    cooldown: CooldownGrid
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


def _require_unique(values: list[Any], field: str) -> None:
    seen: set[Any] = set()
    dups = []
    for v in values:
        if v in seen:
            dups.append(v)
        seen.add(v)
    if dups:
        raise ValueError(f"{field}: duplicate entries {dups}")


BUILTIN_STUDIES = ("default", "quick", "paper-60M", "paper-210M")


def builtin_study_path(name: str) -> Path:
    """Path of a study YAML shipped inside the package (wsdlab/studies/<name>.yaml)."""
    if name not in BUILTIN_STUDIES:
        raise ConfigError(f"unknown built-in study '{name}'; known: {', '.join(BUILTIN_STUDIES)}")
    return Path(str(resources.files("wsdlab").joinpath("studies", f"{name}.yaml")))


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
