"""Sharded (DCP) checkpoints of FSDP2 runs on two gloo ranks: resume bit-identically, load whole on one
process (analyses, export), and no rank materialises more than its shard of the state while saving.

Run as a script under torchrun (`__main__` below) it is the two-rank worker of the memory test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wsdlab.train import RunDir, RunSpec, run_preset, train
from wsdlab.train.checkpoint import open_checkpoint
from wsdlab.train.runstore import load_checkpoint_model
from wsdlab.train.spec_io import write_spec

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _spec() -> RunSpec:
    data = run_preset("micro").model_dump()
    data["train"].update(steps=6, checkpoint_every=None, checkpoint_steps=[3], eval_every=3, snapshot_every=None,
                         snapshot_steps=[3, 6], micro_batch_size=2, progress=False, device="cpu", fsdp=True,
                         precision="fp32")
    return RunSpec.model_validate(data)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(uninterrupted, resumed): a 2-rank FSDP run of 6 steps checkpointing (sharded) at 3 and 6, and a copy
    of it stopped after its step-3 checkpoint (later checkpoint, rows and COMPLETE removed, as a kill after
    that checkpoint leaves it) that 2 ranks resume to the end."""
    root = tmp_path_factory.mktemp("sharded")
    spec_path = root / "spec.yaml"
    write_spec(_spec(), spec_path)
    whole = root / "whole"
    _torchrun("-m", "wsdlab", "train", "--config", str(spec_path), "--out", str(whole))
    resumed = root / "resumed"
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")
    (resumed / "snapshots" / "6.safetensors").unlink()
    (resumed / "COMPLETE").unlink()
    kept = (resumed / "checkpoints" / "3" / "manifest.json").stat().st_ino
    _torchrun("-m", "wsdlab", "train", "--config", str(spec_path), "--out", str(resumed))
    # it resumed from step 3 rather than training afresh (which would have rewritten checkpoint 3)
    assert (resumed / "checkpoints" / "3" / "manifest.json").stat().st_ino == kept
    return whole, resumed


def test_fsdp_checkpoints_are_sharded_with_a_manifest(fsdp_runs: tuple[Path, Path]) -> None:
    whole, _ = fsdp_runs
    ckpt = whole / "checkpoints" / "3"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["sharded"] is True
    assert sorted(manifest["files"]) == ["rng.safetensors", "sharded/.metadata", "sharded/__0_0.distcp",
                               "sharded/__1_0.distcp", "spec.yaml", "state.json"]
    assert not (ckpt / "model.safetensors").exists() and not (ckpt / "optimizer.safetensors").exists()
    assert open_checkpoint(ckpt).step == 3


def test_resumed_sharded_run_is_bit_identical_to_an_uninterrupted_one(fsdp_runs: tuple[Path, Path]) -> None:
    whole, resumed = fsdp_runs
    a, b = RunDir(whole), RunDir(resumed)
    assert b.is_complete
    assert [r["loss"] for r in b.metrics()] == [r["loss"] for r in a.metrics()]
    assert len(a.metrics()) == 6
    wa, wb = open_checkpoint(a.checkpoint(6)), open_checkpoint(b.checkpoint(6))
    for got, want in ((wb.model_tensors(), wa.model_tensors()), (wb.optimizer_tensors(), wa.optimizer_tensors())):
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    sa, sb = load_file(a.snapshot(6)), load_file(b.snapshot(6))  # gathered by the 2 ranks at step 6
    assert all(torch.equal(sb[k], sa[k]) for k in sa)


def test_one_process_loads_the_sharded_weights_the_two_ranks_had(fsdp_runs: tuple[Path, Path]) -> None:
    """The snapshots are the weights gathered whole by both ranks (the full-state path) at the same steps."""
    whole, _ = fsdp_runs
    run = RunDir(whole)
    for step in (3, 6):
        model = load_checkpoint_model(run.checkpoint(step))
        gathered = run.load_snapshot(step)
        state = model.state_dict()
        assert state.keys() == gathered.keys()
        assert all(torch.equal(state[k], gathered[k]) for k in gathered)
        weights = run.checkpoint_weights(step)
        assert weights.keys() == gathered.keys() and all(torch.equal(weights[k], gathered[k]) for k in gathered)
    with pytest.raises(FileNotFoundError, match="sharded"):
        run.weights(3)
    optim = open_checkpoint(run.checkpoint(3)).optimizer_tensors()
    assert {k.rsplit("/", 1)[1] for k in optim} == {"step", "exp_avg", "exp_avg_sq"}
    assert {float(v) for k, v in optim.items() if k.endswith("/step")} == {3.0}


