"""Geometry figures (wsdlab.report.figures_geometry): each draws the numbers of a small hand-made table.

The hv_norm, PC1-share and quasi-convexity figures are tested in test_report_figures.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from wsdlab.report import figures_geometry as G


def _visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_landscape_puts_a_on_x_and_b_on_y() -> None:
    """loss = 10 + a on a 4 x 3 grid: every contour line is vertical, at a = level - 10."""
    rows = [{"run": "r", "point": 5, "a": a, "b": b, "loss": 10.0 + a}
            for a in (-1.0, 0.0, 1.0, 2.0) for b in (-1.0, 0.0, 1.0)]
    (ax,) = _visible_axes(G.plot_landscape({"landscape": rows}))
    filled, lines = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert (filled.zmin, filled.zmax) == (9.0, 12.0)
    drawn = 0
    for level, path in zip(lines.levels, lines.get_paths()):
        if len(path.vertices):
            np.testing.assert_allclose(path.vertices[:, 0], level - 10.0, atol=1e-9)
            drawn += 1
    assert drawn >= 10
    star, end = ax.lines
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([0], [0])  # the cooldown point
    assert (list(end.get_xdata()), list(end.get_ydata())) == ([1], [0])  # point + (final - pre)


def test_landscape_of_a_sparse_grid_scatters_the_table_points() -> None:
    rows = [{"run": "r", "point": 5, "a": a, "b": 0.0, "loss": loss} for a, loss in ((-0.5, 3.0), (0.5, 2.0))]
    (ax,) = _visible_axes(G.plot_landscape({"landscape": rows}))
    (scatter,) = ax.collections
    assert scatter.get_offsets().tolist() == [[-0.5, 0.0], [0.5, 0.0]]
    assert scatter.get_array().tolist() == [3.0, 2.0]
    assert len(ax.lines) == 1  # no 'point + (final - pre)' marker: a = 1 is outside the grid


def test_interpolation_draws_each_checkpoint_pair_by_alpha() -> None:
    rows = [{"run": "base-0123456789ab", "from_run": "base-0123456789ab", "from_step": f, "to_run": "base-0123456789ab",
             "to_step": t, "alpha": a, "loss": loss}
            for f, t, table in ((400, 500, ((1.0, 2.0), (0.0, 3.0), (0.5, 2.2))), (500, 600, ((0.0, 2.0), (1.0, 1.5))))
            for a, loss in table]
    (ax,) = _visible_axes(G.plot_interpolation({"interpolate": rows}))
    pairs = [ln for ln in ax.lines if ln.get_label().startswith("base")]
    assert [ln.get_label() for ln in pairs] == ["base: step 400 → 500", "base: step 500 → 600"]
    assert pairs[0].get_xdata().tolist() == [0.0, 0.5, 1.0] and pairs[0].get_ydata().tolist() == [3.0, 2.2, 2.0]
    assert pairs[1].get_xdata().tolist() == [0.0, 1.0] and pairs[1].get_ydata().tolist() == [2.0, 1.5]


def test_sharpness_draws_eigenvalues_and_the_trace_with_its_standard_error() -> None:
    rows = [{"run": "base-0123456789ab", "step": s, "lambda_1": l1, "lambda_2": l2, "trace": tr, "trace_stderr": se}
            for s, l1, l2, tr, se in ((20, 100.0, 50.0, 40.0, 2.0), (10, 1.0, 0.5, 30.0, 1.0))]
    eig, trace = _visible_axes(G.plot_sharpness({"sharpness": rows}))
    lam1, lam2 = eig.lines
    assert lam1.get_label() == "base" and lam1.get_xdata().tolist() == [10, 20]
    assert lam1.get_ydata().tolist() == [1.0, 100.0] and lam2.get_ydata().tolist() == [0.5, 50.0]
    assert eig.get_yscale() == "log"  # 0.5 .. 100 spans 200x
    assert eig.get_title() == "Sharpness: λ1..λ2 (faint: λ2..)"
    assert trace.lines[0].get_xdata().tolist() == [10, 20] and trace.lines[0].get_ydata().tolist() == [30.0, 40.0]
    band_y = trace.collections[0].get_paths()[0].vertices[:, 1]
    assert set(band_y.tolist()) == {29.0, 31.0, 38.0, 42.0}  # trace ± stderr


def test_param_norm_draws_each_run_and_the_distance_to_the_final_iterate() -> None:
    rows = [{"run": run, "kind": "path", "step": s, "param_norm": p, "distance_to_final": d}
            for run, table in (("a-0123456789ab", ((0, 5.0, 2.0), (10, 6.0, 0.0))),
                               ("b-0123456789ab", ((0, 5.0, 3.0), (10, 7.0, 0.0))))
            for s, p, d in table]
    rows.append({"run": "a-0123456789ab", "kind": "pca", "set": "S", "pc1_share": 0.5})  # another kind: not drawn
    norm, dist = _visible_axes(G.plot_param_norm({"trajectory": rows}))
    assert {ln.get_label(): ln.get_ydata().tolist() for ln in norm.lines} == {"a": [5.0, 6.0], "b": [5.0, 7.0]}
    assert {ln.get_label(): ln.get_ydata().tolist() for ln in dist.lines} == {"a": [2.0, 0.0], "b": [3.0, 0.0]}
    assert all(ln.get_xdata().tolist() == [0, 10] for ln in norm.lines)


def test_probes_draw_one_line_per_step_over_the_layers() -> None:
    rows = [{"run": "c-0123456789ab", "step": s, "layer": layer, "perplexity": p, "rel_perplexity": p / base}
            for s, base, ppls in ((100, 1.0, (50.0, 20.0, 10.0)), (200, 1.0, (40.0, 10.0, 5.0)))
            for layer, p in enumerate(ppls)]
    ppl, rel = _visible_axes(G.plot_probes({"probes": rows}))
    assert [ln.get_label() for ln in ppl.lines] == ["step 100", "step 200"]
    assert [ln.get_ydata().tolist() for ln in ppl.lines] == [[50.0, 20.0, 10.0], [40.0, 10.0, 5.0]]
    assert ppl.lines[0].get_xdata().tolist() == [0, 1, 2]
    assert ppl.get_yscale() == "log"  # 5 .. 50 spans 10x > 5x
    assert list(rel.lines[-1].get_ydata()) == [1.0, 1.0]  # the reference line at 1
    assert ppl.get_title() == "c: probe perplexity"


def test_run_label_of_geometry_series_by_shape() -> None:
    """With a `shape` column the series are the shapes (labelled as the paper), not the run folders."""
    rows = [{"run": f"r{i}", "shape": "sqrt", "kind": "path", "step": 0, "param_norm": v}
            for i, v in enumerate((4.0, 6.0))]
    (ax,) = _visible_axes(G.plot_param_norm({"trajectory": rows}))
    assert [ln.get_label() for ln in ax.lines] == ["1-sqrt"]
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([5.0])
