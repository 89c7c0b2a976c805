"""`wsdlab analyze sharpness|landscape|interpolate|trajectory|probes`: geometry of run directories.

Each command computes one registered analysis (`wsdlab.analysis.geometry_tables`), writes its table
as `<name>.csv` and a figure `<name>.png` into --out (default RUN/analysis/), and with --json prints
the headline numbers as one JSON object on stdout.
"""

from __future__ import annotations

import enum
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from wsdlab.cli.errors import UserError, user_errors
from wsdlab.cli.options import path_option
from wsdlab.common.types import Row

app = typer.Typer(no_args_is_help=True)



class Method(str, enum.Enum):
    trace = "trace"
    top_eigen = "top-eigen"
    exact = "exact"


class Estimator(str, enum.Enum):
    hutchinson = "hutchinson"
    hutchpp = "hutchpp"


class Solver(str, enum.Enum):
    lanczos = "lanczos"
    power = "power"


class Split(str, enum.Enum):
    val = "val"
    train = "train"


# ---------------------------------------------------------------------------- parsing and output


def parse_ints(text: str | None, option: str) -> list[int] | None:
    """'10,20,30' -> [10, 20, 30]; None stays None."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got {text!r}") from None


def parse_floats(text: str, option: str) -> list[float]:
    """'a,b,c' -> a list; 'start:stop:num' -> num evenly spaced values from start to stop (inclusive)."""
    try:
        if text.count(":") == 2:
            start, stop, num = text.split(":")
            n = int(num)
            if n < 1:
                raise ValueError
            lo, hi = float(start), float(stop)
            return [lo] if n == 1 else [round(lo + (hi - lo) * i / (n - 1), 12) for i in range(n)]
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option}: expected 'a,b,c' or 'start:stop:num', got {text!r}") from None
    if not values:
        raise UserError(f"{option}: no values in {text!r}")
    return values


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return name


def _check_out(out: Path | None) -> None:
    """Refuse an --out that cannot become a directory before any work is done (nothing is written on failure)."""
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")


def _out_dir(out: Path | None, run: Path) -> Path:
    path = out if out is not None else run / "analysis"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _eval_set(split: Split, batches: int, batch_size: int, seq_len: int | None, seed: int) -> Any:
    from wsdlab.analysis.geometry_config import EvalSetConfig

    return EvalSetConfig(split=split.value, batches=batches, batch_size=batch_size, seq_len=seq_len, seed=seed)


def _finish(name: str, rows: Sequence[Row], out: Path, headline: dict[str, Any], as_json: bool, plot: Any) -> None:
    """Write <name>.csv and <name>.png, then print the headline (JSON or a short summary)."""
    from wsdlab.analysis.tables import write_table

    csv_path = write_table(rows, out / f"{name}.csv")
    png_path = out / f"{name}.png"
    plot(rows, png_path)
    if as_json:
        typer.echo(json.dumps(_jsonable(headline)))
    else:
        from rich.console import Console

        console = Console()
        console.print(f"wrote {csv_path} ({len(rows)} rows) and {png_path}", highlight=False, markup=False)
        for key, value in headline.items():
            console.print(f"  {key}: {value}", highlight=False, markup=False)


def _jsonable(x: Any) -> Any:
    """NaN/inf become null (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _figure(ncols: int = 1, width: float = 5.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.6), squeeze=False)
    return fig, axes[0]


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    from wsdlab.common.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------- sharpness


def _lambdas(row: Row) -> list[float]:
    return [row[k] for k in sorted((k for k in row if k.startswith("lambda_")), key=lambda k: int(k[7:]))
            if row[k] is not None]


def _plot_sharpness(rows: Sequence[Row], path: Path) -> None:
    fig, (ax,) = _figure()
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset]
        steps = [r["step"] for r in sub]
        if "trace" in sub[0]:
            ax.errorbar(steps, [r["trace"] for r in sub], yerr=[r.get("trace_stderr") or 0.0 for r in sub],
                        marker="o", capsize=3, label=f"trace ({dataset})")
        if _lambdas(sub[0]):
            ax.plot(steps, [_lambdas(r)[0] for r in sub], marker="s", linestyle="--", label=f"lambda_max ({dataset})")
    ax.set_xlabel("step")
    ax.set_ylabel("Hessian trace / top eigenvalue")
    ax.legend(fontsize=8)
    _save(fig, path)


