"""Figure functions: each draws what its table says (checked on the artists), and fails clearly on bad tables."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from wsdlab.report import figures as F
from wsdlab.report import figures_geometry as G
from wsdlab.report.catalog import FIGURES, SECTIONS, figure_names
from wsdlab.report.panels import png_bytes
from wsdlab.report.style import group_color, group_label, panel_axis_label, panel_label
from wsdlab.report.synthetic import SHAPES, rows_of, synthetic_tables


@pytest.fixture(scope="module")
def tables() -> dict:
    return synthetic_tables(seed=0)


def _visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("spec", FIGURES, ids=lambda s: s.name)
def test_every_figure_draws_from_just_its_tables(spec, tables) -> None:
    """Each catalogued figure draws labelled panels from only the tables it declares, and saves as a PNG."""
    fig = spec.draw(rows_of(tables, *spec.tables), None)
    axes = _visible_axes(fig)
    assert axes, spec.name
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), f"{spec.name}: unlabelled axis"
        assert ax.lines or ax.collections or ax.patches or ax.containers, f"{spec.name}: empty panel"
    png = png_bytes(fig)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 200 and image.height > 150
    assert b"matplotlib.org" not in png  # no metadata URL inside the image either


def test_catalog_is_consistent() -> None:
    names = figure_names()
    assert len(names) == len(set(names))
    keys = [s.key for s in SECTIONS]
    assert all(f.section in keys for f in FIGURES)
    # figures appear in the order of their sections (the paper's order)
    assert [keys.index(f.section) for f in FIGURES] == sorted(keys.index(f.section) for f in FIGURES)


def test_schedules_draws_each_shape_exactly(tables) -> None:
    fig = F.plot_schedules(tables)
    ax = fig.axes[0]
    assert len(ax.lines) == len(SHAPES)
    sqrt_line = next(line for line in ax.lines if line.get_label() == "1-sqrt")
    rows = sorted((r for r in tables["schedules"] if r["shape"] == "sqrt"), key=lambda r: r["step"])
    np.testing.assert_allclose(sqrt_line.get_ydata(), [r["lr_factor"] for r in rows])
    np.testing.assert_allclose(sqrt_line.get_xdata(), [r["step"] for r in rows])


def test_val_curves_plot_perplexity_of_the_seed_mean_and_zoom_on_the_cooldown() -> None:
    rows = [{"shape": "linear", "seed": s, "step": k, "val_loss": v}
            for s, losses in ((0, [3.0, 2.0, 1.0]), (1, [3.0, 2.0, 2.0])) for k, v in zip((0, 10, 20), losses)]
    fig = F.plot_val_curves({"val_curves": rows})
    full, zoom = _visible_axes(fig)
    line = full.lines[0]
    np.testing.assert_allclose(line.get_ydata(), [math.exp(3.0), math.exp(2.0), math.exp(1.5)])
    assert full.get_yscale() == "log"
    # shared history up to step 10 (all seeds equal), so the zoom starts there
    np.testing.assert_allclose(zoom.lines[0].get_xdata(), [10, 20])


def test_val_curves_without_shared_history_has_one_panel() -> None:
    rows = [{"shape": "linear", "seed": 0, "step": k, "val_loss": 3.0 - k / 10} for k in (0, 10)]
    assert len(_visible_axes(F.plot_val_curves({"val_curves": rows}))) == 1


def test_bias_variance_one_panel_per_space_with_the_table_points(tables) -> None:
    fig = F.plot_bias_variance(tables)
    axes = _visible_axes(fig)
    spaces = list(dict.fromkeys(r["space"] for r in tables["bias_variance"]))
    assert len(axes) == len(spaces)
    kl = next(ax for ax in axes if ax.get_title() == "KL space")
    points = np.concatenate([c.get_offsets() for c in kl.collections if isinstance(c, PathCollection)])
    expected = [(r["bias"], r["variance"]) for r in tables["bias_variance"] if r["space"] == "kl"]
    np.testing.assert_allclose(np.array(sorted(map(tuple, points.tolist()))), np.array(sorted(expected)), rtol=1e-6)


def test_perplexity_error_bars_span_min_to_max() -> None:
    rows = [{"shape": "sqrt", "ppl_mean": 20.0, "ppl_min": 18.0, "ppl_max": 23.0, "ppl_avg_model": 19.0}]
    fig = F.plot_perplexity({"perplexity": rows})
    ax = fig.axes[0]
    bar = ax.containers[0]
    ys = bar.lines[0].get_ydata()
    assert ys.tolist() == [20.0]
    segs = bar.lines[2][0].get_segments()
    assert segs[0][:, 1].tolist() == [18.0, 23.0]
    avg = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    assert avg.get_offsets()[0].tolist() == [0.0, 19.0]


def test_perplexity_vs_bias_joins_tables_by_shape_and_shows_correlation(tables) -> None:
    fig = F.plot_perplexity_vs_bias(rows_of(tables, "perplexity", "bias_variance", "perplexity_vs_bias"))
    kl = next(ax for ax in _visible_axes(fig) if ax.get_title().startswith("KL space"))
    assert "Spearman 0.90" in kl.get_title()
    ppl = {r["shape"]: r["ppl_avg_model"] for r in tables["perplexity"]}
    bias = {r["shape"]: r["bias"] for r in tables["bias_variance"] if r["space"] == "kl"}
    points = sorted(tuple(c.get_offsets()[0]) for c in kl.collections)
    np.testing.assert_allclose(np.array(points), np.array(sorted((bias[s], ppl[s]) for s in ppl)), rtol=1e-6)


def test_averaging_draws_every_shape_against_the_one_longer_run(tables) -> None:
    """Fig. 10: one bar per shape (its averaged model), the members' mean per shape, one shared longer run."""
    rows = tables["averaging"]
    assert len(rows) == len(SHAPES)  # every shape is averaged, not only one
    fig = F.plot_averaging(tables)
    ax = fig.axes[0]
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    by_label = {group_label(r["shape"]): r for r in rows}
    assert sorted(ticks) == sorted(by_label)
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([by_label[t]["val_loss_average_model"] for t in ticks])
    longer = [line for line in ax.lines if line.get_label() == "one longer run over all portions"]
    assert len(longer) == 1 and longer[0].get_ydata()[0] == pytest.approx(rows[0]["val_loss_longer_run"])
    means = next(c for c in ax.collections if c.get_label() == "mean of the averaged runs")
    assert list(means.get_offsets()[:, 1]) == pytest.approx([by_label[t]["val_loss_members_mean"] for t in ticks])


