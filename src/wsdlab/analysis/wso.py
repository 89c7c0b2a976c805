"""The WSO paper's tables and sharpness figures ("Pre-training without learning rate decay enhances
supervised fine-tuning"): units over a study with stages `pretrain` (scheduler x alpha_pre), `mid`
(alpha_mid, eq. 11) and `sft` (an LR sweep per pre- or mid-trained model, Table 8, optionally with
several data-order seeds per LR).

- `wso_eval`: per pre-/mid-trained model its validation loss and the multiple-choice task (acc, acc_norm,
  scored like lm-evaluation-harness: `multiple_choice.py`); per SFT run (every LR and seed of the sweep) its
  SFT validation loss and the task after SFT, the selected LR per model marked (`select_by`, below).
- `wso_delta`: Tables 1-4, "differences from the best-performing decay-based scheduler for that metric"
  in PT (or MT) validation loss, PT (MT) task average and SFT task average: one reference per stage and
  metric; task differences in points (x100) as printed.
- `wso_sharpness`: Fig. 3, the Hessian trace (eq. 6, "Sharpness(theta_t) = Tr(H_L(theta_t))") by Hutchinson's
  estimator (eq. 12, Rademacher z_i) with its standard error, on kept checkpoints along pre-training, "on
  held-out validation sets from both the pre-training dataset and the SFT dataset" (App. H); probes are
  added until the standard error is a set fraction of |trace| (or a maximum is reached).
- `wso_correlation`: Fig. 4, SFT score vs final sharpness with Pearson r and its 95% confidence interval
  (Fisher z: tanh(atanh r +- 1.96 / sqrt(n - 3))).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from wsdlab.analysis.units import (
    AnalysisUnit,
    RunSelector,
    SelectedRun,
    UnitContext,
    register_unit,
)
from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row

PRETRAIN = RunSelector(stage=["pretrain"])
MID = RunSelector(stage=["mid"])
SFT = RunSelector(stage=["sft", "sft_mid"])


def model_labels(sel: SelectedRun) -> dict[str, Any]:
    """scheduler, alpha_pre (1 for WSO: "Obtained by setting alpha_pre = 1 in WSD", eq. 8), alpha_mid ('' without)."""
    labels = sel.labels
    spec = sel.run.spec
    kind = str(labels.get("kind", spec.schedule.kind))
    alpha = float(labels.get("alpha", spec.schedule.alpha))
    mid = labels.get("alpha_mid")
    return {"scheduler": kind, "alpha_pre": 1.0 if kind == "wso" else alpha,
            "alpha_mid": "" if mid is None else float(mid)}


def model_key(row: Row) -> str:
    mid = row.get("alpha_mid")
    base = f"{row['scheduler']}-a{float(row['alpha_pre']):g}"
    return base if mid in ("", None) else f"{base}-mid{float(mid):g}"


def final_val_loss(run: Any) -> float | None:
    rows = [r for r in run.eval_rows() if r.get("val_loss") is not None]
    return float(rows[-1]["val_loss"]) if rows else None


class EvalOptions(StrictModel):
    """Options of `wso_eval`.

    `select_by` picks each model's SFT learning rate. The paper selects "the best value based on AlpacaEval
    performance" (Table 8) and warns that "Selecting hyperparameters based on such as validation loss does
    not necessarily yield better downstream task performance" (App. F.2); `task` does that with the offline
    multiple-choice task (acc_norm). The default is `val_loss` (lowest SFT validation loss) because at laptop
    scale the task is too noisy to rank LRs: the `wso` study's task has 64 four-way items, so one model's
    acc_norm has a binomial standard error of about 6 points, larger than the differences between LRs,
    while the SFT validation loss averages over every held-out token. `wso-1b` selects by `task`.
    """

    max_items: int | None = Field(None, gt=0, description="At most this many multiple-choice items.")
    num_choices: int = Field(4, ge=2)
    select_by: Literal["val_loss", "task"] = Field(
        "val_loss", description="SFT LR selection: val_loss = lowest mean SFT validation loss over seeds; "
        "task = highest mean task acc_norm over seeds (the paper's choice; ties -> lower val loss, then lower LR).")


class _Tasks:
    """The offline multiple-choice task and the tokenizer of each corpus, built once."""

    def __init__(self, options: EvalOptions) -> None:
        self.options = options
        self.cache: dict[str, tuple[Any, list[Any]]] = {}

    def score(self, run: Any, device: str) -> dict[str, float]:
        from wsdlab.analysis.multiple_choice import score_items, stdlib_name_task
        from wsdlab.common.hashing import spec_hash
        from wsdlab.data import DataConfig, load_data
        from wsdlab.data.sft import eval_documents

        data = run.spec.data.model_dump(mode="json")
        data.update(sft=None, order={})
        corpus = DataConfig.model_validate(data)
        key = spec_hash(corpus)
        if key not in self.cache:
            tok = load_data(corpus, progress=False).tokenizer
            items = stdlib_name_task(eval_documents(corpus), num_choices=self.options.num_choices)
            self.cache[key] = (tok, items[:self.options.max_items] if self.options.max_items else items)
        tok, items = self.cache[key]
        model = run.load_model(device=device)
        return score_items(model, tok, items, run.spec.data.seq_len, device)


@register_unit
class WsoEval(AnalysisUnit):
    """Validation loss and multiple-choice accuracy of every pre-, mid- and fine-tuned model; the SFT LR sweep
    with the selected LR of each model marked (`best`, on every seed's row of that LR)."""

    name = "wso_eval"
    Options = EvalOptions
    inputs = {"pretrain": PRETRAIN, "mid": MID, "sft": SFT}
    required = ("pretrain",)
    tables = ("wso_models", "wso_sft_sweep")
    default_enabled = False  # on in the wso studies (a study with a `pretrain` stage would otherwise pay for it)

    def compute(self, ctx: UnitContext, options: EvalOptions) -> dict[str, list[Row]]:
        tasks = _Tasks(options)
        models: list[Row] = []
        for stage in ("pretrain", "mid"):
            for sel in ctx.selected(stage) if stage in ctx.inputs else []:
                run = sel.run
                mc = tasks.score(run, ctx.device)
                models.append({"stage": stage, "run": run.path.name, **model_labels(sel),
                               "pt_val_loss": final_val_loss(run), "task_acc": mc["acc"],
                               "task_acc_norm": mc["acc_norm"], "task_n": mc["n"]})
        sweep: list[Row] = []
        for sel in ctx.selected("sft") if "sft" in ctx.inputs else []:
            run = sel.run
            mc = tasks.score(run, ctx.device)
            labels = model_labels(sel)
            sweep.append({"base": "mid" if labels["alpha_mid"] != "" else "pretrain", "run": run.path.name,
                          **labels, "seed": run.spec.data.order.seed, "lr": run.spec.optim.lr,
                          "sft_val_loss": final_val_loss(run), "task_acc": mc["acc"],
                          "task_acc_norm": mc["acc_norm"], "best": False, "selected_by": options.select_by})
        mark_selected(sweep, options.select_by)
        return {"wso_models": models, "wso_sft_sweep": sweep}


def _group(rows: Sequence[Row], key: Any) -> dict[Any, list[Row]]:
    out: dict[Any, list[Row]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(r)
    return out


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _truth(v: Any) -> bool:
    return v is True or str(v) in ("True", "true", "1")


def _mean(values: Sequence[float | None]) -> float | None:
    xs = [x for x in values if x is not None]
    return sum(xs) / len(xs) if xs else None


def _sd(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (ddof 1); None for fewer than two values."""
    xs = [x for x in values if x is not None]
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _sweep_key(row: Row) -> tuple[str, str]:
    return str(row["base"]), model_key(row)


def mark_selected(sweep: Sequence[Row], select_by: str) -> None:
    """Set `best` on the rows (every seed) of each model's selected SFT LR, in place.

    The LRs of a model are ranked by the mean over their seeds: `val_loss` = lowest mean SFT validation
    loss; `task` = highest mean task acc_norm, ties broken by the lower mean SFT validation loss, then the
    lower LR. An LR without a score is never selected."""
    if select_by not in ("val_loss", "task"):
        raise ConfigError(f"select_by must be 'val_loss' or 'task', got {select_by!r}")
    for rows in _group(sweep, _sweep_key).values():
        by_lr = _group(rows, lambda r: float(r["lr"]))
        ranked = []
        for lr, members in by_lr.items():
            loss = _mean([_num(r["sft_val_loss"]) for r in members])
            task = _mean([_num(r["task_acc_norm"]) for r in members])
            if select_by == "val_loss" and loss is not None:
                ranked.append(((loss, lr), lr))
            elif select_by == "task" and task is not None:
                ranked.append(((-task, math.inf if loss is None else loss, lr), lr))
        if ranked:
            chosen = min(ranked)[1]
            for r in by_lr[chosen]:
                r["best"] = True


def selected_sft(sweep: Sequence[Row]) -> dict[tuple[str, str], Row]:
    """Per (base, model key) the selected LR's rows aggregated over seeds: lr, sft_task (mean acc_norm),
    sft_task_sd (sample sd over seeds, None for one seed), sft_val_loss (mean), sft_val_loss_sd, n_seeds,
    selected_by."""
    out: dict[tuple[str, str], Row] = {}
    for key, rows in _group([r for r in sweep if _truth(r["best"])], _sweep_key).items():
        tasks = [_num(r["task_acc_norm"]) for r in rows]
        losses = [_num(r["sft_val_loss"]) for r in rows]
        out[key] = {"lr": _num(rows[0]["lr"]), "sft_task": _mean(tasks), "sft_task_sd": _sd(tasks),
                    "sft_val_loss": _mean(losses), "sft_val_loss_sd": _sd(losses), "n_seeds": len(rows),
                    "selected_by": rows[0].get("selected_by", "val_loss")}
    return out


def decay_based(stage: str, alpha_pre: float | None, alpha_mid: Any) -> bool:
    """Whether the LR decays somewhere before SFT: alpha_pre < 1, or (after mid-training) alpha_mid < 1.

    Table 2 ranks "WSD 1.0 0.0" (alpha_pre = 1, alpha_mid = 0: constant pre-training, then decay) among the
    decay-based schedules, and it is their best in MT loss and task ("the decay-based scheduler with
    alpha_pre = 1.0 and alpha_mid = 0.0 achieve the best performance"); only WSO throughout (alpha_pre =
    alpha_mid = 1) is not decay-based."""
    if alpha_pre is None:
        return False
    mid = _num(alpha_mid)
    return alpha_pre < 1.0 or (stage == "mid" and mid is not None and mid < 1.0)


# (column, better, scale): loss differences in loss units, task differences in points (x100) as printed
DELTA_METRICS = (("pt_val_loss", min, 1.0, "d_pt_val_loss"), ("pt_task", max, 100.0, "d_pt_task_pts"),
                 ("sft_task", max, 100.0, "d_sft_task_pts"), ("sft_val_loss", min, 1.0, "d_sft_val_loss"))


def delta_rows(models: Sequence[Row], sweep: Sequence[Row]) -> list[Row]:
    """Tables 1-4: per stage (pretrain, mid) and model, its values and their differences from the best
    decay-based value of the same stage.

    Table 1: "For each model size and each metric, values are differences (Delta) from the best-performing
    decay-based scheduler for that metric"; Table 2: "Values are differences from the best decay-based
    schedule". So there is one reference per stage and metric, over every alpha_mid: the best (lowest loss,
    highest task) of the decay-based rows (`decay_based`), never WSO's. For stage `mid`, pt_val_loss and
    pt_task are the mid-trained model's (Table 2's "MT Valid Loss", "MT Task Avg"). pt_task and sft_task are
    acc_norm fractions; d_pt_task_pts and d_sft_task_pts are differences in points (x100), as printed;
    d_pt_val_loss and d_sft_val_loss in loss units. SFT values are the selected LR's means over seeds."""
    best = selected_sft(sweep)
    rows = []
    for m in models:
        sft = best.get((str(m["stage"]), model_key(m)), {})
        alpha_pre = _num(m["alpha_pre"])
        rows.append({"stage": m["stage"], "scheduler": m["scheduler"], "alpha_pre": alpha_pre,
                     "alpha_mid": m["alpha_mid"], "decay_based": decay_based(str(m["stage"]), alpha_pre, m["alpha_mid"]),
                     "pt_val_loss": _num(m["pt_val_loss"]), "pt_task": _num(m["task_acc_norm"]),
                     "sft_task": sft.get("sft_task"), "sft_task_sd": sft.get("sft_task_sd"),
                     "sft_val_loss": sft.get("sft_val_loss"), "sft_val_loss_sd": sft.get("sft_val_loss_sd"),
                     "n_seeds": sft.get("n_seeds", 0), "sft_lr": sft.get("lr"),
                     "selected_by": sft.get("selected_by", "")})
    for group in _group(rows, lambda r: r["stage"]).values():
        decay = [r for r in group if r["decay_based"]]
        for col, better, scale, name in DELTA_METRICS:
            values = [r[col] for r in decay if r[col] is not None]
            ref = better(values) if values else None
            for r in group:
                r[name] = None if (ref is None or r[col] is None) else (r[col] - ref) * scale
    return rows


@register_unit
class WsoDelta(AnalysisUnit):
    """Tables 1-4: differences from the best decay-based schedule in PT loss, PT task and SFT task."""

    name = "wso_delta"
    inputs = {"pretrain": PRETRAIN}
    needs = ("wso_eval",)
    tables = ("wso_delta",)
    default_enabled = False

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        return {"wso_delta": delta_rows(ctx.table("wso_models"), ctx.table("wso_sft_sweep"))}


class SharpnessOptions(StrictModel):
    samples: int = Field(10, gt=0, description="Hutchinson probes; with target_rel_stderr the most probes "
                         "(App. H, Table 23: 50).")
    target_rel_stderr: float | None = Field(
        0.05, gt=0.0, description="Add probes until stderr <= this x |trace| (or `samples` are used); None: "
        "exactly `samples` probes.")
    min_samples: int = Field(10, ge=2, description="Probes of the first chunk, before the target is checked.")
    batches: int = Field(1, gt=0)
    batch_size: int = Field(8, gt=0)
    seed: int = Field(0, ge=0)
    datasets: list[str] = Field(default_factory=lambda: ["pt", "sft"], description="pt and/or sft validation sets.")


def _chunk_seed(seed: int, chunk: int) -> int:
    """Probe seed of chunk k >= 1 of one estimate (chunk 0 uses `seed`): distinct per chunk, so probes are
    independent across chunks."""
    return (seed + 1_000_003 * chunk) % 2**63


def relative_trace(op: Any, max_samples: int, seed: int, target_rel_stderr: float | None,
                   min_samples: int = 10) -> Any:
    """Hutchinson's trace (`hessian.hutchinson_trace`) to a relative standard error: a first chunk of
    `min_samples` probes, then chunks of max(2, min_samples // 2) probes until stderr <= target_rel_stderr *
    |mean| or `max_samples` probes are used. Without a target, exactly `max_samples` probes (one seed).

    A relative target fixes the noise of a trace *comparison* (decay vs WSO) rather than the cost; the SE of
    a few probes is itself noisy and stopping favours a chance-small one, hence the first chunk."""
    from wsdlab.analysis.hessian import TraceEstimate, hutchinson_trace, mean_and_stderr

    if target_rel_stderr is None:
        return hutchinson_trace(op, max_samples, seed)
    first = min(max(min_samples, 2), max_samples)
    quad = list(hutchinson_trace(op, first, seed).samples)
    step, chunk = max(2, first // 2), 1
    while len(quad) < max_samples:
        mean, se = mean_and_stderr(quad)
        if se <= target_rel_stderr * abs(mean):
            break
        quad += hutchinson_trace(op, min(step, max_samples - len(quad)), _chunk_seed(seed, chunk)).samples
        chunk += 1
    mean, se = mean_and_stderr(quad)
    return TraceEstimate(mean, se, len(quad), quad)


@register_unit
class WsoSharpness(AnalysisUnit):
    """Fig. 3: Hessian trace (Hutchinson, with standard error) along pre-training, on PT and SFT validation
    data; `samples` = probes used, `precise` = stderr <= target_rel_stderr x |trace|."""

    name = "wso_sharpness"
    Options = SharpnessOptions
    inputs = {"pretrain": PRETRAIN}
    tables = ("wso_sharpness",)
    default_enabled = False

    def compute(self, ctx: UnitContext, options: SharpnessOptions) -> dict[str, list[Row]]:
        from wsdlab.analysis.evalset import fixed_batches, math_attention
        from wsdlab.analysis.hessian import HessianOperator
        from wsdlab.data import DataConfig, load_data
        from wsdlab.models import batch_loss

        rows: list[Row] = []
        data_cache: dict[str, Any] = {}
        target = options.target_rel_stderr
        for sel in ctx.selected("pretrain"):
            run = sel.run
            sets = {}
            for name in options.datasets:
                cfg = run.spec.data.model_dump(mode="json")
                cfg["sft"] = {"source": "stdlib"} if name == "sft" else None
                dcfg = DataConfig.model_validate(cfg)
                key = dcfg.model_dump_json()
                if key not in data_cache:
                    data_cache[key] = load_data(dcfg, progress=False)
                sets[name] = fixed_batches(data_cache[key], "val", options.batches, options.batch_size, options.seed,
                                           device=ctx.device)
            for step in run.checkpoint_steps():
                if step == 0:
                    continue
                model = run.load_model(step, device=ctx.device)
                for name, batches in sets.items():
                    with math_attention():
                        op = HessianOperator(model, batch_loss, batches)
                        est = relative_trace(op, options.samples, options.seed, target, options.min_samples)
                    rel = est.stderr / abs(est.trace) if est.trace and not math.isnan(est.stderr) else None
                    rows.append({**model_labels(sel), "run": run.path.name, "step": step, "dataset": name,
                                 "trace": est.trace, "stderr": est.stderr, "samples": est.products,
                                 "rel_stderr": rel, "target_rel_stderr": "" if target is None else target,
                                 "precise": "" if target is None else bool(rel is not None and rel <= target)})
        return {"wso_sharpness": rows}


def pearson_ci(x: Sequence[float], y: Sequence[float], z: float = 1.959963984540054) -> tuple[float, float, float]:
    """Pearson r and its 95% confidence interval by Fisher's z (nan bounds when n <= 3)."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) < 2 or np.allclose(xa, xa[0]) or np.allclose(ya, ya[0]):
        return float("nan"), float("nan"), float("nan")
    r = float(np.corrcoef(xa, ya)[0, 1])
    if len(xa) <= 3 or abs(r) >= 1.0:
        return r, float("nan"), float("nan")
    half = z / math.sqrt(len(xa) - 3)
    fz = math.atanh(r)
    return r, math.tanh(fz - half), math.tanh(fz + half)


@register_unit
class WsoCorrelation(AnalysisUnit):
    """Fig. 4: SFT score vs final pre-training sharpness, Pearson r with its 95% confidence interval."""

    name = "wso_correlation"
    inputs = {"pretrain": PRETRAIN}
    needs = ("wso_sharpness", "wso_eval")
    tables = ("wso_sharpness_sft", "wso_correlation")
    default_enabled = False

    def compute(self, ctx: UnitContext, options: object) -> dict[str, list[Row]]:
        sharp = ctx.table("wso_sharpness")
        best = {key[1]: row for key, row in selected_sft(ctx.table("wso_sft_sweep")).items() if key[0] == "pretrain"}
        points: list[Row] = []
        for (run, dataset), rows in _group(sharp, lambda r: (r["run"], r["dataset"])).items():
            last = max(rows, key=lambda r: int(float(r["step"])))
            sft = best.get(model_key(last))
            if sft is None:
                continue
            points.append({"scheduler": last["scheduler"], "alpha_pre": last["alpha_pre"], "run": run,
                           "dataset": dataset, "step": last["step"], "trace": _num(last["trace"]),
                           "trace_stderr": _num(last["stderr"]),
                           "sft_score": None if sft["sft_val_loss"] is None else -sft["sft_val_loss"],
                           "sft_task": sft["sft_task"], "n_seeds": sft["n_seeds"]})
        corr: list[Row] = []
        for dataset, rows in _group(points, lambda r: r["dataset"]).items():
            for score in ("sft_score", "sft_task"):
                pts = [(r["trace"], r[score]) for r in rows if r["trace"] is not None and r[score] is not None]
                r, lo, hi = pearson_ci([p[0] for p in pts], [p[1] for p in pts])
                corr.append({"dataset": dataset, "score": score, "r": r, "ci_low": lo, "ci_high": hi, "n": len(pts)})
        return {"wso_sharpness_sft": points, "wso_correlation": corr}
