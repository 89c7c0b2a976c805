"""Two gloo processes under torchrun (DDP) match one process on the same global batch; rank 0 alone
prints the run summary. (Masked-batch accumulation over two ranks: tests/test_accumulate.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wsdlab.train import RunDir, RunSpec, run_preset, train
from wsdlab.train.batching import micro_batches, rank_slice
from wsdlab.train.checkpoint import open_checkpoint
from wsdlab.train.spec_io import write_spec


def test_rank_slices_partition_the_global_batch() -> None:
    batch = np.arange(12)
    parts = [rank_slice(batch, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), batch) and all(len(p) == 4 for p in parts)
    assert [len(m) for m in micro_batches(parts[0], 3)] == [3, 1]
    with pytest.raises(ValueError, match="divisible"):
        rank_slice(np.arange(10), 0, 4)


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    data = run_preset("micro").model_dump()
    data["train"].update(steps=4, checkpoint_every=None, eval_every=2, snapshot_every=None, micro_batch_size=2,
                         progress=False, device="cpu")
    spec = RunSpec.model_validate(data)
    spec_path = tmp_path / "spec.yaml"
    write_spec(spec, spec_path)
    single = train(spec, tmp_path / "single")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "wsdlab",
           "train", "--config", str(spec_path), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    a = load_file(single.checkpoint(4) / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "checkpoints" / "4" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    ddp = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(ddp) == len((single.path / "metrics.jsonl").read_text().splitlines())  # rank 0 writes alone
    losses_single = [r["loss"] for r in single.metrics()]
    losses_ddp = [r["loss"] for r in RunDir(tmp_path / "ddp").metrics()]
    assert losses_ddp == pytest.approx(losses_single, rel=1e-4)  # the loss is averaged over both ranks
    # rank 0 alone prints the run summary, with the final rows' values
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("done ")]
    final_val = RunDir(tmp_path / "ddp").eval_rows()[-1]["val_loss"]
    assert len(summaries) == 1, proc.stdout
    assert f"step 4 | loss {losses_ddp[-1]:.4f} | val loss {final_val:.4f}" in summaries[0]


def test_other_ranks_poll_the_data_marker_instead_of_a_barrier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank != 0 waits (no collective, so no process-group timeout) until rank 0's corpus marker exists."""
    from wsdlab.train import distributed as dist_utils

    marker = tmp_path / "meta.json"
    polls: list[int] = []

    def ready() -> bool:
        polls.append(1)
        if len(polls) == 3:
            marker.write_text("{}")  # rank 0 finishes while we wait
        return marker.is_file()

    monkeypatch.setattr(dist_utils, "barrier", lambda ctx: pytest.fail("no barrier when a ready check is given"))
    other = dist_utils.DistContext(rank=1, world_size=2)
    with dist_utils.main_first(other, ready=ready, timeout_s=60, poll_s=0.001):
        assert marker.is_file()
    assert len(polls) == 3
    with dist_utils.main_first(dist_utils.DistContext(rank=0, world_size=2), ready=lambda: False, timeout_s=0.01):
        pass  # rank 0 neither waits nor joins a barrier
    with pytest.raises(TimeoutError, match="WSDLAB_DATA_WAIT"):
        dist_utils.wait_until(lambda: False, timeout_s=0.01, poll_s=0.001)


def test_data_wait_seconds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsdlab.common.errors import ConfigError
    from wsdlab.train import distributed as dist_utils

    monkeypatch.delenv("WSDLAB_DATA_WAIT", raising=False)
    assert dist_utils.data_wait_seconds() == 7 * 24 * 3600
    monkeypatch.setenv("WSDLAB_DATA_WAIT", "90")
    assert dist_utils.data_wait_seconds() == 90.0
    for bad in ("0", "soon", "-5"):
        monkeypatch.setenv("WSDLAB_DATA_WAIT", bad)
        with pytest.raises(ConfigError, match="WSDLAB_DATA_WAIT"):
            dist_utils.data_wait_seconds()


