"""WSD vs warmup-cosine on an LM and a CNN, side by side (Belloni, Orvieto, Noci, paper 001).

Every unit here reads runs trained from scratch (stages `lm-wsd`, `lm-cosine`, `cnn-wsd`, `cnn-cosine`,
and the CNN's cooldown-length sweep `cnn-cooldown` from the WSO base `cnn-wso`), groups them by the
`model` label (lm | cnn: the report draws the LM left, the CNN right) and calls the geometry functions
that exist (`geometry`, `trajectory`, `update_norm`): nothing is measured a second way. Each run
is evaluated on its own data (an LM and a CNN share none). Rows carry `model`, `seed`, `run`.

- `universality_curves` (Fig. 1): train loss/accuracy per step and validation loss/accuracy per eval.
  `universality_norms` (Fig. 6): "Parameter vector norm evolution after warmup period [...] weight
  updates are much larger in the stable phase [...] than in the cooldown phase": ||x_t|| and
  ||x_t - x_{t-1}|| of the WSD runs after warmup, phase stable | cooldown.
- `universality_interpolate` (Fig. 2): "Loss evaluated along alpha t + (1 - alpha) t', [...] where t'
  and t denote checkpoints taken at 80% and 100% of the stable phase, or at the start and end of the
  cooldown phase". segment `stable` (80% -> 100%) and `cooldown` (start -> end).
- `universality_sharpness` (Fig. 3 left): "Estimated sharpness, evaluated on iterates x_i sampled at a
  fixed rate along the cooldown phase": top Hessian eigenvalue (lambda_1) on the cooldown iterates, with
  the Lanczos solve's `converged`, `residual` (max ||H y - lambda y|| / max|lambda|) and `iterations`, so
  a claim can refuse an unconverged lambda_1.
- `universality_trajectory` (Fig. 3 right, 4, 7): the trajectory table of each WSD run: PCA of S, D, S',
  D' ("the first component captures at least approximately 40% of the total variance"), ||H(x^) v_s||
  vs ||H(x^) v_d|| at the decay start, and on iterates "sampled regularly after warmup" tau_i and
  cos(-grad L(x_i), x_{i+1} - x_i) with x_{i+1} one optimizer step after x_i (option one_step).
- `universality_length` (Fig. 5): final validation loss/accuracy per cooldown fraction of the sweep
  (plus the main WSD runs) beside warmup-cosine: "the learning rate must decay for at least 35% of
  the total training steps for the WSD performance to match that of Warmup Cosine Annealing".
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from wsdlab.analysis.geometry_config import (
    InterpolateConfig,
    SharpnessConfig,
    TrajectoryConfig,
)
from wsdlab.analysis.geometry.common import decay_start, final_step, weight_steps
from wsdlab.analysis.geometry.interpolate import interpolate_table
from wsdlab.analysis.geometry.sharpness import sharpness_table
from wsdlab.analysis.geometry.trajectory import trajectory_run_table
from wsdlab.analysis.trajectory import one_step_pairs
from wsdlab.analysis.units import (
    AnalysisUnit,
    RunSelector,
    SelectedRun,
    UnitContext,
    evenly,
    register_unit,
)
from wsdlab.analysis.update_norm import update_norm_rows
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row

WSD = RunSelector(stage=["lm-wsd", "cnn-wsd"], group_by=["model"])
COSINE = RunSelector(stage=["lm-cosine", "cnn-cosine"], group_by=["model"])
SWEEP = RunSelector(stage=["lm-cooldown", "cnn-cooldown"], group_by=["model"])
STABLE_FRACTIONS = (0.8, 1.0)  # Fig. 2: "checkpoints taken at 80% and 100% of the stable phase"


def head(sel: SelectedRun, model: str) -> Row:
    """The leading columns of every row: model (lm | cnn), seed, run folder name."""
    return {"model": model, "seed": sel.labels.get("seed", sel.run.spec.train.seed), "run": sel.path.name}


class DataCache:
    """Each run's own DataBundle, prepared once per distinct data config within one compute."""

    def __init__(self) -> None:
        self.bundles: dict[str, Any] = {}

    def __call__(self, sel: SelectedRun) -> Any:
        from wsdlab.data import load_data

        cfg = sel.run.spec.data
        key = cfg.model_dump_json()
        if key not in self.bundles:
            self.bundles[key] = load_data(cfg, progress=False)
        return self.bundles[key]


def stable_fraction_step(warmup: int, stable_end: int, fraction: float) -> int:
    """Step at `fraction` of the stable phase [warmup, T_c]: warmup + round(f (T_c - warmup)) (the study's
    `fraction_of_stable` checkpoint selector uses the same formula)."""
    return warmup + round(fraction * (stable_end - warmup))


def grouped(ctx: UnitContext, name: str) -> list[tuple[str, SelectedRun]]:
    return [(model, sel) for model, sels in ctx.grouped(name).items() for sel in sels]


# ------------------------------------------------------------------------------------ Fig. 1 and Fig. 6


