"""The WSO paper's tables and sharpness figures ("Pre-training without learning rate decay enhances
supervised fine-tuning"): units over a study with stages `pretrain` (scheduler x alpha_pre), `mid`
(alpha_mid, eq. 11) and `sft` (an LR sweep per pre- or mid-trained model, Table 8).

- `wso_eval`: per pre-/mid-trained model its validation loss and the multiple-choice task (acc, acc_norm,
  scored like lm-evaluation-harness: `multiple_choice.py`); per SFT run (every LR of the sweep) its SFT
  validation loss and the task after SFT, the best LR per model marked (the paper selects "the best value
  based on AlpacaEval performance", Table 8; offline: the lowest SFT validation loss).
- `wso_delta`: Tables 1-4, "the difference from the best decay-based schedule" in PT validation loss, PT
  task average and SFT task average, for each scheduler and alpha_pre (and alpha_mid).
- `wso_sharpness`: Fig. 3, the Hessian trace (eq. 6, "Sharpness(theta_t) = Tr(H_L(theta_t))") by Hutchinson's
  estimator (eq. 12, Rademacher z_i) with its standard error, on kept checkpoints along pre-training, "on
  held-out validation sets from both the pre-training dataset and the SFT dataset" (App. H).
- `wso_correlation`: Fig. 4, SFT score vs final sharpness with Pearson r and its 95% confidence interval
  (Fisher z: tanh(atanh r +- 1.96 / sqrt(n - 3))).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
    max_items: int | None = Field(None, gt=0, description="At most this many multiple-choice items.")
    num_choices: int = Field(4, ge=2)


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
    """Validation loss and multiple-choice accuracy of every pre-, mid- and fine-tuned model; the SFT LR sweep."""

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
                          **labels, "lr": run.spec.optim.lr, "sft_val_loss": final_val_loss(run),
                          "task_acc": mc["acc"], "task_acc_norm": mc["acc_norm"], "best": False})
        for rows in _group(sweep, lambda r: (r["base"], model_key(r))).values():
            scored = [r for r in rows if r["sft_val_loss"] is not None]
            if scored:
                min(scored, key=lambda r: r["sft_val_loss"])["best"] = True
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


def delta_rows(models: Sequence[Row], sweep: Sequence[Row]) -> list[Row]:
    """Tables 1-4: per stage (pretrain, mid) and model, its values and their differences from the best
    decay-based schedule (alpha_pre < 1; lowest loss, highest task score) of the same stage (and alpha_mid)."""
    best_sft = {(r["base"], model_key(r)): r for r in sweep if str(r["best"]) in ("True", "true", "1")}
    rows = []
    for m in models:
        sft = best_sft.get((m["stage"], model_key(m)))
        rows.append({"stage": m["stage"], "scheduler": m["scheduler"], "alpha_pre": _num(m["alpha_pre"]),
                     "alpha_mid": m["alpha_mid"], "pt_val_loss": _num(m["pt_val_loss"]),
                     "pt_task": _num(m["task_acc_norm"]),
                     "sft_task": None if sft is None else _num(sft["task_acc_norm"]),
                     "sft_val_loss": None if sft is None else _num(sft["sft_val_loss"]),
                     "sft_lr": None if sft is None else _num(sft["lr"])})
    for group in _group(rows, lambda r: (r["stage"], r["alpha_mid"])).values():
        decay = [r for r in group if r["alpha_pre"] is not None and r["alpha_pre"] < 1.0]
        for col, better in (("pt_val_loss", min), ("pt_task", max), ("sft_task", max), ("sft_val_loss", min)):
            values = [r[col] for r in decay if r[col] is not None]
            ref = better(values) if values else None
            for r in group:
                r[f"d_{col}"] = None if (ref is None or r[col] is None) else r[col] - ref
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
    samples: int = Field(10, gt=0, description="Hutchinson samples (App. H, Table 23: 50).")
    batches: int = Field(1, gt=0)
    batch_size: int = Field(8, gt=0)
    seed: int = Field(0, ge=0)
    datasets: list[str] = Field(default_factory=lambda: ["pt", "sft"], description="pt and/or sft validation sets.")


@register_unit
class WsoSharpness(AnalysisUnit):
    """Fig. 3: Hessian trace (Hutchinson, with standard error) along pre-training, on PT and SFT validation data."""

    name = "wso_sharpness"
    Options = SharpnessOptions
    inputs = {"pretrain": PRETRAIN}
    tables = ("wso_sharpness",)
    default_enabled = False

    def compute(self, ctx: UnitContext, options: SharpnessOptions) -> dict[str, list[Row]]:
        from wsdlab.analysis.evalset import fixed_batches, math_attention
        from wsdlab.analysis.hessian import HessianOperator, hutchinson_trace
        from wsdlab.data import DataConfig, load_data
        from wsdlab.models import batch_loss

        rows: list[Row] = []
        data_cache: dict[str, Any] = {}
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
                        est = hutchinson_trace(op, options.samples, options.seed)
                    rows.append({**model_labels(sel), "run": run.path.name, "step": step, "dataset": name,
                                 "trace": est.trace, "stderr": est.stderr, "samples": options.samples})
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
        best = {model_key(r): r for r in ctx.table("wso_sft_sweep")
                if r["base"] == "pretrain" and str(r["best"]) in ("True", "true", "1")}
        points: list[Row] = []
        for (run, dataset), rows in _group(sharp, lambda r: (r["run"], r["dataset"])).items():
            last = max(rows, key=lambda r: int(float(r["step"])))
            sft = best.get(model_key(last))
            if sft is None:
                continue
            points.append({"scheduler": last["scheduler"], "alpha_pre": last["alpha_pre"], "run": run,
                           "dataset": dataset, "step": last["step"], "trace": _num(last["trace"]),
                           "sft_score": -float(sft["sft_val_loss"]), "sft_task": _num(sft["task_acc_norm"])})
        corr: list[Row] = []
        for dataset, rows in _group(points, lambda r: r["dataset"]).items():
            for score in ("sft_score", "sft_task"):
                pts = [(r["trace"], r[score]) for r in rows if r["trace"] is not None and r[score] is not None]
                r, lo, hi = pearson_ci([p[0] for p in pts], [p[1] for p in pts])
                corr.append({"dataset": dataset, "score": score, "r": r, "ci_low": lo, "ci_high": hi, "n": len(pts)})
        return {"wso_sharpness_sft": points, "wso_correlation": corr}
