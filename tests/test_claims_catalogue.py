"""Every claim of the catalogue, on hand-made tables, for each verdict: holds, contradicted, inconclusive by
interval (an effect too small for its noise), inconclusive with no interval (too few units: one seed, one run,
three points, no standard errors) and, for a claim with gates, inconclusive by gate (the holding tables plus
the gate's trigger).

One small table builder per extractor family, called with a target statistic and a noise; `SPECS` names the
builder of every claim, so a claim added without one fails `test_every_claim_has_a_builder` (and its
parametrized cases) by name. The expected verdicts follow from the numbers, worked out in the comments.

Shared arithmetic. Three units (seeds, runs) deviating by (-d, 0, +d) from their mean have sample sd exactly d,
so the Student-t 95% half-width is t(2) d / sqrt(3) = 4.303 d / 1.732 = 2.484 d. A one-value-a-side
difference with a sibling seed sd s, or a difference of two values with standard errors s each, has the
half-width 1.96 * sqrt(2) * s = 2.772 s. Each family's holding effect E and noise d keep E > 2.8 d (holds,
or contradicted with -E); its weak case keeps the effect below the half-width (inconclusive).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from wsdlab.analysis.claims import CLAIMS
from wsdlab.analysis.claims.evaluate import evaluate_claim
from wsdlab.analysis.claims.model import Claim, Correlation, Difference, Ordering, Outcome, PerUnit
from wsdlab.common.types import Row, Tables

from claims_tables import val_curves

CLAIM = {c.id: c for c in CLAIMS}
SEEDS = (0, 1, 2)
Builder = Callable[[float, float], Tables]


def devs(d: float) -> tuple[float, float, float]:
    """Per-unit deviations of three units: mean 0, sample sd exactly d."""
    return (-d, 0.0, d)


# ------------------------------------------------------------------------------------- paper 000 builders


def grid(sd: float) -> list[Row]:
    """A cooldown grid of two shapes, seeds at 4.80 + (-sd, 0, sd): pooled seed spread exactly sd."""
    return val_curves({s: [4.80 + e for e in devs(sd)] for s in ("linear", "cosine")})


def best_shapes(t: float, d: float) -> Tables:
    """000-best-shapes: sqrt and lowered_linear-0.7 end at 4.80 on every seed; linear and square at
    4.80 - t + dev, so every pair's loss difference (best - other) is t + dev (perplexity: same sign)."""
    others = [4.80 - t - e for e in devs(d)]
    return {"val_curves": val_curves({"sqrt": [4.80] * 3, "lowered_linear-0.7": [4.80] * 3,
                                      "linear": others, "square": others})}


SIX = ("lowered_linear-0.1", "lowered_linear-0.4", "lowered_linear-0.7", "linear", "sqrt", "mirror_cosine")


def bias_variance(kl: dict[str, tuple[float, float]], weight: dict[str, tuple[float, float]] | None = None,
                  se: float = 0.01) -> list[Row]:
    """bias_variance rows: kl (and weight) space (bias, variance) per shape with jackknife standard errors `se`;
    loss space: the i-th shape's loss 4.81 + 0.01 i (4.81 ... 4.86), references at 4.50 (better than all)."""
    out = []
    for i, shape in enumerate(kl):
        common = {"shape": shape, "n_runs": 3, "bias_se": se, "variance_se": se, "reference_val_loss": 4.50}
        out.append({**common, "space": "kl", "bias": kl[shape][0], "variance": kl[shape][1]})
        w = (weight or {}).get(shape, (1.0, 1.0))
        out.append({**common, "space": "weight", "bias": w[0], "variance": w[1]})
        out.append({**common, "space": "loss", "bias": 4.81 + 0.01 * i, "variance": 1e-4})
    return out


def lowered_linear_step(column: str) -> Builder:
    """000-ll-bias / -variance: `column` of lowered_linear-0.1 is t above that of lowered_linear-0.7 (0.20);
    both with jackknife se = d: the interval is t +- 1.96 sqrt(2) d."""
    def build(t: float, d: float) -> Tables:
        base = {"bias": 0.20, "variance": 0.20}
        low = {**base, column: 0.20 + t}
        kl = {"lowered_linear-0.1": (low["bias"], low["variance"]), "lowered_linear-0.4": (0.2, 0.2),
              "lowered_linear-0.7": (base["bias"], base["variance"])}
        return {"bias_variance": bias_variance(kl, se=d)}
    return build


