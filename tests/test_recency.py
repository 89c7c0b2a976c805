"""Recency bias (eq. 2): perplexity differences, shift and deviation over the whole run, strides, window
average of the Fig. 9 curves, tables and correlations. References are written from the printed eq. 2."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import wsdlab.analysis.recency as recency_mod
from wsdlab.analysis.recency import (
    perplexity_differences,
    recency_correlations,
    recency_curve_rows,
    recency_table,
    scored_positions,
    shift_deviation,
    window_average,
    window_points,
)
from wsdlab.common.errors import ConfigError


def slow_eq2(post_ppl: list[float], pre_ppl: list[float], cooldown: list[bool]) -> tuple[list[float], float, float]:
    """Eq. 2 as printed, plain loops: difference_i = c(b_i) - p(b_i); shift = mean over the cooldown;
    deviation = (1/N) sum_{i=1..N} (difference_i - shift)^2."""
    diff = [c - p for c, p in zip(post_ppl, pre_ppl)]
    cool = [d for d, k in zip(diff, cooldown) if k]
    shift = sum(cool) / len(cool)
    deviation = sum((d - shift) ** 2 for d in diff) / len(diff)
    return diff, shift, deviation


def test_window_average_hand_values() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert window_average(x, 1).tolist() == x
    assert window_average(x, 3).tolist() == [1.5, 2.0, 3.0, 4.0, 4.5]  # centered, shrinking at the ends
    assert window_average(x, 2).tolist() == [1.5, 2.5, 3.5, 4.5, 5.0]  # even: one step ahead
    assert window_average(x, 100).tolist() == [3.0] * 5
    out = window_average([1.0, math.nan, 3.0, math.nan], 3)
    assert out[:3].tolist() == [1.0, 2.0, 3.0] and out[3] == 3.0  # NaNs skipped
    assert math.isnan(window_average([math.nan, math.nan], 1)[0])
    with pytest.raises(ValueError, match="window"):
        window_average(x, 0)


def test_differences_are_post_minus_pre_perplexity() -> None:
    assert perplexity_differences([20.0, 15.0], [30.0, 35.0]).tolist() == [-10.0, -20.0]
    with pytest.raises(ValueError, match="same length"):
        perplexity_differences([1.0], [1.0, 2.0])


def test_shift_and_deviation_hand_example() -> None:
    # stable differences 1, 3; cooldown -2, -4: shift = -3 (cooldown only);
    # deviation = ((1+3)^2 + (3+3)^2 + (-2+3)^2 + (-4+3)^2) / 4 = (16 + 36 + 1 + 1) / 4 = 13.5 (all N, no smoothing)
    shift, deviation = shift_deviation([1.0, 3.0, -2.0, -4.0], [False, False, True, True])
    assert shift == pytest.approx(-3.0) and deviation == pytest.approx(13.5)
    with pytest.raises(ValueError, match="cooldown"):
        shift_deviation([1.0, 2.0], [False, False])


def test_shift_and_deviation_match_the_slow_reference() -> None:
    rng = np.random.default_rng(0)
    pre, post = list(30 + 5 * rng.random(50)), list(25 + 5 * rng.random(50))
    cooldown = [i >= 40 for i in range(50)]
    diff, shift, deviation = slow_eq2(post, pre, cooldown)
    assert perplexity_differences(post, pre).tolist() == pytest.approx(diff, rel=1e-12)
    assert shift_deviation(perplexity_differences(post, pre), cooldown) == pytest.approx((shift, deviation), rel=1e-12)


def test_scored_positions_anchor_at_the_first_cooldown_batch() -> None:
    assert scored_positions(10, 15, 1).tolist() == list(range(15))
    assert scored_positions(10, 15, 4).tolist() == [2, 6, 10, 14]
    assert scored_positions(0, 5, 2).tolist() == [0, 2, 4]
    with pytest.raises(ConfigError, match="stride"):
        scored_positions(10, 15, 0)


def test_default_stride_scores_about_60_batches() -> None:
    """None = stride ceil(batches / 60): the default study's 200 + 40 batches -> every 4th (60 scored, 10 in the
    cooldown); short runs score every batch; paper-60M's 8000 + 1600 -> every 160th."""
    assert recency_mod.default_stride(240) == 4 and len(scored_positions(200, 240, 4)) == 60
    assert recency_mod.default_stride(60) == 1 and recency_mod.default_stride(7) == 1
    assert recency_mod.default_stride(61) == 2 and recency_mod.default_stride(9600) == 160
    with pytest.raises(ConfigError, match="recency"):
        recency_mod.default_stride(0)


