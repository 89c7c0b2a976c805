"""Rank correlations (Spearman with ties), perplexity rows, correlations with bias, hyper-parameter panels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wsdlab.analysis.hyperparams import hyperparam_row, hyperparams_summary
from wsdlab.analysis.perplexity import pearson, perplexity_row, perplexity_vs_bias, rankdata, spearman


def test_rankdata_averages_ties() -> None:
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert rankdata([1, 1, 1]).tolist() == [2.0, 2.0, 2.0]
    assert rankdata([]).tolist() == []


def test_spearman_hand_computed_with_ties() -> None:
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4): Pearson of the ranks by hand
    x, y = [1.0, 2.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    dx, dy = rx - rx.mean(), ry - ry.mean()  # (-1.5, 0, 0, 1.5), (-1.5, -0.5, 0.5, 1.5)
    expected = (dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum())  # 4.5 / sqrt(4.5 * 5)
    assert expected == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman(x, y) == pytest.approx(expected)
    # monotone but non-linear: Spearman 1, Pearson < 1; reversed: -1
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [1, 8, 27, 1000]) < 0.99
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_matches_numpy_and_handles_degenerate_input() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman([1.0], [2.0]))
    assert spearman([1, 2, float("nan"), 3], [1, 2, 5, 3]) == pytest.approx(1.0)  # NaN pairs dropped
    with pytest.raises(ValueError, match="equal length"):
        pearson([1, 2], [1, 2, 3])


def test_perplexity_row() -> None:
    losses = [2.0, 2.5, 3.0]
    row = perplexity_row("cosine", losses, 2.2)
    assert row["ppl_mean"] == pytest.approx(np.mean(np.exp(losses)))
    assert row["ppl_min"] == pytest.approx(math.exp(2.0)) and row["ppl_max"] == pytest.approx(math.exp(3.0))
    assert row["ppl_avg_model"] == pytest.approx(math.exp(2.2))
    assert row["n_runs"] == 3
    with pytest.raises(ValueError, match="cosine"):
        perplexity_row("cosine", [], 2.0)


def test_perplexity_vs_bias_per_space() -> None:
    ppl = [{"shape": s, "ppl_avg_model": p} for s, p in [("a", 10.0), ("b", 12.0), ("c", 11.0)]]
    bv = [{"shape": s, "space": "kl", "bias": b, "variance": 0.0} for s, b in [("a", 0.1), ("b", 0.3), ("c", 0.2)]]
    bv += [{"shape": s, "space": "loss", "bias": b, "variance": 0.0} for s, b in [("a", 3.0), ("b", 1.0), ("c", 2.0)]]
    rows = {r["space"]: r for r in perplexity_vs_bias(ppl, bv)}
    assert rows["kl"]["spearman"] == pytest.approx(1.0) and rows["loss"]["spearman"] == pytest.approx(-1.0)
    assert rows["kl"]["n_shapes"] == 3 and rows["kl"]["y"] == "ppl_avg_model"


def test_hyperparams_summary_aggregates_over_seeds() -> None:
    rows = [hyperparam_row("beta2_p", 2.0, seed, loss) for seed, loss in enumerate([3.0, 3.2, 3.4])]
    rows += [hyperparam_row("beta2_p", 1.0, 0, 3.5), hyperparam_row("reset_optimizer", 1, 0, 3.9)]
    assert rows[0]["ppl"] == pytest.approx(math.exp(3.0))
    summary = hyperparams_summary(rows)
    assert [(r["panel"], r["value"], r["n"]) for r in summary] == [("beta2_p", 2.0, 3), ("beta2_p", 1.0, 1),
                                                                   ("reset_optimizer", 1, 1)]
    first = summary[0]
    assert first["val_loss_mean"] == pytest.approx(3.2)
    assert (first["val_loss_min"], first["val_loss_max"]) == (3.0, 3.4)
    assert first["ppl_mean"] == pytest.approx(np.mean(np.exp([3.0, 3.2, 3.4])))


# ------------------------------------------------------------------ the wrappers on real (micro) runs


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    """A micro study: a 6-step base, cooldowns (2 shapes x 2 seeds, 4 steps) and 2 longer (6-step) references."""
    from wsdlab.data import load_data
    from wsdlab.train import RunSpec, branch_from_checkpoint, run_preset, train

    root = tmp_path_factory.mktemp("cooldown-study")
    spec = run_preset("micro").model_dump()
    spec["train"].update(steps=6, checkpoint_every=6, snapshot_every=None)
    base = train(RunSpec.model_validate(spec), root / "base")
    ckpt = base.checkpoint(6)
    shapes = {s: [train(branch_from_checkpoint(ckpt, steps=4, shape=s, seed=k), root / f"{s}-{k}") for k in (0, 1)]
              for s in ("linear", "sqrt")}
    refs = [train(branch_from_checkpoint(ckpt, steps=6, shape="sqrt", seed=k), root / f"ref-{k}") for k in (0, 1)]
    return shapes, refs, load_data(base.spec.data, progress=False)


@pytest.mark.slow
def test_wrappers_on_real_runs_agree_with_evaluate(study) -> None:
    from wsdlab.analysis.averaging import average_models, averaging_table
    from wsdlab.analysis.bias_variance import bias_variance_table
    from wsdlab.analysis.hyperparams import hyperparams_table
    from wsdlab.analysis.perplexity import perplexity_table
    from wsdlab.train import evaluate

    shapes, refs, data = study
    ev = lambda m: evaluate(m, data, 2, 4, "cpu")  # noqa: E731
    ppl = {r["shape"]: r for r in perplexity_table(shapes, data, num_batches=2, batch_size=4)}
    bv = bias_variance_table(shapes, refs, data, num_batches=2, batch_size=4)

    def flat(run) -> torch.Tensor:  # every parameter once, as one float64 vector
        return torch.cat([p.detach().double().reshape(-1) for p in run.load_model().parameters()])

    for shape, runs in shapes.items():
        losses = [ev(r.load_model()) for r in runs]
        avg_loss = ev(average_models([r.load_model() for r in runs]))
        assert ppl[shape]["ppl_mean"] == pytest.approx(np.mean(np.exp(losses)), rel=1e-6)
        assert ppl[shape]["ppl_avg_model"] == pytest.approx(math.exp(avg_loss), rel=1e-6)
        got = {r["space"]: r for r in bv if r["shape"] == shape}
        assert got["avg_loss_var_loss"]["bias"] == pytest.approx(avg_loss, rel=1e-5)
        assert got["loss"]["bias"] == pytest.approx(np.mean(losses), rel=1e-5)  # eq. 4: the mean loss itself
        # eq. 3 by hand: || mean of the references' weights - mean of the runs' ||, and the runs' spread
        s_w, r_w = torch.stack([flat(r) for r in runs]), torch.stack([flat(r) for r in refs])
        assert got["weight"]["bias"] == pytest.approx(float((r_w.mean(0) - s_w.mean(0)).norm()), rel=1e-9)
        variance = float(((s_w - s_w.mean(0)) ** 2).sum() / (len(runs) - 1))
        assert got["weight"]["variance"] == pytest.approx(variance, rel=1e-9)
    (row,) = averaging_table({"sqrt": (shapes["sqrt"], refs[0])}, data, num_batches=2, batch_size=4)
    assert row["n_models"] == 2 and row["val_loss_longer_run"] == pytest.approx(ev(refs[0].load_model()), rel=1e-6)
    assert row["val_loss_average_model"] == pytest.approx(math.log(ppl["sqrt"]["ppl_avg_model"]), rel=1e-6)
    hp = hyperparams_table([("betas_p", 1.0, run) for run in shapes["linear"]], data, num_batches=2, batch_size=4)
    assert [r["seed"] for r in hp] == [0, 1]
    assert hp[1]["val_loss"] == pytest.approx(ev(shapes["linear"][1].load_model()), rel=1e-6)


@pytest.mark.slow
def test_recency_and_alignment_on_real_runs(study) -> None:
    from wsdlab.analysis.alignment import alignment_table
    from wsdlab.analysis.recency import recency_curves_table, recency_table
    from wsdlab.models import batch_loss
    from wsdlab.train import RunDir, load_checkpoint_model

    shapes, _, data = study
    curves = recency_curves_table(shapes, data, window=2)
    run = shapes["sqrt"][1]
    mine = [c for c in curves if c["shape"] == "sqrt" and c["seed"] == 1]
    assert [c["step"] for c in mine] == list(range(1, 11))  # the base's 6 steps, then the branch's own 4
    assert [c["phase"] for c in mine] == ["stable"] * 6 + ["cooldown"] * 4
    base = RunDir(Path(run.spec.init_from).parent.parent)
    batch = data.train_batch(run.batch_indices()[2])  # the third cooldown batch, as trained on
    stable = data.train_batch(base.batch_indices()[1])  # the base's second batch
    pre, post = load_checkpoint_model(run.spec.init_from), run.load_model()
    with torch.no_grad():
        expected = float(batch_loss(post, batch).exp() - batch_loss(pre, batch).exp())  # eq. 2, perplexities
        expected_stable = float(batch_loss(post, stable).exp() - batch_loss(pre, stable).exp())
    assert mine[8]["ppl_diff"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert mine[1]["ppl_diff"] == pytest.approx(expected_stable, rel=1e-4, abs=1e-4)
    assert len(recency_table(curves)) == 4
    rows = alignment_table(shapes, window=2)
    norm = [r for r in rows if r["shape"] == "linear" and r["metric"] == "grad_norm"]
    assert [r["step"] for r in norm] == [7, 8, 9, 10] and all(r["n"] == 2 for r in norm)