def _sharpness_headline(rows: Sequence[Row]) -> dict[str, Any]:
    def head(r: Row) -> Row:
        out: Row = {"step": r["step"], "dataset": r["dataset"], "loss": r["loss"]}
        if "trace" in r:
            out.update(trace=r["trace"], trace_stderr=r["trace_stderr"], samples=r["samples"])
        if _lambdas(r):
            out["eigenvalues"] = _lambdas(r)
        return out

    last = [r for r in rows if r["step"] == rows[-1]["step"]][0]
    return {**head(last), "products": last["products"], "rows": [head(r) for r in rows]}


@app.command("sharpness")
def sharpness(
    run: Optional[Path] = typer.Argument(None, metavar="RUN", parser=path_option, help="Run directory (every snapshot/checkpoint, or --steps)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", parser=path_option, help="One checkpoint directory instead of a run."),
    method: Method = typer.Option(Method.trace, "--method", help="trace (Hutchinson), top-eigen (Lanczos), exact."),
    estimator: Estimator = typer.Option(Estimator.hutchinson, "--estimator", help="Trace estimator."),
    samples: int = typer.Option(100, "--samples", min=1, help="Hessian-vector products of the trace estimate."),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Number of top eigenvalues."),
    solver: Solver = typer.Option(Solver.lanczos, "--solver", help="Eigenvalue solver of top-eigen."),
    max_iters: int = typer.Option(100, "--max-iters", min=1, help="Most products per eigenvalue solve."),
    batches: int = typer.Option(1, "--batches", min=1, help="Evaluation batches."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Sequences per batch."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1, help="Cut sequences to this length."),
    split: Split = typer.Option(Split.val, "--split", help="Which split of the run's data."),
    second_data: Optional[Path] = typer.Option(None, "--second-data", parser=path_option, help="DataConfig YAML of a second dataset."),
    seed: int = typer.Option(0, "--seed", help="Seed of the probes and the evaluation items."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Comma-separated steps (run mode)."),
    out: Optional[Path] = typer.Option(None, "--out", parser=path_option, help="Output directory [RUN/analysis]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline numbers as JSON."),
) -> None:
    """Hessian trace (Hutchinson / Hutch++) and top eigenvalues along a run, or of one checkpoint."""
    with user_errors():
        _check_out(out)
        from wsdlab.analysis.geometry_config import SharpnessConfig
        from wsdlab.analysis.geometry_tables import (
            sharpness_of_checkpoint,
            sharpness_table,
        )

        if (run is None) == (checkpoint is None):
            raise UserError("give either a RUN directory or --checkpoint CKPT")
        cfg = SharpnessConfig(method=method.value, estimator=estimator.value, samples=samples, top_k=top_k,
                              solver=solver.value, max_iters=max_iters, seed=seed,
                              eval=_eval_set(split, batches, batch_size, seq_len, seed))
        other = _data_config(second_data) if second_data is not None else None
        dev = _device(device)
        if checkpoint is not None:
            rows = sharpness_of_checkpoint(checkpoint, cfg, second_data=other, device=dev)
            run_root = checkpoint.parent.parent if (checkpoint.parent.parent / "spec.yaml").is_file() else checkpoint.parent
        else:
            assert run is not None
            rows = sharpness_table(run, cfg, steps=parse_ints(steps, "--steps"), second_data=other, device=dev,
                                   progress=not as_json)
            run_root = run
        _finish("sharpness", rows, _out_dir(out, run_root), _sharpness_headline(rows), as_json, _plot_sharpness)


def _data_config(path: Path) -> Any:
    from wsdlab.common.config import load_yaml_model
    from wsdlab.data.config import DataConfig

    return load_yaml_model(path, DataConfig)


# ---------------------------------------------------------------------------- interpolate


def _plot_interpolate(rows: Sequence[Row], path: Path) -> None:
    fig, (ax,) = _figure()
    ax.plot([r["alpha"] for r in rows], [r["perplexity"] for r in rows], marker="o")
    for x in (0.0, 1.0):
        ax.axvline(x, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel(f"alpha (0 = step {rows[0]['from_step']}, 1 = step {rows[0]['to_step']})")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    _save(fig, path)


def interpolation_headline(rows: Sequence[Row]) -> dict[str, Any]:
    """Endpoint losses and the barrier: max over a in [0, 1] of L(a) - ((1 - a) L(0) + a L(1))."""
    by_alpha = {r["alpha"]: r["loss"] for r in rows}
    l0, l1 = by_alpha.get(0.0, math.nan), by_alpha.get(1.0, math.nan)
    inside = [(a, loss) for a, loss in by_alpha.items() if 0.0 <= a <= 1.0]
    barrier = max((loss - ((1 - a) * l0 + a * l1) for a, loss in inside), default=math.nan)
    best = min(rows, key=lambda r: r["loss"])
    return {"from_step": rows[0]["from_step"], "to_step": rows[0]["to_step"], "loss_from": l0, "loss_to": l1,
            "barrier": barrier, "min_loss": best["loss"], "min_alpha": best["alpha"]}


@app.command("interpolate")
def interpolate(
    run: Path = typer.Argument(..., metavar="RUN", parser=path_option, help="Run directory."),
    from_step: int = typer.Option(..., "--from", help="Step of theta0 (snapshot or checkpoint)."),
    to_step: Optional[int] = typer.Option(None, "--to", help="Step of theta1 [final checkpoint]."),
    to_run: Optional[Path] = typer.Option(None, "--to-run", parser=path_option, help="Take theta1 from this run [RUN]."),
    alphas: str = typer.Option("-0.5:1.5:21", "--alphas", help="'a,b,c' or 'start:stop:num'."),
    batches: int = typer.Option(2, "--batches", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1),
    split: Split = typer.Option(Split.val, "--split"),
    seed: int = typer.Option(0, "--seed"),
    chunk_size: int = typer.Option(8, "--chunk-size", min=1, help="Grid points per vmapped forward."),
    out: Optional[Path] = typer.Option(None, "--out", parser=path_option, help="Output directory [RUN/analysis]."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """1-D loss along theta(a) = (1 - a) theta0 + a theta1 between two checkpoints/snapshots."""
    with user_errors():
        _check_out(out)
        from wsdlab.analysis.geometry_config import InterpolateConfig
        from wsdlab.analysis.geometry_tables import interpolate_table

        cfg = InterpolateConfig(alphas=parse_floats(alphas, "--alphas"), chunk_size=chunk_size,
                                eval=_eval_set(split, batches, batch_size, seq_len, seed))
        rows = interpolate_table(run, cfg, from_step=from_step, to_step=to_step, to_run=to_run,
                                 device=_device(device))
        _finish("interpolate", rows, _out_dir(out, run), interpolation_headline(rows), as_json, _plot_interpolate)


# ---------------------------------------------------------------------------- landscape


def _plot_landscape(rows: Sequence[Row], path: Path) -> None:
    import numpy as np

    points = list(dict.fromkeys(r["point"] for r in rows))
    fig, axes = _figure(len(points), 4.5)
    for ax, point in zip(axes, points):
        sub = [r for r in rows if r["point"] == point]
        a_vals = sorted({r["a"] for r in sub})
        b_vals = sorted({r["b"] for r in sub})
        z = np.full((len(b_vals), len(a_vals)), np.nan)
        for r in sub:
            z[b_vals.index(r["b"]), a_vals.index(r["a"])] = math.log(r["perplexity"]) if r["perplexity"] > 0 else np.nan
        if len(a_vals) > 1 and len(b_vals) > 1:
            cs = ax.contourf(a_vals, b_vals, z, levels=20, cmap="viridis")
            fig.colorbar(cs, ax=ax, label="log perplexity")
        else:
            ax.plot(a_vals if len(a_vals) > 1 else b_vals, z.ravel(), marker="o")
        ax.plot([0], [0], "r*", markersize=10)
        ax.set_title(f"point {point}")
        ax.set_xlabel("a (pre-cooldown -> final)")
        ax.set_ylabel(f"b ({sub[0]['after_step'] - point} steps on)")
    _save(fig, path)


def landscape_headline(rows: Sequence[Row]) -> dict[str, Any]:
    """Per point: perplexity at the point itself and the grid minimum with its (a, b)."""
    out: dict[str, Any] = {}
    for point in dict.fromkeys(r["point"] for r in rows):
        sub = [r for r in rows if r["point"] == point]
        centre = next((r["perplexity"] for r in sub if r["a"] == 0 and r["b"] == 0), math.nan)
        best = min(sub, key=lambda r: r["loss"])
        out[str(point)] = {"perplexity": centre, "min_perplexity": best["perplexity"], "min_a": best["a"],
                           "min_b": best["b"], "e1_norm": sub[0]["e1_norm"], "e2_norm": sub[0]["e2_norm"]}
    return {"points": out}


@app.command("landscape")
def landscape(
    run: Path = typer.Argument(..., metavar="RUN", parser=path_option, help="Run directory (a cooldown with snapshots)."),
    points: str = typer.Option(..., "--points", help="Comma-separated cooldown steps."),
    pre_step: Optional[int] = typer.Option(None, "--pre", help="Pre-cooldown step [the decay start]."),
    final: Optional[int] = typer.Option(None, "--final", help="Final step [latest checkpoint]."),
    offset: int = typer.Option(10, "--offset", min=1, help="e2 = weights this many steps after the point - point."),
    a_values: str = typer.Option("-0.5:1.0:13", "--a", help="Grid along e1: 'a,b,c' or 'start:stop:num'."),
    b_values: str = typer.Option("-2:2:9", "--b", help="Grid along e2."),
    orthogonal: bool = typer.Option(False, "--orthogonal", help="Make e2 orthogonal to e1."),
    batches: int = typer.Option(2, "--batches", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1),
    split: Split = typer.Option(Split.val, "--split"),
    seed: int = typer.Option(0, "--seed"),
    chunk_size: int = typer.Option(8, "--chunk-size", min=1),
    out: Optional[Path] = typer.Option(None, "--out", parser=path_option, help="Output directory [RUN/analysis]."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """2-D perplexity landscape at cooldown points along (pre-cooldown -> final) x (offset optimizer steps)."""
    with user_errors():
        _check_out(out)
        from wsdlab.analysis.geometry_config import LandscapeConfig
        from wsdlab.analysis.geometry_tables import landscape_table

        cfg = LandscapeConfig(offset=offset, a_values=parse_floats(a_values, "--a"),
                              b_values=parse_floats(b_values, "--b"), orthogonal=orthogonal, chunk_size=chunk_size,
                              eval=_eval_set(split, batches, batch_size, seq_len, seed))
        rows = landscape_table(run, cfg, points=parse_ints(points, "--points") or [], pre_step=pre_step,
                               final=final, device=_device(device), progress=not as_json)
        _finish("landscape", rows, _out_dir(out, run), landscape_headline(rows), as_json, _plot_landscape)


# ---------------------------------------------------------------------------- trajectory


def _plot_trajectory(rows: Sequence[Row], path: Path) -> None:
    fig, (ax_pca, ax_path, ax_norm) = _figure(3, 4.2)
    pca = [r for r in rows if r["kind"] == "pca"]
    ax_pca.bar([r["set"] for r in pca], [r["pc1_share"] for r in pca])
    ax_pca.set_ylabel("share of variance on PC1")
    ax_pca.set_ylim(0, 1)
    hv = {r["direction"]: r["hv_norm"] for r in rows if r["kind"] == "hv"}
    if hv:
        ax_pca.set_title(", ".join(f"||H {k}|| = {v:.3g}" for k, v in hv.items()), fontsize=9)
    path_rows = [r for r in rows if r["kind"] == "path"]
    steps = [r["step"] for r in path_rows]
    ax_path.plot(steps, [r["tau"] for r in path_rows], marker=".", label="tau (quasi-convexity)")
    ax_path.plot(steps, [r["cos_grad_update"] for r in path_rows], marker=".", label="cos(-grad, update)")
    ax_path.set_xlabel("step")
    ax_path.legend(fontsize=8)
    ax_norm.plot(steps, [r["param_norm"] for r in path_rows], marker=".")
    ax_norm.set_xlabel("step")
    ax_norm.set_ylabel("||theta||")
    _save(fig, path)


def trajectory_headline(rows: Sequence[Row]) -> dict[str, Any]:
    path_rows = [r for r in rows if r["kind"] == "path"]
    taus = [r["tau"] for r in path_rows if r["tau"] is not None and math.isfinite(r["tau"])]
    return {
        "pc1_share": {r["set"]: r["pc1_share"] for r in rows if r["kind"] == "pca"},
        "hv_norm": {r["direction"]: r["hv_norm"] for r in rows if r["kind"] == "hv"},
        "tau_min": min(taus, default=math.nan),
        "param_norm_final": path_rows[-1]["param_norm"] if path_rows else math.nan,
    }


@app.command("trajectory")
def trajectory(
    run: Path = typer.Argument(..., metavar="RUN", parser=path_option, help="Run directory with snapshots."),
    decay_start: Optional[int] = typer.Option(None, "--decay-start", help="First decay step [from the schedule]."),
    stable_start: Optional[int] = typer.Option(None, "--stable-start", help="First stable step [warmup_steps]."),
    parent: Optional[Path] = typer.Option(None, "--parent", parser=path_option, help="Run a cooldown branch started from (its iterates)."),
    every: int = typer.Option(1, "--every", min=1, help="Use every k-th iterate."),
    fraction: float = typer.Option(0.2, "--fraction", help="S'/D': last/first fraction of stable/decay."),
    hessian: bool = typer.Option(True, "--hessian/--no-hessian", help="||H v_s|| and ||H v_d|| at the decay start."),
    batches: int = typer.Option(2, "--batches", min=1),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1),
    split: Split = typer.Option(Split.train, "--split"),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", parser=path_option, help="Output directory [RUN/analysis]."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """PCA of stable/decay iterates, ||H v|| along their directions, quasi-convexity and norms."""
    with user_errors():
        _check_out(out)
        from wsdlab.analysis.geometry_config import TrajectoryConfig
        from wsdlab.analysis.geometry_tables import trajectory_run_table

        cfg = TrajectoryConfig(fraction=fraction, every=every, hessian=hessian,
                               eval=_eval_set(split, batches, batch_size, seq_len, seed))
        rows = trajectory_run_table(run, cfg, decay_step=decay_start, stable_start=stable_start, parent=parent,
                                    device=_device(device), progress=not as_json)
        _finish("trajectory", rows, _out_dir(out, run), trajectory_headline(rows), as_json, _plot_trajectory)


# ---------------------------------------------------------------------------- probes


def _plot_probes(rows: Sequence[Row], path: Path) -> None:
    fig, (ax_ppl, ax_rel) = _figure(2)
    for step in dict.fromkeys(r["step"] for r in rows):
        sub = [r for r in rows if r["step"] == step]
        layers = [r["layer"] for r in sub]
        ax_ppl.plot(layers, [r["perplexity"] for r in sub], marker="o", label=f"step {step}")
        ax_rel.plot(layers, [r["rel_perplexity"] for r in sub], marker="o", label=f"step {step}")
    ax_ppl.set_yscale("log")
    for ax, label in ((ax_ppl, "probe perplexity"), (ax_rel, "relative to cooldown start")):
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(label)
    ax_ppl.legend(fontsize=8)
    _save(fig, path)


def probes_headline(rows: Sequence[Row]) -> dict[str, Any]:
    steps = list(dict.fromkeys(r["step"] for r in rows))
    return {
        "perplexity": {str(s): [r["perplexity"] for r in rows if r["step"] == s] for s in steps},
        "rel_perplexity": {str(s): [r["rel_perplexity"] for r in rows if r["step"] == s] for s in steps},
    }


@app.command("probes")
def probes(
    run: Path = typer.Argument(..., metavar="RUN", parser=path_option, help="Run directory (a cooldown with checkpoints)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Comma-separated checkpoint steps [decay on]."),
    reference_step: Optional[int] = typer.Option(None, "--reference-step", help="Cooldown start [first step]."),
    probe_steps: int = typer.Option(50, "--probe-steps", min=0, help="AdamW steps per probe."),
    lr: float = typer.Option(1e-3, "--lr", help="Probe learning rate."),
    train_batches: int = typer.Option(4, "--train-batches", min=1),
    batches: int = typer.Option(2, "--batches", min=1, help="Held-out evaluation batches."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1),
    seed: int = typer.Option(0, "--seed"),
    out: Optional[Path] = typer.Option(None, "--out", parser=path_option, help="Output directory [RUN/analysis]."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Linear probes per layer (head initialised from the LM head) along the cooldown."""
    with user_errors():
        _check_out(out)
        from wsdlab.analysis.geometry_config import EvalSetConfig, ProbeConfig
        from wsdlab.analysis.geometry_tables import probes_table

        cfg = ProbeConfig(steps=probe_steps, lr=lr,
                          train=EvalSetConfig(split="train", batches=train_batches, batch_size=batch_size,
                                              seq_len=seq_len, seed=seed),
                          eval=_eval_set(Split.val, batches, batch_size, seq_len, seed))
        rows = probes_table(run, cfg, steps=parse_ints(steps, "--steps"), reference_step=reference_step,
                            device=_device(device), progress=not as_json)
        _finish("probes", rows, _out_dir(out, run), probes_headline(rows), as_json, _plot_probes)
