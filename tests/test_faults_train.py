"""Runs that survive faults: a kill at any point resumes to the same weights, NaN/inf stops the run
cleanly, one writer per run directory, damaged checkpoints are detected, absurd specs write nothing."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from wsdlab.common.errors import CheckpointError, ConfigError, NonFiniteError, RunLockedError
from wsdlab.train import RunDir, RunSpec, branch_from_checkpoint, load_checkpoint, run_preset, train
from wsdlab.train import accumulate as loop_mod  # the training forward lives in train/accumulate.py
from wsdlab.train.checkpoint import (
    MANIFEST_FILE,
    REQUIRED_FILES,
    list_checkpoints,
    open_checkpoint,
    save_checkpoint,
    write_manifest,
)
from wsdlab.train.loop import latest_intact_checkpoint
from wsdlab.train.runlock import LOCK_FILE
from wsdlab.train.spec_io import write_spec
from wsdlab.train.validate import check_memory, validate_run_start


def tiny_spec(**train: object) -> RunSpec:
    """The micro preset, 6 steps: checkpoints 0/2/4/6, evals 0/2/4/6, snapshots 0/3/6."""
    data = run_preset("micro").model_dump()
    data["train"].update(steps=6, checkpoint_every=2, eval_every=2, snapshot_every=3, progress=False)
    data["train"].update(train)
    return RunSpec.model_validate(data)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ------------------------------------------------------------------------------------ kill points

KILL_SCRIPT = r"""
import os, sys, time
import wsdlab.common.io as cio
import wsdlab.train.checkpoint as ck
import wsdlab.train.runwriter as rw
from wsdlab.train import MetricsSink, train
from wsdlab.train.spec_io import read_spec

mode, spec_path, outs = sys.argv[1], sys.argv[2], sys.argv[3:]
if mode == "resume":  # finish every directory given, in this one process
    for out in outs:
        train(read_spec(spec_path), out)
    sys.exit(0)

point, nth = mode.rsplit(":", 1)
owner_name, attr, when = point.split(".")
owner = {"writer": rw.RunWriter, "runwriter": rw, "ckpt": ck, "os": cio.os}[owner_name]
original, calls = getattr(owner, attr), [0]

def patched(*args, **kwargs):
    if when == "before":
        calls[0] += 1
        if calls[0] == int(nth):
            os._exit(17)
    result = original(*args, **kwargs)
    if when == "after":
        calls[0] += 1
        if calls[0] == int(nth):
            os._exit(17)
    return result

setattr(owner, attr, patched)
train(read_spec(spec_path), outs[0])
sys.exit(0)
"""

# (name, kill point "<owner>.<function>.<before|after>:<n-th call>"), run in order on one directory.
KILL_POINTS = [
    ("first-eval-row", ["writer.row.after:1"]),
    ("mid-step0-checkpoint-file", ["ckpt.save_file.after:1"]),
    ("step2-checkpoint-before-manifest", ["ckpt.write_manifest.before:2"]),
    ("step4-checkpoint-after-manifest-before-rename", ["ckpt.write_manifest.after:3"]),
    ("after-checkpoint-2", ["writer.checkpoint.after:2"]),
    ("mid-run-row", ["writer.row.after:6"]),
    ("after-snapshot-3", ["writer.snapshot.after:2"]),
    ("batches-npy-write", ["runwriter.atomic_write_bytes.before:5"]),
    ("an-atomic-rename", ["os.replace.before:7"]),
    ("final-checkpoint-before-COMPLETE", ["writer.checkpoint.after:4"]),
    ("before-COMPLETE", ["writer.complete.before:1"]),
    ("killed-twice", ["writer.checkpoint.after:2", "writer.row.after:3"]),
]


def _tree(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.name != LOCK_FILE)


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def test_kill_at_every_point_then_resume_is_bit_identical(tmp_path: Path) -> None:
    spec_path, script = tmp_path / "spec.yaml", tmp_path / "kill.py"
    write_spec(tiny_spec(), spec_path)
    script.write_text(KILL_SCRIPT)
    outs = []
    for name, kills in KILL_POINTS:
        out = tmp_path / name
        for kill in kills:
            proc = subprocess.run([sys.executable, str(script), kill, str(spec_path), str(out)], env=_env(),
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == 17, f"{name}: kill point {kill} not reached (rc {proc.returncode}): {proc.stderr[-2000:]}"
            assert not (out / "COMPLETE").exists(), name
        outs.append(out)
    reference = tmp_path / "reference"
    proc = subprocess.run([sys.executable, str(script), "resume", str(spec_path), str(reference), *map(str, outs)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = reference / "checkpoints" / "6"
    for out in outs:
        assert (out / "COMPLETE").read_text() == "6\n", out.name
        for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
            assert (out / "checkpoints/6" / name).read_bytes() == (final / name).read_bytes(), (out.name, name)
        assert _rows(out) == _rows(reference), out.name
        assert (out / "batches.npy").read_bytes() == (reference / "batches.npy").read_bytes(), out.name
        assert _tree(out) == _tree(reference), out.name  # no leftovers, same checkpoints and snapshots
        for step, path in list_checkpoints(out).items():
            open_checkpoint(path)  # every checkpoint verifies


# ---------------------------------------------------------------------------------------- NaN / inf


class _InfGrad(torch.autograd.Function):
    """Identity forward (a finite loss); infinite gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return grad * math.inf