def test_averaging_with_a_longer_run_per_shape_draws_it_per_shape() -> None:
    rows = [{"shape": s, "n_models": 2, "val_loss_average_model": a, "val_loss_longer_run": b,
             "val_loss_members_mean": c} for s, a, b, c in (("sqrt", 3.0, 2.9, 3.1), ("linear", 3.2, 2.8, 3.3))]
    ax = F.plot_averaging({"averaging": rows}).axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == pytest.approx([2.8, 2.9, 3.0, 3.2])


def test_recency_shift_marks_the_mean_per_shape() -> None:
    rows = [{"shape": "sqrt", "seed": s, "shift": v, "deviation": 2 * v} for s, v in enumerate([1.0, 3.0])]
    ax = F.plot_recency_shift({"recency": rows}).axes[0]
    star = [c for c in ax.collections if c.get_label() == "1-sqrt"][0]
    assert star.get_offsets()[0].tolist() == [2.0, 4.0]


def test_recency_curves_draw_the_seed_means_and_the_cooldown_start() -> None:
    """Two seeds of one shape at batches 0, 1, 2 (batch 2 in the cooldown): each line is the mean over seeds."""
    rows = [{"shape": "sqrt", "seed": s, "batch_position": b, "phase": "cooldown" if b == 2 else "stable",
             "ppl_pre": pre, "ppl_post": post, "ppl_diff": post - pre}
            for s, table in ((0, ((10, 12), (20, 18), (30, 24))), (1, ((12, 14), (22, 20), (32, 30))))
            for b, (pre, post) in enumerate(table)]
    left, right = _visible_axes(F.plot_recency_curves({"recency_curves": rows}))
    pre, post, start = left.lines
    assert pre.get_label() == "pre-cooldown model" and post.get_label() == "1-sqrt"
    assert pre.get_xdata().tolist() == [0, 1, 2] and pre.get_ydata().tolist() == [11, 21, 31]
    assert post.get_ydata().tolist() == [13, 19, 27]
    assert right.lines[0].get_ydata().tolist() == [2, -2, -4]
    assert list(start.get_xdata()) == [2, 2] and list(right.lines[1].get_xdata()) == [2, 2]  # cooldown start
    # window-averaged columns, when present, are drawn instead of the raw ones
    smoothed = [{**r, "ppl_diff_smoothed": 1.0 + r["seed"]} for r in rows]
    right = _visible_axes(F.plot_recency_curves({"recency_curves": smoothed}))[1]
    assert right.lines[0].get_ydata().tolist() == [1.5, 1.5, 1.5]


