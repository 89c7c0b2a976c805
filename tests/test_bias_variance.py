"""Bias-variance in KL (eq. 1, streaming), weight (eq. 3) and loss (eq. 4) space, and the table wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from wsdlab.analysis.bias_variance import (
    KLBiasVariance,
    bias_variance_rows,
    bias_variance_table,
    fixed_val_batches,
    kl_bias_variance_sums,
    jackknife_se,
    kl_divergence,
    log_mean_probs,
    loss_bias_variance,
    predictive_log_probs,
    weight_bias_variance,
)


def slow_kl_bias_variance(ref_probs: np.ndarray, run_probs: np.ndarray) -> tuple[float, float]:
    """Eq. 1 with every probability materialised: ref (N_r, K, V), runs (N, K, V); plain loops."""
    _, k_tokens, v_classes = run_probs.shape
    bias = var = 0.0
    for k in range(k_tokens):
        r_bar = ref_probs[:, k].mean(axis=0)
        s_bar = run_probs[:, k].mean(axis=0)
        bias += sum(r_bar[v] * math.log(r_bar[v] / s_bar[v]) for v in range(v_classes) if r_bar[v] > 0)
        var += np.mean([((s - s_bar) ** 2).sum() for s in run_probs[:, k]])
    return bias / k_tokens, var / k_tokens


def test_hand_example_two_tokens_three_classes() -> None:
    # token 1: r = (1/2, 1/4, 1/4); s_1 = (1/2, 1/2, 0), s_2 = (1/2, 0, 1/2) -> mean s = r: KL 0,
    #          variance = (0 + 1/16 + 1/16) for each run = 1/8.
    # token 2: r = (1/3, 1/3, 1/3); s_1 = s_2 = (1/2, 1/4, 1/4): variance 0,
    #          KL = sum 1/3 ln((1/3)/s_v) = -ln 3 - (1/3)(ln 1/2 + 2 ln 1/4) = (5/3) ln 2 - ln 3.
    ref = torch.tensor([[[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]], dtype=torch.float64)
    runs = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.25, 0.25]],
                         [[0.5, 0.0, 0.5], [0.5, 0.25, 0.25]]], dtype=torch.float64)
    acc = KLBiasVariance()
    acc.update(ref.log(), runs.log())
    bias, variance = acc.result()
    assert bias == pytest.approx(((5 / 3) * math.log(2) - math.log(3)) / 2, rel=1e-12)
    assert variance == pytest.approx((1 / 8 + 0) / 2, rel=1e-12)


def test_streaming_matches_slow_direct_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    n_ref, n_run, batches, b, t, v = 2, 3, 4, 2, 3, 5
    ref_logits = torch.randn(n_ref, batches, b, t, v, generator=g) * 2
    run_logits = torch.randn(n_run, batches, b, t, v, generator=g) * 2
    acc = KLBiasVariance()
    for i in range(batches):  # one batch of N x B x T x V at a time
        acc.update(torch.log_softmax(ref_logits[:, i], -1), torch.log_softmax(run_logits[:, i], -1))
    bias, variance = acc.result()
    ref_p = torch.softmax(ref_logits.double(), -1).reshape(n_ref, -1, v).numpy()
    run_p = torch.softmax(run_logits.double(), -1).reshape(n_run, -1, v).numpy()
    slow_bias, slow_var = slow_kl_bias_variance(ref_p, run_p)
    assert acc.tokens == batches * b * t
    assert bias == pytest.approx(slow_bias, rel=1e-6)
    assert variance == pytest.approx(slow_var, rel=1e-6)


def test_identical_runs_have_zero_variance_and_matching_references_zero_bias() -> None:
    lp = torch.log_softmax(torch.randn(1, 4, 7), -1)
    kl, var, n = kl_bias_variance_sums(lp, lp.expand(3, 4, 7))
    assert n == 4
    assert kl == pytest.approx(0.0, abs=1e-12) and var == pytest.approx(0.0, abs=1e-12)


def test_kl_helpers() -> None:
    p = torch.tensor([0.2, 0.8], dtype=torch.float64)
    q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    expected = 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)
    assert float(kl_divergence(p.log(), q.log())) == pytest.approx(expected, rel=1e-12)
    # 0 log 0 = 0; q = 0 where p > 0 gives an infinite KL
    assert float(kl_divergence(torch.tensor([1.0, 0.0]).log(), q.float().log())) == pytest.approx(math.log(2))
    assert math.isinf(float(kl_divergence(q.log(), torch.tensor([1.0, 0.0], dtype=torch.float64).log())))
    stack = torch.stack([p, q]).log()
    assert torch.allclose(log_mean_probs(stack).exp(), (p + q) / 2)


def test_mismatched_tokens_are_rejected() -> None:
    with pytest.raises(ValueError, match="same tokens"):
        kl_bias_variance_sums(torch.zeros(1, 3, 4), torch.zeros(2, 2, 4))


def slow_weight_bias_variance(refs: np.ndarray, runs: np.ndarray) -> tuple[float, float]:
    """Eq. 3 as printed, plain loops: refs r_n (N, p), runs s_in (N, p), the same N.

    bias = || (1/N) (sum_n r_n - sum_n s_in) ||,  variance = 1/(N-1) sum_n || s_in - s_bar ||^2.
    """
    n, p = runs.shape
    assert refs.shape == (n, p)
    diff = [(sum(refs[m][j] for m in range(n)) - sum(runs[m][j] for m in range(n))) / n for j in range(p)]
    bias = math.sqrt(sum(d * d for d in diff))
    s_bar = [sum(runs[m][j] for m in range(n)) / n for j in range(p)]
    variance = sum(sum((runs[m][j] - s_bar[j]) ** 2 for j in range(p)) for m in range(n)) / (n - 1)
    return bias, variance


def slow_loss_bias_variance(losses: list[float]) -> tuple[float, float]:
    """Eq. 4 as printed: bias = (1/N) sum_n s_in, variance = (1/N) sum_n (s_in - s_bar)^2."""
    n = len(losses)
    mean = sum(losses) / n
    return mean, sum((s - mean) ** 2 for s in losses) / n


def test_weight_space_hand_example() -> None:
    # r = (1, 0), (3, 0); s = (0, 1), (0, 3): bias = ||((4, 0) - (0, 4)) / 2|| = ||(2, -2)|| = 2 sqrt 2;
    # s_bar = (0, 2): variance = (1 + 1) / (2 - 1) = 2 (the squared norm and 1/N would give 8 and 1).
    refs = [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([3.0, 0.0])}]
    runs = [{"w": torch.tensor([0.0, 1.0])}, {"w": torch.tensor([0.0, 3.0])}]
    bias, var = weight_bias_variance(refs, runs)
    assert bias == pytest.approx(2 * math.sqrt(2), rel=1e-12)
    assert var == pytest.approx(2.0, rel=1e-12)


def test_weight_space_matches_slow_reference() -> None:
    g = torch.Generator().manual_seed(1)
    refs = [{"w": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)} for _ in range(3)]
    runs = [{"w": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)} for _ in range(3)]
    flat = lambda s: np.concatenate([s["w"].numpy().ravel(), s["b"].numpy().ravel()]).astype(np.float64)  # noqa: E731
    r, s = np.stack([flat(x) for x in refs]), np.stack([flat(x) for x in runs])
    bias, var = weight_bias_variance(refs, runs)
    slow_bias, slow_var = slow_weight_bias_variance(r, s)
    assert bias == pytest.approx(slow_bias, rel=1e-10)
    assert var == pytest.approx(slow_var, rel=1e-10)
    assert math.isnan(weight_bias_variance(refs, runs[:1])[1])  # 1/(N-1): no spread from one run
    with pytest.raises(ValueError, match="lacks"):
        weight_bias_variance([{"b": refs[0]["b"]}], runs)


def test_loss_space_matches_slow_reference() -> None:
    runs = [3.1, 3.3, 3.2, 3.6]
    bias, var = loss_bias_variance(runs)
    slow_bias, slow_var = slow_loss_bias_variance(runs)
    assert bias == pytest.approx(slow_bias, rel=1e-12)  # the mean loss itself: no reference subtracted
    assert var == pytest.approx(slow_var, rel=1e-12)
    assert (bias, var) == pytest.approx((3.3, (0.04 + 0.0 + 0.01 + 0.09) / 4), rel=1e-12)  # by hand
    with pytest.raises(ValueError):
        loss_bias_variance([])


def test_rows_cover_every_space() -> None:
    rows = bias_variance_rows("sqrt", kl=(0.1, 0.2), weight=(1.0, 2.0), loss=(0.3, 0.4), avg_model_loss=3.5, n_runs=3,
                              reference_val_loss=2.5)
    by_space = {r["space"]: r for r in rows}
    assert list(by_space) == ["kl", "weight", "loss", "avg_loss_var_loss", "avg_loss_var_weight"]
    assert by_space["avg_loss_var_loss"]["bias"] == 3.5 and by_space["avg_loss_var_loss"]["variance"] == 0.4
    assert by_space["avg_loss_var_weight"]["variance"] == 2.0
    assert all(set(r) == {"shape", "space", "bias", "variance", "n_runs", "bias_se", "variance_se",
                          "reference_val_loss"} for r in rows)
    assert all(r["reference_val_loss"] == 2.5 for r in rows)
    assert all(r["bias_se"] is None for r in rows)  # no jackknife given


# ------------------------------------------------------------------ the wrapper, on duck-typed runs and data


class TinyLM(nn.Module):
    def __init__(self, vocab: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(idx))


class FakeRun:
    def __init__(self, seed: int, vocab: int = 11) -> None:
        self.seed, self.vocab = seed, vocab
        self.path = f"run-{seed}"

    def load_model(self, step: int | None = None, device: str = "cpu") -> nn.Module:
        return TinyLM(self.vocab, self.seed).eval()


class FakeData:
    num_val = 12

    def __init__(self, vocab: int = 11) -> None:
        self.ids = torch.randint(0, vocab, (self.num_val, 6), generator=torch.Generator().manual_seed(5))

    def val_batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.ids[torch.as_tensor(indices)]


def test_table_matches_direct_computation() -> None:
    data = FakeData()
    refs = [FakeRun(100), FakeRun(101)]
    shapes = {"linear": [FakeRun(1), FakeRun(2), FakeRun(3)], "sqrt": [FakeRun(4), FakeRun(5)]}
    rows = bias_variance_table(shapes, refs, data, num_batches=3, batch_size=4)
    assert len(rows) == 2 * 5
    batches = fixed_val_batches(data, 3, 4)
    full = torch.cat(batches)

    def probs(run: FakeRun) -> np.ndarray:
        lp, _ = predictive_log_probs(run.load_model(), full)
        return lp.double().exp().reshape(-1, 11).numpy()

    def loss(model: nn.Module) -> float:
        lp, targets = predictive_log_probs(model, full)
        return float(-lp.gather(-1, targets.unsqueeze(-1)).mean())

    ref_p = np.stack([probs(r) for r in refs])
    for shape, runs in shapes.items():
        got = {r["space"]: r for r in rows if r["shape"] == shape}
        bias, var = slow_kl_bias_variance(ref_p, np.stack([probs(r) for r in runs]))
        assert got["kl"]["bias"] == pytest.approx(bias, rel=1e-5)
        assert got["kl"]["variance"] == pytest.approx(var, rel=1e-5)
        losses = [loss(r.load_model()) for r in runs]
        slow_bias, slow_var = slow_loss_bias_variance(losses)
        assert got["loss"]["bias"] == pytest.approx(slow_bias, rel=1e-5)
        assert got["loss"]["variance"] == pytest.approx(slow_var, rel=1e-4)
        vec = lambda run: np.concatenate([p.detach().double().numpy().ravel()  # noqa: E731
                                          for p in run.load_model().parameters()])
        if len(runs) == len(refs):
            w_bias, w_var = slow_weight_bias_variance(np.stack([vec(r) for r in refs]),
                                                      np.stack([vec(r) for r in runs]))
            assert got["weight"]["bias"] == pytest.approx(w_bias, rel=1e-9)
            assert got["weight"]["variance"] == pytest.approx(w_var, rel=1e-9)
            assert got["avg_loss_var_weight"]["variance"] == got["weight"]["variance"]
        avg = TinyLM(11, 0)
        states = [r.load_model().state_dict() for r in runs]
        avg.load_state_dict({k: sum(s[k] for s in states) / len(states) for k in states[0]})
        assert got["avg_loss_var_loss"]["bias"] == pytest.approx(loss(avg), rel=1e-5)
        assert got["kl"]["n_runs"] == len(runs)
    # the references' mean validation loss, each reference's loss computed directly over the same batches
    ref_loss = (loss(refs[0].load_model()) + loss(refs[1].load_model())) / 2
    assert all(r["reference_val_loss"] == pytest.approx(ref_loss, rel=1e-5) for r in rows)


def test_jackknife_errors_match_leave_one_out_by_hand() -> None:
    assert jackknife_se([1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(2 / 3 * 2.0))  # (N-1)/N sum (t_j - 2)^2
    assert jackknife_se([1.0]) is None and jackknife_se([1.0, math.nan]) is None
    data = FakeData()
    refs = [FakeRun(100), FakeRun(101)]
    runs = [FakeRun(1), FakeRun(2), FakeRun(3), FakeRun(6)]
    rows = {r["space"]: r for r in bias_variance_table({"linear": runs, "two": runs[:2]}, refs, data,
                                                        num_batches=3, batch_size=4) if r["shape"] == "linear"}
    full = torch.cat(fixed_val_batches(data, 3, 4))

    def probs(run: FakeRun) -> np.ndarray:
        lp, _ = predictive_log_probs(run.load_model(), full)
        return lp.double().exp().reshape(-1, 11).numpy()

    ref_p, run_p = np.stack([probs(r) for r in refs]), [probs(r) for r in runs]
    loo = [slow_kl_bias_variance(ref_p, np.stack([p for i, p in enumerate(run_p) if i != j])) for j in range(4)]
    for k, col in ((0, "bias_se"), (1, "variance_se")):
        t = np.array([x[k] for x in loo])
        assert rows["kl"][col] == pytest.approx(math.sqrt(3 / 4 * ((t - t.mean()) ** 2).sum()), rel=1e-5)
    losses = []
    for r in runs:
        lp, targets = predictive_log_probs(r.load_model(), full)
        losses.append(float(-lp.gather(-1, targets.unsqueeze(-1)).double().mean()))
    # the jackknife SE of a mean is the usual sd / sqrt(N)
    assert rows["loss"]["bias_se"] == pytest.approx(np.std(losses, ddof=1) / 2, rel=1e-5)
    def vec(run: FakeRun) -> np.ndarray:
        return np.concatenate([p.detach().double().numpy().ravel() for p in run.load_model().parameters()])

    def eq3(ref_w: np.ndarray, run_w: np.ndarray) -> tuple[float, float]:  # N refs and M runs: means of each
        s_bar = run_w.mean(0)
        return float(np.linalg.norm(ref_w.mean(0) - s_bar)), float(((run_w - s_bar) ** 2).sum() / (len(run_w) - 1))

    ref_w, run_w = np.stack([vec(r) for r in refs]), [vec(r) for r in runs]
    for k, col in ((0, "bias_se"), (1, "variance_se")):  # eq. 3 by hand, leaving each run out in turn
        t = np.array([eq3(ref_w, np.stack([w for i, w in enumerate(run_w) if i != j]))[k] for j in range(4)])
        assert rows["weight"][col] == pytest.approx(math.sqrt(3 / 4 * ((t - t.mean()) ** 2).sum()), rel=1e-6)
    assert rows["avg_loss_var_loss"]["bias_se"] is None


def test_losses_agree_with_train_evaluate() -> None:
    from wsdlab.train import evaluate

    data = FakeData()
    batches = fixed_val_batches(data, 4, 5)  # 12 val items: clipped to 5 + 5 + 2, as evaluate does
    assert [len(b) for b in batches] == [5, 5, 2]
    model = FakeRun(7).load_model()
    rows = bias_variance_table({"x": [FakeRun(7)]}, [FakeRun(8)], data, num_batches=4, batch_size=5)
    by_space = {r["space"]: r for r in rows}
    avg_loss = by_space["avg_loss_var_loss"]["bias"]  # the average of one model is that model
    assert avg_loss == pytest.approx(evaluate(model, data, 4, 5, "cpu"), rel=1e-6)
    assert by_space["loss"]["bias"] == pytest.approx(avg_loss, rel=1e-6)  # eq. 4: the mean loss of the one run
    assert by_space["loss"]["variance"] == 0.0 and by_space["kl"]["variance"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(by_space["weight"]["variance"])  # 1/(N-1) with N = 1


def test_token_chunking_does_not_change_the_sums() -> None:
    g = torch.Generator().manual_seed(3)
    ref = torch.log_softmax(torch.randn(2, 3, 7, 6, generator=g), -1)
    run = torch.log_softmax(torch.randn(4, 3, 7, 6, generator=g), -1)
    whole = kl_bias_variance_sums(ref, run, chunk_tokens=10_000)
    for chunk in (1, 4, 5):
        parts = kl_bias_variance_sums(ref, run, chunk_tokens=chunk)
        assert parts[2] == whole[2] == 21
        assert parts[0] == pytest.approx(whole[0], rel=1e-12) and parts[1] == pytest.approx(whole[1], rel=1e-12)


# ------------------------------------------------------------------ eq. 3 on tied-embedding Llamas


class TiedLlamaRun:
    """A micro Llama with tied embeddings, weights N(0, 0.02) from `seed`, as RunDir.load_model returns it."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.path = f"tied-{seed}"

    def load_model(self, step: int | None = None, device: str = "cpu") -> nn.Module:
        from wsdlab.models import build_model, model_config

        torch.manual_seed(self.seed)
        return build_model(model_config("micro", tie_embeddings=True)).eval()


