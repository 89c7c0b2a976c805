"""Weight sets: selection from state dicts, flattening, combinations, norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wsdlab.analysis.weights import (
    combination,
    difference,
    flatten_weights,
    load_weights,
    model_weights,
    trainable_weights,
    select_parameters,
    unflatten_weights,
    weights_norm,
)
from wsdlab.models import build_model, model_config


def test_select_parameters_drops_buffers_and_tied_names():
    model = build_model(model_config("micro", tie_embeddings=True))
    state = model.state_dict()
    chosen = select_parameters(model, state)
    assert list(chosen) == [n for n, _ in model.named_parameters()]
    assert "output.weight" not in chosen  # tied to tok_embeddings.weight
    state.pop("norm.weight")
    with pytest.raises(ValueError, match="'norm.weight' is missing"):
        select_parameters(model, state, "snap")
    bad = dict(model.state_dict(), **{"norm.weight": torch.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        select_parameters(model, bad)


def test_flatten_roundtrip_combination_and_norm():
    model = nn.Linear(3, 2)
    w = model_weights(model)
    flat = flatten_weights(w)
    assert flat.shape == (8,)
    back = unflatten_weights(flat, w)
    assert all(torch.equal(back[n], w[n]) for n in w)
    two = combination([w, w], [0.25, 0.75])
    assert all(torch.allclose(two[n], w[n]) for n in w)
    assert weights_norm(difference(two, w)) == pytest.approx(0.0, abs=1e-7)
    assert weights_norm({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}) == pytest.approx(5.0)
    zero = {n: torch.zeros_like(t) for n, t in w.items()}
    load_weights(model, zero)
    assert float(model.weight.abs().sum()) == 0.0


def test_trainable_weights_count_each_parameter_once():
    """A tied-embedding Llama: the weight vector has num_parameters entries (embedding once, no buffers)."""
    from wsdlab.models import num_parameters

    cfg = model_config("micro", tie_embeddings=True)
    model = build_model(cfg)
    w = trainable_weights(model)
    assert "output.weight" not in w and "tok_embeddings.weight" in w
    assert not any(n.startswith("rope_") for n in w)  # buffers are not parameters
    assert flatten_weights(w).numel() == num_parameters(model) == num_parameters(cfg)
    state_numel = sum(t.numel() for t in model.state_dict().values())
    assert state_numel - flatten_weights(w).numel() == cfg.vocab_size * cfg.d_model  # state_dict counts it twice
    assert w["tok_embeddings.weight"].data_ptr() == model.tok_embeddings.weight.data_ptr()  # a view, not a copy
    assert not w["tok_embeddings.weight"].requires_grad
