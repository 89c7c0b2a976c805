"""Paper 001's figures (wsdlab.report.figures_universality): each draws the numbers of a small hand-made table,
LM panels left of CNN panels. (The hv_norm, PC1-share and quasi-convexity figures are tested elsewhere.)"""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from wsdlab.report import figures_universality as U


def _visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _curve_rows(column: str) -> list[dict]:
    """Per model, WSD and cosine, train and val, two seeds at steps 0 and 10 (train: seed-independent)."""
    rows = []
    for model, offset in (("cnn", 1.0), ("lm", 0.0)):  # the CNN first: the figure still draws the LM left
        for schedule, d in (("wsd", 0.0), ("cosine", 0.5)):
            for split in ("train", "val"):
                for seed in (0, 1):
                    for step, v in ((10, 2.0), (0, 4.0)):
                        jitter = 0.2 * seed if split == "val" else 0.0
                        rows.append({"model": model, "schedule": schedule, "split": split, "seed": seed, "step": step,
                                     column: v + offset + d + jitter})
    return rows


def _line(ax, color: str, width: float):
    return next(ln for ln in ax.lines if ln.get_color() == color and ln.get_linewidth() == width)


def test_curves_draw_train_thin_and_the_val_seed_mean_per_schedule() -> None:
    norms = [{"model": m, "seed": 0, "step": 5, "param_norm": 1.0, "update_norm": 1.0, "decay_start": ds}
             for m, ds in (("lm", 6), ("lm", 8), ("cnn", 7))]
    lm, cnn = _visible_axes(U.plot_curves({"universality_curves": _curve_rows("loss"), "universality_norms": norms}))
    assert lm.get_title().startswith("LM") and cnn.get_title().startswith("CNN")
    wsd, cos = U.SCHEDULE_COLOR["wsd"], U.SCHEDULE_COLOR["cosine"]
    assert _line(lm, wsd, 0.7).get_xdata().tolist() == [0, 10]
    assert _line(lm, wsd, 0.7).get_ydata().tolist() == [4.0, 2.0]  # train
    assert _line(lm, wsd, 1.6).get_ydata().tolist() == pytest.approx([4.1, 2.1])  # val: mean of 4.0 and 4.2
    assert _line(lm, cos, 1.6).get_ydata().tolist() == pytest.approx([4.6, 2.6])
    assert _line(cnn, cos, 0.7).get_ydata().tolist() == [5.5, 3.5]
    assert sorted(lm.get_legend_handles_labels()[1]) == ["WSD (val)", "warmup-cosine (val)"]
    dashed = [ln for ln in lm.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [7.0, 7.0]  # median decay start of the LM


def test_accuracy_draws_classifier_rows_only() -> None:
    rows = [r for r in _curve_rows("accuracy") if r["model"] == "cnn"]
    rows.append({"model": "lm", "schedule": "wsd", "split": "train", "seed": 0, "step": 0, "accuracy": None})
    (cnn,) = _visible_axes(U.plot_accuracy({"universality_curves": rows}))
    assert cnn.get_title().startswith("CNN")
    assert _line(cnn, U.SCHEDULE_COLOR["wsd"], 1.6).get_ydata().tolist() == pytest.approx([5.1, 3.1])
    with pytest.raises(ValueError, match="no accuracy values"):
        U.plot_accuracy({"universality_curves": [{**r, "accuracy": None} for r in rows]})


def test_interpolation_draws_one_line_per_seed_per_segment() -> None:
    rows = [{"model": "lm", "segment": seg, "seed": seed, "alpha": a, "loss": base + seed + (0.5 if a == 0.5 else 0.0)}
            for seg, base in (("cooldown", 2.0), ("stable", 3.0)) for seed in (0, 1) for a in (1.0, 0.5, 0.0)]
    stable, cooldown = _visible_axes(U.plot_interpolation({"universality_interpolate": rows}))
    assert stable.get_title() == "LM: 80% → 100% of the stable phase"
    assert cooldown.get_title() == "LM: cooldown start → end"
    assert [ln.get_label() for ln in stable.lines] == ["seed 0", "seed 1"]
    assert stable.lines[1].get_xdata().tolist() == [0.0, 0.5, 1.0]
    assert stable.lines[1].get_ydata().tolist() == [4.0, 4.5, 4.0]
    assert cooldown.lines[0].get_ydata().tolist() == [2.0, 2.5, 2.0]


def test_sharpness_draws_lambda_max_per_seed_by_step() -> None:
    rows = [{"model": m, "seed": seed, "step": st, "lambda_1": v * (1 + seed)}
            for m in ("lm", "cnn") for seed in (0, 1) for st, v in ((20, 3.0), (10, 5.0))]
    lm, cnn = _visible_axes(U.plot_sharpness({"universality_sharpness": rows}))
    assert lm.lines[0].get_xdata().tolist() == [10, 20]
    assert [ln.get_ydata().tolist() for ln in cnn.lines] == [[5.0, 3.0], [10.0, 6.0]]


def test_length_draws_cosine_band_and_the_sweep_mean() -> None:
    rows = [{"model": "lm", "schedule": "cosine", "source": "cosine", "seed": s, "cooldown_fraction": None,
             "val_loss": v} for s, v in ((0, 3.0), (1, 3.2))]
    rows += [{"model": "lm", "schedule": "wsd", "source": "sweep", "seed": s, "cooldown_fraction": f,
              "val_loss": v + 0.1 * s}
             for s in (0, 1) for f, v in ((0.4, 3.0), (0.2, 3.4))]
    (ax,) = _visible_axes(U.plot_length({"universality_length": rows}))
    mean = next(ln for ln in ax.lines if ln.get_label() == "warmup-cosine (mean)")
    assert list(mean.get_ydata()) == pytest.approx([3.1, 3.1])
    (span,) = ax.patches  # the cosine seeds' min..max
    assert (span.get_y(), span.get_y() + span.get_height()) == pytest.approx((3.0, 3.2))
    (sweep,) = [c for c in ax.containers if c.get_label() == "WSD sweep (from WSO)"]
    assert sweep.lines[0].get_xdata().tolist() == [0.2, 0.4]
    assert sweep.lines[0].get_ydata().tolist() == pytest.approx([3.45, 3.05])  # mean over the two seeds
    assert sweep.lines[2][0].get_segments()[0][:, 1].tolist() == pytest.approx([3.4, 3.5])  # min..max


def test_norms_draw_the_seed_mean_per_model_and_the_decay_start() -> None:
    rows = [{"model": "cnn", "seed": s, "step": st, "param_norm": p + s, "update_norm": u, "decay_start": 20}
            for s in (0, 1) for st, p, u in ((10, 5.0, 1.0), (30, 6.0, 0.1))]
    param, update = _visible_axes(U.plot_norms({"universality_norms": rows}))
    assert param.lines[0].get_xdata().tolist() == [10, 30] and param.lines[0].get_ydata().tolist() == [5.5, 6.5]
    assert update.lines[0].get_ydata().tolist() == [1.0, 0.1]
    assert list(param.lines[1].get_xdata()) == [20.0, 20.0]  # the decay start
    assert update.get_yscale() == "log" and param.get_yscale() == "linear"