def test_weight_space_on_tied_embeddings_counts_each_parameter_once() -> None:
    from wsdlab.models import model_config, num_parameters

    cfg = model_config("micro", tie_embeddings=True)

    def vector(run: TiedLlamaRun) -> np.ndarray:
        """The p trainable parameters from the state dict by hand: the tied head's copy dropped."""
        state = run.load_model().state_dict()
        assert torch.equal(state["output.weight"], state["tok_embeddings.weight"])
        return np.concatenate([t.double().numpy().ravel() for k, t in state.items() if k != "output.weight"])

    refs = [TiedLlamaRun(100), TiedLlamaRun(101)]
    runs = [TiedLlamaRun(1), TiedLlamaRun(2)]
    assert vector(runs[0]).size == num_parameters(cfg)  # analytic count, embedding once
    data = FakeData(vocab=cfg.vocab_size)
    rows = bias_variance_table({"sqrt": runs}, refs, data, num_batches=2, batch_size=4)
    got = {r["space"]: r for r in rows}
    bias, var = slow_weight_bias_variance(np.stack([vector(r) for r in refs]), np.stack([vector(r) for r in runs]))
    assert got["weight"]["bias"] == pytest.approx(bias, rel=1e-9)
    assert got["weight"]["variance"] == pytest.approx(var, rel=1e-9)
    assert got["avg_loss_var_weight"]["variance"] == pytest.approx(var, rel=1e-9)
    # counting the tied matrix twice (the state dict) would have given a larger spread
    doubled = np.stack([np.concatenate([t.double().numpy().ravel() for t in r.load_model().state_dict().values()])
                        for r in runs])
    assert ((doubled - doubled.mean(0)) ** 2).sum() > var * (len(runs) - 1) * 1.01


def test_reference_means_cached_or_recomputed_give_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The references' mean distributions are computed once for every shape when they fit in memory; the
    table is the same as when they are recomputed per shape (a budget of 0 bytes)."""
    import wsdlab.analysis.bias_variance as bv

    data = FakeData()
    shapes = {"a": [FakeRun(1), FakeRun(2)], "b": [FakeRun(3), FakeRun(4)]}
    refs = [FakeRun(5), FakeRun(6)]
    cached = bias_variance_table(shapes, refs, data, num_batches=3, batch_size=4)
    monkeypatch.setattr(bv, "REFERENCE_CACHE_BYTES", 0)
    assert bias_variance_table(shapes, refs, data, num_batches=3, batch_size=4) == cached
