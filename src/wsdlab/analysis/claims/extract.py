"""Run-level values read from a study's tables for the claims (each raises NotMeasured when absent).

Only tables are read (the same CSV files the report reads), so claims can be re-evaluated on any
finished study folder. Values are keyed by group (a shape, a panel setting, a scheduler) and unit (a
data-order seed, a run), the unit over which the intervals are formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from wsdlab.analysis.claims.model import NotMeasured, Samples
from wsdlab.analysis.claims.stats import Interval, Z95, sd
from wsdlab.common.types import Row, Tables


def rows(tables: Tables, name: str, *columns: str) -> list[Row]:
    """The rows of table `name`, checked to have `columns`; NotMeasured naming what is missing."""
    if name not in tables:
        raise NotMeasured(f"no table {name}.csv")
    table = tables[name]
    if not table:
        raise NotMeasured(f"table {name}.csv is empty")
    missing = [c for c in columns if c not in table[0]]
    if missing:
        raise NotMeasured(f"table {name}.csv has no column {', '.join(missing)}")
    return table


def num(v: Any) -> float | None:
    """A finite float, or None (empty cells, 'nan', text)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0", "yes")


def by(items: Iterable[Row], *keys: str) -> dict[tuple, list[Row]]:
    out: dict[tuple, list[Row]] = {}
    for r in items:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


# ---------------------------------------------------------------------------------- paper 000


def final_val_loss(tables: Tables) -> Samples:
    """Cooldown grid: shape -> seed -> validation loss at the run's last evaluation (val_curves)."""
    out: Samples = {}
    for (shape, seed), rs in by(rows(tables, "val_curves", "shape", "seed", "step", "val_loss"), "shape", "seed").items():
        last = max(rs, key=lambda r: num(r["step"]) or 0.0)
        v = num(last["val_loss"])
        if v is not None and seed is not None:
            out.setdefault(str(shape), {})[seed] = v
    return out


def final_perplexity(tables: Tables) -> Samples:
    """shape -> seed -> exp(final validation loss): the perplexity of each run."""
    return {g: {k: math.exp(v) for k, v in units.items()} for g, units in final_val_loss(tables).items()}


def pooled_sd(groups: Iterable[Iterable[float]]) -> float | None:
    """Pooled within-group standard deviation sqrt(sum (n_g - 1) s_g^2 / sum (n_g - 1)); None if no group has 2."""
    num_, den = 0.0, 0
    for g in groups:
        vals = list(g)
        if len(vals) >= 2:
            num_ += (len(vals) - 1) * sd(vals) ** 2
            den += len(vals) - 1
    return math.sqrt(num_ / den) if den else None


def seed_spread(tables: Tables) -> float | None:
    """The measured seed noise of one run's final validation loss: pooled across the cooldown grid's shapes.

    The sibling spread for single-seed comparisons (a hyper-parameter setting, an average vs the
    longer run): each of those runs differs from the grid's runs only in what the claim varies.
    """
    try:
        return pooled_sd(units.values() for units in final_val_loss(tables).values())
    except NotMeasured:
        return None


def bias_variance(tables: Tables, space: str) -> dict[str, Row]:
    """shape -> its bias_variance row in `space` (kl, weight, loss, ...)."""
    out = {str(r["shape"]): r for r in rows(tables, "bias_variance", "shape", "space", "bias", "variance")
           if r["space"] == space}
    if not out:
        raise NotMeasured(f"bias_variance.csv has no rows of space '{space}'")
    return out


def bias_variance_points(space: str, x: str, y: str) -> Callable[[Tables], tuple[list[float], list[float]]]:
    """(x, y) of every shape in one space of the bias_variance table (e.g. bias vs variance)."""
    def points(tables: Tables) -> tuple[list[float], list[float]]:
        pairs = [(num(r[x]), num(r[y])) for r in bias_variance(tables, space).values()]
        good = [(a, b) for a, b in pairs if a is not None and b is not None]
        return [a for a, _ in good], [b for _, b in good]
    return points