def test_one_process_resumes_the_two_rank_sharded_checkpoint(fsdp_runs: tuple[Path, Path], tmp_path: Path) -> None:
    """DCP reshards on load: the step-3 checkpoint of 2 ranks resumes on one FSDP process (a group of one) and
    ends where the 2 ranks did (up to the order of the gradient reduction)."""
    whole, _ = fsdp_runs
    shutil.copytree(whole, tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "6")
    (tmp_path / "run" / "COMPLETE").unlink()
    (tmp_path / "run" / "snapshots" / "6.safetensors").unlink()
    one = train(_spec(), tmp_path / "run")
    two = RunDir(whole)
    assert [r["loss"] for r in one.metrics()][:3] == [r["loss"] for r in two.metrics()][:3]  # kept rows
    assert [r["loss"] for r in one.metrics()] == pytest.approx([r["loss"] for r in two.metrics()], rel=1e-5)
    got, want = one.checkpoint_weights(6), two.checkpoint_weights(6)
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], rtol=1e-4, atol=1e-6) for k in want)


def test_export_of_a_sharded_checkpoint(fsdp_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from wsdlab.train.export import export_hf, hf_state_dict

    whole, _ = fsdp_runs
    run = RunDir(whole)
    out = export_hf(run.checkpoint(6), tmp_path / "hf")
    exported = load_file(Path(out) / "model.safetensors")
    expected = hf_state_dict(run.load_snapshot(6), run.spec.model)
    assert exported.keys() == expected.keys()
    assert all(torch.equal(exported[k], expected[k]) for k in expected)


def test_a_shard_missing_from_the_manifest_is_rejected(fsdp_runs: tuple[Path, Path], tmp_path: Path) -> None:
    from wsdlab.common.errors import CheckpointError

    whole, _ = fsdp_runs
    ckpt = tmp_path / "3"
    shutil.copytree(whole / "checkpoints" / "3", ckpt)
    (ckpt / "sharded" / "__1_0.distcp").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"__1_0\.distcp: size 0 bytes"):
        open_checkpoint(ckpt)


@pytest.mark.parametrize("extra", [{}, {"precision": "bf16", "activation_checkpointing": True}, {"tied": True}],
                         ids=["fp32", "bf16-ac", "tied"])
def test_fsdp_on_one_process_resumes_its_sharded_checkpoint(tmp_path: Path, extra: dict) -> None:
    """train.fsdp without torchrun (a group of one) writes sharded checkpoints too and resumes them exactly
    (also with the bf16 policy and activation checkpointing, which the sharded resume applies on the meta
    model, and with tied embeddings, one parameter under two names)."""
    data = _spec().model_dump()
    extra = dict(extra)
    data["model"]["tie_embeddings"] = extra.pop("tied", False)
    data["train"].update(steps=4, checkpoint_steps=[2], snapshot_steps=[], eval_every=2, **extra)
    spec = RunSpec.model_validate(data)
    whole = train(spec, tmp_path / "whole")
    shutil.copytree(whole.path, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
    (tmp_path / "resumed" / "COMPLETE").unlink()
    kept = (tmp_path / "resumed" / "checkpoints" / "2" / "manifest.json").stat().st_ino
    resumed = train(spec, tmp_path / "resumed")
    assert (resumed.path / "checkpoints" / "2" / "manifest.json").stat().st_ino == kept  # resumed, not redone
    assert [r["loss"] for r in resumed.metrics()] == [r["loss"] for r in whole.metrics()]
    a, b = open_checkpoint(whole.checkpoint(4)), open_checkpoint(resumed.checkpoint(4))
    assert a.sharded and b.sharded
    for got, want in ((b.model_tensors(), a.model_tensors()), (b.optimizer_tensors(), a.optimizer_tensors())):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("reset", [False, True], ids=["moments", "reset-optimizer"])
def test_branch_from_a_sharded_checkpoint_reads_shards_and_equals_a_whole_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reset: bool) -> None:
    """An FSDP branch (a cooldown) of a sharded parent checkpoint loads only its shards, and trains exactly
    as the same branch does when it loads the parent whole first (the path every rank took before)."""
    from wsdlab.train import branch_from_checkpoint
    from wsdlab.train import loop

    data = _spec().model_dump()
    data["train"].update(steps=5, checkpoint_steps=[], snapshot_steps=[], eval_every=5)
    parent = train(RunSpec.model_validate(data), tmp_path / "parent")
    spec = branch_from_checkpoint(parent.checkpoint(5), steps=2, shape="linear", reset_optimizer=reset)
    calls: list[bool] = []
    real = loop.loads_sharded
    monkeypatch.setattr(loop, "loads_sharded", lambda *a: calls.append(real(*a)) or calls[-1])
    sharded = train(spec, tmp_path / "sharded")
    monkeypatch.setattr(loop, "loads_sharded", lambda *a: calls.append(False) or False)
    whole = train(spec, tmp_path / "whole")
    assert calls == [True, False]
    assert [r["loss"] for r in sharded.metrics()] == [r["loss"] for r in whole.metrics()]
    a, b = open_checkpoint(whole.checkpoint(7)), open_checkpoint(sharded.checkpoint(7))
    for got, want in ((b.model_tensors(), a.model_tensors()), (b.optimizer_tensors(), a.optimizer_tensors())):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    steps = {float(v) for k, v in b.optimizer_tensors().items() if k.endswith("/step")}
    assert steps == ({2.0} if reset else {7.0})


