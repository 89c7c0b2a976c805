"""RunDir and load_checkpoint read back what the loop wrote; evaluate reproduces the logged val loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsdlab.data import load_data
from wsdlab.train import RunDir, RunSpec, evaluate, load_checkpoint, run_preset, train
from wsdlab.train.runstore import load_checkpoint_model, run_of
from wsdlab.train.spec_io import write_spec


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    data = run_preset("micro").model_dump()
    data["train"].update(steps=6, checkpoint_every=3, eval_every=3, snapshot_every=None, snapshot_steps=[2, 3],
                         progress=False)
    return train(RunSpec.model_validate(data), tmp_path_factory.mktemp("run"))


def test_run_dir_lists_what_was_written(run: RunDir) -> None:
    again = RunDir(run.path)
    assert again.spec == run.spec and again.is_complete
    assert again.checkpoint_steps() == [0, 3, 6] and again.latest_checkpoint() == run.path / "checkpoints" / "6"
    assert again.snapshot_steps() == [2, 3]
    assert len(again.metrics()) == 6 and [r["step"] for r in again.eval_rows()] == [0, 3, 6]
    assert again.batch_indices().shape == (6, run.spec.train.batch_size)
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 4"):
        again.checkpoint(4)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        RunDir(run.path / "checkpoints")


def test_models_and_snapshots_load(run: RunDir) -> None:
    final = run.load_model()
    assert not final.training
    same = run.load_model(6)
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), same.state_dict().values()))
    snap = run.load_snapshot(3)
    at3 = run.load_model(3).state_dict()
    assert snap.keys() == at3.keys() and all(torch.equal(snap[k], at3[k]) for k in snap)
    model, spec, state = load_checkpoint(run.checkpoint(3))
    assert spec == run.spec and state["step"] == 3 and state["data_cursor"] == 3 * spec.train.batch_size
    assert isinstance(load_checkpoint_model(run.checkpoint(0)), torch.nn.Module)
    with pytest.raises(FileNotFoundError):
        run.load_snapshot(5)


def test_evaluate_reproduces_the_logged_val_loss(run: RunDir) -> None:
    """Fixed validation batches: evaluating a checkpoint again gives the row written during training."""
    spec = run.spec
    data = load_data(spec.data, progress=False)
    size = spec.train.eval_batch_size or spec.train.batch_size
    for row in run.eval_rows():
        value = evaluate(run.load_model(row["step"]), data, spec.train.eval_batches, size, "cpu")
        assert value == pytest.approx(row["val_loss"], rel=1e-6)


def test_an_empty_directory_has_no_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RunDir(tmp_path)


def test_weights_file_and_the_run_of_a_checkpoint(run: RunDir) -> None:
    from safetensors.torch import load_file

    assert run.weights(3) == run.path / "checkpoints" / "3" / "model.safetensors"
    weights = load_file(run.weights(3))
    at3 = run.load_model(3).state_dict()
    assert all(torch.equal(weights[k], at3[k]) for k in weights)
    assert run_of(run.checkpoint(3)).path == run.path
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 4"):
        run.weights(4)
    with pytest.raises(FileNotFoundError, match="not inside a run"):
        run_of(run.path)


def _branch(folder: Path, init_from: Path | None) -> RunDir:
    """A run folder holding only its spec (the micro preset) with `init_from`."""
    spec = run_preset("micro").model_copy(update={"init_from": None if init_from is None else str(init_from)})
    folder.mkdir(parents=True)
    write_spec(spec, folder / "spec.yaml")
    return RunDir(folder)


def test_parent_checkpoint_follows_init_from_then_the_runs_folder(tmp_path: Path) -> None:
    """init_from when it exists; else, for <anything>/runs/<run>/checkpoints/<step>, the same run in this
    run's own runs folder (a moved or copied study); else FileNotFoundError naming both places."""
    assert _branch(tmp_path / "scratch", None).parent_checkpoint() is None
    here = tmp_path / "study" / "runs"
    (here / "base-1" / "checkpoints" / "30").mkdir(parents=True)
    (tmp_path / "old" / "runs" / "base-1" / "checkpoints" / "30").mkdir(parents=True)
    at_init = _branch(here / "cd-a", tmp_path / "old" / "runs" / "base-1" / "checkpoints" / "30")
    assert at_init.parent_checkpoint() == tmp_path / "old" / "runs" / "base-1" / "checkpoints" / "30"
    moved = _branch(here / "cd-b", Path("/gone/study/runs/base-1/checkpoints/30"))
    assert moved.parent_checkpoint() == here / "base-1" / "checkpoints" / "30"
    missing_step = _branch(here / "cd-c", Path("/gone/study/runs/base-1/checkpoints/40"))
    with pytest.raises(FileNotFoundError, match=r"/gone/study/runs/base-1/checkpoints/40.*base-1/checkpoints/40"):
        missing_step.parent_checkpoint()
    not_in_runs = _branch(here / "cd-d", Path("/gone/base-1/checkpoints/30"))
    with pytest.raises(FileNotFoundError, match=r"/gone/base-1/checkpoints/30"):
        not_in_runs.parent_checkpoint()
