"""Draw cooldown shapes and full schedules to PNG bytes (matplotlib, Agg; no pyplot global state).

Imported on demand only (by `wsdlab schedule plot`), so `import wsdlab.schedules` stays free of matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wsdlab.common.errors import ConfigError
from wsdlab.schedules.shapes import Shape

Curve = tuple[str, Sequence[float], Sequence[float]]  # (label, xs, ys)


def shape_curves(shapes: Sequence[tuple[str, Shape]], points: int = 201) -> list[Curve]:
    """Each shape sampled at `points` evenly spaced x in [0, 1]."""
    xs = [i / (points - 1) for i in range(points)]
    return [(label, xs, [shape(x) for x in xs]) for label, shape in shapes]


def render_png(shape_lines: Sequence[Curve], schedule_lines: Sequence[Curve] = (), dpi: int = 120) -> bytes:
    """One panel of cooldown shapes (factor vs x) and, when given, one of schedules (factor vs step)."""
    if not shape_lines and not schedule_lines:
        raise ConfigError("nothing to plot: give at least one shape or schedule")
    panels = [(lines, xlabel, title) for lines, xlabel, title in (
        (shape_lines, "x = fraction of the cooldown", "Cooldown shapes"),
        (schedule_lines, "step", "Schedules"),
    ) if lines]
    fig = Figure(figsize=(5.5 * len(panels), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    for k, (lines, xlabel, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for label, xs, ys in lines:
            ax.plot(xs, ys, label=label, linewidth=1.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("LR factor")
        ax.set_title(title)
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