def points(slope: float, wiggle: float) -> list[float]:
    """y_i = slope i + wiggle (-1)^i for x_i = i = 1..6.

    slope +-1, wiggle 0.1: y = 0.9, 2.1, 2.9, 4.1, 4.9, 6.1 (or its negative), strictly monotone: Spearman
    r = +-1 and Pearson r = 17.8 / sqrt(17.5 * 18.16) = +-0.9985; Fisher z with n = 6 (se 1/sqrt(3) = 0.577,
    Spearman's sqrt(1.06/3) = 0.594) gives an interval beyond +-0.98: holds (or contradicted).
    slope 0, wiggle 0.5: a zigzag, r = 1.5 / sqrt(17.5 * 1.5) = 0.293 (Spearman too: two tied ranks are affine
    in y); atanh 0.293 = 0.30 +- 1.13 (1.16 Spearman) spans 0: inconclusive.
    """
    return [slope * i + wiggle * (-1) ** i for i in range(1, 7)]


def bias_variance_correlation(x: str, y: str) -> Builder:
    """A correlation across six shapes of bias_variance columns `x` and `y` ('space.column'): x = 1..6, y from
    `points(slope, wiggle)`; the other columns are constant."""
    def build(slope: float, wiggle: float) -> Tables:
        cols: dict[str, list[float]] = {"kl.bias": [1.0] * 6, "kl.variance": [1.0] * 6,
                                        "weight.bias": [1.0] * 6, "weight.variance": [1.0] * 6}
        cols[x] = [float(i) for i in range(1, 7)]
        cols[y] = points(slope, wiggle)
        kl = {s: (cols["kl.bias"][i], cols["kl.variance"][i]) for i, s in enumerate(SIX)}
        weight = {s: (cols["weight.bias"][i], cols["weight.variance"][i]) for i, s in enumerate(SIX)}
        return {"bias_variance": bias_variance(kl, weight)}
    return build


def variance_vs_average(slope: float, wiggle: float) -> Tables:
    """000-avg-high-variance: KL variance 1..6 per shape, its averaged model's loss 4.8 + 0.01 y (ranks of y)."""
    kl = {s: (1.0, float(i + 1)) for i, s in enumerate(SIX)}
    avg = [{"shape": s, "val_loss_average_model": 4.8 + 0.01 * y, "val_loss_longer_run": 4.7}
           for s, y in zip(SIX, points(slope, wiggle))]
    return {"bias_variance": bias_variance(kl), "averaging": avg}


def reported(table: str, match: dict[str, str], column: str, n_column: str = "n_shapes",
             gate_table: Tables | None = None) -> Builder:
    """A table that reports a correlation r over n points (the noise argument is n); Fisher z with n = 9:
    se 1/sqrt(6) = 0.408 (Spearman sqrt(1.06/6) = 0.420), half-width 0.80 (0.82).
    r = 0.9: atanh 1.472 - 0.82 = 0.65 > 0 -> interval [0.57, 0.98]; r = 0.3: atanh 0.31 +- 0.82 spans 0.
    `gate_table` (a gate's own table, in a state that passes) is added to the tables."""
    def build(r: float, n: float) -> Tables:
        row = {**match, column: r, n_column: int(n)}
        return {table: [row], **(gate_table or {})}
    return build


GOOD_BIAS_VARIANCE = {"bias_variance": bias_variance({s: (1.0, 1.0) for s in SIX})}


def averaging(t: float, d: float) -> Tables:
    """000-avg-worse: two shapes' averages at 4.80, the longer run at 4.80 + t (one value each); the grid's
    seed spread d gives each pair the interval t +- 2.772 d."""
    avg = [{"shape": s, "val_loss_average_model": 4.80, "val_loss_longer_run": 4.80 + t} for s in ("sqrt", "linear")]
    return {"averaging": avg, "val_curves": grid(d)}


def panel(name: str, treated: float) -> Builder:
    """A hyper-parameter panel over three seeds: the baseline value 1.0 ends at 4.80, the treated value at
    4.80 + t + dev (paired differences t + dev)."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            out += [{"panel": name, "shape": "sqrt", "value": 1.0, "seed": seed, "val_loss": 4.80},
                    {"panel": name, "shape": "sqrt", "value": treated, "seed": seed, "val_loss": 4.80 + t + e}]
        return {"hyperparams": out, "val_curves": grid(0.01)}
    return build


# ------------------------------------------------------------------------------------- paper 001 builders


def runs(model: str) -> list[tuple[str, int, float]]:
    return [(f"{model}-wsd-{s}", s, 0.0) for s in SEEDS]


def cooldown_gain(model: str) -> Builder:
    """Train rows every step 0..30: lr 1 to step 20, then linear to 0 at step 30 (cooldown 21..30, stable window
    11..20); the loss falls by a_s = 0.01 a step to step 20, then by a_c = 0.01 + t + dev: both windows are
    exact lines, so the statistic slope(stable) - slope(cooldown) = a_c - a_s = t + dev."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            a_s, a_c = 0.01, 0.01 + t + e
            for step in range(31):
                lr = 1.0 if step <= 20 else 1.0 - (step - 20) / 10
                loss = 5.0 - a_s * min(step, 20) - a_c * max(step - 20, 0)
                out.append({"model": model, "run": f"{model}-wsd-{seed}", "seed": seed, "schedule": "wsd",
                            "split": "train", "step": step, "loss": loss, "lr": lr})
        return {"universality_curves": out}
    return build


def interpolation(model: str, segment: str) -> Builder:
    """Per run a profile with statistic v = t + dev. stable: alphas 0, 0.5, 1 at losses 5, 5 - v, 5 (valley
    depth v); cooldown: alphas 0, 0.25, ..., 1 at 5 + v k (every step, so the largest rise, is v)."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            v = t + e
            prof = [(0.0, 5.0), (0.5, 5.0 - v), (1.0, 5.0)] if segment == "stable" else \
                [(k / 4, 5.0 + v * k) for k in range(5)]
            out += [{"model": model, "run": f"{model}-wsd-{seed}", "segment": segment, "alpha": a, "loss": loss}
                    for a, loss in prof]
        return {"universality_interpolate": out}
    return build


def sharpness(model: str) -> Builder:
    """lambda_1 at cooldown progress 0, 0.5, 1: 10, 10 + v/2, 10 + v with v = t + dev; converged."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            for p in (0.0, 0.5, 1.0):
                out.append({"model": model, "run": f"{model}-wsd-{seed}", "seed": seed, "step": int(10 * p),
                            "cooldown_progress": p, "lambda_1": 10.0 + p * (t + e), "converged": True,
                            "residual": 1e-6})
        return {"universality_sharpness": out}
    return build


TRAJECTORY = ("model", "run", "kind", "set", "pc1_share", "num_iterates", "direction", "hv_norm", "tau",
              "cos_grad_update")


def trajectory(model: str, kind: str, column: str = "") -> Builder:
    """universality_trajectory rows (every column on every row) of one kind, per run v = t + dev:
    pca: pc1_share v for both sets S and D, from 10 iterates; hv: ||H v_s|| = 1, ||H v_d|| = exp(v) (log ratio
    v); path: two iterates with `column` v +- 0.05 (mean v)."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            v, run = t + e, f"{model}-wsd-{seed}"
            base = dict.fromkeys(TRAJECTORY) | {"model": model, "run": run, "kind": kind}
            if kind == "pca":
                out += [base | {"set": s, "pc1_share": v, "num_iterates": 10} for s in ("S", "D")]
            elif kind == "hv":
                out += [base | {"direction": "v_s", "hv_norm": 1.0},
                        base | {"direction": "v_d", "hv_norm": math.exp(v)}]
            else:
                out += [base | {"tau": 0.1, "cos_grad_update": 0.1, column: v + h} for h in (0.05, -0.05)]
        return {"universality_trajectory": out}
    return build


def update_norms(model: str) -> Builder:
    """Per run two stable rows at update norm 1 + v and two cooldown rows at 1: gap v = t + dev."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            for phase, u in (("stable", 1.0 + t + e), ("cooldown", 1.0)):
                out += [{"model": model, "run": f"{model}-wsd-{seed}", "phase": phase, "step": k, "update_norm": u}
                        for k in (1, 2)]
        return {"universality_norms": out}
    return build


def length(fraction: float) -> Builder:
    """CNN cooldown-length sweep (fractions 0.2, 0.35, 0.5) and cosine at 4.0 per seed; the tested fraction's
    WSD run at 4.0 + t + dev (paired differences t + dev), the others equal to cosine."""
    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            out.append({"model": "cnn", "seed": seed, "source": "cosine", "cooldown_fraction": None, "val_loss": 4.0})
            out += [{"model": "cnn", "seed": seed, "source": "sweep", "cooldown_fraction": f,
                     "val_loss": 4.0 + (t + e if f == fraction else 0.0)} for f in (0.2, 0.35, 0.5)]
        return {"universality_length": out}
    return build


