"""Figure plumbing shared by the figure functions: Agg figures without pyplot, panel grids, bands, legends."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

PANEL_W, PANEL_H = 4.6, 3.5  # inches per panel
DPI = 100


def panels(fig: Figure | None, n: int, *, max_cols: int = 3, width: float = PANEL_W, height: float = PANEL_H,
           sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """`n` axes on a grid (at most `max_cols` wide) in `fig`, or in a new Agg figure sized to fit."""
    if n < 1:
        raise ValueError(f"a figure needs at least one panel, got n={n}")
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    if fig is None:
        fig = Figure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    else:
        fig.clear()
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:  # plain tick labels: no "+2.466e2" offset above the axis
        ax.ticklabel_format(useOffset=False)
    return fig, axes[:n]


def band(ax: Axes, x: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, color: str,
         label: str, alpha: float = 0.2) -> None:
    """A mean line with a shaded band (min/max over seeds or a confidence interval)."""
    ax.plot(x, mean, color=color, label=label, lw=1.6)
    if len(x) > 1 and np.any(hi > lo):
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0)


def legend(ax: Axes, **kwargs: object) -> None:
    """A small legend, only when something is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", frameon=False, **kwargs)  # type: ignore[arg-type]


def log_scale(ax: Axes, axis: str = "y") -> None:
    """Log scale with plain-number tick labels at 1, 2, 5 x 10^k (no 4x10^2 style labels)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    target.set_major_formatter(formatter)
    target.set_minor_formatter(NullFormatter())


def log_if_positive(ax: Axes, values: np.ndarray, axis: str = "y", span: float = 20.0) -> None:
    """Log scale when every value is positive and they span more than `span`x (e.g. gradient norms)."""
    v = values[np.isfinite(values)]
    if v.size and (v > 0).all() and v.max() / v.min() > span:
        log_scale(ax, axis)


def step_axis(ax: Axes) -> None:
    """Integer ticks at round numbers on an x axis of optimizer steps."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes; no metadata (matplotlib would write its version and home page URL)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def boxes(ax: Axes, groups: dict[object, np.ndarray], *, ylabel: str, title: str) -> None:
    """One box per group with every value drawn on top (few runs: the points matter)."""
    names = list(groups)
    data = [v[np.isfinite(v)] for v in groups.values()]
    ax.boxplot(data, widths=0.5, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [str(n) for n in names])
    rng = np.random.default_rng(0)
    for i, v in enumerate(data, 1):
        ax.scatter(i + rng.uniform(-0.08, 0.08, len(v)), v, s=14, color="#0072B2", alpha=0.7, zorder=3)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