def across_spaces(space_a: str, space_b: str, column: str) -> Callable[[Tables], tuple[list[float], list[float]]]:
    """`column` of each shape in two spaces (e.g. KL bias vs weight-space bias), shapes present in both."""
    def points(tables: Tables) -> tuple[list[float], list[float]]:
        a, b = bias_variance(tables, space_a), bias_variance(tables, space_b)
        shared = [s for s in a if s in b and num(a[s][column]) is not None and num(b[s][column]) is not None]
        return [num(a[s][column]) for s in shared], [num(b[s][column]) for s in shared]  # type: ignore[misc]
    return points


def _lowered_linear(tables: Tables, space: str) -> dict[float, Row]:
    out = {}
    for shape, r in bias_variance(tables, space).items():
        if shape.startswith("lowered_linear-"):
            p = num(shape.removeprefix("lowered_linear-"))
            if p is not None:
                out[p] = r
    if len(out) < 2:
        raise NotMeasured("fewer than two lowered_linear shapes in bias_variance.csv")
    return out


def lowered_linear_step(space: str, column: str) -> Callable[[Tables], Interval]:
    """`column` (bias or variance) of the lowered-linear shape with the smallest p minus that of the largest p,
    with a 95% interval from the table's jackknife standard errors (`<column>_se`) when present."""
    def interval(tables: Tables) -> Interval:
        ll = _lowered_linear(tables, space)
        lo_p, hi_p = min(ll), max(ll)
        a, b = num(ll[lo_p][column]), num(ll[hi_p][column])
        if a is None or b is None:
            raise NotMeasured(f"bias_variance.csv: no {column} for lowered_linear")
        n = int(num(ll[lo_p].get("n_runs")) or 1)
        se_a, se_b = num(ll[lo_p].get(f"{column}_se")), num(ll[hi_p].get(f"{column}_se"))
        if se_a is None or se_b is None:
            return Interval(a - b, float("nan"), float("nan"), n)
        half = Z95 * math.hypot(se_a, se_b)
        return Interval(a - b, a - b - half, a - b + half, n)
    return interval


def reported_correlation(table: str, match: dict[str, str], column: str = "pearson") -> Callable[[Tables], tuple[float, int]]:
    def get(tables: Tables) -> tuple[float, int]:
        found = [r for r in rows(tables, table, column) if all(str(r.get(k)) == v for k, v in match.items())]
        if not found:
            raise NotMeasured(f"{table}.csv has no row with " + ", ".join(f"{k}={v}" for k, v in match.items()))
        r = found[0]
        n = int(num(r.get("n_shapes")) or num(r.get("n")) or 0)
        v = num(r[column])
        if v is None:
            raise NotMeasured(f"{table}.csv: {column} is not a number (a constant column?)")
        return v, n
    return get


def averaging_samples(tables: Tables) -> Samples:
    """§5: each shape's weight-averaged model and the one longer run ('longer run'), one value each."""
    table = rows(tables, "averaging", "shape", "val_loss_average_model", "val_loss_longer_run")
    out: Samples = {}
    for r in table:
        v = num(r["val_loss_average_model"])
        if v is not None:
            out[str(r["shape"])] = {0: v}
    longer = [num(r["val_loss_longer_run"]) for r in table if num(r["val_loss_longer_run"]) is not None]
    if not longer:
        raise NotMeasured("averaging.csv has no longer-run loss")
    out["longer run"] = {0: longer[0]}
    return out


def variance_vs_average(tables: Tables) -> tuple[list[float], list[float]]:
    """(KL variance, averaged-model val loss) per shape present in both tables."""
    kl = bias_variance(tables, "kl")
    avg = {str(r["shape"]): num(r["val_loss_average_model"])
           for r in rows(tables, "averaging", "shape", "val_loss_average_model")}
    shared = [s for s in avg if s in kl and avg[s] is not None and num(kl[s]["variance"]) is not None]
    return [num(kl[s]["variance"]) for s in shared], [avg[s] for s in shared]  # type: ignore[misc]


