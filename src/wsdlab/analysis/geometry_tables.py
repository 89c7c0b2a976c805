"""The geometry analyses on run directories, each a registered unit (end of this module): sharpness,
interpolate, landscape, trajectory, probes. Each reads weights from a `RunDir` (snapshots or
checkpoints), fixed batches of the run's data, and returns one table (list of dict rows).

Table columns (every table starts with `run`, the run directory's name):
- sharpness:   run, step, dataset, method, estimator, loss, then by method
               trace:     trace, trace_stderr, samples (probes actually used: fewer than `samples`
                          when `target_rel_stderr` stopped it), products
               top-eigen: solver, lambda_1 .. lambda_k, converged, residual, iterations, products
               exact:     trace, trace_stderr (= 0), samples (= 0), lambda_1 .. lambda_k,
                          converged (True), residual (0), iterations (0), products
               (`residual`: `hessian.EigenEstimate.residual`, max ||H y - lambda y|| / max|lambda|;
               a row with converged False is not a measurement to draw conclusions from)
- interpolate: run, from_run, from_step, to_run, to_step, dataset, alpha, loss, perplexity
- landscape:   run, point, pre_step, final_step, after_step, dataset, a, b, loss, perplexity,
               e1_norm, e2_norm
- trajectory:  run, kind, ... (the columns of `analysis.trajectory`: pca / hv / path rows)
- probes:      run, step, layer, loss, perplexity, initial_loss, initial_perplexity, rel_perplexity

`dataset` is the split name ("val", "train") or the label given to a second dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field, model_validator
from rich.progress import track
from safetensors.torch import load_file
from torch import nn

from wsdlab.analysis.evalset import Batch, fixed_batches, mean_loss
from wsdlab.analysis.geometry_config import (
    EvalSetConfig,
    InterpolateConfig,
    LandscapeConfig,
    ProbeConfig,
    SharpnessConfig,
    TrajectoryConfig,
)
from wsdlab.analysis.hessian import (
    HessianOperator,
    exact_spectrum,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_eigenvalues,
    power_iteration_eigenvalues,
)
from wsdlab.analysis.landscape import cooldown_plane, interpolation
from wsdlab.analysis.memo import MEMO, batches_digest, function_key, model_digest
from wsdlab.analysis.probes import add_relative, probe_layers
from wsdlab.analysis.trajectory import one_step_pairs, trajectory_table
from wsdlab.analysis.units import (
    BASE,
    AnalysisUnit,
    RunSelector,
    UnitContext,
    evenly,
    labelled,
    register_unit,
)
from wsdlab.analysis.weights import (
    Weights,
    difference,
    load_weights,
    select_parameters,
    weights_norm,
)
from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row
from wsdlab.models import batch_loss, build_model
from wsdlab.schedules import cooldown_steps, pretrain_steps
from wsdlab.train import RunDir
from wsdlab.train.layout import SPEC

if TYPE_CHECKING:
    from wsdlab.data import DataBundle
    from wsdlab.data.config import DataConfig

RunLike = RunDir | str | Path


# ---------------------------------------------------------------------------- run access


def as_run(run: RunLike) -> RunDir:
    """A RunDir from a RunDir or a path (FileNotFoundError when it is not a run directory)."""
    return run if isinstance(run, RunDir) else RunDir(run)


def run_model(run: RunDir, device: torch.device | str = "cpu") -> nn.Module:
    """A freshly built model of the run's architecture (weights to be loaded), eval mode."""
    with torch.device(device):
        return build_model(run.spec.model).eval()


def weight_steps(run: RunDir) -> list[int]:
    """Steps with weights on disk: snapshots and checkpoints."""
    return sorted(set(run.snapshot_steps()) | set(run.checkpoint_steps()))


def weights_at(run: RunDir, step: int | None, model: nn.Module) -> Weights:
    """The run's parameters at `step` (a snapshot, else a checkpoint; None = the latest checkpoint)."""
    if step is None:
        steps = run.checkpoint_steps()
        if not steps:
            raise FileNotFoundError(f"run {run.path} has no checkpoint")
        step = steps[-1]
    if step in run.snapshot_steps():
        return select_parameters(model, run.load_snapshot(step), f"{run.path}/snapshots/{step}")
    if step in run.checkpoint_steps():
        path = run.checkpoint(step) / "model.safetensors"
        return select_parameters(model, load_file(path), str(path))
    raise FileNotFoundError(f"run {run.path} has no snapshot or checkpoint at step {step} "
                            f"(have {weight_steps(run) or 'none'})")


