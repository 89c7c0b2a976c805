"""Checkpoint format: exact round trip, atomic writes, no unpickling, model-mismatch errors, RNG capture."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from wsdlab.common.errors import CheckpointError
from wsdlab.models import batch_loss, build_model, model_config
from wsdlab.train import checkpoint as ckpt_mod
from wsdlab.train.checkpoint import (
    check_same_model,
    list_checkpoints,
    load_model_weights,
    open_checkpoint,
    save_checkpoint,
)
from wsdlab.train.config import OptimConfig, RunSpec, TrainConfig
from wsdlab.train.optim import build_optimizer, load_optimizer_tensors, optimizer_tensors
from wsdlab.train.rng import host_rng_json, restore_host_rng, restore_torch_rng, torch_rng_tensors
from wsdlab.train.runstore import load_checkpoint


def _spec(**model: object) -> RunSpec:
    cfg = model_config("micro", **model)
    return RunSpec(model=cfg, data={"seq_len": cfg.seq_len, "tokenizer": "char", "vocab_size": 32},
                   train=TrainConfig(steps=10))


def _trained(spec: RunSpec, steps: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(spec.model)
    opt = build_optimizer(model, OptimConfig(lr=1e-2), torch.device("cpu"))
    for _ in range(steps):
        batch = torch.randint(0, spec.model.vocab_size, (4, 9))
        batch_loss(model, batch).backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(directory: Path, spec: RunSpec, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int = 2) -> Path:
    return save_checkpoint(directory, model_state=model.state_dict(), optim_state=optimizer_tensors(opt),
                           rng_state=torch_rng_tensors(), spec=spec,
                           state={"step": step, "start_step": 0, "data_cursor": 32 * step,
                                  "tokens": 32 * step * spec.data.seq_len, "rng": host_rng_json()})


def test_round_trip_is_exact(tmp_path: Path) -> None:
    spec = _spec()
    model, opt = _trained(spec)
    path = _save(tmp_path / "checkpoints" / "2", spec, model, opt)
    ckpt = open_checkpoint(path)
    assert ckpt.step == 2 and ckpt.state["data_cursor"] == 64 and ckpt.spec == spec

    fresh = build_model(spec.model)
    load_model_weights(fresh, ckpt.model_tensors(), path)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    opt2 = build_optimizer(fresh, OptimConfig(lr=1e-2), torch.device("cpu"))
    load_optimizer_tensors(opt2, ckpt.optimizer_tensors())
    for p, q in zip(model.parameters(), fresh.parameters()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], opt2.state[q][key]), key
    # the next update from the loaded state equals the next update of the original
    batch = torch.randint(0, spec.model.vocab_size, (4, 9))
    for m, o in ((model, opt), (fresh, opt2)):
        batch_loss(m, batch).backward()
        o.step()
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_rng_capture_restores_every_generator() -> None:
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    tensors, host = torch_rng_tensors(), json.loads(json.dumps(host_rng_json()))
    first = (torch.rand(3), random.random(), np.random.rand(2))
    restore_torch_rng(tensors)
    restore_host_rng(host)
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])


def test_failed_write_leaves_no_valid_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    model, opt = _trained(spec, steps=1)
    _save(tmp_path / "checkpoints" / "1", spec, model, opt, step=1)

    def boom(_spec: RunSpec) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod, "dump_spec", boom)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path / "checkpoints" / "2", spec, model, opt, step=2)
    assert list(list_checkpoints(tmp_path)) == [1]
    assert not (tmp_path / "checkpoints" / "2").exists()
    # a leftover temporary directory (as a SIGKILL would leave) is ignored by readers
    (tmp_path / "checkpoints" / ".tmp-3-abc").mkdir()
    (tmp_path / "checkpoints" / ".tmp-3-abc" / "state.json").write_text("{}")
    assert list(list_checkpoints(tmp_path)) == [1]


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec()
    model, opt = _trained(spec, steps=1)
    path = _save(tmp_path / "ck", spec, model, opt, step=1)

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be used on run files")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, loaded_spec, state = load_checkpoint(path)
    assert loaded_spec == spec and state["step"] == 1 and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_model_mismatch_names_the_fields(tmp_path: Path) -> None:
    a, b = model_config("micro"), model_config("micro", d_model=16, n_layers=2)
    with pytest.raises(ValueError, match=r"model\.d_model.*model\.n_layers|model\.n_layers.*model\.d_model"):
        check_same_model(a, b, tmp_path)
    check_same_model(a, a.model_copy(update={"preset": "other"}), tmp_path)  # preset is informational
    small = build_model(a)
    with pytest.raises(ValueError, match="shapes differ|missing"):
        load_model_weights(small, build_model(b).state_dict(), tmp_path)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope: directory not found"):
        open_checkpoint(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="state.json"):
        open_checkpoint(tmp_path / "half")


def test_manifest_lists_every_file_and_is_verified(tmp_path: Path) -> None:
    spec = _spec()
    model, opt = _trained(spec, steps=1)
    path = _save(tmp_path / "checkpoints" / "1", spec, model, opt, step=1)
    manifest = json.loads((path / ckpt_mod.MANIFEST_FILE).read_text())
    assert manifest["format"] == 2 and set(manifest["files"]) == set(ckpt_mod.REQUIRED_FILES)
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size
        assert entry["sha256"] == ckpt_mod.file_sha256(path / name)
    assert json.loads((path / "state.json").read_text())["format"] == 2
    (path / "rng.safetensors").write_bytes((path / "rng.safetensors").read_bytes()[:-1])
    with pytest.raises(CheckpointError, match=r"rng.safetensors: size \d+ bytes, manifest says \d+ \(truncated\)"):
        open_checkpoint(path)


def test_stub_checkpoint_verifies(tmp_path: Path) -> None:
    spec = _spec()
    ckpt = open_checkpoint(ckpt_mod.write_stub_checkpoint(tmp_path / "10", spec))
    assert ckpt.step == 10 and ckpt.spec == spec and ckpt.model_tensors() == {}


def _rewrite(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Replace one file and rewrite the manifest to match it, so the checksums no longer catch the change."""
    from safetensors.torch import save_file

    save_file(tensors, directory / name)
    ckpt_mod.write_manifest(directory)


