"""Helpers of the report: table checks, grouping, per-step statistics, labels and colours."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsdlab.report.aggregate import (
    curve_stats,
    divergence_step,
    floats,
    group_by,
    last_per_group,
    mean_per_group,
    perplexity,
    pivot,
    require,
    sort_values,
)
from wsdlab.report.style import color_map, group_color, group_label, order_groups, space_label


def test_require_names_missing_table_and_column() -> None:
    tables = {"bias_variance": [{"shape": "sqrt", "space": "kl", "bias": 1.0}]}
    with pytest.raises(ValueError, match="'perplexity.csv' is missing"):
        require(tables, "perplexity", ["shape"])
    with pytest.raises(ValueError, match="lacks column\\(s\\) variance"):
        require(tables, "bias_variance", ["shape", "variance"])
    with pytest.raises(ValueError, match="has no rows"):
        require({"x": []}, "x", [])
    assert require(tables, "bias_variance", ["bias"]) is tables["bias_variance"]


def test_group_by_puts_known_shapes_in_paper_order() -> None:
    rows = [{"shape": s, "v": i} for i, s in enumerate(["custom", "sqrt", "linear", "sqrt"])]
    groups = group_by(rows, "shape")
    assert list(groups) == ["linear", "sqrt", "custom"]
    assert [r["v"] for r in groups["sqrt"]] == [1, 3]
    two = group_by(rows, "shape", "v")
    assert ("sqrt", 3) in two and len(two) == 4


def test_curve_stats_over_seeds_matches_hand_computation() -> None:
    rows = [{"step": 2, "y": 1.0}, {"step": 1, "y": 4.0}, {"step": 2, "y": 3.0}, {"step": 1, "y": None},
            {"step": 1, "y": 2.0}]
    x, mean, lo, hi = curve_stats(rows, "step", "y")
    assert x.tolist() == [1.0, 2.0]
    assert mean.tolist() == [3.0, 2.0]  # (4+2)/2, (1+3)/2; the None cell is ignored
    assert lo.tolist() == [2.0, 1.0] and hi.tolist() == [4.0, 3.0]


def test_divergence_step_finds_the_end_of_the_shared_history() -> None:
    shared = [{"step": k, "y": v} for k, v in ((0, 5.0), (10, 4.0), (20, 3.0))]
    rows = shared + [{"step": k, "y": v} for k, v in ((0, 5.0), (10, 4.0), (20, 2.5))]
    assert divergence_step(rows, "step", "y") == 10.0
    assert divergence_step(shared + shared, "step", "y") is None  # never differ: nothing to zoom on
    assert divergence_step([{"step": 0, "y": 1.0}, {"step": 0, "y": 2.0}], "step", "y") is None
    assert divergence_step(shared, "step", "y") is None  # one curve: no shared history to find


def test_floats_turns_text_and_blanks_into_nan() -> None:
    out = floats([{"a": 1}, {"a": "x"}, {"a": None}, {}], "a")
    assert out[0] == 1.0 and np.isnan(out[1:]).all()


def test_perplexity_is_exp_of_loss() -> None:
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)


def test_last_and_mean_per_group() -> None:
    rows = [{"shape": "a", "step": 1, "v": 1.0}, {"shape": "a", "step": 5, "v": 2.0},
            {"shape": "a", "step": 5, "v": 4.0},
            {"shape": "b", "step": 3, "v": 7.0}]
    last = last_per_group(rows, ["shape"], "step", ["v"])
    assert last == [{"shape": "a", "step": 5, "n": 2, "v": 3.0}, {"shape": "b", "step": 3, "n": 1, "v": 7.0}]
    mean = mean_per_group(rows, ["shape"], ["v"])
    assert mean[0] == {"shape": "a", "n": 3, "v": pytest.approx(7.0 / 3)}


def test_pivot_makes_one_row_per_index() -> None:
    rows = [{"shape": "sqrt", "space": "kl", "bias": 1}, {"shape": "sqrt", "space": "loss", "bias": 2},
            {"shape": "linear", "space": "kl", "bias": 3}]
    wide = pivot(rows, "shape", "space", ["bias"])
    assert wide == [{"shape": "linear", "kl bias": 3}, {"shape": "sqrt", "kl bias": 1, "loss bias": 2}]


def test_sort_values_numeric_or_first_seen() -> None:
    assert sort_values([2.0, 0.5, 2.0, 1]) == [0.5, 1, 2.0]
    assert sort_values(["on", "off", "on"]) == ["on", "off"]


def test_labels_and_colours() -> None:
    assert group_label("sqrt") == "1-sqrt"
    assert group_label("lowered_linear-0.7") == "lowered linear (p=0.7)"
    assert group_label("expr-1-x**2") == "f(x) = 1-x**2"
    assert space_label("kl") == "KL"
    assert order_groups(["zzz", "lowered_linear-0.5", "cosine"]) == ["cosine", "lowered_linear-0.5", "zzz"]
    assert group_color("sqrt") == group_color("sqrt") != group_color("linear")
    colors = color_map(["run-b", "run-a", "sqrt"])
    assert colors["sqrt"] == group_color("sqrt")
    assert len(set(colors.values())) == 3
    assert color_map(["run-a", "run-b"]) == color_map(["run-b", "run-a"])  # same set, same colours