def final_step(run: RunDir) -> int:
    """Step of the latest checkpoint (the final model of a complete run)."""
    steps = run.checkpoint_steps()
    if not steps:
        raise FileNotFoundError(f"run {run.path} has no checkpoint")
    return steps[-1]


def decay_start(run: RunDir) -> int:
    """First step of the decay: T_pre - (decay length) (a branch from step k: k); ValueError for wso runs."""
    spec = run.spec
    total = spec.train.steps
    cool = cooldown_steps(spec.schedule, total)
    if cool == 0:
        raise ValueError(f"run {run.path} has no decay (schedule.kind '{spec.schedule.kind}'); pass the decay start")
    return pretrain_steps(spec.schedule, total) - cool


def run_data(run: RunDir, data: DataBundle | None = None) -> DataBundle:
    """The run's DataBundle (prepared and cached on first use), or `data` when given."""
    if data is not None:
        return data
    from wsdlab.data import (
        load_data,  # deferred: preparing data is only needed when no bundle is passed
    )

    return load_data(run.spec.data, progress=False)


def eval_batches(data: DataBundle, cfg: EvalSetConfig, device: torch.device | str = "cpu") -> list[Batch]:
    """The fixed evaluation set of `cfg` from `data`."""
    return fixed_batches(data, cfg.split, cfg.batches, cfg.batch_size, cfg.seed, cfg.seq_len, device)


# ---------------------------------------------------------------------------- sharpness


def sharpness_at(model: nn.Module, batches: Sequence[Batch], cfg: SharpnessConfig, loss_fn: Any = batch_loss) -> Row:
    """Trace and/or top eigenvalues of the Hessian of the mean loss of `model` on `batches`.

    Computed once per process for the same weights, batches and settings (`analysis.memo`): a cooldown's
    first sampled step is its parent's checkpoint, already measured on the parent.
    """
    fn_key = function_key(loss_fn)
    if fn_key is None:
        return _sharpness_at(model, batches, cfg, loss_fn)
    key = ("sharpness", model_digest(model, mode=False), batches_digest(batches), cfg.model_dump_json(), fn_key)
    return dict(MEMO.get_or_compute(key, lambda: _sharpness_at(model, batches, cfg, loss_fn)))


def _sharpness_at(model: nn.Module, batches: Sequence[Batch], cfg: SharpnessConfig, loss_fn: Any) -> Row:
    op = HessianOperator(model, loss_fn, batches, cache_graph=cfg.cache_graph, probe_chunk=cfg.probe_chunk)
    row: Row = {"method": cfg.method, "estimator": cfg.estimator if cfg.method == "trace" else "",
                "loss": mean_loss(model, loss_fn, batches)}
    if cfg.method == "trace":
        est = (hutchinson_trace(op, cfg.samples, cfg.seed, target_rel_stderr=cfg.target_rel_stderr,
                                min_samples=cfg.min_samples) if cfg.estimator == "hutchinson"
               else hutchpp_trace(op, max(cfg.samples, 3), cfg.seed))
        row.update(trace=est.trace, trace_stderr=est.stderr, samples=est.products)
    elif cfg.method == "top-eigen":
        solve = lanczos_eigenvalues if cfg.solver == "lanczos" else power_iteration_eigenvalues
        eig = solve(op, cfg.top_k, cfg.max_iters, cfg.tol, cfg.seed)
        row["solver"] = cfg.solver
        row.update({f"lambda_{i + 1}": v for i, v in enumerate(eig.eigenvalues)})
        row.update(converged=eig.converged, residual=eig.residual, iterations=eig.iterations)
    else:
        spec = exact_spectrum(op)
        row.update(trace=spec.trace, trace_stderr=0.0, samples=0)
        row.update({f"lambda_{i + 1}": v for i, v in enumerate(spec.eigenvalues[: cfg.top_k])})
        row.update(converged=True, residual=0.0, iterations=0)
    row["products"] = op.num_products
    return row