def test_nan_weights_behind_a_rewritten_manifest_are_a_checkpoint_error(tmp_path: Path) -> None:
    spec = _spec()
    model, opt = _trained(spec)
    path = _save(tmp_path / "2", spec, model, opt)
    weights = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    name = sorted(weights)[0]
    weights[name].view(-1)[0] = float("nan")
    _rewrite(path, "model.safetensors", weights)
    ckpt = open_checkpoint(path)  # the manifest matches: only the values tell
    with pytest.raises(CheckpointError, match=rf"{path / 'model.safetensors'}: tensor '{name}' holds NaN"):
        ckpt.model_tensors()


def test_optimizer_tensor_of_the_wrong_shape_is_a_checkpoint_error_naming_both_shapes(tmp_path: Path) -> None:
    spec = _spec()
    model, opt = _trained(spec)
    path = _save(tmp_path / "2", spec, model, opt)
    state = optimizer_tensors(opt)
    name = sorted(k for k in state if k.endswith("/exp_avg"))[0]
    want = list(state[name].shape)
    state[name] = torch.zeros(3, 5)
    _rewrite(path, "optimizer.safetensors", state)
    ckpt = open_checkpoint(path)
    _, fresh = _trained(spec, steps=0)
    where = path / "optimizer.safetensors"
    with pytest.raises(CheckpointError, match=rf"{where}: optimizer tensor '{name}' has shape \[3, 5\], "
                                              rf"the model's parameter needs \[{want[0]}, {want[1]}\]"):
        load_optimizer_tensors(fresh, ckpt.optimizer_tensors(), where)


# safetensors' message on ENOSPC: `format!("Error while serializing: {e:?}")` of its IoError (bindings/python/src/lib.rs)
ENOSPC_MESSAGE = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError(ENOSPC_MESSAGE)

    monkeypatch.setattr(ckpt_mod, "save_file", full)


def test_full_disk_is_an_enospc_os_error_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    spec = _spec()
    model, opt = _trained(spec)
    path = _save(tmp_path / "2", spec, model, opt)
    before = (path / "model.safetensors").read_bytes()
    _disk_full(monkeypatch)
    with pytest.raises(OSError, match="no space left on device") as info:
        _save(tmp_path / "2", spec, model, opt)  # replacing the same step: the old one must survive
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "2")
    assert (path / "model.safetensors").read_bytes() == before and open_checkpoint(path).step == 2
    assert [p.name for p in tmp_path.iterdir()] == ["2"]  # no temporary directory left behind
