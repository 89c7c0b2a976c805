"""Geometry figures (issue 5): landscapes, interpolation, sharpness, the optimizer's path, probes.

Same signature as `wsdlab.report.figures`: `(tables, fig=None) -> Figure`. Tables are those of
`wsdlab.analysis.geometry` (every row starts with `run`, the run directory's name):
sharpness, interpolate, landscape, trajectory (rows of kind pca / hv / path) and probes.
Runs are labelled by their directory name without the spec-hash suffix.
"""

from __future__ import annotations

import re

import numpy as np
from matplotlib import colormaps
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
    sort_values,
)
from wsdlab.report.figures_trajectory import draw_hv_norm, draw_pc1_share, draw_quasi_convexity
from wsdlab.report.panels import band, legend, log_if_positive, panels, step_axis
from wsdlab.report.style import color_map, group_label

MAX_LANDSCAPES = 6  # contour panels drawn at most (evenly spread over the cooldown points)
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{8,}$")


def run_label(run: object) -> str:
    """A run directory name without its spec-hash suffix: 'cooldown-sqrt-s0-1a2b3c4d5e' -> 'cooldown-sqrt-s0'."""
    return _HASH_SUFFIX.sub("", str(run))


def run_series(rows: list[Row]) -> list[tuple[str, str, list[Row]]]:
    """(label, colour, rows) per run: by the `shape` column the study runner adds (the cooldown shape,
    'stable' for the base run) when present, else by the run folder name without its hash."""
    if has_values(rows, "shape"):
        groups = group_by(rows, "shape")
        colors = color_map(groups)
        return [(group_label(g), colors[g], members) for g, members in groups.items()]
    groups = group_by(rows, "run")
    colors = color_map(run_label(g) for g in groups)
    return [(run_label(g), colors[run_label(g)], members) for g, members in groups.items()]


def rows_of_kind(tables: Tables, name: str, kind: str, columns: list[str]) -> list[Row]:
    """Rows of a mixed table (trajectory) whose `kind` is `kind`, checked to hold `columns`."""
    rows = [r for r in require(tables, name, ["run", "kind"]) if r.get("kind") == kind]
    if not rows:
        raise ValueError(f"table '{name}.csv' has no rows of kind '{kind}'")
    require({name: rows}, name, columns)
    return rows


def spread(items: list, k: int) -> list:
    """At most `k` items evenly spaced over `items`, first and last included."""
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def plot_landscape(tables: Tables, fig: Figure | None = None) -> Figure:
    """Loss contours on the plane point + a·e1 + b·e2 at several cooldown points (landscape.csv).

    e1 = final − pre-cooldown weights, e2 = the weights `offset` steps after the point − the point;
    the point itself is (0, 0). Only the first dataset of the table is drawn.
    """
    rows = require(tables, "landscape", ["run", "point", "a", "b", "loss"])
    if "dataset" in rows[0]:
        first = rows[0]["dataset"]
        rows = [r for r in rows if r.get("dataset") == first]
    panels_rows = [(label, point, pts) for label, _, members in run_series(rows)
                   for point, pts in group_by(members, "point").items()]
    panels_rows = spread(panels_rows, MAX_LANDSCAPES)
    several_runs = len({label for label, _, _ in panels_rows}) > 1
    fig, axes = panels(fig, len(panels_rows), width=4.2, height=3.6)
    for ax, (label, point, pts) in zip(axes, panels_rows):
        _contour(ax, pts)
        title = f"cooldown point: step {point}"
        ax.set(xlabel="a  (along final − pre-cooldown)", ylabel="b  (along the next optimizer steps)",
               title=f"{label}\n{title}" if several_runs else title)
    return fig


def _contour(ax: Axes, rows: list[Row]) -> None:
    """Filled loss contours of one (a, b) grid with the point (0, 0) marked."""
    a, b, loss = floats(rows, "a"), floats(rows, "b"), floats(rows, "loss")
    ua, ub = np.unique(a), np.unique(b)
    grid = np.full((len(ub), len(ua)), np.nan)
    grid[np.searchsorted(ub, b), np.searchsorted(ua, a)] = loss
    if len(ua) >= 2 and len(ub) >= 2 and np.isfinite(grid).sum() >= 4 and np.nanmax(grid) > np.nanmin(grid):
        cs = ax.contourf(ua, ub, grid, levels=14, cmap="viridis")
        ax.contour(ua, ub, grid, levels=14, colors="k", linewidths=0.3, alpha=0.5)
        ax.figure.colorbar(cs, ax=ax, label="loss (nats)")
    else:
        sc = ax.scatter(a, b, c=loss, cmap="viridis")
        ax.figure.colorbar(sc, ax=ax, label="loss (nats)")
    ax.plot([0], [0], marker="*", color="w", mec="k", ms=12, ls="none", label="cooldown point")
    if ua.min() <= 1 <= ua.max():
        ax.plot([1], [0], marker="o", color="w", mec="k", ms=7, ls="none", label="point + (final − pre)")
    legend(ax, loc="upper left")


