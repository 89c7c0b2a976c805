"""The report reads what the analyses write: tables built by the analysis modules' own row builders
(pure functions, no model needed), written and read back as CSV, draw their figures without a skip.
A renamed column on either side fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wsdlab.analysis import alignment, averaging, bias_variance, hyperparams, perplexity, recency
from wsdlab.analysis.geometry_config import SharpnessConfig
from wsdlab.analysis.geometry.sharpness import sharpness_at
from wsdlab.analysis.landscape import cooldown_plane, interpolation
from wsdlab.analysis.tables import write_table
from wsdlab.analysis.trajectory import trajectory_table
from wsdlab.report import build_report

SHAPES = {"linear": 0.02, "sqrt": 0.0, "lowered_linear-0.7": 0.01}


@pytest.fixture(scope="module")
def analysis_tables() -> dict[str, list[dict]]:
    """Cooldown-study tables from the analysis modules' row builders, on made-up losses and series."""
    rng = np.random.default_rng(0)
    t: dict[str, list[dict]] = {"bias_variance": [], "perplexity": [], "recency_curves": [], "alignment": []}
    for shape, d in SHAPES.items():
        t["bias_variance"] += bias_variance.bias_variance_rows(
            shape, kl=(0.1 + d, 0.05 - d), weight=(2.0 + d, 1.0), loss=(0.02 + d, 0.001), avg_model_loss=2.7 + d,
            n_runs=2, reference_val_loss=2.6)
        t["perplexity"].append(perplexity.perplexity_row(shape, [2.7 + d, 2.72 + d], 2.69 + d))
        for seed in (0, 1):
            pre = 30.0 + rng.random(8)
            post = pre - 3.0 * np.exp(-np.arange(8)[::-1] / 3) + 0.1 * rng.standard_normal(8)
            t["recency_curves"] += recency.recency_curve_rows(
                shape, seed, list(range(0, 16, 2)), list(range(1, 17, 2)), [j >= 5 for j in range(8)], pre, post,
                window=6, stride=2)
        series = [(np.arange(30, 40), rng.random(10)) for _ in range(2)]
        t["alignment"] += alignment.alignment_rows(shape, "grad_momentum_cos", series, window=3)
        t["alignment"] += alignment.alignment_rows(shape, "grad_momentum_cos_global", series, window=3)
        t["alignment"] += alignment.alignment_rows(shape, "grad_norm", [(s, v + 1) for s, v in series], window=3)
    t["perplexity_vs_bias"] = perplexity.perplexity_vs_bias(t["perplexity"], t["bias_variance"])
    t["recency"] = recency.recency_table(t["recency_curves"])
    t["recency_correlations"] = recency.recency_correlations(t["recency"], t["bias_variance"])
    t["averaging"] = [averaging.averaging_row("sqrt", [2.75, 2.76], 2.71, 2.69)]
    t["hyperparams"] = [hyperparams.hyperparam_row(panel, value, 0, 2.7 + 0.01 * value)
                        for panel in ("beta2_p", "batch_x") for value in (1, 2)]
    return t


def test_analysis_tables_draw_every_figure_they_feed(analysis_tables, tmp_path: Path) -> None:
    for name, rows in analysis_tables.items():
        write_table(rows, tmp_path / "tables" / f"{name}.csv")
    html = build_report(tmp_path).read_text()
    expected = ["bias_variance", "perplexity", "perplexity_vs_bias", "averaging", "recency_curves", "recency_shift",
                "recency_vs_bias_variance", "hyperparams", "alignment"]
    drawn = sorted(p.stem for p in (tmp_path / "figures").glob("*.png"))
    assert drawn == sorted(expected)
    # every figure of the units that wrote tables is drawn, and the units that wrote none (val_curves,
    # the geometry, universality and WSO units) are not listed as "Not drawn"
    assert 'id="skipped"' not in html


def _geometry_tables() -> dict[str, list[dict]]:
    """Geometry tables from the analysis functions on a tiny linear model and a made-up trajectory; the
    leading columns (run, point, from_step ...) are the ones `analysis.geometry` adds."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    batches = [(torch.randn(16, 3), torch.randn(16, 2))]

    def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return ((m(b[0]) - b[1]) ** 2).mean()

    its = {s: {n: p.detach() + 0.05 * s * torch.randn_like(p) for n, p in model.named_parameters()}
           for s in range(0, 21, 2)}
    run = "wsd-s0-0123456789"
    traj = [{"run": run, **r} for r in trajectory_table(model, loss_fn, batches, its, decay_start=12, fraction=0.5)]
    head = {"run": run, "from_run": run, "from_step": 12, "to_run": run, "to_step": 20, "dataset": "val"}
    interp = [{**head, **r} for r in interpolation(model, loss_fn, batches, its[12], its[20], [-0.5, 0, 0.5, 1, 1.5])]
    land = [{"run": run, "point": p, "pre_step": 12, "final_step": 20, "after_step": p + 2, "dataset": "val", **r}
            for p in (12, 16)
            for r in cooldown_plane(model, loss_fn, batches, pre=its[12], final=its[20], point=its[p], after=its[p + 2],
                                    a_values=[-0.5, 0, 0.5, 1], b_values=[-1, 0, 1])]
    sharp = []
    for step in (0, 10, 20):
        for name, p in model.named_parameters():
            p.data.copy_(its[step][name])
        sharp.append({"run": run, "step": step, "dataset": "val",
                      **sharpness_at(model, batches, SharpnessConfig(method="exact"), loss_fn=loss_fn)})
    return {"trajectory": traj, "interpolate": interp, "landscape": land, "sharpness": sharp}


def test_geometry_tables_draw_their_figures(tmp_path: Path) -> None:
    tables = _geometry_tables()
    assert {r["kind"] for r in tables["trajectory"]} == {"pca", "hv", "path"}
    for name, rows in tables.items():
        write_table(rows, tmp_path / "tables" / f"{name}.csv")
    build_report(tmp_path)
    drawn = sorted(p.stem for p in (tmp_path / "figures").glob("*.png"))
    assert drawn == sorted(["landscape", "interpolation", "sharpness", "hv_norm", "pc1_share", "quasi_convexity",
                            "param_norm"])
