"""The ||Hv||, PC1-share and quasi-convexity figures, drawn by one function each for both report sections:
the plotted points are the table's numbers (checked on the artists of a small hand-made table)."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wsdlab.report import figures_geometry as G
from wsdlab.report import figures_universality as U


def points(ax: Axes) -> list[list[float]]:
    """The y values drawn on top of each box, box by box (`panels.boxes` scatters every value)."""
    return [list(c.get_offsets()[:, 1]) for c in ax.collections]


def ticks(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def visible(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


HV = [("lm", "r1", "v_s", 1.5), ("lm", "r1", "v_d", 4.0), ("lm", "r2", "v_s", 2.5), ("lm", "r2", "v_d", 6.0),
      ("cnn", "c1", "v_d", 0.25), ("cnn", "c1", "v_s", 0.5)]
PCA = [("lm", "r1", "S", 0.55), ("lm", "r1", "D", 0.75), ("lm", "r1", "S'", 0.35), ("lm", "r1", "D'", 0.9),
       ("lm", "r2", "S", 0.65), ("lm", "r2", "D", 0.85), ("cnn", "c1", "D", 0.5), ("cnn", "c1", "S", 0.45)]
PATH = [("lm", "r1", 2, "warmup", 9.0, 0.05), ("lm", "r1", 10, "stable", 1.25, 0.25), ("lm", "r1", 20, "decay", 2.0, 0.5),
        ("lm", "r2", 10, "stable", 0.75, 0.125), ("lm", "r2", 20, "decay", -0.5, 0.375),
        ("cnn", "c1", 10, "stable", 3.0, 0.0625), ("cnn", "c1", 20, "decay", 4.0, 0.625)]


def trajectory_rows(model: bool) -> list[dict]:
    """The three kinds of rows, with the `model` column of universality_trajectory or without (trajectory)."""
    def head(m: str, run: str, kind: str) -> dict:
        return ({"model": m} if model else {}) | {"run": run, "kind": kind}

    rows = [head(m, r, "hv") | {"direction": d, "hv_norm": v} for m, r, d, v in HV]
    rows += [head(m, r, "pca") | {"set": s, "pc1_share": v} for m, r, s, v in PCA]
    rows += [head(m, r, "path") | {"step": t, "phase": p, "tau": tau, "cos_grad_update": c} for m, r, t, p, tau, c in PATH]
    columns = list(dict.fromkeys(c for r in rows for c in r))  # one table: every row has every column, as read
    return [{c: r.get(c) for c in columns} for r in rows]


def test_hv_norm_boxes_hold_each_runs_value_per_direction() -> None:
    (ax,) = visible(G.plot_hv_norm({"trajectory": trajectory_rows(model=False)}))
    assert ticks(ax) == ["v_s", "v_d"]
    assert points(ax) == [[1.5, 2.5, 0.5], [4.0, 6.0, 0.25]]  # every run of the table, in table order
    lm, cnn = visible(U.plot_hv_norm({"universality_trajectory": trajectory_rows(model=True)}))
    assert (lm.get_title(), cnn.get_title()) == ("LM: curvature along v_s and v_d", "CNN: curvature along v_s and v_d")
    assert ticks(lm) == ticks(cnn) == ["v_s", "v_d"]  # the same order whatever order the rows come in
    assert points(lm) == [[1.5, 2.5], [4.0, 6.0]] and points(cnn) == [[0.5], [0.25]]


def test_pc1_share_draws_every_set_or_the_chosen_ones_and_the_40_percent_line() -> None:
    (ax,) = visible(G.plot_pc1_share({"trajectory": trajectory_rows(model=False)}))
    assert ticks(ax) == ["S", "S'", "D", "D'"]
    assert points(ax) == [[0.55, 0.65, 0.45], [0.35], [0.75, 0.85, 0.5], [0.9]]
    assert list(ax.lines[-1].get_ydata()) == [0.4, 0.4]
    lm, cnn = visible(U.plot_pc1_share({"universality_trajectory": trajectory_rows(model=True)}))
    assert ticks(lm) == ticks(cnn) == ["S", "D"]  # Fig. 7: S and D only
    assert points(lm) == [[0.55, 0.65], [0.75, 0.85]] and points(cnn) == [[0.45], [0.5]]
    assert list(cnn.lines[-1].get_ydata()) == [0.4, 0.4]


def test_quasi_convexity_boxes_per_phase_for_tau_and_cos() -> None:
    tau, cos = visible(G.plot_quasi_convexity({"trajectory": trajectory_rows(model=False)}))
    assert ticks(tau) == ticks(cos) == ["warmup", "stable", "decay"]
    assert points(tau) == [[9.0], [1.25, 0.75, 3.0], [2.0, -0.5, 4.0]]
    assert points(cos) == [[0.05], [0.25, 0.125, 0.0625], [0.5, 0.375, 0.625]]
    assert list(tau.lines[-1].get_ydata()) == [0.0, 0.0]  # the condition: tau > 0
    lm_tau, cnn_tau, lm_cos, cnn_cos = visible(U.plot_quasi_convexity({"universality_trajectory": trajectory_rows(model=True)}))
    assert [lm_tau.get_title(), cnn_cos.get_title()] == ["LM: weak quasi-convexity ratio τ", "CNN: gradient–update alignment"]
    assert ticks(lm_tau) == ["stable", "decay"]  # Fig. 4: iterates after warmup
    assert points(lm_tau) == [[1.25, 0.75], [2.0, -0.5]] and points(cnn_tau) == [[3.0], [4.0]]
    assert points(lm_cos) == [[0.25, 0.125], [0.5, 0.375]] and points(cnn_cos) == [[0.0625], [0.625]]
    assert np.isfinite(lm_tau.get_ylim()).all()
