"""The fixed evaluation set: seeded draws without repeats, sequence cuts, size-weighted mean loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wsdlab.analysis.evalset import (
    batch_size_of,
    batch_weights,
    fixed_batches,
    loss_and_gradient,
    mean_loss,
    truncate_sequence,
)


class Bundle:
    num_train, num_val = 50, 10

    def train_batch(self, idx: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(idx)[:, None].repeat(1, 9)

    def val_batch(self, idx: np.ndarray) -> torch.Tensor:
        return 1000 + torch.as_tensor(idx)[:, None].repeat(1, 9)


def test_fixed_batches_are_seeded_disjoint_and_cut():
    a = fixed_batches(Bundle(), "train", num_batches=3, batch_size=4, seed=1, seq_len=5)
    b = fixed_batches(Bundle(), "train", num_batches=3, batch_size=4, seed=1, seq_len=5)
    assert [x.shape for x in a] == [(4, 6)] * 3
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    items = torch.cat([x[:, 0] for x in a]).tolist()
    assert len(set(items)) == 12 and all(0 <= i < 50 for i in items)
    other = fixed_batches(Bundle(), "train", num_batches=3, batch_size=4, seed=2)
    assert torch.cat([x[:, 0] for x in other]).tolist() != items
    val = fixed_batches(Bundle(), "val", num_batches=4, batch_size=4)  # only 10 items: 4 + 4 + 2
    assert [x.shape[0] for x in val] == [4, 4, 2] and int(val[0][0, 0]) >= 1000
    with pytest.raises(ValueError, match="split"):
        fixed_batches(Bundle(), "test")  # type: ignore[arg-type]


def test_batch_sizes_weights_and_truncation():
    assert batch_size_of(torch.zeros(3, 5)) == 3
    assert batch_size_of((torch.zeros(2, 1, 4, 4), torch.zeros(2))) == 2
    assert batch_weights([torch.zeros(3, 2), torch.zeros(1, 2)]) == [0.75, 0.25]
    assert truncate_sequence(torch.zeros(2, 10), 4).shape == (2, 5)
    with pytest.raises(ValueError, match="batches"):
        batch_weights([])


def test_mean_loss_and_gradient_weight_by_batch_size():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))

    def loss(m: nn.Module, b: torch.Tensor) -> torch.Tensor:
        return m(b).sum(-1).mean()

    batches = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[2.0, 2.0]])]
    # per-item outputs 1, 2, 3 | 6: the mean over all four items is 3
    assert mean_loss(model, loss, batches) == pytest.approx(3.0)
    value, (grad,) = loss_and_gradient(model, loss, batches)
    assert value == pytest.approx(3.0)
    torch.testing.assert_close(grad, torch.tensor([[1.0, 1.0]]))  # mean of the inputs
