"""Gradient accumulation (train/accumulate.py): in float64, the accumulated gradient of a masked (SFT)
batch with very unequal response lengths equals the full batch's, whatever micro_batch_size and the
number of DDP ranks; plain batches keep the per-item mean. References are written out by hand here
(cross-entropy of the logits), not taken from `batch_loss`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from wsdlab.common.types import MaskedBatch
from wsdlab.models import build_model, model_config
from wsdlab.train.accumulate import accumulate_gradients, response_tokens
from wsdlab.train.batching import micro_batches, rank_slice
from wsdlab.train.distributed import DistContext

B, T, V = 6, 8, 50
RESPONSE_LENGTHS = [8, 7, 5, 1, 1, 2]  # very unequal; ranks 0 / 1 of two hold 20 / 4 of the 24 tokens


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(model_config("tiny", vocab_size=V, seq_len=T, d_model=16, n_layers=1, n_heads=2,
                                    n_kv_heads=1, ffn_dim=32)).double()


def masked_batch() -> MaskedBatch:
    """B sequences whose last RESPONSE_LENGTHS[b] targets are scored."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    mask = torch.zeros(B, T)
    for b, n in enumerate(RESPONSE_LENGTHS):
        mask[b, T - n:] = 1
    return MaskedBatch((tokens, mask))


def full_batch_reference(model: torch.nn.Module, batch: MaskedBatch) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, gradients) of sum over all response tokens of their cross-entropy / their number."""
    tokens, mask = batch
    logits = model(tokens[:, :-1])  # (B, T, V)
    ce = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1), reduction="none").view(B, T)
    loss = (ce * mask.double()).sum() / sum(RESPONSE_LENGTHS)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def loader(batch: MaskedBatch | torch.Tensor):
    def load(idx: np.ndarray):
        i = torch.as_tensor(idx)
        return MaskedBatch((batch[0][i], batch[1][i])) if isinstance(batch, MaskedBatch) else batch[i]
    return load


def max_diff(model: torch.nn.Module, ref: dict[str, torch.Tensor]) -> float:
    return max(float((p.grad - ref[n]).abs().max()) for n, p in model.named_parameters())


@pytest.mark.parametrize("micro_batch_size", [1, 2, 4, B])
def test_masked_accumulation_equals_the_full_batch_gradient(micro_batch_size: int) -> None:
    model, batch = tiny_model(), masked_batch()
    ref_loss, ref = full_batch_reference(model, batch)
    chunks = micro_batches(np.arange(B), micro_batch_size)
    loss, accuracy = accumulate_gradients(model, loader(batch), chunks, DistContext())
    assert accuracy is None and float(loss) == pytest.approx(ref_loss, rel=1e-13)
    assert max_diff(model, ref) < 1e-12


def test_plain_lm_accumulation_is_the_mean_over_items() -> None:
    """Plain batches: micro means weighted by items (4 + 2 here) give the full batch's mean gradient."""
    model = tiny_model()
    tokens = torch.randint(0, V, (B, T + 1), generator=torch.Generator().manual_seed(2))
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1)).backward()  # mean over B * T targets
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, loader(tokens), micro_batches(np.arange(B), 4), DistContext())
    assert max_diff(model, ref) < 1e-12


def test_response_tokens_counts_the_mask() -> None:
    batch = masked_batch()
    parts = [MaskedBatch((batch[0][i], batch[1][i])) for i in micro_batches(np.arange(B), 4)]
    assert float(response_tokens(parts, DistContext())) == sum(RESPONSE_LENGTHS) == 24


def _ddp_worker(rank: int, world: int, init_file: str) -> None:
    """One of two gloo ranks: DDP over the tiny model, this rank's share of the masked batch."""
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank=rank, world_size=world)
        model, batch = tiny_model(), masked_batch()
        ref_loss, ref = full_batch_reference(model, batch)
        ddp = DistributedDataParallel(model)
        share = rank_slice(np.arange(B), rank, world)
        for micro_batch_size in (1, 2, len(share)):
            loss, _ = accumulate_gradients(ddp, loader(batch), micro_batches(share, micro_batch_size), ctx)
            dist.all_reduce(loss)
            assert float(loss) / world == pytest.approx(ref_loss, rel=1e-13), (rank, micro_batch_size)
            diff = max_diff(model, ref)
            assert diff < 1e-12, (rank, micro_batch_size, diff)
            model.zero_grad(set_to_none=True)
        del ddp
        dist.barrier()  # both ranks are done before the group goes (a gloo rank torn down early aborts the other)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_weigh_every_response_token_equally(tmp_path: Path) -> None:
    """Rank 0 holds 20 response tokens, rank 1 holds 4: the DDP gradient still equals the full batch's."""
    assert sum(RESPONSE_LENGTHS[:3]) == 20 and sum(RESPONSE_LENGTHS[3:]) == 4
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)
