"""`wsdlab study run --quick` end to end (real training, tiny), then status, re-run (nothing redone) and report."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsdlab.cli import app

runner = CliRunner()

TABLES = {
    "runs": ["key", "stage", "state"],
    "schedules": ["shape", "step", "lr_factor"],
    "val_curves": ["shape", "seed", "step", "val_loss"],
    "bias_variance": ["shape", "space", "bias", "variance", "n_runs", "bias_se", "variance_se", "reference_val_loss"],
    "perplexity": ["shape", "ppl_mean", "ppl_avg_model", "n_runs"],
    "perplexity_vs_bias": ["space", "spearman"],
    "averaging": ["shape", "val_loss_average_model", "val_loss_longer_run"],
    "recency_curves": ["shape", "seed", "batch_position", "step", "phase", "stride", "ppl_pre", "ppl_post", "ppl_diff"],
    "recency": ["shape", "seed", "shift", "deviation", "n_batches", "n_cooldown_batches", "stride"],
    "hyperparams": ["shape", "panel", "value", "seed", "val_loss", "ppl"],
    "alignment": ["shape", "step", "metric", "mean"],
    # geometry, on the first seed's cooldown of each shape (and the base for sharpness)
    "sharpness": ["shape", "run", "step", "trace"],
    "interpolate": ["shape", "run", "to_run", "alpha", "loss"],
    "landscape": ["shape", "run", "point", "a", "b", "loss"],
    "trajectory": ["shape", "run", "kind"],
    "probes": ["shape", "run", "step", "layer", "perplexity"],
}


def header(path: Path) -> list[str]:
    with path.open() as f:
        return next(csv.reader(f))


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def mtimes(root: Path) -> dict[Path, int]:
    return {p: os.stat(p).st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quick") / "study"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the quick study's models are too small to gain from threads (and a busy CI box loses)
    try:
        result = runner.invoke(app, ["study", "run", "--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_quick_study_writes_tables_and_report(quick_study: Path) -> None:
    tables = quick_study / "tables"
    for name, columns in TABLES.items():
        path = tables / f"{name}.csv"
        assert path.is_file(), f"missing {name}.csv"
        assert set(columns) <= set(header(path)), (name, header(path))
    assert header(tables / "bias_variance.csv") == ["shape", "space", "bias", "variance", "n_runs", "bias_se",
                                                           "variance_se", "reference_val_loss"]
    bv = rows(tables / "bias_variance.csv")
    assert {r["shape"] for r in bv} == {"linear", "sqrt", "lowered_linear-0.7"}
    assert {r["space"] for r in bv} >= {"kl", "weight", "loss"}
    assert all(r["n_runs"] == "2" for r in bv)
    index = rows(tables / "runs.csv")
    assert index and all(r["state"] == "complete" for r in index)
    hp = rows(tables / "hyperparams.csv")
    assert {r["panel"] for r in hp} == {"betas_p", "beta2_p", "batch_x", "batch_x_half_life", "weight_decay_off",
                                        "reset_optimizer"}
    assert {r["shape"] for r in hp} == {"sqrt", "linear"}  # the quick study's panels run for two shapes
    # every shape is averaged and compared with the one longer run
    avg = rows(tables / "averaging.csv")
    assert {r["shape"] for r in avg} == {"linear", "sqrt", "lowered_linear-0.7"}
    assert len({r["val_loss_longer_run"] for r in avg}) == 1 and all(r["n_models"] == "2" for r in avg)
    long = next(r for r in index if r["stage"] == "long")
    assert long["steps"] == str(30 + 2 * 10)
    assert {r["shape"] for r in rows(tables / "sharpness.csv")} == {"stable", "linear", "sqrt", "lowered_linear-0.7"}
    assert {r["kind"] for r in rows(tables / "trajectory.csv")} >= {"pca", "path"}
    report = quick_study / "report.html"
    assert report.is_file() and "<html" in report.read_text()[:500].lower()
    assert any((quick_study / "figures").glob("*.png"))
    runs = [p for p in (quick_study / "runs").iterdir() if p.is_dir()]
    assert all((p / "COMPLETE").is_file() for p in runs)
    assert len(runs) == len({r["dir"] for r in index})


def metrics_of(study: Path, folder: str) -> list[dict]:
    """A run's metrics.jsonl read directly (the slow path the tables are checked against)."""
    return [json.loads(line) for line in (study / "runs" / folder / "metrics.jsonl").read_text().splitlines()]


def final_val_loss(study: Path, folder: str) -> float:
    return [r for r in metrics_of(study, folder) if r.get("split") == "val"][-1]["val_loss"]


# default-quick.yaml by hand: base 30 steps of 8 x 32 tokens; cooldowns of 10 steps; the longer run and the
# reference decay over 20 steps; batch_x 2 reads 16 x 32 tokens for 10 // 2 steps
QUICK_TOKENS = {"base": 30 * 256, "cd-sqrt-s0": 40 * 256, "ref-sqrt-s1": 50 * 256, "avg-long-sqrt-all2": 50 * 256,
                "hp-linear-batch2-s0": 30 * 256 + 5 * 512, "hp-sqrt-batch2-hl-s1": 30 * 256 + 5 * 512}
# Llama, vocab 512, d 32, 2 layers, 2 query heads and 1 kv head of 16, SwiGLU 64, untied embeddings:
# embedding + output 2 x 512 x 32; per layer q, o 32 x 32, k, v 32 x 16, MLP 3 x 32 x 64, 2 norms; final norm
QUICK_PARAMS = 2 * 512 * 32 + 2 * (2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32) + 32