def curve_rows(sel: SelectedRun, model: str, schedule: str, max_points: int = 400) -> list[Row]:
    """Train rows (every k-th step, at most `max_points`) and every eval row of one run."""
    metrics = sel.run.metrics()
    train = [r for r in metrics if r.get("split", "train") == "train" and "loss" in r]
    stride = max(1, math.ceil(len(train) / max_points))
    rows = [{**head(sel, model), "schedule": schedule, "split": "train", "step": r["step"], "loss": r["loss"],
             "accuracy": r.get("accuracy"), "lr": r.get("lr")}
            for i, r in enumerate(train) if i % stride == 0 or i == len(train) - 1]
    rows += [{**head(sel, model), "schedule": schedule, "split": "val", "step": r["step"], "loss": r["val_loss"],
              "accuracy": r.get("val_accuracy"), "lr": None} for r in sel.run.eval_rows()]
    return rows


def norm_rows(sel: SelectedRun, model: str) -> list[Row]:
    """||x_t|| and ||x_t - x_{t-1}|| after warmup, phase stable (t <= T_c) then cooldown (t > T_c)."""
    run = sel.run
    t_c, warmup = decay_start(run), run.spec.schedule.warmup_steps
    metrics = [r for r in run.metrics() if r.get("split", "train") == "train"]
    stable = update_norm_rows(model, sel.path.name, [r for r in metrics if r["step"] <= t_c], after=warmup,
                              phase="stable")
    cool = update_norm_rows(model, sel.path.name, metrics, after=t_c, phase="cooldown")
    seed = head(sel, model)["seed"]
    return [{"model": r.pop("shape"), "seed": seed, **r, "decay_start": t_c} for r in stable + cool]


@register_unit
class UniversalityCurves(AnalysisUnit):
    """Loss and accuracy curves of WSD and warmup-cosine runs, and WSD's norms after warmup (001, Figs. 1, 6)."""

    name = "universality_curves"
    inputs = {"wsd": WSD, "cosine": COSINE}
    required = ("wsd",)
    tables = ("universality_curves", "universality_norms")

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        curves: list[Row] = []
        norms: list[Row] = []
        for model, sel in grouped(ctx, "wsd"):
            curves += curve_rows(sel, model, "wsd")
            norms += norm_rows(sel, model)
        for model, sel in grouped(ctx, "cosine"):
            curves += curve_rows(sel, model, "cosine")
        return {"universality_curves": curves, "universality_norms": norms}


# ------------------------------------------------------------------------------------------- Fig. 2


@register_unit
class UniversalityInterpolate(AnalysisUnit):
    """Loss along the line between the 80% and 100% stable checkpoints, and over the cooldown (001, Fig. 2)."""

    name = "universality_interpolate"
    Options = InterpolateConfig
    inputs = {"wsd": WSD}
    tables = ("universality_interpolate",)
    snapshots = True
    default_enabled = False  # reads snapshots: on where a study asks (the universality studies do)

    def compute(self, ctx: UnitContext, options: InterpolateConfig) -> dict[str, list[Row]]:
        data = DataCache()
        rows: list[Row] = []
        for model, sel in grouped(ctx, "wsd"):
            run = sel.run
            t_c, warmup = decay_start(run), run.spec.schedule.warmup_steps
            s80, s100 = (stable_fraction_step(warmup, t_c, f) for f in STABLE_FRACTIONS)
            for segment, (a, b) in (("stable", (s80, s100)), ("cooldown", (s100, final_step(run)))):
                for r in interpolate_table(run, options, from_step=a, to_step=b, data=data(sel), device=ctx.device):
                    rows.append({**head(sel, model), "segment": segment, "from_step": a, "to_step": b,
                                 "alpha": r["alpha"], "loss": r["loss"]})
        return {"universality_interpolate": rows}


# ------------------------------------------------------------------------------------- Fig. 3 (left)


class UniversalitySharpnessOptions(SharpnessConfig):
    """Fig. 3 (left)'s sharpness: lambda_1 of the Hessian of the loss on a fixed evaluation set.

    Paper 001 says only what is measured, not how: "sharpness (the largest eigenvalue of the loss
    Hessian)" and "Estimated sharpness, evaluated on iterates x_i sampled at a fixed rate along the
    cooldown phase" (Fig. 3); it names no solver, number of iterations or tolerance. Here it is Lanczos
    (full reorthogonalisation) run until the Ritz residual of lambda_1 is below `tol` * max|theta| or
    `max_iters` products; each row says whether it got there (`converged`, `residual`, `iterations`),
    and an unconverged lambda_1 is an under-estimate (on the quick study's CNN, 5 products gave 5-20%
    too little and turned the rise along the cooldown into a fall), so a claim must not read it.
    """

    method: Literal["trace", "top-eigen", "exact"] = Field("top-eigen", description="Fig. 3: the top eigenvalue.")
    max_iters: int = Field(30, gt=0, description="Most products per eigenvalue solve.")
    tol: float = Field(1e-3, gt=0.0)
    num_steps: int = Field(6, gt=0, description="Cooldown iterates per run, sampled at a fixed rate.")