def plot_interpolation(tables: Tables, fig: Figure | None = None) -> Figure:
    """Loss along θ(α) = (1−α)·θ_from + α·θ_to for each pair of checkpoints (interpolate.csv)."""
    rows = require(tables, "interpolate", ["run", "alpha", "loss"])
    keys = [c for c in ("from_run", "from_step", "to_run", "to_step") if c in rows[0]]
    fig, (ax,) = panels(fig, 1, width=6.4)
    styles = ["-", "--", ":", "-."]
    datasets = list(group_by(rows, "dataset")) if "dataset" in rows[0] else [None]
    for label, color, members in run_series(rows):
        pairs = group_by(members, *keys) if keys else {None: members}
        for pair, pts in pairs.items():
            pair_text = _pair_text(dict(zip(keys, pair if len(keys) > 1 else (pair,))))
            name = label + (f": {pair_text}" if len(pairs) > 1 or not has_values(rows, "shape") else "")
            for j, dataset in enumerate(datasets):
                sel = [p for p in pts if dataset is None or p.get("dataset") == dataset]
                x, y, _, _ = curve_stats(sel, "alpha", "loss")
                ax.plot(x, y, ls=styles[j % len(styles)], marker=".", color=color,
                        label=name + (f" [{dataset}]" if len(datasets) > 1 else ""))
    for v in (0.0, 1.0):
        ax.axvline(v, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="α  (0 = from, 1 = to)", ylabel="loss (nats)", title="Linear interpolation between checkpoints")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def _pair_text(pair: dict[str, object]) -> str:
    """'step 400 → 500' within one run, 'base@400 → cooldown-sqrt-s0@500' across runs."""
    if not pair:
        return ""
    src, dst = run_label(pair.get("from_run", "")), run_label(pair.get("to_run", ""))
    if src == dst:
        return f"step {pair.get('from_step')} → {pair.get('to_step')}"
    return f"{src}@{pair.get('from_step')} → {dst}@{pair.get('to_step')}"


def plot_sharpness(tables: Tables, fig: Figure | None = None) -> Figure:
    """Top Hessian eigenvalue(s) and the Hessian trace (± standard error) along training (sharpness.csv)."""
    rows = require(tables, "sharpness", ["run", "step"])
    eig_cols = sorted((c for c in rows[0] if re.fullmatch(r"lambda_\d+", c) and has_values(rows, c)),
                      key=lambda c: int(c.split("_")[1]))
    with_trace = has_values(rows, "trace")
    if not eig_cols and not with_trace:
        raise ValueError("table 'sharpness.csv' has neither lambda_1.. nor trace values")
    n = bool(eig_cols) + with_trace
    fig, axes = panels(fig, n)
    datasets = list(group_by(rows, "dataset")) if "dataset" in rows[0] else [None]
    series = run_series(rows)
    i = 0
    if eig_cols:
        ax = axes[i]
        i += 1
        for name, color, pts in series:
            for d_i, dataset in enumerate(datasets):
                sel = [p for p in pts if dataset is None or p.get("dataset") == dataset]
                label = name + (f" [{dataset}]" if len(datasets) > 1 else "")
                for k, col in enumerate(eig_cols):
                    x, y, _, _ = curve_stats(sel, "step", col)
                    ax.plot(x, y, marker=".", color=color, ls=["-", "--", ":"][d_i % 3],
                            alpha=1.0 if k == 0 else 0.5, label=label if k == 0 else None)
        log_if_positive(ax, np.concatenate([floats(rows, c) for c in eig_cols]))
        names = "λ1" if len(eig_cols) == 1 else f"λ1..λ{len(eig_cols)} (faint: λ2..)"
        ax.set(xlabel="step", ylabel="top Hessian eigenvalue", title=f"Sharpness: {names}")
        step_axis(ax)
        ax.grid(alpha=0.3)
        legend(ax)
    if with_trace:
        ax = axes[i]
        stderr = has_values(rows, "trace_stderr")
        for name, color, pts in series:
            for dataset in datasets:
                sel = sorted((p for p in pts if (dataset is None or p.get("dataset") == dataset)
                              and p.get("trace") is not None), key=lambda r: r["step"])
                if not sel:
                    continue
                x, y = floats(sel, "step"), floats(sel, "trace")
                se = np.nan_to_num(floats(sel, "trace_stderr")) if stderr else np.zeros_like(y)
                band(ax, x, y, y - se, y + se, color=color, label=name + (f" [{dataset}]" if len(datasets) > 1 else ""))
        ax.set(xlabel="step", ylabel="Hessian trace", title="Hessian trace (band: ± standard error)")
        step_axis(ax)
        ax.grid(alpha=0.3)
        legend(ax)
    return fig