def lm_schedules(t: float, d: float) -> Tables:
    """LM Fig. 1 runs: cosine's last val loss 4.0, WSD's 4.0 + t + dev per seed (step 0 at 9.0)."""
    out = []
    for seed, e in zip(SEEDS, devs(d)):
        for sched, v in (("wsd", 4.0 + t + e), ("cosine", 4.0)):
            out += [{"model": "lm", "seed": seed, "run": f"{sched}{seed}", "schedule": sched, "split": "val",
                     "step": step, "loss": loss, "lr": None} for step, loss in ((0, 9.0), (160, v))]
    return {"universality_curves": out}


# ------------------------------------------------------------------------------------- paper 002 builders


def pretrain_delta(t: float, d: float) -> Tables:
    """wso_delta's pre-training rows (one run per model): WSO at 3.0 + t, the best decay-based model (wsd,
    alpha_pre 0) at 3.0, cosine at 3.1."""
    return {"wso_delta": [{"stage": "pretrain", "scheduler": s, "alpha_pre": a, "alpha_mid": None, "pt_val_loss": v}
                          for s, a, v in (("wso", 1.0, 3.0 + t), ("wsd", 0.0, 3.0), ("cosine", 0.0, 3.1))]}


def sft_sweep(base: str) -> Builder:
    """wso_sft_sweep rows over three SFT seeds: WSO's selected-LR score 0.60 + t + dev, the best decay-based
    model's 0.60, another's 0.50 (paired differences t + dev); every model also has a worse, unselected LR.
    After mid-training WSO is alpha_pre = alpha_mid = 1 and the best decay-based model alpha_mid = 0."""
    wso = ("wso", 1.0, 1.0 if base == "mid" else None)
    best = ("wso", 1.0, 0.0) if base == "mid" else ("wsd", 0.0, None)
    other = ("wsd", 0.0, 0.0) if base == "mid" else ("cosine", 0.1, None)

    def build(t: float, d: float) -> Tables:
        out = []
        for seed, e in zip(SEEDS, devs(d)):
            for (sched, a, mid), v in ((wso, 0.60 + t + e), (best, 0.60), (other, 0.50)):
                for lr, chosen, score in ((1e-4, True, v), (1e-3, False, v - 0.2)):
                    out.append({"base": base, "run": f"{sched}-{a}-{mid}-{seed}-{lr}", "scheduler": sched,
                                "alpha_pre": a, "alpha_mid": mid, "seed": seed, "lr": lr, "task_acc_norm": score,
                                "best": chosen})
        # 100,000 task items: item-sampling noise 1.96 sqrt(2 x .6 x .4 / 1e5) = 0.0043, below even the weak
        # case's 0.005 (so only the seeds decide); the gate case sets 64 items: +-0.17
        return {"wso_sft_sweep": out, "wso_models": [{"stage": base, "task_n": 100_000}]}
    return build


def wso_sharpness(t: float, se: float, samples: int = 50) -> list[Row]:
    """Final (step 100) PT-data traces: WSO 100, wsd alpha_pre 0 at 100 + t, cosine alpha_pre 0 at 150 + t
    (the least sharp decayed model is wsd: gap t), standard error `se` each; step-50 rows that must be ignored."""
    out = []
    for s, a, final in (("wso", 1.0, 100.0), ("wsd", 0.0, 100.0 + t), ("cosine", 0.0, 150.0 + t)):
        for step, tr in ((50, 500.0), (100, final)):
            out.append({"scheduler": s, "alpha_pre": a, "alpha_mid": None, "run": s, "step": step, "dataset": "pt",
                        "trace": tr, "stderr": se, "samples": samples})
    return out


def trace(t: float, se: float) -> Tables:
    return {"wso_sharpness": wso_sharpness(t, se)}


# ------------------------------------------------------------------------------------------- gate triggers


def setting(table: str, **columns: object) -> Callable[[Tables], Tables]:
    """A gate trigger: the tables with `columns` set on every row of `table`."""
    def trigger(tables: Tables) -> Tables:
        assert table in tables, f"the holding tables lack {table}, the gate's table"
        return {**tables, table: [{**r, **columns} for r in tables[table]]}
    return trigger