def sharpness_table(run: RunLike, config: SharpnessConfig | None = None, *, steps: Sequence[int] | None = None,
                    data: DataBundle | None = None, second_data: DataBundle | DataConfig | None = None,
                    second_name: str = "second", device: str = "cpu", progress: bool = False) -> list[Row]:
    """Sharpness at each step (default: every snapshot and checkpoint) on the run's eval set and a second dataset.

    `second_data` (a DataBundle or a DataConfig that shares the run's tokenizer) is measured with the
    same EvalSetConfig; rows name it `second_name`.
    """
    run = as_run(run)
    cfg = config or SharpnessConfig()
    model = run_model(run, device)
    sets: dict[str, list[Batch]] = {cfg.eval.split: eval_batches(run_data(run, data), cfg.eval, device)}
    if second_data is not None:
        bundle = second_data if hasattr(second_data, "val_batch") else _load_other(second_data)
        sets[second_name] = eval_batches(bundle, cfg.eval, device)
    steps = weight_steps(run) if steps is None else list(steps)
    if not steps:
        raise FileNotFoundError(f"run {run.path} has no snapshots or checkpoints")
    rows: list[Row] = []
    for step in track(steps, description="sharpness", disable=not progress, transient=True):
        load_weights(model, weights_at(run, step, model))
        for name, batches in sets.items():
            rows.append({"run": run.path.name, "step": step, "dataset": name, **sharpness_at(model, batches, cfg)})
    return rows


def sharpness_of_checkpoint(checkpoint: str | Path, config: SharpnessConfig | None = None, *,
                            data: DataBundle | None = None, second_data: DataBundle | DataConfig | None = None,
                            second_name: str = "second", device: str = "cpu") -> list[Row]:
    """Sharpness rows (one per dataset) of a single checkpoint directory, on its run's data."""
    from wsdlab.train import load_checkpoint

    cfg = config or SharpnessConfig()
    model, spec, state = load_checkpoint(checkpoint, device)
    bundle = data if data is not None else _load_other(spec.data)
    sets: dict[str, list[Batch]] = {cfg.eval.split: eval_batches(bundle, cfg.eval, device)}
    if second_data is not None:
        other = second_data if hasattr(second_data, "val_batch") else _load_other(second_data)
        sets[second_name] = eval_batches(other, cfg.eval, device)
    name = Path(checkpoint).parent.parent.name
    return [{"run": name, "step": int(state["step"]), "dataset": ds, **sharpness_at(model, batches, cfg)}
            for ds, batches in sets.items()]


def _load_other(cfg: DataConfig) -> DataBundle:
    from wsdlab.data import load_data

    return load_data(cfg, progress=False)


# ---------------------------------------------------------------------------- interpolation and planes


def interpolate_table(run: RunLike, config: InterpolateConfig | None = None, *, from_step: int,
                      to_step: int | None = None, to_run: RunLike | None = None, data: DataBundle | None = None,
                      device: str = "cpu", progress: bool = False) -> list[Row]:
    """Loss along the line from `run` at `from_step` to `to_run` (default the same run) at `to_step` (default final)."""
    run = as_run(run)
    other = as_run(to_run) if to_run is not None else run
    cfg = config or InterpolateConfig()
    model = run_model(run, device)
    theta0 = weights_at(run, from_step, model)
    to_step = final_step(other) if to_step is None else to_step
    theta1 = weights_at(other, to_step, model)
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows = interpolation(model, batch_loss, batches, theta0, theta1, cfg.alphas, chunk_size=cfg.chunk_size)
    head = {"run": run.path.name, "from_run": run.path.name, "from_step": from_step, "to_run": other.path.name,
            "to_step": to_step, "dataset": cfg.eval.split}
    return [{**head, **r} for r in rows]


def landscape_table(run: RunLike, config: LandscapeConfig | None = None, *, points: Sequence[int],
                    pre_step: int | None = None, final: int | None = None,
                    after: Mapping[int, Weights] | None = None, data: DataBundle | None = None,
                    device: str = "cpu", progress: bool = False) -> list[Row]:
    """2-D landscapes at cooldown `points` along e1 = pre-cooldown -> final and e2 = `offset` steps on.

    `pre_step` defaults to the run's decay start, `final` to its latest checkpoint. The weights
    `offset` steps after a point come from `after[point]` when given (e.g. a short branch), else
    from the run's snapshot/checkpoint at point + offset.
    """
    run = as_run(run)
    cfg = config or LandscapeConfig()
    if not points:
        raise ValueError("points: give at least one cooldown step")
    model = run_model(run, device)
    pre_step = decay_start(run) if pre_step is None else pre_step
    final = final_step(run) if final is None else final
    pre, fin = weights_at(run, pre_step, model), weights_at(run, final, model)
    e1_norm = weights_norm(difference(fin, pre))
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows: list[Row] = []
    for point in track(points, description="landscape", disable=not progress, transient=True):
        here = weights_at(run, point, model)
        later = after[point] if after is not None and point in after else weights_at(run, point + cfg.offset, model)
        head = {"run": run.path.name, "point": point, "pre_step": pre_step, "final_step": final,
                "after_step": point + cfg.offset, "dataset": cfg.eval.split}
        grid = cooldown_plane(model, batch_loss, batches, pre=pre, final=fin, point=here, after=later,
                              a_values=cfg.a_values, b_values=cfg.b_values, orthogonal=cfg.orthogonal,
                              chunk_size=cfg.chunk_size)
        e2_norm = weights_norm(difference(later, here))
        rows += [{**head, **r, "e1_norm": e1_norm, "e2_norm": e2_norm} for r in grid]
    return rows