def test_recency_vs_bias_variance_joins_seed_means_with_the_named_space() -> None:
    """Shift/deviation are means over seeds; bias/variance come from the space recency_correlations names."""
    rec = [{"shape": "sqrt", "seed": 0, "shift": 1.0, "deviation": 0.5},
           {"shape": "sqrt", "seed": 1, "shift": 3.0, "deviation": 1.5},
           {"shape": "linear", "seed": 0, "shift": 4.0, "deviation": 3.0}]
    bv = [{"shape": sh, "space": sp, "bias": b, "variance": v}
          for sh, sp, b, v in (("sqrt", "kl", 9.0, 9.0), ("linear", "kl", 9.0, 9.0),
                               ("sqrt", "weight", 0.2, 0.03), ("linear", "weight", 0.4, 0.01))]
    corr = [{"x": "shift", "y": "bias", "space": "weight", "spearman": 0.5, "pearson": 0.25, "n_shapes": 2}]
    fig = F.plot_recency_vs_bias_variance({"recency": rec, "bias_variance": bv, "recency_correlations": corr})
    shift_bias, dev_var = _visible_axes(fig)
    points = {c.get_label(): c.get_offsets()[0].tolist() for c in shift_bias.collections}
    assert points == {"1-sqrt": [2.0, 0.2], "linear": [4.0, 0.4]}
    points = {c.get_label(): c.get_offsets()[0].tolist() for c in dev_var.collections}
    assert points == {"1-sqrt": [1.0, 0.03], "linear": [3.0, 0.01]}
    assert shift_bias.get_title() == "shift vs bias (weight space)\n(Spearman 0.50, Pearson 0.25)"
    assert dev_var.get_title() == "deviation vs variance (weight space)"


def test_hyperparams_one_panel_per_panel_with_categorical_values(tables) -> None:
    fig = F.plot_hyperparams(tables)
    axes = _visible_axes(fig)
    assert len(axes) == len({r["panel"] for r in tables["hyperparams"]})
    reset = next(ax for ax in axes if ax.get_title() == "optimizer reset")
    assert [t.get_text() for t in reset.get_xticklabels()] == ["no", "yes"]


def test_hyperparams_panels_are_grouped_by_shape(tables) -> None:
    """Figs. 12 / 25: within each panel one series per cooldown shape, at the table's mean over seeds."""
    rows = tables["hyperparams"]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    assert len(shapes) > 1
    axes = _visible_axes(F.plot_hyperparams(tables))
    beta2 = next(ax for ax in axes if ax.get_title().startswith("β2 → β2^p"))
    handles, labels = beta2.get_legend_handles_labels()
    assert sorted(labels) == sorted(group_label(s) for s in shapes)
    for shape in shapes:
        line = next(ln for ln in beta2.lines if ln.get_color() == group_color(shape) and len(ln.get_xdata()) == 3)
        expected = [np.mean([r["ppl"] for r in rows if (r["shape"], r["panel"], r["value"]) == (shape, "beta2_p", v)])
                    for v in (0.5, 1.0, 2.0)]
        assert list(line.get_ydata()) == pytest.approx(expected)
        assert np.all(np.diff(line.get_xdata()) == pytest.approx(1.0))  # one value per tick, shifted per shape
    xs = sorted({round(float(ln.get_xdata()[0]), 6) for ln in beta2.lines if len(ln.get_xdata()) == 3})
    assert len(xs) == len(shapes)  # the shapes stand side by side at each value


def test_hyperparams_table_without_shapes_draws_one_series() -> None:
    rows = [{"panel": "beta2_p", "value": v, "seed": 0, "ppl": 10.0 + v} for v in (0.5, 1.0, 2.0)]
    ax = F.plot_hyperparams({"hyperparams": rows}).axes[0]
    joined = [ln for ln in ax.lines if len(ln.get_xdata()) == 3]
    assert len(joined) == 1 and list(joined[0].get_xdata()) == [0, 1, 2] and ax.get_legend() is None


def test_beta_power_labels_say_p_below_one_is_a_larger_beta() -> None:
    """beta^p with beta in (0, 1) and p < 1 is larger than beta (the paper: larger beta2 helps the cooldown)."""
    for panel in ("betas_p", "beta2_p"):
        assert "p < 1: larger" in panel_label(panel) and "longer memory" in panel_label(panel)
        assert "p < 1: larger" in panel_axis_label(panel)
        assert "shorter" not in panel_label(panel)
    assert "same token half-life" in panel_label("batch_x_half_life")