def _poison(monkeypatch: pytest.MonkeyPatch, at_call: int, what: str) -> None:
    """Make the `at_call`-th training forward return a NaN loss, or a finite loss with an inf gradient."""
    real, calls = loop_mod.batch_loss_and_accuracy, [0]

    def batch_loss_and_accuracy(model, batch):  # noqa: ANN001, ANN202
        calls[0] += 1
        loss, accuracy = real(model, batch)
        if calls[0] == at_call:
            return (loss * math.nan if what == "loss" else _InfGrad.apply(loss)), accuracy
        return loss, accuracy

    monkeypatch.setattr(loop_mod, "batch_loss_and_accuracy", batch_loss_and_accuracy)


@pytest.mark.parametrize(("what", "quantity", "log_every"), [("loss", "loss", 1), ("grad", "grad_norm", 1),
                                                             ("loss", "loss", 3)])
def test_non_finite_stops_with_step_and_quantity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 what: str, quantity: str, log_every: int) -> None:
    out = tmp_path / "run"
    _poison(monkeypatch, 5, what)  # the update producing step 5
    with pytest.raises(NonFiniteError, match=rf"non-finite {quantity} \((nan|inf)\) at step 5 .*last good checkpoint "
                                             rf"is .*checkpoints{os.sep}4"):
        train(tiny_spec(log_every=log_every), out)
    assert list(list_checkpoints(out)) == [0, 2, 4]  # nothing of step 5 or 6
    for path in list_checkpoints(out).values():
        ckpt = open_checkpoint(path)  # intact
        assert all(bool(torch.isfinite(t).all()) for t in ckpt.model_tensors().values())
        assert all(bool(torch.isfinite(t).all()) for t in ckpt.optimizer_tensors().values())
    assert max(r["step"] for r in RunDir(out).metrics()) <= 4
    assert not (out / "COMPLETE").exists() and not (out / "snapshots" / "6.safetensors").exists()
    assert (out / LOCK_FILE).read_text() == ""  # released


def test_checkpoint_with_non_finite_tensors_is_never_written(tmp_path: Path) -> None:
    spec = tiny_spec()
    weights = {"w": torch.tensor([1.0, float("inf")])}
    with pytest.raises(NonFiniteError, match="tensor 'w' holds inf"):
        save_checkpoint(tmp_path / "checkpoints" / "3", model_state=weights, optim_state={}, rng_state={},
                        state={"step": 3}, spec=spec)
    with pytest.raises(NonFiniteError, match="optimizer state.*'m/exp_avg' holds NaN"):
        save_checkpoint(tmp_path / "checkpoints" / "3", model_state={}, optim_state={"m/exp_avg": torch.tensor([math.nan])},
                        rng_state={}, state={"step": 3}, spec=spec)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


# ------------------------------------------------------------------------------------ two writers

HOLD_SCRIPT = r"""
import sys, time
from wsdlab.train import MetricsSink, train
from wsdlab.train.spec_io import read_spec

class Slow(MetricsSink):
    def log(self, metrics, step):
        time.sleep(2.0)

train(read_spec(sys.argv[1]), sys.argv[2], sinks=[Slow()])
"""