# ---------------------------------------------------------------------------- trajectory


def trajectory_run_table(run: RunLike, config: TrajectoryConfig | None = None, *, decay_step: int | None = None,
                         stable_start: int | None = None, parent: RunLike | None = None,
                         data: DataBundle | None = None, device: str = "cpu", progress: bool = False) -> list[Row]:
    """PCA of S, D, S', D', ||H v_s|| vs ||H v_d|| at the decay start, and the path rows of one run.

    Iterates are the run's snapshots and checkpoints (every `config.every`-th); `parent` adds the
    iterates of the run a cooldown branch started from (steps up to the branch point).
    `decay_step` defaults to the run's decay start, `stable_start` to its warmup length.
    """
    run = as_run(run)
    cfg = config or TrajectoryConfig()
    model = run_model(run, device)
    decay_step = decay_start(run) if decay_step is None else decay_step
    stable_start = run.spec.schedule.warmup_steps if stable_start is None else stable_start
    sources: dict[int, RunDir] = {}
    if parent is not None:
        par = as_run(parent)
        sources.update({s: par for s in weight_steps(par) if s <= decay_step})
    sources.update({s: run for s in weight_steps(run)})
    steps = sorted(sources)
    partner: dict[int, int] = {}
    if cfg.one_step:  # x_{i+1} = the weights one optimizer step after a sampled x_i (paper 001, Fig. 4)
        steps, partner = one_step_pairs(steps)
        if not partner:
            raise ConfigError(f"trajectory one_step: run {run.path.name} has no weights one step after a sampled "
                              "iterate; add train.snapshot_steps s+1 for the sampled steps s")
    if len(steps) < 2:
        raise FileNotFoundError(f"run {run.path} has fewer than 2 snapshots/checkpoints: nothing to trace")
    keep = set(steps[:: cfg.every]) | {steps[-1]} | ({decay_step} if decay_step in sources else set())
    iterates = {s: weights_at(sources[s], s, model)
                for s in track(sorted(keep), description="iterates", disable=not progress, transient=True)}
    following = {s: weights_at(sources[partner[s]], partner[s], model) for s in keep if s in partner} if cfg.one_step else None
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows = trajectory_table(model, batch_loss, batches, iterates, decay_start=decay_step,
                            stable_start=stable_start, fraction=cfg.fraction, hessian=cfg.hessian,
                            probe_chunk=cfg.probe_chunk, next_iterates=following)
    return [{"run": run.path.name, **r} for r in rows]


# ---------------------------------------------------------------------------- probes


