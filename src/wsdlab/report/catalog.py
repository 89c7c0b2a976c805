"""The report's figures in the papers' order: what each shows, the analysis unit and tables behind it, and
its key values. A new analysis adds its figure(s) here, naming its unit; nothing else in the report changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from wsdlab.report import figures as F
from wsdlab.report import figures_geometry as G
from wsdlab.report import figures_universality as U
from wsdlab.report import figures_wso as W
from wsdlab.report.aggregate import (
    Row,
    Tables,
    curve_stats,
    floats,
    group_by,
    last_per_group,
    mean_per_group,
    perplexity,
    pivot,
    require,
    to_float,
)
from wsdlab.report.panels import band, legend, log_if_positive, panels, step_axis
from wsdlab.report.style import group_color, group_label

Draw = Callable[[Tables, "Figure | None"], Figure]
Example = Callable[[np.random.Generator, int, int], Tables]  # (rng, stable steps k, cooldown steps n) -> tables
Summarize = Callable[[Tables], list[Row]]


@dataclass(frozen=True)
class Section:
    """A heading of the report; figures refer to it by `key`."""

    key: str
    title: str
    intro: str


@dataclass(frozen=True)
class FigureSpec:
    """One figure: drawn when all `tables` exist; `summary` gives the small table shown under it."""

    name: str  # file name STUDY/figures/<name>.png and the HTML anchor
    section: str
    caption: str  # one line: what the figure shows
    tables: tuple[str, ...]  # tables it needs (CSV names without .csv); the first is its unit's own (linked first)
    draw: Draw
    summary: Summarize | None = None
    optional_tables: tuple[str, ...] = field(default=())
    unit: str = ""  # the analysis unit (wsdlab.analysis.units) whose tables it draws; `wsdlab analyze <unit>` draws it too
    example: Example | None = None  # made-up tables of the figure's shape (report tests and previews)


# ---------------------------------------------------------------------------------------------------------
# A figure's own code may live beside its entry: the update norm (paper 001, Fig. 6) is the worked example
# of a new analysis needing only its unit module (wsdlab/analysis/update_norm.py) and this entry.


def _draw_update_norm(tables: Tables, fig: Figure | None = None) -> Figure:
    """Parameter norm ||x_t|| and update norm ||x_t - x_{t-1}|| after warmup, the stable phase ('stable')
    then each shape's cooldown (band: min/max over seeds); dashed line: the cooldown start (paper 001, Fig. 6)."""
    rows = require(tables, "update_norm", ["shape", "step", "param_norm", "update_norm"])
    cooldown = [to_float(r["step"]) for r in rows if r.get("phase") == "cooldown"]
    fig, axes = panels(fig, 2, width=5.6)
    for ax, col, label in zip(axes, ("param_norm", "update_norm"), ("parameter norm ||x_t||", "update norm ||x_t − x_{t−1}||")):
        for shape, members in group_by(rows, "shape").items():
            x, mean, lo, hi = curve_stats(members, "step", col)
            band(ax, x, mean, lo, hi, color=group_color(shape), label=group_label(shape))
        if cooldown:
            ax.axvline(min(cooldown) - 1, color="grey", ls="--", lw=1.0)
        if col == "update_norm":
            log_if_positive(ax, floats(rows, col))
        ax.set(xlabel="step", ylabel=label, title=label.split(" ||")[0].capitalize() + " after warmup")
        step_axis(ax)
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def _example_update_norm(rng: np.random.Generator, k: int, n: int) -> Tables:
    """Parameter and update norms after a 10-step warmup: large updates at peak LR, small ones in the cooldown."""
    decay = {"linear": lambda x: 1 - x, "sqrt": lambda x: 1 - np.sqrt(x), "square": lambda x: 1 - x**2}
    rows: list[Row] = [{"shape": "stable", "run": "base", "step": t, "phase": "stable", "param_norm": 10 + 0.05 * t,
                        "update_norm": float(0.1 * np.exp(0.1 * rng.standard_normal()))} for t in range(11, k + 1)]
    for shape, factor in decay.items():
        for seed in range(3):
            rows += [{"shape": shape, "run": f"cooldown-{shape}-s{seed}", "step": t, "phase": "cooldown",
                      "param_norm": 10 + 0.05 * k + 0.01 * (t - k),
                      "update_norm": float(0.1 * factor((t - k) / n) + 1e-3)} for t in range(k + 1, k + n + 1)]
    return {"update_norm": rows}


