"""Figures of the WSO study (paper 002): Tables 1-4 as bars, the SFT LR sweep, Fig. 3 and Fig. 4."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from wsdlab.report.aggregate import Tables, group_by, require, to_float
from wsdlab.report.panels import legend, panels, step_axis
from wsdlab.report.style import group_color

DELTA_COLUMNS = (("d_pt_val_loss", "Δ PT validation loss (lower is better)"),
                 ("d_pt_task_pts", "Δ PT task acc_norm, points (higher is better)"),
                 ("d_sft_task_pts", "Δ SFT task acc_norm, points (higher is better)"),
                 ("d_sft_val_loss", "Δ SFT validation loss (lower is better)"))


def model_name(row: dict) -> str:
    kind, alpha = row["scheduler"], to_float(row["alpha_pre"])
    name = "WSO" if kind == "wso" else f"{kind} α={alpha:g}"
    mid = row.get("alpha_mid")
    return name if mid in ("", None) or (isinstance(mid, float) and np.isnan(mid)) else f"{name}, α_mid={to_float(mid):g}"


def _value(v: object) -> float:
    x = to_float(v)
    return 0.0 if np.isnan(x) else x


def plot_delta(tables: Tables, fig: Figure | None = None) -> Figure:
    """Tables 1-4 as bars: each model's difference from the best decay-based schedule (pre-training stage;
    after mid-training, one bar group per alpha_mid)."""
    rows = require(tables, "wso_delta", ["stage", "scheduler", "alpha_pre"])
    fig, axes = panels(fig, len(DELTA_COLUMNS), max_cols=2, width=6.0)
    names = [model_name(r) + (" (mid)" if r["stage"] == "mid" else "") for r in rows]
    y = np.arange(len(rows))
    for ax, (col, title) in zip(axes, DELTA_COLUMNS):
        values = [_value(r.get(col)) for r in rows]
        ax.barh(y, values, color=[group_color(r["scheduler"]) for r in rows])
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(y, names, fontsize=6)
        ax.invert_yaxis()
        ax.set(title=title, xlabel="difference from the best decay-based schedule", ylabel="model")
        ax.grid(alpha=0.3, axis="x")
    return fig


def plot_sft_sweep(tables: Tables, fig: Figure | None = None) -> Figure:
    """SFT validation loss vs learning rate, one line per pre-/mid-trained model and SFT seed (Table 8's sweep)."""
    rows = require(tables, "wso_sft_sweep", ["scheduler", "alpha_pre", "lr", "sft_val_loss"])
    fig, axes = panels(fig, 1, width=6.0)
    ax = axes[0]
    labelled: set[str] = set()
    for members in group_by(rows, "base", "scheduler", "alpha_pre", "alpha_mid", "seed").values():  # a line per seed
        members = sorted(members, key=lambda r: to_float(r["lr"]))
        label = model_name(members[0]) + (" (mid)" if members[0]["base"] == "mid" else "")
        first = label not in labelled
        labelled.add(label)
        ax.plot([to_float(r["lr"]) for r in members], [to_float(r["sft_val_loss"]) for r in members], marker="o",
                color=group_color(members[0]["scheduler"]), ls="-" if members[0]["base"] == "pretrain" else ":",
                label=label if first else None)
    ax.set_xscale("log")
    ax.set(xlabel="SFT learning rate", ylabel="SFT validation loss", title="SFT learning-rate sweep")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def plot_sharpness(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 3: Hessian trace (Hutchinson, ± standard error) along pre-training, on PT and SFT validation data."""
    rows = require(tables, "wso_sharpness", ["scheduler", "alpha_pre", "step", "dataset", "trace", "stderr"])
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = panels(fig, len(datasets), width=5.6)
    for ax, dataset in zip(axes, datasets):
        for members in group_by([r for r in rows if r["dataset"] == dataset], "scheduler", "alpha_pre").values():
            members = sorted(members, key=lambda r: to_float(r["step"]))
            ax.errorbar([to_float(r["step"]) for r in members], [to_float(r["trace"]) for r in members],
                        yerr=[to_float(r["stderr"]) for r in members], marker="o", ms=3, capsize=2,
                        color=group_color(members[0]["scheduler"]),
                        ls="-" if to_float(members[0]["alpha_pre"]) == 0 else "--", label=model_name(members[0]))
        ax.set(xlabel="pre-training step", ylabel="Hessian trace", title=f"Sharpness on {dataset.upper()} validation data")
        step_axis(ax)
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def plot_sharpness_sft(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 4: SFT score (− best SFT validation loss) vs final pre-training sharpness, Pearson r (95% CI)."""
    rows = require(tables, "wso_sharpness_sft", ["dataset", "trace", "sft_score", "scheduler", "alpha_pre"])
    corr = {(r["dataset"], r["score"]): r for r in tables.get("wso_correlation", [])}
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = panels(fig, len(datasets), width=5.0)
    for ax, dataset in zip(axes, datasets):
        for r in (r for r in rows if r["dataset"] == dataset):
            ax.scatter(to_float(r["trace"]), to_float(r["sft_score"]), color=group_color(r["scheduler"]),
                       marker="o" if to_float(r["alpha_pre"]) < 1 else "*", s=40, label=model_name(r))
        c = corr.get((dataset, "sft_score"))
        title = f"{dataset.upper()} sharpness vs SFT score"
        if c is not None:
            title += f"\nr = {to_float(c['r']):.3f} [{to_float(c['ci_low']):.2f}, {to_float(c['ci_high']):.2f}], n = {c['n']}"
        ax.set(xlabel="final Hessian trace", ylabel="SFT score (− SFT validation loss)", title=title)
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig
