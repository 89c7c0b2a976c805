"""Unit `sharpness`: Hessian trace (Hutchinson / Hutch++) and top eigenvalues along a run, or of one checkpoint.

Table `sharpness` (columns in `wsdlab.analysis.geometry`); the estimators are `analysis.hessian`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator
from rich.progress import track
from torch import nn

from wsdlab.analysis.evalset import Batch, mean_loss
from wsdlab.analysis.geometry.common import (
    RUN_ARGUMENT,
    GeometryUnit,
    RunLike,
    as_run,
    eval_batches,
    load_other,
    run_data,
    run_model,
    weight_steps,
    weights_at,
)
from wsdlab.analysis.geometry_config import SharpnessConfig
from wsdlab.analysis.hessian import (
    HessianOperator,
    exact_spectrum,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_eigenvalues,
    power_iteration_eigenvalues,
)
from wsdlab.analysis.memo import MEMO, batches_digest, function_key, model_digest
from wsdlab.analysis.units import UnitContext, evenly, labelled, register_unit
from wsdlab.analysis.weights import load_weights
from wsdlab.common.config import StrictModel
from wsdlab.common.types import Row
from wsdlab.models import batch_loss
from wsdlab.train.runstore import run_of

if TYPE_CHECKING:
    from wsdlab.data import DataBundle
    from wsdlab.data.config import DataConfig


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
        bundle = second_data if hasattr(second_data, "val_batch") else load_other(second_data)
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


def checkpoint_root(checkpoint: Path) -> Path:
    """The run folder holding `checkpoint`, or the checkpoint's parent for a checkpoint outside a run."""
    try:
        return run_of(checkpoint).path
    except FileNotFoundError:
        return checkpoint.parent


def sharpness_of_checkpoint(checkpoint: str | Path, config: SharpnessConfig | None = None, *,
                            data: DataBundle | None = None, second_data: DataBundle | DataConfig | None = None,
                            second_name: str = "second", device: str = "cpu") -> list[Row]:
    """Sharpness rows (one per dataset) of a single checkpoint directory, on its run's data.

    `run` is the name of the folder `checkpoint_root` finds (the run holding the checkpoint).
    """
    from wsdlab.train import load_checkpoint

    cfg = config or SharpnessConfig()
    model, spec, state = load_checkpoint(checkpoint, device)
    bundle = data if data is not None else load_other(spec.data)
    sets: dict[str, list[Batch]] = {cfg.eval.split: eval_batches(bundle, cfg.eval, device)}
    if second_data is not None:
        other = second_data if hasattr(second_data, "val_batch") else load_other(second_data)
        sets[second_name] = eval_batches(other, cfg.eval, device)
    name = checkpoint_root(Path(checkpoint)).name
    return [{"run": name, "step": int(state["step"]), "dataset": ds, **sharpness_at(model, batches, cfg)}
            for ds, batches in sets.items()]


class SharpnessOptions(SharpnessConfig):
    num_steps: int = Field(5, gt=0, description="Study: how many of each run's weight steps are measured.",
                           json_schema_extra={"cli": False})


class SharpnessTarget(StrictModel):
    run: Path | None = Field(None, description="Run directory (every snapshot/checkpoint, or --steps).",
                             json_schema_extra=RUN_ARGUMENT)
    checkpoint: Path | None = Field(None, description="One checkpoint directory instead of a run.")
    steps: list[int] | None = Field(None, description="Comma-separated steps (run mode).")
    second_data: Path | None = Field(None, description="DataConfig YAML of a second dataset.")

    @model_validator(mode="after")
    def _one_source(self) -> SharpnessTarget:
        if (self.run is None) == (self.checkpoint is None):
            raise ValueError("give either a RUN directory or --checkpoint CKPT")
        return self


@register_unit
class Sharpness(GeometryUnit):
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
        return Path(target.run) if target.checkpoint is None else checkpoint_root(target.checkpoint)  # type: ignore[arg-type]

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