def panel_samples(panel: str) -> Callable[[Tables], Samples]:
    """Cooldown hyper-parameter panel `panel`: 'panel=value' -> seed -> val_loss (the panel's first shape)."""
    def samples(tables: Tables) -> Samples:
        table = [r for r in rows(tables, "hyperparams", "panel", "value", "seed", "val_loss") if r["panel"] == panel]
        if not table:
            raise NotMeasured(f"hyperparams.csv has no panel '{panel}'")
        shape = table[0].get("shape")
        out: Samples = {}
        for r in table:
            v = num(r["val_loss"])
            value = num(r["value"])
            if r.get("shape") == shape and v is not None and value is not None:
                out.setdefault(f"{panel}={value:g}", {})[r["seed"]] = v
        return out
    return samples


def reference_gate(tables: Tables) -> str | None:
    """Bias is a distance to the references: they must be better (lower val loss) than every cooldown."""
    try:
        table = rows(tables, "bias_variance", "shape", "space", "bias")
    except NotMeasured:
        return None
    if "reference_val_loss" not in table[0]:
        return "the references' validation loss is not recorded (bias_variance.reference_val_loss): " \
               "cannot check that they are better than the cooldowns"
    ref = num(table[0]["reference_val_loss"])
    losses = {str(r["shape"]): num(r["bias"]) for r in table if r["space"] == "loss"}
    worse = [s for s, v in losses.items() if v is not None and ref is not None and v <= ref]
    if ref is None or worse:
        return (f"the references (val loss {ref:.4g}) are not better than every cooldown "
                f"({', '.join(worse)} reach{'es' if len(worse) == 1 else ''} lower): bias measures a distance to a "
                f"worse model") if ref is not None else "no reference validation loss"
    return None


def recency_stride_note(tables: Tables) -> str:
    try:
        table = rows(tables, "recency", "stride", "n_cooldown_batches")
    except NotMeasured:
        return ""
    r = table[0]
    return f"stride {r['stride']}, {r['n_cooldown_batches']} scored cooldown batches"


def fisher_of(get: Callable[[Tables], tuple[float, int]], spearman: bool = False) -> Callable[[Tables], Interval]:
    """A reported correlation (r, n) with its Fisher-z interval (NotMeasured below 4 points)."""
    from wsdlab.analysis.claims.stats import fisher_interval

    def interval(tables: Tables) -> Interval:
        r, n = get(tables)
        iv = fisher_interval(r, n, spearman=spearman)
        if iv is None:
            return Interval(r, float("nan"), float("nan"), n)
        return iv
    return interval


# ---------------------------------------------------------------------------------- paper 001


