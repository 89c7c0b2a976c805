"""Linear probes per layer on the `micro` LM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wsdlab.analysis.evalset import mean_loss
from wsdlab.analysis.probes import add_relative, head_parameter_names, probe_layers
from wsdlab.analysis.weights import model_weights
from wsdlab.models import batch_loss, build_model, model_config


def _batches(seed: int, count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # a learnable pattern: each token is the previous one plus 1 or 2 (mod 32)
    out = []
    for _ in range(count):
        start = torch.randint(0, 32, (8, 1), generator=g)
        out.append(torch.cat([start, start + torch.randint(1, 3, (8, 16), generator=g).cumsum(1)], 1) % 32)
    return out


@pytest.fixture(scope="module")
def micro() -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("micro", n_layers=2))


def test_one_row_per_layer_with_finite_perplexity(micro):
    rows = probe_layers(micro, _batches(0, 2), _batches(1, 1), steps=30, lr=1e-2)
    assert [r["layer"] for r in rows] == [0, 1, 2]  # embeddings + one row per block
    for r in rows:
        assert math.isfinite(r["perplexity"]) and r["perplexity"] == pytest.approx(math.exp(r["loss"]))
        assert r["loss"] < r["initial_loss"]  # training the probe helps on held-out data of the same pattern


def test_last_layer_probe_starts_at_the_model_and_model_is_unchanged(micro):
    before = model_weights(micro)
    held_out = _batches(1, 1)
    rows = probe_layers(micro, _batches(0, 1), held_out, steps=5, layers=[2])
    assert rows[0]["initial_loss"] == pytest.approx(mean_loss(micro, batch_loss, held_out), rel=1e-5)
    for name, p in micro.named_parameters():
        assert torch.equal(p, before[name])
    zero = probe_layers(micro, _batches(0, 1), held_out, steps=0, layers=[2])
    assert zero[0]["loss"] == zero[0]["initial_loss"]


def test_head_parameters_and_tied_embeddings():
    assert head_parameter_names(build_model(model_config("micro"))) == ["norm.weight", "output.weight"]
    tied = build_model(model_config("micro", tie_embeddings=True))
    assert head_parameter_names(tied) == ["tok_embeddings.weight", "norm.weight"]
    before = tied.tok_embeddings.weight.detach().clone()
    held_out = _batches(1, 1)
    rows = probe_layers(tied, _batches(0, 1), held_out, steps=3)
    assert len(rows) == 2  # the last layer's probe starts at the tied model itself
    assert rows[-1]["initial_loss"] == pytest.approx(mean_loss(tied, batch_loss, held_out), rel=1e-5)
    assert all(r["perplexity"] == pytest.approx(math.exp(r["loss"])) for r in rows)
    assert torch.equal(tied.tok_embeddings.weight, before)


def test_relative_perplexity_to_the_reference_step():
    rows = [{"step": 10, "layer": 0, "perplexity": 8.0}, {"step": 10, "layer": 1, "perplexity": 4.0},
            {"step": 20, "layer": 0, "perplexity": 6.0}, {"step": 20, "layer": 1, "perplexity": 4.0}]
    out = add_relative(rows, 10)
    assert [r["rel_perplexity"] for r in out] == [1.0, 1.0, 0.75, 1.0]
    with pytest.raises(ValueError, match="reference step 5"):
        add_relative(rows, 5)


def test_probes_reject_non_language_models(micro):
    with pytest.raises(ValueError, match="language model"):
        probe_layers(nn.Linear(2, 2), _batches(0, 1), _batches(1, 1))
    with pytest.raises(ValueError, match="layers"):
        probe_layers(micro, _batches(0, 1), _batches(1, 1), layers=[7])