SECTIONS: tuple[Section, ...] = (
    Section("schedules", "Schedules and validation curves",
            "The cooldown shapes compared and how each run's validation perplexity evolves."),
    Section("bias_variance", "Bias and variance",
            "Across data orders, each shape's final models trade bias against variance (KL, weight and loss space)."),
    Section("perplexity", "Perplexity", "Final perplexity per shape and its relation to bias."),
    Section("averaging", "Weight averaging",
            "For each cooldown shape, averaging the weights of N cooldowns on disjoint data portions vs one longer "
            "run over all their data (stable, then a 1-sqrt decay over the last 20% of its steps)."),
    Section("recency", "Recency bias", "How much the final model favours the batches it saw last."),
    Section("hyperparams", "Cooldown hyper-parameters",
            "AdamW betas, batch size, weight decay and optimizer reset during the cooldown, per cooldown shape. "
            "β → β^p with p < 1 is a larger β (a longer memory); the paper finds a larger β2 helps."),
    Section("alignment", "Gradient alignment and norm",
            "Alignment of gradient and momentum, and the gradient norm, along the cooldown."),
    Section("landscape", "Loss landscape",
            "The loss around the cooldown path and along straight lines between checkpoints (river valley)."),
    Section("sharpness", "Sharpness and curvature", "Top Hessian eigenvalue, Hessian trace and ||Hv|| along training."),
    Section("trajectory", "Optimizer path",
            "PCA of the iterates, weak quasi-convexity, cos(-grad, update) and the parameter norm."),
    Section("probes", "Linear probes", "How well each layer's representation predicts the next token."),
    Section("universality", "Universality: an LM beside a CNN (paper 001)",
            "WSD vs warmup-cosine on a language model (left) and a small CNN (right), the paper's Figs. 1-7 in order."),
    Section("wso", "Decay or no decay before fine-tuning (WSO)",
            "Scheduler x alpha_pre pre-training, mid-training (alpha_mid) and SFT learning-rate sweeps: differences "
            "from the best decay-based schedule (Tables 1-4), sharpness along pre-training (Fig. 3) and its "
            "correlation with the SFT score (Fig. 4)."),
)


def _table(name: str, columns: list[str] | None = None, limit: int = 24) -> Summarize:
    """Summary = the table itself (or the listed columns), when small enough to read."""

    def summarize(tables: Tables) -> list[Row]:
        rows = tables[name]
        if columns is not None:
            rows = [{c: r.get(c) for c in columns if c in r} for r in rows]
        return rows[:limit]

    return summarize


def _optional(name: str) -> Summarize:
    """Summary = an optional table when it exists (e.g. correlations), else nothing."""

    def summarize(tables: Tables) -> list[Row]:
        return list(tables.get(name, []))

    return summarize


def _schedules_summary(tables: Tables) -> list[Row]:
    """Per shape: the last step at peak LR (where the cooldown starts), the last step and the final factor."""
    rows = require(tables, "schedules", ["shape", "step", "lr_factor"])
    out = []
    for shape, members in group_by(rows, "shape").items():
        steps, factors, _, _ = curve_stats(members, "step", "lr_factor")
        if not len(steps):
            continue
        at_peak = steps[factors >= factors.max() - 1e-12]
        out.append({"shape": shape, "decay starts after step": int(at_peak[-1]), "last step": int(steps[-1]),
                    "final LR factor": float(factors[-1])})
    return out