def _model_rows(tables: Tables, table: str, model: str, *columns: str) -> list[Row]:
    found = [r for r in rows(tables, table, "model", *columns) if str(r["model"]) == model]
    if not found:
        raise NotMeasured(f"{table}.csv has no rows of model '{model}'")
    return found


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y on x."""
    n = len(points)
    mx = math.fsum(x for x, _ in points) / n
    my = math.fsum(y for _, y in points) / n
    sxx = math.fsum((x - mx) ** 2 for x, _ in points)
    return math.fsum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else float("nan")


def cooldown_gain(model: str) -> Callable[[Tables], dict[object, float]]:
    """Per WSD run: the training-loss drop per step over the cooldown minus that over the equally long
    window of the stable phase just before it, each the least-squares slope of the per-step training
    loss over its window (Fig. 1's "modest decreases during the stable phase ... sudden and larger gains
    during the cooldown", read as rates over equal windows; every step's loss, not the sparse evals)."""
    def values(tables: Tables) -> dict[object, float]:
        curves = _model_rows(tables, "universality_curves", model, "schedule", "split", "step", "loss", "lr")
        out: dict[object, float] = {}
        for (run,), rs in by([r for r in curves if r["schedule"] == "wsd" and r["split"] == "train"], "run").items():
            train = sorted((num(r["step"]), num(r["lr"]), num(r["loss"])) for r in rs)
            train = [(s, lr, v) for s, lr, v in train if s is not None and lr is not None and v is not None]
            if not train:
                continue
            peak = max(lr for _, lr, _ in train)
            t_c = max(s for s, lr, _ in train if lr >= peak * (1 - 1e-9))  # last step at the peak LR
            end = train[-1][0]
            length = end - t_c
            cool = [(s, v) for s, _, v in train if t_c < s <= end]
            stable = [(s, v) for s, _, v in train if t_c - length < s <= t_c]
            if len(cool) < 3 or len(stable) < 3:
                continue
            out[run] = slope(stable) - slope(cool)  # = (-slope_cooldown) - (-slope_stable)
        if not out:
            raise NotMeasured(f"no WSD run of model '{model}' with 3+ training steps in its cooldown and before it")
        return out
    return values


def interpolation(model: str, segment: str, statistic: Callable[[list[tuple[float, float]]], float]
                  ) -> Callable[[Tables], dict[object, float]]:
    """Per run: `statistic` of the (alpha, loss) profile of one interpolation segment (Fig. 2)."""
    def values(tables: Tables) -> dict[object, float]:
        table = _model_rows(tables, "universality_interpolate", model, "run", "segment", "alpha", "loss")
        out: dict[object, float] = {}
        for (run,), rs in by([r for r in table if r["segment"] == segment], "run").items():
            prof = sorted((num(r["alpha"]), num(r["loss"])) for r in rs)
            prof = [(a, v) for a, v in prof if a is not None and v is not None]
            if len(prof) >= 3:
                out[run] = statistic(prof)  # type: ignore[arg-type]
        if not out:
            raise NotMeasured(f"no '{segment}' interpolation of model '{model}' with 3 or more points")
        return out
    return values


def valley_depth(profile: list[tuple[float, float]]) -> float:
    """min(loss at alpha 0, loss at alpha 1) - min over 0 < alpha < 1: > 0 when the profile dips inside."""
    ends = [v for a, v in profile if a in (0.0, 1.0)]
    inner = [v for a, v in profile if 0.0 < a < 1.0]
    if len(ends) < 2 or not inner:
        raise NotMeasured("the interpolation has no points at alpha 0, 1 and between")
    return min(ends) - min(inner)


def largest_rise(profile: list[tuple[float, float]]) -> float:
    """The largest increase between consecutive alphas in [0, 1]: < 0 when the descent is monotone."""
    inside = [(a, v) for a, v in profile if 0.0 <= a <= 1.0]
    return max(b - a for (_, a), (_, b) in zip(inside, inside[1:]))


def sharpness_rise(model: str) -> Callable[[Tables], dict[object, float]]:
    """Per WSD run: lambda_1 at the end of the sampled cooldown minus at its start (Fig. 3 left)."""
    def values(tables: Tables) -> dict[object, float]:
        table = _model_rows(tables, "universality_sharpness", model, "run", "cooldown_progress", "lambda_1")
        out: dict[object, float] = {}
        for (run,), rs in by(table, "run").items():
            pts = sorted((num(r["cooldown_progress"]), num(r["lambda_1"])) for r in rs)
            pts = [(p, v) for p, v in pts if p is not None and v is not None]
            if len(pts) >= 2:
                out[run] = pts[-1][1] - pts[0][1]
        if not out:
            raise NotMeasured(f"no sharpness path of model '{model}'")
        return out
    return values


def lanczos_gate(table: str, model: str | None = None) -> Callable[[Tables], str | None]:
    """Inconclusive unless every top-eigenvalue estimate converged (the `converged` column)."""
    def gate(tables: Tables) -> str | None:
        if table not in tables or not tables[table]:
            return None
        rs = [r for r in tables[table] if model is None or str(r.get("model")) == model]
        if not rs:
            return None
        if "converged" not in rs[0]:
            return f"{table}.csv does not record whether the eigenvalue solver converged"
        bad = [r for r in rs if not truthy(r.get("converged"))]
        if bad:
            res = [num(r.get("residual")) for r in bad]
            worst = max((x for x in res if x is not None), default=None)
            return (f"eigenvalue solver not converged at {len(bad)} of {len(rs)} points"
                    + (f" (largest residual {worst:.2g})" if worst is not None else ""))
        return None
    return gate


def pca_share(model: str, sets: tuple[str, ...] = ("S", "D")) -> Callable[[Tables], dict[object, float]]:
    """Per run and phase set (S: stable, D: decay): PC1's share of the iterates' variance (Fig. 7)."""
    def values(tables: Tables) -> dict[object, float]:
        table = _model_rows(tables, "universality_trajectory", model, "run", "kind", "set", "pc1_share")
        out = {(r["run"], r["set"]): num(r["pc1_share"]) for r in table
               if r["kind"] == "pca" and r["set"] in sets and num(r["pc1_share"]) is not None}
        if not out:
            raise NotMeasured(f"no PCA rows of model '{model}'")
        return out  # type: ignore[return-value]
    return values


def pca_iterates_gate(model: str, need: int = 5) -> Callable[[Tables], str | None]:
    def gate(tables: Tables) -> str | None:
        rs = [r for r in tables.get("universality_trajectory", []) if str(r.get("model")) == model
              and r.get("kind") == "pca" and r.get("set") in ("S", "D")]
        if rs and "num_iterates" not in rs[0]:
            return "universality_trajectory.csv does not record the number of PCA iterates"
        few = [int(num(r.get("num_iterates")) or 0) for r in rs if (num(r.get("num_iterates")) or 0) < need]
        return f"PCA from fewer than {need} iterates ({min(few)})" if few else None
    return gate


def hv_ratio(model: str) -> Callable[[Tables], dict[object, float]]:
    """Per run: log(||H v_d|| / ||H v_s||) (Fig. 3 right): > 0 when the decay direction is sharper."""
    def values(tables: Tables) -> dict[object, float]:
        table = _model_rows(tables, "universality_trajectory", model, "run", "kind", "direction", "hv_norm")
        out: dict[object, float] = {}
        for (run,), rs in by([r for r in table if r["kind"] == "hv"], "run").items():
            hv = {r["direction"]: num(r["hv_norm"]) for r in rs}
            if hv.get("v_d") and hv.get("v_s"):
                out[run] = math.log(hv["v_d"] / hv["v_s"])  # type: ignore[operator]
        if not out:
            raise NotMeasured(f"no ||Hv|| rows of model '{model}'")
        return out
    return values


def path_mean(model: str, column: str) -> Callable[[Tables], dict[object, float]]:
    """Per run: the mean of `column` (tau, cos_grad_update) over the sampled iterates (Fig. 4)."""
    def values(tables: Tables) -> dict[object, float]:
        table = _model_rows(tables, "universality_trajectory", model, "run", "kind", column)
        out: dict[object, float] = {}
        for (run,), rs in by([r for r in table if r["kind"] == "path"], "run").items():
            vals = [num(r[column]) for r in rs if num(r[column]) is not None]
            if vals:
                out[run] = math.fsum(vals) / len(vals)  # type: ignore[arg-type]
        if not out:
            raise NotMeasured(f"no {column} values of model '{model}'")
        return out
    return values


def update_norm_gap(model: str) -> Callable[[Tables], dict[object, float]]:
    """Per WSD run: mean update norm in the stable phase minus in the cooldown (Fig. 6)."""
    def values(tables: Tables) -> dict[object, float]:
        table = _model_rows(tables, "universality_norms", model, "run", "phase", "update_norm")
        out: dict[object, float] = {}
        for (run,), rs in by(table, "run").items():
            phase = {p: [num(r["update_norm"]) for r in rs if r["phase"] == p and num(r["update_norm"]) is not None]
                     for p in ("stable", "cooldown")}
            if phase["stable"] and phase["cooldown"]:
                out[run] = (math.fsum(phase["stable"]) / len(phase["stable"])  # type: ignore[arg-type]
                            - math.fsum(phase["cooldown"]) / len(phase["cooldown"]))  # type: ignore[arg-type]
        if not out:
            raise NotMeasured(f"no update norms of model '{model}'")
        return out
    return values


def length_samples(model: str) -> Callable[[Tables], Samples]:
    """Fig. 5: 'cosine' and 'wsd f=<fraction>' -> seed -> final val loss (sweep and main WSD runs)."""
    def samples(tables: Tables) -> Samples:
        table = _model_rows(tables, "universality_length", model, "seed", "source", "cooldown_fraction", "val_loss")
        out: Samples = {}
        for r in table:
            v = num(r["val_loss"])
            if v is None:
                continue
            if r["source"] == "cosine":
                out.setdefault("cosine", {})[r["seed"]] = v
            else:
                f = num(r["cooldown_fraction"])
                if f is not None:
                    out.setdefault(f"wsd f={f:g}", {})[r["seed"]] = v
        return out
    return samples


def final_by_schedule(model: str) -> Callable[[Tables], Samples]:
    """Fig. 1 runs: schedule (wsd, cosine) -> seed -> validation loss at the run's last evaluation."""
    def samples(tables: Tables) -> Samples:
        curves = _model_rows(tables, "universality_curves", model, "seed", "schedule", "split", "step", "loss")
        out: Samples = {}
        for (sched, seed), rs in by([r for r in curves if r["split"] == "val"], "schedule", "seed").items():
            last = max(rs, key=lambda r: num(r["step"]) or 0.0)
            v = num(last["loss"])
            if v is not None:
                out.setdefault(str(sched), {})[seed] = v
        return out
    return samples


def shortest_fraction(below: float | None = None, at_least: float | None = None) -> Callable[[Samples], str]:
    """The WSD group of `length_samples` with the largest fraction < `below`, or the smallest >= `at_least`."""
    def pick(samples: Samples) -> str:
        fr = sorted(float(g.removeprefix("wsd f=")) for g in samples if g.startswith("wsd f="))
        cands = [f for f in fr if (below is None or f < below) and (at_least is None or f >= at_least - 1e-9)]
        if not cands:
            raise NotMeasured(f"no cooldown fraction {'< %g' % below if below else '>= %g' % at_least}")
        return f"wsd f={(max(cands) if below is not None else min(cands)):g}"
    return pick


# ---------------------------------------------------------------------------------- paper 002


def _wso_name(r: Row) -> str:
    """'WSO' for no decay in any stage (alpha_pre = 1 and, after mid-training, alpha_mid = 1), else the model."""
    a, mid = num(r.get("alpha_pre")), num(r.get("alpha_mid"))
    if a is not None and a >= 1.0 and (mid is None or mid >= 1.0):
        return "WSO"
    return f"{r.get('scheduler')} a_pre={a:g}" + (f" a_mid={mid:g}" if mid is not None else "")


def _best_vs_wso(models: dict[str, dict[object, float]], higher_better: bool, where: str) -> Samples:
    if "WSO" not in models:
        raise NotMeasured(f"no WSO model in {where}")
    decay = {k: v for k, v in models.items() if k != "WSO" and v}
    if not decay:
        raise NotMeasured(f"no decay-based model in {where}")
    pick = (max if higher_better else min)(decay, key=lambda k: math.fsum(decay[k].values()) / len(decay[k]))
    return {"WSO": models["WSO"], f"best decay-based ({pick})": decay[pick]}


def wso_vs_best_decay(stage: str, column: str, higher_better: bool) -> Callable[[Tables], Samples]:
    """Table 1 pre-training metrics: 'WSO' and 'best decay-based' (the decay-based model of `stage` with the
    best `column` in wso_delta, as the paper's reference row) -> one value each (pre-training has one seed)."""
    def samples(tables: Tables) -> Samples:
        models: dict[str, dict[object, float]] = {}
        for r in rows(tables, "wso_delta", "stage", "scheduler", "alpha_pre", column):
            v = num(r[column])
            if r["stage"] == stage and v is not None and num(r["alpha_pre"]) is not None:
                models.setdefault(_wso_name(r), {})[0] = v
        return _best_vs_wso(models, higher_better, f"wso_delta.csv stage '{stage}'")
    return samples


def wso_sft_vs_best_decay(base: str) -> Callable[[Tables], Samples]:
    """Tables 1-2 after SFT: 'WSO' and the best decay-based model (highest mean task acc_norm) -> SFT data-order
    seed -> task acc_norm at each model's selected SFT learning rate (wso_sft_sweep rows with best = True)."""
    def samples(tables: Tables) -> Samples:
        models: dict[str, dict[object, float]] = {}
        for r in rows(tables, "wso_sft_sweep", "base", "scheduler", "alpha_pre", "task_acc_norm", "best"):
            v = num(r["task_acc_norm"])
            if r["base"] == base and truthy(r["best"]) and v is not None and num(r["alpha_pre"]) is not None:
                seed = r.get("seed") if r.get("seed") is not None else 0
                models.setdefault(_wso_name(r), {})[seed] = v
        return _best_vs_wso(models, True, f"wso_sft_sweep.csv base '{base}'")
    return samples


def task_noise_gate(samples: Callable[[Tables], Samples]) -> Callable[[Tables], str | None]:
    """Inconclusive when WSO's task-score difference from the best decay-based model is within the
    multiple-choice task's item-sampling noise, 1.96 sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n) for n items
    (wso_models.task_n): SFT seeds share the items, so their spread does not contain this noise."""
    def gate(tables: Tables) -> str | None:
        items = [num(r.get("task_n")) for r in tables.get("wso_models", []) if num(r.get("task_n"))]
        if not items:
            return "the task's item count is not recorded (wso_models.task_n): its sampling noise is unknown"
        n = min(items)  # type: ignore[type-var]
        try:
            s = samples(tables)
        except NotMeasured:
            return None
        (a, va), (b, vb) = list(s.items())[:2]
        pa, pb = (math.fsum(v.values()) / len(v) for v in (va, vb))
        half = Z95 * math.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)  # type: ignore[operator]
        if abs(pa - pb) < half:
            return (f"the difference {pa - pb:+.3f} is within the task's item-sampling noise (+-{half:.3f} on "
                    f"{int(n)} items)")  # type: ignore[arg-type]
        return None
    return gate