def test_a_full_disk_on_any_rank_is_enospc() -> None:
    import errno
    import traceback

    from torch.distributed.checkpoint.api import CheckpointException

    from wsdlab.train.sharded import _disk_full

    full = OSError(errno.ENOSPC, "No space left on device")
    assert _disk_full(full)
    assert _disk_full(CheckpointException("save failed", {1: (full, traceback.StackSummary())}))
    assert not _disk_full(CheckpointException("save failed", {0: (ValueError("x"), traceback.StackSummary())}))


def test_a_sharded_step_0_checkpoint_has_no_moments_and_resumes(tmp_path: Path) -> None:
    """At step 0 AdamW has no state: the shards hold only weights (no step count of 1 from a warm-up step),
    and a run resumed from it ends as the uninterrupted one."""
    data = _spec().model_dump()
    data["train"].update(steps=4, checkpoint_every=2, checkpoint_steps=[], snapshot_steps=[], eval_every=4)
    spec = RunSpec.model_validate(data)
    whole = train(spec, tmp_path / "whole")
    zero = open_checkpoint(whole.checkpoint(0))
    assert zero.sharded and zero.optimizer_tensors() == {}
    shutil.copytree(whole.path, tmp_path / "resumed")
    for step in (2, 4):
        shutil.rmtree(tmp_path / "resumed" / "checkpoints" / str(step))
    (tmp_path / "resumed" / "COMPLETE").unlink()
    resumed = train(spec, tmp_path / "resumed")
    assert [r["loss"] for r in resumed.metrics()] == [r["loss"] for r in whole.metrics()]
    got, want = resumed.checkpoint_weights(4), whole.checkpoint_weights(4)
    assert all(torch.equal(got[k], want[k]) for k in want)


# ------------------------------------------------------------------------------------ save memory


def test_no_rank_materialises_more_than_its_shard_while_saving(tmp_path: Path) -> None:
    """Peak bytes of tensor storage each rank's save allocates, against the whole state and against the
    old full-state path, both measured the same way on the same 2-rank model after one AdamW step.

    Measured in the worker below with a TorchDispatchMode around the save (`_NewStorage`): every tensor an
    op returns whose storage is none of its inputs' (a new allocation: clones, copies, all-gathers,
    `.to(copy=True)`, temporaries) counts from the op until its storage is freed; the peak of that sum is
    what the rank materialised at once. The shards themselves already exist (they are the model's and the
    optimizer's own tensors) and are written from where they are, so they are not counted. The whole
    state is weights + AdamW moments (3 x the parameter bytes); with 2 ranks a shard is half of it.
    The sharded save must stay within one shard (in fact it only holds the NaN check's temporaries of one
    tensor at a time), while the old path (`full_state_dict` + `optimizer_tensors`, which every rank ran
    at each checkpoint) holds at least the whole state on rank 0 (weights gathered to it, moments on
    every rank) and at least the moments (2/3 of it) on rank 1. Not counted: Python objects (DCP's
    pickled metadata, tens of kB here) and allocator caching.
    """
    out = tmp_path / "mem"
    out.mkdir()
    _torchrun(__file__, str(out))
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    param_bytes = results[0]["param_bytes"]
    full = 3 * param_bytes
    for r in results:
        assert r["param_bytes"] == param_bytes and r["unseen"] == 0, r  # every tensor the save made was counted
        assert r["sharded_save_peak"] <= full / 2, r
    assert results[0]["full_path_peak"] >= full
    assert results[1]["full_path_peak"] >= 2 * param_bytes
    print("peak bytes per rank, sharded save:", [r["sharded_save_peak"] for r in results], "old full-state path:",
          [r["full_path_peak"] for r in results], "whole state:", full)


