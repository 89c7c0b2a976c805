"""AdamW construction, the LambdaLR step convention, and the foreach measurements."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsdlab.train import measures
from wsdlab.train.config import OptimConfig
from wsdlab.train.optim import (
    DECAY,
    NO_DECAY,
    bind_schedule,
    build_optimizer,
    hyperparams,
    set_hyperparams,
    split_decay_params,
)

CPU = torch.device("cpu")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(self.emb(idx)))


def test_no_decay_on_vectors_and_embeddings() -> None:
    groups = split_decay_params(Tiny())
    assert groups[DECAY] == ["proj.weight"]
    assert sorted(groups[NO_DECAY]) == ["emb.weight", "norm.bias", "norm.weight", "proj.bias"]
    assert split_decay_params(Tiny(), decay_norms_and_biases=True)[NO_DECAY] == []


def test_groups_carry_the_spec_hyperparams() -> None:
    opt = build_optimizer(Tiny(), OptimConfig(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=0.2), CPU)
    by_kind = {g["kind"]: g for g in hyperparams(opt)}
    assert by_kind[DECAY]["weight_decay"] == 0.2 and by_kind[NO_DECAY]["weight_decay"] == 0.0
    assert by_kind[DECAY]["betas"] == [0.8, 0.9] and by_kind[DECAY]["eps"] == 1e-6
    set_hyperparams(opt, OptimConfig(lr=0.02, beta1=0.5, weight_decay=0.0))
    assert all(g["betas"] == (0.5, 0.95) and g["weight_decay"] == 0.0 and g["lr"] == 0.02 for g in opt.param_groups)


def test_weight_decay_is_decoupled() -> None:
    """With zero gradient AdamW only shrinks decayed weights: x <- x (1 - lr wd)."""
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.5), CPU)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["proj.weight"], before["proj.weight"] * (1 - 0.1 * 0.5))
    assert torch.equal(after["emb.weight"], before["emb.weight"])


@pytest.mark.parametrize("start", [0, 7])
def test_update_t_uses_lr_times_f_of_t(start: int) -> None:
    """Step convention: the update producing step t uses lr * f(t), also when resuming at `start`."""
    model = Tiny()
    opt = build_optimizer(model, OptimConfig(lr=0.5), CPU)
    schedule = lambda t: 1.0 / (t + 1)  # noqa: E731
    sched = bind_schedule(opt, schedule, start)
    for t in range(start + 1, start + 5):
        assert opt.param_groups[0]["lr"] == 0.5 * schedule(t)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()


def _flat(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in ts])


def test_measures_match_a_direct_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    b = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    fa, fb = _flat(a), _flat(b)
    assert measures.global_norm(a) == pytest.approx(fa.norm().item(), rel=1e-6)
    assert measures.dot(a, b) == pytest.approx(fa.dot(fb).item(), rel=1e-6)
    expected = (fa.dot(fb) / (fa.norm() * fb.norm())).item()
    assert measures.cosine(a, b) == pytest.approx(expected, rel=1e-6)
    assert measures.cosine(a, [torch.zeros_like(x) for x in a]) is None
    diff = measures.difference(a, b)
    assert all(torch.equal(d, x - y) for d, x, y in zip(diff, a, b))
    assert math.isclose(measures.cosine(a, a), 1.0, rel_tol=1e-9)
