"""The optimizer-path figures that the geometry section (table `trajectory`) and paper 001's section (table
`universality_trajectory`) both show, each drawn by one function here: ||H v|| along the stable and decay
directions, the PC1 share of the iterate sets, and weak quasi-convexity with the gradient-update alignment.

Each takes the rows of one kind (hv / pca / path) split into panel groups: `[(heading, rows), ...]`, one
column of panels per group (the universality section: LM left, CNN right, headed "LM", "CNN"; the geometry
section: one group with no heading). Boxes are over runs (hv, pca) or sampled iterates (path), with every
value drawn on top (`panels.boxes`).
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from wsdlab.report.aggregate import Row, floats, group_by
from wsdlab.report.panels import boxes, log_if_positive, panels

PanelGroups = Sequence[tuple[str, list[Row]]]  # (heading, rows) per column of panels; "" = no heading

DIRECTIONS = ("v_s", "v_d")  # unit PC1 of S' (end of the stable phase) and of D' (start of the decay)
SETS = ("S", "S'", "D", "D'")
PHASES = ("warmup", "stable", "decay")
PC1_REFERENCE = 0.4  # paper 001: "the first component captures at least approximately 40% of the total variance"


def heading(group: str, what: str) -> str:
    """'LM: what' under a heading, else 'What'."""
    return f"{group}: {what}" if group else what[:1].upper() + what[1:]


def ordered(values: Sequence[object], first: Sequence[str]) -> list[object]:
    """`first` (those present) in its order, then any other value in the order met."""
    present = list(dict.fromkeys(values))
    return [v for v in first if v in present] + [v for v in present if v not in first]


def draw_hv_norm(groups: PanelGroups, fig: Figure | None = None) -> Figure:
    """||H(x^) v|| at the decay start x^ along v_s and v_d (rows of kind hv), a box per direction over runs."""
    fig, axes = panels(fig, len(groups), width=4.4)
    for ax, (group, rows) in zip(axes, groups):
        by_direction = group_by(rows, "direction")
        values = {d: floats(by_direction[d], "hv_norm") for d in ordered([r["direction"] for r in rows], DIRECTIONS)}
        boxes(ax, values, ylabel="||H(x̂) v||", title=heading(group, "curvature along v_s and v_d"))
        log_if_positive(ax, floats(rows, "hv_norm"))
        ax.set_xlabel("direction (unit PC1 of S' / D')")
    return fig


def draw_pc1_share(groups: PanelGroups, fig: Figure | None = None, sets: Sequence[str] | None = None) -> Figure:
    """Share of variance explained by PC1 of each iterate set (rows of kind pca), a box per set over runs;
    `sets` limits them (paper 001, Fig. 7: S and D), None draws every set present. Dotted: 40%."""
    fig, axes = panels(fig, len(groups), width=4.6)
    for ax, (group, rows) in zip(axes, groups):
        rows = [r for r in rows if sets is None or r["set"] in sets]
        by_set = group_by(rows, "set")
        values = {s: floats(by_set[s], "pc1_share") for s in ordered([r["set"] for r in rows], sets or SETS)}
        boxes(ax, values, ylabel="PC1 share of variance", title=heading(group, "PCA of the iterates"))
        ax.axhline(PC1_REFERENCE, color="grey", ls=":", lw=1.0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("iterate set (S: stable, D: decay; ': last / first fraction)")
    return fig


def draw_quasi_convexity(groups: PanelGroups, fig: Figure | None = None) -> Figure:
    """τ_i = −∇L(x_i)·(x* − x_i) / (L(x_i) − L(x*)) and cos(−∇L(x_i), x_{i+1} − x_i) on the sampled iterates
    (rows of kind path), a panel each (a row of panels per measure with several groups), a box per training
    phase; the line at 0 is the condition (> 0)."""
    n = len(groups)
    fig, axes = panels(fig, 2 * n, max_cols=n if n > 1 else 2, width=4.4)
    measures = (("tau", "τ = −∇L·(x*−x) / (L(x)−L(x*))", "weak quasi-convexity ratio τ"),
                ("cos_grad_update", "cos(−∇L, next update)", "gradient–update alignment"))
    for i, (column, ylabel, what) in enumerate(measures):
        for j, (group, rows) in enumerate(groups):
            ax = axes[i * n + j]
            phases = group_by(rows, "phase")
            order = ordered([r["phase"] for r in rows if r.get("phase") not in (None, "")], PHASES)
            values = {p: floats(phases[p], column) for p in order} or {"all": floats(rows, column)}
            boxes(ax, values, ylabel=ylabel, title=heading(group, what))
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.set_xlabel("phase")
    return fig

