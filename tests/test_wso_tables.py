"""WSO tables (paper 002) by hand: Tables 1-2 from the paper's own per-model numbers, the SFT LR selection
(val_loss | task, seeds averaged) and the Hutchinson trace to a relative standard error."""

from __future__ import annotations

import math

import pytest
import torch

from wsdlab.analysis.wso import decay_based, delta_rows, mark_selected, relative_trace, selected_sft

# Table 9 (1B): valid loss, PT Avg.; Table 12 (1B): SFT Avg. (points)
TABLE_9_12 = [("wso", 1.0, 2.431, 58.0, 54.4), ("wsd", 0.1, 2.364, 58.2, 54.1), ("wsd", 0.0, 2.360, 58.5, 53.1),
              ("linear", 0.1, 2.380, 57.7, 53.4), ("linear", 0.0, 2.376, 59.7, 53.2),
              ("cosine", 0.1, 2.379, 59.6, 53.4), ("cosine", 0.0, 2.376, 57.2, 53.4)]
# Table 1 (1B) as printed: d PT valid loss, d PT Task Avg, d SFT Task Avg
TABLE_1 = {("wso", 1.0): (0.071, -1.7, 0.3), ("wsd", 0.1): (0.004, -1.5, 0.0), ("wsd", 0.0): (0.000, -1.2, -1.0),
           ("linear", 0.1): (0.021, -2.0, -0.7), ("linear", 0.0): (0.016, 0.0, -0.9),
           ("cosine", 0.1): (0.019, -0.1, -0.7), ("cosine", 0.0): (0.016, -2.5, -0.7)}
# Table 15 (1B, after mid-training): valid loss, Avg.; Table 18 (1B): SFT Avg.; (scheduler, alpha_pre, alpha_mid)
TABLE_15_18 = [("wso", 1.0, 1.0, 2.335, 42.1, 36.2), ("wso", 1.0, 0.0, 2.273, 42.2, 35.4),
               ("wsd", 0.1, 0.0, 2.320, 40.5, 34.2), ("wsd", 0.1, 1.0, 2.310, 40.6, 35.0),
               ("cosine", 0.1, 0.0, 2.332, 39.1, 31.8), ("cosine", 0.1, 1.0, 2.326, 39.8, 32.5),
               ("linear", 0.1, 0.0, 2.330, 38.9, 31.6), ("linear", 0.1, 1.0, 2.325, 40.1, 32.9)]
# Table 2 (1B) as printed ("WSD 1.0 0.0" is WSO pre-training with a decaying mid-training)
TABLE_2 = {(1.0, 1.0, "wso"): (0.062, -0.1, 0.8), (1.0, 0.0, "wso"): (0.000, 0.0, 0.0),
           (0.1, 1.0, "wsd"): (0.038, -1.5, -0.5), (0.1, 0.0, "wsd"): (0.047, -1.7, -1.3),
           (0.1, 1.0, "linear"): (0.053, -2.1, -2.5), (0.1, 0.0, "linear"): (0.058, -3.3, -3.8),
           (0.1, 1.0, "cosine"): (0.053, -2.4, -2.9), (0.1, 0.0, "cosine"): (0.059, -3.1, -3.7)}


def _model(stage: str, kind: str, a: float, mid: object, loss: float, task_pts: float) -> dict:
    return {"stage": stage, "scheduler": kind, "alpha_pre": a, "alpha_mid": mid, "pt_val_loss": loss,
            "task_acc_norm": task_pts / 100}


def _sft(base: str, kind: str, a: float, mid: object, task_pts: float, lr: float = 1e-4, seed: int = 0,
         loss: float = 1.0, best: bool = True) -> dict:
    return {"base": base, "scheduler": kind, "alpha_pre": a, "alpha_mid": mid, "seed": seed, "lr": lr,
            "sft_val_loss": loss, "task_acc_norm": task_pts / 100, "best": best, "selected_by": "task"}