def group_named(prefix: str) -> Callable[[Samples], str]:
    """The key of the group whose name starts with `prefix` (e.g. 'best decay-based (...)', named after the
    model the extractor chose)."""
    def key(samples: Samples) -> str:
        found = [k for k in samples if k.startswith(prefix)]
        if not found:
            raise NotMeasured(f"no group '{prefix}...'")
        return found[0]
    return key


def trace_gap(dataset: str = "pt") -> Callable[[Tables], Interval]:
    """Fig. 3: final Hessian trace of the least sharp fully decayed model (alpha_pre = 0) minus WSO's,
    with a 95% interval from the two Hutchinson standard errors (normal: independent probes)."""
    def interval(tables: Tables) -> Interval:
        table = [r for r in rows(tables, "wso_sharpness", "scheduler", "alpha_pre", "step", "dataset", "trace", "stderr")
                 if r["dataset"] == dataset and r.get("alpha_mid") in ("", None)]  # pre-training models only
        last: dict[tuple, Row] = {}
        for r in table:
            key = (r["scheduler"], num(r["alpha_pre"]))
            if key not in last or (num(r["step"]) or 0) > (num(last[key]["step"]) or 0):
                last[key] = r
        wso = [r for (s, a), r in last.items() if a is not None and a >= 1.0]
        decayed = [r for (s, a), r in last.items() if a == 0.0]
        if not wso or not decayed:
            raise NotMeasured("wso_sharpness.csv needs a WSO and an alpha_pre = 0 model")
        w = wso[0]
        d = min(decayed, key=lambda r: num(r["trace"]) or 0.0)
        gap = (num(d["trace"]) or 0.0) - (num(w["trace"]) or 0.0)
        se = math.hypot(num(d["stderr"]) or float("nan"), num(w["stderr"]) or float("nan"))
        return Interval(gap, gap - Z95 * se, gap + Z95 * se, 1)
    return interval


def hutchinson_gate(dataset: str = "pt", min_samples: int = 10) -> Callable[[Tables], str | None]:
    """Inconclusive when the traces compared rest on fewer than `min_samples` probes (their standard error
    is itself unreliable) or the table flags them imprecise."""
    def gate(tables: Tables) -> str | None:
        rs = [r for r in tables.get("wso_sharpness", []) if r.get("dataset") == dataset]
        if not rs:
            return None
        few = [int(num(r.get("samples")) or 0) for r in rs if (num(r.get("samples")) or 0) < min_samples]
        if few:
            return f"Hutchinson traces from {min(few)} probes (< {min_samples}): their standard error is unreliable"
        return None  # a trace above its error target is fine: the interval uses its standard error
    return gate