def keeping(**filters: Callable[[Row], bool]) -> Callable[[Tables], Tables]:
    """A 'too few units' trigger: the tables with only the rows of each named table that pass its filter."""
    def trigger(tables: Tables) -> Tables:
        assert set(filters) <= set(tables), f"the holding tables lack {set(filters) - set(tables)}"
        return {k: [r for r in rs if k not in filters or filters[k](r)] for k, rs in tables.items()}
    return trigger


def seed0(r: Row) -> bool:
    return r.get("seed") == 0


def run0(r: Row) -> bool:
    return str(r.get("run")).endswith("-0")


def three_shapes(r: Row) -> bool:
    return r.get("shape") in SIX[:3]


# Too few units: no interval at all. One seed a side without a sibling spread, one run, three points (Fisher's
# z needs four), a reported n of 3, or standard errors not recorded.
ONE_SEED = keeping(val_curves=seed0)  # the cooldown grid's seed 0 only
NO_SE = setting("bias_variance", bias_se=None, variance_se=None)
THREE_POINTS = keeping(bias_variance=three_shapes)


def reported_n3(table: str) -> Callable[[Tables], Tables]:
    return setting(table, **{"n" if table == "wso_correlation" else "n_shapes": 3})


# references at 4.835: the loss-space values 4.81, 4.82, 4.83 are lower, so the references are not better
WORSE_REFERENCE = setting("bias_variance", reference_val_loss=4.835)
UNCONVERGED = setting("universality_sharpness", converged=False, residual=0.3)
FEW_ITERATES = setting("universality_trajectory", num_iterates=3)  # < 5
FEW_PROBES = setting("wso_sharpness", samples=4)  # < 10
FEW_ITEMS = setting("wso_models", task_n=64)  # item noise +-0.17 > the 0.05 effect


# ------------------------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class Spec:
    """How to build one claim's tables: `build(target, noise)`, where the target statistic is
    `target(spec, e)` for an effect e signed along the claim (e > 0: the paper's side). holds: e = effect,
    contradicted: e = -effect, both with `noise`; inconclusive by interval: (e, noise) = `weak`; by gate:
    the holding tables passed through `gate`; with no interval at all (too few units): through `few`.
    `side`, `threshold` and `margin` pin the paper's direction (checked against the catalogue's, so a flipped
    claim fails here); `exact`: the claim's value is the target itself."""

    build: Builder
    side: str
    effect: float
    noise: float
    weak: tuple[float, float]
    gate: Callable[[Tables], Tables] | None = None
    exact: bool = True
    few: Callable[[Tables], Tables] | None = None
    threshold: float = 0.0
    margin: float = 0.0


def side_of(claim: Claim) -> str:
    c = claim.check
    return ("<" if c.lower else ">") if isinstance(c, Ordering) else c.side


def target(spec: Spec, e: float) -> float:
    """The statistic's value for effect e: threshold +- e; for '~' (within +-margin): threshold + margin (1 - e),
    i.e. the threshold at e = 1, the margin's edge at e = 0 and twice the margin at e = -1."""
    if spec.side == "~":
        return spec.threshold + spec.margin * (1 - e)
    return spec.threshold + e if spec.side == ">" else spec.threshold - e


# Difference, PerUnit families on three units (half-width 2.484 d): holds E = 0.1, d = 0.01 -> t +- 0.025, clear
# of the threshold; weak: e = 0.01, d = 0.01 -> threshold + 0.01 +- 0.025 spans it.
LOSS = dict(effect=0.1, noise=0.01, weak=(0.01, 0.01))
# one value a side with a sibling spread / two standard errors (half-width 2.772 d): the same numbers, weak
# e = 0.01 +- 0.028 spans 0.
# '~' (000-batch-matched, margin 0.02): d = 0.002 (half-width 0.005): holds 0 +- 0.005 inside +-0.02;
# contradicted 0.04 +- 0.005 beyond 0.02; weak e = 0 -> 0.02 +- 0.005 straddles the margin.
MATCHED = dict(effect=1.0, noise=0.002, weak=(0.0, 0.002))
# correlations across six shapes: see `points`
CORR = dict(effect=1.0, noise=0.1, weak=(0.0, 0.5))
# reported correlations over n = 9 points: see `reported`
REPORTED = dict(effect=0.9, noise=9, weak=(0.3, 9))
# per-run statistics of 001: E = 0.02, d = 0.002 -> +-0.005; weak 0.002 +- 0.005 spans 0
RUN = dict(effect=0.02, noise=0.002, weak=(0.002, 0.002))
# PC1 shares: six units (3 runs x S, D) at v - d, v, v + d twice: sd = d sqrt(4/5) = 0.894 d, t(5) = 2.571, half
# 2.571 * 0.894 d / sqrt(6) = 0.939 d. holds: 0.35 + 0.2 +- 0.019; weak 0.355 +- 0.047 spans 0.35.
PCA = dict(effect=0.2, noise=0.02, weak=(0.005, 0.05))
# SFT scores: E = 0.05, d = 0.005 -> +-0.012; weak 0.005 +- 0.012 spans 0
SFT = dict(effect=0.05, noise=0.005, weak=(0.005, 0.005))
# traces: gap 100 with standard errors 10 -> +-27.7; weak 10 +- 27.7 spans 0
TRACE = dict(effect=100.0, noise=10.0, weak=(10.0, 10.0))