def test_table_1_from_the_papers_per_model_numbers() -> None:
    models = [_model("pretrain", k, a, "", loss, pt) for k, a, loss, pt, _ in TABLE_9_12]
    sweep = [_sft("pretrain", k, a, "", sft) for k, a, _, _, sft in TABLE_9_12]
    rows = {(r["scheduler"], r["alpha_pre"]): r for r in delta_rows(models, sweep)}
    # by hand: best decay-based PT loss = WSD 0.0 (2.360), PT task = Linear 0.0 (59.7), SFT task = WSD 0.1 (54.1)
    assert rows["wso", 1.0]["d_pt_val_loss"] == pytest.approx(2.431 - 2.360)
    assert rows["wso", 1.0]["d_pt_task_pts"] == pytest.approx(58.0 - 59.7)
    assert rows["wso", 1.0]["d_sft_task_pts"] == pytest.approx(54.4 - 54.1)
    assert rows["cosine", 0.0]["d_pt_task_pts"] == pytest.approx(57.2 - 59.7)
    for key, (d_loss, d_pt, d_sft) in TABLE_1.items():  # printed to 3 / 1 decimals from unrounded values
        r = rows[key]
        assert r["d_pt_val_loss"] == pytest.approx(d_loss, abs=0.0015)
        assert r["d_pt_task_pts"] == pytest.approx(d_pt, abs=0.15)
        assert r["d_sft_task_pts"] == pytest.approx(d_sft, abs=0.15)
    assert rows["wso", 1.0]["decay_based"] is False and rows["wsd", 0.0]["decay_based"] is True


def test_table_2_one_reference_per_stage_over_every_alpha_mid() -> None:
    models = [_model("mid", k, a, m, loss, pt) for k, a, m, loss, pt, _ in TABLE_15_18]
    sweep = [_sft("mid", k, a, m, sft) for k, a, m, _, _, sft in TABLE_15_18]
    rows = {(r["alpha_pre"], r["alpha_mid"], r["scheduler"]): r for r in delta_rows(models, sweep)}
    # by hand: MT loss and task reference = (1.0, 0.0) (2.273, 42.2); SFT reference = (1.0, 0.0) (35.4)
    assert rows[1.0, 1.0, "wso"]["d_pt_val_loss"] == pytest.approx(2.335 - 2.273)
    assert rows[0.1, 1.0, "wsd"]["d_sft_task_pts"] == pytest.approx(35.0 - 35.4)
    assert rows[0.1, 0.0, "cosine"]["d_pt_task_pts"] == pytest.approx(39.1 - 42.2)
    for key, (d_loss, d_pt, d_sft) in TABLE_2.items():
        r = rows[key]
        assert r["d_pt_val_loss"] == pytest.approx(d_loss, abs=0.0015)
        assert r["d_pt_task_pts"] == pytest.approx(d_pt, abs=0.15)
        assert r["d_sft_task_pts"] == pytest.approx(d_sft, abs=0.15)
    assert rows[1.0, 1.0, "wso"]["decay_based"] is False and rows[1.0, 0.0, "wso"]["decay_based"] is True


def test_wso_is_never_the_reference_and_stages_are_separate() -> None:
    # WSO best everywhere: its differences are positive/negative against the best decay-based row, not 0
    models = [_model("pretrain", "wso", 1.0, "", 2.0, 60.0), _model("pretrain", "wsd", 0.0, "", 2.5, 50.0),
              _model("pretrain", "cosine", 0.1, "", 2.4, 40.0),
              _model("mid", "wso", 1.0, 1.0, 1.0, 70.0), _model("mid", "wsd", 0.1, 0.0, 3.0, 10.0)]
    sweep = [_sft("pretrain", "wso", 1.0, "", 55.0), _sft("pretrain", "wsd", 0.0, "", 45.0)]
    rows = {(r["stage"], r["scheduler"]): r for r in delta_rows(models, sweep)}
    assert rows["pretrain", "wso"]["d_pt_val_loss"] == pytest.approx(2.0 - 2.4)
    assert rows["pretrain", "wso"]["d_pt_task_pts"] == pytest.approx(60.0 - 50.0)
    assert rows["pretrain", "wso"]["d_sft_task_pts"] == pytest.approx(55.0 - 45.0)
    assert rows["pretrain", "cosine"]["d_sft_task_pts"] is None  # no SFT run of this model
    assert rows["mid", "wso"]["d_pt_val_loss"] == pytest.approx(1.0 - 3.0)  # the mid stage's own reference
    assert rows["mid", "wsd"]["d_pt_task_pts"] == pytest.approx(0.0)


def test_decay_based_rows() -> None:
    assert not decay_based("pretrain", 1.0, "") and decay_based("pretrain", 0.1, "")
    assert decay_based("mid", 1.0, 0.0) and not decay_based("mid", 1.0, 1.0) and decay_based("mid", 0.1, 1.0)