def plot_pc1_share(tables: Tables, fig: Figure | None = None) -> Figure:
    """Share of variance explained by PC1 of the stable (S, S') and decay (D, D') iterates, over runs.

    From the kind="pca" rows of trajectory.csv (drawn by `figures_trajectory.draw_pc1_share`).
    """
    return draw_pc1_share([("", rows_of_kind(tables, "trajectory", "pca", ["set", "pc1_share"]))], fig)


def plot_hv_norm(tables: Tables, fig: Figure | None = None) -> Figure:
    """||H v|| at the decay start along the stable (v_s) and decay (v_d) directions, over runs (trajectory.csv)."""
    return draw_hv_norm([("", rows_of_kind(tables, "trajectory", "hv", ["direction", "hv_norm"]))], fig)


def plot_quasi_convexity(tables: Tables, fig: Figure | None = None) -> Figure:
    """Weak quasi-convexity ratio τ and cos(−grad, update) per training phase along the path (trajectory.csv)."""
    return draw_quasi_convexity([("", rows_of_kind(tables, "trajectory", "path", ["phase", "tau", "cos_grad_update"]))],
                                fig)


def plot_param_norm(tables: Tables, fig: Figure | None = None) -> Figure:
    """Parameter norm (and distance to the final iterate) along training, per run (trajectory.csv)."""
    rows = rows_of_kind(tables, "trajectory", "path", ["step", "param_norm"])
    cols = ["param_norm"] + (["distance_to_final"] if has_values(rows, "distance_to_final") else [])
    titles = {"param_norm": "Parameter norm ||x||", "distance_to_final": "Distance to the final iterate ||x* − x||"}
    fig, axes = panels(fig, len(cols))
    for ax, col in zip(axes, cols):
        for name, color, pts in run_series(rows):
            x, y, _, _ = curve_stats(pts, "step", col)
            ax.plot(x, y, color=color, label=name, lw=1.5)
        ax.set(xlabel="step", ylabel=col.replace("_", " "), title=titles[col])
        step_axis(ax)
        ax.grid(alpha=0.3)
    legend(axes[0])
    return fig


def plot_probes(tables: Tables, fig: Figure | None = None) -> Figure:
    """Linear-probe perplexity per layer at steps along the cooldown, and relative to the cooldown start.

    From probes.csv: one panel pair per run, one line per step (viridis: early to late).
    """
    rows = require(tables, "probes", ["run", "layer", "perplexity"])
    runs = run_series(rows)
    relative = has_values(rows, "rel_perplexity")
    per_run = 2 if relative else 1
    fig, axes = panels(fig, per_run * len(runs), max_cols=per_run if len(runs) > 1 else 2, width=4.6)
    cmap = colormaps["viridis"]
    for r_i, (name, _, pts) in enumerate(runs):
        steps = sort_values(p.get("step") for p in pts)
        for c_i, col in enumerate(["perplexity", "rel_perplexity"][:per_run]):
            ax = axes[r_i * per_run + c_i]
            for s_i, step in enumerate(steps):
                sel = [p for p in pts if p.get("step") == step]
                x, y, _, _ = curve_stats(sel, "layer", col)
                ax.plot(x, y, marker="o", ms=3, color=cmap(s_i / max(1, len(steps) - 1)),
                        label=f"step {step}" if step is not None else None)
            if col == "perplexity":
                log_if_positive(ax, floats(pts, col), span=5.0)
            else:
                ax.axhline(1.0, color="grey", lw=0.8, ls=":")
            ax.set(xlabel="layer (0 = embeddings)",
                   ylabel="probe perplexity" if col == "perplexity" else "probe perplexity / at cooldown start",
                   title=f"{name}: " + ("probe perplexity" if col == "perplexity" else "relative to start"))
            step_axis(ax)
            ax.grid(alpha=0.3)
        legend(axes[r_i * per_run])
    return fig