@register_unit
class UniversalitySharpness(AnalysisUnit):
    """Top Hessian eigenvalue on iterates sampled along the cooldown of each WSD run (001, Fig. 3 left)."""

    name = "universality_sharpness"
    Options = UniversalitySharpnessOptions
    inputs = {"wsd": WSD}
    tables = ("universality_sharpness",)
    snapshots = True
    default_enabled = False

    def compute(self, ctx: UnitContext, options: UniversalitySharpnessOptions) -> dict[str, list[Row]]:
        if options.method != "top-eigen":
            raise ConfigError("analyses.universality_sharpness.options.method: only 'top-eigen' (the paper's sharpness)")
        data = DataCache()
        rows: list[Row] = []
        for model, sel in grouped(ctx, "wsd"):
            run = sel.run
            t_c = decay_start(run)
            samples, _ = one_step_pairs(weight_steps(run))  # leave out the one-step partners (Fig. 4's x_{i+1})
            steps = evenly([s for s in samples if s >= t_c], options.num_steps)
            rows += [{**head(sel, model), **sharpness_row(r, t_c, final_step(run))}
                     for r in sharpness_table(run, options, steps=steps, data=data(sel), device=ctx.device)]
        return {"universality_sharpness": rows}


SHARPNESS_COLUMNS = ("step", "decay_start", "cooldown_progress", "lambda_1", "converged", "residual", "iterations",
                     "loss")


def sharpness_row(row: Row, decay_start: int, final: int) -> Row:
    """A `sharpness` table row (method top-eigen) as a universality_sharpness row (after model, seed, run)."""
    progress = (row["step"] - decay_start) / max(final - decay_start, 1)
    out = {"step": row["step"], "decay_start": decay_start, "cooldown_progress": progress}
    return {**out, **{k: row.get(k) for k in SHARPNESS_COLUMNS if k not in out}}


# ------------------------------------------------------------------------------ Fig. 3 (right), 4, 7


class UniversalityTrajectoryOptions(TrajectoryConfig):
    one_step: bool = Field(True, description="Fig. 4: x_{i+1} is the iterate one optimizer step after x_i.")


@register_unit
class UniversalityTrajectory(AnalysisUnit):
    """PC1 shares of S/D, ||H v_s|| vs ||H v_d||, tau and cos(-grad, one-step update) per WSD run (001, Figs. 3, 4, 7)."""

    name = "universality_trajectory"
    Options = UniversalityTrajectoryOptions
    inputs = {"wsd": WSD}
    tables = ("universality_trajectory",)
    snapshots = True
    default_enabled = False

    def compute(self, ctx: UnitContext, options: UniversalityTrajectoryOptions) -> dict[str, list[Row]]:
        data = DataCache()
        rows: list[Row] = []
        for model, sel in grouped(ctx, "wsd"):
            table = trajectory_run_table(sel.run, options, data=data(sel), device=ctx.device)
            rows += [{**head(sel, model), **{k: v for k, v in r.items() if k != "run"}} for r in table]
        return {"universality_trajectory": rows}


# ------------------------------------------------------------------------------------------- Fig. 5


def final_eval(sel: SelectedRun) -> Row:
    """The last eval row's val_loss and val_accuracy (None for LMs)."""
    evals = sel.run.eval_rows()
    if not evals:
        raise ConfigError(f"run {sel.path.name} has no evaluation")
    last = max(evals, key=lambda r: r["step"])
    return {"step": last["step"], "val_loss": last["val_loss"], "val_accuracy": last.get("val_accuracy")}


def cooldown_fraction(sel: SelectedRun) -> float:
    """Decay steps / total steps of a WSD run (a sweep branch decays over all its own steps)."""
    spec = sel.run.spec
    return (spec.train.steps - decay_start(sel.run)) / spec.train.steps


@register_unit
class UniversalityLength(AnalysisUnit):
    """Final loss/accuracy vs WSD cooldown length against warmup-cosine at the same budget (001, Fig. 5)."""

    name = "universality_length"
    inputs = {"sweep": SWEEP, "wsd": WSD, "cosine": COSINE}
    required = ("sweep", "cosine")
    tables = ("universality_length",)

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        rows: list[Row] = []
        for source, schedule in (("sweep", "wsd"), ("wsd", "wsd"), ("cosine", "cosine")):
            for model, sel in grouped(ctx, source):
                frac = cooldown_fraction(sel) if schedule == "wsd" else 1.0
                rows.append({**head(sel, model), "schedule": schedule, "source": source,
                             "cooldown_fraction": frac, "total_steps": sel.run.spec.train.steps, **final_eval(sel)})
        models = {r["model"] for r in rows if r["source"] == "sweep"}
        rows = [r for r in rows if r["model"] in models]  # only models with a sweep
        return {"universality_length": rows}
