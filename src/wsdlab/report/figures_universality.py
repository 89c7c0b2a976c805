"""Paper 001's figures (Belloni, Orvieto, Noci): every panel of the LM beside the same panel of the CNN.

Same signature as `wsdlab.report.figures`: `(tables, fig=None) -> Figure`. Tables are those of
`wsdlab.analysis.universality` (rows lead with model (lm | cnn), seed, run). Columns of panels are
models, LM left and CNN right (a model without rows is left out); box plots are over runs (seeds)
where the paper draws boxes (Figs. 3 right, 4, 7).
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wsdlab.report.aggregate import (
    Row,
    Tables,
    curve_stats,
    floats,
    group_by,
    has_values,
    require,
)
from wsdlab.report.figures_trajectory import draw_hv_norm, draw_pc1_share, draw_quasi_convexity
from wsdlab.report.panels import band, legend, log_if_positive, panels, step_axis

MODEL_ORDER = ("lm", "cnn")
MODEL_TITLE = {"lm": "LM", "cnn": "CNN"}
SCHEDULE_COLOR = {"wsd": "#D55E00", "cosine": "#0072B2"}
SCHEDULE_LABEL = {"wsd": "WSD", "cosine": "warmup-cosine"}


def models_of(rows: list[Row]) -> list[str]:
    """The models present, LM first, then CNN, then any other label."""
    present = {str(r["model"]) for r in rows}
    return [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))


def title(model: str, what: str) -> str:
    return f"{MODEL_TITLE.get(model, model)}: {what}"


def _decay_line(ax: Axes, rows: list[Row]) -> None:
    """Dashed line at the WSD decay start (left: stable phase, right: cooldown), as the paper's figures."""
    starts = floats(rows, "decay_start")
    starts = starts[np.isfinite(starts)]
    if starts.size:
        ax.axvline(float(np.median(starts)), color="grey", ls="--", lw=1.0)


def _split_curves(ax: Axes, rows: list[Row], column: str) -> None:
    """One model's `column` per schedule: train as a thin mean line, validation as a band over seeds."""
    for (schedule, split), members in group_by(rows, "schedule", "split").items():
        x, mean, lo, hi = curve_stats(members, "step", column)
        color = SCHEDULE_COLOR.get(str(schedule), "grey")
        if split == "train":
            ax.plot(x, mean, color=color, lw=0.7, alpha=0.45)
        else:
            band(ax, x, mean, lo, hi, color=color, label=f"{SCHEDULE_LABEL.get(str(schedule), schedule)} (val)")


def plot_curves(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 1: train loss (thin) and validation loss (thick) of WSD and warmup-cosine, mean over seeds
    with min/max band; dashed line: WSD's decay start (from universality_norms when present)."""
    rows = require(tables, "universality_curves", ["model", "schedule", "split", "step", "loss"])
    norms = tables.get("universality_norms", [])
    models = models_of(rows)
    fig, axes = panels(fig, len(models), width=5.4)
    for ax, model in zip(axes, models):
        _split_curves(ax, [r for r in rows if r["model"] == model], "loss")
        _decay_line(ax, [r for r in norms if r["model"] == model])
        ax.set(xlabel="step", ylabel="loss", title=title(model, "loss (thin: train, band: val over seeds)"))
        step_axis(ax)
        ax.grid(alpha=0.3)
        legend(ax)
    return fig


def plot_accuracy(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 1, classifiers: train (thin) and validation (band over seeds) accuracy, WSD vs warmup-cosine."""
    rows = require(tables, "universality_curves", ["model", "schedule", "split", "step", "accuracy"])
    rows = [r for r in rows if isinstance(r.get("accuracy"), (int, float))]
    if not rows:
        raise ValueError("universality_curves: no accuracy values (no classifier runs)")
    models = models_of(rows)
    fig, axes = panels(fig, len(models), width=5.4)
    for ax, model in zip(axes, models):
        _split_curves(ax, [r for r in rows if r["model"] == model], "accuracy")
        ax.set(xlabel="step", ylabel="accuracy", title=title(model, "accuracy (thin: train, band: val)"))
        step_axis(ax)
        ax.grid(alpha=0.3)
        legend(ax)
    return fig


def plot_interpolation(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 2: loss along (1 - α) t' + α t, top: t' / t at 80% / 100% of the stable phase, bottom: the
    start / end of the cooldown; one line per seed."""
    rows = require(tables, "universality_interpolate", ["model", "segment", "seed", "alpha", "loss"])
    models = models_of(rows)
    segments = [s for s in ("stable", "cooldown") if any(r["segment"] == s for r in rows)]
    fig, axes = panels(fig, len(models) * len(segments), max_cols=len(models), width=5.0)
    what = {"stable": "80% → 100% of the stable phase", "cooldown": "cooldown start → end"}
    for i, segment in enumerate(segments):
        for j, model in enumerate(models):
            ax = axes[i * len(models) + j]
            members = [r for r in rows if r["model"] == model and r["segment"] == segment]
            for seed, pts in group_by(members, "seed").items():
                pts = sorted(pts, key=lambda r: r["alpha"])
                ax.plot(floats(pts, "alpha"), floats(pts, "loss"), marker="o", ms=3, lw=1.2, label=f"seed {seed}")
            ax.axvspan(0, 1, color="grey", alpha=0.06)
            ax.set(xlabel="α", ylabel="loss", title=title(model, what[segment]))
            ax.grid(alpha=0.3)
            legend(ax)
    return fig


def plot_sharpness(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 3 (left): top Hessian eigenvalue on iterates along the cooldown, one line per seed."""
    rows = require(tables, "universality_sharpness", ["model", "seed", "step", "lambda_1"])
    models = models_of(rows)
    fig, axes = panels(fig, len(models), width=5.0)
    for ax, model in zip(axes, models):
        for seed, pts in group_by([r for r in rows if r["model"] == model], "seed").items():
            pts = sorted(pts, key=lambda r: r["step"])
            ax.plot(floats(pts, "step"), floats(pts, "lambda_1"), marker="o", ms=3, lw=1.2, label=f"seed {seed}")
        ax.set(xlabel="step (cooldown)", ylabel="λ_max", title=title(model, "sharpness along the cooldown"))
        step_axis(ax)
        ax.grid(alpha=0.3)
        legend(ax)
    return fig


def _kind(tables: Tables, kind: str, columns: list[str]) -> list[Row]:
    rows = require(tables, "universality_trajectory", ["model", "kind", *columns])
    out = [r for r in rows if r["kind"] == kind]
    if not out:
        raise ValueError(f"universality_trajectory has no rows of kind '{kind}'")
    return out


def by_model(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """(panel heading, rows) per model, LM first: the panel groups of `figures_trajectory`."""
    return [(MODEL_TITLE.get(m, m), [r for r in rows if r["model"] == m]) for m in models_of(rows)]


def plot_hv_norm(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 3 (right): ||H(x^) v_s|| and ||H(x^) v_d|| at the decay start x^, boxes over runs."""
    return draw_hv_norm(by_model(_kind(tables, "hv", ["direction", "hv_norm"])), fig)


def plot_quasi_convexity(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 4: τ_i and cos(−∇L(x_i), x_{i+1} − x_i) over the iterates after warmup, boxes per phase (all runs)."""
    rows = [r for r in _kind(tables, "path", ["phase", "tau", "cos_grad_update"]) if r["phase"] != "warmup"]
    return draw_quasi_convexity(by_model(rows), fig)


def plot_length(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 5: final validation loss (and accuracy) vs WSD cooldown fraction of the budget; band:
    warmup-cosine's min..max over seeds, line its mean; ◆: the sweep, ○: the WSD runs of the grid."""
    rows = require(tables, "universality_length", ["model", "schedule", "source", "cooldown_fraction", "val_loss"])
    models = models_of(rows)
    metrics = ["val_loss"] + (["val_accuracy"] if has_values(rows, "val_accuracy") else [])
    fig, axes = panels(fig, len(models) * len(metrics), max_cols=len(models) * len(metrics), width=4.6)
    k = 0
    for model in models:
        members = [r for r in rows if r["model"] == model]
        for metric in metrics:
            ax = axes[k]
            k += 1
            cos = floats([r for r in members if r["schedule"] == "cosine"], metric)
            cos = cos[np.isfinite(cos)]
            if cos.size:
                ax.axhspan(cos.min(), cos.max(), color=SCHEDULE_COLOR["cosine"], alpha=0.15)
                ax.axhline(cos.mean(), color=SCHEDULE_COLOR["cosine"], lw=1.4, label="warmup-cosine (mean)")
            for source, marker in (("sweep", "D"), ("wsd", "o")):
                pts = [r for r in members if r["source"] == source]
                if pts:
                    x, mean, lo, hi = curve_stats(pts, "cooldown_fraction", metric)
                    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=SCHEDULE_COLOR["wsd"], marker=marker,
                                ls="-" if source == "sweep" else "none", capsize=3,
                                label="WSD sweep (from WSO)" if source == "sweep" else "WSD runs")
            ax.set(xlabel="cooldown fraction of the steps", ylabel=metric.replace("_", " "),
                   title=title(model, f"final {metric.replace('val_', 'validation ')}"))
            ax.grid(alpha=0.3)
            legend(ax)
    return fig


def plot_norms(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 6: parameter norm (top) and update norm ||x_t − x_{t−1}|| (bottom) after warmup, WSD, mean over
    seeds with min/max band; dashed: the decay start."""
    rows = require(tables, "universality_norms", ["model", "step", "param_norm", "update_norm"])
    models = models_of(rows)
    fig, axes = panels(fig, 2 * len(models), max_cols=len(models), width=5.0)
    for i, (col, label) in enumerate((("param_norm", "||x_t||"), ("update_norm", "||x_t − x_{t−1}||"))):
        for j, model in enumerate(models):
            ax = axes[i * len(models) + j]
            members = [r for r in rows if r["model"] == model]
            x, mean, lo, hi = curve_stats(members, "step", col)
            band(ax, x, mean, lo, hi, color=SCHEDULE_COLOR["wsd"], label="WSD")
            _decay_line(ax, members)
            if col == "update_norm":
                log_if_positive(ax, floats(members, col), span=5.0)
            ax.set(xlabel="step", ylabel=label, title=title(model, "parameter norm" if i == 0 else "update norm"))
            step_axis(ax)
            ax.grid(alpha=0.3)
    return fig


def plot_pc1_share(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 7: share of variance of PC1 of the stable (S) and decay (D) iterates, boxes over runs."""
    return draw_pc1_share(by_model(_kind(tables, "pca", ["set", "pc1_share"])), fig, sets=("S", "D"))


# ---------------------------------------------------------------------------- summaries (the tables shown)


def _mean(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else None


def summary_curves(tables: Tables) -> list[Row]:
    """Per model and schedule: seeds, final validation loss and accuracy (mean over seeds)."""
    rows = require(tables, "universality_curves", ["model", "schedule", "split", "step", "loss"])
    out = []
    for (model, schedule), members in group_by([r for r in rows if r["split"] == "val"], "model", "schedule").items():
        last = [max(pts, key=lambda r: r["step"]) for pts in group_by(members, "run").values()]
        out.append({"model": model, "schedule": schedule, "seeds": len(last),
                    "final val loss": _mean(floats(last, "loss")), "final val accuracy": _mean(floats(last, "accuracy"))})
    return out


def interpolation_shape(pts: list[Row]) -> dict[str, object]:
    """Loss at α = 0 and 1, the minimum inside (0, 1), whether it lies below both ends (a valley), and
    whether the loss decreases monotonically from α = 0 to 1."""
    inside = sorted((r for r in pts if 0.0 <= r["alpha"] <= 1.0), key=lambda r: r["alpha"])
    loss = {r["alpha"]: r["loss"] for r in inside}
    ends = (loss.get(0.0), loss.get(1.0))
    interior = [v for a, v in loss.items() if 0.0 < a < 1.0]
    values = [loss[a] for a in sorted(loss)]
    return {"loss α=0": ends[0], "loss α=1": ends[1], "min inside": min(interior) if interior else None,
            "valley": bool(interior and None not in ends and min(interior) < min(ends)),  # type: ignore[type-var]
            "monotone descent": all(b <= a + 1e-9 for a, b in zip(values, values[1:]))}


def summary_interpolation(tables: Tables) -> list[Row]:
    """Per model and segment: mean losses, and in how many runs the profile is a valley / a monotone descent."""
    rows = require(tables, "universality_interpolate", ["model", "segment", "run", "alpha", "loss"])
    out = []
    for (model, segment), members in group_by(rows, "model", "segment").items():
        shapes = [interpolation_shape(pts) for pts in group_by(members, "run").values()]
        n = len(shapes)
        out.append({"model": model, "segment": segment, "runs": n,
                    "mean loss α=0": _mean(np.array([s["loss α=0"] for s in shapes], dtype=float)),
                    "mean min inside": _mean(np.array([s["min inside"] for s in shapes], dtype=float)),
                    "mean loss α=1": _mean(np.array([s["loss α=1"] for s in shapes], dtype=float)),
                    "valley (runs)": f"{sum(bool(s['valley']) for s in shapes)}/{n}",
                    "monotone descent (runs)": f"{sum(bool(s['monotone descent']) for s in shapes)}/{n}"})
    return out


def summary_sharpness(tables: Tables) -> list[Row]:
    """Per model: λ_max at the first and last cooldown iterate (mean over seeds), runs where it rose."""
    rows = require(tables, "universality_sharpness", ["model", "run", "step", "lambda_1"])
    out = []
    for model, members in group_by(rows, "model").items():
        firsts, lasts = [], []
        for pts in group_by(members, "run").values():
            pts = sorted(pts, key=lambda r: r["step"])
            firsts.append(pts[0]["lambda_1"])
            lasts.append(pts[-1]["lambda_1"])
        first, last = np.array(firsts, dtype=float), np.array(lasts, dtype=float)
        out.append({"model": model, "runs": len(firsts), "λ_max at cooldown start": _mean(first),
                    "λ_max at the end": _mean(last), "rose (runs)": f"{int((last > first).sum())}/{len(firsts)}"})
    return out


def summary_hv(tables: Tables) -> list[Row]:
    """Per model: mean ||H v_s||, ||H v_d|| and in how many runs ||H v_d|| > ||H v_s||."""
    rows = _kind(tables, "hv", ["direction", "hv_norm", "run"])
    out = []
    for model, members in group_by(rows, "model").items():
        pairs = {run: {r["direction"]: r["hv_norm"] for r in pts} for run, pts in group_by(members, "run").items()}
        vs = np.array([p.get("v_s") for p in pairs.values()], dtype=float)
        vd = np.array([p.get("v_d") for p in pairs.values()], dtype=float)
        out.append({"model": model, "runs": len(pairs), "mean ||H v_s||": _mean(vs), "mean ||H v_d||": _mean(vd),
                    "||H v_d|| > ||H v_s|| (runs)": f"{int((vd > vs).sum())}/{len(pairs)}"})
    return out


def summary_quasi_convexity(tables: Tables) -> list[Row]:
    """Per model: iterates after warmup, share with τ > 0 and with cos > 0, medians."""
    rows = [r for r in _kind(tables, "path", ["phase", "tau", "cos_grad_update"]) if r["phase"] != "warmup"]
    out = []
    for model, members in group_by(rows, "model").items():
        tau, cos = floats(members, "tau"), floats(members, "cos_grad_update")
        tau, cos = tau[np.isfinite(tau)], cos[np.isfinite(cos)]
        out.append({"model": model, "iterates (τ)": int(tau.size), "τ > 0": float((tau > 0).mean()) if tau.size else None,
                    "median τ": float(np.median(tau)) if tau.size else None, "iterates (cos)": int(cos.size),
                    "cos > 0": float((cos > 0).mean()) if cos.size else None,
                    "median cos": float(np.median(cos)) if cos.size else None})
    return out


def matching_fraction(fractions: dict[float, float], cosine: float) -> float | None:
    """Smallest cooldown fraction whose mean final loss is at most warmup-cosine's mean, else None."""
    hits = [f for f, loss in sorted(fractions.items()) if loss <= cosine]
    return hits[0] if hits else None


def summary_length(tables: Tables) -> list[Row]:
    """Per model and cooldown fraction: mean final val loss / accuracy of WSD, warmup-cosine's mean, and
    the shortest fraction where WSD matches cosine (mean final loss at most cosine's)."""
    rows = require(tables, "universality_length", ["model", "schedule", "cooldown_fraction", "val_loss"])
    out = []
    for model, members in group_by(rows, "model").items():
        cos = [r for r in members if r["schedule"] == "cosine"]
        cos_loss = _mean(floats(cos, "val_loss"))
        wsd = group_by([r for r in members if r["schedule"] == "wsd"], "cooldown_fraction")
        means = {float(f): _mean(floats(pts, "val_loss")) for f, pts in wsd.items()}
        match = matching_fraction({f: v for f, v in means.items() if v is not None}, cos_loss) if cos_loss else None
        for f in sorted(means):
            out.append({"model": model, "cooldown fraction": round(f, 4), "runs": len(wsd[f]),
                        "WSD final val loss": means[f], "WSD final val accuracy": _mean(floats(wsd[f], "val_accuracy")),
                        "cosine final val loss": cos_loss, "cosine final val accuracy": _mean(floats(cos, "val_accuracy")),
                        "WSD matches cosine from": match})
    return out


def summary_norms(tables: Tables) -> list[Row]:
    """Per model: mean update norm in the stable phase and in the cooldown, their ratio, the param norm range."""
    rows = require(tables, "universality_norms", ["model", "phase", "update_norm", "param_norm"])
    out = []
    for model, members in group_by(rows, "model").items():
        st = _mean(floats([r for r in members if r["phase"] == "stable"], "update_norm"))
        cd = _mean(floats([r for r in members if r["phase"] == "cooldown"], "update_norm"))
        pn = floats(members, "param_norm")
        out.append({"model": model, "mean update norm (stable)": st, "mean update norm (cooldown)": cd,
                    "stable / cooldown": st / cd if st and cd else None,
                    "param norm min": float(np.nanmin(pn)), "param norm max": float(np.nanmax(pn))})
    return out


def summary_pc1(tables: Tables) -> list[Row]:
    """Per model and set (S, D, S', D'): runs, mean and minimum PC1 share."""
    rows = _kind(tables, "pca", ["set", "pc1_share"])
    out = []
    for (model, name), members in group_by(rows, "model", "set").items():
        v = floats(members, "pc1_share")
        v = v[np.isfinite(v)]
        out.append({"model": model, "set": name, "runs": int(v.size), "mean PC1 share": _mean(v),
                    "min PC1 share": float(v.min()) if v.size else None})
    return out
