"""Activation checkpointing per block (wsdlab.models.checkpointing): the same loss, gradients and
Hessian-vector products as without it, fewer saved activations, on only while training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from wsdlab.analysis.hessian import HessianOperator
from wsdlab.models import build_model, model_config
from wsdlab.models.checkpointing import set_activation_checkpointing
from wsdlab.models.objective import batch_loss
from wsdlab.train import RunDir, RunSpec, run_preset, train

MODELS = {
    "llama": lambda: model_config("tiny", vocab_size=64, seq_len=16, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2,
                                  ffn_dim=48),
    "neox-parallel": lambda: model_config("pythia-160m", vocab_size=64, seq_len=16, d_model=32, n_layers=3, n_heads=4,
                                          ffn_dim=64),
    "neox-sequential": lambda: model_config("pythia-160m", vocab_size=64, seq_len=16, d_model=32, n_layers=3,
                                            n_heads=4, ffn_dim=64, parallel_residual=False),
}


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(MODELS[name]())


def _batch() -> torch.Tensor:
    return torch.randint(0, 64, (3, 17), generator=torch.Generator().manual_seed(1))


def _loss_and_grads(model: nn.Module, on: bool) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Loss, gradients, and the number of tensors autograd saved for backward."""
    set_activation_checkpointing(model, on)
    model.zero_grad(set_to_none=True)
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = batch_loss(model, _batch())
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()], saved


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpointing_gives_bit_identical_loss_and_gradients(name: str) -> None:
    model = _model(name).train()
    loss0, grads0, saved0 = _loss_and_grads(model, on=False)
    loss1, grads1, saved1 = _loss_and_grads(model, on=True)
    assert torch.equal(loss1, loss0)
    for g1, g0 in zip(grads1, grads0):
        assert torch.equal(g1, g0)
    # checkpointing keeps one input per block (plus its cos/sin tables) instead of the block's intermediates
    assert saved1 < saved0 / 2, (saved1, saved0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_checkpointing_in_eval_mode_or_without_grad(name: str) -> None:
    model = _model(name).eval()
    _, _, saved_off = _loss_and_grads(model, on=False)
    _, _, saved_on = _loss_and_grads(model, on=True)
    assert saved_on == saved_off  # eval mode: the plain graph
    model.train()
    with torch.no_grad():
        assert torch.equal(batch_loss(model, _batch()), batch_loss(model.eval(), _batch()))


def _hvp(model: nn.Module, v: list[torch.Tensor]) -> list[torch.Tensor]:
    params = list(model.parameters())
    grads = torch.autograd.grad(batch_loss(model, _batch()), params, create_graph=True)
    return list(torch.autograd.grad(grads, params, grad_outputs=v))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hessian_vector_products_are_unchanged(name: str) -> None:
    model = _model(name).double()
    v = [torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(i))
         for i, p in enumerate(model.parameters())]
    set_activation_checkpointing(model, False)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ref = _hvp(model.train(), v)
        set_activation_checkpointing(model, True)
        checkpointed = _hvp(model.train(), v)  # double backward through checkpointed blocks (train mode)
    for a, b in zip(checkpointed, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # the analyses' operator puts the model in eval mode: the plain graph, the same products
    op = HessianOperator(model, batch_loss, [_batch()])
    flat_v = torch.cat([t.reshape(-1) for t in v])
    torch.testing.assert_close(op.matvec(flat_v), torch.cat([t.reshape(-1) for t in ref]), rtol=1e-10, atol=1e-12)
    assert not model.training and all(block.activation_checkpointing for block in model.layers)


def test_cnn_has_no_blocks_to_checkpoint() -> None:
    with pytest.raises(ValueError, match="no transformer blocks"):
        set_activation_checkpointing(build_model(model_config("cnn")), True)
    set_activation_checkpointing(build_model(model_config("cnn")), False)  # off is always fine
    data = run_preset("cnn").model_dump()
    data["train"]["activation_checkpointing"] = True
    with pytest.raises(ValueError, match="activation_checkpointing needs a transformer"):
        RunSpec.model_validate(data)


def test_presets_checkpoint_only_the_1b_and_8b_models() -> None:
    on = {name for name in ("tiny", "micro", "60M", "210M", "1B", "8B", "pythia-160m", "cnn")
          if run_preset(name).train.activation_checkpointing}
    assert on == {"1B", "8B"}


def test_training_with_checkpointing_matches_training_without(tmp_path: Path) -> None:
    data = run_preset("micro").model_dump()
    data["train"].update(steps=5, checkpoint_every=None, eval_every=5, snapshot_every=None, device="cpu")
    plain = train(RunSpec.model_validate(data), tmp_path / "plain")
    data["train"]["activation_checkpointing"] = True
    ckpt = train(RunSpec.model_validate(data), tmp_path / "ckpt")
    assert [r["loss"] for r in RunDir(ckpt.path).metrics()] == [r["loss"] for r in plain.metrics()]
    assert [r["grad_norm"] for r in RunDir(ckpt.path).metrics()] == [r["grad_norm"] for r in plain.metrics()]


def test_run_identity_leaves_the_option_out_at_its_default(tmp_path: Path) -> None:
    from wsdlab.common.hashing import spec_hash
    from wsdlab.study.identity import LEGACY_LATE_DEFAULTS, legacy_identity, run_identity

    spec = run_preset("tiny")
    before = spec.model_dump(mode="json")
    before["train"].pop("activation_checkpointing")  # release 0.1's identity: before the field existed
    before["train"].pop("checkpoint_every_minutes")  # a field added after release 0.1
    for (section, name), default in LEGACY_LATE_DEFAULTS.items():
        if before.get(section) and before[section].get(name, default) == default:
            before[section].pop(name, None)
    assert legacy_identity(spec, tmp_path) == spec_hash(before)
    assert run_identity(spec, tmp_path) == spec_hash(spec.model_dump(mode="json", exclude_defaults=True))
    on = spec.model_copy(update={"train": spec.train.model_copy(update={"activation_checkpointing": True})})
    assert run_identity(on, tmp_path) != run_identity(spec, tmp_path)
