"""The WSO study (paper 002): `wsdlab study run wso --quick` end to end, and its tables' formulas by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsdlab.analysis.multiple_choice import MCItem, score_items, stdlib_name_task
from wsdlab.analysis.tables import read_table
from wsdlab.analysis.wso import pearson_ci
from wsdlab.cli import app
from wsdlab.train.runstore import RunDir

runner = CliRunner()


@pytest.mark.slow
def test_wso_quick_runs_every_stage_and_table(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "wso"
    result = runner.invoke(app, ["study", "run", "wso", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs = {p.name.rsplit("-", 1)[0]: RunDir(p) for p in (out / "runs").iterdir() if (p / "COMPLETE").is_file()}
    # 7 pre-training runs; mid-training of alpha_pre 0.1 and WSO only (Section 4), alpha_mid 0 and 1; SFT: 2 LRs
    # x 2 seeds per pre-trained model, 1 LR x 2 seeds per mid-trained model
    assert len(runs) == 7 + 8 + 28 + 16
    assert {k for k in runs if k.startswith("mid-")} == {f"mid-{k}-a{a}-m{m}" for k, a in
                                                         (("wsd", 0.1), ("cosine", 0.1), ("linear", 0.1), ("wso", 1))
                                                         for m in (0, 1)}
    wsd = runs["pretrain-wsd-alpha0"].spec.schedule
    assert wsd.stable_ratio == 0.75 and wsd.kind == "wsd"
    sft = runs["sft-cosine-a0.1-lr0.001-s0"].spec
    assert sft.data.sft is not None and sft.schedule.kind == "cosine" and sft.schedule.start_step == 12
    assert sft.optim.weight_decay == 0.0 and sft.optim.lr == 0.001
    assert runs["sft-cosine-a0.1-lr0.001-s1"].spec.data.order.seed == 1 and sft.data.order.seed == 0
    lrs = [r["lr"] for r in runs["sft-cosine-a0.1-lr0.001-s0"].metrics() if "lr" in r]
    assert lrs[0] == pytest.approx(0.001)  # warmup 1 step from the stage's own start, then cosine to 0
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    mid = runs["mid-linear-a0.1-m0"].spec
    assert mid.schedule.mid.alpha_mid == 0.0 and mid.data.order.portion == 1
    tables = out / "tables"
    delta = read_table(tables / "wso_delta.csv")
    assert {r["stage"] for r in delta} == {"pretrain", "mid"} and len(delta) == 7 + 8
    assert {"d_pt_task_pts", "d_sft_task_pts", "sft_task_sd", "n_seeds", "selected_by", "decay_based"} <= set(delta[0])
    assert all(int(float(r["n_seeds"])) == 2 and r["selected_by"] == "val_loss" for r in delta)
    for stage in ("pretrain", "mid"):  # one reference per stage: the best decay-based row has difference 0
        decay = [r for r in delta if r["stage"] == stage and str(r["decay_based"]) == "True"]
        assert min(float(r["d_pt_val_loss"]) for r in decay) == pytest.approx(0.0)
    sweep = read_table(tables / "wso_sft_sweep.csv")
    assert len(sweep) == 28 + 16 and sum(str(r["best"]) == "True" for r in sweep) == 2 * (7 + 8)
    assert {int(float(r["seed"])) for r in sweep} == {0, 1} and {r["selected_by"] for r in sweep} == {"val_loss"}
    sharp = read_table(tables / "wso_sharpness.csv")
    assert {r["dataset"] for r in sharp} == {"pt", "sft"} and {int(float(r["step"])) for r in sharp} == {6, 12}
    row = next(r for r in sharp if r["dataset"] == "pt" and int(float(r["step"])) == 12)
    own_trace, own_stderr = _hutchinson_by_autograd(RunDir(out / "runs" / row["run"]), probes=40)
    assert abs(float(row["trace"]) - own_trace) <= 4 * math.hypot(float(row["stderr"]), own_stderr)
    assert all(float(r["rel_stderr"]) == pytest.approx(float(r["stderr"]) / abs(float(r["trace"]))) for r in sharp)
    for r in sharp:  # 4 probes first, then chunks of 2 up to 6; precise = stderr <= 5% of |trace|
        assert int(float(r["samples"])) in (4, 6)
        assert (str(r["precise"]) == "True") == (float(r["stderr"]) <= 0.05 * abs(float(r["trace"])))
    corr = read_table(tables / "wso_correlation.csv")
    assert {(r["dataset"], r["score"]) for r in corr} >= {("pt", "sft_score"), ("sft", "sft_score")}
    for name in ("wso_delta", "wso_sft_sweep", "wso_sharpness", "wso_sharpness_sft"):
        assert (out / "figures" / f"{name}.png").is_file()
    assert "wso_sharpness_sft" in (out / "report.html").read_text()


def _hutchinson_by_autograd(run: RunDir, probes: int) -> tuple[float, float]:
    """Hutchinson's trace of the Hessian of the mean PT validation loss at step 12 and its standard error,
    from our own Rademacher probes and double-backward Hessian-vector products (independent of
    wsdlab.analysis.hessian); the batch is the one wso_sharpness draws (1 x 4 items, seed 0)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wsdlab.analysis.evalset import fixed_batches
    from wsdlab.data import load_data
    from wsdlab.models import batch_loss

    data = run.spec.data.model_copy(update={"sft": None})
    batches = fixed_batches(load_data(data, progress=False), "val", 1, 4, 0)
    model = run.load_model(12)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(12345)
    values = []
    with sdpa_kernel(SDPBackend.MATH):
        loss = sum(batch_loss(model, b) for b in batches) / len(batches)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for _ in range(probes):
            z = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
            hz = torch.autograd.grad(grads, params, grad_outputs=z, retain_graph=True)
            values.append(sum(float((a.double() * b.double()).sum()) for a, b in zip(z, hz)))
    mean = sum(values) / probes
    var = sum((v - mean) ** 2 for v in values) / (probes - 1)
    return mean, math.sqrt(var / probes)


