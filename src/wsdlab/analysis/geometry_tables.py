"""The geometry analyses on run directories, registered by name: sharpness, interpolate, landscape,
trajectory, probes. Each reads weights from a `RunDir` (snapshots or checkpoints), fixed batches of
the run's data, and returns one table (list of dict rows).

Table columns (every table starts with `run`, the run directory's name):
- sharpness:   run, step, dataset, method, estimator, loss, trace, trace_stderr, samples, products,
               lambda_1 .. lambda_k  (trace columns empty for method top-eigen, lambda columns empty
               for method trace; exact fills both and trace_stderr = 0)
- interpolate: run, from_run, from_step, to_run, to_step, dataset, alpha, loss, perplexity
- landscape:   run, point, pre_step, final_step, after_step, dataset, a, b, loss, perplexity,
               e1_norm, e2_norm
- trajectory:  run, kind, ... (the columns of `analysis.trajectory`: pca / hv / path rows)
- probes:      run, step, layer, loss, perplexity, initial_loss, initial_perplexity, rel_perplexity

`dataset` is the split name ("val", "train") or the label given to a second dataset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
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
from wsdlab.analysis.probes import add_relative, probe_layers
from wsdlab.analysis.registry import register_analysis
from wsdlab.analysis.trajectory import trajectory_table
from wsdlab.analysis.weights import (
    Weights,
    difference,
    load_weights,
    select_parameters,
    weights_norm,
)
from wsdlab.common.types import Row
from wsdlab.models import batch_loss, build_model
from wsdlab.schedules import cooldown_steps, pretrain_steps
from wsdlab.train import RunDir

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
    """Trace and/or top eigenvalues of the Hessian of the mean loss of `model` on `batches`."""
    op = HessianOperator(model, loss_fn, batches, cache_graph=cfg.cache_graph, probe_chunk=cfg.probe_chunk)
    row: Row = {"method": cfg.method, "estimator": cfg.estimator if cfg.method == "trace" else "",
                "loss": mean_loss(model, loss_fn, batches)}
    if cfg.method == "trace":
        est = (hutchinson_trace(op, cfg.samples, cfg.seed) if cfg.estimator == "hutchinson"
               else hutchpp_trace(op, max(cfg.samples, 3), cfg.seed))
        row.update(trace=est.trace, trace_stderr=est.stderr, samples=est.products)
    elif cfg.method == "top-eigen":
        solve = lanczos_eigenvalues if cfg.solver == "lanczos" else power_iteration_eigenvalues
        eig = solve(op, cfg.top_k, cfg.max_iters, cfg.tol, cfg.seed)
        row["solver"] = cfg.solver
        row.update({f"lambda_{i + 1}": v for i, v in enumerate(eig.eigenvalues)})
    else:
        spec = exact_spectrum(op)
        row.update(trace=spec.trace, trace_stderr=0.0, samples=0)
        row.update({f"lambda_{i + 1}": v for i, v in enumerate(spec.eigenvalues[: cfg.top_k])})
    row["products"] = op.num_products
    return row


@register_analysis("sharpness")
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


@register_analysis("interpolate")
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


@register_analysis("landscape")
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


@register_analysis("trajectory")
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
    if len(steps) < 2:
        raise FileNotFoundError(f"run {run.path} has fewer than 2 snapshots/checkpoints: nothing to trace")
    keep = set(steps[:: cfg.every]) | {steps[-1]} | ({decay_step} if decay_step in sources else set())
    iterates = {s: weights_at(sources[s], s, model)
                for s in track(sorted(keep), description="iterates", disable=not progress, transient=True)}
    batches = eval_batches(run_data(run, data), cfg.eval, device)
    rows = trajectory_table(model, batch_loss, batches, iterates, decay_start=decay_step,
                            stable_start=stable_start, fraction=cfg.fraction, hessian=cfg.hessian,
                            probe_chunk=cfg.probe_chunk)
    return [{"run": run.path.name, **r} for r in rows]


# ---------------------------------------------------------------------------- probes


@register_analysis("probes")
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