def test_alignment_bands_and_log_scale_for_the_growing_norm(tables) -> None:
    fig = F.plot_alignment(tables)
    axes = {ax.get_title(): ax for ax in _visible_axes(fig)}
    per_tensor = "cos(gradient, momentum), mean over tensors"
    global_ = "cos(gradient, momentum), all parameters as one vector"
    assert set(axes) == {per_tensor, global_, "gradient norm"}
    assert axes["gradient norm"].get_yscale() == "log"  # grows e^4..e^8 ~ 55x..3000x
    assert axes[per_tensor].get_yscale() == "linear" and axes[global_].get_yscale() == "linear"
    assert axes["gradient norm"].collections  # confidence bands


def test_alignment_draws_each_metric_sorted_by_step_with_its_interval() -> None:
    """Rows out of step order; the gradient norm spans 100x (log scale), the cosine does not."""
    rows = [{"shape": "linear", "step": st, "metric": m, "mean": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
            for m, table in (("grad_momentum_cos", ((20, 0.3), (10, 0.5), (30, 0.1))),
                             ("grad_norm", ((30, 100.0), (10, 1.0), (20, 10.0))))
            for st, v in table]
    cos, norm = _visible_axes(F.plot_alignment({"alignment": rows}))
    assert cos.get_title() == "cos(gradient, momentum), mean over tensors" and norm.get_title() == "gradient norm"
    assert cos.lines[0].get_xdata().tolist() == [10, 20, 30]
    assert cos.lines[0].get_ydata().tolist() == [0.5, 0.3, 0.1]
    assert norm.lines[0].get_ydata().tolist() == [1.0, 10.0, 100.0]
    assert (cos.get_yscale(), norm.get_yscale()) == ("linear", "log")
    band_y = cos.collections[0].get_paths()[0].vertices[:, 1]
    assert set(np.round(band_y, 9)) == {0.6, 0.4, 0.2, 0.0}  # ci_high 0.6, 0.4, 0.2 and ci_low 0.4, 0.2, 0.0
    assert cos.get_legend_handles_labels()[1] == ["linear"]


def test_update_norm_draws_the_seed_mean_after_warmup_and_marks_the_cooldown_start() -> None:
    """Stable steps 11, 12 of the base run, then two seeds of a cooldown (steps 13, 14): the dashed line is at 12."""
    from wsdlab.report.catalog import FIGURES

    draw = next(f.draw for f in FIGURES if f.name == "update_norm")
    rows = [{"shape": "stable", "run": "base", "step": t, "phase": "stable", "param_norm": p, "update_norm": u}
            for t, p, u in ((11, 10.0, 0.5), (12, 10.1, 0.4))]
    rows += [{"shape": "sqrt", "run": f"c{s}", "step": t, "phase": "cooldown", "param_norm": p + s,
              "update_norm": u * (1 + s)}
             for s in (0, 1) for t, p, u in ((13, 10.2, 0.02), (14, 10.3, 0.01))]
    param, update = _visible_axes(draw({"update_norm": rows}, None))
    lines = {ln.get_label(): ln for ln in param.lines}
    assert lines["stable phase (base run)"].get_ydata().tolist() == [10.0, 10.1]
    assert lines["1-sqrt"].get_xdata().tolist() == [13, 14]
    assert lines["1-sqrt"].get_ydata().tolist() == pytest.approx([10.7, 10.8])
    sqrt_update = next(ln for ln in update.lines if ln.get_label() == "1-sqrt")
    assert sqrt_update.get_ydata().tolist() == pytest.approx([0.03, 0.015])
    dashed = [ln for ln in update.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [12, 12]
    assert update.get_yscale() == "log" and param.get_yscale() == "linear"  # 0.5 / 0.01 = 50x > 20x


def test_landscape_contours_each_point(tables) -> None:
    fig = G.plot_landscape(tables)
    axes = _visible_axes(fig)
    points = sorted({r["point"] for r in tables["landscape"]})
    assert [ax.get_title() for ax in axes] == [f"cooldown point: step {p}" for p in points]
    assert all(ax.collections for ax in axes)


def test_landscape_limits_the_number_of_panels() -> None:
    rows = [{"run": "r", "point": p, "a": a, "b": b, "loss": a * a + b * b}
            for p in range(10) for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)]
    fig = G.plot_landscape({"landscape": rows})
    titles = [ax.get_title() for ax in _visible_axes(fig)]
    assert len(titles) == G.MAX_LANDSCAPES
    assert titles[0].endswith("step 0") and titles[-1].endswith("step 9")


def test_trajectory_figures_read_their_row_kind(tables) -> None:
    pca = G.plot_pc1_share(tables).axes[0]
    assert [t.get_text() for t in pca.get_xticklabels()] == ["S", "S'", "D", "D'"]
    hv = G.plot_hv_norm(tables).axes[0]
    assert [t.get_text() for t in hv.get_xticklabels()] == ["v_s", "v_d"]
    qc = _visible_axes(G.plot_quasi_convexity(tables))
    assert [t.get_text() for t in qc[0].get_xticklabels()] == ["warmup", "stable", "decay"]
    with pytest.raises(ValueError, match="no rows of kind 'hv'"):
        G.plot_hv_norm({"trajectory": [r for r in tables["trajectory"] if r["kind"] != "hv"]})


def test_sharpness_panels_follow_available_columns(tables) -> None:
    assert len(_visible_axes(G.plot_sharpness(tables))) == 2
    only_trace = [{k: v for k, v in r.items() if not k.startswith("lambda_")} for r in tables["sharpness"]]
    assert [ax.get_title() for ax in _visible_axes(G.plot_sharpness({"sharpness": only_trace}))] == [
        "Hessian trace (band: ± standard error)"]
    with pytest.raises(ValueError, match="neither lambda_1"):
        G.plot_sharpness({"sharpness": [{"run": "r", "step": 1, "trace": None}]})


def test_run_label_strips_the_spec_hash() -> None:
    assert G.run_label("cooldown-sqrt-s0-1a2b3c4d5e") == "cooldown-sqrt-s0"
    assert G.run_label("plain-run") == "plain-run"


def test_missing_column_is_a_value_error_naming_it(tables) -> None:
    bad = [{k: v for k, v in r.items() if k != "variance"} for r in tables["bias_variance"]]
    with pytest.raises(ValueError, match="bias_variance.csv' lacks column\\(s\\) variance"):
        F.plot_bias_variance({"bias_variance": bad})


def test_draws_into_a_given_figure(tables) -> None:
    fig = Figure()
    out = F.plot_schedules(tables, fig)
    assert out is fig and len(fig.axes) == 1
    F.plot_bias_variance(tables, fig)  # the figure is cleared and reused
    assert len(_visible_axes(fig)) == len({r["space"] for r in tables["bias_variance"]})


def test_universality_summaries_read_the_findings() -> None:
    """The summaries behind paper 001's figures, on synthetic tables built by hand (report/synthetic.py):
    a valley then a descent, ||H v_d|| = 3 > ||H v_s|| = 1, PC1 shares 0.6 / 0.7, and the sweep's final
    losses 1.3 - f against cosine's mean 1.01 (seeds 0, 1, 2: 1.00, 1.01, 1.02): first match at f = 0.3."""
    from wsdlab.report import figures_universality as U
    from wsdlab.report.synthetic import synthetic_tables

    t = synthetic_tables()
    interp = {(r["model"], r["segment"]): r for r in U.summary_interpolation(t)}
    assert interp[("lm", "stable")]["valley (runs)"] == "3/3"
    assert interp[("cnn", "cooldown")]["monotone descent (runs)"] == "3/3"
    assert interp[("cnn", "stable")]["monotone descent (runs)"] == "0/3"
    hv = {r["model"]: r for r in U.summary_hv(t)}
    assert hv["cnn"]["||H v_d|| > ||H v_s|| (runs)"] == "3/3" and hv["lm"]["mean ||H v_d||"] == pytest.approx(3.0)
    pc1 = {(r["model"], r["set"]): r["mean PC1 share"] for r in U.summary_pc1(t)}
    assert pc1[("lm", "S")] == pytest.approx(0.6) and pc1[("cnn", "D")] == pytest.approx(0.7)
    length = U.summary_length(t)
    assert {r["WSD matches cosine from"] for r in length} == {0.3}
    assert U.matching_fraction({0.1: 1.2, 0.2: 1.1}, 1.0) is None
    norms = {r["model"]: r for r in U.summary_norms(t)}
    lm = [r for r in t["universality_norms"] if r["model"] == "lm"]
    stable, cooldown = ([r["update_norm"] for r in lm if r["phase"] == p] for p in ("stable", "cooldown"))
    assert norms["lm"]["stable / cooldown"] == pytest.approx(np.mean(stable) / np.mean(cooldown), rel=1e-12)
    assert norms["lm"]["param norm max"] == max(r["param_norm"] for r in lm)