def _sweep() -> list[dict]:
    # one model, LRs 1e-4 and 1e-3, two seeds each: lower mean val loss at 1e-4, higher mean task at 1e-3
    rows = []
    for lr, seed, loss, task in [(1e-4, 0, 2.0, 30.0), (1e-4, 1, 2.2, 40.0), (1e-3, 0, 2.3, 45.0), (1e-3, 1, 2.3, 55.0)]:
        rows.append(_sft("pretrain", "wsd", 0.1, "", task, lr=lr, seed=seed, loss=loss, best=False))
    return rows


def test_select_by_val_loss_averages_seeds() -> None:
    sweep = _sweep()
    mark_selected(sweep, "val_loss")
    assert [r["best"] for r in sweep] == [True, True, False, False]  # mean loss 2.1 < 2.3
    (sel,) = selected_sft(sweep).values()
    assert sel["lr"] == 1e-4 and sel["n_seeds"] == 2
    assert sel["sft_task"] == pytest.approx(0.35) and sel["sft_val_loss"] == pytest.approx(2.1)
    assert sel["sft_task_sd"] == pytest.approx(math.sqrt(2 * 0.05 ** 2))  # values 0.30, 0.40: sd = 0.0707
    assert sel["sft_val_loss_sd"] == pytest.approx(math.sqrt(2 * 0.1 ** 2))


def test_select_by_task_and_its_tie_break() -> None:
    sweep = _sweep()
    mark_selected(sweep, "task")
    assert [r["best"] for r in sweep] == [False, False, True, True]  # mean task 0.50 > 0.35
    (sel,) = selected_sft(sweep).values()
    assert sel["lr"] == 1e-3 and sel["sft_task"] == pytest.approx(0.50) and sel["sft_task_sd"] == pytest.approx(0.0707, abs=1e-4)
    tie = [_sft("pretrain", "wso", 1.0, "", 40.0, lr=lr, loss=loss, best=False) for lr, loss in [(1e-4, 2.0), (1e-3, 1.5)]]
    mark_selected(tie, "task")
    assert [r["best"] for r in tie] == [False, True]  # equal task: the lower validation loss
    with pytest.raises(ValueError, match="select_by"):
        mark_selected(tie, "alpaca")


def test_delta_reports_selection_and_seed_spread() -> None:
    sweep = _sweep()
    mark_selected(sweep, "task")
    for r in sweep:
        r["selected_by"] = "task"
    (row,) = delta_rows([_model("pretrain", "wsd", 0.1, "", 2.0, 50.0)], sweep)
    assert row["selected_by"] == "task" and row["n_seeds"] == 2 and row["sft_lr"] == 1e-3
    assert row["sft_task"] == pytest.approx(0.50) and row["d_sft_task_pts"] == pytest.approx(0.0)


class _Dense:
    """A symmetric matrix as an HvpOperator (matmat of row vectors)."""

    def __init__(self, h: torch.Tensor) -> None:
        self.h, self.dim, self.dtype, self.device, self.probe_chunk = h, h.shape[0], h.dtype, h.device, 16

    def matmat(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.h


def _matrix(off: float, n: int = 50) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=g, dtype=torch.float64) * off
    return torch.diag(torch.full((n,), 2.0, dtype=torch.float64)) + (a + a.T) / 2  # trace ~ 100 + noise


def test_relative_trace_stops_at_the_target_or_the_maximum() -> None:
    easy = _Dense(_matrix(0.01))  # z^T H z nearly constant: the first chunk is precise
    est = relative_trace(easy, 40, 0, 0.05, min_samples=10)
    assert est.products == 10 and est.stderr <= 0.05 * abs(est.trace)
    assert est.trace == pytest.approx(float(torch.trace(easy.h)), rel=0.01)
    hard = _Dense(_matrix(3.0))  # per-probe sd ~ sqrt(2 * sum_{i != j} H_ij^2) >> 5% of the trace
    est = relative_trace(hard, 40, 0, 0.05, min_samples=10)
    assert est.products == 40 and est.stderr > 0.05 * abs(est.trace) and len(est.samples) == 40
    mid = _Dense(_matrix(0.6))  # per-probe sd ~ 30: about (30 / 5)^2 = 36 probes
    est = relative_trace(mid, 200, 0, 0.05, min_samples=10)
    assert 10 < est.products < 200 and (est.products - 10) % 5 == 0  # then chunks of min_samples // 2
    assert est.stderr <= 0.05 * abs(est.trace)
    fixed = relative_trace(hard, 7, 0, None)
    assert fixed.products == 7