SPECS: dict[str, Spec] = {
    # perplexity differences for t = -0.1: exp(4.8) - exp(4.89, 4.90, 4.91) = -11.4, -12.8, -14.1 (sd 1.35):
    # [-16.1, -9.4] < 0 for all four pairs; weak (t = -0.01, d = 0.05): -7.5 ... 4.8, mean -1.3 +- 15: spans 0
    "000-best-shapes": Spec(best_shapes, "<", effect=0.1, noise=0.01, weak=(0.01, 0.05), exact=False,
                            few=ONE_SEED),
    "000-ll-bias": Spec(lowered_linear_step("bias"), ">", **LOSS, gate=WORSE_REFERENCE, few=NO_SE),
    "000-ll-variance": Spec(lowered_linear_step("variance"), "<", **LOSS, few=NO_SE),
    "000-tradeoff": Spec(bias_variance_correlation("kl.bias", "kl.variance"), "<", **CORR, gate=WORSE_REFERENCE,
                         exact=False, few=THREE_POINTS),
    "000-avg-ppl-bias": Spec(reported("perplexity_vs_bias", {"space": "kl"}, "pearson",
                                      gate_table=GOOD_BIAS_VARIANCE), ">", **REPORTED, gate=WORSE_REFERENCE,
                             few=reported_n3("perplexity_vs_bias")),
    "000-weight-space-bias": Spec(bias_variance_correlation("kl.bias", "weight.bias"), ">", **CORR,
                                  gate=WORSE_REFERENCE, exact=False, few=THREE_POINTS),
    "000-weight-space-variance": Spec(bias_variance_correlation("kl.variance", "weight.variance"), ">", **CORR,
                                      exact=False, few=THREE_POINTS),
    "000-recency-shift": Spec(reported("recency_correlations", {"x": "shift", "y": "bias", "space": "kl"}, "spearman",
                                       gate_table=GOOD_BIAS_VARIANCE), ">", **REPORTED, gate=WORSE_REFERENCE,
                              few=reported_n3("recency_correlations")),
    "000-recency-deviation": Spec(reported("recency_correlations", {"x": "deviation", "y": "variance", "space": "kl"},
                                           "spearman"), ">", **REPORTED,
                                  few=reported_n3("recency_correlations")),
    "000-avg-worse": Spec(averaging, "<", **LOSS, few=ONE_SEED),
    "000-avg-high-variance": Spec(variance_vs_average, "<", **CORR, exact=False,
                                  few=keeping(averaging=three_shapes)),
    "000-batch-matched": Spec(panel("batch_x_half_life", 2.0), "~", margin=0.02, **MATCHED,
                              few=keeping(hyperparams=seed0, val_curves=seed0)),
    "000-batch-unmatched": Spec(panel("batch_x", 2.0), "<", **LOSS,
                                few=keeping(hyperparams=seed0, val_curves=seed0)),
    "000-beta2": Spec(panel("beta2_p", 0.5), "<", **LOSS, few=keeping(hyperparams=seed0, val_curves=seed0)),
    **{cid: spec for model in ("lm", "cnn") for cid, spec in {
        f"001-cooldown-gain-{model}": Spec(cooldown_gain(model), ">", **RUN, few=keeping(universality_curves=run0)),
        f"001-river-valley-{model}": Spec(interpolation(model, "stable"), ">", **RUN,
                                          few=keeping(universality_interpolate=run0)),
        f"001-monotone-cooldown-{model}": Spec(interpolation(model, "cooldown"), "<", **RUN,
                                               few=keeping(universality_interpolate=run0)),
        f"001-sharpness-rises-{model}": Spec(sharpness(model), ">", **RUN, gate=UNCONVERGED,
                                             few=keeping(universality_sharpness=run0)),
        f"001-pc1-{model}": Spec(trajectory(model, "pca"), ">", threshold=0.35, **PCA, gate=FEW_ITERATES,
                                 few=keeping(universality_trajectory=lambda r: run0(r) and r["set"] == "S")),
        f"001-hv-{model}": Spec(trajectory(model, "hv"), ">", **RUN, few=keeping(universality_trajectory=run0)),
        f"001-tau-{model}": Spec(trajectory(model, "path", "tau"), ">", **RUN,
                                 few=keeping(universality_trajectory=run0)),
        f"001-cos-{model}": Spec(trajectory(model, "path", "cos_grad_update"), ">", **RUN,
                                 few=keeping(universality_trajectory=run0)),
        f"001-update-norm-{model}": Spec(update_norms(model), ">", **RUN, few=keeping(universality_norms=run0)),
    }.items()},
    # threshold 0.01: holds 0.11 (or -0.09) +- 0.025 clear of 0.01; weak 0.02 (or 0.0) +- 0.025 spans 0.01
    # the largest swept fraction below 0.35, the smallest >= 0.35
    "001-length-cnn-short": Spec(length(0.2), ">", threshold=0.01, **LOSS, few=keeping(universality_length=seed0)),
    "001-length-cnn-35": Spec(length(0.35), "<", threshold=0.01, **LOSS, few=keeping(universality_length=seed0)),
    "001-length-lm-20": Spec(lm_schedules, "<", threshold=0.01, **LOSS, few=keeping(universality_curves=seed0)),
    "002-pretrain-decay-best": Spec(pretrain_delta, ">", **LOSS),
    "002-sft-wso-best": Spec(sft_sweep("pretrain"), ">", **SFT, gate=FEW_ITEMS, few=keeping(wso_sft_sweep=seed0)),
    "002-mid-sft-wso-best": Spec(sft_sweep("mid"), ">", **SFT, gate=FEW_ITEMS, few=keeping(wso_sft_sweep=seed0)),
    "002-trace": Spec(trace, ">", **TRACE, gate=FEW_PROBES, few=setting("wso_sharpness", stderr=None)),
    "002-sharpness-sft-corr": Spec(reported("wso_correlation", {"dataset": "pt", "score": "sft_task"}, "r", "n",
                                            gate_table={"wso_sharpness": wso_sharpness(100.0, 10.0)}), "<",
                                   **REPORTED, gate=FEW_PROBES, few=reported_n3("wso_correlation")),
}