def probes_table(run: RunLike, config: ProbeConfig | None = None, *, steps: Sequence[int] | None = None,
                 reference_step: int | None = None, data: DataBundle | None = None, device: str = "cpu",
                 progress: bool = False) -> list[Row]:
    """Per-layer linear-probe perplexity at each step (default: the checkpoints from the decay start on).

    rel_perplexity divides by the same layer's perplexity at `reference_step` (default the first step,
    the cooldown start).
    """
    run = as_run(run)
    cfg = config or ProbeConfig()
    if steps is None:
        start = decay_start(run)
        steps = [s for s in run.checkpoint_steps() if s >= start] or run.checkpoint_steps()
    steps = sorted(steps)
    if not steps:
        raise FileNotFoundError(f"run {run.path} has no checkpoint")
    reference_step = steps[0] if reference_step is None else reference_step
    if reference_step not in steps:
        steps = sorted({*steps, reference_step})
    bundle = run_data(run, data)
    train_batches = eval_batches(bundle, cfg.train, device)
    held_out = eval_batches(bundle, cfg.eval, device)
    model = run_model(run, device)
    rows: list[Row] = []
    for step in track(steps, description="probes", disable=not progress, transient=True):
        load_weights(model, weights_at(run, step, model))
        layer_rows = probe_layers(model, train_batches, held_out, steps=cfg.steps, lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
        rows += [{"run": run.path.name, "step": step, **r} for r in layer_rows]
    return add_relative(rows, reference_step)


# ---------------------------------------------------------------------------- units
#
# In a study each geometry unit reads the base run (group 'stable') and the snapshot-keeping cooldown
# of each shape (the first seed); rows get a leading `shape` column. On the command line
# (`wsdlab analyze <name>`) it reads the run (or checkpoint) of its Target.

GEOMETRY_RUNS = RunSelector(stage=["cooldown"], where={"geometry": True}, group_by=["shape", "variant"])
_RUN = {"cli": "RUN"}


class SharpnessOptions(SharpnessConfig):
    num_steps: int = Field(5, gt=0, description="Study: how many of each run's weight steps are measured.",
                           json_schema_extra={"cli": False})


class SharpnessTarget(StrictModel):
    run: Path | None = Field(None, description="Run directory (every snapshot/checkpoint, or --steps).",
                             json_schema_extra=_RUN)
    checkpoint: Path | None = Field(None, description="One checkpoint directory instead of a run.")
    steps: list[int] | None = Field(None, description="Comma-separated steps (run mode).")
    second_data: Path | None = Field(None, description="DataConfig YAML of a second dataset.")

    @model_validator(mode="after")
    def _one_source(self) -> SharpnessTarget:
        if (self.run is None) == (self.checkpoint is None):
            raise ValueError("give either a RUN directory or --checkpoint CKPT")
        return self


class _GeometryUnit(AnalysisUnit):
    inputs = {"base": BASE, "runs": GEOMETRY_RUNS}
    required = ("runs", "base")
    default_enabled = False
    snapshots = True

    @staticmethod
    def geometry_runs(ctx: UnitContext) -> list[tuple[str, RunDir]]:
        return [(g, runs[0]) for g, runs in ctx.groups("runs").items()]


@register_unit
class Sharpness(_GeometryUnit):
    """Hessian trace (Hutchinson / Hutch++) and top eigenvalues along a run, or of one checkpoint."""

    name = "sharpness"
    Options = SharpnessOptions
    tables = ("sharpness",)
    Target = SharpnessTarget

    def compute(self, ctx: UnitContext, options: SharpnessOptions) -> dict[str, list[Row]]:
        rows: list[Row] = []
        for group, run in [*((g, rs[0]) for g, rs in ctx.groups("base").items()), *self.geometry_runs(ctx)]:
            steps = evenly(weight_steps(run), options.num_steps)
            rows += labelled(sharpness_table(run, options, steps=steps, data=ctx.data, device=ctx.device,
                                             progress=ctx.progress), group)
        return {"sharpness": rows}

    def run_root(self, target: SharpnessTarget) -> Path:
        if target.checkpoint is None:
            return Path(target.run)  # type: ignore[arg-type]
        ckpt = target.checkpoint
        return ckpt.parent.parent if (ckpt.parent.parent / SPEC).is_file() else ckpt.parent

    def compute_run(self, target: SharpnessTarget, options: SharpnessOptions, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        other = None
        if target.second_data is not None:
            from wsdlab.common.config import load_yaml_model
            from wsdlab.data.config import DataConfig

            other = load_yaml_model(target.second_data, DataConfig)
        if target.checkpoint is not None:
            return sharpness_of_checkpoint(target.checkpoint, options, second_data=other, device=device)
        return sharpness_table(target.run, options, steps=target.steps, second_data=other,  # type: ignore[arg-type]
                               device=device, progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        def lambdas(row: Row) -> list[float]:
            keys = sorted((k for k in row if k.startswith("lambda_")), key=lambda k: int(k[7:]))
            return [row[k] for k in keys if row[k] is not None]

        def head(r: Row) -> Row:
            out: Row = {"step": r["step"], "dataset": r["dataset"], "loss": r["loss"]}
            if "trace" in r:
                out.update(trace=r["trace"], trace_stderr=r["trace_stderr"], samples=r["samples"])
            if lambdas(r):
                out["eigenvalues"] = lambdas(r)
            if "converged" in r:
                out.update(converged=r["converged"], residual=r["residual"])
            return out

        last = next(r for r in rows if r["step"] == rows[-1]["step"])
        return {**head(last), "products": last["products"], "rows": [head(r) for r in rows]}


class InterpolateTarget(StrictModel):
    run: Path = Field(description="Run directory.", json_schema_extra=_RUN)
    from_step: int = Field(description="Step of theta0 (snapshot or checkpoint).", json_schema_extra={"cli": "--from"})
    to_step: int | None = Field(None, description="Step of theta1 [final checkpoint].", json_schema_extra={"cli": "--to"})
    to_run: Path | None = Field(None, description="Take theta1 from this run [RUN].")


@register_unit
class Interpolate(_GeometryUnit):
    """1-D loss along theta(a) = (1 - a) theta0 + a theta1 between two checkpoints/snapshots."""

    name = "interpolate"
    Options = InterpolateConfig
    tables = ("interpolate",)
    Target = InterpolateTarget

    def compute(self, ctx: UnitContext, options: InterpolateConfig) -> dict[str, list[Row]]:
        """Loss on the line from the pre-cooldown checkpoint (the base's final step) to each cooldown's end."""
        base = ctx.one("base")
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            rows += labelled(interpolate_table(base, options, from_step=base.spec.train.steps, to_run=run,
                                               data=ctx.data, device=ctx.device, progress=ctx.progress), group)
        return {"interpolate": rows}

    def compute_run(self, target: InterpolateTarget, options: InterpolateConfig, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return interpolate_table(target.run, options, from_step=target.from_step, to_step=target.to_step,
                                 to_run=target.to_run, device=device)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        """Endpoint losses and the barrier: max over a in [0, 1] of L(a) - ((1 - a) L(0) + a L(1))."""
        by_alpha = {r["alpha"]: r["loss"] for r in rows}
        l0, l1 = by_alpha.get(0.0, math.nan), by_alpha.get(1.0, math.nan)
        inside = [(a, loss) for a, loss in by_alpha.items() if 0.0 <= a <= 1.0]
        barrier = max((loss - ((1 - a) * l0 + a * l1) for a, loss in inside), default=math.nan)
        best = min(rows, key=lambda r: r["loss"])
        return {"from_step": rows[0]["from_step"], "to_step": rows[0]["to_step"], "loss_from": l0, "loss_to": l1,
                "barrier": barrier, "min_loss": best["loss"], "min_alpha": best["alpha"]}


class LandscapeOptions(LandscapeConfig):
    points: int = Field(2, gt=0, description="Study: how many cooldown points get a 2-D landscape.",
                        json_schema_extra={"cli": False})


class LandscapeTarget(StrictModel):
    run: Path = Field(description="Run directory (a cooldown with snapshots).", json_schema_extra=_RUN)
    points: list[int] = Field(description="Comma-separated cooldown steps.")
    pre_step: int | None = Field(None, description="Pre-cooldown step [the decay start].", json_schema_extra={"cli": "--pre"})
    final: int | None = Field(None, description="Final step [latest checkpoint].")


@register_unit
class Landscape(_GeometryUnit):
    """2-D perplexity landscape at cooldown points along (pre-cooldown -> final) x (offset optimizer steps)."""

    name = "landscape"
    Options = LandscapeOptions
    tables = ("landscape",)
    Target = LandscapeTarget

    def compute(self, ctx: UnitContext, options: LandscapeOptions) -> dict[str, list[Row]]:
        """2-D landscapes at a few cooldown points whose weights `offset` steps later are on disk."""
        k = ctx.one("base").spec.train.steps
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            have = set(weight_steps(run))
            candidates = [p for p in sorted(have) if p >= k and p + options.offset in have]
            if not candidates:
                raise ConfigError(f"landscape: run {run.path.name} has no cooldown point with weights {options.offset} "
                                  f"steps later (snapshots at {sorted(have)}); make analyses.landscape.options.offset a "
                                  "multiple of analyses.snapshot_every and shorter than the cooldown")
            points = evenly(candidates, options.points)
            rows += labelled(landscape_table(run, options, points=points, pre_step=k, data=ctx.data, device=ctx.device,
                                             progress=ctx.progress), group)
        return {"landscape": rows}

    def compute_run(self, target: LandscapeTarget, options: LandscapeOptions, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return landscape_table(target.run, options, points=target.points, pre_step=target.pre_step,
                               final=target.final, device=device, progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        """Per point: perplexity at the point itself and the grid minimum with its (a, b)."""
        out: dict[str, Any] = {}
        for point in dict.fromkeys(r["point"] for r in rows):
            sub = [r for r in rows if r["point"] == point]
            centre = next((r["perplexity"] for r in sub if r["a"] == 0 and r["b"] == 0), math.nan)
            best = min(sub, key=lambda r: r["loss"])
            out[str(point)] = {"perplexity": centre, "min_perplexity": best["perplexity"], "min_a": best["a"],
                               "min_b": best["b"], "e1_norm": sub[0]["e1_norm"], "e2_norm": sub[0]["e2_norm"]}
        return {"points": out}


class TrajectoryTarget(StrictModel):
    run: Path = Field(description="Run directory with snapshots.", json_schema_extra=_RUN)
    decay_start: int | None = Field(None, description="First decay step [from the schedule].")
    stable_start: int | None = Field(None, description="First stable step [warmup_steps].")
    parent: Path | None = Field(None, description="Run a cooldown branch started from (its iterates).")


@register_unit
class Trajectory(_GeometryUnit):
    """PCA of stable/decay iterates, ||H v|| along their directions, quasi-convexity and norms."""

    name = "trajectory"
    Options = TrajectoryConfig
    tables = ("trajectory",)
    Target = TrajectoryTarget

    def compute(self, ctx: UnitContext, options: TrajectoryConfig) -> dict[str, list[Row]]:
        base = ctx.one("base")
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            rows += labelled(trajectory_run_table(run, options, decay_step=base.spec.train.steps, parent=base,
                                                  data=ctx.data, device=ctx.device, progress=ctx.progress), group)
        return {"trajectory": rows}

    def compute_run(self, target: TrajectoryTarget, options: TrajectoryConfig, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return trajectory_run_table(target.run, options, decay_step=target.decay_start,
                                    stable_start=target.stable_start, parent=target.parent, device=device,
                                    progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        path_rows = [r for r in rows if r["kind"] == "path"]
        taus = [r["tau"] for r in path_rows if r["tau"] is not None and math.isfinite(r["tau"])]
        return {
            "pc1_share": {r["set"]: r["pc1_share"] for r in rows if r["kind"] == "pca"},
            "hv_norm": {r["direction"]: r["hv_norm"] for r in rows if r["kind"] == "hv"},
            "tau_min": min(taus, default=math.nan),
            "param_norm_final": path_rows[-1]["param_norm"] if path_rows else math.nan,
        }


class ProbeOptions(ProbeConfig):
    num_steps: int = Field(3, gt=0, description="Study: how many cooldown steps are probed.",
                           json_schema_extra={"cli": False})


class ProbesTarget(StrictModel):
    run: Path = Field(description="Run directory (a cooldown with checkpoints).", json_schema_extra=_RUN)
    steps: list[int] | None = Field(None, description="Comma-separated checkpoint steps [decay on].")
    reference_step: int | None = Field(None, description="Cooldown start [first step].")


@register_unit
class Probes(_GeometryUnit):
    """Linear probes per layer (head initialised from the LM head) along the cooldown."""

    name = "probes"
    Options = ProbeOptions
    tables = ("probes",)
    Target = ProbesTarget

    def compute(self, ctx: UnitContext, options: ProbeOptions) -> dict[str, list[Row]]:
        k = ctx.one("base").spec.train.steps
        rows: list[Row] = []
        for group, run in self.geometry_runs(ctx):
            steps = evenly([s for s in weight_steps(run) if s >= k], options.num_steps)
            rows += labelled(probes_table(run, options, steps=steps, reference_step=steps[0], data=ctx.data,
                                          device=ctx.device, progress=ctx.progress), group)
        return {"probes": rows}

    def compute_run(self, target: ProbesTarget, options: ProbeOptions, *, device: str = "cpu",
                    progress: bool = False) -> list[Row]:
        return probes_table(target.run, options, steps=target.steps, reference_step=target.reference_step,
                            device=device, progress=progress)

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        steps = list(dict.fromkeys(r["step"] for r in rows))
        return {
            "perplexity": {str(s): [r["perplexity"] for r in rows if r["step"] == s] for s in steps},
            "rel_perplexity": {str(s): [r["rel_perplexity"] for r in rows if r["step"] == s] for s in steps},
        }
