"""WSO figures (wsdlab.report.figures_wso): each draws the numbers of a small hand-made table."""

from __future__ import annotations

import math

import pytest
from matplotlib.figure import Figure

from wsdlab.report import figures_wso as W
from wsdlab.report.style import group_color


def _visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def test_delta_draws_one_bar_per_model_with_its_difference() -> None:
    rows = [{"stage": "pretrain", "scheduler": "wso", "alpha_pre": 0.0, "alpha_mid": None, "d_pt_val_loss": -0.02,
             "d_pt_task_pts": 1.5, "d_sft_task_pts": math.nan, "d_sft_val_loss": 0.01},
            {"stage": "mid", "scheduler": "cosine", "alpha_pre": 0.1, "alpha_mid": 0.5, "d_pt_val_loss": 0.0,
             "d_pt_task_pts": -0.5, "d_sft_task_pts": 2.0, "d_sft_val_loss": None}]
    axes = _visible_axes(W.plot_delta({"wso_delta": rows}))
    assert [ax.get_title() for ax in axes] == [t for _, t in W.DELTA_COLUMNS]
    widths = [[p.get_width() for p in ax.patches] for ax in axes]
    assert widths == [[-0.02, 0.0], [1.5, -0.5], [0.0, 2.0], [0.01, 0.0]]  # a missing value is drawn as 0
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["WSO", "cosine α=0.1, α_mid=0.5 (mid)"]
    assert axes[0].patches[1].get_facecolor()[:3] == pytest.approx(
        tuple(int(group_color("cosine")[i:i + 2], 16) / 255 for i in (1, 3, 5)))


def test_sft_sweep_draws_loss_by_lr_per_model_and_seed_on_a_log_axis() -> None:
    rows = [{"base": base, "scheduler": "wsd", "alpha_pre": 0.0, "alpha_mid": None, "seed": seed, "lr": lr,
             "sft_val_loss": loss + seed + (0.5 if base == "mid" else 0.0)}
            for base in ("pretrain", "mid") for seed in (0, 1) for lr, loss in ((1e-4, 2.0), (1e-5, 2.5), (1e-3, 2.2))]
    (ax,) = _visible_axes(W.plot_sft_sweep({"wso_sft_sweep": rows}))
    assert ax.get_xscale() == "log"
    assert [list(ln.get_xdata()) for ln in ax.lines] == [[1e-5, 1e-4, 1e-3]] * 4
    assert [list(ln.get_ydata()) for ln in ax.lines] == [[2.5, 2.0, 2.2], [3.5, 3.0, 3.2],  # pretrained, seeds 0, 1
                                                        [3.0, 2.5, 2.7], [4.0, 3.5, 3.7]]  # mid-trained
    assert [ln.get_linestyle() for ln in ax.lines] == ["-", "-", ":", ":"]
    assert ax.get_legend_handles_labels()[1] == ["wsd α=0", "wsd α=0 (mid)"]  # one label per model


def test_sharpness_draws_the_trace_with_its_standard_error_per_dataset() -> None:
    rows = [{"scheduler": "wso", "alpha_pre": 0.0, "step": st, "dataset": ds, "trace": tr, "stderr": se}
            for ds, table in (("sft", ((200, 9.0, 1.0), (100, 7.0, 0.5))), ("pt", ((100, 5.0, 0.2), (200, 4.0, 0.1))))
            for st, tr, se in table]
    pt, sft = _visible_axes(W.plot_sharpness({"wso_sharpness": rows}))
    assert pt.get_title() == "Sharpness on PT validation data" and sft.get_title() == "Sharpness on SFT validation data"
    (bars,) = sft.containers
    assert list(bars.lines[0].get_xdata()) == [100.0, 200.0] and list(bars.lines[0].get_ydata()) == [7.0, 9.0]
    assert [seg[:, 1].tolist() for seg in bars.lines[2][0].get_segments()] == [[6.5, 7.5], [8.0, 10.0]]
    assert list(pt.containers[0].lines[0].get_ydata()) == [5.0, 4.0]
    assert pt.get_legend_handles_labels()[1] == ["WSO"]


def test_sharpness_sft_scatters_trace_against_score_with_the_correlation() -> None:
    rows = [{"dataset": "pt", "trace": tr, "sft_score": sc, "scheduler": sch, "alpha_pre": a}
            for tr, sc, sch, a in ((3.0, -2.0, "wsd", 0.0), (5.0, -2.5, "cosine", 0.1), (2.0, -1.8, "wso", 1.0))]
    corr = [{"dataset": "pt", "score": "sft_score", "r": -0.7091, "ci_low": -0.95, "ci_high": 0.1, "n": 3}]
    (ax,) = _visible_axes(W.plot_sharpness_sft({"wso_sharpness_sft": rows, "wso_correlation": corr}))
    assert [c.get_offsets()[0].tolist() for c in ax.collections] == [[3.0, -2.0], [5.0, -2.5], [2.0, -1.8]]
    assert [c.get_label() for c in ax.collections] == ["wsd α=0", "cosine α=0.1", "WSO"]
    assert ax.get_title() == "PT sharpness vs SFT score\nr = -0.709 [-0.95, 0.10], n = 3"