@pytest.mark.slow
def test_quick_study_tables_equal_the_runs_logs(quick_study: Path) -> None:
    """runs.csv scale columns by hand from the study file; val curves, perplexity and averaging recomputed
    from each run's metrics.jsonl; the schedule table by the WSD formula."""
    tables = quick_study / "tables"
    index = {r["key"]: r for r in rows(tables / "runs.csv")}
    assert QUICK_PARAMS == 51360
    assert all(int(r["params"]) == QUICK_PARAMS for r in index.values())
    for key, tokens in QUICK_TOKENS.items():
        assert int(index[key]["tokens"]) == tokens, key
    for key, r in index.items():  # every run: the tokens the loop counted by its last step
        logged = [m["tokens"] for m in metrics_of(quick_study, r["dir"]) if "tokens" in m]
        assert int(r["tokens"]) == logged[-1], key
    assert {k: int(index[k]["steps"]) for k in QUICK_TOKENS} == {
        "base": 30, "cd-sqrt-s0": 40, "ref-sqrt-s1": 50, "avg-long-sqrt-all2": 50, "hp-linear-batch2-s0": 35,
        "hp-sqrt-batch2-hl-s1": 35}

    base = {m["step"]: m["val_loss"] for m in metrics_of(quick_study, index["base"]["dir"]) if m.get("split") == "val"}
    curves = rows(tables / "val_curves.csv")
    for shape, seed in (("linear", 0), ("lowered_linear-0.7", 1)):
        run = {m["step"]: m["val_loss"] for m in metrics_of(quick_study, index[f"cd-{shape}-s{seed}"]["dir"])
               if m.get("split") == "val"}
        drawn = {int(r["step"]): float(r["val_loss"]) for r in curves if (r["shape"], r["seed"]) == (shape, str(seed))}
        assert drawn == {**base, **run} and sorted(drawn) == [0, 10, 20, 30, 35, 40]

    for r in rows(tables / "perplexity.csv"):  # over the two seeds' final validation losses
        ppl = [math.exp(final_val_loss(quick_study, index[f"cd-{r['shape']}-s{s}"]["dir"])) for s in (0, 1)]
        assert float(r["ppl_mean"]) == pytest.approx(sum(ppl) / 2, rel=1e-12)
        assert (float(r["ppl_min"]), float(r["ppl_max"])) == pytest.approx((min(ppl), max(ppl)), rel=1e-12)
    longer = final_val_loss(quick_study, index["avg-long-sqrt-all2"]["dir"])
    for r in rows(tables / "averaging.csv"):
        members = [final_val_loss(quick_study, index[f"avg-{r['shape']}-p{p}of2"]["dir"]) for p in (0, 1)]
        assert float(r["val_loss_members_mean"]) == pytest.approx(sum(members) / 2, rel=1e-12)
        assert float(r["val_loss_longer_run"]) == pytest.approx(longer, rel=1e-12)

    linear = {int(r["step"]): float(r["lr_factor"]) for r in rows(tables / "schedules.csv") if r["shape"] == "linear"}
    by_hand = {t: t / 5 if t < 5 else 1.0 if t <= 30 else 1 - (t - 30) / 10 for t in range(41)}
    assert linear == pytest.approx(by_hand, abs=1e-12)


@pytest.mark.slow
def test_status_rerun_and_report(quick_study: Path) -> None:
    result = runner.invoke(app, ["study", "status", str(quick_study)])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "0 left" in result.output

    before = mtimes(quick_study / "runs")
    tables_before = mtimes(quick_study / "tables")
    result = runner.invoke(app, ["study", "run", "--quick", "--out", str(quick_study)])
    assert result.exit_code == 0, result.output
    n = len(rows(quick_study / "tables" / "runs.csv"))
    assert f"{n} done ({n} already complete)" in result.output
    assert mtimes(quick_study / "runs") == before  # no run retrained
    csvs = {p: t for p, t in tables_before.items() if p.suffix == ".csv" and p.name != "runs.csv"}
    assert {p: os.stat(p).st_mtime_ns for p in csvs} == csvs  # no analysis recomputed

    bv = quick_study / "tables" / "bias_variance.csv"
    old = os.stat(bv).st_mtime_ns
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, ["study", "report", str(quick_study)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert os.stat(bv).st_mtime_ns != old and mtimes(quick_study / "runs") == before


def test_cli_errors(tmp_path: Path) -> None:
    cases = [
        (["study", "run", str(tmp_path / "nope.yaml")], "study file not found"),
        (["study", "run", str(tmp_path / "x.yaml"), "--quick"], "no quick variant"),
        (["study", "run", "--quick", "--executor", "cloud", "--out", str(tmp_path / "s")], "--executor"),
        (["study", "status", str(tmp_path)], "not a study folder"),
        (["study", "report", str(tmp_path)], "not a study folder"),
    ]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        cases.append((["study", "run", "--quick", "--tensorboard", "--out", str(tmp_path / "t")], "tensorboard is not installed"))
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nbase: {preset: tiny}\ncooldown: {steps: 0, shapes: [linear], seeds: [0]}\n")
    result = runner.invoke(app, ["study", "run", str(bad)])
    assert result.exit_code == 2 and "cooldown.steps" in result.output