def test_second_writer_fails_and_a_dead_writers_lock_is_taken_over(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec = tiny_spec()
    spec_path, script, out = tmp_path / "spec.yaml", tmp_path / "hold.py", tmp_path / "run"
    write_spec(spec, spec_path)
    script.write_text(HOLD_SCRIPT)
    first = subprocess.Popen([sys.executable, str(script), str(spec_path), str(out)], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ((out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text().strip()):
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (out / LOCK_FILE).read_text().split() == [str(first.pid), socket.gethostname()]
        with pytest.raises(RunLockedError, match=rf"in use by process {first.pid} on {socket.gethostname()}"):
            train(spec, out)
        # the CLI path gives the same
        proc = subprocess.run([sys.executable, "-m", "wsdlab", "train", "--config", str(spec_path), "--out", str(out)],
                              env=_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and str(first.pid) in proc.stderr + proc.stdout
        assert first.poll() is None  # the holder kept running
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert (out / LOCK_FILE).read_text().split()[0] == str(first.pid)  # a dead writer's lock is left behind
    capsys.readouterr()
    run = train(spec, out)
    err = capsys.readouterr().err
    assert f"taking over the stale lock {out / LOCK_FILE} of process {first.pid}" in err and "not running" in err
    assert run.is_complete and (out / LOCK_FILE).read_text() == ""


# ------------------------------------------------------------------------------ damaged checkpoints


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete 4-step run with checkpoints 0, 2, 4."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_spec(steps=4, snapshot_every=None), out)
    return out


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {"truncate": (_truncate, r"size \d+ bytes, manifest says \d+ \(truncated\)"),
          "flip-byte": (_flip, "sha256 checksum mismatch"),
          "delete": (Path.unlink, "missing")}
FILE_CASES = [(f, d) for f in REQUIRED_FILES for d in DAMAGE]


def _state_edit(**values: object):
    def edit(ckpt: Path) -> None:
        state = json.loads((ckpt / "state.json").read_text())
        state.update(values)
        (ckpt / "state.json").write_text(json.dumps(state))
        write_manifest(ckpt)  # consistent checksums: only the values are wrong
    return edit


STATE_CASES = {
    "negative-step": (_state_edit(step=-4), r"state.json: invalid values: step: Input should be greater than or equal to 0"),
    "step-not-folder": (_state_edit(step=2, data_cursor=16, tokens=256), "step 2 differs from its folder's step 4"),
    "float-step": (_state_edit(step=4.0), "step: Input should be a valid integer"),
    "string-cursor": (_state_edit(data_cursor="32"), "data_cursor: Input should be a valid integer"),
    "negative-cursor": (_state_edit(data_cursor=-1), "data_cursor: Input should be greater than or equal to 0"),
    "cursor-beyond-steps": (_state_edit(data_cursor=10**9), r"data_cursor 1000000000 does not match 4 steps of 8 sequences"),
    "start-after-step": (_state_edit(start_step=5), "start_step 5 exceeds step 4"),
    "tokens": (_state_edit(tokens=3), "tokens 3 do not match"),
    "no-rng-parts": (_state_edit(rng={"python": {}}), "rng: needs the 'python' and 'numpy'"),
}


def _damaged_copy(finished: Path, tmp_path: Path, damage) -> tuple[Path, Path]:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "COMPLETE").unlink()  # as if it was killed before COMPLETE: resume must look at the checkpoints
    ckpt = out / "checkpoints" / "4"
    damage(ckpt)
    return out, ckpt


def _assert_rejected_everywhere(out: Path, ckpt: Path, pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    for load in (open_checkpoint, load_checkpoint, lambda p: RunDir(out).load_model(4), lambda p: RunDir(out).load_model(),
                 lambda p: branch_from_checkpoint(p, steps=2, shape="linear")):
        with pytest.raises(CheckpointError, match=pattern):
            load(ckpt)
    capsys.readouterr()
    resumed = latest_intact_checkpoint(out)
    assert resumed is not None and resumed.step == 2
    err = capsys.readouterr().err
    assert f"warning: checkpoint {ckpt}" in err and "falling back" in err and "resuming" in err


@pytest.mark.parametrize(("name", "damage"), FILE_CASES, ids=[f"{f}-{d}" for f, d in FILE_CASES])
def test_damaged_file_falls_back_on_resume_and_fails_on_load(finished: Path, tmp_path: Path, name: str, damage: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    fn, problem = DAMAGE[damage]
    out, ckpt = _damaged_copy(finished, tmp_path, lambda c: fn(c / name))
    pattern = f"{name}: missing" if damage == "delete" else f"{name}: {problem}"
    _assert_rejected_everywhere(out, ckpt, pattern, capsys)


def test_missing_or_broken_manifest(finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, ckpt = _damaged_copy(finished, tmp_path, lambda c: (c / MANIFEST_FILE).unlink())
    _assert_rejected_everywhere(out, ckpt, f"missing {MANIFEST_FILE}", capsys)
    (ckpt / MANIFEST_FILE).write_text('{"files": {')
    _assert_rejected_everywhere(out, ckpt, "unreadable manifest", capsys)


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_bad_state_values_are_rejected(finished: Path, tmp_path: Path, case: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    edit, pattern = STATE_CASES[case]
    out, ckpt = _damaged_copy(finished, tmp_path, edit)
    _assert_rejected_everywhere(out, ckpt, pattern, capsys)


def test_resume_after_damage_finishes_with_the_same_weights(finished: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out, ckpt = _damaged_copy(finished, tmp_path, lambda c: _flip(c / "model.safetensors"))
    run = train(RunDir(out).spec, out)
    assert "falling back" in capsys.readouterr().err
    assert run.is_complete
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        assert (ckpt / name).read_bytes() == (finished / "checkpoints/4" / name).read_bytes()
    assert _rows(out) == _rows(finished)


def test_every_checkpoint_damaged_is_a_clear_error(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "COMPLETE").unlink()
    for path in list_checkpoints(out).values():
        (path / "rng.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no intact checkpoint to resume from \(3 damaged"):
        train(RunDir(out).spec, out)


def test_legacy_checkpoint_without_manifest_is_accepted_after_header_checks(finished: Path, tmp_path: Path) -> None:
    def legacy(c: Path) -> None:
        (c / MANIFEST_FILE).unlink()
        state = json.loads((c / "state.json").read_text())
        (c / "state.json").write_text(json.dumps({**state, "format": 1}))
    out, ckpt = _damaged_copy(finished, tmp_path, legacy)
    model, spec, state = load_checkpoint(ckpt)
    assert state["step"] == 4 and state["format"] == 1
    _truncate(ckpt / "optimizer.safetensors")
    with pytest.raises(CheckpointError, match="optimizer.safetensors: (not a valid|truncated or damaged) safetensors"):
        open_checkpoint(ckpt)


# -------------------------------------------------------------------------------- absurd hyper-parameters

ABSURD = {
    "optim.lr": math.inf, "optim.weight_decay": math.nan, "optim.eps": -math.inf, "optim.grad_clip": math.inf,
    "optim.beta1": math.nan, "schedule.alpha": math.nan, "schedule.shape_param": math.inf,
    "train.seed": 2**64, "train.batch_size": 10**12, "train.micro_batch_size": 2**40,
    "train.batch_tokens": 2**50, "data.split_seed": -1, "data.val_fraction": math.nan,
}


@pytest.mark.parametrize("key", list(ABSURD))
def test_absurd_fields_are_rejected_by_the_spec(key: str) -> None:
    data = tiny_spec().model_dump()
    section, field = key.split(".")
    data[section][field] = ABSURD[key]
    with pytest.raises(ValueError, match=rf"{field}\n.*(finite number|less than or equal|greater than)"):
        RunSpec.model_validate(data)


def _absurd_specs() -> dict[str, RunSpec]:
    base = tiny_spec()
    huge_model = base.model.model_copy(update={"n_layers": 10_000, "d_model": 8192, "n_heads": 64, "ffn_dim": 32768})
    wide_vocab = base.model.model_copy(update={"vocab_size": 2**22})
    return {
        "negative-order-seed": base.model_copy(update={"data": base.data.model_copy(
            update={"order": base.data.order.model_copy(update={"seed": -3})})}),
        "model-too-big": base.model_copy(update={"model": huge_model}),
        "batch-logits-too-big": base.model_copy(update={"model": wide_vocab, "train": base.train.model_copy(
            update={"batch_size": 2**23})}),
    }


@pytest.mark.parametrize("case", ["negative-order-seed", "model-too-big", "batch-logits-too-big"])
def test_absurd_runs_are_rejected_before_anything_is_written(tmp_path: Path, case: str) -> None:
    spec, out = _absurd_specs()[case], tmp_path / "out"
    pattern = {"negative-order-seed": "data.order.seed: must be >= 0", "model-too-big": "model: .* GiB of weights",
               "batch-logits-too-big": "train.batch_size: a batch of 8,388,608 needs"}[case]
    with pytest.raises(ConfigError, match=pattern):
        validate_run_start(spec, out)
    with pytest.raises(ConfigError, match=pattern):
        train(spec, out)
    assert not out.exists()


def test_check_memory_bounds() -> None:
    spec = tiny_spec()
    check_memory(spec, available=2**30)
    with pytest.raises(ConfigError, match="train.eval_batch_size"):
        check_memory(spec.model_copy(update={"train": spec.train.model_copy(update={"eval_batch_size": 2**20})}),
                     available=2**30)


def test_branch_rejects_non_finite_arguments(finished: Path, tmp_path: Path) -> None:
    ckpt = finished / "checkpoints" / "4"
    for kwargs in ({"batch_scale": math.inf}, {"beta_power": math.nan}, {"alpha": math.nan},
                   {"shape_param": math.inf, "shape": "lowered_linear"}):
        args = {"steps": 2, "shape": "linear", **kwargs}
        with pytest.raises(ConfigError, match=f"{next(iter(kwargs))}: .*finite number"):
            branch_from_checkpoint(ckpt, **args)
    with pytest.raises(ConfigError, match="optim.lr"):
        branch_from_checkpoint(ckpt, steps=2, shape="linear", overrides={"optim.lr": "inf"})


def test_a_failed_start_leaves_no_directory(tmp_path: Path) -> None:
    """A run that fails after taking the lock but before writing (the vocabulary check) leaves nothing."""
    spec = tiny_spec()
    small = spec.model_copy(update={"model": spec.model.model_copy(update={"vocab_size": 4})})
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="model.vocab_size"):
        train(small, out)
    assert not out.exists()