# Verdicts a claim cannot give by construction, and the reason it gives instead.
# 002-pretrain-decay-best: wso_delta has one pre-training run per model (the paper's one run per configuration)
# and the claim has no sibling seed spread, so its difference has no interval.
IMPOSSIBLE = {("002-pretrain-decay-best", "holds"): "undecidable by design",
              ("002-pretrain-decay-best", "contradicted"): "undecidable by design"}

# "few": inconclusive with no interval at all (too few units), for every claim that can have one
VERDICTS = ("holds", "contradicted", "interval", "gate", "few")
CASES = [(c.id, v) for c in CLAIMS for v in VERDICTS
         if (v != "gate" or c.gates) and (v != "few" or c.id != "002-pretrain-decay-best")]


def spec_of(claim_id: str) -> Spec:
    if claim_id not in SPECS:
        pytest.fail(f"claim {claim_id} has no table builder: add its Spec to SPECS in {__file__}")
    return SPECS[claim_id]


def tables_for(claim: Claim, kind: str) -> tuple[Tables, float]:
    """The tables of one verdict case and the target statistic they were built for."""
    spec = spec_of(claim.id)
    e, noise = {"holds": (spec.effect, spec.noise), "contradicted": (-spec.effect, spec.noise),
                "interval": spec.weak, "gate": (spec.effect, spec.noise), "few": (spec.effect, spec.noise)}[kind]
    t = target(spec, e)
    tables = spec.build(t, noise)
    if kind == "gate":
        assert spec.gate is not None, f"{claim.id} has gates but its Spec no gate trigger"
        tables = spec.gate(tables)
    if kind == "few":
        assert spec.few is not None, f"{claim.id}: its Spec has no 'few units' trigger"
        tables = spec.few(tables)
    return tables, t


