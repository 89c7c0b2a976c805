"""Speed helpers that must not change a number: the per-process measurement memo and the allocator tuning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from wsdlab.analysis.evalset import loss_and_gradient
from wsdlab.analysis.geometry_config import SharpnessConfig
from wsdlab.analysis.geometry.sharpness import _sharpness_at, sharpness_at
from wsdlab.analysis.memo import MEMO, Memo, batches_digest, function_key, model_digest
from wsdlab.analysis.trajectory import trajectory_table
from wsdlab.models import LlamaConfig, batch_loss, build_model


def tiny_lm(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, seq_len=8, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32)
    return build_model(cfg)


def lm_batches(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 64, (4, 9), generator=g) for _ in range(2)]


def test_digests_follow_weights_batches_and_mode() -> None:
    a, b = tiny_lm(0), tiny_lm(0)
    assert model_digest(a) == model_digest(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp-ish change
    assert model_digest(a) != model_digest(b)
    assert model_digest(a) != model_digest(a.eval())  # the mode counts ...
    assert model_digest(a.eval(), mode=False) == model_digest(a.train(), mode=False)  # ... unless asked not to
    assert batches_digest(lm_batches(0)) == batches_digest(lm_batches(0)) != batches_digest(lm_batches(1))
    assert batches_digest([(torch.zeros(2, 3), torch.ones(2))]) != batches_digest([(torch.zeros(2, 3), torch.zeros(2))])


def test_function_key_only_for_module_level_functions() -> None:
    assert function_key(batch_loss) == "wsdlab.models.objective.batch_loss"
    assert function_key(lambda m, b: batch_loss(m, b)) is None

    def local(m, b):  # noqa: ANN001, ANN202
        return batch_loss(m, b)

    assert function_key(local) is None


def test_memo_returns_the_computed_value_and_evicts_by_bytes() -> None:
    memo = Memo(max_bytes=3 * 400)  # room for three (10, 10) float32 tensors
    calls: list[int] = []

    def make(i: int):
        def compute() -> torch.Tensor:
            calls.append(i)
            return torch.full((10, 10), float(i))
        return compute

    first = memo.get_or_compute(("k", "0"), make(0))
    assert memo.get_or_compute(("k", "0"), make(99)) is first and calls == [0]
    for i in (1, 2, 3):  # the fourth tensor pushes out the least recently used ("0")
        memo.get_or_compute(("k", str(i)), make(i))
    memo.get_or_compute(("k", "0"), make(0))
    assert calls == [0, 1, 2, 3, 0]
    assert memo.hits == 1 and memo.misses == 5
    too_big = Memo(max_bytes=10)
    too_big.get_or_compute(("x",), make(7))
    too_big.get_or_compute(("x",), make(7))
    assert calls[-2:] == [7, 7]  # larger than the budget: never kept, simply recomputed


def test_sharpness_memo_hit_is_the_direct_computation() -> None:
    MEMO.clear()
    cfg = SharpnessConfig(method="trace", samples=3, seed=5)
    model, batches = tiny_lm(1), lm_batches(2)
    direct = _sharpness_at(tiny_lm(1), batches, cfg, batch_loss)
    first = sharpness_at(model, batches, cfg)
    second = sharpness_at(tiny_lm(1), batches, cfg)  # same weights in another module: a hit
    assert first == second == direct
    assert MEMO.hits == 1
    third = sharpness_at(tiny_lm(2), batches, cfg)  # other weights: computed
    assert third["trace"] != first["trace"] and MEMO.misses == 2


def test_trajectory_rows_are_the_same_with_the_memo_warm() -> None:
    MEMO.clear()
    model = tiny_lm(3)
    names = [n for n, _ in model.named_parameters()]
    iterates = {}
    for step in range(0, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.97)
        iterates[step] = {n: p.detach().clone() for n, p in zip(names, model.parameters())}
    batches = lm_batches(4)
    cold = trajectory_table(model, batch_loss, batches, iterates, decay_start=3, hessian=False)
    warm = trajectory_table(model, batch_loss, batches, iterates, decay_start=3, hessian=False)
    assert repr(cold) == repr(warm) and MEMO.hits == len(iterates)  # repr: bit for bit, nan == nan
    # the memoized gradient equals a direct one
    work = tiny_lm(3).eval()
    work.load_state_dict({**work.state_dict(), **iterates[4]})
    loss, grads = loss_and_gradient(work, batch_loss, batches)
    path = [r for r in cold if r["kind"] == "path" and r["step"] == 4][0]
    assert path["loss"] == loss
    assert path["grad_norm"] == pytest.approx(float(torch.cat([g.reshape(-1) for g in grads]).norm()), rel=1e-6)


def _tuned_in_child(env: dict[str, str]) -> str:
    code = "from wsdlab.common.allocator import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_allocator_tuning_applies_once_and_can_be_turned_off() -> None:
    clean = {k: "" for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES",
                             "LD_PRELOAD")}
    import platform

    expected = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert _tuned_in_child({**clean, "WSDLAB_MALLOC": "1"}) == expected
    assert _tuned_in_child({**clean, "WSDLAB_MALLOC": "0"}) == "False"
    assert _tuned_in_child({**clean, "MALLOC_TRIM_THRESHOLD_": "100000"}) == "False"  # the user's own tuning wins


def test_gradients_larger_than_the_budget_are_not_memoized(monkeypatch: pytest.MonkeyPatch) -> None:
    MEMO.clear()
    monkeypatch.setattr(MEMO, "max_bytes", 1000)  # smaller than the tiny model's gradient
    model = tiny_lm(3)
    iterates = {s: {n: p.detach() * (1 + 0.1 * s) for n, p in model.named_parameters()} for s in (0, 1)}
    trajectory_table(model, batch_loss, lm_batches(4), iterates, decay_start=1, hessian=False)
    trajectory_table(model, batch_loss, lm_batches(4), iterates, decay_start=1, hessian=False)
    assert MEMO.hits == MEMO.misses == 0


def test_math_attention_is_per_thread() -> None:
    """A Hessian in one thread must not move another thread's evaluation onto the math kernel."""
    import threading

    import torch.nn.functional as F

    from wsdlab.analysis.evalset import math_attention
    from wsdlab.models.attention import causal_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 64, 32), torch.randn(2, 2, 64, 32), torch.randn(2, 2, 64, 32)
    flash = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    math_ = torch.ops.aten._scaled_dot_product_attention_math(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                              None, 0.0, True)[0]
    assert not torch.equal(flash, math_)  # the kernels differ in their last bits on this input
    inside, done = threading.Event(), threading.Event()
    got: dict[str, torch.Tensor] = {}

    def hessian_thread() -> None:
        with math_attention():
            got["math"] = causal_attention(q, k, v)
            inside.set()
            done.wait(10)

    t = threading.Thread(target=hessian_thread)
    t.start()
    inside.wait(10)
    got["plain"] = causal_attention(q, k, v)  # this thread is not inside math_attention
    done.set()
    t.join()
    assert torch.equal(got["math"], math_) and torch.equal(got["plain"], flash)