def test_window_is_in_training_batches_and_capped() -> None:
    assert window_points(100, 1, 240) == 100
    assert window_points(100, 8, 240) == 12  # 100 batches = 12.5 points of every 8th batch
    assert window_points(100, 1, 30) == 30  # capped at the series length
    assert window_points(3, 8, 30) == 1
    with pytest.raises(ConfigError, match="window"):
        window_points(0, 1, 10)


def test_curve_rows_and_table_roundtrip() -> None:
    pre = [30.0, 32.0, 28.0, 31.0, 29.0, 27.0]
    post = [26.0, 27.0, 25.0, 20.0, 22.0, 24.0]
    cooldown = [False, False, False, True, True, True]
    rows = recency_curve_rows("sqrt", 3, [0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11], cooldown, pre, post,
                              window=4, stride=2)
    assert [r["phase"] for r in rows] == ["stable"] * 3 + ["cooldown"] * 3
    assert rows[1]["ppl_diff"] == pytest.approx(-5.0) and rows[1]["stride"] == 2
    assert rows[1]["ppl_diff_smoothed"] == pytest.approx(np.mean([-4.0, -5.0, -3.0]))  # window 4 / stride 2 = 2 points
    assert rows[0]["ppl_pre_smoothed"] == pytest.approx(31.0)
    table = recency_table(list(reversed(rows)))  # order of rows does not matter
    assert len(table) == 1
    row = table[0]
    _, shift, deviation = slow_eq2(post, pre, cooldown)
    counts = (row["shape"], row["seed"], row["n_batches"], row["n_cooldown_batches"], row["stride"])
    assert counts == ("sqrt", 3, 6, 3, 2)
    assert row["shift"] == pytest.approx(shift) and row["deviation"] == pytest.approx(deviation)
    assert row["shift"] == pytest.approx((-11 - 7 - 3) / 3)  # by hand: cooldown differences -11, -7, -3


def test_correlations_across_shapes_use_seed_means() -> None:
    recency = [{"shape": s, "seed": k, "shift": sh + k * 0.01, "deviation": dv}
               for s, sh, dv in [("a", -0.1, 0.3), ("b", -0.3, 0.1), ("c", -0.2, 0.2)] for k in range(2)]
    bv = [{"shape": s, "space": "kl", "bias": b, "variance": v} for s, b, v in [("a", 0.5, 0.9), ("b", 0.1, 0.2),
                                                                                  ("c", 0.3, 0.4)]]
    rows = {(r["x"], r["y"]): r for r in recency_correlations(recency, bv)}
    assert rows[("shift", "bias")]["spearman"] == pytest.approx(1.0)
    assert rows[("deviation", "variance")]["spearman"] == pytest.approx(1.0)
    assert rows[("shift", "bias")]["n_shapes"] == 3
    with pytest.raises(ValueError, match="weight"):
        recency_correlations(recency, bv, space="weight")


# ------------------------------------------------------------------ the wrapper, on duck-typed runs and data


class TinyLM(nn.Module):
    def __init__(self, seed: int, vocab: int = 9) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, 4)
        self.out = nn.Linear(4, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(idx))


class FakeData:
    def __init__(self) -> None:
        self.ids = torch.randint(0, 9, (40, 5), generator=torch.Generator().manual_seed(0))

    def train_batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.ids[torch.as_tensor(indices)]


class FakeRun:
    """A run that trained `rows` (one per step) after `init_from` (a checkpoint directory named by its step)."""

    def __init__(self, path: Path, seed: int, rows: np.ndarray, init_from: Path | None, first_step: int,
                 model_seed: int = 1) -> None:
        self.path, self.rows, self.first_step, self.model_seed = path, rows, first_step, model_seed
        self.spec = SimpleNamespace(init_from=None if init_from is None else str(init_from),
                                    data=SimpleNamespace(order=SimpleNamespace(seed=seed)))

    def batch_indices(self) -> np.ndarray:
        return self.rows

    def parent_checkpoint(self) -> Path | None:
        return None if self.spec.init_from is None else Path(self.spec.init_from)

    def checkpoint_steps(self) -> list[int]:
        return [self.first_step - 1, self.first_step - 1 + len(self.rows)]

    def load_model(self, step=None, device="cpu") -> nn.Module:
        return TinyLM(seed=self.model_seed).eval()


def slow_perplexity(model: nn.Module, batch: torch.Tensor) -> float:
    """exp of the mean over all target tokens of -log p(target | prefix), one token at a time."""
    with torch.no_grad():
        logp = torch.log_softmax(model(batch[:, :-1]).double(), -1)
    nll = [-float(logp[b, t, batch[b, t + 1]]) for b in range(batch.shape[0]) for t in range(batch.shape[1] - 1)]
    return math.exp(sum(nll) / len(nll))


@pytest.fixture
def base_and_cooldown(tmp_path, monkeypatch):
    """A base run of 12 steps (batches of 4 from a permutation) with checkpoints at 9 and 12; a cooldown of 5
    steps branched from step 9 (so the base's steps 10-12 are not part of the cooldown's history)."""
    order = np.random.default_rng(1).permutation(40)
    base_rows = np.concatenate([order, order[:8]]).reshape(12, 4)
    cool_rows = np.random.default_rng(2).permutation(40)[:20].reshape(5, 4)
    ckpt = tmp_path / "base" / "checkpoints" / "9"
    ckpt.mkdir(parents=True)
    base = FakeRun(tmp_path / "base", 0, base_rows, None, 1)
    run = FakeRun(tmp_path / "cd", seed=4, rows=cool_rows, init_from=ckpt, first_step=10)
    pre = TinyLM(seed=2).eval()
    monkeypatch.setattr(recency_mod, "load_checkpoint_model", lambda path, device="cpu": pre)
    monkeypatch.setattr(recency_mod, "run_of", lambda checkpoint: base)
    return base, run, pre


def test_curves_cover_the_whole_run_in_training_order(base_and_cooldown) -> None:
    base, run, pre = base_and_cooldown
    data = FakeData()
    curves = recency_mod.recency_curves_table({"cosine": [run]}, data, window=3, eval_batch_size=3)
    whole = np.concatenate([base.rows[:9], run.rows])  # base steps 1..9, then the cooldown's 10..14
    post = run.load_model()
    pre_ppl = [slow_perplexity(pre, data.train_batch(r)) for r in whole]
    post_ppl = [slow_perplexity(post, data.train_batch(r)) for r in whole]
    cooldown = [False] * 9 + [True] * 5
    diff, shift, deviation = slow_eq2(post_ppl, pre_ppl, cooldown)
    assert [c["step"] for c in curves] == list(range(1, 15))
    assert [c["batch_position"] for c in curves] == list(range(14))
    assert [c["phase"] == "cooldown" for c in curves] == cooldown
    assert [c["seed"] for c in curves] == [4] * 14
    assert [c["ppl_pre"] for c in curves] == pytest.approx(pre_ppl, rel=1e-5)
    assert [c["ppl_post"] for c in curves] == pytest.approx(post_ppl, rel=1e-5)
    assert [c["ppl_diff"] for c in curves] == pytest.approx(diff, rel=1e-5, abs=1e-5)  # float32 models
    assert curves[0]["ppl_diff_smoothed"] == pytest.approx(np.mean(diff[:2]), rel=1e-5, abs=1e-5)
    (row,) = recency_table(curves)
    assert row["shift"] == pytest.approx(shift, rel=1e-5, abs=1e-5)
    assert row["deviation"] == pytest.approx(deviation, rel=1e-4, abs=1e-6)
    assert (row["n_batches"], row["n_cooldown_batches"], row["stride"]) == (14, 5, 1)


def test_stride_scores_every_kth_batch_from_the_cooldown_start(base_and_cooldown) -> None:
    base, run, pre = base_and_cooldown
    data = FakeData()
    curves = recency_mod.recency_curves_table({"cosine": [run]}, data, stride=4)
    assert [c["batch_position"] for c in curves] == [1, 5, 9, 13]  # 9 stable batches: 9 - 4 - 4 = 1
    assert [c["step"] for c in curves] == [2, 6, 10, 14]
    whole = np.concatenate([base.rows[:9], run.rows])[[1, 5, 9, 13]]
    post = run.load_model()
    diff, shift, deviation = slow_eq2([slow_perplexity(post, data.train_batch(r)) for r in whole],
                                      [slow_perplexity(pre, data.train_batch(r)) for r in whole],
                                      [False, False, True, True])
    (row,) = recency_table(curves)
    assert row["stride"] == 4 and row["n_cooldown_batches"] == 2
    assert row["shift"] == pytest.approx(shift, rel=1e-5, abs=1e-5)
    assert row["deviation"] == pytest.approx(deviation, rel=1e-4, abs=1e-6)
    with pytest.raises(ConfigError, match="stride"):
        recency_mod.recency_curves_table({"cosine": [run]}, data, stride=0)


def test_a_run_without_init_from_is_rejected(tmp_path) -> None:
    no_branch = FakeRun(tmp_path, 0, np.zeros((2, 4), dtype=int), None, 1)
    with pytest.raises(ConfigError, match="init_from"):
        recency_mod.recency_curves_table({"cosine": [no_branch]}, FakeData())


# ------------------------------------------------------------------ a real study folder, moved


class PatternTokens:
    """DataBundle stand-in: 40 training sequences of 17 tokens (vocab 32), each token the previous plus 1 or 2."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        start = torch.randint(0, 32, (40, 1), generator=g)
        self.items = torch.cat([start, start + torch.randint(1, 3, (40, 16), generator=g).cumsum(1)], 1) % 32

    def train_batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.items[torch.as_tensor(indices)]


def _write_run(folder: Path, spec, step: int, rows: np.ndarray, model_seed: int) -> None:
    """A run folder in the run-store layout: spec.yaml, batches.npy and one checkpoint at `step`."""
    from wsdlab.models import build_model
    from wsdlab.train.checkpoint import save_checkpoint
    from wsdlab.train.spec_io import write_spec

    folder.mkdir(parents=True)
    write_spec(spec, folder / "spec.yaml")
    np.save(folder / "batches.npy", rows)
    torch.manual_seed(model_seed)
    state = {k: v.detach().clone() for k, v in build_model(spec.model).state_dict().items()}
    save_checkpoint(folder / "checkpoints" / str(step), model_state=state, optim_state={}, rng_state={},
                    state={"step": step, "data_cursor": 4 * step, "tokens": 64 * step}, spec=spec)


@pytest.fixture
def study_folder(tmp_path) -> Path:
    """STUDY/runs/base-0a (9 steps, checkpoint 9) and STUDY/runs/cd-0b (5 steps branched from base's 9)."""
    from wsdlab.data.config import DataConfig
    from wsdlab.models import model_config
    from wsdlab.schedules import ScheduleConfig
    from wsdlab.train import RunSpec, TrainConfig

    data = DataConfig(tokenizer="char", vocab_size=32, seq_len=16)
    model = model_config("micro", vocab_size=32, seq_len=16)
    runs = tmp_path / "study" / "runs"
    base = RunSpec(name="base", model=model, data=data, schedule=ScheduleConfig(kind="wso"),
                   train=TrainConfig(steps=9, batch_size=4))
    order = np.random.default_rng(1).permutation(40)
    _write_run(runs / "base-0a", base, 9, order[:36].reshape(9, 4), model_seed=2)
    cool = RunSpec(name="cd", model=model, data=data, init_from=str(runs / "base-0a" / "checkpoints" / "9"),
                   schedule=ScheduleConfig(kind="wsd", cooldown_steps=5, shape="linear"),
                   train=TrainConfig(steps=14, batch_size=4))
    _write_run(runs / "cd-0b", cool, 14, np.random.default_rng(2).permutation(40)[:20].reshape(5, 4), model_seed=3)
    return tmp_path / "study"


def _recency_of(study: Path) -> tuple[list[dict], list[dict]]:
    from wsdlab.train import RunDir

    curves = recency_mod.recency_curves_table({"linear": [RunDir(study / "runs" / "cd-0b")]}, PatternTokens())
    return curves, recency_table(curves)


def test_recency_of_a_moved_study_folder_equals_the_unmoved_one(study_folder, tmp_path) -> None:
    """The cooldown's init_from names the old folder; after shutil.move the run store finds the base
    checkpoint beside the cooldown (STUDY/runs/base-0a/checkpoints/9) and every value is the same."""
    import shutil

    from wsdlab.train import RunDir

    curves, summary = _recency_of(study_folder)
    assert [c["step"] for c in curves] == list(range(1, 15)) and summary[0]["n_cooldown_batches"] == 5
    moved = Path(shutil.move(study_folder, tmp_path / "elsewhere" / "study"))
    run = RunDir(moved / "runs" / "cd-0b")
    assert run.spec.init_from == str(study_folder / "runs" / "base-0a" / "checkpoints" / "9")  # the old folder
    assert run.parent_checkpoint() == moved / "runs" / "base-0a" / "checkpoints" / "9"
    moved_curves, moved_summary = _recency_of(moved)
    assert moved_curves == curves
    assert moved_summary == summary