def _worker(out: Path) -> None:
    """One rank: a small Llama sharded over 2 gloo ranks, one AdamW step, then the sharded save and the old
    full-state gather, each under `_NewStorage`; writes rank<r>.json into `out`."""
    import torch.distributed as dist

    from wsdlab.models import build_model, model_config
    from wsdlab.train.checkpoint import write_sharded_rest
    from wsdlab.train.distributed import full_state_dict, init_distributed, wrap_model
    from wsdlab.train.optim import build_optimizer, optimizer_tensors
    from wsdlab.train.sharded import save_sharded

    ctx = init_distributed("cpu", fsdp=True)
    torch.manual_seed(0)
    model = build_model(model_config("micro", d_model=128, n_layers=2, n_heads=4, vocab_size=1000, ffn_dim=384))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    wrap_model(model, ctx, fsdp=True)
    spec = _spec()
    opt = build_optimizer(model, spec.optim, ctx.device)
    ids = torch.randint(0, 1000, (2, 16))
    model(ids).float().pow(2).mean().backward()
    opt.step()
    with _NewStorage() as sharded:
        save_sharded(out / "ckpt" / "1", model, opt, ctx,
                     lambda tmp: write_sharded_rest(tmp, rng_state={}, state={"step": 1}, spec=spec))
    with _NewStorage() as old:
        weights, moments = full_state_dict(model, ctx, fsdp=True), optimizer_tensors(opt)
    del weights, moments
    (out / f"rank{ctx.rank}.json").write_text(json.dumps({
        "param_bytes": param_bytes, "sharded_save_peak": sharded.peak, "unseen": sharded.unseen,
        "full_path_peak": old.peak}))
    dist.barrier()
    dist.destroy_process_group()


class _NewStorage:
    """Peak bytes of tensor storage that ops allocate while active and that are alive at once (see the
    test's docstring): each op's result whose storage is none of its inputs' counts from the op until
    that storage is freed (a finalizer on the storage object, which torch keeps as long as the storage
    lives, views included)."""

    def __enter__(self) -> _NewStorage:
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        counter = self
        self.live = self.peak = 0
        self.unseen = 0  # tensors whose storage cannot be read (wrapper subclasses): must be 0 to trust `peak`
        tracked: set[int] = set()

        def release(ptr: int, size: int) -> None:
            tracked.discard(ptr)
            counter.live -= size

        def storages(values: object) -> list[torch.UntypedStorage]:
            """The storage of each tensor (a DTensor's local shard's)."""
            out = []
            for t in tree_leaves(values):
                if isinstance(t, torch.Tensor):
                    local = t._local_tensor if hasattr(t, "_local_tensor") else getattr(t, "elem", t)
                    if local.device.type == "meta":
                        continue
                    try:
                        s = local.untyped_storage()
                        s.data_ptr()
                        out.append(s)
                    except RuntimeError:  # e.g. an async collective's result before it is waited for
                        counter.unseen += 1
            return out

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                result = func(*args, **(kwargs or {}))
                inputs = {s.data_ptr() for s in storages((args, kwargs))}
                for s in storages(result):
                    ptr, size = s.data_ptr(), s.nbytes()
                    if ptr in inputs or ptr in tracked or size == 0:
                        continue
                    tracked.add(ptr)
                    counter.live += size
                    counter.peak = max(counter.peak, counter.live)
                    weakref.finalize(s, release, ptr, size)
                return result

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
