"""`wsdlab train` and `wsdlab cooldown`: a working run, every cooldown shape, and bad input -> exit 2, nothing written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.schedules import SHAPE_NAMES
from wsdlab.train import RunDir

runner = CliRunner()
QUIET = ["--set", "train.progress=false", "--set", "train.snapshot_every=null"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def stable(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    out = tmp_path_factory.mktemp("cli") / "stable"
    result = invoke("train", "--preset", "micro", "--steps", 6, "--checkpoint-every", 3, "--seed", 1, "--out", out,
                    "--set", "train.eval_every=3", *QUIET)
    assert result.exit_code == 0, result.output
    assert "loss" in result.output and "tokens/s" in result.output and str(out) in result.output.replace("\n", "")
    return RunDir(out)


def test_only_rank_0_prints_the_summary_with_the_final_values(stable: RunDir) -> None:
    args = ("train", "--preset", "micro", "--steps", 6, "--checkpoint-every", 3, "--seed", 1, "--out", stable.path,
            "--set", "train.eval_every=3", *QUIET)  # the complete run: train returns at once
    other = runner.invoke(app, [str(a) for a in args], env={"RANK": "1"})
    assert other.exit_code == 0 and other.output == ""
    main = runner.invoke(app, [str(a) for a in args], env={"RANK": "0"})
    loss, val = stable.metrics()[-1]["loss"], stable.eval_rows()[-1]["val_loss"]
    assert main.exit_code == 0 and f"step 6 | loss {loss:.4f} | val loss {val:.4f}" in main.output


def test_train_writes_a_complete_run(stable: RunDir) -> None:
    assert stable.is_complete and stable.spec.train.steps == 6 and stable.spec.train.seed == 1
    assert stable.checkpoint_steps() == [0, 3, 6]


def test_train_from_a_config_file(stable: RunDir, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text((stable.path / "spec.yaml").read_text())
    result = invoke("train", "--config", config, "--steps", 5, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert RunDir(tmp_path / "r").spec.train.steps == 5


@pytest.mark.parametrize("shape", [*SHAPE_NAMES, "expr"])
def test_cooldown_works_for_every_shape(stable: RunDir, shape: str, tmp_path: Path) -> None:
    extra = ["--set", "schedule.shape_expr=1 - x**3"] if shape == "expr" else []
    param = ["--shape-param", "0.5"] if shape == "lowered_linear" else []
    result = invoke("cooldown", "--from", stable.checkpoint(6), "--shape", shape, *param, "--steps", 2, "--seed", 4,
                    "--out", tmp_path / "cd", *extra)
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "cd")
    assert run.is_complete and [r["step"] for r in run.metrics()] == [7, 8]
    assert run.spec.schedule.shape == shape and run.spec.data.order.seed == 4
    assert run.metrics()[-1]["lr"] == 0.0


def test_cooldown_flags_reach_the_spec(stable: RunDir, tmp_path: Path) -> None:
    result = invoke("cooldown", "--from", stable.checkpoint(6), "--shape", "sqrt", "--steps", 4, "--beta-power", 2,
                    "--beta2-only", "--batch-scale", 2, "--match-half-life", "--no-weight-decay",
                    "--reset-optimizer", "--alpha", 0.1, "--out", tmp_path / "cd")
    assert result.exit_code == 0, result.output
    spec = RunDir(tmp_path / "cd").spec
    assert spec.optim.beta1 == 0.9**2 and spec.optim.beta2 == pytest.approx(0.95**4)
    assert spec.optim.weight_decay == 0.0 and spec.train.batch_size == 16 and spec.train.steps == 6 + 2
    assert spec.branch.reset_optimizer and spec.schedule.alpha == 0.1


def _bad(stable: RunDir) -> list[tuple[list[object], str]]:
    ck = stable.checkpoint(6)
    train = ["train", "--preset", "micro", "--steps", 10]
    return [
        (["cooldown", "--from", ck, "--shape", "nope", "--steps", 2], "nope"),
        ([*train, "--set", "schedule.kind=wsd", "--set", "schedule.cooldown_fraction=1.5"], "cooldown_fraction"),
        ([*train, "--set", "schedule.kind=wsd", "--set", "schedule.warmup_steps=9"], "warmup_steps"),
        ([*train, "--set", "data.source=text", "--set", "data.path=/no/such/corpus.txt"], "data.path"),
        (["cooldown", "--from", ck, "--shape", "sqrt", "--steps", 2, "--set", "model.n_layers=2"], "model.n_layers"),
        (["cooldown", "--from", stable.path / "checkpoints" / "4", "--shape", "sqrt", "--steps", 2], "checkpoint"),
        ([*train, "--preset", "nope"], "preset"),
        ([*train, "--set", "optim.lr=-1"], "optim.lr"),
        ([*train, "--set", "nokey"], "--set"),
    ] + ([([*train, "--tensorboard"], "tensorboard")] if importlib.util.find_spec("tensorboard") is None else [])


def test_bad_input_exits_2_and_writes_nothing(stable: RunDir, tmp_path: Path) -> None:
    for i, (args, needle) in enumerate(_bad(stable)):
        out = tmp_path / f"out{i}"
        result = invoke(*args, "--out", out)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and needle in result.output, (args, result.output)
        assert not out.exists(), args


def test_resume_with_other_flags_is_refused(stable: RunDir) -> None:
    result = invoke("train", "--preset", "micro", "--steps", 7, "--out", stable.path, *QUIET)
    assert result.exit_code == 2 and "train.steps" in result.output


def test_resume_from_an_optimizer_tensor_of_the_wrong_shape_is_one_error_line(stable: RunDir, tmp_path: Path) -> None:
    # the checkpoint's manifest was rewritten to match the bad content (was `internal error: ValueError`)
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from wsdlab.train.checkpoint import write_manifest

    run = tmp_path / "run"
    shutil.copytree(stable.path, run)
    (run / "COMPLETE").unlink()
    shutil.rmtree(run / "checkpoints" / "6")
    optim = run / "checkpoints" / "3" / "optimizer.safetensors"
    state = load_file(optim)
    name = sorted(k for k in state if k.endswith("/exp_avg"))[0]
    state[name] = torch.zeros(3, 5)
    save_file(state, optim)
    write_manifest(optim.parent)
    result = invoke("train", "--preset", "micro", "--steps", 6, "--checkpoint-every", 3, "--seed", 1, "--out", run,
                    "--set", "train.eval_every=3", *QUIET)
    out = result.output.replace("\n", "")
    assert result.exit_code == 2, result.output
    assert f"error: checkpoint {optim}: optimizer tensor '{name}' has shape [3, 5]" in out


def test_full_disk_during_a_checkpoint_write_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # was `internal error: SafetensorError`; safetensors' own message on ENOSPC, raised by its own error type
    from safetensors import SafetensorError

    from wsdlab.train import checkpoint as ckpt_mod

    real, calls = ckpt_mod.save_file, []

    def full_after_first_checkpoint(tensors, filename, metadata=None):  # 3 files a checkpoint: step 0 fits
        calls.append(filename)
        if len(calls) > 3:
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        return real(tensors, filename, metadata)

    monkeypatch.setattr(ckpt_mod, "save_file", full_after_first_checkpoint)
    out = tmp_path / "run"
    result = invoke("train", "--preset", "micro", "--steps", 6, "--checkpoint-every", 3, "--out", out, *QUIET)
    text = result.output.replace("\n", "")
    assert result.exit_code == 2, result.output
    assert f"error: {out / 'checkpoints' / '3'}: no space left on device" in text and "internal error" not in text
    assert RunDir(out).checkpoint_steps() == [0]