def on_side(claim: Claim, value: float) -> bool:
    """The value lies on the side the catalogue's claim demands (within its margin for '~')."""
    thr = getattr(claim.check, "threshold", 0.0)
    side = side_of(claim)
    if side == "~":
        return abs(value - thr) < claim.check.margin
    return value > thr if side == ">" else value < thr


def check_value(claim: Claim, out: Outcome, t: float) -> None:
    assert out.value is not None, f"{claim.id}: no value ({out.reason})"
    if SPECS[claim.id].exact:
        assert out.value == pytest.approx(t, abs=1e-9), claim.id


def test_every_claim_has_a_builder():
    missing = [c.id for c in CLAIMS if c.id not in SPECS]
    assert not missing, f"claims without a table builder in SPECS: {', '.join(missing)}"
    assert not set(SPECS) - set(CLAIM), f"SPECS of no claim: {sorted(set(SPECS) - set(CLAIM))}"
    for c in CLAIMS:
        spec = SPECS[c.id]
        assert (spec.gate is not None) == bool(c.gates), f"{c.id}: a gate trigger exactly for the claims with gates"
        pinned = (spec.side, spec.threshold, spec.margin)
        assert pinned == (side_of(c), getattr(c.check, "threshold", 0.0), getattr(c.check, "margin", 0.0)), c.id


@pytest.mark.parametrize(("claim_id", "kind"), CASES, ids=[f"{c}-{v}" for c, v in CASES])
def test_claim_verdict(claim_id: str, kind: str):
    claim = CLAIM[claim_id]
    tables, t = tables_for(claim, kind)
    out = evaluate_claim(claim, tables)
    assert not out.reason.startswith(("not measured", "could not compute")), f"{claim_id}: {out.reason}"
    if (claim_id, kind) in IMPOSSIBLE:
        assert out.verdict == "inconclusive" and IMPOSSIBLE[claim_id, kind] in out.reason, out
        check_value(claim, out, t)
        assert on_side(claim, out.value) == (kind == "holds")
        return
    if kind == "holds":
        assert out.verdict == "holds", f"{claim_id}: {out}"
        check_value(claim, out, t)
        assert on_side(claim, out.value), f"{claim_id}: value {out.value} is not on the side '{side_of(claim)}'"
        assert not any(g(tables) for g in claim.gates), f"{claim_id}: a gate fires on the holding tables"
    elif kind == "contradicted":
        assert out.verdict == "contradicted", f"{claim_id}: {out}"
        check_value(claim, out, t)
        assert not on_side(claim, out.value)
    elif kind == "interval":  # the interval contains the threshold (or the margin's edge)
        assert out.verdict == "inconclusive", f"{claim_id}: {out}"
        assert not any(g(tables) for g in claim.gates), f"{claim_id}: inconclusive by a gate, not the interval"
        if claim_id == "002-pretrain-decay-best":  # one run a side: no interval by design
            assert out.low is None and "undecidable by design" in out.reason, out
            return
        edge = getattr(claim.check, "threshold", 0.0) + (claim.check.margin if side_of(claim) == "~" else 0.0)
        assert out.low is not None and out.high is not None and out.low < edge < out.high, f"{claim_id}: {out}"
    elif kind == "few":  # the holding tables with too few units: no interval, whatever the value
        assert out.verdict == "inconclusive" and out.low is None and out.high is None, f"{claim_id}: {out}"
        assert out.reason and not any(g(tables) for g in claim.gates), f"{claim_id}: {out.reason}"
        if isinstance(claim.check, (Difference, Ordering)):  # one run a side, no sibling seed spread
            assert "undecidable by design" in out.reason, f"{claim_id}: {out.reason}"
        elif isinstance(claim.check, PerUnit):  # one run: no t interval
            assert "fewer than 2 independent units" in out.reason, f"{claim_id}: {out.reason}"
        elif isinstance(claim.check, Correlation):
            assert "3 points" in out.reason, f"{claim_id}: {out.reason}"
    else:
        held = evaluate_claim(claim, tables_for(claim, "holds")[0])
        assert out.verdict == "inconclusive", f"{claim_id}: {out}"
        reasons = [r for g in claim.gates if (r := g(tables))]
        assert reasons and out.reason == "; ".join(reasons), f"{claim_id}: {out.reason}"
        assert (out.value, out.low, out.high) == (held.value, held.low, held.high)  # only the verdict is blocked

