"""Claims: statistics against hand-computed values, each verdict (holds, contradicted, inconclusive by
interval, inconclusive by gate) on hand-made tables, the catalogue's quotes against the papers' text."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from wsdlab.analysis.claims import CLAIMS, COLUMNS, evaluate_claims, summary_line, write_claims
from wsdlab.analysis.claims import extract as X
from wsdlab.analysis.claims.evaluate import evaluate_claim
from wsdlab.analysis.claims.model import Correlation, Difference, Ordering, PerUnit
from wsdlab.analysis.claims.stats import (Interval, difference_interval, fisher_interval, mean_interval, spearman,
                                          t975, verdict)
from wsdlab.analysis.tables import write_table

from claims_tables import val_curves

PAPERS_DIR = Path(__file__).resolve().parents[2] / "shared" / "papers"
CLAIM = {c.id: c for c in CLAIMS}


# ------------------------------------------------------------------------------------------ statistics


def test_t_quantiles_from_tables():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.021, abs=1e-3)  # printed tables: t_{0.975, 40} = 2.021
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    assert t975(4.9) == 2.776  # rounded down: conservative


def test_mean_interval_by_hand():
    iv = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t_{0.975,2} = 4.303: 2 -+ 4.303 / sqrt(3)
    assert (iv.value, iv.n) == (2.0, 3)
    assert iv.low == pytest.approx(2 - 2.48434, abs=1e-5) and iv.high == pytest.approx(2 + 2.48434, abs=1e-5)
    assert mean_interval([1.0]) is None


def test_paired_welch_and_sibling_differences_by_hand():
    paired, how = difference_interval({0: 2.0, 1: 2.1, 2: 1.9}, {0: 1.0, 1: 1.0, 2: 1.0})
    assert "paired over 3" in how  # differences 1.0, 1.1, 0.9: mean 1, sd 0.1
    assert paired.low == pytest.approx(1 - 0.248434, abs=1e-5) and paired.high == pytest.approx(1 + 0.248434, abs=1e-5)
    welch, how = difference_interval({0: 1.0, 1: 2.0, 2: 3.0}, {3: 4.0, 4: 5.0, 5: 6.0, 6: 7.0})
    # diff -3.5, se^2 = 1/3 + (5/3)/4 = 0.75, Welch df = 0.5625 / (1/18 + 0.173611/3) = 4.96 -> 4 (t 2.776)
    assert "Welch" in how and welch.value == -3.5
    assert welch.low == pytest.approx(-3.5 - 2.776 * math.sqrt(0.75), abs=1e-9)
    single, how = difference_interval({0: 1.0}, {0: 0.5}, spread=0.1)  # 0.5 -+ 1.96 * 0.1 * sqrt(2)
    assert single.n == 1 and single.low == pytest.approx(0.5 - 0.277186, abs=1e-5)
    none, how = difference_interval({0: 1.0}, {0: 0.5})
    assert math.isnan(none.low) and how == "one run a side"


def test_fisher_interval_and_spearman_by_hand():
    iv = fisher_interval(0.5, 7)  # atanh 0.5 = 0.549306, se = 1/2: tanh(0.549306 -+ 0.979982)
    assert iv.low == pytest.approx(-0.40590, abs=1e-4) and iv.high == pytest.approx(0.91039, abs=1e-4)
    assert fisher_interval(0.5, 3) is None
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(0.948683, abs=1e-6)  # ranks 1, 2.5, 2.5, 4


def test_verdict_sides():
    assert verdict(Interval(1, 0.5, 1.5, 3), ">")[0] == "holds"
    assert verdict(Interval(-1, -1.5, -0.5, 3), ">")[0] == "contradicted"
    v, why = verdict(Interval(0.1, -0.5, 0.7, 3), ">")
    assert v == "inconclusive" and "includes 0" in why
    assert verdict(Interval(0.0, -0.01, 0.01, 3), "~", margin=0.02)[0] == "holds"
    assert verdict(Interval(0.1, 0.05, 0.15, 3), "~", margin=0.02)[0] == "contradicted"
    assert verdict(None, "<")[0] == "inconclusive"


# ---------------------------------------------------------------------------------- hand-made tables


def test_ordering_each_verdict():
    claim = CLAIM["000-best-shapes"]
    good = {"sqrt": [4.80, 4.81, 4.79], "lowered_linear-0.7": [4.80, 4.80, 4.81], "linear": [4.90, 4.92, 4.91],
            "square": [4.95, 4.94, 4.96]}
    out = evaluate_claim(claim, {"val_curves": val_curves(good)})
    assert out.verdict == "holds" and out.n == 3 and "all 4 pairs hold" in out.statistic
    # the deciding pair is the least clear one: lowered_linear-0.7 vs linear, paired perplexity differences
    diffs = [math.exp(a) - math.exp(b) for a, b in zip(good["lowered_linear-0.7"], good["linear"])]
    assert out.value == pytest.approx(sum(diffs) / 3)
    bad = {**good, "linear": [4.70, 4.71, 4.69]}
    out = evaluate_claim(claim, {"val_curves": val_curves(bad)})
    assert out.verdict == "contradicted" and "linear" in out.statistic
    noisy = {**good, "linear": [4.70, 4.95, 4.85]}
    out = evaluate_claim(claim, {"val_curves": val_curves(noisy)})
    assert out.verdict == "inconclusive" and "includes 0" in out.reason


def test_single_seed_panel_uses_the_grid_seed_spread():
    claim = CLAIM["000-beta2"]
    grid = val_curves({"sqrt": [4.80, 4.82, 4.81], "linear": [4.90, 4.91, 4.92]})  # pooled sd = 0.01
    panel = [{"shape": "sqrt", "panel": "beta2_p", "value": v, "seed": 0, "val_loss": loss}
             for v, loss in ((0.5, 4.70), (1.0, 4.80), (2.0, 4.85))]
    out = evaluate_claim(claim, {"val_curves": grid, "hyperparams": panel})
    assert out.verdict == "holds" and out.n == 1
    assert out.value == pytest.approx(-0.10) and out.high == pytest.approx(-0.10 + 1.959964 * 0.01 * math.sqrt(2))
    small = [dict(r, val_loss=4.795) if r["value"] == 0.5 else r for r in panel]  # -0.005 < 0.028 of noise
    assert evaluate_claim(claim, {"val_curves": grid, "hyperparams": small}).verdict == "inconclusive"
    alone = evaluate_claim(claim, {"hyperparams": panel, "val_curves": val_curves({"sqrt": [4.8]})})
    assert alone.verdict == "inconclusive" and "undecidable by design" in alone.reason


def bias_variance(points: dict[str, tuple[float, float]], reference: float | None, losses: dict[str, float]) -> list[dict]:
    rows = []
    for shape, (bias, var) in points.items():
        rows.append({"shape": shape, "space": "kl", "bias": bias, "variance": var, "n_runs": 3,
                     **({} if reference is None else {"reference_val_loss": reference})})
        rows.append({"shape": shape, "space": "loss", "bias": losses[shape], "variance": 1e-4, "n_runs": 3,
                     **({} if reference is None else {"reference_val_loss": reference})})
    return rows


TRADEOFF = {"a": (1.0, 6.0), "b": (2.0, 5.1), "c": (3.0, 3.9), "d": (4.0, 3.0), "e": (5.0, 2.1), "f": (6.0, 0.9)}
LOSSES = {s: 4.8 + 0.01 * i for i, s in enumerate(TRADEOFF)}


def test_correlation_holds_and_is_blocked_by_a_worse_reference():
    claim = CLAIM["000-tradeoff"]
    out = evaluate_claim(claim, {"bias_variance": bias_variance(TRADEOFF, 4.5, LOSSES)})
    assert out.verdict == "holds" and out.n == 6 and out.value < -0.99
    gated = evaluate_claim(claim, {"bias_variance": bias_variance(TRADEOFF, 4.805, LOSSES)})
    assert gated.verdict == "inconclusive" and "references" in gated.reason and "a reaches lower" in gated.reason
    assert gated.value == out.value  # the value is still shown; only the verdict is blocked
    flipped = {s: (b, 7 - v) for s, (b, v) in TRADEOFF.items()}
    assert evaluate_claim(claim, {"bias_variance": bias_variance(flipped, 4.5, LOSSES)}).verdict == "contradicted"
    old = evaluate_claim(claim, {"bias_variance": bias_variance(TRADEOFF, None, LOSSES)})
    assert old.verdict == "inconclusive" and "not recorded" in old.reason


def test_lowered_linear_interval_from_jackknife_errors():
    claim = CLAIM["000-ll-bias"]
    rows = [{"shape": "lowered_linear-0.1", "space": "kl", "bias": 0.30, "variance": 0.01, "n_runs": 3, "bias_se": 0.03,
             "reference_val_loss": 4.0},
            {"shape": "lowered_linear-0.7", "space": "kl", "bias": 0.20, "variance": 0.02, "n_runs": 3, "bias_se": 0.04,
             "reference_val_loss": 4.0}]
    out = evaluate_claim(claim, {"bias_variance": rows})
    assert out.value == pytest.approx(0.10) and out.low == pytest.approx(0.10 - 1.959964 * 0.05, abs=1e-6)
    assert out.verdict == "holds"  # 0.10 -+ 0.098
    no_se = [{k: v for k, v in r.items() if k != "bias_se"} for r in rows]
    assert evaluate_claim(claim, {"bias_variance": no_se}).verdict == "inconclusive"


def univ_sharpness(rises: list[float], converged: bool | None) -> list[dict]:
    rows = []
    for seed, rise in enumerate(rises):
        for progress, lam in ((0.0, 10.0), (0.5, 10.0 + rise / 2), (1.0, 10.0 + rise)):
            row = {"model": "cnn", "seed": seed, "run": f"cnn-wsd-{seed}", "step": int(progress * 10),
                   "cooldown_progress": progress, "lambda_1": lam}
            if converged is not None:
                row.update(converged=converged, residual=1e-6 if converged else 0.2)
            rows.append(row)
    return rows


def test_per_run_statistic_and_the_lanczos_gate():
    claim = CLAIM["001-sharpness-rises-cnn"]
    out = evaluate_claim(claim, {"universality_sharpness": univ_sharpness([2.0, 2.2, 1.8], True)})
    assert out.verdict == "holds" and out.value == pytest.approx(2.0) and out.n == 3
    down = evaluate_claim(claim, {"universality_sharpness": univ_sharpness([-2.0, -2.2, -1.8], True)})
    assert down.verdict == "contradicted"
    gated = evaluate_claim(claim, {"universality_sharpness": univ_sharpness([2.0, 2.2, 1.8], False)})
    assert gated.verdict == "inconclusive" and "not converged at 9 of 9" in gated.reason and "0.2" in gated.reason
    unknown = evaluate_claim(claim, {"universality_sharpness": univ_sharpness([2.0, 2.2, 1.8], None)})
    assert unknown.verdict == "inconclusive" and "does not record" in unknown.reason


def test_missing_table_is_not_measured():
    out = evaluate_claim(CLAIM["000-avg-worse"], {"val_curves": val_curves({"sqrt": [4.8, 4.9]})})
    assert out.verdict == "inconclusive" and out.reason.startswith("not measured: no averaging.csv")
    assert "analyses.averaging" in out.reason


def sweep(base: str, models: dict[tuple, list[float]]) -> list[dict]:
    """wso_sft_sweep rows: each (scheduler, alpha_pre, alpha_mid) model's selected-LR score per seed, plus a
    worse LR that is not selected."""
    rows = []
    for (sched, a, mid), scores in models.items():
        for seed, v in enumerate(scores):
            for lr, best, score in ((1e-4, True, v), (1e-3, False, v - 0.2)):
                rows.append({"base": base, "run": f"{sched}-{a}-{mid}-{seed}-{lr}", "scheduler": sched, "alpha_pre": a,
                             "alpha_mid": mid, "seed": seed, "lr": lr, "task_acc_norm": score, "best": best})
    return rows


def test_wso_sft_claims_pair_seeds_and_need_them():
    models = {("wso", 1.0, None): [0.60, 0.61, 0.62], ("wsd", 0.0, None): [0.55, 0.54, 0.56],
              ("cosine", 0.1, None): [0.50, 0.52, 0.51]}
    items = {"wso_models": [{"stage": "pretrain", "task_n": 4000}]}  # item noise 1.96 sqrt(2 x .6 x .4 / 4000) = 0.021
    out = evaluate_claim(CLAIM["002-sft-wso-best"], {"wso_sft_sweep": sweep("pretrain", models), **items})
    # WSO - wsd (the best decay-based) per seed: 0.05, 0.07, 0.06
    assert out.verdict == "holds" and "wsd a_pre=0" in out.statistic and out.n == 3
    assert out.value == pytest.approx(0.06) and out.low == pytest.approx(0.06 - 4.303 * 0.01 / math.sqrt(3))
    one_seed = {k: v[:1] for k, v in models.items()}
    out = evaluate_claim(CLAIM["002-sft-wso-best"], {"wso_sft_sweep": sweep("pretrain", one_seed), **items})
    assert out.verdict == "inconclusive" and "undecidable by design" in out.reason
    # 64 items: 1.96 sqrt(.61 .39 / 64 + .55 .45 / 64) = 0.17 > 0.06, whatever the seeds' agreement
    few = evaluate_claim(CLAIM["002-sft-wso-best"], {"wso_sft_sweep": sweep("pretrain", models),
                                                    "wso_models": [{"task_n": 64}]})
    assert few.verdict == "inconclusive" and "item-sampling noise (+-0.17" in few.reason
    # after mid-training, alpha_pre = 1 with alpha_mid = 0 decays: it is decay-based and here the best one
    mid = {("wso", 1.0, 1.0): [0.60, 0.61, 0.62], ("wso", 1.0, 0.0): [0.64, 0.66, 0.65],
           ("wsd", 0.1, 0.0): [0.55, 0.54, 0.56]}
    out = evaluate_claim(CLAIM["002-mid-sft-wso-best"], {"wso_sft_sweep": sweep("mid", mid), **items})
    assert out.verdict == "contradicted" and "a_pre=1 a_mid=0" in out.statistic
    assert out.value == pytest.approx(-0.04)


def test_trace_gap_and_the_hutchinson_gate():
    def sharp(samples: int) -> list[dict]:
        return [{"scheduler": s, "alpha_pre": a, "alpha_mid": None, "run": s, "step": 100, "dataset": "pt",
                 "trace": t, "stderr": 5.0, "samples": samples}
                for s, a, t in (("wso", 1.0, 100.0), ("wsd", 0.0, 250.0), ("cosine", 0.0, 230.0))]
    out = evaluate_claim(CLAIM["002-trace"], {"wso_sharpness": sharp(50)})
    assert out.verdict == "holds" and out.value == pytest.approx(130.0)  # least sharp decayed (cosine) - WSO
    assert out.low == pytest.approx(130 - 1.959964 * math.hypot(5, 5), abs=1e-4)
    gated = evaluate_claim(CLAIM["002-trace"], {"wso_sharpness": sharp(2)})
    assert gated.verdict == "inconclusive" and "2 probes" in gated.reason


def test_malformed_tables_never_crash():
    tables = {"bias_variance": [{"shape": "a", "space": "kl", "bias": "x", "variance": None}],
              "val_curves": [{"shape": "a", "seed": 0, "step": "?", "val_loss": "nan"}]}
    rows = evaluate_claims(tables)
    assert rows and all(r["verdict"] == "inconclusive" for r in rows)


# --------------------------------------------------------------------------------- catalogue, files


def test_catalogue_is_consistent():
    from wsdlab.report.catalog import FIGURES

    ids = [c.id for c in CLAIMS]
    assert len(ids) == len(set(ids))
    figures = {f.name for f in FIGURES}
    for c in CLAIMS:
        assert c.paper in ("000", "001", "002") and c.quote and c.tables and c.where
        assert not c.figure or c.figure in figures, c.id
    covered = {c.id.rsplit("-", 1)[0] if c.paper == "001" else c.id for c in CLAIMS}
    for needed in ("000-best-shapes", "000-tradeoff", "000-avg-ppl-bias", "000-avg-worse", "000-avg-high-variance",
                   "000-batch-matched", "000-batch-unmatched", "000-beta2", "001-sharpness-rises", "001-pc1",
                   "002-sft-wso-best", "002-mid-sft-wso-best", "002-trace", "002-sharpness-sft-corr"):
        assert needed in covered


def _normalised(text: str) -> list[str]:
    ws = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    margin = re.sub(r"(?m)^([ \t]*(?:- |#+ )?)\d{1,3}[ \t]+(?=\S)", r"\1", text).replace("*", "")
    return [ws(text), ws(re.sub(r"-[ \t]*\n\s*", "", text)), ws(re.sub(r"-[ \t]*\n\s*", "-", text)),
            ws(re.sub(r"-[ \t]*\n\s*", "", margin)), ws(re.sub(r"-[ \t]*\n\s*", "-", margin))]


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="../shared/papers is not beside the checkout")
def test_every_quote_is_verbatim_in_its_paper():
    files = {p.name[:3]: p for p in PAPERS_DIR.glob("00[0-2]_*.txt")}
    texts = {k: _normalised(p.read_text(encoding="utf-8")) for k, p in files.items()}
    for c in CLAIMS:
        q = re.sub(r"\s+", " ", c.quote).strip()
        assert any(q in t or q.replace("*", "") in t for t in texts[c.paper]), f"{c.id}: quote not in paper {c.paper}"


def test_write_claims_and_cli(tmp_path: Path):
    from typer.testing import CliRunner

    from wsdlab.cli import app

    tables = tmp_path / "tables"
    write_table(val_curves({"sqrt": [4.80, 4.81, 4.79], "lowered_linear-0.7": [4.80, 4.80, 4.81],
                            "linear": [4.90, 4.92, 4.91]}), tables / "val_curves.csv")
    write_table(bias_variance(TRADEOFF, 4.5, LOSSES), tables / "bias_variance.csv")
    write_table([{"key": "base", "stage": "base", "arch": "llama", "params": 812_000, "tokens": 3_300_000,
                  "state": "complete"}], tables / "runs.csv")
    rows = write_claims(tmp_path)
    assert [r["id"] for r in rows] == [c.id for c in CLAIMS if c.paper == "000"]  # only the paper it touches
    assert tuple(rows[0]) == COLUMNS
    got = {r["id"]: r for r in rows}
    assert got["000-best-shapes"]["verdict"] == "holds" and got["000-tradeoff"]["verdict"] == "holds"
    assert got["000-tradeoff"]["scale"].startswith("this run: 812K params, 3.3M tokens")
    assert (tables / "claims.csv").is_file()
    assert summary_line(rows) == f"claims: 2 hold, 0 contradicted, {len(rows) - 2} inconclusive (tables/claims.csv)"
    result = CliRunner().invoke(app, ["study", "claims", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["verdict"] for r in json.loads(result.output)] == [r["verdict"] for r in rows]
    result = CliRunner().invoke(app, ["study", "claims", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "2 hold" in result.output and "holds" in result.output
    missing = CliRunner().invoke(app, ["study", "claims", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a study folder" in missing.output


def test_lm_cooldown_matches_cosine_from_the_fig1_runs():
    rows = []
    for seed, (wsd, cos) in enumerate(((4.00, 4.10), (4.02, 4.11), (3.99, 4.12))):
        for sched, v in (("wsd", wsd), ("cosine", cos)):
            rows += [{"model": "lm", "seed": seed, "run": f"{sched}{seed}", "schedule": sched, "split": "val",
                      "step": 0, "loss": 9.0, "lr": None},
                     {"model": "lm", "seed": seed, "run": f"{sched}{seed}", "schedule": sched, "split": "val",
                      "step": 160, "loss": v, "lr": None}]
    out = evaluate_claim(CLAIM["001-length-lm-20"], {"universality_curves": rows})
    assert out.verdict == "holds" and out.value == pytest.approx(-0.32 / 3)  # WSD - cosine per seed: -0.10, -0.09, -0.13
    worse = [dict(r, loss=r["loss"] + 0.2) if r["schedule"] == "wsd" and r["step"] == 160 else r for r in rows]
    assert evaluate_claim(CLAIM["001-length-lm-20"], {"universality_curves": worse}).verdict == "contradicted"


def test_scale_line_names_images_for_the_cnn():
    from wsdlab.analysis.claims.evaluate import run_scale

    index = [{"key": "a", "model": "lm", "arch": "llama", "params": 230_000, "tokens": 164_000},
             {"key": "b", "model": "cnn", "arch": "cnn", "params": 83_900, "tokens": 20_480}]
    assert run_scale({"runs": index}) == ("this run: LM 230K params, 164K tokens (longest run); "
                                          "CNN 83.9K params, 20.5K images (longest run)")


def test_recency_rows_state_the_stride_they_were_measured_at():
    tables = {"bias_variance": bias_variance(TRADEOFF, 4.5, LOSSES),
              "recency_correlations": [{"x": "shift", "y": "bias", "space": "kl", "spearman": 0.9, "pearson": 0.9,
                                        "n_shapes": 6}],
              "recency": [{"shape": "a", "seed": 0, "shift": -1.0, "deviation": 2.0, "n_batches": 60,
                           "n_cooldown_batches": 10, "stride": 4}]}
    row = next(r for r in evaluate_claims(tables) if r["id"] == "000-recency-shift")
    assert row["statistic"].endswith("; stride 4, 10 scored cooldown batches")
    without = next(r for r in evaluate_claims({k: v for k, v in tables.items() if k != "recency"})
                   if r["id"] == "000-recency-shift")
    assert "stride" not in without["statistic"]