def test_fsdp_bf16_runs_get_the_mixed_precision_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed.fsdp as fsdp

    from wsdlab.models import build_model, model_config
    from wsdlab.train.distributed import DistContext, fsdp_mixed_precision, wrap_model

    policy = fsdp_mixed_precision(True)
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert fsdp_mixed_precision(False) is None
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kw: calls.append((type(module).__name__, kw)))
    model = build_model(model_config("micro", n_layers=2))
    ctx = DistContext(rank=0, world_size=2)
    wrap_model(model, ctx, fsdp=True, bf16=True)
    assert [name for name, _ in calls] == ["Block", "Block", "Llama"]  # each block, then the root
    assert all(kw == {"mp_policy": policy} for _, kw in calls)
    calls.clear()
    wrap_model(model, ctx, fsdp=True, bf16=False)
    assert calls == [("Block", {}), ("Block", {}), ("Llama", {})]  # fp32: FSDP's default (no casts)


def test_two_gloo_fsdp_processes_in_bf16_match_one(tmp_path: Path) -> None:
    """FSDP2 with the bf16 policy (fp32 shards, bf16 compute, fp32 reduce-scatter) on two CPU ranks trains
    as one bf16 process does (bf16 rounding apart) and keeps fp32 weights."""
    data = run_preset("micro").model_dump()
    data["train"].update(steps=4, checkpoint_every=None, eval_every=4, snapshot_every=None, micro_batch_size=2,
                         progress=False, device="cpu", fsdp=True, precision="bf16", activation_checkpointing=True)
    spec = RunSpec.model_validate(data)
    spec_path = tmp_path / "spec.yaml"
    write_spec(spec, spec_path)
    single = train(spec, tmp_path / "single")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "wsdlab",
           "train", "--config", str(spec_path), "--out", str(tmp_path / "fsdp")]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses_single = [r["loss"] for r in single.metrics()]
    losses_fsdp = [r["loss"] for r in RunDir(tmp_path / "fsdp").metrics()]
    assert len(losses_fsdp) == 4 and losses_fsdp == pytest.approx(losses_single, rel=1e-3)
    val = [RunDir(tmp_path / "fsdp").eval_rows()[-1]["val_loss"], single.eval_rows()[-1]["val_loss"]]
    assert val[0] == pytest.approx(val[1], rel=1e-3)
    # (weights are not compared element-wise: AdamW moves a weight whose gradient is ~0 by +-lr on bf16 rounding)
    weights = open_checkpoint(tmp_path / "fsdp" / "checkpoints" / "4").model_tensors()  # sharded: loaded whole
    assert {w.dtype for w in weights.values()} == {torch.float32}  # the shards stayed fp32


def test_fsdp_on_one_process_shards_in_a_group_of_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.fsdp without torchrun never trains plain: the process joins a group of one, FSDP2 wraps each
    block and the root, the run trains as a plain one does, and the group is gone afterwards."""
    import torch.distributed as dist
    import torch.distributed.fsdp as fsdp

    real, calls = fsdp.fully_shard, []

    def recording(module, **kw):  # type: ignore[no-untyped-def]
        calls.append((type(module).__name__, dist.get_world_size()))
        return real(module, **kw)

    monkeypatch.setattr(fsdp, "fully_shard", recording)
    data = run_preset("micro").model_dump()
    data["train"].update(steps=6, checkpoint_every=None, eval_every=6, snapshot_every=None, progress=False,
                         device="cpu", precision="fp32")
    plain = train(RunSpec.model_validate(data), tmp_path / "plain")
    data["train"]["fsdp"] = True
    sharded = train(RunSpec.model_validate(data), tmp_path / "fsdp")
    assert calls == [("Block", 1), ("Llama", 1)]  # micro: one block, then the root, in a group of one
    assert not dist.is_initialized()  # the run's own group was destroyed
    losses = [r["loss"] for r in sharded.metrics()]
    assert len(losses) == 6 and losses == pytest.approx([r["loss"] for r in plain.metrics()], rel=1e-6)
    assert open_checkpoint(tmp_path / "fsdp" / "checkpoints" / "6").sharded  # FSDP on one process: sharded too
    weights = open_checkpoint(tmp_path / "fsdp" / "checkpoints" / "6").model_tensors()
    expected = load_file(tmp_path / "plain" / "checkpoints" / "6" / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.allclose(weights[k], expected[k], rtol=1e-5, atol=1e-7) for k in expected)
