"""Figures of the cooldown study (issue 4), in the paper's order, drawn from analysis tables only.

Every function has the signature `(tables, fig=None) -> Figure`: `tables` maps a table name (its CSV
file name without `.csv`) to its rows (`wsdlab.analysis.tables.read_table`); the figure is drawn into
`fig` (cleared first) or into a new Agg figure. A missing table or column raises ValueError naming it.
Geometry figures (issue 5) are in `wsdlab.report.figures_geometry`.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from wsdlab.report.aggregate import (
    Tables,
    curve_stats,
    divergence_step,
    floats,
    group_by,
    has_values,
    perplexity,
    require,
    sort_values,
    to_float,
)
from wsdlab.report.panels import (
    band,
    legend,
    log_if_positive,
    log_scale,
    panels,
    step_axis,
)
from wsdlab.report.style import (
    group_color,
    group_label,
    metric_label,
    order_groups,
    panel_axis_label,
    panel_label,
    space_label,
)

PPL_LABEL = "validation perplexity"


def plot_schedules(tables: Tables, fig: Figure | None = None) -> Figure:
    """LR factor vs step, one line per cooldown shape (schedules.csv: shape, step, lr_factor)."""
    rows = require(tables, "schedules", ["shape", "step", "lr_factor"])
    fig, (ax,) = panels(fig, 1, width=6.0)
    for shape, members in group_by(rows, "shape").items():
        x, y, _, _ = curve_stats(members, "step", "lr_factor")
        ax.plot(x, y, color=group_color(shape), label=group_label(shape), lw=1.6)
    ax.set(xlabel="step", ylabel="LR factor (× peak LR)", title="Learning-rate schedules")
    step_axis(ax)
    ax.set_ylim(bottom=0)
    legend(ax)
    return fig


def plot_val_curves(tables: Tables, fig: Figure | None = None) -> Figure:
    """Validation perplexity vs step per shape: mean over seeds, band = min/max (val_curves.csv).

    When the curves share a common start (the base run before the branch point), a second panel
    zooms on the steps from the last shared evaluation on, where the shapes differ.
    """
    rows = require(tables, "val_curves", ["shape", "step", "val_loss"])
    start = divergence_step(rows, "step", "val_loss")
    fig, axes = panels(fig, 1 if start is None else 2, width=5.6)
    for i, ax in enumerate(axes):
        for shape, members in group_by(rows, "shape").items():
            x, mean, lo, hi = curve_stats(members, "step", "val_loss")
            keep = x >= start if i == 1 else np.ones_like(x, dtype=bool)
            band(ax, x[keep], perplexity(mean[keep]), perplexity(lo[keep]), perplexity(hi[keep]),
                 color=group_color(shape), label=group_label(shape))
        if i == 0:
            ax.set(xlabel="step", ylabel=f"{PPL_LABEL} (log scale)", title="Validation perplexity")
            log_scale(ax)
        else:
            ax.set(xlabel="step", ylabel=PPL_LABEL, title="Zoom: from the branch point on")
        step_axis(ax)
        ax.grid(alpha=0.3)
    legend(axes[-1])
    return fig


def plot_bias_variance(tables: Tables, fig: Figure | None = None) -> Figure:
    """Bias vs variance, one point per shape, one panel per space (bias_variance.csv)."""
    rows = require(tables, "bias_variance", ["shape", "space", "bias", "variance"])
    spaces = group_by(rows, "space")
    fig, axes = panels(fig, len(spaces))
    for ax, (space, members) in zip(axes, spaces.items()):
        for shape, pts in group_by(members, "shape").items():
            b, v = floats(pts, "bias"), floats(pts, "variance")
            ax.scatter(b, v, color=group_color(shape), label=group_label(shape), s=40, zorder=3)
        ax.set(xlabel="bias", ylabel="variance", title=f"{space_label(space)} space")
        ax.ticklabel_format(style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def plot_perplexity(tables: Tables, fig: Figure | None = None) -> Figure:
    """Final perplexity per shape: mean with min/max bars over seeds, and the averaged model (perplexity.csv)."""
    rows = require(tables, "perplexity", ["shape", "ppl_mean", "ppl_min", "ppl_max"])
    fig, (ax,) = panels(fig, 1, width=6.0)
    shapes = list(group_by(rows, "shape"))
    by_shape = {r["shape"]: r for r in rows}
    pos = np.arange(len(shapes))
    mean = np.array([to_float(by_shape[s]["ppl_mean"]) for s in shapes])
    lo = np.array([to_float(by_shape[s]["ppl_min"]) for s in shapes])
    hi = np.array([to_float(by_shape[s]["ppl_max"]) for s in shapes])
    for i, s in enumerate(shapes):
        ax.errorbar(pos[i], mean[i], yerr=[[mean[i] - lo[i]], [hi[i] - mean[i]]], fmt="o", capsize=4,
                    color=group_color(s), ms=7, label="mean over seeds (bars: min/max)" if i == 0 else None)
    if has_values(rows, "ppl_avg_model"):
        avg = np.array([to_float(by_shape[s].get("ppl_avg_model")) for s in shapes])
        ax.scatter(pos, avg, marker="D", facecolors="none", edgecolors="k", s=40, label="average of the runs' weights",
                   zorder=3)
    ax.set_xticks(pos, [group_label(s) for s in shapes], rotation=20, ha="right")
    ax.set(xlabel="cooldown shape", ylabel=PPL_LABEL, title="Final perplexity per cooldown shape")
    ax.grid(axis="y", alpha=0.3)
    legend(ax)
    return fig


def plot_perplexity_vs_bias(tables: Tables, fig: Figure | None = None) -> Figure:
    """Perplexity vs bias across shapes, one panel per space (perplexity.csv joined with bias_variance.csv).

    The y column and the rank/linear correlations come from perplexity_vs_bias.csv when present
    (space, x, y, spearman, pearson, n_shapes); otherwise y is ppl_avg_model, else ppl_mean.
    """
    ppl_rows = require(tables, "perplexity", ["shape"])
    bv_rows = require(tables, "bias_variance", ["shape", "space", "bias"])
    corr = {r.get("space"): r for r in tables.get("perplexity_vs_bias", [])}
    spaces = group_by(bv_rows, "space")
    fig, axes = panels(fig, len(spaces))
    for ax, (space, members) in zip(axes, spaces.items()):
        info = corr.get(space, {})
        y_col = str(info.get("y") or ("ppl_avg_model" if has_values(ppl_rows, "ppl_avg_model") else "ppl_mean"))
        require(tables, "perplexity", [y_col])
        ppl = {r["shape"]: to_float(r.get(y_col)) for r in ppl_rows}
        for shape, pts in group_by(members, "shape").items():
            if shape in ppl:
                ax.scatter(floats(pts, "bias").mean(), ppl[shape], color=group_color(shape), label=group_label(shape),
                           s=40, zorder=3)
        title = f"{space_label(space)} space"
        if info.get("spearman") is not None:
            title += f"\nSpearman {to_float(info['spearman']):.2f}, Pearson {to_float(info.get('pearson')):.2f}"
        ylabel = PPL_LABEL + (" of the averaged model" if y_col == "ppl_avg_model" else " (mean over seeds)")
        ax.set(xlabel="bias", ylabel=ylabel, title=title)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def plot_averaging(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 10 of Dremov et al.: per shape, the validation loss of the weight average of its N disjoint-
    portion cooldowns (bar, the shape's colour) and the mean of those N runs (◇), vs the one longer run
    over all their data (dashed line when every row names the same loss, else a black bar per shape).

    From averaging.csv (one row per shape: n_models and the three validation losses).
    """
    cols = ["shape", "n_models", "val_loss_average_model", "val_loss_longer_run", "val_loss_members_mean"]
    rows = require(tables, "averaging", cols)
    groups = list(group_by(rows, "shape", "n_models").items())
    avg = np.array([np.nanmean(floats(members, "val_loss_average_model")) for _, members in groups])
    longer = np.array([np.nanmean(floats(members, "val_loss_longer_run")) for _, members in groups])
    mean = np.array([np.nanmean(floats(members, "val_loss_members_mean")) for _, members in groups])
    shared = np.allclose(longer, longer[0], rtol=0, atol=1e-12, equal_nan=True)
    fig, (ax,) = panels(fig, 1, width=max(5.0, 0.9 * len(groups) + 3.0))
    pos = np.arange(len(groups))
    width = 0.7 if shared else 0.4
    for i, ((shape, _), _) in enumerate(groups):
        ax.bar(pos[i] - (0 if shared else width / 2), avg[i], width, color=group_color(shape),
               label="averaged weights (bar per shape)" if i == 0 else None)
    if shared:
        ax.axhline(longer[0], color="k", ls="--", lw=1.4, label="one longer run over all portions")
    else:
        ax.bar(pos + width / 2, longer, width, color="#444444", label="one longer run over all portions")
    ax.scatter(pos, mean, marker="D", facecolors="none", edgecolors="k", s=36, zorder=3,
               label="mean of the averaged runs")
    v = np.concatenate([avg, longer, mean])
    v = v[np.isfinite(v)]
    if v.size:
        pad = max(0.05 * (v.max() - v.min()), 1e-3 * abs(v.max()))
        ax.set_ylim(v.min() - 4 * pad, v.max() + 2 * pad)  # losses differ little: zoom on the differences
    ticks = [f"{group_label(shape)}\n({n:g} models)" if isinstance(n, (int, float)) else group_label(shape)
             for (shape, n), _ in groups]
    ax.set_xticks(pos, ticks, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set(xlabel="cooldown shape (models averaged)", ylabel="validation loss (nats/token)",
           title="Weight averaging vs longer training")
    ax.grid(axis="y", alpha=0.3)
    legend(ax)
    return fig


def plot_recency_curves(tables: Tables, fig: Figure | None = None) -> Figure:
    """Fig. 9 (left) and eq. 2's difference: perplexity of every training batch after training, in training order.

    From recency_curves.csv (window-averaged columns when present, else the raw ones): left, the
    pre-cooldown model (one line: all cooldowns share it) and each shape's post-cooldown models; right,
    difference_i = c(b_i) - p(b_i). Mean over seeds, band = min/max; dotted line = the cooldown start.
    """
    rows = require(tables, "recency_curves", ["shape", "batch_position", "ppl_pre", "ppl_post", "ppl_diff"])
    col = {c: f"{c}_smoothed" if has_values(rows, f"{c}_smoothed") else c for c in ("ppl_pre", "ppl_post", "ppl_diff")}
    fig, (left, right) = panels(fig, 2, width=5.6)
    x, pre, _, _ = curve_stats(rows, "batch_position", col["ppl_pre"])
    left.plot(x, pre, color="k", lw=1.4, label="pre-cooldown model")
    for shape, members in group_by(rows, "shape").items():
        color = group_color(shape)
        for ax, c in ((left, col["ppl_post"]), (right, col["ppl_diff"])):
            xs, mean, lo, hi = curve_stats(members, "batch_position", c)
            band(ax, xs, mean, lo, hi, color=color, label=group_label(shape), alpha=0.12)
    cooldown = [to_float(r["batch_position"]) for r in rows if r.get("phase") == "cooldown"]
    for ax in (left, right):
        if cooldown:
            ax.axvline(min(cooldown), color="k", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    right.axhline(0.0, color="k", lw=0.8)
    left.set(xlabel="training batch (position in the whole run)", ylabel="perplexity on the training batch",
             title="Perplexity of each training batch after training")
    right.set(xlabel="training batch (position in the whole run)", ylabel="c(b) − p(b) (perplexity)",
              title="Eq. 2 difference: post- minus pre-cooldown")
    legend(left)
    return fig


def plot_recency_shift(tables: Tables, fig: Figure | None = None) -> Figure:
    """Shift vs deviation of the recency curve, one point per run, per shape (recency.csv)."""
    rows = require(tables, "recency", ["shape", "shift", "deviation"])
    fig, (ax,) = panels(fig, 1, width=5.6)
    for shape, members in group_by(rows, "shape").items():
        s, d = floats(members, "shift"), floats(members, "deviation")
        color = group_color(shape)
        ax.scatter(s, d, color=color, alpha=0.45, s=20)
        ax.scatter(np.nanmean(s), np.nanmean(d), color=color, s=80, marker="*", edgecolors="k",
                   label=group_label(shape), zorder=3)
    ax.set(xlabel="shift: mean difference over the cooldown batches (perplexity)",
           ylabel="deviation: mean squared (difference − shift), all batches",
           title="Recency bias: shift vs deviation (★ = mean over seeds)")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def plot_recency_vs_bias_variance(tables: Tables, fig: Figure | None = None) -> Figure:
    """Per shape (mean over seeds): shift vs bias and deviation vs variance of one bias-variance space.

    The space is the one named in recency_correlations.csv (x, y, space, spearman, pearson, n_shapes)
    when present, else 'kl' (else the first space of bias_variance.csv).
    """
    rec = require(tables, "recency", ["shape", "shift", "deviation"])
    bv = require(tables, "bias_variance", ["shape", "space", "bias", "variance"])
    corr = tables.get("recency_correlations", [])
    spaces = list(group_by(bv, "space"))
    named = [r.get("space") for r in corr if r.get("space") in spaces]
    space = named[0] if named else ("kl" if "kl" in spaces else spaces[0])
    bv_space = {r["shape"]: r for r in bv if r["space"] == space}
    fig, axes = panels(fig, 2)
    for ax, (x_col, y_col) in zip(axes, (("shift", "bias"), ("deviation", "variance"))):
        for shape, members in group_by(rec, "shape").items():
            if shape in bv_space:
                ax.scatter(np.nanmean(floats(members, x_col)), to_float(bv_space[shape][y_col]),
                           color=group_color(shape), label=group_label(shape), s=40, zorder=3)
        title = f"{x_col} vs {y_col} ({space_label(space)} space)"
        for r in corr:
            if r.get("space") == space and {r.get("x"), r.get("y")} == {x_col, y_col} and r.get("spearman") is not None:
                title += f"\n(Spearman {to_float(r['spearman']):.2f}, Pearson {to_float(r.get('pearson')):.2f})"
        ax.set(xlabel=f"{x_col} (mean over seeds)", ylabel=f"{y_col} ({space_label(space)} space)", title=title)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def plot_hyperparams(tables: Tables, fig: Figure | None = None) -> Figure:
    """Perplexity vs the value of a cooldown hyper-parameter, one panel each, grouped by cooldown shape
    as in the paper's Figs. 11, 12 and 25 (hyperparams.csv: shape, panel, value, seed, ppl / val_loss).

    Each shape is one series in its colour (points: mean over seeds, bars: min/max; numeric values
    joined by a line), shifted a little along x so the shapes stand side by side at every value. A
    table without a `shape` column (or with it empty) draws one series per panel.
    """
    rows = require(tables, "hyperparams", ["panel", "value"])
    metric = "ppl" if has_values(rows, "ppl") else "val_loss"
    require(tables, "hyperparams", [metric])
    groups = group_by(rows, "panel")
    fig, axes = panels(fig, len(groups), width=4.4, height=3.4)
    ylabel = PPL_LABEL if metric == "ppl" else "validation loss (nats/token)"
    for ax, (panel, members) in zip(axes, groups.items()):
        values = sort_values(m["value"] for m in members)
        by_shape = group_by(members, "shape") if has_values(members, "shape") else {None: members}
        shapes = order_groups(by_shape)
        offsets = np.linspace(-0.15, 0.15, len(shapes)) if len(shapes) > 1 else [0.0]
        for shape, dx in zip(shapes, offsets):
            color = "#0072B2" if shape is None else group_color(shape)
            xs, means = [], []
            for i, v in enumerate(values):
                y = floats([m for m in by_shape[shape] if m["value"] == v], metric)
                y = y[np.isfinite(y)]
                if not y.size:
                    continue
                label = group_label(shape) if shape is not None and not xs else None  # once per shape
                xs.append(i + dx)
                means.append(y.mean())
                ax.errorbar(i + dx, y.mean(), yerr=[[y.mean() - y.min()], [y.max() - y.mean()]], fmt="o",
                            capsize=3, color=color, label=label)
            if len(xs) > 1 and all(isinstance(v, (int, float)) for v in values):
                ax.plot(xs, means, color=color, lw=1, alpha=0.6)
        ax.set_xticks(range(len(values)), [f"{v:g}" if isinstance(v, float) else str(v) for v in values])
        ax.set_title(textwrap.fill(panel_label(panel), 34), fontsize=9)
        ax.set(xlabel=panel_axis_label(panel), ylabel=ylabel)
        ax.grid(axis="y", alpha=0.3)
        if len(shapes) > 1:
            legend(ax, title="cooldown shape")
    return fig


def plot_alignment(tables: Tables, fig: Figure | None = None) -> Figure:
    """Gradient alignment and gradient norm along the cooldown with confidence bands (alignment.csv)."""
    rows = require(tables, "alignment", ["shape", "step", "metric", "mean"])
    bands = has_values(rows, "ci_low") and has_values(rows, "ci_high")
    metrics = group_by(rows, "metric")
    fig, axes = panels(fig, len(metrics))
    for ax, (metric, members) in zip(axes, metrics.items()):
        for shape, pts in group_by(members, "shape").items():
            pts = sorted(pts, key=lambda r: to_float(r["step"]))
            x, m = floats(pts, "step"), floats(pts, "mean")
            if bands:
                band(ax, x, m, floats(pts, "ci_low"), floats(pts, "ci_high"), color=group_color(shape),
                     label=group_label(shape))
            else:
                ax.plot(x, m, color=group_color(shape), label=group_label(shape))
        log_if_positive(ax, floats(members, "mean"))
        if "cos" in str(metric):  # a cosine lies in [-1, 1]; a wide interval from few seeds may not
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, -1.05), min(hi, 1.05))
        ax.set(xlabel="step", ylabel=metric_label(metric), title=metric_label(metric))
        step_axis(ax)
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig
