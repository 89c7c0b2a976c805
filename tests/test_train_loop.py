"""The training loop: metrics rows, the LR convention, alignment metrics, resume, accumulation, loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wsdlab.data import load_data
from wsdlab.models import batch_loss, build_model
from wsdlab.train import MetricsSink, RunSpec, run_preset, train
from wsdlab.train.evaluate import eval_index_chunks

TRAIN_KEYS = {"step", "loss", "lr", "grad_norm", "param_norm", "update_norm", "grad_momentum_cos",
              "grad_momentum_cos_global", "update_grad_cos", "tokens", "tokens_per_s", "mfu"}


def micro(schedule: dict | None = None, **train: object) -> RunSpec:
    """The micro preset (char corpus, ~1K-parameter Llama), a short run; keyword args override train fields."""
    data = run_preset("micro").model_dump()
    data["train"].update({"steps": 12, "checkpoint_every": 5, "eval_every": 5, "snapshot_every": 4,
                          "progress": False, **train})
    data["schedule"].update(schedule or {})
    return RunSpec.model_validate(data)


@pytest.fixture(scope="module")
def data():
    return load_data(run_preset("micro").data, progress=False)


@pytest.fixture(scope="module")
def run12(tmp_path_factory: pytest.TempPathFactory, data):
    spec = micro(schedule={"kind": "wsd", "warmup_steps": 3, "cooldown_fraction": 0.5})
    out = tmp_path_factory.mktemp("run12")
    return spec, train(spec, out)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def test_rows_have_the_keys_and_lr_follows_the_schedule(run12, data) -> None:
    spec, run = run12
    rows = run.metrics()
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all(TRAIN_KEYS <= r.keys() for r in rows)
    # WSD by hand: warmup t/3 to step 3, stable to step 6, then 1 - sqrt((t - 6) / 6) (the default sqrt shape)
    factors = [t / 3 for t in (1, 2, 3)] + [1.0] * 3 + [1 - math.sqrt((t - 6) / 6) for t in range(7, 13)]
    assert [r["lr"] for r in rows] == pytest.approx([spec.optim.lr * f for f in factors], rel=1e-12, abs=0)
    assert rows[-1]["lr"] == 0.0
    assert [r["tokens"] for r in rows] == [t * 8 * data.tokens_per_item for t in range(1, 13)]
    assert rows[0]["grad_momentum_cos"] is None and rows[0]["grad_momentum_cos_global"] is None
    assert all(isinstance(r["grad_momentum_cos"], float) for r in rows[1:])
    assert all(-1 <= r["grad_momentum_cos"] <= 1 and -1 <= r["grad_momentum_cos_global"] <= 1 for r in rows[1:])
    assert all(-1 <= r["update_grad_cos"] <= 1 and r["grad_norm"] > 0 and r["mfu"] is None for r in rows[:-1])
    assert rows[-1]["update_grad_cos"] is None  # lr 0 and no weight decay: no update, no direction
    assert rows[-1]["update_norm"] == 0.0 and all(r["update_norm"] > 0 for r in rows[:-1])
    assert [r["step"] for r in run.eval_rows()] == [0, 5, 10, 12]
    assert run.checkpoint_steps() == [0, 5, 10, 12] and run.snapshot_steps() == [0, 4, 8, 12]
    assert run.is_complete
    # order seed 0, one portion, shuffled: the first 96 positions of epoch 0's permutation (numpy seeded (0, 0))
    assert spec.data.order.seed == 0 and data.num_train > 96
    expected = np.random.default_rng((0, 0)).permutation(data.num_train)[:96].reshape(12, 8)
    assert np.array_equal(run.batch_indices(), expected)


def test_alignment_metrics_match_a_direct_computation(run12, data) -> None:
    """Step 6 redone by hand from checkpoint 5 and the recorded batch: cos(g_6, m_5), cos(-g_6, x_6 - x_5)."""
    spec, run = run12
    ckpt = run.checkpoint(5)
    model = build_model(spec.model)
    model.load_state_dict(weights(ckpt))
    x_prev = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    batch = data.train_batch(run.batch_indices()[5])
    batch_loss(model, batch).backward()
    names = [n for n, _ in model.named_parameters()]
    g = torch.cat([p.grad.reshape(-1).double() for p in model.parameters()])
    opt = load_file(ckpt / "optimizer.safetensors")
    m = torch.cat([opt[f"{n}/exp_avg"].reshape(-1).double() for n in names])
    row = run.metrics()[5]
    assert row["step"] == 6
    # App. G: the cosine of each parameter tensor with its exp_avg, then the mean over tensors
    per_tensor = []
    for n, p in model.named_parameters():
        gj, mj = p.grad.reshape(-1).double(), opt[f"{n}/exp_avg"].reshape(-1).double()
        per_tensor.append(float(gj.dot(mj) / (gj.norm() * mj.norm())))
    assert row["grad_momentum_cos"] == pytest.approx(sum(per_tensor) / len(per_tensor), rel=1e-5)
    assert row["grad_momentum_cos_global"] == pytest.approx((g.dot(m) / (g.norm() * m.norm())).item(), rel=1e-5)
    assert row["grad_norm"] == pytest.approx(g.norm().item(), rel=1e-5)
    # the update x_6 - x_5: one AdamW step by hand from the checkpointed moments, in float64: the gradient
    # clipped to grad_clip, bias-corrected moments of step 6, lr * f(6) = lr (step 6 is stable), no weight decay
    o = spec.optim
    assert o.weight_decay == 0.0 and all(int(opt[f"{n}/step"]) == 5 for n in names)
    g_clipped = g * min(1.0, o.grad_clip / (float(g.norm()) + 1e-6))
    v = torch.cat([opt[f"{n}/exp_avg_sq"].reshape(-1).double() for n in names])
    m6 = o.beta1 * m + (1 - o.beta1) * g_clipped
    v6 = o.beta2 * v + (1 - o.beta2) * g_clipped**2
    u = -o.lr * (m6 / (1 - o.beta1**6)) / ((v6 / (1 - o.beta2**6)).sqrt() + o.eps)
    x_new = x_prev + u
    assert row["update_grad_cos"] == pytest.approx((-g.dot(u) / (g.norm() * u.norm())).item(), rel=1e-4)
    assert row["param_norm"] == pytest.approx(x_new.norm().item(), rel=1e-6)
    assert row["update_norm"] == pytest.approx(u.norm().item(), rel=1e-4)  # ||x_6 - x_5||


class StopAt(MetricsSink):
    """Raises KeyboardInterrupt (a Ctrl-C) when the row of `step` is logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, metrics: dict[str, float], step: int) -> None:
        if step == self.step and "train/loss" in metrics:
            raise KeyboardInterrupt


def _rows_without_timing(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(run12, tmp_path: Path) -> None:
    spec, full = run12
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path, sinks=[StopAt(8)])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0", "5"]  # no .tmp-* left
    assert not (tmp_path / "COMPLETE").exists()
    resumed = train(spec, tmp_path)
    assert resumed.is_complete
    for step in full.checkpoint_steps():
        a, b = weights(full.checkpoint(step)), weights(resumed.checkpoint(step))
        assert all(torch.equal(a[k], b[k]) for k in a), step
    assert _rows_without_timing(tmp_path) == _rows_without_timing(full.path)
    assert np.array_equal(resumed.batch_indices(), full.batch_indices())


def test_resuming_with_another_spec_names_the_keys(run12) -> None:
    spec, run = run12
    other = spec.model_copy(update={"optim": spec.optim.model_copy(update={"lr": 0.5})})
    with pytest.raises(ValueError, match="optim.lr"):
        train(other, run.path)
    assert train(spec, run.path).is_complete  # a complete run with its own spec returns at once


def test_gradient_accumulation_matches_the_full_batch(tmp_path: Path, data) -> None:
    short = {"steps": 3, "checkpoint_every": None, "snapshot_every": None}
    a = train(micro({"warmup_steps": 1}, **short), tmp_path / "full")
    b = train(micro({"warmup_steps": 1}, **short, micro_batch_size=3), tmp_path / "accum")
    wa, wb = weights(a.checkpoint(3)), weights(b.checkpoint(3))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in a.metrics()] == pytest.approx([r["loss"] for r in b.metrics()], rel=1e-5)
    # the val set is eval_batches x the global batch either way (micro_batch_size only sets the chunks)
    vals = [r["val_loss"] for r in a.eval_rows()]
    assert len(vals) == 2 and vals == pytest.approx([r["val_loss"] for r in b.eval_rows()], rel=1e-6)


def test_eval_chunks_cut_the_same_set() -> None:
    assert [c.tolist() for c in eval_index_chunks(100, 2, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [c.tolist() for c in eval_index_chunks(100, 2, 5, chunk_size=3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [c.tolist() for c in eval_index_chunks(7, 2, 5, chunk_size=8)] == [[0, 1, 2, 3, 4], [5, 6]]
    with pytest.raises(ValueError, match="chunk_size"):
        eval_index_chunks(100, 2, 5, chunk_size=0)


def test_loss_falls_on_the_micro_preset(tmp_path: Path, data) -> None:
    spec = run_preset("micro")
    run = train(spec.model_copy(update={"train": spec.train.model_copy(update={"snapshot_every": None})}), tmp_path)
    losses = [r["loss"] for r in run.metrics()]
    vals = [r["val_loss"] for r in run.eval_rows()]
    assert len(losses) == spec.train.steps
    assert np.mean(losses[-5:]) < losses[0] - 0.5
    assert vals[-1] < vals[0] - 0.5


def test_model_vocabulary_smaller_than_the_data_is_an_error(tmp_path: Path, data) -> None:
    spec = micro()
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"vocab_size": 8})})
    with pytest.raises(ValueError, match="model.vocab_size"):
        train(spec, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_a_cuda_run_trains_and_resumes(tmp_path: Path, data) -> None:
    """On CUDA: bf16 autocast, fused AdamW, MFU on known devices; a resumed run still matches."""
    spec = micro(device="cuda")
    full = train(spec, tmp_path / "full")
    rows = full.metrics()
    assert np.mean([r["loss"] for r in rows[-3:]]) < rows[0]["loss"]
    name = torch.cuda.get_device_name()
    assert (rows[-1]["mfu"] is not None) == any(k in name for k in ("H100", "H200", "A100"))
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path / "resumed", sinks=[StopAt(8)])
    resumed = train(spec, tmp_path / "resumed")
    a, b = weights(full.checkpoint(12)), weights(resumed.checkpoint(12))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- classifiers: accuracy


def test_batch_loss_and_accuracy_by_hand() -> None:
    """Logits fixed by hand: images 0 and 2 are right (arg-max = label), image 1 is wrong -> 2/3."""
    from wsdlab.models import batch_loss_and_accuracy

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    model = torch.nn.Identity()
    loss, acc = batch_loss_and_accuracy(model, (logits, torch.tensor([0, 2, 2])))
    assert float(acc) == pytest.approx(2 / 3)
    # cross-entropy by hand: mean over images of log(sum_j e^{z_j}) - z_label
    by_hand = [math.log(math.exp(2) + 2) - 2, math.log(math.e + 2) - 0, math.log(math.exp(3) + 2) - 3]
    assert float(loss) == pytest.approx(sum(by_hand) / 3, rel=1e-6)
    lm_loss, lm_acc = batch_loss_and_accuracy(build_model(run_preset("micro").model), torch.zeros(2, 5, dtype=torch.long))
    assert lm_acc is None and lm_loss.ndim == 0


def test_classifier_runs_log_accuracy(tmp_path: Path) -> None:
    """A CNN run logs `accuracy` on train rows and `val_accuracy` on eval rows (LM runs log neither)."""
    import gzip

    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, n in (("train", 64), ("t10k", 16)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, size=(n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">i4").tobytes()
            (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))
    spec = RunSpec.model_validate({
        "name": "cnn", "model": {"arch": "cnn", "in_channels": 1, "image_size": 28, "channels": [4, 4, 4, 4]},
        "data": {"source": "fashion_mnist", "path": str(folder)},
        "schedule": {"kind": "wsd", "warmup_steps": 1, "cooldown_fraction": 0.5},
        "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "eval_batches": 2, "checkpoint_every": 1,
                  "device": "cpu", "progress": False}})
    run = train(spec, tmp_path / "run")
    rows = run.metrics()
    train_rows = [r for r in rows if r.get("split") != "val"]
    assert len(train_rows) == 4
    images = load_data(spec.data, progress=False)

    def accuracy(step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> float:  # argmax = label, by hand
        with torch.no_grad():
            return float((run.load_model(step)(batch[0]).argmax(-1) == batch[1]).double().mean())

    for t, row in enumerate(train_rows, 1):  # the step-t batch, by the weights before its update (checkpoint t-1)
        assert row["accuracy"] == pytest.approx(accuracy(t - 1, images.train_batch(run.batch_indices()[t - 1])))
    evals = run.eval_rows()
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:  # the val set: its first eval_batches x batch_size = 16 images
        assert r["val_accuracy"] == pytest.approx(accuracy(r["step"], images.val_batch(np.arange(16))))