def _val_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "val_curves", ["shape", "step", "val_loss"])
    out = []
    for r in last_per_group(rows, ["shape"], "step", ["val_loss"]):
        loss = r["val_loss"]
        out.append({"shape": r["shape"], "last step": r["step"], "seeds": r["n"], "final val_loss": loss,
                    "final perplexity": float(perplexity(loss)) if loss is not None else None})
    return out


def _bias_variance_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "bias_variance", ["shape", "space", "bias", "variance"])
    return pivot(rows, "shape", "space", ["bias", "variance"])


def _recency_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "recency", ["shape", "shift", "deviation"])
    return [{"shape": r["shape"], "runs": r["n"], "mean shift": r["shift"], "mean deviation": r["deviation"]}
            for r in mean_per_group(rows, ["shape"], ["shift", "deviation"])]


def _recency_curves_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "recency_curves", ["shape", "batch_position", "ppl_pre", "ppl_post", "ppl_diff"])
    return [{"shape": r["shape"], "points": r["n"], "mean ppl_pre": r["ppl_pre"], "mean ppl_post": r["ppl_post"],
             "mean ppl_diff": r["ppl_diff"]}
            for r in mean_per_group(rows, ["shape"], ["ppl_pre", "ppl_post", "ppl_diff"])]


def _hyperparams_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "hyperparams", ["panel", "value"])
    cols = [c for c in ("val_loss", "ppl") if c in rows[0]]
    keys = ["shape", "panel", "value"] if any(r.get("shape") is not None for r in rows) else ["panel", "value"]
    return [{**{k: r[k] for k in keys}, "seeds": r["n"], **{f"mean {c}": r[c] for c in cols}}
            for r in mean_per_group(rows, keys, cols)]


def _alignment_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "alignment", ["shape", "step", "metric", "mean"])
    return [{"metric": r["metric"], "shape": r["shape"], "last step": r["step"], "final mean": r["mean"]}
            for r in last_per_group(rows, ["metric", "shape"], "step", ["mean"])]


def _landscape_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "landscape", ["run", "point", "loss"])
    return [{"run": G.run_label(r["run"]), "point": r["point"], "grid points": r["n"], "mean loss": r["loss"]}
            for r in mean_per_group(rows, ["run", "point"], ["loss"])]


def _interpolation_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "interpolate", ["run", "alpha", "loss"])
    keys = [c for c in ("run", "from_step", "to_step", "dataset") if c in rows[0]]
    out = []
    for key, pts in group_by(rows, *keys).items():
        loss = {p["alpha"]: p["loss"] for p in pts}
        row = dict(zip(keys, key if len(keys) > 1 else (key,)))
        row["run"] = G.run_label(row["run"])
        inner = [v for a, v in loss.items() if isinstance(a, (int, float)) and 0 <= a <= 1 and v is not None]
        out.append({**row, "loss at α=0": loss.get(0.0, loss.get(0)), "loss at α=1": loss.get(1.0, loss.get(1)),
                    "min loss on [0, 1]": min(inner) if inner else None})
    return out


def _sharpness_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "sharpness", ["run", "step"])
    cols = [c for c in ("lambda_1", "trace") if c in rows[0]]
    return [{**r, "run": G.run_label(r["run"])} for r in last_per_group(rows, ["run"], "step", cols)]


def _hv_summary(tables: Tables) -> list[Row]:
    rows = G.rows_of_kind(tables, "trajectory", "hv", ["direction", "hv_norm"])
    return [{"direction": r["direction"], "runs": r["n"], "mean ||Hv||": r["hv_norm"]}
            for r in mean_per_group(rows, ["direction"], ["hv_norm"])]


def _pca_summary(tables: Tables) -> list[Row]:
    rows = G.rows_of_kind(tables, "trajectory", "pca", ["set", "pc1_share"])
    return [{"set": r["set"], "runs": r["n"], "mean PC1 share": r["pc1_share"]}
            for r in mean_per_group(rows, ["set"], ["pc1_share"])]


