"""The cooldown study's shorthand sections (`base`, `cooldown`, `reference`, `averaging`, `hyperparams`).

They are plain validated configs; `study.cooldown` expands them into stages. Kept apart from both the
expansion and `StudySpec`, so the study spec imports its sections and the expansion imports them too, and
neither imports the other: the expansion reads a `CooldownDesign` (what a StudySpec offers it).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from wsdlab.common.config import StrictModel
from wsdlab.study.analysis_config import AnalysesConfig
from wsdlab.study.stages import _NAME_RE, ShapeChoice


def _require_unique(values: list[Any], field: str) -> None:
    seen: set[Any] = set()
    dups = []
    for v in values:
        if v in seen:
            dups.append(v)
        seen.add(v)
    if dups:
        raise ValueError(f"{field}: duplicate entries {dups}")


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
        "cooldown-sized portion of the second half (seeds change only the order; references read the whole second "
        "half, see reference.data; averaging portions are its neighbours). continue: branches keep the base's data "
        "(portions of the whole split).",
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

    The paper (§4.1): "We train models with a longer cooldown stage (59,400 steps in total, 6B tokens) using
    the *sqrt* cooldown shape, which we refer to as *reference models* that represent a good solution in the
    optimization landscape. The dataset portion used for the reference models is the same as that for the
    shorter experiments but is permuted with repetitions to match the extended training duration. In total,
    N = 9 models are trained for different data permutations." So: one reference per data-order seed (the
    cooldown seeds), sqrt, longer than a cooldown (the paper: 33k vs 6.6k steps after the branch point).

    `data` (with `cooldown.data: fresh`): 'fresh' (default) reads the half of the split the base never reads
    (the cooldowns' portion and every averaging portion lie in it), each seed in its own order, so no sequence
    is read twice. 'repeat' is the paper's literal recipe: the cooldowns' own portion, re-permuted whenever
    it is exhausted. At laptop scale that portion is small (665 sequences of 128 tokens of consecutive
    documents in the default study), and repeating it makes the references WORSE than the cooldowns (the
    default study's references read it 1.9 times and ended at val loss 4.87 against the sqrt cooldowns'
    4.82; even 80 steps read once over it and its neighbour, the averaging study's longer run, only tie sqrt
    at 4.82), which is no "good solution"; over the unread half they reach 4.63. With `cooldown.data:
    continue` the references read the cooldowns' data.
    """

    enabled: bool = True
    shape: ShapeChoice = Field(default_factory=lambda: ShapeChoice(shape="sqrt"))
    steps: int | None = Field(None, gt=0, description="Length; None = multiplier x cooldown.steps.")
    multiplier: float = Field(4.0, gt=1.0)
    seeds: list[int] | None = Field(None, description="None = the cooldown seeds.")
    data: Literal["fresh", "repeat"] = Field(
        "fresh", description="fresh: the half of the split the base never reads, no sequence read twice; "
        "repeat: the cooldowns' portion, repeated (the paper's recipe).")
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


PanelName = Literal["beta_powers", "beta2_powers", "batch_scales", "weight_decay_off", "reset_optimizer"]


class HyperParams(StrictModel):
    """Panels of AdamW changes applied at the branch point (Dremov et al., §6 and App. F; Figs. 11, 12, 25),
    for each cooldown shape of `shapes` and each seed.

    betas -> beta**p ("beta_hat = beta^p", base betas 0.9 / 0.95): p < 1 gives LARGER betas (a longer
    memory; the half-life in steps grows 1/p-fold), p > 1 smaller ones. The paper finds larger beta2
    during the cooldown helps, so sweep p on both sides of 1. The paper draws Fig. 12 and Fig. 25 for
    several shapes ("grouped by different cooldown shapes"); `shape: sqrt` (one shape) is still accepted.

    Seeds: every panel runs at `seeds`, except those named in `panel_seeds` (panel field name -> its seeds),
    so the panels a claim compares across data orders (e.g. beta2_powers, batch_scales) can have more seeds
    than the rest at a bounded cost. Every seed of any panel has its baseline (the grid's cooldown of that
    shape and seed, trained once).
    """

    enabled: bool = True
    shapes: list[ShapeChoice] = Field(default_factory=lambda: [ShapeChoice(shape="sqrt")], min_length=1,
                                      description="Cooldown shapes of the panels ('shape: X' = [X]).")
    seeds: list[int] | None = Field(None, description="None = the first cooldown seed only.")
    panel_seeds: dict[PanelName, list[int]] = Field(
        default_factory=dict, description="Seeds of single panels (by field name), replacing `seeds` for them.")
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
        if self.seeds is not None:
            _require_unique(self.seeds, "seeds")
        active = self.active_panels()
        for panel, seeds in self.panel_seeds.items():
            if panel not in active:
                raise ValueError(f"panel_seeds.{panel}: that panel is off (no values / false)")
            if not seeds:
                raise ValueError(f"panel_seeds.{panel}: give at least one seed")
            _require_unique(seeds, f"panel_seeds.{panel}")
        return self

    def active_panels(self) -> list[PanelName]:
        """The panels with runs: non-empty value lists and switches that are on, in plan order."""
        on: dict[PanelName, bool] = {"beta_powers": bool(self.beta_powers), "beta2_powers": bool(self.beta2_powers),
                                     "batch_scales": bool(self.batch_scales), "weight_decay_off": self.weight_decay_off,
                                     "reset_optimizer": self.reset_optimizer}
        return [name for name, active in on.items() if active]

    def seeds_of(self, panel: PanelName, default: list[int]) -> list[int]:
        """The seeds of `panel`: its `panel_seeds` entry, else `seeds`, else `default` (the first cooldown seed)."""
        if panel in self.panel_seeds:
            return self.panel_seeds[panel]
        return self.seeds if self.seeds is not None else default


class CooldownDesign(Protocol):
    """What the shorthand's expansion reads of a study: its name, the five sections and the analyses
    (which add snapshots to the runs they read). `wsdlab.study.spec.StudySpec` provides it."""

    name: str
    base: BaseRun | None
    cooldown: CooldownGrid | None
    reference: ReferenceRuns
    averaging: Averaging
    hyperparams: HyperParams
    analyses: AnalysesConfig