def test_pearson_ci_by_hand() -> None:
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    r, lo, hi = pearson_ci(x, y)
    assert r == pytest.approx(0.8)  # cov 2.0 / var 2.5 (both)
    half = 1.959963984540054 / math.sqrt(2)
    assert lo == pytest.approx(math.tanh(math.atanh(0.8) - half)) and hi == pytest.approx(math.tanh(math.atanh(0.8) + half))
    assert math.isnan(pearson_ci([1, 2, 3], [1, 1, 1])[0])


class _Uniform(torch.nn.Module):
    """Logits that favour token ids by a fixed table, whatever the context (checks the scoring rules)."""

    def __init__(self, vocab: int, favourite: int) -> None:
        super().__init__()
        self.table = torch.zeros(vocab)
        self.table[favourite] = 1.0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table.expand(*idx.shape, -1).clone()


class _Tok:
    """Characters as token ids (ord)."""

    class _Enc:
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

    def encode(self, text: str, add_special_tokens: bool = False) -> _Tok._Enc:
        return self._Enc([ord(c) for c in text])


def test_acc_and_acc_norm_follow_lm_evaluation_harness() -> None:
    # Log-likelihoods are sums over the continuation tokens (delimiter " " + choice): the short choice "b" wins
    # acc; dividing by the choice's length (without the delimiter), the long choice "aaaa" of favoured tokens
    # wins acc_norm.
    model = _Uniform(128, ord("a"))
    item = MCItem("ctx", ("b", "aaaa"), gold=1)
    lp_a, lp_other = torch.log_softmax(model.table, 0)[ord("a")].item(), torch.log_softmax(model.table, 0)[0].item()
    ll = [2 * lp_other, lp_other + 4 * lp_a]
    assert ll[0] > ll[1] and ll[1] / 4 > ll[0] / 1
    scores = score_items(model, _Tok(), [item], max_len=32)
    assert scores == {"acc": 0.0, "acc_norm": 1.0, "n": 1}


def test_name_task_has_one_gold_among_four() -> None:
    source = "\n".join(f'def f{i}(x):\n    """Doc {i} here."""\n    return x\n' for i in range(6))
    items = stdlib_name_task([source])
    assert len(items) == 6
    for item in items:
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
        doc_number = item.context.split()[2]
        assert item.choices[item.gold] == f"f{doc_number}(" and item.delimiter == " "


def test_fields_added_for_wso_keep_existing_run_identities(tmp_path: Path) -> None:
    # stable_ratio, start_step, data.sft and branch.schedule at their defaults do not rename existing run folders
    from wsdlab.common.hashing import spec_hash
    from wsdlab.study.identity import legacy_identity, run_identity
    from wsdlab.train import run_preset

    spec = run_preset("tiny")
    data = spec.model_dump(mode="json")
    del data["schedule"]["stable_ratio"], data["schedule"]["start_step"], data["data"]["sft"]
    del data["train"]["activation_checkpointing"]  # a later defaulted field, likewise left out while False
    del data["train"]["checkpoint_every_minutes"]  # added after release 0.1
    assert legacy_identity(spec, tmp_path) == spec_hash(data)  # release 0.1's folder names
    changed = spec.model_copy(update={"schedule": spec.schedule.model_copy(update={"stable_ratio": 0.75})})
    assert run_identity(changed, tmp_path) != run_identity(spec, tmp_path)
