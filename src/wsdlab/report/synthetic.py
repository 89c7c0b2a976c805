"""Synthetic but well-formed analysis tables: for the report's tests and for previewing the page.

`python -m wsdlab.report --demo DIR` writes them into DIR/tables/ and builds DIR/report.html. The
numbers are made up (smooth curves plus noise); only the table formats (the columns documented in
the analysis modules and written by the study runner) are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsdlab.analysis.tables import write_table
from wsdlab.common.io import atomic_write_text
from wsdlab.report.aggregate import Row, Tables
from wsdlab.report.catalog import FIGURES
from wsdlab.schedules import Schedule, ScheduleConfig, build_schedule

# shape label (name, or name-parameter) -> how much higher its final loss lands than the best one (made up)
SHAPES: dict[str, float] = {
    "linear": 0.02, "cosine": 0.03, "mirror_cosine": 0.05, "square": 0.06, "sqrt": 0.0, "lowered_linear-0.7": 0.01,
}
SEEDS = (0, 1, 2)
SPACES = {"kl": 0.02, "weight": 3.0, "loss": 0.1, "avg_loss_var_loss": 2.7, "avg_loss_var_weight": 2.7}
# geometry runs (folder name -> the study runner's `shape` label, a made-up sharpness scale)
RUNS = {"cooldown-sqrt-s0-0123456789": ("sqrt", 1.0), "cooldown-linear-s0-abcdef0123": ("linear", 1.3)}
BASE_RUN = "base-9876543210"


def synthetic_tables(seed: int = 0, *, stable_steps: int = 80, cooldown_steps: int = 20) -> Tables:
    """One table of every kind the report reads, keyed by table name."""
    rng = np.random.default_rng(seed)
    k, n = stable_steps, cooldown_steps
    t: Tables = {}
    t.update(_curves(rng, k, n))
    t.update(_bias_variance_and_perplexity(rng))
    t.update(_recency(rng, k, n))
    t.update(_hyperparams_and_alignment(rng, k, n))
    t.update(_geometry(rng, k, n))
    for spec in FIGURES:  # figures whose entry carries its own example tables
        if spec.example is not None:
            t.update(spec.example(rng, k, n))
    t.update(_universality(rng))
    t["runs"] = [{"key": "base", "stage": "base", "state": "complete"}] + [
        {"key": f"cooldown-{s}-s{sd}", "stage": "cooldown", "shape": s, "seed": sd, "state": "complete"}
        for s in SHAPES for sd in SEEDS
    ]
    return t


def shape_schedule(label: str, stable_steps: int, cooldown_steps: int) -> Schedule:
    """The WSD schedule (no warmup) of a SHAPES label ('sqrt', 'lowered_linear-0.7': shape and shape_param),
    built by `wsdlab.schedules`: 1 up to `stable_steps`, then the shape over `cooldown_steps`."""
    name, _, param = label.partition("-")
    cfg = ScheduleConfig(kind="wsd", cooldown_steps=cooldown_steps, shape=name,
                         shape_param=float(param) if param else None)
    return build_schedule(cfg, stable_steps + cooldown_steps)


def _loss(step: np.ndarray | float) -> np.ndarray | float:
    return 3.0 + 3.0 * np.exp(-np.asarray(step) / 25)


def _curves(rng: np.random.Generator, k: int, n: int) -> Tables:
    """schedules (the base phase included) and val_curves (the base's evaluations shared by every branch)."""
    steps = np.arange(0, k + n + 1, 5)
    base = {int(s): float(_loss(s) + 0.01 * rng.standard_normal()) for s in steps if s <= k}

    def cooldown(shape: str, step: int) -> float:
        return float(_loss(step) - 0.3 * (step - k) / n + SHAPES[shape] + 0.01 * rng.standard_normal())

    schedules = {s: shape_schedule(s, k, n) for s in SHAPES}
    return {
        "schedules": [{"shape": s, "step": int(t), "lr_factor": float(schedules[s](int(t)))} for s in SHAPES for t in steps],
        "val_curves": [{"shape": s, "seed": sd, "step": int(t), "val_loss": base[int(t)] if t <= k else cooldown(s, t)}
                       for s in SHAPES for sd in SEEDS for t in steps],
    }


def _bias_variance_and_perplexity(rng: np.random.Generator) -> Tables:
    """bias_variance, perplexity, perplexity_vs_bias and averaging."""
    bv = [{"shape": s, "space": space, "bias": float(scale * (1 + 5 * d)), "variance": float(scale * (0.7 - 3 * d)),
           "n_runs": len(SEEDS)} for space, scale in SPACES.items() for s, d in SHAPES.items()]
    ppl_rows = []
    for s, d in SHAPES.items():
        losses = 2.7 + d + 0.01 * rng.standard_normal(len(SEEDS))
        ppl, avg_loss = np.exp(losses), float(losses.mean() - 0.01)
        ppl_rows.append({"shape": s, "ppl_mean": float(ppl.mean()), "ppl_min": float(ppl.min()),
                         "ppl_max": float(ppl.max()), "ppl_avg_model": float(np.exp(avg_loss)),
                         "val_loss_mean": float(losses.mean()), "val_loss_avg_model": avg_loss, "n_runs": len(SEEDS)})
    return {
        "bias_variance": bv,
        "perplexity": ppl_rows,
        "perplexity_vs_bias": [{"space": space, "x": "bias", "y": "ppl_avg_model", "spearman": 0.9, "pearson": 0.85,
                                "n_shapes": len(SHAPES)} for space in SPACES],
        # every shape's average vs the one longer run they share (Fig. 10: all averages lose to it)
        "averaging": [{"shape": s, "n_models": 4, "val_loss_average_model": float(2.71 + 0.02 - 0.4 * d),
                       "val_loss_longer_run": 2.69, "val_loss_members_mean": float(2.75 + d)} for s, d in SHAPES.items()],
    }


def _recency(rng: np.random.Generator, k: int, n: int) -> Tables:
    """recency_curves, recency and recency_correlations."""

    def diff(j: int, d: float) -> float:
        return float(-4.0 * np.exp(-(n - j) / (3 + 20 * d))) if j >= n // 2 else float(-1.0 - 0.02 * j)

    curves = []
    for s, d in SHAPES.items():
        for sd in SEEDS:
            for j in range(n):
                pre = float(40.0 - 0.1 * j)
                post = pre + diff(j, d) + 0.2 * float(rng.standard_normal())
                curves.append({"shape": s, "seed": sd, "batch_position": j, "step": j + 1,
                               "phase": "cooldown" if j >= n // 2 else "stable", "stride": 1, "ppl_pre": pre,
                               "ppl_post": post, "ppl_diff": post - pre, "ppl_pre_smoothed": pre,
                               "ppl_post_smoothed": pre + diff(j, d), "ppl_diff_smoothed": diff(j, d)})
    summary = [{"shape": s, "seed": sd, "shift": float(-3.0 - d + 0.1 * rng.standard_normal()),
                "deviation": float(0.5 + 5 * d + 0.05 * rng.standard_normal()), "n_batches": n,
                "n_cooldown_batches": n - n // 2, "stride": 1} for s, d in SHAPES.items() for sd in SEEDS]
    corr = [{"x": "shift", "y": "bias", "space": "kl", "spearman": -0.8, "pearson": -0.75, "n_shapes": len(SHAPES)},
            {"x": "deviation", "y": "variance", "space": "kl", "spearman": 0.7, "pearson": 0.6,
             "n_shapes": len(SHAPES)}]
    return {"recency_curves": curves, "recency": summary, "recency_correlations": corr}


HYPER_SHAPES = ("sqrt", "linear", "square")  # the panels are run for several shapes (Figs. 12, 25)


def _hyperparams_and_alignment(rng: np.random.Generator, k: int, n: int) -> Tables:
    """hyperparams (the study runner's shape and panel names) and alignment (mean and CI per step)."""
    panels = {"betas_p": [0.5, 1.0, 2.0], "beta2_p": [0.5, 1.0, 2.0], "batch_x": [1, 2, 4],
              "batch_x_half_life": [1, 2, 4], "weight_decay_off": [0, 1], "reset_optimizer": ["no", "yes"]}
    hyper = []
    for shape in HYPER_SHAPES:
        for panel, values in panels.items():
            for i, v in enumerate(values):
                for sd in SEEDS[:2]:
                    loss = float(2.7 + SHAPES[shape] + 0.02 * i + 0.005 * rng.standard_normal())
                    hyper.append({"shape": shape, "panel": panel, "value": v, "seed": sd, "val_loss": loss,
                                  "ppl": float(np.exp(loss))})
    align = []
    for metric, base in (("grad_momentum_cos", 0.3), ("grad_momentum_cos_global", 0.25), ("grad_norm", 0.5)):
        for s, d in SHAPES.items():
            for step in range(k, k + n + 1, 2):
                x = (step - k) / n
                m = base * np.exp(4 * x * (1 + d)) if metric == "grad_norm" else base - d - 0.2 * x
                align.append({"shape": s, "step": step, "metric": metric, "mean": float(m), "ci_low": 0.9 * m,
                              "ci_high": 1.1 * m, "n": len(SEEDS)})
    return {"hyperparams": hyper, "alignment": align}


def _geometry(rng: np.random.Generator, k: int, n: int) -> Tables:
    """sharpness, interpolate, landscape, trajectory (pca / hv / path rows) and probes, each row led by the
    `shape` label the study runner adds ('stable' for the base run)."""
    total = k + n
    (first, (first_shape, _)) = next(iter(RUNS.items()))
    sharp = [{"shape": "stable", "run": BASE_RUN, "step": t, "dataset": "val", "method": "exact", "estimator": "",
              "loss": float(_loss(t)), "trace": float(50 + 2 * t), "trace_stderr": float(2 + rng.random()),
              "samples": 100, "products": 100, "lambda_1": float(5 + 0.1 * t), "lambda_2": float(3 + 0.05 * t)}
             for t in range(0, k + 1, 10)]
    sharp += [{"shape": shape, "run": r, "step": t, "dataset": "val", "method": "exact", "estimator": "",
               "loss": float(_loss(t)), "trace": float(f * (50 + 2 * t) * 0.5), "trace_stderr": float(2 + rng.random()),
               "samples": 100, "products": 100, "lambda_1": float(f * (5 + 0.1 * t) * 0.6),
               "lambda_2": float(f * (3 + 0.05 * t))} for r, (shape, f) in RUNS.items() for t in range(k, total + 1, 5)]
    interp = []
    for r, (shape, f) in RUNS.items():
        for a in np.round(np.linspace(-0.5, 1.5, 21), 6):
            loss = float(2.8 - 0.3 * f * a + 0.75 * a * a - 0.6 * a)
            interp.append({"shape": shape, "run": BASE_RUN, "from_run": BASE_RUN, "from_step": k, "to_run": r,
                           "to_step": total, "dataset": "val", "alpha": float(a), "loss": loss,
                           "perplexity": float(np.exp(loss))})
    land = []
    for p in range(k, total + 1, n // 2):
        for a in np.linspace(-0.5, 1.5, 9):
            for b in np.linspace(-2.0, 2.0, 9):
                loss = float(2.7 + 0.4 * (a - (total - p) / n) ** 2 + 0.1 * (b - 0.5) ** 2)
                land.append({"shape": first_shape, "run": first, "point": p, "pre_step": k, "final_step": total,
                             "after_step": p + 10,
                             "dataset": "val", "a": float(a), "b": float(b), "loss": loss,
                             "perplexity": float(np.exp(loss)), "e1_norm": 3.0, "e2_norm": 0.4})
    probes = []
    for t in range(k, total + 1, n // 2):
        for layer in range(5):
            ppl = 400 / (1 + layer) ** 1.5 * (1 - 0.1 * (t - k) / n)
            probes.append({"shape": first_shape, "run": first, "step": t, "layer": layer, "loss": float(np.log(ppl)),
                           "perplexity": float(ppl),
                           "initial_loss": float(np.log(ppl * 1.1)), "initial_perplexity": float(ppl * 1.1),
                           "rel_perplexity": float(1 - 0.1 * (t - k) / n)})
    return {"sharpness": sharp, "interpolate": interp, "landscape": land, "trajectory": _trajectory(rng, k, n),
            "probes": probes}


def _trajectory(rng: np.random.Generator, k: int, n: int) -> list[Row]:
    rows: list[Row] = []
    for seed in range(3):
        for name, (shape, f) in RUNS.items():
            run = name.replace("s0", f"s{seed}")
            for s, share in (("S", 0.5), ("D", 0.9), ("S'", 0.4), ("D'", 0.95)):
                rows.append({"shape": shape, "run": run, "kind": "pca", "set": s, "num_iterates": 10, "first_step": 0,
                             "last_step": k + n, "pc1_share": float(min(1.0, share + 0.03 * rng.standard_normal())),
                             "pc2_share": 0.05})
            for d, hv in (("v_s", 20.0), ("v_d", 2.0)):
                rows.append({"shape": shape, "run": run, "kind": "hv", "direction": d, "step": k,
                             "hv_norm": float(hv * f * np.exp(0.2 * rng.standard_normal())), "cos_vs_vd": 0.1})
            for t in range(10, k + n + 1, 10):
                phase = "warmup" if t <= 10 else ("stable" if t <= k else "decay")
                rows.append({"shape": shape, "run": run, "kind": "path", "step": t, "phase": phase,
                             "loss": float(_loss(t)),
                             "grad_norm": 1.0, "param_norm": float(10 + 0.05 * t * f),
                             "distance_to_final": float(0.1 * (k + n - t)),
                             "tau": float(1.0 + 0.5 * (phase == "decay") + 0.2 * rng.standard_normal()),
                             "cos_grad_update": float(0.1 + 0.4 * (phase == "decay") + 0.05 * rng.standard_normal())})
    return rows


def _universality(rng: np.random.Generator, steps: int = 100, warmup: int = 10) -> Tables:
    """Paper 001's tables for an LM and a CNN, 3 seeds: WSD (decay over the last 20% / 35%) and cosine curves
    with accuracy for the CNN, norms, interpolation (valley, then descent), sharpness, trajectory rows and a
    cooldown-length sweep (10%..50%) whose 30% cooldown first matches cosine."""
    t: Tables = {name: [] for name in ("universality_curves", "universality_norms", "universality_interpolate",
                                         "universality_sharpness", "universality_trajectory", "universality_length")}
    for model, cool in (("lm", 0.2), ("cnn", 0.35)):
        t_c = steps - round(cool * steps)
        for seed in SEEDS:
            head = {"model": model, "seed": seed}
            for schedule in ("wsd", "cosine"):
                run = f"{model}-{schedule}-seed{seed}"
                for step in range(1, steps + 1, 5):
                    loss = 3.0 - step / steps - (0.5 * max(0, step - t_c) / (steps - t_c) if schedule == "wsd" else 0.4 * step / steps)
                    acc = 0.2 + 0.6 * (3.0 - loss) / 1.5 if model == "cnn" else None
                    for split, jitter in (("train", 0.05), ("val", 0.01)):
                        t["universality_curves"].append({**head, "run": run, "schedule": schedule, "split": split, "step": step,
                                                         "loss": loss + jitter * float(rng.standard_normal()),
                                                         "accuracy": acc, "lr": None})
            run = f"{model}-wsd-seed{seed}"
            t["universality_norms"] += [{**head, "run": run, "step": s, "phase": "stable" if s <= t_c else "cooldown",
                                         "param_norm": 10 + 0.02 * s, "update_norm": 0.1 if s <= t_c else 0.1 * (steps - s) / (steps - t_c) + 1e-3,
                                         "decay_start": t_c} for s in range(warmup + 1, steps + 1)]
            for segment, curve in (("stable", lambda a: 2.0 + (a - 0.5) ** 2), ("cooldown", lambda a: 2.0 - 0.5 * a)):
                t["universality_interpolate"] += [{**head, "run": run, "segment": segment, "from_step": 0, "to_step": 1,
                                                   "alpha": a, "loss": curve(a)} for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
            t["universality_sharpness"] += [{**head, "run": run, "step": s, "decay_start": t_c, "cooldown_progress": 0.0,
                                             "lambda_1": 10.0 + 0.2 * (s - t_c) + float(rng.standard_normal()), "loss": 2.0}
                                            for s in range(t_c, steps + 1, 5)]
            traj = t["universality_trajectory"]
            traj += [{**head, "run": run, "kind": "pca", "set": name, "pc1_share": share}
                     for name, share in (("S", 0.6), ("D", 0.7), ("S'", 0.5), ("D'", 0.8))]
            traj += [{**head, "run": run, "kind": "hv", "direction": d, "hv_norm": v} for d, v in (("v_s", 1.0), ("v_d", 3.0))]
            traj += [{**head, "run": run, "kind": "path", "step": s, "phase": "stable" if s <= t_c else "decay",
                      "tau": 1.0 + 0.3 * float(rng.standard_normal()), "cos_grad_update": 0.3 + 0.05 * float(rng.standard_normal())}
                     for s in range(warmup, steps, 10)]
        if model == "cnn":
            for seed in SEEDS:
                t["universality_length"].append({"model": model, "seed": seed, "run": f"cnn-cosine-seed{seed}", "schedule": "cosine",
                                                 "source": "cosine", "cooldown_fraction": 1.0, "val_loss": 1.0 + 0.01 * seed,
                                                 "val_accuracy": 0.7})
            for frac in (0.1, 0.2, 0.3, 0.4, 0.5):
                t["universality_length"].append({"model": model, "seed": 0, "run": f"cnn-cd-{frac}", "schedule": "wsd",
                                                 "source": "sweep", "cooldown_fraction": frac, "val_loss": 1.3 - frac,
                                                 "val_accuracy": 0.6 + frac / 5})
    columns = list(dict.fromkeys(c for r in t["universality_trajectory"] for c in r))  # one table: every row every column
    t["universality_trajectory"] = [{c: r.get(c) for c in columns} for r in t["universality_trajectory"]]
    return t


def write_synthetic_study(study_dir: Path, tables: Tables | None = None) -> Path:
    """Write `tables` (default: all synthetic ones) as STUDY/tables/*.csv and a study.yaml (the report
    reads nothing else); return the study folder."""
    study_dir = Path(study_dir)
    for name, rows in (synthetic_tables() if tables is None else tables).items():
        write_table(rows, study_dir / "tables" / f"{name}.csv")
    atomic_write_text(study_dir / "study.yaml", "name: synthetic\ndescription: Made-up tables for a preview.\n")
    return study_dir


def rows_of(tables: Tables, *names: str) -> Tables:
    """A sub-dict of tables (tests draw one figure from just the tables it declares)."""
    return {n: list(tables[n]) for n in names}