def _path_summary(tables: Tables) -> list[Row]:
    rows = G.rows_of_kind(tables, "trajectory", "path", ["phase", "tau", "cos_grad_update"])
    return [{"phase": r["phase"], "iterates": r["n"], "mean tau": r["tau"],
             "mean cos(-grad, update)": r["cos_grad_update"]}
            for r in mean_per_group(rows, ["phase"], ["tau", "cos_grad_update"])]


def _probes_summary(tables: Tables) -> list[Row]:
    rows = require(tables, "probes", ["run", "layer", "perplexity"])
    cols = [c for c in ("perplexity", "rel_perplexity") if c in rows[0]]
    return [{**r, "run": G.run_label(r["run"])} for r in last_per_group(rows, ["run", "layer"], "step", cols)] \
        if "step" in rows[0] else rows



def _fmt(v: object, digits: int = 4) -> object:
    try:
        return round(float(v), digits)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return v


def _example_wso(rng: np.random.Generator, k: int, n: int) -> Tables:
    """Made-up WSO-study tables (paper 002's pattern: decay best after pre-training, WSO after SFT and
    flatter), one row per scheduler x alpha_pre, for the report tests and previews."""
    models = [("wso", 1.0), ("wsd", 0.0), ("wsd", 0.1), ("cosine", 0.0), ("linear", 0.1)]
    sharp = {"wso": 400.0, "wsd": 530.0, "cosine": 700.0, "linear": 900.0}
    delta, sweep, along, final = [], [], [], []
    for i, (kind, alpha) in enumerate(models):
        head = {"scheduler": kind, "alpha_pre": alpha, "alpha_mid": ""}
        delta.append({"stage": "pretrain", **head, "pt_val_loss": 5.07 + 0.05 * i, "pt_task": 0.3, "sft_task": 0.3,
                      "sft_val_loss": 2.0 + 0.03 * i, "sft_lr": 1e-3, "d_pt_val_loss": 0.05 * i - (kind == "wso") * 0.02,
                      "d_pt_task_pts": 0.0, "d_sft_task_pts": 2.0 * (kind == "wso"),
                      "d_sft_val_loss": 0.03 * i - 0.06 * (kind == "wso")})
        for lr in (1e-4, 3e-4, 1e-3):
            sweep.append({"base": "pretrain", "run": f"sft-{kind}-{alpha}-{lr}", **head, "lr": lr,
                          "sft_val_loss": 2.0 + 0.03 * i + abs(np.log10(lr) + 3) * 0.1, "task_acc": 0.3,
                          "task_acc_norm": 0.3, "best": lr == 1e-3})
        for dataset in ("pt", "sft"):
            for step in range(k // 4, k + 1, k // 4):
                trace = sharp[kind] * step / k + float(rng.standard_normal())
                along.append({**head, "run": f"pretrain-{kind}-{alpha}", "step": step, "dataset": dataset, "trace": trace,
                              "stderr": 0.05 * trace, "samples": 5})
            final.append({**head, "dataset": dataset, "trace": sharp[kind], "sft_score": -2.0 - 0.03 * i,
                          "sft_task": 0.3, "run": f"pretrain-{kind}-{alpha}"})
    corr = [{"dataset": d, "score": "sft_score", "r": -0.7, "ci_low": -0.95, "ci_high": -0.1, "n": len(models)}
            for d in ("pt", "sft")]
    return {"wso_delta": delta, "wso_sft_sweep": sweep, "wso_sharpness": along, "wso_sharpness_sft": final,
            "wso_correlation": corr}


def _wso_delta_summary(tables: Tables) -> list[Row]:
    return [{"stage": r["stage"], "model": W.model_name(r), "PT loss": _fmt(r.get("pt_val_loss")),
             "Δ PT loss": _fmt(r.get("d_pt_val_loss")), "Δ PT task (pts)": _fmt(r.get("d_pt_task_pts")),
             "Δ SFT task (pts)": _fmt(r.get("d_sft_task_pts")), "Δ SFT loss": _fmt(r.get("d_sft_val_loss")),
             "SFT lr": r.get("sft_lr")} for r in tables["wso_delta"]]


def _wso_sweep_summary(tables: Tables) -> list[Row]:
    return [{"base": r["base"], "model": W.model_name(r), "seed": r.get("seed", ""), "best lr": r["lr"],
             "SFT loss": _fmt(r["sft_val_loss"]),
             "task acc_norm": _fmt(r["task_acc_norm"])}
            for r in tables["wso_sft_sweep"] if str(r.get("best")) in ("True", "true", "1")]


def _wso_sharpness_summary(tables: Tables) -> list[Row]:
    rows = tables["wso_sharpness"]
    last: dict[tuple, Row] = {}
    for r in rows:
        key = (r["run"], r["dataset"])
        if key not in last or float(r["step"]) > float(last[key]["step"]):
            last[key] = r
    return [{"model": W.model_name(r), "dataset": r["dataset"], "step": r["step"], "trace": _fmt(r["trace"], 2),
             "stderr": _fmt(r["stderr"], 2)} for r in last.values()]


def _wso_correlation_summary(tables: Tables) -> list[Row]:
    return [{"sharpness on": r["dataset"], "score": r["score"], "r": _fmt(r["r"], 3), "95% CI low": _fmt(r["ci_low"], 3),
             "95% CI high": _fmt(r["ci_high"], 3), "n": r["n"]} for r in tables.get("wso_correlation", [])]

FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("schedules", "schedules", "Learning-rate factor vs step for each cooldown shape.",
               ("schedules",), F.plot_schedules, _schedules_summary, unit="schedules"),
    FigureSpec("val_curves", "schedules",
               "Validation perplexity vs step per shape (line: mean over seeds, band: min/max).",
               ("val_curves",), F.plot_val_curves, _val_summary, unit="val_curves"),
    FigureSpec("bias_variance", "bias_variance", "Bias vs variance of each shape's final models, one panel per space.",
               ("bias_variance",), F.plot_bias_variance, _bias_variance_summary, unit="bias_variance"),
    FigureSpec("perplexity", "perplexity",
               "Final perplexity per shape: mean over seeds with min/max bars; ◇ = the model with averaged weights.",
               ("perplexity",), F.plot_perplexity, _table("perplexity"), unit="perplexity"),
    FigureSpec("perplexity_vs_bias", "perplexity",
               "Perplexity of each shape's weight-averaged model vs its bias, one panel per space "
               "(with rank and linear correlations).",
               ("perplexity", "bias_variance"), F.plot_perplexity_vs_bias, _optional("perplexity_vs_bias"),
               optional_tables=("perplexity_vs_bias",), unit="perplexity"),
    FigureSpec("averaging", "averaging",
               "Per shape: validation loss of the weight average of its N disjoint-portion cooldowns (bar) and their "
               "mean (◇), vs the one longer run over the union of their data (dashed).",
               ("averaging",), F.plot_averaging, _table("averaging"), unit="averaging"),
    FigureSpec("recency_curves", "recency",
               "Perplexity of every training batch after training, pre- and post-cooldown, and their difference "
               "(eq. 2; window-averaged, mean over seeds).",
               ("recency_curves",), F.plot_recency_curves, _recency_curves_summary, unit="recency"),
    FigureSpec("recency_shift", "recency", "Shift vs deviation of the recency curve per run (★ = mean per shape).",
               ("recency",), F.plot_recency_shift, _recency_summary, unit="recency"),
    FigureSpec("recency_vs_bias_variance", "recency",
               "Per shape: recency shift vs bias and deviation vs variance (one bias-variance space).",
               ("recency", "bias_variance"), F.plot_recency_vs_bias_variance, _optional("recency_correlations"),
               optional_tables=("recency_correlations",), unit="recency"),
    FigureSpec("hyperparams", "hyperparams",
               "Perplexity vs each cooldown hyper-parameter, one colour per cooldown shape (point: mean over seeds, "
               "bars: min/max); β^p with p < 1 is a larger β (longer memory).",
               ("hyperparams",), F.plot_hyperparams, _hyperparams_summary, unit="hyperparams"),
    FigureSpec("alignment", "alignment",
               "Gradient-momentum cosine and gradient norm along the cooldown (band: confidence interval over seeds).",
               ("alignment",), F.plot_alignment, _alignment_summary, unit="alignment"),
    FigureSpec("landscape", "landscape",
               "Loss contours on the plane point + a·(final − pre-cooldown) + b·(next optimizer steps) "
               "at several cooldown points (★ = the point).",
               ("landscape",), G.plot_landscape, _landscape_summary, unit="landscape"),
    FigureSpec("interpolation", "landscape",
               "Loss along straight lines between checkpoints (α = 0: from, 1: to); "
               "a valley floor shows as a dip between the ends.",
               ("interpolate",), G.plot_interpolation, _interpolation_summary, unit="interpolate"),
    FigureSpec("sharpness", "sharpness",
               "Top Hessian eigenvalue(s) and Hessian trace (band: ± standard error) along training.",
               ("sharpness",), G.plot_sharpness, _sharpness_summary, unit="sharpness"),
    FigureSpec("hv_norm", "sharpness",
               "||H v|| at the decay start along the stable (v_s) and decay (v_d) directions; boxes over runs.",
               ("trajectory",), G.plot_hv_norm, _hv_summary, unit="trajectory"),
    FigureSpec("pc1_share", "trajectory",
               "Share of variance explained by the first principal component of the stable (S, S') "
               "and decay (D, D') iterates; boxes over runs (dotted: paper 001's ~40%).",
               ("trajectory",), G.plot_pc1_share, _pca_summary, unit="trajectory"),
    FigureSpec("quasi_convexity", "trajectory",
               "Weak quasi-convexity ratio τ and cos(−gradient, next update) per training phase; "
               "boxes over sampled iterates (line: 0, the condition is > 0).",
               ("trajectory",), G.plot_quasi_convexity, _path_summary, unit="trajectory"),
    FigureSpec("param_norm", "trajectory",
               "Parameter norm and distance to the final iterate along training, per run.",
               ("trajectory",), G.plot_param_norm, None, unit="trajectory"),
    FigureSpec("update_norm", "trajectory",
               "Parameter norm and update norm ||x_t − x_{t−1}|| after warmup: much larger updates in the stable phase "
               "than in the cooldown (dashed line: cooldown start; paper 001, Fig. 6).",
               ("update_norm",), _draw_update_norm, None, unit="update_norm", example=_example_update_norm),
    FigureSpec("probes", "probes",
               "Linear-probe perplexity per layer at steps along the cooldown, and relative to the cooldown start.",
               ("probes",), G.plot_probes, _probes_summary, unit="probes"),
    # paper 001 (universality), LM left and CNN right, Figs. 1-7 in order
    FigureSpec("univ_curves", "universality",
               "Fig. 1: loss of WSD and warmup-cosine (thin: train, band: validation over seeds; dashed: WSD's decay "
               "start): modest decreases in the stable phase, then larger gains in the cooldown.",
               ("universality_curves",), U.plot_curves, U.summary_curves, optional_tables=("universality_norms",),
               unit="universality_curves"),
    FigureSpec("univ_accuracy", "universality",
               "Fig. 1 (classifiers): train (thin) and validation (band over seeds) accuracy, WSD vs warmup-cosine.",
               ("universality_curves",), U.plot_accuracy, U.summary_curves, unit="universality_curves"),
    FigureSpec("univ_interpolation", "universality",
               "Fig. 2: loss along (1 − α) t' + α t between the checkpoints at 80% and 100% of the stable phase (top: a "
               "valley expected) and between the start and end of the cooldown (bottom: a monotone descent expected).",
               ("universality_interpolate",), U.plot_interpolation, U.summary_interpolation,
               unit="universality_interpolate"),
    FigureSpec("univ_sharpness", "universality",
               "Fig. 3 (left): top Hessian eigenvalue on iterates sampled at a fixed rate along the cooldown, per seed.",
               ("universality_sharpness",), U.plot_sharpness, U.summary_sharpness, unit="universality_sharpness"),
    FigureSpec("univ_hv_norm", "universality",
               "Fig. 3 (right): ||H(x̂) v|| at the decay start x̂ along v_s (PC1 of the last 20% of the stable phase) and "
               "v_d (PC1 of the first 20% of the cooldown); boxes over runs.",
               ("universality_trajectory",), U.plot_hv_norm, U.summary_hv, unit="universality_trajectory"),
    FigureSpec("univ_quasi_convexity", "universality",
               "Fig. 4: τ_i = −∇L(x_i)·(x* − x_i) / (L(x_i) − L(x*)) and cos(−∇L(x_i), x_{i+1} − x_i) with x_{i+1} one "
               "optimizer step after x_i, on iterates sampled regularly after warmup; boxes per phase (stable, "
               "decay) over all runs' iterates (line: 0, the condition is > 0).",
               ("universality_trajectory",), U.plot_quasi_convexity, U.summary_quasi_convexity,
               unit="universality_trajectory"),
    FigureSpec("univ_length", "universality",
               "Fig. 5: final validation loss (and accuracy) vs WSD cooldown length (fraction of a fixed budget, each "
               "branching from a WSO run) against warmup-cosine (line: mean, band: min..max over seeds).",
               ("universality_length",), U.plot_length, U.summary_length, unit="universality_length"),
    FigureSpec("univ_norms", "universality",
               "Fig. 6: parameter norm and update norm ||x_t − x_{t−1}|| of the WSD runs after warmup (band: min/max over "
               "seeds; dashed: decay start): updates much larger in the stable phase than in the cooldown.",
               ("universality_norms",), U.plot_norms, U.summary_norms, unit="universality_curves"),
    FigureSpec("univ_pc1_share", "universality",
               "Fig. 7: share of variance explained by PC1 of the stable (S) and decay (D) iterates; boxes over runs "
               "(dotted: the paper's ~40%).",
               ("universality_trajectory",), U.plot_pc1_share, U.summary_pc1, unit="universality_trajectory"),
    FigureSpec("wso_delta", "wso",
               "Tables 1-4: each model's difference from the best decay-based schedule (alpha_pre < 1) in PT validation "
               "loss, PT task acc_norm, SFT task acc_norm and SFT validation loss (best LR per model).",
               ("wso_delta",), W.plot_delta, _wso_delta_summary, unit="wso_delta", example=_example_wso),
    FigureSpec("wso_sft_sweep", "wso",
               "SFT validation loss for every learning rate of the sweep, per pre-trained (solid) and mid-trained "
               "(dotted) model (Table 8).",
               ("wso_sft_sweep",), W.plot_sft_sweep, _wso_sweep_summary, unit="wso_eval"),
    FigureSpec("wso_sharpness", "wso",
               "Fig. 3: Hessian trace (Hutchinson, ± standard error) at checkpoints along pre-training, on the "
               "pre-training and the SFT validation sets.",
               ("wso_sharpness",), W.plot_sharpness, _wso_sharpness_summary, unit="wso_sharpness"),
    FigureSpec("wso_sharpness_sft", "wso",
               "Fig. 4: SFT score (− best SFT validation loss) vs final pre-training sharpness, with Pearson r and "
               "its 95% confidence interval (the paper: r = −0.709).",
               ("wso_sharpness_sft",), W.plot_sharpness_sft, _wso_correlation_summary,
               optional_tables=("wso_correlation",), unit="wso_correlation"),
)


def figure_names() -> list[str]:
    """Names of every figure the report can draw, in order."""
    return [f.name for f in FIGURES]


def figures_of(unit: str) -> list[FigureSpec]:
    """The catalogue's figures drawn from the tables of analysis unit `unit`."""
    return [f for f in FIGURES if f.unit == unit]


def unit_tables(unit: str) -> tuple[str, ...]:
    """The tables analysis unit `unit` writes, as the catalogue knows them: the first table of each of its
    figures (a figure's further tables may come from upstream units, e.g. bias_variance)."""
    return tuple(dict.fromkeys(f.tables[0] for f in figures_of(unit)))
